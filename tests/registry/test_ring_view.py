"""registry.ring.view (what the web page draws of a ring) and the ring's point lookups behind it.

Every answer is checked against an oracle built from the rings' full entry lists with the documented
rules (``"consistent"``: a key goes to the first point above its hash, wrapping, the smallest id wins
a tied point; ``"chash"``: to the largest point at or below it, below the smallest point to the
largest, the latest insert wins a tie), for real hashes and for forced ties (every member's points
drawn from a small pool, so members share points, own a point twice, sit on bucket edges and at both
ends of the hash space).  The figures in registry/ring/view.py's docstring:
``python -m tests.registry.test_ring_view``.
"""

from __future__ import annotations

import time
import zlib
from bisect import bisect_right
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from registry.ring import ChashRing, ConsistentRing, EmptyRing, Ring, RingNode, key_hash
from registry.ring.view import Arcs, _runs, arcs, key_position, moved_share, point_position

ALGORITHMS = ["consistent", "chash"]
#: Forced points: both ends of each hash space, bucket edges, several points in one bucket.
POOL = {
    "consistent": [0, 1, (7 << 50) | 5, (7 << 50) | 9, 8 << 50, (300 << 50) | 1, (1 << 63) | 12345,
                   ((1 << 14) - 1) << 50, (1 << 64) - 1],
    "chash": [0, 1, (5 << 18) | 7, (5 << 18) | 8, 6 << 18, 1 << 31, ((1 << 14) - 1) << 18, (1 << 32) - 1],
}
#: "1" and "11", "12" and "2" collide under chash's str(i) + id points: real ties without forcing.
NAMES = ["a", "b", "c", "d", "1", "2", "11", "12"]
KEYS = [f"key-{i}" for i in range(400)] + ["", "ü", "\udcff-lone-surrogate"]

Op = tuple[str, int]  # (member, replicas): replicas 0 = leave


@contextmanager
def forced(algorithm: str, on: bool) -> Iterator[None]:
    """While ``on``: every member of an ``algorithm`` ring owns points drawn from ``POOL`` only."""
    cls: type[Ring] = ConsistentRing if algorithm == "consistent" else ChashRing
    real = cls.replica_points
    pool = POOL[algorithm]

    def fake(node_id: str, node: RingNode) -> list[int]:
        return [pool[zlib.crc32(f"{node_id}/{i}".encode()) % len(pool)] for i in range(cls.count(node))]

    if on:
        cls.replica_points = staticmethod(fake)  # type: ignore[method-assign]
    try:
        yield
    finally:
        cls.replica_points = staticmethod(real)  # type: ignore[method-assign]


class Model:
    """A ring built by ops, with what the oracle needs: each member's latest insert (chash ties)."""

    def __init__(self, algorithm: str, start: list[Op], bulk: bool) -> None:
        self.algorithm = algorithm
        self.clock = 0
        self.order: dict[str, int] = {}
        members = {k: RingNode(v) for k, v in start if v}
        if bulk:
            self.ring: Ring = Ring.build(algorithm, members)
            for k in members:
                self._inserted(k)
        else:
            self.ring = Ring(algorithm)
            for k, node in members.items():
                self.ring = self.ring.with_node(k, node)
                self._inserted(k)

    def _inserted(self, k: str) -> None:
        self.order[k] = self.clock
        self.clock += 1

    def apply(self, ops: list[Op]) -> None:
        for k, v in ops:
            if v:
                node = RingNode(v)
                if self.algorithm == "chash" or self.ring.nodes.get(k) != node:
                    self._inserted(k)  # chash re-inserts even an unchanged member (Go's Upsert)
                self.ring = self.ring.with_node(k, node)
            else:
                self.ring = self.ring.without(k)
                self.order.pop(k, None)


def table(ring: Ring, order: dict[str, int]) -> tuple[list[int], list[str]]:
    """Distinct points ascending and the member a key landing on each gets, from the raw entries."""
    at: dict[int, list[str]] = {}
    for p, o in ring._entries():
        name = ring._ids[o]
        assert name is not None
        at.setdefault(p, []).append(name)
    pts = sorted(at)
    if ring.algorithm == "consistent":
        return pts, [min(at[p]) for p in pts]
    return pts, [max(at[p], key=order.__getitem__) for p in pts]


def oracle_owner(algorithm: str, pts: list[int], win: list[str], h: int) -> str:
    i = bisect_right(pts, h)
    if algorithm == "consistent":
        return win[i % len(pts)]
    return win[i - 1]  # -1: below the smallest point, the largest one's


def oracle_moved(old: Model, new: Model) -> int:
    """Key-space length whose owner differs, walking every interval between the union's points."""
    alg, space = old.algorithm, 1 << old.ring.BITS
    po, wo = table(old.ring, old.order)
    pn, wn = table(new.ring, new.order)
    cuts = sorted(set(po) | set(pn))
    moved = 0
    for j, lo in enumerate(cuts):
        hi = cuts[j + 1] if j + 1 < len(cuts) else cuts[0] + space
        if oracle_owner(alg, po, wo, lo) != oracle_owner(alg, pn, wn, lo):
            moved += hi - lo
    return moved


members = st.lists(st.tuples(st.sampled_from(NAMES), st.integers(1, 12)), max_size=8)
changes = st.lists(st.tuples(st.sampled_from(NAMES), st.integers(0, 12)), min_size=1, max_size=5)


# ------------------------------------------------------------------- positions


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_key_position_is_the_key_hash_as_a_fraction(algorithm: str) -> None:
    space = 1 << (64 if algorithm == "consistent" else 32)
    for k in KEYS:
        pos = key_position(algorithm, k)
        assert 0.0 <= pos < 1.0
        assert pos == pytest.approx(key_hash(algorithm, k) / space, abs=1e-15)
    ring = Ring(algorithm)
    assert point_position(ring, 0) == 0.0
    assert point_position(ring, space // 4) == 0.25
    assert point_position(ring, space - 1) < 1.0  # 1 - 2**-64 rounds to 1.0 as a plain division
    for bad in (-1, space):
        with pytest.raises(ValueError, match="outside"):
            point_position(ring, bad)
    with pytest.raises(ValueError, match="unknown ring algorithm"):
        key_position("ketama", "k")


# ---------------------------------------------------------- point lookups


@pytest.mark.parametrize("force", [False, True], ids=["hashes", "ties"])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@settings(max_examples=40, deadline=None)
@given(start=members, ops=changes, bulk=st.booleans())
def test_arc_at_and_owner_at_follow_the_rules(algorithm: str, force: bool, start: list[Op], ops: list[Op],
                                              bulk: bool) -> None:
    with forced(algorithm, force):
        m = Model(algorithm, start, bulk)
        m.apply(ops)
    ring, space = m.ring, 1 << m.ring.BITS
    if not len(ring):
        with pytest.raises(EmptyRing):
            ring.owner_at(0)
        return
    pts, win = table(ring, m.order)
    probes = {0, space - 1} | {(p + d) % space for p in pts for d in (-1, 0, 1)}
    probes |= {key_hash(algorithm, k) for k in KEYS[:50]}
    for h in probes:
        i = bisect_right(pts, h)
        start_, end, owner = ring.arc_at(h)
        assert owner == oracle_owner(algorithm, pts, win, h) == ring.owner_at(h)
        assert (start_, end) == (pts[i - 1], pts[i % len(pts)])  # largest point <= h, smallest above
    for k in KEYS:
        assert ring.owner_at(key_hash(algorithm, k)) == ring.get(k)
    for bad in (-1, space):
        with pytest.raises(ValueError, match="outside"):
            ring.arc_at(bad)


# ------------------------------------------------------------------------ arcs


def run_owner(runs: list[tuple[int, int]], h: int) -> int:
    """Owner index of the run holding point ``h`` (before the first start: the last run's)."""
    return runs[bisect_right([s for s, _ in runs], h) - 1][1]


def check_merged(runs: list[tuple[int, int]]) -> None:
    starts = [s for s, _ in runs]
    assert starts == sorted(set(starts))
    owners = [o for _, o in runs]
    if len(owners) > 1:
        assert all(a != b for a, b in zip(owners, owners[1:] + owners[:1]))


@pytest.mark.parametrize("force", [False, True], ids=["hashes", "ties"])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@settings(max_examples=40, deadline=None)
@given(start=members, ops=changes)
def test_exact_arcs_sum_to_the_shares(algorithm: str, force: bool, start: list[Op], ops: list[Op]) -> None:
    with forced(algorithm, force):
        m = Model(algorithm, start, bulk=False)
        m.apply(ops)
    ring, space = m.ring, 1 << m.ring.BITS
    names, runs, exact = _runs(ring, 1440)
    assert exact and names == sorted(ring.nodes)
    if not len(ring):
        assert runs == [] and arcs(ring) == Arcs([], [], True)
        return
    check_merged(runs)
    got = [0] * len(names)
    for i, (s, o) in enumerate(runs):
        got[o] += ((runs[i + 1][0] if i + 1 < len(runs) else runs[0][0] + space) - s) % space or space
    assert {n: got[i] / space for i, n in enumerate(names)} == ring.shares()  # exactly, not approximately
    pts, win = table(ring, m.order)
    for p in pts:  # every interval between two points is drawn in its owner's run
        assert names[run_owner(runs, p)] == oracle_owner(algorithm, pts, win, p)
    drawn = arcs(ring)
    assert drawn.exact and drawn.names == names
    assert drawn.runs == [(point_position(ring, s), o) for s, o in runs]


@pytest.mark.parametrize("force", [False, True], ids=["hashes", "ties"])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@settings(max_examples=30, deadline=None)
@given(start=st.lists(st.tuples(st.sampled_from(NAMES), st.integers(8, 40)), min_size=1, max_size=8),
       bins=st.integers(1, 12))
def test_sampled_arcs_give_each_slice_its_midpoint_owner(algorithm: str, force: bool, start: list[Op],
                                                         bins: int) -> None:
    with forced(algorithm, force):
        m = Model(algorithm, start, bulk=True)
    ring, space = m.ring, 1 << m.ring.BITS
    names, runs, exact = _runs(ring, bins)
    assert exact == (ring.point_count <= 4 * bins)
    if exact:
        return
    check_merged(runs)
    assert len(runs) <= bins
    pts, win = table(ring, m.order)
    starts = {s for s, _ in runs}
    for i in range(bins):
        first = i * space // bins
        owner = names[run_owner(runs, first)]
        assert owner == oracle_owner(algorithm, pts, win, (2 * i + 1) * space // (2 * bins))
        if first not in starts:  # a slice inside a merged run has its neighbour's owner
            assert names[run_owner(runs, first - 1 if first else space - 1)] == owner
    assert arcs(ring, bins).runs == [(point_position(ring, s), o) for s, o in runs]


def test_arcs_refuses_bad_bins() -> None:
    ring = Ring.build("consistent", {"a": RingNode(3)})
    for bad in (0, -1, 1.5, True, "8"):
        with pytest.raises(ValueError, match="bins"):
            arcs(ring, bad)  # type: ignore[arg-type]


def test_one_member_is_one_run() -> None:
    for algorithm in ALGORITHMS:
        for replicas in (1, 3, 4096):
            drawn = arcs(Ring.build(algorithm, {"only": RingNode(replicas)}))
            assert drawn.names == ["only"] and len(drawn.runs) == 1 and drawn.runs[0][1] == 0


# ---------------------------------------------------------------- moved_share


@pytest.mark.parametrize("force", [False, True], ids=["hashes", "ties"])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@settings(max_examples=60, deadline=None)
@given(start=members, ops=changes, bulk=st.booleans())
def test_moved_share_equals_the_brute_force_merge(algorithm: str, force: bool, start: list[Op], ops: list[Op],
                                                  bulk: bool) -> None:
    with forced(algorithm, force):
        m = Model(algorithm, start, bulk)
        old = Model(algorithm, [], False)
        old.ring, old.order = m.ring, dict(m.order)
        m.apply(ops)
        got = moved_share(old.ring, m.ring)
        back = moved_share(m.ring, old.ring)
    space = 1 << m.ring.BITS
    if not len(old.ring) or not len(m.ring):
        assert got == back == (1.0 if len(old.ring) or len(m.ring) else 0.0)
        return
    want = oracle_moved(old, m) / space
    assert got == want  # exactly: both sum integers, then divide once
    assert back == want


@pytest.mark.parametrize("force", [False, True], ids=["hashes", "ties"])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@settings(max_examples=40, deadline=None)
@given(start=st.lists(st.tuples(st.sampled_from(NAMES[:-1]), st.integers(1, 12)), min_size=1, max_size=7),
       replicas=st.integers(1, 12))
def test_a_join_moves_the_joiners_share_and_a_leave_the_leavers(algorithm: str, force: bool, start: list[Op],
                                                                 replicas: int) -> None:
    with forced(algorithm, force):
        m = Model(algorithm, start, bulk=True)
        joined = m.ring.with_node("12", RingNode(replicas))
        assert moved_share(m.ring, joined) == joined.shares()["12"]
        assert moved_share(joined, m.ring) == joined.shares()["12"]  # the leave of the same member


def test_moved_share_of_a_4096_point_join() -> None:
    old = Ring.build("consistent", {f"svc-{i}": RingNode(4096) for i in range(20)})
    new = old.with_node("joiner", RingNode(4096))
    assert moved_share(old, new) == new.shares()["joiner"]
    assert 1 / 21 * 0.9 < moved_share(old, new) < 1 / 21 * 1.1
    assert moved_share(new, new.with_node("joiner", RingNode(4096))) == 0.0  # consistent: no-op


def test_a_chash_reinsert_of_an_unchanged_member_moves_the_ties_it_now_wins() -> None:
    # "1" and "11" share points ("1" + "11" == "11" + "1", ...); "11" was inserted last and wins them.
    old = Ring.build("chash", {"1": RingNode(20), "11": RingNode(20)})
    new = old.with_node("1", RingNode(20))  # Go's Upsert: "1" is now the latest and takes the ties
    tied = [p for p in ChashRing.replica_points("1", RingNode(20)) if old.owner_at(p) != new.owner_at(p)]
    assert tied  # the case is real: some keys do change owner
    a, b = Model("chash", [("1", 20), ("11", 20)], bulk=True), Model("chash", [("1", 20), ("11", 20)], bulk=True)
    b.apply([("1", 20)])
    assert moved_share(old, new) == oracle_moved(a, b) / 2**32 > 0


def test_moved_share_empty_rings_and_mismatched_algorithms() -> None:
    for algorithm in ALGORITHMS:
        empty = Ring(algorithm)
        full = Ring.build(algorithm, {"a": RingNode(5), "b": RingNode(5)})
        assert moved_share(empty, empty) == 0.0
        assert moved_share(empty, full) == moved_share(full, empty) == 1.0
        assert moved_share(full, full) == 0.0
        assert moved_share(full, full.without("a").without("b")) == 1.0
    with pytest.raises(ValueError, match="cannot compare"):
        moved_share(Ring("consistent"), Ring("chash"))


# -------------------------------------------------------------------- figures


def measure() -> None:
    """Print the CPU cost of arcs and moved_share at the sizes the issue names (best of 5)."""

    def cpu_ms(fn: Callable[[], object], repeat: int = 5) -> float:
        best = float("inf")
        for _ in range(repeat):
            t = time.process_time()
            fn()
            best = min(best, time.process_time() - t)
        return best * 1000

    for n in (200, 2000):
        ring = Ring.build("consistent", {f"svc-{i}": RingNode(4096) for i in range(n)})
        print(f"arcs, {n} x 4096 points (sampled, 1440 slices): {cpu_ms(partial(arcs, ring)):.1f} ms CPU")
    small = Ring.build("consistent", {f"svc-{i}": RingNode(5) for i in range(1152)})
    print(f"arcs, exact mode at {small.point_count} entries: {cpu_ms(lambda: arcs(small)):.1f} ms CPU")
    base = Ring.build("consistent", {f"svc-{i}": RingNode(4096) for i in range(1000)})
    joined = base.with_node("joiner", RingNode(4096))
    print(f"moved_share, one 4096-point join into 1,000 members: {cpu_ms(lambda: moved_share(base, joined)):.1f} ms CPU")


if __name__ == "__main__":
    measure()
