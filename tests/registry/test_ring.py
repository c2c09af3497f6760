"""Rings: Go chash answers, uhashring semantics, determinism, snapshots, get_n, threads."""

from __future__ import annotations

import random
import zlib
from bisect import bisect_right

import pytest
import uhashring
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

from registry.ring import (
    DEFAULT_REPLICAS,
    MAX_REPLICAS,
    ChashRing,
    ConsistentRing,
    EmptyRing,
    Ring,
    RingNode,
    node_points,
)
from tests.registry.readers import reads_during


def go_crc(text: str) -> int:
    return zlib.crc32(text.encode())


class GoChash:
    """Straight model of Go werbenhu/chash v1.0.8 Group (Upsert/Delete/Match), for comparison.

    ``match`` returns None where Go would dereference a missing row.
    """

    def __init__(self, replicas: int) -> None:
        self.replicas = replicas
        self.circle: list[int] = []
        self.rows: dict[int, str] = {}
        self.elements: set[str] = set()

    def upsert(self, key: str) -> None:
        if key in self.elements:
            self.delete(key)
        self.elements.add(key)
        for i in range(self.replicas):
            crc = go_crc(str(i) + key)
            self.rows[crc] = key
            self.circle.append(crc)
        self.circle.sort()

    def delete(self, key: str) -> None:
        self.elements.discard(key)
        for i in range(self.replicas):
            crc = go_crc(str(i) + key)
            self.rows.pop(crc, None)
            if crc in self.circle:
                self.circle.remove(crc)

    def point_of(self, key: str) -> int:
        target = go_crc(key)
        i = bisect_right(self.circle, target)  # first index with circle[i] > target
        if i >= len(self.circle) or i == 0:
            return self.circle[-1]
        return self.circle[i - 1]

    def match(self, key: str) -> str | None:
        return self.rows.get(self.point_of(key))


def test_chash_known_answers_from_go_registry() -> None:
    ring = Ring("chash")
    for name in ("webservice-1", "webservice-2", "webservice-3"):
        ring = ring.with_node(name, RingNode(10000))
    got = [ring.get(f"user-id-{i}") for i in range(5)]
    assert got == ["webservice-2", "webservice-3", "webservice-3", "webservice-1", "webservice-1"]
    assert ring.point_count == 30000


def test_chash_wraps_to_largest_point_at_both_ends() -> None:
    ring = Ring.build("chash", {"a": RingNode(3), "b": RingNode(3)})
    points = sorted((go_crc(f"{i}{n}"), n) for n in "ab" for i in range(3))
    low, high = points[0][0], points[-1][0]
    largest_owner = points[-1][1]
    below = [k for k in (f"k{i}" for i in range(5000)) if go_crc(k) < low]
    above = [k for k in (f"k{i}" for i in range(5000)) if go_crc(k) >= high]
    assert below and above
    for key in below + above:
        assert ring.get(key) == largest_owner
    # A key between points goes to the largest point <= its hash (not the next one).
    for key in (f"m{i}" for i in range(2000)):
        h = go_crc(key)
        if low <= h < high:
            expect = max(p for p in points if p[0] <= h)
            assert ring.get(key) == expect[1]


def test_chash_matches_go_model_on_random_histories() -> None:
    rnd = random.Random(7)
    names = [str(i) for i in range(1, 21)]  # ids that share points in Go
    for _ in range(5):
        go = GoChash(40)
        ring = Ring("chash")
        for _ in range(30):
            name = rnd.choice(names)
            if rnd.random() < 0.7 or name not in go.elements:
                go.upsert(name)
                ring = ring.with_node(name, RingNode(40))
            else:
                go.delete(name)
                ring = ring.without(name)
            assert set(ring.nodes) == go.elements
            if not go.elements:
                continue
            for k in range(200):
                key = f"key-{k}"
                want = go.match(key)
                got = ring.get(key)
                if want is not None:
                    assert got == want
                else:
                    # Go lands on an owner-less point here; we answer a live owner of it.
                    point = go.point_of(key)
                    owners = {n for n in go.elements for i in range(40) if go_crc(f"{i}{n}") == point}
                    assert got in owners


def test_chash_shared_point_keeps_live_owner_after_delete() -> None:
    # "1"+"12" == "11"+"2": replica 1 of "12" (key "112") and replica 11 of "2" (key "112").
    go = GoChash(20)
    ring = Ring("chash")
    for name in ("12", "2", "5"):
        go.upsert(name)
        ring = ring.with_node(name, RingNode(20))
    shared = go_crc("112")
    assert go.rows[shared] == "2"  # the later insert owns the shared point
    go.delete("12")  # Go drops rows[shared] although "2" still holds the point
    ring = ring.without("12")
    assert shared in go.circle and shared not in go.rows
    keys = [k for k in (f"user-{i}" for i in range(300000)) if go.point_of(k) == shared][:3]
    assert keys, "no key lands on the shared point"
    for key in keys:
        assert go.match(key) is None  # Go: no owner (nil element)
        assert ring.get(key) == "2"


def test_chash_later_insert_wins_and_upsert_moves_to_latest() -> None:
    shared = go_crc("112")
    keys_cache: list[str] = []
    go = GoChash(20)
    for name in ("2", "12"):
        go.upsert(name)
    keys_cache = [k for k in (f"user-{i}" for i in range(300000)) if go.point_of(k) == shared][:2]
    assert keys_cache
    ring = Ring.build("chash", {"2": RingNode(20), "12": RingNode(20)})
    assert all(ring.get(k) == "12" for k in keys_cache)
    ring = ring.with_node("2", RingNode(20))  # upsert: "2" becomes the latest insert
    assert all(ring.get(k) == "2" for k in keys_cache)


def xx(text: str) -> int:
    return xxhash.xxh3_64_intdigest(text.encode())


def test_consistent_equals_uhashring_semantics() -> None:
    nodes = {f"node-{i}": RingNode(40, 1 + i % 3) for i in range(15)}
    ring = Ring.build("consistent", nodes)
    reference = uhashring.HashRing(
        {k: {"vnodes": v.replicas, "weight": v.weight} for k, v in nodes.items()}, hash_fn=xx
    )
    keys = [f"key-{i}" for i in range(5000)]
    assert [ring.get(k) for k in keys] == [reference.get_node(k) for k in keys]
    # after a removal too
    ring = ring.without("node-3")
    reference.remove_node("node-3")
    assert [ring.get(k) for k in keys] == [reference.get_node(k) for k in keys]


def test_replicas_are_capped_and_weight_multiplies() -> None:
    assert len(node_points("consistent", "a", RingNode(10000))) == MAX_REPLICAS
    assert len(node_points("consistent", "a", RingNode(100, 3))) == 300
    assert len(node_points("chash", "a", RingNode(10000))) == 10000
    assert DEFAULT_REPLICAS <= MAX_REPLICAS


@settings(max_examples=25, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=8, unique=True), st.randoms())
def test_consistent_is_independent_of_insert_order(names: list[str], rnd: random.Random) -> None:
    a = Ring.build("consistent", {n: RingNode(30) for n in names})
    shuffled = names[:]
    rnd.shuffle(shuffled)
    b = Ring("consistent")
    for n in shuffled + ["extra"]:
        b = b.with_node(n, RingNode(30))
    if "extra" not in names:
        b = b.without("extra")
    keys = [f"k{i}" for i in range(300)]
    assert [a.get(k) for k in keys] == [b.get(k) for k in keys]
    assert a.shares() == b.shares()


def test_collision_tie_goes_to_smallest_id_in_any_order() -> None:
    # Real 64-bit collisions are not findable; place equal points through the insert path.
    base = Ring("consistent")
    for order in (("b", "a", "c"), ("c", "b", "a"), ("a", "c", "b")):
        ring = base
        for name in order:
            ring = ring._clone()
            idx = len(ring._ids)
            ring._ids.append(name)
            ring._index[name] = idx
            ring._nodes[name] = RingNode(1)
            ring._insert_points(idx, [1 << 40])
        assert ring.get("anything") == "a"
        assert ring.shares()["a"] == 1.0


def test_snapshots_are_immutable() -> None:
    r1 = Ring.build("consistent", {f"s{i}": RingNode(64) for i in range(5)})
    keys = [f"k{i}" for i in range(2000)]
    before = [r1.get(k) for k in keys]
    r2 = r1.with_node("s9", RingNode(64))
    r3 = r2.without("s0")
    assert [r1.get(k) for k in keys] == before
    assert set(r1.nodes) == {f"s{i}" for i in range(5)}
    assert "s9" in r2 and "s0" not in r3 and "s0" in r2
    assert r1.without("nobody") is r1
    assert r1.with_node("s1", RingNode(64)) is r1


@pytest.mark.parametrize("algorithm", ["consistent", "chash"])
def test_join_and_leave_move_only_the_changed_nodes_keys(algorithm: str) -> None:
    r1 = Ring.build(algorithm, {f"s{i}": RingNode(200) for i in range(8)})
    r2 = r1.with_node("new", RingNode(200))
    keys = [f"k{i}" for i in range(5000)]
    for k in keys:
        a, b = r1.get(k), r2.get(k)
        assert a == b or b == "new"
    r3 = r2.without("s3")
    for k in keys:
        a, b = r2.get(k), r3.get(k)
        assert a == b or a == "s3"


def walk_reference(ring: Ring, key: str, n: int) -> list[str]:
    entries = sorted(
        (p, name) for name, node in ring.nodes.items() for p in node_points(ring.algorithm, name, node)
    )
    points = [p for p, _ in entries]
    if ring.algorithm == "chash":
        h = go_crc(key)
        i = bisect_right(points, h) - 1  # -1 wraps to the largest point
        i %= len(points)
    else:
        h = xx(key)
        i = bisect_right(points, h) % len(points)
    out: list[str] = []
    for j in range(len(entries)):
        name = entries[(i + j) % len(entries)][1]
        if name not in out:
            out.append(name)
        if len(out) == n:
            break
    return out


@pytest.mark.parametrize("algorithm", ["consistent", "chash"])
def test_get_n_distinct_in_ring_order(algorithm: str) -> None:
    ring = Ring.build(algorithm, {f"svc-{i}": RingNode(16) for i in range(7)})
    for i in range(300):
        key = f"user-{i}"
        got = ring.get_n(key, 3)
        assert len(set(got)) == 3
        assert got[0] == ring.get(key)
        assert got == walk_reference(ring, key, 3)
    assert sorted(ring.get_n("x", 50)) == sorted(ring.nodes)
    assert ring.get_n("x", 0) == []


@pytest.mark.parametrize("algorithm", ["consistent", "chash"])
def test_shares_are_exact_arcs(algorithm: str) -> None:
    ring = Ring.build(algorithm, {f"svc-{i}": RingNode(5) for i in range(4)})
    space = 1 << (32 if algorithm == "chash" else 64)
    entries = sorted((p, n) for n, node in ring.nodes.items() for p in node_points(algorithm, n, node))
    want = dict.fromkeys(ring.nodes, 0)
    for j, (p, name) in enumerate(entries):
        if algorithm == "chash":
            nxt = entries[(j + 1) % len(entries)][0] + (space if j == len(entries) - 1 else 0)
            want[name] += nxt - p
        else:
            prev = entries[j - 1][0] - (space if j == 0 else 0)
            want[name] += p - prev
    shares = ring.shares()
    assert shares == {n: v / space for n, v in want.items()}
    assert abs(sum(shares.values()) - 1.0) < 1e-9


def test_default_balance_small_group() -> None:
    ring = Ring.build("consistent", {f"service-{i}": RingNode(DEFAULT_REPLICAS) for i in range(10)})
    shares = ring.shares()
    mean = 1 / len(shares)
    assert max(shares.values()) / mean <= 1.05
    assert min(shares.values()) / mean >= 0.95


def test_the_algorithm_is_chosen_once_at_construction() -> None:
    # Ring(algorithm) is the algorithm's class, and every snapshot derived from it stays that class.
    assert type(Ring()) is ConsistentRing and type(Ring("consistent")) is ConsistentRing
    chash = Ring.build("chash", {"a": RingNode(3), "b": RingNode(3)})
    assert type(chash) is ChashRing and chash.algorithm == "chash"
    assert type(chash.with_node("c", RingNode(2)).without("a")) is ChashRing
    assert type(Ring.build("consistent", {"a": RingNode(3), "b": RingNode(3)}).without("b")) is ConsistentRing
    with pytest.raises(ValueError, match="unknown ring algorithm 'md5'"):
        Ring.build("md5", {"a": RingNode(3)})
    with pytest.raises(ValueError, match="ChashRing is the 'chash' ring, not 'consistent'"):
        ChashRing("consistent")


def test_empty_ring_and_bad_input() -> None:
    with pytest.raises(EmptyRing):
        Ring("consistent").get("k")
    with pytest.raises(EmptyRing):
        Ring.build("chash", {"a": RingNode(3)}).without("a").get("k")
    with pytest.raises(ValueError):
        Ring("md5")
    with pytest.raises(ValueError):
        RingNode(0)
    with pytest.raises(ValueError):
        RingNode(3, 0)


@pytest.mark.parametrize("algorithm", ["consistent", "chash"])
def test_readers_never_see_a_half_built_ring(algorithm: str) -> None:
    base = {f"svc-{i}": RingNode(300) for i in range(6)}
    extra = [f"tmp-{i}" for i in range(4)]
    keys = [f"key-{i}" for i in range(64)]
    # Every state the writer can publish, and each key's answer in each.
    states = [Ring.build(algorithm, base)]
    for name in extra:
        states.append(states[0].with_node(name, RingNode(300)))
    allowed = {k: {s.get(k) for s in states} for k in keys}
    holder = [states[0]]

    def read() -> None:
        ring = holder[0]
        for k in keys:
            got = ring.get(k)
            assert got in allowed[k] and got in ring.nodes
            assert len(ring.get_n(k, 2)) == 2

    def write() -> None:
        for _ in range(6):
            for name in extra:
                holder[0] = holder[0].with_node(name, RingNode(300))
                holder[0] = holder[0].without(name)

    reads_during(read, write)


def test_owner_index_widens_past_65536_members() -> None:
    ring = Ring("chash")
    base = ring._clone()
    base._ids = [None] * 0x10000  # pretend 65536 slots are taken (ids are free slots)
    base._ids[0] = "first"
    base._index["first"] = 0
    base._nodes["first"] = RingNode(2)
    base._insert_points(0, node_points("chash", "first", RingNode(2)))
    big = base
    ids: list[str | None] = ["first"]
    ids.extend(f"x{i}" for i in range(1, 0x10000))
    big._ids = ids
    grown = big.with_node("last", RingNode(3))
    assert isinstance(grown, ChashRing) and grown._own[0].typecode == "I"
    assert set(grown.get_n("k", 2)) <= {"first", "last"}
    assert any(grown.get(f"k{i}") == "last" for i in range(200))


def storage(ring: Ring) -> tuple[list[list[int]], ...]:
    """Every bucket array of a snapshot (and the consistent ring's flags, chash's non-empty list)."""
    if isinstance(ring, ConsistentRing):
        return [list(a) for a in ring._bk], [list(ring._flags)]
    assert isinstance(ring, ChashRing)
    return [list(a) for a in ring._pts], [list(a) for a in ring._own], [list(ring._nonempty)]


@pytest.mark.parametrize("algorithm", ["consistent", "chash"])
def test_bulk_build_equals_one_by_one(algorithm: str) -> None:
    groups = [
        {str(i): RingNode(40) for i in range(1, 21)},  # chash: shared points, order matters
        {f"s{i}": RingNode(300, 1 + i % 2) for i in range(30)},
        {"b": RingNode(5), "a": RingNode(5)},
    ]
    for nodes in groups:
        bulk = Ring.build(algorithm, nodes)
        one = Ring(algorithm)
        for name, node in nodes.items():
            one = one.with_node(name, node)
        assert list(bulk._entries()) == list(one._entries())
        assert storage(bulk) == storage(one)
        assert bulk.point_count == one.point_count and dict(bulk.nodes) == dict(one.nodes)
        # and it keeps working incrementally
        later = bulk.with_node("late", RingNode(7)).without(next(iter(nodes)))
        ref = one.with_node("late", RingNode(7)).without(next(iter(nodes)))
        assert [later.get(f"k{i}") for i in range(500)] == [ref.get(f"k{i}") for i in range(500)]
    with pytest.raises(TypeError):
        Ring.build(algorithm, {"a": 3})  # type: ignore[dict-item]
