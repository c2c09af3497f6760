"""Watch, the fan-out half of `registry.api.RegistryCore` (its base class): every open Watch stream, the
changes handed to each, the streams of every group, and the cap on them all.

Watch fan-out: every watcher owns a bounded asyncio.Queue fed synchronously by the
catalog's change callback (same loop, never blocks). A watcher whose queue is full is
not buffered further: its queue is emptied and replaced by one "resync" marker, and
the stream sends a fresh full snapshot (snapshot=true) when it gets there. Changes
queued after the marker whose version is not newer than that snapshot are skipped.

Watch of every group (`group == ""`, issue 17: what a registry of another datacenter follows to
keep its mirror): one snapshot event per group with a live member, then a marker event
`{group: "", snapshot: true, ring}` saying the initial snapshot is complete, then every change of
every group in the order the catalog made them (a group that appears later arrives with its first
`added` event; one whose last service left, as a `removed` event). An overflowing all-groups
watcher is resynced the same way: every live group's snapshot again, then the marker; so a
follower knows that a group absent between a first snapshot and the marker is gone. All the
snapshots of one sequence are taken at one instant, and every change carries a core-wide sequence
number, so what is queued after that instant is sent and what is older is skipped, for groups in
the sequence and groups not in it alike. Such a watcher counts against `max_watchers` as any.

Export (issue 17, -wan-export): a Watch of every group with `WatchRequest.export` set (what a
registry of another datacenter follows) sees only the groups this registry exports: `export_groups`
(None: every group) minus `registry-group`, never exported (the registries of a datacenter are its
own business: the other datacenters know them from the WAN pool). Such a stream's snapshots, marker
and changes leave the other groups out, so to its follower they do not exist. A Watch of one group
with `export` set that is not exported is refused (NOT_FOUND), rather than answered empty.

Watchers are capped process-wide (`max_watchers`, 10,000 by default): each costs a queue, a
task and a stream (~7 KiB), and a change wakes every watcher of its group (~35 us each), so
20,000 watchers cost +135 MB and half a second of event loop per change. A Watch beyond the
cap is refused with `Exhausted` (RESOURCE_EXHAUSTED on both fronts) and counted.

Why a base class and not an object of its own: the state is the core's (its catalog, its loop, the
counters the fronts and the metrics read as `core.max_watchers`, `core.watchers_refused`), and the core
supplies the two things only it can serialize (`snapshot`, `snapshot_marker`); this module is the rest.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from registry.api_errors import Exhausted, Invalid, Missing
from registry.catalog import REGISTRY_GROUP, Catalog

__all__ = ["MAX_WATCHERS", "WATCH_QUEUE_SIZE", "WatchFanOut"]

WATCH_QUEUE_SIZE = 1024  # changes buffered per watcher before it is resynced with a snapshot
MAX_WATCHERS = 10_000  # open Watch streams, all groups together (see the module docstring)

#: (group version, core-wide change sequence number, serialized WatchEvent), or None = resync
_Item = tuple[int, int, bytes] | None


class _Watcher:
    __slots__ = ("accepts", "queue")

    def __init__(self, accepts: Callable[[str], bool] | None = None) -> None:
        self.queue: asyncio.Queue[_Item] = asyncio.Queue(WATCH_QUEUE_SIZE)
        #: the groups this watcher is sent (None: every group)
        self.accepts = accepts

    def offer(self, item: tuple[int, int, bytes]) -> None:
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(None)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class WatchFanOut:
    """Watch streams over `catalog`; the subclass calls `_init_watch` first, then `_watch_change` on
    every catalog change, and implements `snapshot` and `snapshot_marker`."""

    catalog: Catalog

    def _init_watch(self, max_watchers: int) -> None:
        """Made on the serving loop (the watchers' queues belong to it)."""
        self.max_watchers = max_watchers
        self.watchers_refused = 0  # Watch calls refused at the cap
        self._watchers: dict[str, set[_Watcher]] = {}
        self._watch_all: set[_Watcher] = set()  # Watch(group="") streams
        self._watcher_total = 0
        self._seq = 0  # changes seen, all groups: orders an all-groups stream's items against its snapshots
        self._loop = asyncio.get_running_loop()
        #: The groups a Watch with `export` set is sent (-wan-export; None: every group but registry-group).
        self.export_groups: frozenset[str] | None = None

    def exports(self, group: str) -> bool:
        """Whether `group` is sent to another datacenter's follower (module docstring)."""
        return group != REGISTRY_GROUP and (self.export_groups is None or group in self.export_groups)

    def snapshot(self, group: str) -> tuple[int, bytes]:
        """(version, the group's snapshot event), serialized."""
        raise NotImplementedError

    def snapshot_marker(self) -> bytes:
        """The event ending a sequence of snapshots in a Watch of every group, serialized."""
        raise NotImplementedError

    def _watch_change(self, group: str, version: int, event: Callable[[], bytes]) -> None:
        """One catalog change (on the applying thread, right after it): `event()` serialized once, if
        anyone watches, and handed to every watcher of `group` and of every group."""
        self._seq += 1
        if self._watchers.get(group) or self._watch_all:
            item = (version, self._seq, event())
            if _running_loop() is self._loop:
                self._fan_out(group, item)
            else:  # the catalog was changed from another thread: queues belong to our loop
                self._loop.call_soon_threadsafe(self._fan_out, group, item)

    def _fan_out(self, group: str, item: tuple[int, int, bytes]) -> None:
        for w in tuple(self._watchers.get(group, ())):
            w.offer(item)
        for w in tuple(self._watch_all):
            if w.accepts is None or w.accepts(group):
                w.offer(item)

    def snapshot_all(self, accepts: Callable[[str], bool] | None = None) -> tuple[int, list[bytes]]:
        """(change sequence number, events): every live group's snapshot (those `accepts`) and the end
        marker, all taken now (the sequence number first: a change racing in from another thread is
        sent again rather than lost)."""
        seq = self._seq
        events = [self.snapshot(g)[1] for g in self.catalog.groups() if accepts is None or accepts(g)]
        events.append(self.snapshot_marker())
        return seq, events

    async def watch_all(self, export: bool = False) -> AsyncIterator[bytes]:
        """Every group's snapshot, the marker, then every change of every group (module docstring);
        with `export`, of the exported groups only."""
        self.check_watcher_room()
        w = _Watcher(self.exports if export else None)
        self._watch_all.add(w)
        self._watcher_total += 1
        try:
            sent, events = self.snapshot_all(w.accepts)
            for data in events:
                yield data
            while True:
                item = await w.queue.get()
                if item is None:
                    sent, events = self.snapshot_all(w.accepts)
                    for data in events:
                        yield data
                elif item[1] > sent:
                    yield item[2]
        finally:
            self._watcher_total -= 1
            self._watch_all.discard(w)

    def open_watch(self, group: str, export: bool = False) -> AsyncIterator[bytes]:
        """A Watch request's stream (`group` "": every group), checked now: a refusal (the watcher cap,
        a group not exported) fails the call before its stream starts."""
        self.check_watcher_room()
        if not group:
            return self.watch_all(export)
        if export and not self.exports(group):
            raise Missing(f"group {group!r} is not exported to other datacenters (-wan-export)")
        return self.watch(group)

    async def watch(self, group: str) -> AsyncIterator[bytes]:
        """Snapshot, then every change; see the module docstring for slow watchers."""
        if not group:
            raise Invalid("group is empty (Watch of every group: watch_all)")
        self.check_watcher_room()  # again: several Watch calls may have been checked in one loop pass
        w = _Watcher()
        self._watchers.setdefault(group, set()).add(w)
        self._watcher_total += 1
        try:
            sent, data = self.snapshot(group)
            yield data
            while True:
                item = await w.queue.get()
                if item is None:
                    sent, data = self.snapshot(group)
                    yield data
                elif item[0] > sent:
                    sent = item[0]
                    yield item[2]
        finally:
            self._watcher_total -= 1
            watchers = self._watchers.get(group)
            if watchers is not None:
                watchers.discard(w)
                if not watchers:
                    del self._watchers[group]

    def watcher_count(self, group: str | None = None) -> int:
        """Open watchers of `group`, or of every group ("": the all-groups ones; None: all of them)."""
        if group is None:
            return self._watcher_total
        return len(self._watch_all) if not group else len(self._watchers.get(group, ()))

    def check_watcher_room(self) -> None:
        """Exhausted (counted) when `max_watchers` Watch streams are open already."""
        if self._watcher_total >= self.max_watchers:
            self.watchers_refused += 1
            raise Exhausted(f"{self._watcher_total} Watch streams open, at most {self.max_watchers} per server")
