"""Consistent-hash rings: immutable snapshots that answer "which service owns this key".

``"consistent"`` (default) keeps the *semantics* of uhashring's ``HashRing``
with an xxhash hash function: node ``id`` with ``v`` virtual nodes and weight
``w`` owns the points ``xxh3_64(f"{id}-{i}")`` for ``i in range(v * w)``; a
key ``k`` belongs to the first point strictly clockwise of ``xxh3_64(k)``,
wrapping to the smallest point.  With the same inputs our answers equal
``uhashring.HashRing(nodes, vnodes=v, hash_fn=xxh3_64)`` (tests check this).
What changed, and why:

* uhashring re-sorts every point on each add/remove (O(P log P) in Python) and
  keeps one dict entry per point (~100 bytes each).  At the point counts the
  balance targets need (below) that is seconds per join and hundreds of MB.
  Here a ring is ``2**14`` buckets (top 14 bits of the point), each ONE
  sorted ``array("Q")`` whose entries pack the low 50 bits of a point with a
  14-bit owner index, plus a sentinel ``2**64-1`` at the end (so a lookup
  never indexes past the end: landing on it means "next non-empty bucket").
  One entry per point means one bisect + ``array.insert`` per point, and
  those run as C-level ``map()`` pipelines over the joiner's points, one
  point per bucket per pass (a few passes: 4096 points in 16384 buckets put
  ~500 in a second pass, a handful in a third).  A per-point Python loop
  costs ~0.6 us, which alone would exceed the 2 ms join target at 4096
  points.  A join copies only the buckets it touches and shares every other
  bucket with the old snapshot, so readers never see a half-built ring.
  Why 2**14 and not 2**16 buckets: each bucket array is an object the
  cyclic GC tracks; with 65536 of them per ring the collections that a
  join's ~4000 new arrays trigger cost more than the shorter arrays save
  (measured side by side with bench_ring's method: 2**16 was slower on
  join, leave and lookups).  Cost of the packing: at most ``MAX_MEMBERS``
  = 16383 members per ring (owner index 0..16382; more raises
  ``ValueError``; 16383 x 4096 points would be 0.5 GB anyway).
* Even as map() passes a join costs ~8 C-level element operations per point
  (copy, bisect, tie check, insert, store, ...): ~3.5-4 ms at 4096 points,
  twice the 2 ms target, with hashing (~0.35 ms) the only part that cannot
  shrink.  So joins and leaves go through ``registry._ringaccel``, a small C
  extension (``setup.py`` builds it, optional): it sorts the member's points
  once, then replaces each touched bucket by a new array built in one merge
  (~1 ms per join in all; ~4 ms at 1000 members, where copying the touched
  buckets dominates).  Its arrays are untracked by the cyclic GC (numbers
  only, no cycles possible), so a join no longer triggers collections.
  2**14 buckets were chosen for the pure-Python path and kept (not
  re-measured with C): 2**16 would make the copies 4x shorter, which helps
  only large rings (already far under target), and hold 4x more arrays.
  Without a compiler the pure-Python passes below run instead; both build
  identical snapshots, entry for entry (tests/registry/test_ring_accel.py).
* uhashring is a mutable object; concurrent readers could observe a
  half-updated ring.  Rings here are never mutated after construction.
* Colliding points: uhashring lets the last writer win, which depends on
  insertion order (two processes learning members in a different order could
  disagree) and loses the point for the survivor when the winner leaves.
  Here every owner's entry is kept, entries of one point are ordered by id,
  and the smallest id wins, so the answer depends only on the member set.
  Lookups need no tie check: bisect only needs "entry <= probe" to be
  monotone, which holds whatever the owner order inside a run of equal points.
* md5 (uhashring's default) is replaced by xxh3-64, ~10x cheaper.
* Virtual nodes: uhashring's default of 160 gives a max/mean share of
  ~1.2-1.3.  The share of a node with ``k`` random points has relative
  spread ``1/sqrt(k)``; for max/mean <= 1.05 over 100 services and <= 1.10
  over 1000 we need ``k`` around 4096 (measured: 1.039 at 100 and 1.054 at
  1000 services), so ``DEFAULT_REPLICAS = 4096``.  A node asking for more
  (Go services send ``replicas="10000"``) is capped at ``MAX_REPLICAS`` =
  4096 points per unit of weight: past that balance improves only with the
  square root while memory and join cost grow linearly.  Weight still
  multiplies the (capped) count.  Keys moved on a join/leave are
  0.97-1.03x the ideal 1/(n+1) (benchmarks/bench_ring.py).
* ``Ring.build`` bulk-loads a whole group (one integer sort per hash range
  instead of one insert per point; with the C extension, its ``build``: two
  passes into the bucket arrays and a sort per bucket, ~10x faster, so a
  client cache takes a 2,000-member snapshot in about the time hashing takes).  ``get_many`` resolves a batch of keys
  with C-level pipelines (a client cache's MatchBatch).
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
the catalog's business: each ``RingNode`` here is taken as given.  chash
keeps a simpler layout (``2**14`` buckets of point and owner arrays, one
Python step per point): it is the Go-compatibility mode, not the default.
"""

from __future__ import annotations

import operator
import zlib
from array import array
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain, compress, repeat
from operator import and_, eq, getitem, lshift, or_, rshift
from types import MappingProxyType, ModuleType
from typing import Literal

import xxhash

_ringaccel: ModuleType | None
try:  # optional C merge (setup.py builds it where a compiler exists); same answers either way
    from registry import _ringaccel
except ImportError:
    _ringaccel = None

__all__ = [
    "Algorithm",
    "ALGORITHMS",
    "DEFAULT_REPLICAS",
    "MAX_REPLICAS",
    "MAX_MEMBERS",
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

#: Most members one ``"consistent"`` ring holds (14-bit owner index, the top value reserved).
MAX_MEMBERS = (1 << 14) - 1

# "consistent" layout: bucket = point >> _LOW; entry = (point & _LMASK) << _OBITS | owner.
_CBITS = 14
_CN = 1 << _CBITS
_CMASK = _CN - 1
_LOW = 64 - _CBITS
_LMASK = (1 << _LOW) - 1
_OBITS = 14
_OMASK = (1 << _OBITS) - 1
#: Owner bits of a lookup probe: above every owner index, so "entry <= probe" == "point <= h".
_PROBE = _OMASK - 1
#: Last entry of every bucket; above every probe.
_SENT = (1 << 64) - 1
_xxh = xxhash.xxh3_64_intdigest
if _ringaccel is not None and (_ringaccel.BUCKET_BITS, _ringaccel.OWNER_BITS) != (_CBITS, _OBITS):
    _ringaccel = None  # built for another layout: stale build, fall back
_copy = array.__copy__
_ainsert = array.insert
_adel = array.__delitem__

#: chash buckets: hash >> (32 - _BUCKET_BITS) picks the bucket.
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
    pts = _points(algorithm, node_id, node)
    pts.sort()
    return pts


def _points(algorithm: str, node_id: str, node: RingNode) -> list[int]:
    """Points of one member in replica order (a "consistent" join needs no sort)."""
    count = point_count(algorithm, node)
    ident = _encode(node_id)
    digits = _DECIMALS[:count] if count <= len(_DECIMALS) else _DECIMALS + _decimals(len(_DECIMALS), count)
    if algorithm == "chash":
        return list(map(zlib.crc32, map(operator.add, digits, repeat(ident))))
    return list(map(_xxh, map((ident + b"-").__add__, digits)))


def _decimals(start: int, stop: int) -> tuple[bytes, ...]:
    return tuple(b"%d" % i for i in range(start, stop))


#: b"0" .. b"4095" precomputed once (immutable): formatting them cost a third of the hashing.
#: Only the default point count: 16384 of them held 0.7 MiB in every registry from import on,
#: and the rarer larger counts (weight > 1, chash's 10000) format the rest per join.
_DECIMALS: tuple[bytes, ...] = _decimals(0, DEFAULT_REPLICAS)




class Ring:
    """Immutable consistent-hash ring snapshot.

    ``"consistent"``: ``_bk`` holds ``2**14`` packed bucket arrays (see the
    module doc) and ``_flags`` marks the non-empty buckets twice over
    (``flags[b] == flags[b + 2**14]``) so ``flags.find(1, b + 1)`` finds the
    next non-empty bucket clockwise, wrap included, in one C call.
    ``"chash"``: ``2**14`` pairs of arrays (points ascending, owner index:
    16-bit until a ring has more than 65536 members, then 32-bit);
    ``_nonempty`` lists the buckets holding points, for the wrap-around step.
    Snapshots share bucket arrays (and flags); none is modified once a ring
    that holds it has been returned.
    """

    __slots__ = (
        "algorithm",
        "_nodes",
        "_ids",
        "_index",
        "_bk",
        "_flags",
        "_pts",
        "_own",
        "_nonempty",
        "_succ",
        "_npoints",
        "_shift",
    )

    algorithm: str
    _nodes: dict[str, RingNode]
    _ids: list[str | None]
    _index: dict[str, int]
    _bk: list[array[int]]
    _flags: bytearray
    _pts: list[array[int]]
    _own: list[array[int]]
    _nonempty: array[int]
    _succ: list[int] | None
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
        if algorithm == "chash":
            self._bk = []
            self._flags = bytearray()
            self._pts = [array("I")] * _NBUCKETS
            self._own = [array("H")] * _NBUCKETS
        else:
            self._bk = [array("Q", [_SENT])] * _CN
            self._flags = bytearray(2 * _CN)
            self._pts = []
            self._own = []
        self._nonempty = array("I")
        self._succ = None
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
        if algorithm == "consistent" and len(items) > MAX_MEMBERS:
            raise ValueError(f"a consistent ring holds at most {MAX_MEMBERS} members, got {len(items)}")
        ring._fill(items)
        return ring

    def _fill(self, items: list[tuple[str, RingNode]]) -> None:
        """Bulk-load ``items`` into this (empty, unpublished) ring.

        Points are packed as ``point << rbits | rank`` so one integer sort
        orders them by point and, among equal points, by the tie rule:
        rank = position for chash (the latest insert last), rank of the id
        in sorted order for consistent (ids ascending, the smallest first).
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
        self._ids = list(ids)
        self._index = {node_id: i for i, node_id in enumerate(ids)}
        self._nodes = dict(items)
        accel_build = getattr(_ringaccel, "build", None) if algorithm == "consistent" else None
        if accel_build is not None:
            # C: two passes over the points straight into the bucket arrays, sorted without the
            # GIL (the passes below cost seconds at thousands of members: a client cache's first
            # snapshot). Points stay 8-byte array items, not Python ints, and need no per-node sort.
            points = [array("Q", _points(algorithm, node_id, node)) for node_id, node in items]
            self._npoints = accel_build(self._bk, self._flags, points, rank, idx_of_rank)
            return
        per_node = [node_points(algorithm, node_id, node) for node_id, node in items]
        if algorithm == "chash":
            self._fill_chash(per_node, rank, idx_of_rank, rbits, mask)
            return
        flags = bytearray(_CN)
        bk = self._bk
        per_range = _CN // _BUILD_RANGES
        total = 0
        for g in range(_BUILD_RANGES):
            first = g * per_range
            lo = first << _LOW
            hi = (first + per_range) << _LOW
            packed: list[int] = []
            for i, pts in enumerate(per_node):
                a = bisect_left(pts, lo)
                z = bisect_left(pts, hi, a)
                if a < z:
                    packed.extend(map(or_, map(lshift, pts[a:z], repeat(rbits)), repeat(rank[i])))
            if not packed:
                continue
            packed.sort()
            total += len(packed)
            start = 0
            for b in range(first, first + per_range):
                end = bisect_left(packed, ((b + 1) << _LOW) << rbits, start)
                if end > start:
                    chunk = packed[start:end]
                    lows = map(lshift, map(and_, map(rshift, chunk, repeat(rbits)), repeat(_LMASK)), repeat(_OBITS))
                    owners = map(idx_of_rank.__getitem__, map(and_, chunk, repeat(mask)))
                    arr = array("Q", map(or_, lows, owners))
                    arr.append(_SENT)
                    bk[b] = arr
                    flags[b] = 1
                    start = end
        self._npoints = total
        self._flags = flags + flags

    def _fill_chash(self, per_node: list[list[int]], rank: list[int], idx_of_rank: list[int],
                    rbits: int, mask: int) -> None:
        n = len(per_node)
        own_code = "H" if n <= 0x10000 else "I"
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
                    self._pts[b] = array("I", [x >> rbits for x in chunk])
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
        new._bk = list(self._bk)
        new._flags = self._flags
        new._pts = list(self._pts)
        new._own = list(self._own)
        new._nonempty = self._nonempty
        new._succ = None
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
        ids = base._ids
        try:
            idx = ids.index(None)
        except ValueError:
            idx = len(ids)
        if idx > _PROBE and self.algorithm == "consistent":
            raise ValueError(f"a consistent ring holds at most {MAX_MEMBERS} members")
        new = base._clone()
        if idx < len(new._ids):
            new._ids[idx] = node_id
        else:
            new._ids.append(node_id)
        new._index[node_id] = idx
        new._nodes[node_id] = node
        if self.algorithm == "chash" and idx > 0xFFFF and new._own[0].typecode == "H":
            new._own = [array("I", a) for a in new._own]  # > 65536 members: widen owners once
        new._insert_points(idx, _points(self.algorithm, node_id, node))
        return new

    def without(self, node_id: str) -> Ring:
        """New ring without ``node_id`` (the same ring if it is not a member)."""
        node = self._nodes.get(node_id)
        if node is None:
            return self
        new = self._clone()
        idx = new._index.pop(node_id)
        del new._nodes[node_id]
        pts = _points(self.algorithm, node_id, node)
        if self.algorithm == "chash":
            pts.sort()
            new._remove_points_chash(idx, pts)
        else:
            new._remove_points(idx, pts)
        new._ids[idx] = None
        while new._ids and new._ids[-1] is None:
            new._ids.pop()
        return new

    # ------------------------------------------------ consistent: join/leave

    def _insert_points(self, idx: int, points: list[int]) -> None:
        """Add owner ``idx``'s entries (``_ids[idx]`` is already set)."""
        if self.algorithm == "chash":
            points = sorted(points)
            self._insert_points_chash(idx, points)
            return
        if _ringaccel is not None:
            flags = bytearray(self._flags)
            _ringaccel.insert(self._bk, flags, points, idx, self._ids)
            self._flags = flags
            self._npoints += len(points)
            return
        bk = self._bk
        touched: list[int] = []
        todo = points
        while todo:
            # One point per bucket per pass (the dict keeps the last one seen); the
            # points that share a bucket with it go in the next, smaller pass.
            bs = list(map(rshift, todo, repeat(_LOW)))
            last = dict(zip(bs, todo))
            keys = list(last)
            all_lows = list(map(lshift, map(and_, last.values(), repeat(_LMASK)), repeat(_OBITS)))
            step = self._chunk()
            for at in range(0, len(keys), step):
                ks, lows = keys[at:at + step], all_lows[at:at + step]
                if touched:  # later pass: these buckets are already this ring's own copies
                    arrs = list(map(bk.__getitem__, ks))
                else:
                    arrs = list(map(_copy, map(bk.__getitem__, ks)))
                pos = list(map(bisect_left, arrs, lows))
                if pos == list(map(bisect_right, arrs, map(or_, lows, repeat(_PROBE)))):
                    # No entry has any of these points yet: plain sorted insert.
                    list(map(_ainsert, arrs, pos, map(or_, lows, repeat(idx))))
                else:
                    for arr, low in zip(arrs, lows):
                        self._place(arr, low, idx)
                if not touched:
                    list(map(bk.__setitem__, ks, arrs))
            touched = touched or keys
            todo = self._rest(todo, bs, last) if len(keys) != len(todo) else []
        flags = self._flags
        if 0 in flags:  # some bucket may have been empty until now
            flags = bytearray(flags)
            list(map(flags.__setitem__, touched, repeat(1)))
            flags[_CN:] = flags[:_CN]
            self._flags = flags
        self._npoints += len(points)

    def _chunk(self) -> int:
        """Buckets per round of the map() passes: about 256 KiB of arrays, so the
        copy, bisect and insert passes find them in cache (large rings)."""
        return max(128, (1 << 18) // (8 + 8 * self._npoints // _CN))

    @staticmethod
    def _rest(points: list[int], buckets: list[int], chosen: dict[int, int]) -> list[int]:
        """``points`` minus one occurrence of each of ``chosen``'s values (bucket -> point)."""
        rest = list(compress(points, map(operator.ne, map(chosen.__getitem__, buckets), points)))
        if len(rest) + len(chosen) == len(points):
            return rest
        count = Counter(points)  # a member with a repeated point: keep every copy but one
        count.subtract(chosen.values())
        return list(count.elements())

    def _place(self, arr: array[int], low: int, idx: int) -> None:
        """Insert one entry, keeping equal points in id order (the first one wins)."""
        i = bisect_left(arr, low)
        end = bisect_right(arr, low | _PROBE, i)
        ids = self._ids
        name = ids[idx]
        assert name is not None
        while i < end:
            other = ids[arr[i] & _OMASK]
            assert other is not None
            if name < other:
                break
            i += 1
        arr.insert(i, low | idx)

    def _remove_points(self, idx: int, points: list[int]) -> None:
        """Drop one entry of owner ``idx`` per point (same passes as the insert)."""
        if _ringaccel is not None:
            flags = bytearray(self._flags)
            _ringaccel.remove(self._bk, flags, points, idx)
            self._flags = flags
            self._npoints -= len(points)
            return
        bk = self._bk
        touched: list[int] = []
        todo = points
        while todo:
            bs = list(map(rshift, todo, repeat(_LOW)))
            last = dict(zip(bs, todo))
            keys = list(last)
            all_lows = list(map(lshift, map(and_, last.values(), repeat(_LMASK)), repeat(_OBITS)))
            step = self._chunk()
            for at in range(0, len(keys), step):
                ks, lows = keys[at:at + step], all_lows[at:at + step]
                vals = list(map(or_, lows, repeat(idx)))
                if touched:
                    arrs = list(map(bk.__getitem__, ks))
                else:
                    arrs = list(map(_copy, map(bk.__getitem__, ks)))
                pos = list(map(bisect_left, arrs, lows))
                if list(map(getitem, arrs, pos)) == vals:
                    list(map(_adel, arrs, pos))
                else:  # some point is shared with another member: find our entry in its run
                    for arr, v in zip(arrs, vals):
                        self._unplace(arr, v)
                if not touched:
                    list(map(bk.__setitem__, ks, arrs))
            touched = touched or keys
            todo = self._rest(todo, bs, last) if len(keys) != len(todo) else []
        emptied = list(compress(touched, map(eq, map(len, map(bk.__getitem__, touched)), repeat(1))))
        if emptied:
            flags = bytearray(self._flags)
            list(map(flags.__setitem__, emptied, repeat(0)))
            flags[_CN:] = flags[:_CN]
            self._flags = flags
        self._npoints -= len(points)

    @staticmethod
    def _unplace(arr: array[int], v: int) -> None:
        i = bisect_left(arr, v & ~_OMASK)
        while arr[i] != v:
            i += 1
        del arr[i]

    # ----------------------------------------------------- chash: join/leave

    def _insert_points_chash(self, idx: int, points: list[int]) -> None:
        # One Python step per point: buckets are copied once per update
        # (sorted input groups them), then bisect + array.insert.
        pts, own, shift = self._pts, self._own, self._shift
        filled: list[int] = []
        cur = -1
        pa = pts[0]
        oa = own[0]
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
        self._npoints += len(points)
        if filled:
            merged = sorted([*self._nonempty, *filled])
            self._nonempty = array("I", merged)

    def _remove_points_chash(self, idx: int, points: list[int]) -> None:
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

    def get(self, key: str) -> str:
        """Id of the member owning ``key``; ``EmptyRing`` if there is none."""
        if self.algorithm == "chash":
            b, i = self._locate_chash(zlib.crc32(_encode(key)))
            name = self._ids[self._own[b][i]]
        else:
            h = _xxh(key.encode("utf-8", "surrogatepass"))
            b = h >> _LOW
            arr = self._bk[b]
            e = arr[bisect_right(arr, ((h & _LMASK) << _OBITS) | _PROBE)]
            if e == _SENT:  # past the bucket's last point: first entry of the next non-empty bucket
                j = self._flags.find(1, b + 1)
                if j < 0:
                    raise EmptyRing("ring has no members")
                e = self._bk[j & _CMASK][0]
            name = self._ids[e & _OMASK]
        assert name is not None
        return name

    def get_many(self, keys: Sequence[str]) -> list[str]:
        """``[self.get(k) for k in keys]``, several times faster (C-level pipelines).

        Hash, bucket, bisect and owner lookup each run as one ``map()`` over
        all keys; keys past their bucket's last point (the wrap case) get a
        second, smaller pass through the next non-empty bucket.
        """
        if not keys:
            return []
        if not self._nodes:
            raise EmptyRing("ring has no members")
        if self.algorithm == "chash":
            return list(map(self.get, keys))
        try:
            hs = list(map(_xxh, map(str.encode, keys)))
        except UnicodeEncodeError:  # a lone surrogate: encode as get() does
            hs = list(map(_xxh, map(str.encode, keys, repeat("utf-8"), repeat("surrogatepass"))))
        bs = list(map(rshift, hs, repeat(_LOW)))
        arrs = list(map(self._bk.__getitem__, bs))
        probes = map(or_, map(lshift, map(and_, hs, repeat(_LMASK)), repeat(_OBITS)), repeat(_PROBE))
        es = list(map(getitem, arrs, map(bisect_right, arrs, probes)))
        if _SENT in es:
            succ = self._succ or self._successors()
            wrap = list(compress(range(len(es)), map(eq, es, repeat(_SENT))))
            list(map(es.__setitem__, wrap, map(succ.__getitem__, map(bs.__getitem__, wrap))))
        names: list[str] = list(map(self._ids.__getitem__, map(and_, es, repeat(_OMASK))))  # type: ignore[arg-type]
        return names

    def _successors(self) -> list[int]:
        """Per bucket, the first entry of the next non-empty bucket (built once per snapshot).

        What a key past its bucket's last point maps to; a sparse ring (few
        members: most buckets empty) sends most keys there.  Built with C-level
        ``repeat`` runs, ~1 ms; caching it does not change the snapshot's answers.
        """
        nb = list(compress(range(_CN), self._flags[:_CN]))
        firsts = list(map(getitem, map(self._bk.__getitem__, nb), repeat(0)))
        counts = [nb[0], *map(operator.sub, nb[1:], nb[:-1]), _CN - nb[-1]]
        succ = list(chain.from_iterable(map(repeat, [*firsts, firsts[0]], counts)))
        self._succ = succ
        return succ

    def _locate_chash(self, h: int) -> tuple[int, int]:
        """(bucket, index) of the chash entry that owns hash ``h``."""
        nonempty = self._nonempty
        if not nonempty:
            raise EmptyRing("ring has no members")
        b = h >> self._shift
        pa = self._pts[b]
        i = bisect_right(pa, h)
        if i > 0:
            return b, i - 1
        j = bisect_left(nonempty, b) - 1  # -1 wraps to the largest point
        nb = nonempty[j]
        return nb, len(self._pts[nb]) - 1

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

    def _walk(self, key: str) -> Iterator[int]:
        """Owner indexes of every entry, clockwise from ``key``'s owner, once around."""
        if self.algorithm == "chash":
            b, i = self._locate_chash(zlib.crc32(_encode(key)))
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
            return
        h = _xxh(_encode(key))
        b = h >> _LOW
        bk, flags = self._bk, self._flags
        arr = bk[b]
        i = bisect_right(arr, ((h & _LMASK) << _OBITS) | _PROBE)
        yield from map(and_, arr[i:-1], repeat(_OMASK))
        j = b
        while True:
            j = flags.find(1, j + 1)
            if j < 0 or j > b + _CN:
                return
            arr = bk[j & _CMASK]
            if j == b + _CN:
                yield from map(and_, arr[:i], repeat(_OMASK))
                return
            yield from map(and_, arr[:-1], repeat(_OMASK))

    def _entries(self) -> Iterator[tuple[int, int]]:
        """(point, owner index) of every entry in ring order (tests, shares)."""
        if self.algorithm == "chash":
            for b in self._nonempty:
                yield from zip(self._pts[b], self._own[b])
            return
        flags = self._flags
        for b in range(_CN):
            if flags[b]:
                base = b << _LOW
                for e in self._bk[b][:-1]:
                    yield base | (e >> _OBITS), e & _OMASK

    def shares(self) -> dict[str, float]:
        """Exact fraction of the hash space each member owns, summed from the arcs."""
        out = dict.fromkeys(self._nodes, 0.0)
        if not self._nodes:
            return out
        space = 1 << _BITS[self.algorithm]
        acc = [0] * len(self._ids)
        if self.algorithm == "chash":
            # An entry owns [p, next entry): equal points leave the arc to the last one.
            prev = -1
            prev_owner = 0
            first = -1
            for p, o in self._entries():
                if prev >= 0:
                    acc[prev_owner] += p - prev
                else:
                    first = p
                prev, prev_owner = p, o
            acc[prev_owner] += first + space - prev
        else:
            # An entry owns (previous entry, p]: equal points leave it to the first one.
            last_b = self._flags.rfind(1, 0, _CN)
            prev = ((last_b << _LOW) | (self._bk[last_b][-2] >> _OBITS)) - space
            for p, o in self._entries():
                acc[o] += p - prev
                prev = p
        for k, v in enumerate(acc):
            name = self._ids[k]
            if name is not None:
                out[name] = v / space
        return out
