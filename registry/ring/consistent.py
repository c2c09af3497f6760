"""The default ``"consistent"`` ring: uhashring's answers on xxh3, in a packed bucket layout.

Node ``id`` with ``v`` virtual nodes and weight ``w`` owns the points ``xxh3_64(f"{id}-{i}")``
for ``i in range(min(v, MAX_REPLICAS) * w)``; a key belongs to the first point strictly clockwise
of ``xxh3_64(key)``, wrapping to the smallest.  Tied points go to the smallest id, so the answer
depends only on the member set.  The layout: ``2**14`` buckets (top 14 bits of a point), each one
sorted ``array("Q")`` of ``(low 50 bits of the point) << 14 | owner index`` ending in a sentinel
``2**64-1``.  Why this layout, the C accelerator and the figures: docs/ring.md.
"""

from __future__ import annotations

import operator
from array import array
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from itertools import chain, compress, repeat
from operator import and_, eq, getitem, lshift, or_, rshift
from types import ModuleType
from typing import ClassVar, cast

from .accel import load
from .base import MAX_REPLICAS, EmptyRing, Ring, RingNode, bucket_runs
from .hashing import xxh3_64, xxh3_key, xxh3_point_array

__all__ = ["MAX_MEMBERS", "ConsistentRing"]

#: Most members one ``"consistent"`` ring holds (14-bit owner index, the top value reserved).
MAX_MEMBERS = (1 << 14) - 1

# Layout: bucket = point >> _LOW; entry = (point & _LMASK) << _OBITS | owner.
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
_copy = array.__copy__
_ainsert = array.insert
_adel = array.__delitem__


class ConsistentRing(Ring, algorithm="consistent"):
    """Packed ``"consistent"`` snapshot.

    ``_bk`` holds ``2**14`` packed bucket arrays and ``_flags`` marks the non-empty buckets
    twice over (``flags[b] == flags[b + 2**14]``) so ``flags.find(1, b + 1)`` finds the next
    non-empty bucket clockwise, wrap included, in one C call.  ``_succ``: per bucket, the
    first entry of the next non-empty one (built by the first ``get_many`` that needs it).
    """

    __slots__ = ("_bk", "_flags", "_succ")

    BITS = 64
    SAME_NODE_IS_NOOP = True
    POINT_ENDS_ARC = True
    #: ``registry._ringaccel`` when built for this layout, else None.  Joins, leaves and bulk
    #: builds read it per call; a benchmark or test sets it to None to time or check the
    #: pure-Python passes (both build identical snapshots).
    accel: ClassVar[ModuleType | None] = load(_CBITS, _OBITS)

    _bk: list[array[int]]
    _flags: bytearray
    _succ: list[int] | None

    key_hash = staticmethod(xxh3_key)

    @staticmethod
    def count(node: RingNode) -> int:
        return min(node.replicas, MAX_REPLICAS) * node.weight

    @staticmethod
    def replica_points(node_id: str, node: RingNode) -> array[int]:
        # An array('Q') on both paths: the C functions read its 8-byte items as they are (no
        # Python int per point); with the accelerator the hashing is C too (xxh3_point_array).
        return xxh3_point_array(node_id, ConsistentRing.count(node), ConsistentRing.accel)

    def _init_storage(self) -> None:
        self._bk = [array("Q", [_SENT])] * _CN
        self._flags = bytearray(2 * _CN)
        self._succ = None

    def _share_storage(self, new: Ring) -> None:
        assert isinstance(new, ConsistentRing)
        new._bk = list(self._bk)
        new._flags = self._flags
        new._succ = None

    def _admit(self, idx: int) -> None:
        if idx > _PROBE:
            raise ValueError(f"a consistent ring holds at most {MAX_MEMBERS} members")

    # ----------------------------------------------------------------- build

    def _ranks(self, ids: list[str]) -> list[int]:
        if len(ids) > MAX_MEMBERS:
            raise ValueError(f"a consistent ring holds at most {MAX_MEMBERS} members, got {len(ids)}")
        rank = [0] * len(ids)  # ids ascending: the smallest id wins a tie
        for r, i in enumerate(sorted(range(len(ids)), key=ids.__getitem__)):
            rank[i] = r
        return rank

    def _load(self, items: list[tuple[str, RingNode]], rank: list[int], idx_of_rank: list[int]) -> None:
        build = getattr(self.accel, "build", None)
        if build is not None:
            # C: two passes over the points straight into the bucket arrays, sorted without the
            # GIL (the passes below cost seconds at thousands of members: a client cache's first
            # snapshot). Points stay 8-byte array items, not Python ints, and need no per-node sort.
            # replica_points gives array('Q') (hashed in C); anything else (a test's forced points) is converted.
            points = [p if isinstance(p, array) and p.typecode == "Q" else array("Q", p)
                      for p in (self.replica_points(node_id, node) for node_id, node in items)]
            self._npoints = build(self._bk, self._flags, points, rank, idx_of_rank)
            return
        per_node = [sorted(self.replica_points(node_id, node)) for node_id, node in items]
        rbits = max(1, (len(items) - 1).bit_length())
        mask = (1 << rbits) - 1
        flags = bytearray(_CN)
        bk = self._bk
        total = 0
        for b, chunk in bucket_runs(per_node, rank, rbits, _LOW, _CN):
            lows = map(lshift, map(and_, map(rshift, chunk, repeat(rbits)), repeat(_LMASK)), repeat(_OBITS))
            owners = map(idx_of_rank.__getitem__, map(and_, chunk, repeat(mask)))
            arr = array("Q", map(or_, lows, owners))
            arr.append(_SENT)
            bk[b] = arr
            flags[b] = 1
            total += len(chunk)
        self._npoints = total
        self._flags = flags + flags

    # ------------------------------------------------------------ join/leave

    def _insert_points(self, idx: int, points: Sequence[int]) -> None:
        if self.accel is not None:
            flags = bytearray(self._flags)
            self.accel.insert(self._bk, flags, points, idx, self._ids)
            self._flags = flags
            self._npoints += len(points)
            return

        def insert(arrs: list[array[int]], lows: list[int]) -> None:
            pos = list(map(bisect_left, arrs, lows))
            if pos == list(map(bisect_right, arrs, map(or_, lows, repeat(_PROBE)))):
                # No entry has any of these points yet: plain sorted insert.
                list(map(_ainsert, arrs, pos, map(or_, lows, repeat(idx))))
            else:
                for arr, low in zip(arrs, lows):
                    self._place(arr, low, idx)

        touched = self._passes(points, insert)
        flags = self._flags
        if 0 in flags:  # some bucket may have been empty until now
            flags = bytearray(flags)
            list(map(flags.__setitem__, touched, repeat(1)))
            flags[_CN:] = flags[:_CN]
            self._flags = flags
        self._npoints += len(points)

    def _insert_many(self, owners: list[tuple[int, Sequence[int]]]) -> None:
        insert_many = getattr(self.accel, "insert_many", None)
        if insert_many is None:  # pure Python, or a .so built before insert_many: one by one
            super()._insert_many(owners)
            return
        # C: one merge per touched bucket for every owner at once.  Owners in id order: the
        # C sort is stable, so a tied run comes out in id order (the smallest id first).
        ids = self._ids
        owners = sorted(owners, key=lambda o: cast(str, ids[o[0]]))
        flags = bytearray(self._flags)
        insert_many(self._bk, flags, [pts for _, pts in owners], [idx for idx, _ in owners], ids)
        self._flags = flags
        self._npoints += sum(len(pts) for _, pts in owners)

    def _remove_points(self, idx: int, points: Sequence[int]) -> None:
        if self.accel is not None:
            flags = bytearray(self._flags)
            self.accel.remove(self._bk, flags, points, idx)
            self._flags = flags
            self._npoints -= len(points)
            return

        def remove(arrs: list[array[int]], lows: list[int]) -> None:
            vals = list(map(or_, lows, repeat(idx)))
            pos = list(map(bisect_left, arrs, lows))
            if list(map(getitem, arrs, pos)) == vals:
                list(map(_adel, arrs, pos))
            else:  # some point is shared with another member: find our entry in its run
                for arr, v in zip(arrs, vals):
                    self._unplace(arr, v)

        bk = self._bk
        touched = self._passes(points, remove)
        emptied = list(compress(touched, map(eq, map(len, map(bk.__getitem__, touched)), repeat(1))))
        if emptied:
            flags = bytearray(self._flags)
            list(map(flags.__setitem__, emptied, repeat(0)))
            flags[_CN:] = flags[:_CN]
            self._flags = flags
        self._npoints -= len(points)

    def _passes(self, points: Sequence[int], update: Callable[[list[array[int]], list[int]], None]) -> list[int]:
        """Run ``update(arrays, lows)`` over ``points`` as C-level passes; the buckets touched.

        One point per bucket per pass (the dict keeps the last one seen); the points
        that share a bucket with it go in the next, smaller pass.  ``arrays`` are this
        ring's own copies of the points' buckets (copied on the first pass, in rounds
        of ``_chunk()`` buckets), ``lows`` the points' packed low bits, owner 0.
        """
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
                ks = keys[at:at + step]
                if touched:  # later pass: these buckets are already this ring's own copies
                    arrs = list(map(bk.__getitem__, ks))
                else:
                    arrs = list(map(_copy, map(bk.__getitem__, ks)))
                update(arrs, all_lows[at:at + step])
                if not touched:
                    list(map(bk.__setitem__, ks, arrs))
            touched = touched or keys
            todo = self._rest(todo, bs, last) if len(keys) != len(todo) else []
        return touched

    def _chunk(self) -> int:
        """Buckets per round of the map() passes: about 256 KiB of arrays, so the
        copy, bisect and insert passes find them in cache (large rings)."""
        return max(128, (1 << 18) // (8 + 8 * self._npoints // _CN))

    @staticmethod
    def _rest(points: Sequence[int], buckets: list[int], chosen: dict[int, int]) -> list[int]:
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

    @staticmethod
    def _unplace(arr: array[int], v: int) -> None:
        i = bisect_left(arr, v & ~_OMASK)
        while arr[i] != v:
            i += 1
        del arr[i]

    # ---------------------------------------------------------------- lookup

    def get(self, key: str) -> str:
        h = xxh3_64(key.encode("utf-8", "surrogatepass"))
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
        try:
            hs = list(map(xxh3_64, map(str.encode, keys)))
        except UnicodeEncodeError:  # a lone surrogate: encode as get() does
            hs = list(map(xxh3_64, map(str.encode, keys, repeat("utf-8"), repeat("surrogatepass"))))
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

    def _walk(self, key: str) -> Iterator[int]:
        h = xxh3_key(key)
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

    def arc_at(self, point: int) -> tuple[int, int, str]:
        if not 0 <= point < 1 << 64:
            raise ValueError(f"point {point!r} is outside the 64-bit hash space")
        if not self._nodes:
            raise EmptyRing("ring has no members")
        b = point >> _LOW
        bk, flags = self._bk, self._flags
        arr = bk[b]
        i = bisect_right(arr, ((point & _LMASK) << _OBITS) | _PROBE)
        e, eb = arr[i], b
        if e == _SENT:  # the first entry of the next non-empty bucket, wrap included
            eb = self._flags.find(1, b + 1) & _CMASK
            e = bk[eb][0]
        if i:
            s, sb = arr[i - 1], b
        else:  # the last entry of the previous non-empty bucket (b itself when it is the only one)
            sb = flags.rfind(1, 0, b + _CN) & _CMASK
            s = bk[sb][-2]
        name = self._ids[e & _OMASK]
        assert name is not None
        return (sb << _LOW) | (s >> _OBITS), (eb << _LOW) | (e >> _OBITS), name

    def _entries(self) -> Iterator[tuple[int, int]]:
        flags = self._flags
        for b in range(_CN):
            if flags[b]:
                base = b << _LOW
                for e in self._bk[b][:-1]:
                    yield base | (e >> _OBITS), e & _OMASK

    def _arcs(self, acc: list[int], space: int) -> None:
        # An entry owns (previous entry, p]: equal points leave it to the first one.
        last_b = self._flags.rfind(1, 0, _CN)
        prev = ((last_b << _LOW) | (self._bk[last_b][-2] >> _OBITS)) - space
        for p, o in self._entries():
            acc[o] += p - prev
            prev = p
