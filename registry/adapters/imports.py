"""An adapter's imports on their way to the catalog: folded, bounded, flushed on the registry's loop.

Why apart from `registry.adapters.host`: the host runs adapters (threads, loops, restarts); this is
the gate every imported service passes, checked against `ImportLimits` on the adapter's own thread
before anything is buffered (the house rule: whatever a remote source can make us hold has a bound,
per source, checked before buffering; refused input is dropped, counted, and logged once per burst).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from registry import limits as _limits
from registry.adapters.base import ExternalService

if TYPE_CHECKING:
    from registry.catalog import Catalog

__all__ = ["BURST_QUIET", "CHUNK", "AdapterImports", "ImportLimits", "Rejected", "external_tags"]

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


class Rejected(str, enum.Enum):
    """Why an import was refused (``registry_adapter_rejected_total{adapter,reason}``)."""

    NAME = "name"  # a group or id empty or longer than max_name_bytes
    ADDR = "addr"  # an addr empty or longer than max_addr_bytes
    TAGS = "tags"  # tags over max_tags_bytes (or not str to str)
    GROUP_FULL = "group_full"  # the adapter holds max_per_group services in that group
    ADAPTER_FULL = "adapter_full"  # the adapter holds max_services services in all


@dataclass(frozen=True)
class ImportLimits:
    """What one adapter may make the registry hold (each adapter has its own budget).

    The sizes are the TTL services' (`registry.limits`): an imported service and a TTL one sit on the
    same rings and travel in the same answers. Worst case per adapter: ``max_services`` services of the
    largest size (~0.9 KiB each: ~90 MB at the defaults), plus as many pending calls (`AdapterImports`)."""

    max_services: int = _limits.MAX_SERVICES
    max_per_group: int = _limits.MAX_PER_GROUP
    max_name_bytes: int = _limits.MAX_NAME_BYTES
    max_addr_bytes: int = _limits.MAX_ADDR_BYTES
    max_tags_bytes: int = _limits.MAX_TAGS_BYTES


#: Changes applied to the catalog per turn of the registry's loop (`AdapterImports._drain`): 500 new
#: services at 4,096 points each hash and merge in ~0.1-0.2 s of the loop; the rest waits one turn.
CHUNK = 500

#: Refusals closer together than this (seconds) are one burst: one warning line at its first.
BURST_QUIET = 10.0


class AdapterImports:
    """`registry.adapters.base.Imports` of one adapter: folds calls, flushes them on the registry's loop.

    Bounded before anything is buffered: each call is checked against `ImportLimits` on the adapter's
    thread, against a model of what the adapter holds once everything pending is applied (``_held``; it
    is the catalog's only writer for its origin, so the model is exact). A service over a bound is
    refused whole (never half-applied), counted by reason (`rejected`), and the first refusal of a
    burst logs one warning. The pending map is bounded by construction: its keys are services held now
    or held at the last flush (``_flushed``), so at most 2 x ``max_services`` however fast the adapter
    calls and however long the registry's loop takes to flush (a delete of a key neither holds is
    nothing; an upsert and delete of a key unknown to the catalog cancel out).

    A resync (`replace_all`) over the bounds keeps, deterministically whatever order the adapter gives
    them in, per group the services with the smallest ids (``max_per_group``), then the smallest
    (group, id) in all (``max_services``): registries importing the same source keep the same ones.
    """

    def __init__(self, origin: str, catalog: Catalog, loop: asyncio.AbstractEventLoop,
                 limits: ImportLimits | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self._origin = origin
        self._catalog = catalog
        self._loop = loop
        self.limits = limits if limits is not None else ImportLimits()
        #: Times refusals (`BURST_QUIET`); the host's is time.monotonic.
        self.clock = clock
        self._lock = threading.Lock()
        self._pending: dict[_Key, Mapping[str, str] | None] = {}
        self._resync = False  # the pending map is a whole resync (what is not in it goes)
        self._scheduled = False
        self._closed = False
        self._held: dict[str, set[str]] = {}  # what the adapter holds once pending is applied
        self._count = 0
        self._flushed: set[_Key] = set()  # what the catalog holds of this adapter (as of the last flush)
        self._last_refusal = -math.inf
        #: Flushes (batches of calls handed to the loop) and catalog batches applied (a flush is one or
        #: more `CHUNK`s), for tests and metrics.
        self.flushes = 0
        self.chunks = 0
        self._queue: deque[tuple[str, str, Mapping[str, str] | None]] = deque()  # the loop's, to apply
        self._draining = False
        self._applied: dict[_Key, Mapping[str, str]] = {}  # the tags last applied, per service (the loop's)
        #: Services refused, by reason.
        self.rejected: Counter[Rejected] = Counter()
        self.log = logging.getLogger(f"registry.adapters.{origin}")

    # -- the adapter's thread -------------------------------------------------------------------

    def upsert(self, service: ExternalService) -> None:
        why = self._invalid(service)
        with self._lock:
            if self._closed:  # the adapter was stopped (a hung one may still call): nothing more comes in
                return
            key = (service.group, service.id)
            if why is None:
                why = self._room(service.group, service.id)
            line, schedule = None, False
            if why is not None:
                line = self._refused(why, f"{service.group}/{service.id}")
            else:
                self._hold(key)
                self._pending[key] = external_tags(service)
                schedule = self._schedule()
        if line is not None:
            self.log.warning("%s", line)
        elif schedule:
            self._call_flush()

    def delete(self, group: str, id: str) -> None:
        key = (group, id)
        with self._lock:
            if self._closed:
                return
            held = self._held.get(group)
            if held is not None and id in held:
                held.discard(id)
                self._count -= 1
                if not held:
                    del self._held[group]
            if not self._resync and key in self._flushed:
                self._pending[key] = None
            else:  # the catalog has none (or the resync pending says it all): only what is pending goes
                if self._pending.pop(key, None) is None:
                    return
            schedule = self._schedule()
        if schedule:
            self._call_flush()

    def replace_all(self, services: Iterable[ExternalService]) -> None:
        lim = self.limits
        kept: dict[_Key, Mapping[str, str] | None] = {}
        held: dict[str, set[str]] = {}
        refused: Counter[Rejected] = Counter()
        first = ""
        invalid = self._invalid
        for s in services:
            why = invalid(s)
            if why is None:
                kept[(s.group, s.id)] = external_tags(s)
                ids = held.get(s.group)
                if ids is None:
                    held[s.group] = ids = set()
                ids.add(s.id)
            else:
                refused[why] += 1
                first = first or f"{s.group}/{s.id}"
        if len(kept) > lim.max_services or any(len(ids) > lim.max_per_group for ids in held.values()):
            kept, held, cut = self._cut(kept, refused)
            first = first or cut
        with self._lock:
            if self._closed:
                return
            self._pending, self._resync = kept, True
            self._held, self._count = held, len(kept)
            line = None
            if refused:
                self.rejected.update(refused)
                line = self._burst(
                    f"adapter {self._origin}: a resync of {len(kept) + sum(refused.values())} services is over "
                    f"its bounds: kept {len(kept)} (per group the first {lim.max_per_group} by id, then the "
                    f"first {lim.max_services} by group and id), refused {sum(refused.values())} "
                    f"({', '.join(f'{r.value} {n}' for r, n in sorted(refused.items()))}; the first: {first})")
            schedule = self._schedule()
        if line is not None:
            self.log.warning("%s", line)
        if schedule:
            self._call_flush()

    def _cut(self, valid: dict[_Key, Mapping[str, str] | None], refused: Counter[Rejected]
             ) -> tuple[dict[_Key, Mapping[str, str] | None], dict[str, set[str]], str]:
        """What a resync over the bounds keeps (see the class docstring), the rest counted in `refused`;
        with the first refused, named."""
        lim = self.limits
        kept: dict[_Key, Mapping[str, str] | None] = {}
        held: dict[str, set[str]] = {}
        first = ""
        for key in sorted(valid):
            ids = held.get(key[0])
            why = (Rejected.GROUP_FULL if ids is not None and len(ids) >= lim.max_per_group
                   else Rejected.ADAPTER_FULL if len(kept) >= lim.max_services else None)
            if why is not None:
                refused[why] += 1
                first = first or f"{key[0]}/{key[1]}"
                continue
            held.setdefault(key[0], set()).add(key[1])
            kept[key] = valid[key]
        return kept, held, first

    def _invalid(self, s: ExternalService) -> Rejected | None:
        """Why `s` is out of the size bounds (None: it fits). The common case (str fields, encodable) is
        checked inline: a resync of 100,000 services pays it 100,000 times."""
        lim = self.limits
        try:
            g, i, a = s.group, s.id, s.addr
            if not g or not i or len(g.encode()) > lim.max_name_bytes or len(i.encode()) > lim.max_name_bytes:
                return Rejected.NAME
            if not a or len(a.encode()) > lim.max_addr_bytes:
                return Rejected.ADDR
            tags = s.tags
            if tags:
                n = 0
                for k, v in tags.items():
                    n += len(k.encode()) + len(v.encode())
                if n > lim.max_tags_bytes:
                    return Rejected.TAGS
            return None
        except (AttributeError, UnicodeEncodeError):  # not a str, or a lone surrogate: the careful way
            pass
        for name in (s.group, s.id):
            if not isinstance(name, str) or not name or _limits.utf8_len(name) > lim.max_name_bytes:
                return Rejected.NAME
        if not isinstance(s.addr, str) or not s.addr or _limits.utf8_len(s.addr) > lim.max_addr_bytes:
            return Rejected.ADDR
        return Rejected.TAGS

    def _room(self, group: str, id_: str) -> Rejected | None:
        """Whether (group, id) may be held (under the lock): it is already, or both bounds allow one more."""
        held = self._held.get(group)
        if held is not None and id_ in held:
            return None
        if held is not None and len(held) >= self.limits.max_per_group:
            return Rejected.GROUP_FULL
        if self._count >= self.limits.max_services:
            return Rejected.ADAPTER_FULL
        return None

    def _hold(self, key: _Key) -> None:
        held = self._held.setdefault(key[0], set())
        if key[1] not in held:
            held.add(key[1])
            self._count += 1

    def _refused(self, why: Rejected, what: str) -> str | None:
        """Count one refusal (under the lock); the warning line if it starts a burst."""
        self.rejected[why] += 1
        lim = self.limits
        detail = {
            Rejected.NAME: f"group and id must be 1..{lim.max_name_bytes} bytes",
            Rejected.ADDR: f"addr must be 1..{lim.max_addr_bytes} bytes",
            Rejected.TAGS: f"tags over {lim.max_tags_bytes} bytes",
            Rejected.GROUP_FULL: f"the adapter holds {lim.max_per_group} services in that group",
            Rejected.ADAPTER_FULL: f"the adapter holds {lim.max_services} services",
        }[why]
        return self._burst(f"adapter {self._origin}: refused {what} ({why.value}: {detail}); "
                           f"refusals until {BURST_QUIET:g} s pass without one are only counted "
                           f"(registry_adapter_rejected_total)")

    def _burst(self, line: str) -> str | None:
        now = self.clock()
        quiet = now - self._last_refusal >= BURST_QUIET
        self._last_refusal = now
        return line if quiet else None

    def _schedule(self) -> bool:
        """Whether the caller must schedule the flush (under the lock): one per batch of calls."""
        if self._scheduled:
            return False
        self._scheduled = True
        return True

    def _call_flush(self) -> None:
        try:
            self._loop.call_soon_threadsafe(self._flush)
        except RuntimeError:  # the registry's loop is closed: shutting down, nothing to apply
            pass

    def pending(self) -> int:
        """Calls folded and not applied yet (for tests and metrics)."""
        return len(self._pending)

    def held(self) -> int:
        """Services this adapter holds once everything pending is applied."""
        return self._count

    # -- the registry's loop ----------------------------------------------------------------------

    def _flush(self) -> None:
        """On the registry's loop: everything pending, queued behind what earlier flushes left, and the
        queue's first `CHUNK` applied now (`_drain`).

        Two costs kept off the loop: a service whose tags are those last applied is skipped (a resync
        after a reconnect usually changes nothing: 10,000 unchanged services cost dict compares, not
        10,000 catalog upserts), and a big batch is applied `CHUNK` services per turn of the loop, so the
        registry answers between chunks while an adapter imports thousands (each new service hashes its
        ring points). A resync supersedes whatever is still queued: what it deletes is computed from
        the catalog as it is, and the queued upserts it does not list must not be applied after it."""
        with self._lock:
            if self._closed:
                return
            pending, resync = self._pending, self._resync
            self._pending, self._resync, self._scheduled = {}, False, False
            if resync:
                self._flushed = {k for k, tags in pending.items() if tags is not None}
            else:
                for k, tags in pending.items():
                    if tags is None:
                        self._flushed.discard(k)
                    else:
                        self._flushed.add(k)
        self.flushes += 1
        if resync:  # what the resync (and the calls after it) do not hold goes
            self._queue.clear()
            self._queue.extend((g, i, None) for g, i in self._catalog.external(self._origin)
                               if pending.get((g, i)) is None)
        self._queue.extend((g, i, tags) for (g, i), tags in pending.items() if tags is not None or not resync)
        if not self._draining:
            self._drain()

    def _drain(self) -> None:
        """(the registry's loop) apply up to `CHUNK` queued changes, then yield the loop for the rest."""
        queue, applied = self._queue, self._applied
        batch: list[tuple[str, str, Mapping[str, str] | None]] = []
        while queue and len(batch) < CHUNK:
            g, i, tags = queue.popleft()
            if tags is None:
                applied.pop((g, i), None)
            elif applied.get((g, i)) == tags:
                continue  # unchanged: the catalog holds exactly this
            else:
                applied[(g, i)] = tags
            batch.append((g, i, tags))
        if batch:
            self._catalog.apply_external(self._origin, batch)
            self.chunks += 1
        self._draining = bool(queue)
        if queue:
            self._loop.call_soon(self._drain)

    def clear(self) -> None:
        """Drop everything this adapter imported (it stopped): on the registry's loop."""
        with self._lock:
            self._pending, self._resync, self._closed = {}, False, True
            self._held, self._count, self._flushed = {}, 0, set()
        self._queue.clear()
        self._applied.clear()
        self._catalog.apply_external(self._origin, [(g, i, None) for g, i in self._catalog.external(self._origin)])
