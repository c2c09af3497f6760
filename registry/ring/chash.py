"""``"chash"``: Go ``werbenhu/chash`` v1.0.8's answers, so Go and Python registries agree.

Points are ``crc32_ieee(str(i) + id)`` for ``i in range(replicas * weight)``; a key maps to the
largest point ``<= crc32_ieee(key)``, and a key below the smallest point maps to the *largest*
point (Go's ``Circle.Match`` returns ``len-1`` at both ends).  Of equal points the latest insert
wins, and re-adding a member (Go ``Upsert``) makes it the latest.  Go's flaw with ids whose
strings collide ("1"+"12" == "11"+"2") is kept out: a shared point keeps its live owner.  The
layout is simple (``2**14`` buckets of point and owner arrays, one Python step per point): this is
the Go-compatibility mode, not the default.  More in docs/ring.md.
"""

from __future__ import annotations

import zlib
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterator, Sequence
from itertools import repeat
from operator import and_, rshift
from typing import cast

from .base import EmptyRing, Ring, RingNode, bucket_runs
from .hashing import crc32_key, crc32_points

__all__ = ["ChashRing"]

#: hash >> (32 - _BUCKET_BITS) picks the bucket.
_BUCKET_BITS = 14
_NBUCKETS = 1 << _BUCKET_BITS
_SHIFT = 32 - _BUCKET_BITS


class ChashRing(Ring, algorithm="chash"):
    """``"chash"`` snapshot.

    ``2**14`` pairs of arrays (points ascending, owner index: 16-bit until a ring has more
    than 65536 members, then 32-bit); ``_nonempty`` lists the buckets holding points, for
    the wrap-around step.  ``_seq`` numbers each member's latest insert (``_clock`` is the
    next number): the insert order decides ties, and ``changed_members`` must see a re-insert.
    """

    __slots__ = ("_clock", "_nonempty", "_own", "_pts", "_seq")

    BITS = 32
    SAME_NODE_IS_NOOP = False
    POINT_ENDS_ARC = False

    _pts: list[array[int]]
    _own: list[array[int]]
    _nonempty: array[int]
    _seq: dict[str, int]
    _clock: int

    key_hash = staticmethod(crc32_key)

    @staticmethod
    def count(node: RingNode) -> int:
        return node.replicas * node.weight

    @staticmethod
    def replica_points(node_id: str, node: RingNode) -> list[int]:
        return crc32_points(node_id, node.replicas * node.weight)

    def _init_storage(self) -> None:
        self._pts = [array("I")] * _NBUCKETS
        self._own = [array("H")] * _NBUCKETS
        self._nonempty = array("I")
        self._seq = {}
        self._clock = 0

    def _share_storage(self, new: Ring) -> None:
        assert isinstance(new, ChashRing)
        new._pts = list(self._pts)
        new._own = list(self._own)
        new._nonempty = self._nonempty
        new._seq = dict(self._seq)
        new._clock = self._clock

    def _admit(self, idx: int) -> None:
        if idx > 0xFFFF and self._own[0].typecode == "H":
            self._own = [array("I", a) for a in self._own]  # > 65536 members: widen owners once

    # ----------------------------------------------------------------- build

    def _ranks(self, ids: list[str]) -> list[int]:
        return list(range(len(ids)))  # insert order: the latest insert last, and it wins a tie

    def _load(self, items: list[tuple[str, RingNode]], rank: list[int], idx_of_rank: list[int]) -> None:
        per_node = [sorted(self.replica_points(node_id, node)) for node_id, node in items]
        rbits = max(1, (len(items) - 1).bit_length())
        mask = (1 << rbits) - 1
        own_code = "H" if len(items) <= 0x10000 else "I"
        if own_code == "I":
            self._own = [array("I")] * _NBUCKETS
        nonempty: list[int] = []
        total = 0
        for b, chunk in bucket_runs(per_node, rank, rbits, _SHIFT, _NBUCKETS):
            self._pts[b] = array("I", map(rshift, chunk, repeat(rbits)))
            self._own[b] = array(own_code, map(idx_of_rank.__getitem__, map(and_, chunk, repeat(mask))))
            nonempty.append(b)
            total += len(chunk)
        self._npoints = total
        self._nonempty = array("I", nonempty)
        self._seq = {node_id: i for i, (node_id, _) in enumerate(items)}
        self._clock = len(items)

    # ------------------------------------------------------------ join/leave

    def _insert_points(self, idx: int, points: Sequence[int]) -> None:
        # One Python step per point: buckets are copied once per update
        # (sorted input groups them), then bisect + array.insert.
        name = self._ids[idx]
        assert name is not None
        self._seq[name] = self._clock
        self._clock += 1
        points = sorted(points)
        pts, own = self._pts, self._own
        filled: list[int] = []
        cur = -1
        pa = pts[0]
        oa = own[0]
        for p in points:
            b = p >> _SHIFT
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

    def _remove_points(self, idx: int, points: Sequence[int]) -> None:
        self._seq.pop(cast(str, self._ids[idx]), None)
        points = sorted(points)
        pts, own = self._pts, self._own
        emptied: list[int] = []
        cur = -1
        pa = pts[0]
        oa = own[0]
        removed = 0
        for p in points:
            b = p >> _SHIFT
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

    def get(self, key: str) -> str:
        b, i = self._locate(zlib.crc32(key.encode("utf-8", "surrogatepass")))  # crc32_key, inlined: the hot path
        name = self._ids[self._own[b][i]]
        assert name is not None
        return name

    def get_many(self, keys: Sequence[str]) -> list[str]:
        if not keys:
            return []
        if not self._nodes:
            raise EmptyRing("ring has no members")
        return list(map(self.get, keys))

    def _locate(self, h: int) -> tuple[int, int]:
        """(bucket, index) of the entry that owns hash ``h``."""
        nonempty = self._nonempty
        if not nonempty:
            raise EmptyRing("ring has no members")
        b = h >> _SHIFT
        pa = self._pts[b]
        i = bisect_right(pa, h)
        if i > 0:
            return b, i - 1
        j = bisect_left(nonempty, b) - 1  # -1 wraps to the largest point
        nb = nonempty[j]
        return nb, len(self._pts[nb]) - 1

    def arc_at(self, point: int) -> tuple[int, int, str]:
        if not 0 <= point < 1 << 32:
            raise ValueError(f"point {point!r} is outside the 32-bit hash space")
        b, i = self._locate(point)
        pa = self._pts[b]
        start = pa[i]
        k = bisect_right(pa, start, i)
        if k < len(pa):
            end = pa[k]
        else:  # the first point of the next non-empty bucket, wrap included
            nonempty = self._nonempty
            j = bisect_right(nonempty, b)
            end = self._pts[nonempty[j if j < len(nonempty) else 0]][0]
        name = self._ids[self._own[b][i]]
        assert name is not None
        return start, end, name

    def changed_members(self, other: Ring) -> set[str]:
        """Also the members re-inserted with the same ``RingNode``: one now wins the ties it lost."""
        out = super().changed_members(other)
        if isinstance(other, ChashRing):
            theirs = other._seq
            out.update(k for k, n in self._seq.items() if theirs.get(k, n) != n)
        return out

    def _walk(self, key: str) -> Iterator[int]:
        b, i = self._locate(crc32_key(key))
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

    def _entries(self) -> Iterator[tuple[int, int]]:
        for b in self._nonempty:
            yield from zip(self._pts[b], self._own[b])

    def _arcs(self, acc: list[int], space: int) -> None:
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
