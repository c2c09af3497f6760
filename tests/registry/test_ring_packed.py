"""The packed "consistent" layout: oracle equality under churn, get_many, ties, limits, bulk == incremental."""

from __future__ import annotations

import random
from array import array

import pytest
import uhashring
import xxhash

import registry.ring.consistent as ring_mod
from registry.ring import MAX_MEMBERS, ConsistentRing, EmptyRing, Ring, RingNode


def xx(text: str) -> int:
    return xxhash.xxh3_64_intdigest(text.encode())


def oracle(nodes: dict[str, RingNode]) -> uhashring.HashRing:
    return uhashring.HashRing({k: {"vnodes": v.replicas, "weight": v.weight} for k, v in nodes.items()}, hash_fn=xx)


def canonical(ring: Ring) -> tuple[list[tuple[int, str | None]], bytes, int]:
    """Everything a consistent ring answers from: entries (point, owner id) in order, flags, count."""
    assert isinstance(ring, ConsistentRing)
    ids = ring._ids
    return [(p, ids[o]) for p, o in ring._entries()], bytes(ring._flags), ring.point_count


def test_equals_uhashring_after_random_joins_and_leaves() -> None:
    rnd = random.Random(5)
    names = [f"svc-{i}" for i in range(24)]
    keys = [f"key-{i}" for i in range(3000)]
    ring = Ring("consistent")
    live: dict[str, RingNode] = {}
    for step in range(40):
        name = rnd.choice(names)
        if name in live and rnd.random() < 0.45:
            del live[name]
            ring = ring.without(name)
        else:
            live[name] = RingNode(rnd.choice((64, 300, 1024)), rnd.choice((1, 1, 2)))
            ring = ring.with_node(name, live[name])
        if step % 5 == 4 and live:
            ref = oracle(live)
            assert ring.get_many(keys) == [ref.get_node(k) for k in keys]
            assert canonical(ring) == canonical(Ring.build("consistent", live))


def test_many_points_per_bucket_from_one_member() -> None:
    # 4 x 4096 points in 16384 buckets: thousands of buckets get several points of the same member.
    nodes = {"big": RingNode(4096, 4), "small": RingNode(50)}
    ring = Ring("consistent").with_node("small", nodes["small"]).with_node("big", nodes["big"])
    assert ring.point_count == 4 * 4096 + 50
    ref = oracle(nodes)
    keys = [f"k{i}" for i in range(4000)]
    assert ring.get_many(keys) == [ref.get_node(k) for k in keys]
    assert canonical(ring) == canonical(Ring.build("consistent", nodes))
    back = ring.without("big")
    assert canonical(back) == canonical(Ring("consistent").with_node("small", nodes["small"]))


def test_leave_restores_the_previous_ring_exactly() -> None:
    base = Ring.build("consistent", {f"s{i}": RingNode(2048) for i in range(6)})
    again = base.with_node("tmp", RingNode(4096)).without("tmp")
    assert canonical(again) == canonical(base)
    empty = base
    for i in range(6):
        empty = empty.without(f"s{i}")
    assert isinstance(empty, ConsistentRing) and empty.point_count == 0 and not any(empty._flags)


def test_get_many_equals_get_including_wraps() -> None:
    sparse = Ring.build("consistent", {"a": RingNode(3), "b": RingNode(2)})  # almost every key wraps
    dense = Ring.build("consistent", {f"s{i}": RingNode(4096) for i in range(20)})
    keys = [f"user-{i}" for i in range(5000)] + ["\udcff-lone-surrogate", "ü", "x" * 300]
    for ring in (sparse, dense, dense.without("s3")):
        assert ring.get_many(keys) == [ring.get(k) for k in keys]
    # Keys past the very last point wrap to the smallest point of the whole ring.
    entries = list(sparse._entries())
    last_point = entries[-1][0]
    past = [k for k in (f"p{i}" for i in range(20000)) if xx(k) > last_point][:5]
    assert past
    smallest_owner = sparse._ids[entries[0][1]]
    assert sparse.get_many(past) == [smallest_owner] * len(past) == [sparse.get(k) for k in past]
    assert sparse.get_many([]) == []
    with pytest.raises(EmptyRing):
        Ring("consistent").get_many(["k"])
    with pytest.raises(EmptyRing):
        sparse.without("a").without("b").get_many(["k"])


def test_get_many_after_changes_uses_fresh_successors() -> None:
    ring = Ring.build("consistent", {"a": RingNode(4), "b": RingNode(4)})
    keys = [f"k{i}" for i in range(3000)]
    ring.get_many(keys)  # builds this snapshot's successor table
    bigger = ring.with_node("c", RingNode(4))
    assert bigger.get_many(keys) == [bigger.get(k) for k in keys]
    assert ring.get_many(keys) == [ring.get(k) for k in keys]


def tied_points(monkeypatch: pytest.MonkeyPatch, shared: list[int]) -> None:
    """Members named t* own exactly the points in ``shared`` (forces 64-bit ties)."""
    real = ConsistentRing.replica_points

    def fake(node_id: str, node: RingNode) -> array[int]:
        if node_id.startswith("t"):
            return array("Q", shared)
        return real(node_id, node)

    monkeypatch.setattr(ConsistentRing, "replica_points", staticmethod(fake))


def test_ties_smallest_id_wins_in_any_order(monkeypatch: pytest.MonkeyPatch) -> None:
    # Several points in one bucket and points in different buckets, all shared by the t* members.
    low = ring_mod._LOW
    shared = [(7 << low) | 5, (7 << low) | 9, (300 << low) | 1, ((ring_mod._CN - 1) << low) | ring_mod._LMASK]
    tied_points(monkeypatch, shared)
    names = ["tc", "ta", "tb", "td"]
    keys = [f"k{i}" for i in range(2000)]
    results = []
    for order in (names, names[::-1], ["tb", "td", "ta", "tc"]):
        ring = Ring("consistent").with_node("other", RingNode(8))
        for n in order:
            ring = ring.with_node(n, RingNode(1))
        assert canonical(ring) == canonical(Ring.build("consistent", {"other": RingNode(8), **{n: RingNode(1) for n in order}}))
        got = ring.get_many(keys)
        assert got == [ring.get(k) for k in keys]
        assert set(got) <= {"ta", "other"}
        shares = ring.shares()
        assert shares["tb"] == shares["tc"] == shares["td"] == 0.0
        results.append(got)
        # The winner leaves: the next smallest id takes every tied point.
        after = ring.without("ta")
        assert set(after.get_many(keys)) <= {"tb", "other"}
        assert after.shares()["tb"] == shares["ta"]
        assert canonical(after.with_node("ta", RingNode(1))) == canonical(ring)
    assert results[0] == results[1] == results[2]


def test_member_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    ring = Ring("consistent").with_node("first", RingNode(2))
    full = ring._clone()
    full._ids = ["first", *(f"x{i}" for i in range(1, MAX_MEMBERS))]  # every owner index taken
    with pytest.raises(ValueError, match=f"at most {MAX_MEMBERS}"):
        full.with_node("one-too-many", RingNode(2))
    # The last free index still works.
    almost = ring._clone()
    almost._ids = ["first", *(f"x{i}" for i in range(1, MAX_MEMBERS - 1))]
    grown = almost.with_node("last", RingNode(3))
    assert grown._index["last"] == MAX_MEMBERS - 1
    assert {grown.get(f"k{i}") for i in range(300)} <= {"first", "last"}
    assert "last" in set(grown.get_many([f"k{i}" for i in range(300)]))
    with pytest.raises(ValueError, match="at most"):
        Ring.build("consistent", {f"m{i}": RingNode(1) for i in range(MAX_MEMBERS + 1)})


def test_get_n_walks_across_empty_buckets_and_wraps() -> None:
    ring = Ring.build("consistent", {"a": RingNode(1), "b": RingNode(1), "c": RingNode(1)})
    for i in range(300):
        key = f"q{i}"
        got = ring.get_n(key, 3)
        assert sorted(got) == ["a", "b", "c"] and got[0] == ring.get(key)


def test_member_with_a_repeated_point(monkeypatch: pytest.MonkeyPatch) -> None:
    # Two replicas of one member hashing to the same 64-bit point: both entries are kept and removed.
    p = (123 << ring_mod._LOW) | 77
    tied_points(monkeypatch, [p, p, p + 1, (5 << ring_mod._LOW) | 3])
    base = Ring("consistent").with_node("other", RingNode(16))
    ring = base.with_node("tx", RingNode(1))
    assert ring.point_count == base.point_count + 4
    assert sum(1 for q, _ in ring._entries() if q == p) == 2
    assert canonical(ring) == canonical(Ring.build("consistent", {"other": RingNode(16), "tx": RingNode(1)}))
    assert canonical(ring.without("tx")) == canonical(base)


def test_small_rounds_give_the_same_ring(monkeypatch: pytest.MonkeyPatch) -> None:
    # Large rings run the map() passes in rounds of buckets; force tiny rounds on a small ring.
    nodes = {f"s{i}": RingNode(1024) for i in range(8)}
    whole = Ring.build("consistent", nodes)
    monkeypatch.setattr(ConsistentRing, "_chunk", lambda self: 7)
    ring = Ring("consistent")
    for name, node in nodes.items():
        ring = ring.with_node(name, node)
    assert canonical(ring) == canonical(whole)
    keys = [f"k{i}" for i in range(3000)]
    ref = oracle({k: v for k, v in nodes.items() if k != "s2"})
    smaller = ring.without("s2")
    assert smaller.get_many(keys) == [ref.get_node(k) for k in keys]
    assert canonical(smaller) == canonical(whole.without("s2"))
