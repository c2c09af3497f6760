"""A client-side copy of one group's ring, fed by the server's Watch stream.

The copy is built by a real `registry.catalog.Catalog`, with the algorithm and default
replica count the server reports, and fed the member tags the server's catalog holds
(with replicas/weight set to the ring parameters the server's ring uses); it therefore
answers Match exactly as the server does, with no RPC and with no second
implementation of the Service -> ring node mapping to drift apart. The Service values
handed out are the server's own (tags exactly as the server sent them).

Snapshots are applied in bulk, off to the side: a snapshot (the first one, or a new
registry's after a Watch failover) goes into a fresh catalog in one `apply_many` (one
`Ring.build` for the whole group, where applying members one at a time rebuilt the ring
per member: with 2,000 services the first match missed its 5 s timeout), and only the
finished ring is published. Readers never take a lock: what they see is one immutable
`_State` (version, ring, services), replaced whole by the single writer, so matches keep
answering from the previous ring while a new snapshot is built (they used to wait ~8 s on
a lock held through the whole apply during a failover).

Health: the server's catalog keeps a critical service (and with `RingInfo.only_passing` a
warning one) off its ring; ours is made with the same `only_passing` and fed each service's
health as the server states it (the `health` field, which overrides the tag: a registry older
than health routing sends none and routes every live service, so we read it as passing too).
Our ring therefore takes a service out and back exactly when, and exactly as, the server's does.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from registry.catalog import Catalog, UnknownGroup
from registry.client.common import to_service
from registry.client.errors import NotFound
from registry.client.types import Service
from registry.healthtags import TAG_HEALTH
from registry.ring import EmptyRing, Ring
from registry.v1 import registry_pb2 as pb

__all__ = ["GroupView"]


def _member_tags(s: pb.Service) -> dict[str, str]:
    """Tags that make our catalog give `s` the ring node the server's ring has.

    The server sends the ring parameters it really uses (for chash the group's
    replica count, fixed by its first member), so they override the raw tags; and its
    verdict on the service's health (see the module docstring).
    """
    tags = dict(s.tags)
    tags["group"] = s.group
    tags["addr"] = s.addr
    tags[TAG_HEALTH] = s.health or "passing"
    if s.replicas > 0:
        tags["replicas"] = str(s.replicas)
    if s.weight > 0:
        tags["weight"] = str(s.weight)
    return tags


@dataclass(frozen=True, slots=True)
class _State:
    """What readers see, replaced whole on every applied event (never modified)."""

    version: int  # the server's version last applied; -1: nothing received yet
    ring: Ring | None  # None: the group has no live member (empty: none is routed)
    services: Mapping[str, Service]  # id -> the service exactly as the server sent it, routed or not


_EMPTY = _State(-1, None, MappingProxyType({}))


class GroupView:
    """Cached services and ring of one group; `version` is the server's version last applied.

    One writer (the watch thread or task) calls `apply`; any number of threads match
    concurrently, lock-free, each call answering from one consistent `_State`.
    """

    def __init__(self, group: str, datacenter: str = "") -> None:
        self.group = group
        #: "" for the registry's own datacenter; else the one whose mirror the Watch follows (issue 17):
        #: stamped on every Service handed out, as an uncached answer for that datacenter is
        self.datacenter = datacenter
        self.ready = threading.Event()
        self.error: str = ""  # why the last watch attempt ended, for error messages
        self._state = _EMPTY
        self._write = threading.Lock()  # one writer at a time (there is one anyway); readers never take it
        self._catalog: Catalog | None = None  # the writer's working copy; readers use _state only

    @property
    def version(self) -> int:
        return self._state.version

    def apply(self, event: pb.WatchEvent) -> None:
        """Apply one Watch event (snapshot or delta); stale deltas are ignored.

        Takes as long as the catalog needs (seconds for a snapshot of thousands of services:
        hashing every member's points); matches meanwhile answer from the previous state.
        The asyncio client runs this in a worker thread for that reason.
        """
        with self._write:
            old = self._state
            if event.snapshot:
                services = {s.id: to_service(s, self.datacenter) for s in event.services}
                catalog = self._catalog
                if catalog is not None and self._small_change(catalog, event, old.services, services):
                    # Usually a failover to a registry that knows the same services: apply the
                    # difference only (the catalog skips unchanged members).
                    gone = [(k, None) for k in old.services if k not in services]
                    catalog.apply_many([*gone, *((s.id, _member_tags(s)) for s in event.services)])
                else:
                    # A fresh catalog, built in bulk (one ring build).
                    catalog = self._new_catalog(event.ring)
                    catalog.apply_many([(s.id, _member_tags(s)) for s in event.services])
            else:
                current = self._catalog
                if current is None or event.version <= old.version:
                    return
                catalog = current
                changed = (*event.added, *event.updated)
                updates: list[tuple[str, dict[str, str] | None]] = [(s.id, None) for s in event.removed]
                updates += [(s.id, _member_tags(s)) for s in event.added]
                for s in event.updated:
                    if catalog.algorithm == "chash":  # re-inserted last on the server even if equal: here too
                        updates.append((s.id, None))
                    updates.append((s.id, _member_tags(s)))
                catalog.apply_many(updates)
                services = dict(old.services)
                for s in event.removed:
                    services.pop(s.id, None)
                for s in changed:
                    if catalog.algorithm == "chash":
                        services.pop(s.id, None)  # same order as the catalog's (a re-insert goes last)
                    services[s.id] = to_service(s, self.datacenter)
            try:
                ring: Ring | None = catalog.ring(self.group)
            except UnknownGroup:
                ring = None
            self._catalog = catalog
            self._state = _State(event.version, ring, MappingProxyType(services))
        self.ready.set()

    @staticmethod
    def _small_change(catalog: Catalog, event: pb.WatchEvent, old: Mapping[str, Service],
                      new: Mapping[str, Service]) -> bool:
        """Whether a snapshot is best applied as a difference to the current catalog.

        Only for "consistent" rings with the same parameters, whose ring depends on the member
        set alone; "chash" depends on insert order and on group replicas a different registry
        may have fixed otherwise, so it always starts afresh. Past 1/8 of the group changed,
        one bulk build beats a join or leave per change.
        """
        if (catalog.algorithm != "consistent" or event.ring.algorithm != "consistent"
                or event.ring.default_replicas != catalog.default_replicas
                or event.ring.only_passing != catalog.only_passing):
            return False
        budget = len(new) // 8
        changed = sum(1 for k in old if k not in new)
        for k, svc in new.items():
            if changed > budget:
                return False
            changed += old.get(k) != svc
        return changed <= budget

    @staticmethod
    def _new_catalog(ring: pb.RingInfo) -> Catalog:
        return Catalog(algorithm=ring.algorithm, default_replicas=ring.default_replicas or None,
                       only_passing=ring.only_passing)

    def _missing(self, state: _State) -> NotFound:
        why = "group has no live member"
        if state.services:  # live, but none on the ring: their health keeps them off (as the server says)
            counts = Counter(s.health for s in state.services.values())
            catalog = self._catalog
            passing = "passing" if catalog is not None and catalog.only_passing else "passing or warning"
            why = f"group has no {passing} member ({', '.join(f'{n} {w}' for w, n in sorted(counts.items()))})"
        where = f", datacenter {self.datacenter!r}" if self.datacenter else ""
        return NotFound(f"Match (group {self.group!r}): {why} (client cache{where}, version {state.version})",
                        group=self.group)

    def match(self, key: str, n: int) -> list[Service]:
        st = self._state
        if st.ring is None:
            raise self._missing(st)
        try:
            if n == 1:  # the common call: straight to the ring
                return [st.services[st.ring.get(key)]]
            return [st.services[i] for i in st.ring.get_n(key, n)]
        except EmptyRing:
            raise self._missing(st) from None

    def match_batch(self, keys: Sequence[str]) -> list[Service]:
        """One Service per key, resolved by `Ring.get_many` (C-level pipelines, no per-key Python)."""
        st = self._state
        if st.ring is None:
            raise self._missing(st)
        try:
            names = st.ring.get_many(keys)
        except EmptyRing:
            raise self._missing(st) from None
        return list(map(st.services.__getitem__, names))

    def members(self) -> list[Service]:
        """As the server's Members, whatever their health: sorted by id ("consistent") or in
        ring insert order ("chash")."""
        st = self._state
        ring = st.ring
        if ring is None:
            return []
        if ring.algorithm == "chash":
            return list(st.services.values())
        return [st.services[k] for k in sorted(st.services)]
