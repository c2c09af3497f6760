"""Runs adapters isolated from the registry: each on its own thread and event loop.

Why a thread and a loop of its own per adapter: an adapter is someone else's code talking to someone
else's server (etcd, a file on NFS, a third party's API). If it blocks (a synchronous client, a
``time.sleep``, a busy loop) or raises, the registry's loop, which answers gossip and RPCs, must not
notice. A thread that sleeps releases the GIL; a pure-Python busy loop gives it up every switch
interval (5 ms), so the registry keeps answering (``tests/adapters/test_host.py`` measures Match p99).

Hand-over, both ways bounded and coalesced:

- Imports: `_Imports` (thread-safe) folds calls into a pending map keyed by (group, id) (a resync
  replaces it whole), and schedules ONE flush on the registry's loop with ``call_soon_threadsafe``;
  the flush applies everything pending in one catalog batch. Memory is bounded by the source's size,
  never by its rate of change.
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
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import TYPE_CHECKING

from registry.adapters.base import Adapter, AdapterContext, CatalogView, ExportedService, ExternalService
from registry.metrics import Metric
from registry.service import ServiceKind

if TYPE_CHECKING:
    from registry.catalog import Catalog, GroupChange

__all__ = ["BACKOFF_MAX", "BACKOFF_MIN", "AdapterHost", "external_tags"]

log = logging.getLogger("registry.adapters")

BACKOFF_MIN = 0.5
BACKOFF_MAX = 30.0
BACKOFF_RESET = 60.0
#: Seconds `AdapterHost.stop` waits for each adapter's thread (a hung one is left behind, a daemon).
STOP_WAIT = 2.0

_Key = tuple[str, str]


def external_tags(service: ExternalService) -> dict[str, str]:
    """The member-style tags the catalog reads an imported service from (addr, replicas, weight win)."""
    tags = dict(service.tags)
    tags["addr"] = service.addr
    tags["group"] = service.group
    if service.replicas is not None:
        tags["replicas"] = str(service.replicas)
    if service.weight is not None:
        tags["weight"] = str(service.weight)
    return tags


class _Imports:
    """`registry.adapters.base.Imports` of one adapter: folds calls, flushes them on the registry's loop."""

    def __init__(self, origin: str, catalog: Catalog, loop: asyncio.AbstractEventLoop) -> None:
        self._origin = origin
        self._catalog = catalog
        self._loop = loop
        self._lock = threading.Lock()
        self._pending: dict[_Key, Mapping[str, str] | None] = {}
        self._resync = False  # the pending map is a whole resync (what is not in it goes)
        self._scheduled = False
        self._closed = False
        #: Batches applied (for tests and metrics).
        self.flushes = 0

    def upsert(self, service: ExternalService) -> None:
        self._put({(service.group, service.id): external_tags(service)}, resync=False)

    def delete(self, group: str, id: str) -> None:
        self._put({(group, id): None}, resync=False)

    def replace_all(self, services: Iterable[ExternalService]) -> None:
        self._put({(s.group, s.id): external_tags(s) for s in services}, resync=True)

    def _put(self, items: dict[_Key, Mapping[str, str] | None], resync: bool) -> None:
        with self._lock:
            if self._closed:  # the adapter was stopped (a hung one may still call): nothing more comes in
                return
            if resync:
                self._pending, self._resync = items, True
            else:
                self._pending.update(items)
            if self._scheduled:
                return
            self._scheduled = True
        try:
            self._loop.call_soon_threadsafe(self._flush)
        except RuntimeError:  # the registry's loop is closed: shutting down, nothing to apply
            pass

    def _flush(self) -> None:
        """On the registry's loop: everything pending, in one catalog batch."""
        with self._lock:
            if self._closed:
                return
            pending, resync = self._pending, self._resync
            self._pending, self._resync, self._scheduled = {}, False, False
        updates: list[tuple[str, str, Mapping[str, str] | None]] = []
        if resync:  # what the resync (and the calls after it) do not hold goes
            updates += [(g, i, None) for g, i in self._catalog.external(self._origin) if pending.get((g, i)) is None]
        updates += [(g, i, tags) for (g, i), tags in pending.items() if tags is not None or not resync]
        self._catalog.apply_external(self._origin, updates)
        self.flushes += 1

    def clear(self) -> None:
        """Drop everything this adapter imported (it stopped): on the registry's loop."""
        with self._lock:
            self._pending, self._resync, self._closed = {}, False, True
        self._catalog.apply_external(self._origin, [(g, i, None) for g, i in self._catalog.external(self._origin)])


def catalog_view(catalog: Catalog, datacenter: str) -> CatalogView:
    """Every live service of ``catalog`` now, as plain records (group by group, each a snapshot)."""
    services = [ExportedService(group=s.group, id=s.id, addr=s.addr, tags=dict(s.tags), health=s.health.word,
                                kind=s.kind.value, origin=s.origin)
                for g in catalog.groups() for s in catalog.members(g)]
    return CatalogView(datacenter=datacenter, services=services)


class _Runner:
    """One adapter: its thread, its loop, its supervising task."""

    def __init__(self, host: AdapterHost, adapter: Adapter, imports: _Imports) -> None:
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
        try:
            while True:
                await event.wait()
                event.clear()
                yield catalog_view(self.host.catalog, self.host.datacenter)
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
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.catalog = catalog
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
            self.runners.append(_Runner(self, adapter, _Imports(adapter.name, self.catalog, loop)))
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
