"""The ring snapshot interface both algorithms share: members, placement, copy-on-write updates.

A ``Ring`` is an immutable snapshot answering "which member owns this key".  ``Ring(algorithm)``
and ``Ring.build(algorithm, nodes)`` return the algorithm's own class (``ConsistentRing`` or
``ChashRing``), chosen once at construction, so no lookup or update asks "which algorithm?"
again.  This class holds what both share (the member table, owner indexes, ``with_node`` /
``without`` as copy-then-update, ``get_n``, ``shares``); each subclass holds its storage layout,
its hash and its tie rule.  The design, and the figures behind it: docs/ring.md.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from operator import lshift, or_
from types import MappingProxyType
from typing import TYPE_CHECKING, ClassVar, Literal, cast

if TYPE_CHECKING:  # typing.Self is 3.11+: only the type checker sees it (the package runs on 3.10)
    from typing import Self

__all__ = [
    "ALGORITHMS",
    "CHASH_DEFAULT_REPLICAS",
    "MAX_REPLICAS",
    "Algorithm",
    "EmptyRing",
    "Ring",
    "RingNode",
    "bucket_runs",
    "key_hash",
    "node_points",
    "point_count",
]

Algorithm = Literal["consistent", "chash"]
ALGORITHMS: tuple[str, ...] = ("consistent", "chash")

#: Cap on points per unit of weight for ``"consistent"`` (docs/ring.md, "Virtual nodes").
MAX_REPLICAS = 4096
#: Go registry's DefaultReplicas; used by ``"chash"`` when the tag is absent.
CHASH_DEFAULT_REPLICAS = 10000

#: Bulk build sorts the points this many hash ranges at a time (bounds peak memory).
_BUILD_RANGES = 64

#: Ring class of each algorithm, filled as the classes are defined (``__init_subclass__``).
_CLASSES: dict[str, type[Ring]] = {}


class EmptyRing(LookupError):
    """Raised by lookups on a ring without members."""


@dataclass(frozen=True, slots=True)
class RingNode:
    """Placement parameters of one member: virtual nodes and weight (both >= 1)."""

    replicas: int
    weight: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.replicas, bool) or not isinstance(self.replicas, int) or self.replicas < 1:
            raise ValueError(f"replicas must be an int >= 1, got {self.replicas!r}")
        if isinstance(self.weight, bool) or not isinstance(self.weight, int) or self.weight < 1:
            raise ValueError(f"weight must be an int >= 1, got {self.weight!r}")


def ring_class(algorithm: str) -> type[Ring]:
    """The ``Ring`` subclass implementing ``algorithm``; ``ValueError`` for an unknown name."""
    try:
        return _CLASSES[algorithm]
    except (KeyError, TypeError):
        raise ValueError(f"unknown ring algorithm {algorithm!r} (expected one of {ALGORITHMS})") from None


def key_hash(algorithm: str, key: str) -> int:
    """Position of ``key`` on a ring of ``algorithm``."""
    return ring_class(algorithm).key_hash(key)


def point_count(algorithm: str, node: RingNode) -> int:
    """How many points ``node`` gets (the cap applies to ``"consistent"`` only)."""
    return ring_class(algorithm).count(node)


def node_points(algorithm: str, node_id: str, node: RingNode) -> list[int]:
    """Sorted points of one member (duplicates kept: each is an entry on the ring)."""
    return sorted(ring_class(algorithm).replica_points(node_id, node))


def bucket_runs(per_node: Sequence[list[int]], rank: list[int], rbits: int, shift: int,
                buckets: int) -> Iterator[tuple[int, list[int]]]:
    """(bucket, its entries) of a bulk build, buckets ascending, entries sorted.

    ``per_node[i]`` are node ``i``'s sorted points; an entry is ``point << rbits | rank[i]``,
    so one integer sort orders a bucket by point and, among equal points, by the
    algorithm's tie rule (its ranks).  The points are cut and sorted ``_BUILD_RANGES``
    hash ranges at a time, which bounds the peak memory of the packed lists.
    """
    per_range = buckets // _BUILD_RANGES
    for g in range(_BUILD_RANGES):
        first = g * per_range
        lo = first << shift
        hi = (first + per_range) << shift
        packed: list[int] = []
        for i, pts in enumerate(per_node):
            a = bisect_left(pts, lo)
            z = bisect_left(pts, hi, a)
            if a < z:
                packed.extend(map(or_, map(lshift, pts[a:z], repeat(rbits)), repeat(rank[i])))
        if not packed:
            continue
        packed.sort()
        start = 0
        for b in range(first, first + per_range):
            end = bisect_left(packed, ((b + 1) << shift) << rbits, start)
            if end > start:
                yield b, packed[start:end]
                start = end


class Ring:
    """Immutable consistent-hash ring snapshot (``Ring(algorithm)`` is the algorithm's subclass).

    Updates return a new snapshot that shares every bucket it did not touch with this
    one; nothing reachable from a returned ring is modified afterwards, so readers on
    other threads never see a half-built ring.  Owner indexes (``_ids``) are reused
    after a leave, so a ring's storage stays dense.
    """

    __slots__ = ("_ids", "_index", "_nodes", "_npoints")

    #: The algorithm's name (``"consistent"`` or ``"chash"``).
    algorithm: ClassVar[str]
    #: Width of the hash space in bits.
    BITS: ClassVar[int]
    #: True where re-adding a member with unchanged parameters returns the same ring.
    SAME_NODE_IS_NOOP: ClassVar[bool]
    #: True: an entry owns the keys up to its point, and of tied entries the first wins
    #: (``"consistent"``); False: the keys from its point on, and the last wins (``"chash"``).
    POINT_ENDS_ARC: ClassVar[bool]

    _nodes: dict[str, RingNode]
    _ids: list[str | None]
    _index: dict[str, int]
    _npoints: int

    def __init_subclass__(cls, *, algorithm: str, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        cls.algorithm = algorithm
        _CLASSES[algorithm] = cls

    def __new__(cls, algorithm: str | None = None) -> Self:
        # Ring("chash") is a ChashRing: the algorithm is picked here, once per snapshot line.
        impl = ring_class("consistent" if algorithm is None else algorithm) if cls is Ring else cls
        return cast("Self", object.__new__(impl))

    def __init__(self, algorithm: str | None = None) -> None:
        """An empty ring; use ``build``/``with_node`` to populate."""
        if algorithm is not None and algorithm != self.algorithm:
            raise ValueError(f"{type(self).__name__} is the {self.algorithm!r} ring, not {algorithm!r}")
        self._nodes = {}
        self._ids = []
        self._index = {}
        self._npoints = 0
        self._init_storage()

    # ------------------------------------------------- what each algorithm defines

    @staticmethod
    def key_hash(key: str) -> int:
        """Position of ``key`` on this algorithm's ring."""
        raise NotImplementedError

    @staticmethod
    def count(node: RingNode) -> int:
        """How many points ``node`` gets."""
        raise NotImplementedError

    @staticmethod
    def replica_points(node_id: str, node: RingNode) -> Sequence[int]:
        """Points of one member in replica order (unsorted): a list, or ``"consistent"``'s array('Q')."""
        raise NotImplementedError

    def _init_storage(self) -> None:
        raise NotImplementedError

    def _share_storage(self, new: Ring) -> None:
        """Give ``new`` (a clone) this ring's bucket lists: copied lists, shared arrays."""
        raise NotImplementedError

    def _ranks(self, ids: list[str]) -> list[int]:
        """Tie-break rank of each member of a bulk build (a smaller rank wins a tied point)."""
        raise NotImplementedError

    def _load(self, items: list[tuple[str, RingNode]], rank: list[int], idx_of_rank: list[int]) -> None:
        """Bulk-load the points of ``items`` (member table already set)."""
        raise NotImplementedError

    def _admit(self, idx: int) -> None:
        """Prepare this clone's storage for owner index ``idx`` (or refuse it)."""

    def _insert_points(self, idx: int, points: Sequence[int]) -> None:
        """Add owner ``idx``'s entries (``_ids[idx]`` is already set); points in any order."""
        raise NotImplementedError

    def _remove_points(self, idx: int, points: Sequence[int]) -> None:
        """Drop one entry of owner ``idx`` per point; points in any order."""
        raise NotImplementedError

    def get(self, key: str) -> str:
        """Id of the member owning ``key``; ``EmptyRing`` if there is none."""
        raise NotImplementedError

    def get_many(self, keys: Sequence[str]) -> list[str]:
        """``[self.get(k) for k in keys]``."""
        raise NotImplementedError

    def _walk(self, key: str) -> Iterator[int]:
        """Owner indexes of every entry, clockwise from ``key``'s owner, once around."""
        raise NotImplementedError

    def _entries(self) -> Iterator[tuple[int, int]]:
        """(point, owner index) of every entry in ring order (tests, shares, ``owned_arcs``)."""
        raise NotImplementedError

    def arc_at(self, point: int) -> tuple[int, int, str]:
        """``(start, end, owner)``: the arc ``[start, end)`` holding hash ``point`` that one entry owns.

        Why: the ring view (``registry.ring.view``) draws and compares snapshots at given
        points of the hash space, where no key exists to hash.  ``start`` and ``end`` are
        entry points; the arc wraps past ``2**BITS`` when ``end <= start`` (``end == start``:
        one distinct point, the whole circle).  ``EmptyRing`` if there is no member.
        """
        raise NotImplementedError

    def _arcs(self, acc: list[int], space: int) -> None:
        """Add to ``acc[owner]`` the length of every arc that owner's entries own."""
        raise NotImplementedError

    # ----------------------------------------------------------------- build

    @classmethod
    def build(cls, algorithm: str, nodes: Mapping[str, RingNode]) -> Self:
        """Ring of ``nodes``; for ``"chash"`` the mapping order is the insert order.

        Same result as adding the nodes one by one with ``with_node``, but
        built in one pass (hash every node, then sort and cut the points
        range by range), several times faster for large groups: a client
        cache or a registry that learns a whole group at once uses this.
        """
        ring = cls(algorithm)
        items = list(nodes.items())
        for node_id, node in items:
            if not isinstance(node_id, str) or not isinstance(node, RingNode):
                raise TypeError("nodes must map str ids to RingNode")
        if len(items) <= 1:
            for node_id, node in items:
                ring = ring.with_node(node_id, node)
            return ring
        ring._fill(items)
        return ring

    def _fill(self, items: list[tuple[str, RingNode]]) -> None:
        """Bulk-load ``items`` into this (empty, unpublished) ring."""
        ids = [node_id for node_id, _ in items]
        rank = self._ranks(ids)
        idx_of_rank = [0] * len(ids)
        for i, r in enumerate(rank):
            idx_of_rank[r] = i
        self._ids = list(ids)
        self._index = {node_id: i for i, node_id in enumerate(ids)}
        self._nodes = dict(items)
        self._load(items, rank, idx_of_rank)

    def _clone(self) -> Self:
        new = object.__new__(type(self))
        new._nodes = dict(self._nodes)
        new._ids = list(self._ids)
        new._index = dict(self._index)
        new._npoints = self._npoints
        self._share_storage(new)
        return new

    def with_node(self, node_id: str, node: RingNode) -> Self:
        """New ring with ``node_id`` added or re-placed; this ring is unchanged.

        ``"consistent"``: same parameters -> the same ring is returned.
        ``"chash"``: always re-inserted (Go ``Upsert``: it becomes the latest insert).
        """
        if not isinstance(node_id, str):
            raise TypeError("node id must be a str")
        old = self._nodes.get(node_id)
        if old is not None and old == node and self.SAME_NODE_IS_NOOP:
            return self
        base = self.without(node_id) if old is not None else self
        try:
            idx = base._ids.index(None)
        except ValueError:
            idx = len(base._ids)
        new = base._clone()
        new._admit(idx)
        if idx < len(new._ids):
            new._ids[idx] = node_id
        else:
            new._ids.append(node_id)
        new._index[node_id] = idx
        new._nodes[node_id] = node
        new._insert_points(idx, self.replica_points(node_id, node))
        return new

    def with_nodes(self, items: Iterable[tuple[str, RingNode]]) -> Self:
        """New ring equal to ``with_node`` of each item in turn; this ring is unchanged.

        Why: a batch of joins (TTL services registered together, a peer's push) would
        copy and merge the whole ring once per member; an algorithm that can merge
        several owners in one pass over the existing points (``_insert_many``) does so
        here.  The result is the sequential one entry for entry, owner indexes
        included: they are assigned as ``with_node`` after ``with_node`` would.
        ``"chash"``: the items one by one (the insert order is part of its answers).
        """
        items = list(items)
        for node_id, node in items:
            if not isinstance(node_id, str):
                raise TypeError("node id must be a str")
            if not isinstance(node, RingNode):
                raise TypeError("nodes must be RingNode")
        if len(items) <= 1 or not self.SAME_NODE_IS_NOOP:
            ring = self
            for node_id, node in items:
                ring = ring.with_node(node_id, node)
            return ring
        # Replay the member table as the sequential joins leave it: which owner index each
        # member ends on (a re-placed one frees its index first, trailing holes are trimmed,
        # a joiner takes the lowest free index), without touching any point.
        ids = list(self._ids)
        index = dict(self._index)
        nodes = dict(self._nodes)
        for node_id, node in items:
            old = nodes.get(node_id)
            if old is not None:
                if old == node:
                    continue
                ids[index.pop(node_id)] = None
                while ids and ids[-1] is None:
                    ids.pop()
            try:
                idx = ids.index(None)
            except ValueError:
                idx = len(ids)
            self._admit(idx)
            if idx < len(ids):
                ids[idx] = node_id
            else:
                ids.append(node_id)
            index[node_id] = idx
            nodes[node_id] = node
        # Members whose (index, placement) changed: their old points go, their new ones come.
        moved = [k for k, i in index.items() if self._index.get(k) != i or self._nodes[k] != nodes[k]]
        if not moved:
            return self
        new = self._clone()
        for k in moved:
            if k in self._nodes:
                new._remove_points(self._index[k], self.replica_points(k, self._nodes[k]))
        new._ids = ids
        new._index = index
        new._nodes = nodes
        new._insert_many([(index[k], self.replica_points(k, nodes[k])) for k in moved])
        return new

    def _insert_many(self, owners: list[tuple[int, Sequence[int]]]) -> None:
        """Add the entries of several owners (``_ids`` already set); by default one by one."""
        for idx, points in owners:
            self._insert_points(idx, points)

    def without(self, node_id: str) -> Self:
        """New ring without ``node_id`` (the same ring if it is not a member)."""
        node = self._nodes.get(node_id)
        if node is None:
            return self
        new = self._clone()
        idx = new._index.pop(node_id)
        del new._nodes[node_id]
        new._remove_points(idx, self.replica_points(node_id, node))
        new._ids[idx] = None
        while new._ids and new._ids[-1] is None:
            new._ids.pop()
        return new

    # ---------------------------------------------------------------- lookup

    @property
    def nodes(self) -> Mapping[str, RingNode]:
        """Members and their placement parameters (read-only view)."""
        return MappingProxyType(self._nodes)

    @property
    def point_count(self) -> int:
        """Entries on the ring (all members' points, duplicates included)."""
        return self._npoints

    def __len__(self) -> int:
        return len(self._nodes)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._nodes

    def __repr__(self) -> str:
        return f"Ring({self.algorithm!r}, nodes={len(self._nodes)}, points={self._npoints})"

    def get_n(self, key: str, n: int) -> list[str]:
        """Up to ``n`` distinct members clockwise from ``key``'s point (first == ``get(key)``)."""
        if n < 1:
            return []
        if n == 1:
            return [self.get(key)]
        if not self._nodes:
            raise EmptyRing("ring has no members")
        want = min(n, len(self._nodes))
        seen: set[int] = set()
        out: list[str] = []
        ids = self._ids
        for owner in self._walk(key):
            if owner not in seen:
                seen.add(owner)
                name = ids[owner]
                assert name is not None
                out.append(name)
                if len(out) >= want:
                    break
        return out

    def owner_at(self, point: int) -> str:
        """Id of the member owning a key whose hash is ``point``: ``get`` without the hashing."""
        return self.arc_at(point)[2]

    def owned_arcs(self) -> list[tuple[int, str]]:
        """``(start, owner)`` of every arc, starts ascending; an arc ends where the next starts.

        One arc per distinct point (tied entries give their arc to the one a lookup lands
        on), so the owners' arc lengths are exactly ``shares()``.  Walks every entry: for
        small rings (the view's exact mode), not for the 4096-points-a-member ones.
        """
        pts: list[int] = []
        owners: list[int] = []
        for p, o in self._entries():
            if pts and pts[-1] == p:
                if not self.POINT_ENDS_ARC:
                    owners[-1] = o  # the last of a tied run wins
                continue
            pts.append(p)
            owners.append(o)
        if self.POINT_ENDS_ARC and owners:  # the arc ending at point i starts at point i - 1
            owners = owners[1:] + owners[:1]
        ids = self._ids
        return [(p, cast(str, ids[o])) for p, o in zip(pts, owners)]

    def changed_members(self, other: Ring) -> set[str]:
        """Members whose entries may differ between ``other`` and this ring.

        Joined, left, or re-placed (a different ``RingNode``); every other member owns the
        same points with the same tie rank in both, so only the arcs next to these members'
        points can change owner (``registry.ring.view.moved_share`` relies on it).
        """
        mine, theirs = self._nodes, other._nodes
        out = {k for k, node in mine.items() if theirs.get(k) != node}
        out.update(k for k in theirs if k not in mine)
        return out

    def shares(self) -> dict[str, float]:
        """Exact fraction of the hash space each member owns, summed from the arcs."""
        out = dict.fromkeys(self._nodes, 0.0)
        if not self._nodes:
            return out
        space = 1 << self.BITS
        acc = [0] * len(self._ids)
        self._arcs(acc, space)
        for k, v in enumerate(acc):
            name = self._ids[k]
            if name is not None:
                out[name] = v / space
        return out

