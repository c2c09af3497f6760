"""Runs adapters isolated from the registry: each on its own thread and event loop.

Why a thread and a loop of its own per adapter: an adapter is someone else's code talking to someone
else's server (etcd, a file on NFS, a third party's API). If it blocks (a synchronous client, a
``time.sleep``, a busy loop) or raises, the registry's loop, which answers gossip and RPCs, must not
notice. A thread that sleeps releases the GIL; a pure-Python busy loop gives it up every switch
interval (5 ms), so the registry keeps answering (``tests/adapters/test_host.py`` measures Match p99).

Hand-over, both ways bounded and coalesced:

- Imports: `AdapterImports` (thread-safe) folds calls into a pending map keyed by (group, id) (a resync
  replaces it whole), and schedules ONE flush on the registry's loop with ``call_soon_threadsafe``;
  the flush applies everything pending in one catalog batch. Memory is bounded by `ImportLimits` per
  adapter (`registry.adapters.imports`: checked on the adapter's thread before anything is buffered),
  never by the source's rate of change.
- Exports: a catalog change only sets a flag and wakes the exporter's loop (once, however many changes
  come); the exporter then reads the catalog as it is now. A slow exporter gets the newest view, never
  a backlog.

An adapter whose ``run`` raises (or returns) is logged loudly and run again after a backoff doubling
from `BACKOFF_MIN` to `BACKOFF_MAX` (reset after it ran `BACKOFF_RESET` seconds without failing).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING

from registry.adapters.base import Adapter, AdapterContext, CatalogView, ExportedService
from registry.adapters.imports import AdapterImports, ImportLimits, Rejected, external_tags
from registry.metrics import Metric
from registry.service import ServiceKind

if TYPE_CHECKING:
    from registry.catalog import Catalog, GroupChange

__all__ = ["BACKOFF_MAX", "BACKOFF_MIN", "AdapterHost", "ImportLimits", "Rejected", "external_tags"]

log = logging.getLogger("registry.adapters")

BACKOFF_MIN = 0.5
BACKOFF_MAX = 30.0
BACKOFF_RESET = 60.0
#: Seconds `AdapterHost.stop` waits for each adapter's thread (a hung one is left behind, a daemon).
STOP_WAIT = 2.0

class ViewCache:
    """Builds successive `CatalogView`s reusing the records of every group whose version did not move.

    Why: a view is every service of the pool, built on the adapter's thread after each burst of changes;
    rebuilt whole it cost 255-453 ms at 20,000 services (an exporter then delayed a registration 0.7 s and
    the imports queued behind it on the adapter's loop, `benchmarks/bench_etcd.py`); now one change costs
    its group's records. The version is read before the members, so records are never older than the
    version they are filed under: a change in between only makes the next view rebuild that group."""

    def __init__(self) -> None:
        self._groups: dict[str, tuple[int, tuple[ExportedService, ...]]] = {}

    def view(self, catalog: Catalog, datacenter: str) -> CatalogView:
        fresh: dict[str, tuple[int, tuple[ExportedService, ...]]] = {}
        services: list[ExportedService] = []
        for g in catalog.groups():
            version = catalog.version(g)
            hit = self._groups.get(g)
            if hit is None or hit[0] != version:
                hit = (version, tuple(
                    ExportedService(group=s.group, id=s.id, addr=s.addr, tags=dict(s.tags), health=s.health.word,
                                    kind=s.kind.value, origin=s.origin) for s in catalog.members(g)))
            fresh[g] = hit
            services.extend(hit[1])
        self._groups = fresh
        return CatalogView(datacenter=datacenter, services=services)


class _Runner:
    """One adapter: its thread, its loop, its supervising task."""

    def __init__(self, host: AdapterHost, adapter: Adapter, imports: AdapterImports) -> None:
        self.host = host
        self.adapter = adapter
        self.imports = imports
        self.log = logging.getLogger(f"registry.adapters.{adapter.name}")
        self.loop: asyncio.AbstractEventLoop | None = None
        self.task: asyncio.Task[None] | None = None
        self.thread = threading.Thread(target=self._main, name=f"adapter-{adapter.name}", daemon=True)
        self.ready = threading.Event()
        self.stopping = False
        #: Times ``run`` raised or returned (a restart each).
        self.failures = 0
        self._wakers: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []
        self._wake_lock = threading.Lock()

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        self.loop = loop
        try:
            self.task = loop.create_task(self._supervise())
            self.ready.set()
            loop.run_until_complete(self.task)
        except BaseException:  # cancelled at stop, or the loop itself broke: said below
            if not self.stopping:
                self.log.exception("adapter %s: its loop ended", self.adapter.name)
        finally:
            self.ready.set()
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()

    def context(self) -> AdapterContext:
        h = self.host
        return AdapterContext(imports=self.imports, exports=self.exports, log=self.log,
                              datacenter=h.datacenter, registry_id=h.registry_id)

    async def _supervise(self) -> None:
        backoff = BACKOFF_MIN
        while not self.stopping:
            started = time.monotonic()
            try:
                await self.adapter.run(self.context())
                self.log.error("adapter %s: run returned; running it again in %.1f s", self.adapter.name, backoff)
            except asyncio.CancelledError:
                raise
            except Exception:  # someone else's code: logged loudly, run again
                self.log.exception("adapter %s failed; running it again in %.1f s", self.adapter.name, backoff)
            self.failures += 1
            if time.monotonic() - started > BACKOFF_RESET:
                backoff = BACKOFF_MIN
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)

    async def exports(self) -> AsyncIterator[CatalogView]:
        """Coalesced views: the first at once, then one after each burst of catalog changes."""
        loop = asyncio.get_running_loop()
        event = asyncio.Event()
        event.set()
        waker = (loop, event)
        with self._wake_lock:
            self._wakers.append(waker)
        cache = ViewCache()
        try:
            while True:
                await event.wait()
                event.clear()
                yield cache.view(self.host.catalog, self.host.datacenter)
        finally:
            with self._wake_lock:
                self._wakers.remove(waker)

    def changed(self) -> None:
        """A catalog change (any thread): wake each export iterator once (setting a set event is a no-op)."""
        with self._wake_lock:
            wakers = list(self._wakers)
        for loop, event in wakers:
            if not event.is_set():
                try:
                    loop.call_soon_threadsafe(event.set)
                except RuntimeError:
                    pass

    def stop(self) -> None:
        self.stopping = True
        loop, task = self.loop, self.task
        if loop is not None and task is not None:
            try:
                loop.call_soon_threadsafe(task.cancel)
            except RuntimeError:
                pass


class AdapterHost:
    """The adapters of one registry: started with it, stopped with it (their imports dropped)."""

    def __init__(self, catalog: Catalog, adapters: Iterable[Adapter], *, datacenter: str, registry_id: str,
                 loop: asyncio.AbstractEventLoop | None = None, limits: ImportLimits | None = None) -> None:
        self.catalog = catalog
        #: Each adapter's own budget (`ImportLimits`: the same numbers for each).
        self.limits = limits if limits is not None else ImportLimits()
        self.datacenter = datacenter
        self.registry_id = registry_id
        self._loop = loop
        self._adapters = list(adapters)
        self.runners: list[_Runner] = []
        self._unsubscribe: object = None

    def start(self) -> None:
        """Start every adapter's thread (call on the registry's loop, or give ``loop``)."""
        loop = self._loop if self._loop is not None else asyncio.get_running_loop()
        for adapter in self._adapters:
            imports = AdapterImports(adapter.name, self.catalog, loop, self.limits)
            self.runners.append(_Runner(self, adapter, imports))
        self._unsubscribe = self.catalog.subscribe(self._changed)
        for r in self.runners:
            r.thread.start()
            log.info("adapter %s started", r.adapter.name)

    def _changed(self, change: GroupChange) -> None:
        for r in self.runners:
            r.changed()

    def metrics(self) -> Iterable[Metric]:
        """The adapters' part of /metrics: imported services by adapter and group, restarts, liveness."""
        counts: dict[tuple[str, str], int] = {}
        for g in self.catalog.groups():
            for s in self.catalog.members(g):
                if s.kind is ServiceKind.EXTERNAL:
                    counts[s.origin, g] = counts.get((s.origin, g), 0) + 1
        yield Metric("registry_external_services", "Live services imported by each adapter, per group.", "gauge",
                     [({"adapter": o, "group": g}, float(n)) for (o, g), n in sorted(counts.items())])
        yield Metric("registry_adapter_restarts_total", "Times an adapter's run raised or returned (run again).",
                     "counter", [({"adapter": r.adapter.name}, float(r.failures)) for r in self.runners])
        yield Metric("registry_adapter_import_batches_total", "Batches of an adapter's imports applied to the catalog.",
                     "counter", [({"adapter": r.adapter.name}, float(r.imports.flushes)) for r in self.runners])
        yield Metric("registry_adapter_rejected_total",
                     "Services an adapter imported that were refused (over a bound), by reason.", "counter",
                     [({"adapter": r.adapter.name, "reason": why.value}, float(r.imports.rejected[why]))
                      for r in self.runners for why in Rejected if r.imports.rejected[why]])
        yield Metric("registry_adapter_pending", "An adapter's calls folded and not applied to the catalog yet.",
                     "gauge", [({"adapter": r.adapter.name}, float(r.imports.pending())) for r in self.runners])
        yield Metric("registry_adapter_running", "1 while the adapter's thread runs.", "gauge",
                     [({"adapter": r.adapter.name}, float(r.thread.is_alive())) for r in self.runners])

    def stop(self) -> None:
        """Cancel every adapter, wait a little for each thread, drop what they imported."""
        unsubscribe = self._unsubscribe
        if callable(unsubscribe):
            unsubscribe()
        for r in self.runners:
            r.stop()
        deadline = time.monotonic() + STOP_WAIT
        for r in self.runners:
            r.thread.join(max(0.0, deadline - time.monotonic()))
            if r.thread.is_alive():
                log.error("adapter %s did not stop (hung in its own thread); left behind", r.adapter.name)
            r.imports.clear()
        self.runners = []
