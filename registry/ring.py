"""Consistent-hash rings: immutable snapshots that answer "which service owns this key".

Two algorithms share one storage layout:

``"consistent"`` (default) keeps the *semantics* of uhashring's ``HashRing``
with an xxhash hash function: node ``id`` with ``v`` virtual nodes and weight
``w`` owns the points ``xxh3_64(f"{id}-{i}")`` for ``i in range(v * w)``; a
key ``k`` belongs to the first point strictly clockwise of ``xxh3_64(k)``
(``bisect_right``), wrapping to the smallest point.  With the same inputs our
answers equal ``uhashring.HashRing(nodes, vnodes=v, hash_fn=xxh3_64)``
(a test checks this).  What changed, and why:

* uhashring re-sorts every point on each add/remove (O(P log P) in Python) and
  keeps one dict entry per point (~100 bytes each).  At the point counts the
  balance targets need (below) that is seconds per join and hundreds of MB.
  Here points live in ``array`` buckets (``2**14`` per ring, by the top bits
  of the hash); a join/leave copies only the buckets it touches (C memcpy +
  ``bisect``/``array.insert``) and shares every other bucket with the old
  snapshot, so snapshots are cheap and readers never see a half-built ring.
* uhashring is a mutable object; concurrent readers could observe a
  half-updated ring.  Rings here are never mutated after construction.
* Colliding points: uhashring lets the last writer win, which depends on
  insertion order (two processes learning members in a different order could
  disagree) and loses the point for the survivor when the winner leaves.
  Here every owner's entry is kept and the smallest id wins a tie, so the
  answer depends only on the member set.
* md5 (uhashring's default) is replaced by xxh3-64, ~10x cheaper.
* Virtual nodes: uhashring's default of 160 gives a max/mean share of
  ~1.2-1.3.  The share of a node with ``k`` random points has relative
  spread ``1/sqrt(k)``; for max/mean <= 1.05 over 100 services and <= 1.10
  over 1000 we need ``k`` around 4096 (measured: 1.039 at 100 and 1.054 at
  1000 services), so ``DEFAULT_REPLICAS = 4096``.  A node asking for more
  (Go services send ``replicas="10000"``) is capped at ``MAX_REPLICAS`` =
  4096 points per unit of weight: past that balance improves only with the
  square root while memory and join cost grow linearly (10000 points for
  1000 services would be 10M points, ~120 MB per ring).  Weight still
  multiplies the (capped) count.  Measured (benchmarks/bench_ring.py):
  4.1M points for 1000 services hold ~48 MB (8-byte point + 2-byte owner
  per point); keys moved on a join/leave are 0.97-1.03x the ideal 1/(n+1).
* Cost: a join is O(points of the joiner) Python steps (hash, bisect,
  ``array.insert``), independent of the group size except for memmove of
  ~250-point buckets; a few ms at the 10th member and ~15 ms at the 1000th
  on an idle core.  The per-point cost is the floor: 4096 points is what the
  balance target needs, so a 2 ms join at 10 members would need C code.
* ``Ring.build`` bulk-loads a whole group (one integer sort per hash range
  instead of one insert per point): ~4 s CPU for 1000 x 4096 points versus
  ~15 s joining them one by one.
* Not used at run time: the ``uhashring`` package itself (its storage above
  is what had to change; its answers are reproduced and tested against it).

``"chash"`` reproduces Go ``werbenhu/chash`` v1.0.8 exactly, so a mixed
cluster of Go and Python registry servers answers alike: points are
``crc32_ieee(str(i) + id)`` for ``i in range(replicas)``; a key maps to the
largest point ``<= crc32_ieee(key)``, and a key below the smallest point
maps to the *largest* point (Go's ``Circle.Match`` returns ``len-1`` for
both ends).  When two points are equal the later insert wins (Go overwrites
``rows[crc]``), and re-inserting an existing id (Go ``Upsert``) makes it the
latest.  Go's flaw is kept out: ids like "1" and "11" can produce the same
string (``"1"+"12" == "11"+"2"``); Go's delete then drops the shared point's
owner while leaving the point on the circle, and a later match lands on
nothing.  Here the point keeps its live owner (the latest-inserted live one).
``weight`` multiplies the replica count (Go has no weight; weight 1 is Go).
The group-wide replica count (fixed by the group's first member in Go) is
the catalog's business: each ``RingNode`` here is taken as given.
"""

from __future__ import annotations

import operator
import zlib
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from itertools import repeat
from types import MappingProxyType
from typing import Literal

import xxhash

__all__ = [
    "Algorithm",
    "ALGORITHMS",
    "DEFAULT_REPLICAS",
    "MAX_REPLICAS",
    "CHASH_DEFAULT_REPLICAS",
    "EmptyRing",
    "RingNode",
    "Ring",
    "key_hash",
    "node_points",
    "point_count",
]

Algorithm = Literal["consistent", "chash"]
ALGORITHMS: tuple[str, ...] = ("consistent", "chash")

#: Points per node (per unit of weight) when no ``replicas`` tag is given.
DEFAULT_REPLICAS = 4096
#: Cap on points per unit of weight for ``"consistent"`` (see module doc).
MAX_REPLICAS = 4096
#: Go registry's DefaultReplicas; used by ``"chash"`` when the tag is absent.
CHASH_DEFAULT_REPLICAS = 10000

#: Buckets per ring: hash >> (bits - _BUCKET_BITS) picks the bucket.
_BUCKET_BITS = 14
_NBUCKETS = 1 << _BUCKET_BITS
_BITS: Mapping[str, int] = MappingProxyType({"consistent": 64, "chash": 32})
#: Bulk build sorts the points this many hash ranges at a time (bounds peak memory).
_BUILD_RANGES = 64
_POINT_CODE: Mapping[str, str] = MappingProxyType({"consistent": "Q", "chash": "I"})


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


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def key_hash(algorithm: str, key: str) -> int:
    """Position of ``key`` on a ring of ``algorithm``."""
    if algorithm == "chash":
        return zlib.crc32(_encode(key))
    return xxhash.xxh3_64_intdigest(_encode(key))


def point_count(algorithm: str, node: RingNode) -> int:
    """How many points ``node`` gets (the cap applies to ``"consistent"`` only)."""
    if algorithm == "chash":
        return node.replicas * node.weight
    return min(node.replicas, MAX_REPLICAS) * node.weight


def node_points(algorithm: str, node_id: str, node: RingNode) -> list[int]:
    """Sorted points of one member (duplicates kept: each is an entry on the ring)."""
    count = point_count(algorithm, node)
    ident = _encode(node_id)
    digits = _DECIMALS[:count] if count <= len(_DECIMALS) else _decimals(count)
    if algorithm == "chash":
        pts = list(map(zlib.crc32, map(operator.add, digits, repeat(ident))))
    else:
        pts = list(map(xxhash.xxh3_64_intdigest, map((ident + b"-").__add__, digits)))
    pts.sort()
    return pts


def _decimals(count: int) -> tuple[bytes, ...]:
    return tuple(b"%d" % i for i in range(count))


#: b"0", b"1", ... precomputed once (immutable): formatting them cost a third of the hashing.
_DECIMALS: tuple[bytes, ...] = _decimals(16384)


class Ring:
    """Immutable consistent-hash ring snapshot.

    Storage: ``_NBUCKETS`` pairs of arrays (points ascending, owner index:
    16-bit until a ring has more than 65536 members, then 32-bit);
    ``_nonempty`` lists the buckets holding points, for the wrap-around step.
    Snapshots share bucket arrays; an array is never modified once a ring
    that holds it has been returned.
    """

    __slots__ = (
        "algorithm",
        "_nodes",
        "_ids",
        "_index",
        "_pts",
        "_own",
        "_nonempty",
        "_npoints",
        "_shift",
    )

    algorithm: str
    _nodes: dict[str, RingNode]
    _ids: list[str | None]
    _index: dict[str, int]
    _pts: list[array[int]]
    _own: list[array[int]]
    _nonempty: array[int]
    _npoints: int
    _shift: int

    def __init__(self, algorithm: str = "consistent") -> None:
        """An empty ring; use ``build``/``with_node`` to populate."""
        if algorithm not in _BITS:
            raise ValueError(f"unknown ring algorithm {algorithm!r} (expected one of {ALGORITHMS})")
        self.algorithm = algorithm
        self._nodes = {}
        self._ids = []
        self._index = {}
        empty_p: array[int] = array(_POINT_CODE[algorithm])
        empty_o: array[int] = array("H")
        self._pts = [empty_p] * _NBUCKETS
        self._own = [empty_o] * _NBUCKETS
        self._nonempty = array("I")
        self._npoints = 0
        self._shift = _BITS[algorithm] - _BUCKET_BITS

    # ----------------------------------------------------------------- build

    @classmethod
    def build(cls, algorithm: str, nodes: Mapping[str, RingNode]) -> Ring:
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
        """Bulk-load ``items`` into this (empty, unpublished) ring.

        Points are packed as ``point << rbits | rank`` so one integer sort
        orders them by point and, among equal points, by the tie rule:
        rank = position for chash (the latest insert last), rank of the id
        in sorted order for consistent (the smallest id first).
        """
        algorithm = self.algorithm
        ids = [node_id for node_id, _ in items]
        n = len(ids)
        if algorithm == "chash":
            rank = list(range(n))
        else:
            rank = [0] * n
            for r, i in enumerate(sorted(range(n), key=ids.__getitem__)):
                rank[i] = r
        idx_of_rank = [0] * n
        for i, r in enumerate(rank):
            idx_of_rank[r] = i
        rbits = max(1, (n - 1).bit_length())
        mask = (1 << rbits) - 1
        code = _POINT_CODE[algorithm]
        own_code = "H" if n <= 0x10000 else "I"
        per_node = [array(code, node_points(algorithm, node_id, node)) for node_id, node in items]
        self._ids = list(ids)
        self._index = {node_id: i for i, node_id in enumerate(ids)}
        self._nodes = dict(items)
        if own_code == "I":
            self._own = [array("I")] * _NBUCKETS
        shift = self._shift
        per_range = _NBUCKETS // _BUILD_RANGES
        nonempty: list[int] = []
        total = 0
        for g in range(_BUILD_RANGES):
            first = g * per_range
            lo = first << shift
            hi = (first + per_range) << shift
            packed: list[int] = []
            for i, pts in enumerate(per_node):
                a = bisect_left(pts, lo)
                z = bisect_left(pts, hi, a)
                if a < z:
                    r = rank[i]
                    packed.extend([(p << rbits) | r for p in pts[a:z]])
            if not packed:
                continue
            packed.sort()
            total += len(packed)
            start = 0
            for b in range(first, first + per_range):
                end = bisect_left(packed, ((b + 1) << shift) << rbits, start)
                if end > start:
                    chunk = packed[start:end]
                    self._pts[b] = array(code, [x >> rbits for x in chunk])
                    self._own[b] = array(own_code, [idx_of_rank[x & mask] for x in chunk])
                    nonempty.append(b)
                    start = end
        self._npoints = total
        self._nonempty = array("I", nonempty)

    def _clone(self) -> Ring:
        new = Ring.__new__(Ring)
        new.algorithm = self.algorithm
        new._nodes = dict(self._nodes)
        new._ids = list(self._ids)
        new._index = dict(self._index)
        new._pts = list(self._pts)
        new._own = list(self._own)
        new._nonempty = self._nonempty
        new._npoints = self._npoints
        new._shift = self._shift
        return new

    def with_node(self, node_id: str, node: RingNode) -> Ring:
        """New ring with ``node_id`` added or re-placed; this ring is unchanged.

        ``"consistent"``: same parameters -> the same ring is returned.
        ``"chash"``: always re-inserted (Go ``Upsert``: it becomes the latest insert).
        """
        if not isinstance(node_id, str):
            raise TypeError("node id must be a str")
        old = self._nodes.get(node_id)
        if old is not None and old == node and self.algorithm == "consistent":
            return self
        base = self.without(node_id) if old is not None else self
        new = base._clone()
        ids = new._ids
        try:
            idx = ids.index(None)
            ids[idx] = node_id
        except ValueError:
            idx = len(ids)
            ids.append(node_id)
        new._index[node_id] = idx
        new._nodes[node_id] = node
        if idx > 0xFFFF and new._own[0].typecode == "H":
            new._own = [array("I", a) for a in new._own]  # > 65536 members: widen owners once
        new._insert_points(idx, node_points(self.algorithm, node_id, node))
        return new

    def without(self, node_id: str) -> Ring:
        """New ring without ``node_id`` (the same ring if it is not a member)."""
        node = self._nodes.get(node_id)
        if node is None:
            return self
        new = self._clone()
        idx = new._index.pop(node_id)
        del new._nodes[node_id]
        new._ids[idx] = None
        while new._ids and new._ids[-1] is None:
            new._ids.pop()
        new._remove_points(idx, node_points(self.algorithm, node_id, node))
        return new

    def _insert_points(self, idx: int, points: list[int]) -> None:
        # Hot path (one iteration per point): buckets are copied once per
        # update (sorted input groups them), then bisect + array.insert.
        pts, own, shift = self._pts, self._own, self._shift
        filled: list[int] = []
        cur = -1
        pa = pts[0]
        oa = own[0]
        if self.algorithm == "chash":
            for p in points:
                b = p >> shift
                if b != cur:
                    cur = b
                    pa = pts[b] = pts[b][:]
                    oa = own[b] = own[b][:]
                    if not pa:
                        filled.append(b)
                # Later insert wins a tie: it goes after the equal points,
                # where "largest point <= h" finds it.
                i = bisect_right(pa, p)
                pa.insert(i, p)
                oa.insert(i, idx)
        else:
            for p in points:
                b = p >> shift
                if b != cur:
                    cur = b
                    pa = pts[b] = pts[b][:]
                    oa = own[b] = own[b][:]
                    if not pa:
                        filled.append(b)
                i = bisect_right(pa, p)
                if i and pa[i - 1] == p:
                    i = self._tie_position(pa, oa, i - 1, p, idx)
                pa.insert(i, p)
                oa.insert(i, idx)
        self._npoints += len(points)
        if filled:
            merged = sorted([*self._nonempty, *filled])
            self._nonempty = array("I", merged)

    def _tie_position(self, pa: array[int], oa: array[int], i: int, p: int, idx: int) -> int:
        """Among equal points keep ids ascending: the first one (the winner) is the smallest id."""
        name = self._ids[idx]
        assert name is not None
        ids = self._ids
        while i > 0 and pa[i - 1] == p:
            i -= 1
        n = len(pa)
        while i < n and pa[i] == p:
            other = ids[oa[i]]
            assert other is not None
            if name < other:
                break
            i += 1
        return i

    def _remove_points(self, idx: int, points: list[int]) -> None:
        pts, own, shift = self._pts, self._own, self._shift
        emptied: list[int] = []
        cur = -1
        pa = pts[0]
        oa = own[0]
        removed = 0
        for p in points:
            b = p >> shift
            if b != cur:
                if cur >= 0 and not pa:
                    emptied.append(cur)
                cur = b
                pa = pts[b][:]
                oa = own[b][:]
                pts[b] = pa
                own[b] = oa
            i = bisect_left(pa, p)
            n = len(pa)
            while i < n and pa[i] == p:
                if oa[i] == idx:
                    del pa[i]
                    del oa[i]
                    removed += 1
                    break
                i += 1
        if cur >= 0 and not pa:
            emptied.append(cur)
        self._npoints -= removed
        if emptied:
            gone = set(emptied)
            self._nonempty = array("I", [b for b in self._nonempty if b not in gone])

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

    def _locate(self, h: int) -> tuple[int, int]:
        """(bucket, index) of the entry that owns hash ``h``."""
        nonempty = self._nonempty
        if not nonempty:
            raise EmptyRing("ring has no members")
        b = h >> self._shift
        pa = self._pts[b]
        if self.algorithm == "chash":
            i = bisect_right(pa, h)
            if i > 0:
                return b, i - 1
            j = bisect_left(nonempty, b) - 1  # -1 wraps to the largest point
            nb = nonempty[j]
            return nb, len(self._pts[nb]) - 1
        i = bisect_right(pa, h)
        if i < len(pa):
            return b, i
        j = bisect_right(nonempty, b)
        if j == len(nonempty):
            j = 0
        return nonempty[j], 0

    def get(self, key: str) -> str:
        """Id of the member owning ``key``; ``EmptyRing`` if there is none."""
        b, i = self._locate(key_hash(self.algorithm, key))
        name = self._ids[self._own[b][i]]
        assert name is not None
        return name

    def get_n(self, key: str, n: int) -> list[str]:
        """Up to ``n`` distinct members clockwise from ``key``'s point (first == ``get(key)``)."""
        if n < 1:
            return []
        if n == 1:
            return [self.get(key)]
        b, i = self._locate(key_hash(self.algorithm, key))
        want = min(n, len(self._nodes))
        seen: set[int] = set()
        out: list[str] = []
        ids = self._ids
        for owner in self._walk(b, i):
            if owner not in seen:
                seen.add(owner)
                name = ids[owner]
                assert name is not None
                out.append(name)
                if len(out) >= want:
                    break
        return out

    def _walk(self, b: int, i: int) -> Iterator[int]:
        """Owner indexes of every entry, clockwise from (b, i), once around."""
        own, nonempty = self._own, self._nonempty
        yield from own[b][i:]
        j = bisect_right(nonempty, b)
        count = len(nonempty)
        for k in range(j, j + count):
            nb = nonempty[k - count if k >= count else k]
            if nb == b:
                yield from own[b][:i]
            else:
                yield from own[nb]

    def shares(self) -> dict[str, float]:
        """Exact fraction of the hash space each member owns, summed from the arcs."""
        out = dict.fromkeys(self._nodes, 0.0)
        if not self._nonempty:
            return out
        space = 1 << _BITS[self.algorithm]
        acc = [0] * len(self._ids)
        pts, own = self._pts, self._own
        if self.algorithm == "chash":
            # An entry owns [p, next entry): equal points leave the arc to the last one.
            prev = -1
            prev_owner = 0
            first = -1
            for b in self._nonempty:
                for p, o in zip(pts[b], own[b]):
                    if prev >= 0:
                        acc[prev_owner] += p - prev
                    else:
                        first = p
                    prev, prev_owner = p, o
            acc[prev_owner] += first + space - prev
        else:
            # An entry owns (previous entry, p]: equal points leave it to the first one.
            last_b = self._nonempty[-1]
            prev = pts[last_b][-1] - space
            for b in self._nonempty:
                for p, o in zip(pts[b], own[b]):
                    acc[o] += p - prev
                    prev = p
        for k, v in enumerate(acc):
            name = self._ids[k]
            if name is not None:
                out[name] = v / space
        return out
