"""``Ring.with_nodes`` (a batch of joins in one merge) against ``with_node`` one by one and ``Ring.build``.

The batch must give the sequential snapshot entry for entry (buckets, flags, counts, owner indexes), on
the C path (``registry._ringaccel.insert_many``) and the pure-Python one, for real hashes and for forced
ties (members owning the same points, a member owning a point twice); and a catalog applying a batch of
TTL services must hold the same rings as one applying them one at a time.
"""

from __future__ import annotations

import random
from array import array
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import registry.ring.consistent as ring_mod
from registry.catalog import Catalog
from registry.ring import ConsistentRing, Ring, RingNode
from registry.ttl.entry import Entry, entry_tags
from tests.registry.test_ring_accel import NO_ACCEL

ACCEL = ConsistentRing.accel
PATHS = [pytest.param(None, id="python"),
         pytest.param(ACCEL, id="accel", marks=pytest.mark.skipif(ACCEL is None, reason=NO_ACCEL))]
KEYS = [f"key-{i}" for i in range(2000)]
LOW, CN, LMASK = ring_mod._LOW, ring_mod._CN, ring_mod._LMASK
#: Points that collide on purpose: bucket ends, bucket 0, the last bucket, several points per bucket.
POOL = [0, 1, (7 << LOW) | 5, (7 << LOW) | 9, (7 << LOW) | LMASK, 8 << LOW, (300 << LOW) | 1,
        ((CN - 1) << LOW) | LMASK, (CN - 1) << LOW, (1 << 63) | 12345]
NAMES = [f"n{i}" for i in range(12)]


@contextmanager
def path(accel: ModuleType | None, forced: dict[str, list[int]] | None = None) -> Iterator[None]:
    """Ring updates through ``accel`` (None: pure Python); members in ``forced`` own exactly those points."""
    saved, real = ConsistentRing.accel, ConsistentRing.replica_points

    def fake(node_id: str, node: RingNode) -> array[int]:
        if forced is not None and node_id in forced:
            return array("Q", forced[node_id])
        return real(node_id, node)

    ConsistentRing.accel = accel
    ConsistentRing.replica_points = staticmethod(fake)  # type: ignore[method-assign]
    try:
        yield
    finally:
        ConsistentRing.accel = saved
        ConsistentRing.replica_points = staticmethod(real)  # type: ignore[method-assign]


def state(ring: Ring) -> tuple[bytes, list[int], bytes, int, list[str | None], dict[str, int], dict[str, RingNode]]:
    assert isinstance(ring, ConsistentRing)
    return (b"".join(ring._bk), [len(a) for a in ring._bk], bytes(ring._flags), ring.point_count,
            list(ring._ids), dict(ring._index), dict(ring.nodes))


def by_id(ring: Ring) -> list[tuple[int, str | None]]:
    return [(p, ring._ids[o]) for p, o in ring._entries()]


def check_batch(start: dict[str, RingNode], leaves: list[str], batch: list[tuple[str, RingNode]],
                accel: ModuleType | None, forced: dict[str, list[int]] | None = None) -> None:
    with path(accel, forced):
        ring: Ring = Ring("consistent")
        for k, node in start.items():
            ring = ring.with_node(k, node)
        for k in leaves:  # holes in the owner indexes: joiners reuse them
            ring = ring.without(k)
        before = state(ring)
        seq = ring
        for k, node in batch:
            seq = seq.with_node(k, node)
        got = ring.with_nodes(batch)
        assert state(ring) == before  # the old snapshot is untouched
        assert state(got) == state(seq)
        built = Ring.build("consistent", dict(seq.nodes)) if seq.nodes else Ring("consistent")
        assert by_id(got) == by_id(built)
        if got.nodes:
            assert got.get_many(KEYS) == built.get_many(KEYS) == [seq.get(k) for k in KEYS]
            assert [got.get_n(k, 3) for k in KEYS[:50]] == [built.get_n(k, 3) for k in KEYS[:50]]


nodes = st.builds(RingNode, st.integers(1, 40), st.integers(1, 3))
members = st.dictionaries(st.sampled_from(NAMES), nodes, max_size=10)
batches = st.lists(st.tuples(st.sampled_from(NAMES), nodes), max_size=10)


@pytest.mark.parametrize("accel", PATHS)
@settings(max_examples=60, deadline=None)
@given(start=members, leaves=st.lists(st.sampled_from(NAMES), max_size=4), batch=batches)
def test_batch_equals_one_by_one(accel: ModuleType | None, start: dict[str, RingNode], leaves: list[str],
                                 batch: list[tuple[str, RingNode]]) -> None:
    check_batch(start, [k for k in dict.fromkeys(leaves) if k in start], batch, accel)


@pytest.mark.parametrize("accel", PATHS)
@settings(max_examples=60, deadline=None)
@given(start=members, leaves=st.lists(st.sampled_from(NAMES), max_size=4), batch=batches,
       forced=st.dictionaries(st.sampled_from(NAMES), st.lists(st.sampled_from(POOL), min_size=1, max_size=6)))
def test_batch_equals_one_by_one_with_ties(accel: ModuleType | None, start: dict[str, RingNode], leaves: list[str],
                                           batch: list[tuple[str, RingNode]], forced: dict[str, list[int]]) -> None:
    # Forced members own the same few points (and some a point twice): the runs of tied
    # points must come out in id order whatever order the batch names them in.
    check_batch(start, [k for k in dict.fromkeys(leaves) if k in start], batch, accel, forced)


@pytest.mark.parametrize("accel", PATHS)
def test_tied_run_in_id_order(accel: ModuleType | None) -> None:
    shared = [POOL[2], POOL[3], POOL[7]]
    forced = {"td": shared, "tb": shared, "tc": [POOL[2], POOL[2]], "ta": shared}
    one = RingNode(1)
    check_batch({"tc": one, "x": RingNode(8)}, [], [("td", one), ("tb", one), ("ta", one), ("tc", RingNode(1, 2))],
                accel, forced)
    with path(accel, forced):
        ring = Ring("consistent").with_node("tc", one).with_nodes([("td", one), ("tb", one), ("ta", one)])
        assert [k for p, k in by_id(ring) if p == POOL[2]] == ["ta", "tb", "tc", "tc", "td"]
        assert ring.get_n(str(POOL[2]), 1)  # answers


@pytest.mark.parametrize("accel", PATHS)
@pytest.mark.parametrize("batch", [
    [("c", RingNode(5))],                        # the last member re-placed: its index goes to the hole
    [("c", RingNode(5)), ("d", RingNode(3))],    # ... and a joiner takes the next one
    [("d", RingNode(3)), ("c", RingNode(5))],
    [("c", RingNode(5)), ("c", RingNode(4))],    # re-placed back to what it was: moves all the same
    [("a", RingNode(2)), ("e", RingNode(2)), ("d", RingNode(2)), ("f", RingNode(1, 3))],
])
def test_owner_indexes_as_one_by_one(accel: ModuleType | None, batch: list[tuple[str, RingNode]]) -> None:
    # Holes in the owner table (b left), trailing ones trimmed: each member ends on the index
    # the sequential joins give it, and no stale entry of a moved member stays behind.
    check_batch({k: RingNode(4) for k in "abc"}, ["b"], batch, accel)
    check_batch({k: RingNode(4) for k in "abcde"}, ["b", "d"], batch, accel)


def test_chash_batch_is_the_ordered_upserts() -> None:
    ring = Ring("chash")
    for k in ("a", "b", "c"):
        ring = ring.with_node(k, RingNode(50))
    batch = [("d", RingNode(50)), ("a", RingNode(50)), ("b", RingNode(50, 2))]
    seq = ring
    for k, node in batch:
        seq = seq.with_node(k, node)
    got = ring.with_nodes(batch)
    assert list(got._entries()) == list(seq._entries())
    assert got.get_many(KEYS) == seq.get_many(KEYS)


def test_bad_items_raise_before_anything() -> None:
    ring = Ring("consistent").with_node("a", RingNode(4))
    with pytest.raises(TypeError):
        ring.with_nodes([("b", RingNode(4)), (3, RingNode(4))])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        ring.with_nodes([("b", 4)])  # type: ignore[list-item]
    assert ring.with_nodes([]) is ring
    assert ring.with_nodes([("a", RingNode(4))]) is ring


def ttl(group: str, id_: str, replicas: int) -> dict[str, str]:
    return entry_tags(Entry(group, id_, f"10.0.0.1:{1000 + len(id_)}", replicas=replicas,
                            written_ms=1, writer="r1"))


@pytest.mark.parametrize("accel", PATHS)
def test_catalog_batch_equals_one_by_one(accel: ModuleType | None) -> None:
    # A catalog applying a push of TTL writes (joins, re-placements, a removal, a gossiping member
    # shadowing one id) at once holds the ring of one applying them one at a time.
    rnd = random.Random(7)
    with path(accel):
        one, many = Catalog(default_replicas=16), Catalog(default_replicas=16)
        for cat in (one, many):
            cat.apply("g-0", {"group": "web", "addr": "10.0.0.9:80"})
            cat.apply_ttl([("web", f"s-{i}", ttl("web", f"s-{i}", 16)) for i in range(40)])
        ups: list[tuple[str, str, dict[str, str] | None]] = []
        for _ in range(12):
            i = rnd.randrange(60)
            ups.append(("web", f"s-{i}", ttl("web", f"s-{i}", rnd.choice((8, 16, 24)))))
        ups += [("web", "s-3", None), ("web", "g-0", ttl("web", "g-0", 16))]
        for u in ups:
            one.apply_ttl([u])
        many.apply_ttl(ups)
        a, b = one.ring("web"), many.ring("web")
        assert dict(a.nodes) == dict(b.nodes)
        assert by_id(a) == by_id(b) == by_id(Ring.build("consistent", dict(a.nodes)))
        assert [s.id for s in many.match_batch("web", KEYS)] == [s.id for s in one.match_batch("web", KEYS)]
        assert many.stats == one.stats
