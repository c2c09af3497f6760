"""`Timeline`: per group, the last changes of its ring and the share of keys each one moved.

What the web page shows under a group's ring: when a service joined, left, was updated (its tags, its
health: a critical one goes off the ring), and how much of the key space changed owner because of it
(`registry.ring.view.moved_share` of the ring before and after: exact, not sampled).

Fed by `Catalog.subscribe` (a `GroupChange` per group and version, on whatever thread applied it; the
listener runs under the catalog's lock right after the commit, so the group's ring read then is the
ring of that very version). Domain layer: no aiohttp, no loop; the HTTP front reads `entries()`.

Why moved is computed off the applying thread for most changes: `moved_share` costs two ring lookups per
point of the changed members (~3.7 us each: a join of one 4096-point member costs ~15 ms of Python, whatever
the ring's size), and the catalog applies gossip on the loop. A change of at most `INLINE_POINTS` points
(counted in both snapshots) is computed at once; a bigger one on the `Offload` worker. An entry waiting for the worker is *open*: changes of its group that arrive before
the worker starts it are merged into it (its `versions` become [first, last]; joined/left/updated are
the net change over them: a service that joined and left again inside it is in neither), so a burst of
gossip costs one computation. Its `moved` is None until computed (and stays None if the worker refused
it, full or stopping).

Memory: per group the newest ring (the catalog's own snapshot, shared, not a copy) and, while an entry is
open, the ring before it; at most `max_entries` entries per group and `max_groups` groups (the group
changed least recently is forgotten first). A group whose services all left keeps its timeline (the page
shows them leaving) until it comes back or is evicted.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from registry.catalog import Catalog, GroupChange, UnknownGroup
from registry.offload import Busy, Offload
from registry.ring import Ring
from registry.ring.view import moved_share

__all__ = ["INLINE_POINTS", "MAX_ENTRIES", "MAX_GROUPS", "Change", "Timeline"]

MAX_ENTRIES = 20
#: Groups with a timeline, at most (a registry's pool rarely has more than hundreds of groups).
MAX_GROUPS = 10_000
#: Changes of at most this many points (the changed services' entries in both snapshots, ~2 ms) get `moved`
#: computed at once, on the applying thread.
INLINE_POINTS = 512


def _add(ids: dict[str, None], more: Iterable[str]) -> None:
    for i in more:
        ids[i] = None


def _changed_points(change: GroupChange, old: Ring, new: Ring) -> int:
    """Entries of the changed services in both snapshots: what `moved_share` walks (an estimate: a "chash"
    re-insert of an unchanged service is not in the change's lists)."""
    count = type(new).count
    total = 0
    for s in (*change.added, *change.removed, *change.updated):
        for ring in (old, new):
            node = ring.nodes.get(s.id)
            if node is not None:
                total += count(node)
    return total


@dataclass
class Change:
    """One entry: the changes of versions `first`..`last` of a group, and the share of keys they moved."""

    at_ms: int
    first: int
    last: int
    joined: dict[str, None] = field(default_factory=dict)  # ordered sets
    left: dict[str, None] = field(default_factory=dict)
    updated: dict[str, None] = field(default_factory=dict)
    moved: float | None = None

    def merge(self, change: GroupChange, at_ms: int) -> None:
        """Fold a later change in: the entry says the net change from before `first` to after it."""
        self.last = change.version
        self.at_ms = at_ms
        for s in change.added:
            if s.id in self.left:
                del self.left[s.id]
                self.updated[s.id] = None
            else:
                self.joined[s.id] = None
        for s in change.removed:
            self.updated.pop(s.id, None)
            if s.id in self.joined:
                del self.joined[s.id]
            else:
                self.left[s.id] = None
        _add(self.updated, (s.id for s in change.updated if s.id not in self.joined))

    def json(self) -> dict[str, Any]:
        return {"at_ms": self.at_ms, "version": self.last, "versions": [self.first, self.last],
                "joined": sorted(self.joined), "left": sorted(self.left), "updated": sorted(self.updated),
                "moved": self.moved}


@dataclass
class _Group:
    ring: Ring | None  # the ring at the newest version seen; None: unknown (first seen mid-change)
    entries: deque[Change]
    #: The entry waiting for the worker (changes still merge into it), the ring before it, its future.
    open: Change | None = None
    base: Ring | None = None
    future: Future[None] | None = None


class Timeline:
    """The last `max_entries` changes of each group of `catalog`; see the module docstring."""

    def __init__(self, catalog: Catalog, offload: Offload | None = None, *, max_entries: int = MAX_ENTRIES,
                 max_groups: int = MAX_GROUPS, inline_points: int = INLINE_POINTS,
                 clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000) -> None:
        self.catalog = catalog
        self.offload = offload
        self.max_entries = max_entries
        self.max_groups = max_groups
        self.inline_points = inline_points
        self.clock_ms = clock_ms
        #: Entries whose moved share was not computed (the worker full or closed).
        self.not_computed = 0
        self._lock = threading.Lock()
        self._groups: OrderedDict[str, _Group] = OrderedDict()
        self._unsubscribe = catalog.subscribe(self._on_change)
        for group in catalog.groups():  # the rings the first change of each group starts from
            try:
                ring = catalog.ring(group)
            except UnknownGroup:
                continue
            with self._lock:
                if group not in self._groups:
                    self._remember(group, _Group(ring, deque(maxlen=max_entries)))

    def close(self) -> None:
        """Stop following the catalog (the offload worker is its owner's to close)."""
        self._unsubscribe()

    def _remember(self, group: str, g: _Group) -> None:
        self._groups[group] = g
        while len(self._groups) > self.max_groups:
            self._groups.popitem(last=False)

    def _ring_now(self, group: str) -> Ring:
        try:
            return self.catalog.ring(group)
        except UnknownGroup:
            return Ring(self.catalog.algorithm)

    def _on_change(self, change: GroupChange) -> None:
        """Catalog listener: under the catalog's lock, so the group's ring now is the change's."""
        new = self._ring_now(change.group)
        now = self.clock_ms()
        with self._lock:
            g = self._groups.pop(change.group, None)
            if g is None:
                # first seen now: from nothing if this change created the group, else unknown
                g = _Group(Ring(self.catalog.algorithm) if change.version == 1 else None,
                           deque(maxlen=self.max_entries))
            self._remember(change.group, g)  # most recently changed last
            base, g.ring = g.ring, new
            if g.open is not None:  # the worker has not started it: fold this change in
                g.open.merge(change, now)
                return
            entry = Change(now, change.version, change.version)
            entry.merge(change, now)
            g.entries.appendleft(entry)
            if base is None:
                return  # the ring before is unknown: moved stays None
            if self.offload is None or _changed_points(change, base, new) <= self.inline_points:
                entry.moved = moved_share(base, new)
                return
            g.open, g.base = entry, base
            try:
                g.future = self.offload.submit(("moved", change.group), lambda: self._compute(g))
            except (Busy, RuntimeError):
                g.open = g.base = g.future = None
                self.not_computed += 1

    def _compute(self, g: _Group) -> None:
        """On the worker: close the open entry (later changes make a new one) and compute its moved share."""
        with self._lock:
            entry, base, head = g.open, g.base, g.ring
            g.open = g.base = None
        if entry is None or base is None or head is None:
            return
        moved = moved_share(base, head)
        with self._lock:
            entry.moved = moved

    def entries(self, group: str) -> list[dict[str, Any]]:
        """The group's entries as JSON objects, newest first ([] for a group never seen)."""
        with self._lock:
            g = self._groups.get(group)
            return [] if g is None else [e.json() for e in g.entries]

    def pending(self, group: str) -> Future[None] | None:
        """The worker's future for the group's newest uncomputed entry, None when there is none."""
        with self._lock:
            g = self._groups.get(group)
            if g is None or g.future is None or g.future.done():
                return None
            return g.future
