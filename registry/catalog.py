"""The catalog: live services per group, one ring per group, versioned.

Fed by membership events (``apply``), read by the gRPC server and the
client's cache.  Each group's state is one immutable ``GroupState``
replaced as a whole on every change, so readers on other threads see either
the old or the new group (never a ring that disagrees with its members);
writers are serialised by a lock.  A join/leave rebuilds only its own
group's ring, incrementally (see ``registry.ring``); ``apply_many`` takes a
burst (a registry learning a whole cluster) and updates each group's ring
once, in bulk when the burst adds many members.

Go registry behaviour kept on purpose: the service id is the member name,
``addr`` comes from the ``addr`` tag, and with ``algorithm="chash"`` a
group's replica count is fixed by the first member that ever joined it
(Go's ``chash.CreateGroup`` keeps an existing group), even after the group
emptied.  Differences: an unknown or empty group raises ``UnknownGroup`` on
``match`` (Go returns an error too; ``members`` returns ``[]`` like Go), a
member whose ``group`` tag disappears leaves its group, and bad
``replicas``/``weight`` tags fall back to the default and are counted in
``stats`` instead of rejecting the member (Go drops it).

Health (issue 14): a service's health comes from its tags (`registry.healthtags`: absent or
an unknown word reads as passing, the unknown word counted as ``unknown_health``). A service
stays a member of its group whatever its health (``members`` lists it, with its health and
note), but only a *routed* one is on the group's ring: critical never, warning unless the
catalog is ``only_passing`` (Consul's DNS choice, the server's ``-only-passing``). Taking a
service out and putting it back uses the ring's incremental ``without``/``with_node``, so only
its own keys move, to the owners the ring without it gives, and come back to it exactly
("consistent" breaks point ties by id, so the ring after its return is the ring before; "chash"
re-inserts it last, as Go's ``Upsert`` does on any tag change, so a point it shares with
another member may change hands). A health change is a group change like any other (a new
version, the service ``updated``), and one ``GroupState`` still holds members and ring
together, so a reader never sees a ring that disagrees with the members' health.

TTL services (issue 15, `registry.ttl`): services a registry holds for a TTL instead of gossip, given
as ``(group, id, tags)`` by ``apply_ttl`` (the tags `registry.ttl.entry_tags` makes, read by the same
``_service`` rules) and marked ``Service.kind = TTL``. Gossiping members are keyed by name pool-wide
(Serf names are unique); a TTL service by (group, id), so ``web/1`` and ``api/1`` both exist. Within a
group both kinds share one ring whose nodes are named by id, so a TTL id equal to a gossiping member's
name in that group is held aside while that member is there (see ``apply_ttl``).

External services (issue 18, `registry.adapters`): imported by an adapter, given to ``apply_external``
with the adapter's name as ``origin``, keyed by (group, id) like TTL services, marked
``Service.kind = EXTERNAL`` and ``Service.origin``. The pool's own services win an id: an external entry
whose id a gossiping member or a TTL service holds is kept aside (counted ``external_shadowed``) and
takes the id's place when they go. Two adapters writing one (group, id): the last write wins; a delete
removes only the deleting adapter's entry.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from .catalog_batch import BULK_MIN, NO_GROUP, Batch, GroupState, Updates, parse_int
from .healthtags import Health, parse_health
from .ring import ALGORITHMS, CHASH_DEFAULT_REPLICAS, DEFAULT_REPLICAS, MAX_MEMBERS, EmptyRing, Ring, RingNode
from .service import Service, ServiceKind

__all__ = [
    "MAX_WEIGHT",
    "REGISTRY_GROUP",
    "TAG_ADDR",
    "TAG_GROUP",
    "TAG_REPLICAS",
    "TAG_WEIGHT",
    "Catalog",
    "GroupChange",
    "Service",
    "ServiceKind",
    "UnknownGroup",
]

#: Group of the registry servers themselves (Go: registryName).
REGISTRY_GROUP = "registry-group"
TAG_GROUP = "group"
TAG_ADDR = "addr"
TAG_REPLICAS = "replicas"
TAG_WEIGHT = "weight"
#: Largest accepted weight: points grow linearly with it (memory, join cost).
MAX_WEIGHT = 64
#: Largest accepted replicas tag (ring.MAX_REPLICAS caps "consistent" further; for
#: "chash" every replica is a point, so a hostile tag must not cost seconds per join).
MAX_REPLICAS_TAG = 100_000


@dataclass(frozen=True)
class GroupChange:
    """One change of one group; ``version`` is the group's version after it."""

    group: str
    version: int
    added: list[Service]
    removed: list[Service]
    updated: list[Service]


class UnknownGroup(LookupError):
    """The group has no live services (or never had any), or none on its ring (their health)."""

    def __init__(self, group: str, why: str = "no live services") -> None:
        super().__init__(f"unknown group {group!r}: {why}")
        self.group = group


class Catalog:
    """Services per group and their rings; the registry server's state."""

    def __init__(self, algorithm: str = "consistent", default_replicas: int | None = None,
                 only_passing: bool = False) -> None:
        if algorithm not in ALGORITHMS:
            raise ValueError(f"unknown ring algorithm {algorithm!r} (expected one of {ALGORITHMS})")
        if default_replicas is None:
            default_replicas = CHASH_DEFAULT_REPLICAS if algorithm == "chash" else DEFAULT_REPLICAS
        if default_replicas < 1:
            raise ValueError("default_replicas must be >= 1")
        self.algorithm = algorithm
        self.default_replicas = default_replicas
        #: Warning services are out of the rings too (critical ones always are).
        self.only_passing = only_passing
        self._worst_routed = Health.PASSING if only_passing else Health.WARNING
        #: Counters: "bad_replicas", "bad_weight", "ignored_no_group", "listener_error", "unknown_health", ...
        self.stats: Counter[str] = Counter()
        #: Health changes of members already in a group, by the health they changed to ("critical", ...).
        self.health_changes: Counter[str] = Counter()
        self._lock = threading.RLock()
        self._groups: dict[str, GroupState] = {}
        self._where: dict[str, str] = {}  # gossiping member name -> group (names are unique pool-wide)
        #: TTL services by group and id, with their tags: on the ring, or held aside (`apply_ttl`)
        self._ttl: dict[str, dict[str, Mapping[str, str]]] = {}
        #: External services by group and id: (origin, tags); on the ring, or held aside (`apply_external`)
        self._ext: dict[str, dict[str, tuple[str, Mapping[str, str]]]] = {}
        self._listeners: tuple[Callable[[GroupChange], None], ...] = ()

    # ---------------------------------------------------------------- writes

    def apply(self, name: str, tags: Mapping[str, str] | None) -> None:
        """Upsert (``tags``) or remove (``None``) gossiping member ``name``; never raises on bad tags."""
        self.apply_many(((name, tags),))

    def apply_many(self, updates: Iterable[tuple[str, Mapping[str, str] | None]]) -> None:
        """Apply several gossip member updates at once: one change (one version) per affected group.

        Same final state as calling ``apply`` for each in order, but each
        group's ring is updated once, and rebuilt in one bulk pass when the
        batch adds many members (a registry learning a whole cluster at
        start-up: ~4x cheaper than one join at a time).
        """
        with self._lock:
            batch = Updates(self._groups, self._where, self.algorithm == "chash")
            for name, tags in updates:
                self._gossip(batch, name, tags)
            self._commit_all(batch)

    def apply_ttl(self, updates: Iterable[tuple[str, str, Mapping[str, str] | None]]) -> None:
        """Upsert (``tags``: `registry.ttl.entry_tags` of the entry) or remove (``None``) TTL services
        ``(group, id)``: one change (one version) per affected group, as `apply_many`.

        Why held aside, not refused: a group's ring names its nodes by id, so a TTL id equal to the name of
        a gossiping member of that group cannot be on the ring beside it. The gossiping one wins (it is
        there, answering pings); the TTL entry is kept (counted ``ttl_shadowed``) and takes the id's place
        when that member leaves the group, and goes back aside if it returns. Replication brings such
        entries (another registry took the write before the member joined): refusing them here would lose
        them on this registry only."""
        with self._lock:
            batch = Updates(self._groups, self._where, self.algorithm == "chash")
            for group, id_, tags in updates:
                self._ttl_update(batch, group, id_, tags)
            self._commit_all(batch)

    def apply_external(self, origin: str,
                       updates: Iterable[tuple[str, str, Mapping[str, str] | None]]) -> None:
        """Upsert (``tags``: as a member's, with ``addr``) or remove (``None``) the external services
        ``(group, id)`` adapter ``origin`` imports: one change (one version) per affected group."""
        with self._lock:
            batch = Updates(self._groups, self._where, self.algorithm == "chash")
            for group, id_, tags in updates:
                self._ext_update(batch, origin, group, id_, tags)
            self._commit_all(batch)

    def external(self, origin: str) -> list[tuple[str, str]]:
        """The (group, id) of every external service ``origin`` holds (on a ring or aside), sorted."""
        with self._lock:
            return sorted((g, i) for g, held in self._ext.items() for i, (o, _) in held.items() if o == origin)

    def _ext_update(self, batch: Updates, origin: str, group: str, id_: str,
                    tags: Mapping[str, str] | None) -> None:
        if not group or not id_:
            self.stats["ignored_no_group"] += 1
            return
        if group == REGISTRY_GROUP:  # clients find the registries there: an import must not add to it
            self.stats["external_refused"] += 1
            return
        b = batch.group(group)
        held = self._ext.setdefault(group, {})
        current = b.services.get(id_)
        if tags is None:
            mine = held.get(id_)
            if mine is not None and mine[0] == origin:
                del held[id_]
                if current is not None and current.kind is ServiceKind.EXTERNAL:
                    b.remove(id_)
            if not held:
                del self._ext[group]
            return
        new = id_ not in held
        held[id_] = (origin, tags)
        if current is not None and current.kind is not ServiceKind.EXTERNAL:
            if new:
                self.stats["external_shadowed"] += 1
            return
        self._ext_enters(b, group, id_)

    def _ext_enters(self, b: Batch, group: str, id_: str) -> None:
        """The held external entry of ``id_`` (if any) onto the ring: the id is free."""
        entry = self._ext.get(group, {}).get(id_)
        if entry is None:
            return
        if id_ not in b.services and self._full(b.services):
            self.stats["group_full"] += 1
            return
        b.upsert(self._service(group, id_, entry[1], ServiceKind.EXTERNAL, entry[0]))

    def holds_gossip(self, group: str, id: str) -> bool:
        """Whether a gossiping member named ``id`` is in ``group`` (a TTL write of that id would be shadowed)."""
        return self._where.get(id) == group

    def _gossip(self, batch: Updates, name: str, tags: Mapping[str, str] | None) -> None:
        group = tags.get(TAG_GROUP, "") if tags is not None else ""
        previous = batch.where(name)
        if previous is not None and previous != group:
            self._gossip_leaves(batch.group(previous), previous, name)
            batch.moved[name] = NO_GROUP
        if tags is None:
            return
        if not group:
            self.stats["ignored_no_group"] += 1
            return
        b = batch.group(group)
        held = b.services.get(name)
        if held is None and self._full(b.services):
            self.stats["group_full"] += 1
            return
        if held is not None and held.kind is ServiceKind.TTL:
            self.stats["ttl_shadowed"] += 1  # the gossiping member takes the id's place
        b.upsert(self._service(group, name, tags))
        batch.moved[name] = group

    def _gossip_leaves(self, b: Batch, group: str, name: str) -> None:
        b.remove(name)
        tags = self._ttl.get(group, {}).get(name)
        if tags is not None:  # a TTL entry of that id was held aside: it comes onto the ring now
            self._ttl_enters(b, group, name, tags)
        else:
            self._ext_enters(b, group, name)

    def _ttl_update(self, batch: Updates, group: str, id_: str, tags: Mapping[str, str] | None) -> None:
        if not group:
            self.stats["ignored_no_group"] += 1
            return
        b = batch.group(group)
        held = self._ttl.setdefault(group, {})
        current = b.services.get(id_)
        if tags is None:
            held.pop(id_, None)
            if not held:
                del self._ttl[group]
            if current is not None and current.kind is ServiceKind.TTL:
                b.remove(id_)
                self._ext_enters(b, group, id_)
            return
        new = id_ not in held
        held[id_] = tags
        if current is not None and current.kind is ServiceKind.GOSSIP:
            if new:
                self.stats["ttl_shadowed"] += 1
            return
        self._ttl_enters(b, group, id_, tags)

    def _ttl_enters(self, b: Batch, group: str, id_: str, tags: Mapping[str, str]) -> None:
        if id_ not in b.services and self._full(b.services):
            self.stats["group_full"] += 1
            return
        b.upsert(self._service(group, id_, tags, ServiceKind.TTL))

    def _commit_all(self, batch: Updates) -> None:
        changes = [change for g, b in batch.groups.items() if (change := self._commit(g, b)) is not None]
        for name, group in batch.moved.items():
            if group:
                self._where[name] = group
            else:
                self._where.pop(name, None)
        # Listeners run under the (re-entrant) lock so they see changes in order.
        self._notify(changes)

    def _service(self, group: str, name: str, tags: Mapping[str, str],
                 kind: ServiceKind = ServiceKind.GOSSIP, origin: str = "") -> Service:
        replicas, ok = parse_int(tags.get(TAG_REPLICAS), self.default_replicas, 1, MAX_REPLICAS_TAG)
        if not ok:
            self.stats["bad_replicas"] += 1
        weight, ok = parse_int(tags.get(TAG_WEIGHT), 1, 1, MAX_WEIGHT)
        if not ok:
            self.stats["bad_weight"] += 1
        health, note, known = parse_health(tags)
        if not known:
            self.stats["unknown_health"] += 1
        return Service(
            id=name,
            group=group,
            addr=tags.get(TAG_ADDR, ""),
            replicas=replicas,
            weight=weight,
            tags=MappingProxyType(dict(tags)),
            health=health,
            health_note=note,
            kind=kind,
            origin=origin,
        )

    def routed(self, service: Service) -> bool:
        """Whether `service` is on its group's ring: passing, or warning unless ``only_passing``."""
        return service.health <= self._worst_routed

    def _count_health_change(self, old: Service | None, new: Service) -> None:
        if old is not None and old.health is not new.health:
            self.health_changes[new.health.word] += 1

    def _full(self, services: Mapping[str, Service]) -> bool:
        """A "consistent" ring packs owner indexes in 14 bits: a member beyond
        ``MAX_MEMBERS`` is refused (counted as ``group_full``), not raised into
        the gossip event path where it would lose the rest of the batch."""
        return self.algorithm == "consistent" and len(services) >= MAX_MEMBERS

    def _node(self, group_replicas: int | None, service: Service) -> RingNode:
        if self.algorithm == "chash" and group_replicas is not None:
            return RingNode(group_replicas, service.weight)
        return RingNode(service.replicas, service.weight)

    def _commit(self, group: str, b: Batch) -> GroupChange | None:
        """One new state and version for the group, from what the batch touched and removed only."""
        if not b.changed:
            return None
        services, original = b.owned(), b.original
        added = [services[k] for k in b.touched if k not in original]
        removed = [original[k] for k in b.gone if k not in services]
        # chash: a re-inserted service is updated even if equal in the end (changed and changed back in one
        # batch): it moved last, as Go's Upsert moves it, and a watcher's copy must move it too.
        chash = self.algorithm == "chash"
        updated = [services[k] for k in b.touched if k in original and (chash or original[k] != services[k])]
        reordered = self.algorithm == "chash" and bool(b.touched)  # a re-insert moves it last
        if not (added or removed or updated or reordered):
            return None
        state = b.state
        replicas = state.replicas if state is not None else None
        if replicas is None and self.algorithm == "chash" and b.first is not None:
            replicas = b.first.replicas
        for s in updated:
            self._count_health_change(original[s.id], s)
        ring = state.ring if state is not None else Ring(self.algorithm)
        if len(added) >= BULK_MIN and len(added) * 2 >= len(services):
            routed = {k: self._node(replicas, s) for k, s in services.items() if self.routed(s)}
            ring = Ring.build(self.algorithm, routed)
        else:
            for s in removed:
                ring = ring.without(s.id)
            joins: list[tuple[str, RingNode]] = []
            for k in b.touched:  # for chash in services order: see Batch.touched
                s = services[k]
                if not self.routed(s):
                    ring = ring.without(k)
                    continue
                node = self._node(replicas, s)
                if self.algorithm == "chash":  # in this very order (Go's Upsert), as before
                    ring = ring.with_node(k, node)
                elif ring.nodes.get(k) != node:
                    joins.append((k, node))
            # "consistent": one merge for all the joins and re-placements of the batch (its
            # answers depend on the member set only); k joins would copy the whole ring k times.
            ring = ring.with_nodes(joins)
        version = (state.version if state is not None else 0) + 1
        self._groups[group] = GroupState(group, version, replicas, MappingProxyType(services), ring)
        return GroupChange(group, version, added, removed, updated)

    def subscribe(self, callback: Callable[[GroupChange], None]) -> Callable[[], None]:
        """Call ``callback`` after every change (on the applying thread); returns unsubscribe."""
        with self._lock:
            self._listeners = (*self._listeners, callback)

        def unsubscribe() -> None:
            with self._lock:
                listeners = list(self._listeners)
                if callback in listeners:
                    listeners.remove(callback)
                self._listeners = tuple(listeners)

        return unsubscribe

    def _notify(self, changes: list[GroupChange]) -> None:
        listeners = self._listeners
        for change in changes:
            for callback in listeners:
                try:
                    callback(change)
                except Exception:  # noqa: BLE001 - a listener must not break membership handling
                    self.stats["listener_error"] += 1

    # ----------------------------------------------------------------- reads

    def _live(self, group: str) -> GroupState:
        state = self._groups.get(group)
        if state is None or not state.services:
            raise UnknownGroup(group)
        return state

    def match(self, group: str, key: str, n: int = 1) -> list[Service]:
        """The ``n`` routed services (distinct, ring order) for ``key``; ``UnknownGroup`` if none.

        Fewer than ``n`` when the ring is smaller; ``ValueError`` if ``n < 1``.
        """
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        state = self._live(group)
        services = state.services
        try:
            return [services[i] for i in state.ring.get_n(key, n)]
        except EmptyRing:
            raise self._unrouted(state) from None

    def match_batch(self, group: str, keys: Sequence[str]) -> list[Service]:
        """One routed service per key, all from the same snapshot of the group."""
        state = self._live(group)
        if not keys:
            return []
        try:
            return list(map(state.services.__getitem__, state.ring.get_many(keys)))
        except EmptyRing:
            raise self._unrouted(state) from None

    @staticmethod
    def _unrouted(state: GroupState) -> UnknownGroup:
        """Every member of the group is out of its ring: say how healthy they are."""
        counts = Counter(s.health.word for s in state.services.values())
        return UnknownGroup(state.name, "no service on its ring (" + ", ".join(
            f"{n} {word}" for word, n in sorted(counts.items())) + ")")

    def members(self, group: str) -> list[Service]:
        """Live services of ``group``, whatever their health; ``[]`` for an unknown group (as Go).

        Sorted by id for ``"consistent"``.  For ``"chash"`` in ring insert
        order: answers on shared points depend on it (the later insert
        wins), so replaying this list in order (a client's cache) rebuilds
        the very same ring.
        """
        state = self._groups.get(group)
        if state is None:
            return []
        if self.algorithm == "chash":
            return list(state.services.values())
        return [state.services[k] for k in sorted(state.services)]

    def size(self, group: str) -> int:
        """Live services of ``group``, whatever their health (0 for an unknown group), without a copy."""
        state = self._groups.get(group)
        return 0 if state is None else len(state.services)

    def groups(self) -> list[str]:
        """Groups with at least one live service, sorted."""
        return sorted(name for name, state in list(self._groups.items()) if state.services)

    def version(self, group: str) -> int:
        """Number of changes ``group`` has seen (0 if never); never goes back."""
        state = self._groups.get(group)
        return 0 if state is None else state.version

    def ring(self, group: str) -> Ring:
        """The current ring snapshot of ``group`` (``UnknownGroup`` if it has no member; an
        empty ring if no member is routed)."""
        return self._live(group).ring

    def ring_node(self, service: Service) -> RingNode:
        """The ring parameters `service` has on its group's ring, or would have there if routed
        (for "chash" the group's replica count, fixed by its first member)."""
        state = self._groups.get(service.group)
        return self._node(state.replicas if state is not None else None, service)

    def group_of(self, name: str) -> str | None:
        """Group a gossiping member currently belongs to, if any."""
        return self._where.get(name)
