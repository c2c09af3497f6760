"""Health decides the rings, in the catalog itself (issue 14, item 2): a critical service stays a member
of its group but is off its ring, only its keys move, each to the owner the ring without it gives, and
every key comes back exactly when it passes again; warning stays on unless `only_passing`. A cached
client's `GroupView`, fed by the API core's real Watch stream, answers as the catalog through the cycle.
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncGenerator, Mapping
from typing import cast

import pytest

from registry.api import RegistryCore
from registry.catalog import Catalog, GroupChange, UnknownGroup
from registry.client.cache import GroupView
from registry.healthtags import Health, health_tags
from registry.ring import Ring, RingNode
from registry.v1 import registry_pb2 as pb

GROUP = "web"
KEYS = [f"user-{i}" for i in range(10_000)]
VICTIM = "svc-3"


def _tags(i: int, health: Health | None = None, note: str = "") -> dict[str, str]:
    tags = {"group": GROUP, "addr": f"10.0.0.{i}:80", "replicas": "256"}
    if health is not None:
        tags.update(health_tags(health, note))
    return tags


def _catalog(algorithm: str = "consistent", only_passing: bool = False) -> Catalog:
    c = Catalog(algorithm, only_passing=only_passing)
    for i in range(10):
        c.apply(f"svc-{i}", _tags(i))
    return c


def _owners(c: Catalog) -> list[str]:
    return [s.id for s in c.match_batch(GROUP, KEYS)]


def _agree(c: Catalog) -> None:
    """Members and ring of one snapshot agree: the ring holds exactly the routed members."""
    members = c.members(GROUP)
    assert set(c.ring(GROUP).nodes) == {s.id for s in members if c.routed(s)}


def _built(algorithm: str, nodes: Mapping[str, RingNode], order: list[str]) -> Ring:
    """A ring built from scratch (not incrementally) of `order`'s members, in that insert order."""
    return Ring.build(algorithm, {k: nodes[k] for k in order})


@pytest.mark.parametrize("bulk", [False, True], ids=["apply", "apply_many"])
def test_critical_moves_exactly_its_keys_to_the_ring_without_it_and_back(bulk: bool) -> None:
    c = _catalog()
    before, ring_before = _owners(c), c.ring(GROUP)
    assert before.count(VICTIM) > 0

    def set_health(health: Health, note: str = "") -> None:
        if bulk:
            c.apply_many([(VICTIM, _tags(3, health, note))])
        else:
            c.apply(VICTIM, _tags(3, health, note))

    set_health(Health.CRITICAL, "db: connection refused")
    _agree(c)
    after = _owners(c)
    others = [k for k in ring_before.nodes if k != VICTIM]
    expected = _built("consistent", ring_before.nodes, others).get_many(KEYS)
    assert after == expected
    moved = [i for i, (a, b) in enumerate(zip(before, after)) if a != b]
    assert len(moved) == before.count(VICTIM) and all(before[i] == VICTIM for i in moved)
    for key in KEYS[:300]:  # Match(n) skips it too, walking on to the next owners
        assert [s.id for s in c.match(GROUP, key, 3)] == _built("consistent", ring_before.nodes, others).get_n(key, 3)
    assert [s.id for s in c.members(GROUP)] == [f"svc-{i}" for i in range(10)]  # still a member
    victim = next(s for s in c.members(GROUP) if s.id == VICTIM)
    assert (victim.health, victim.health_note) == (Health.CRITICAL, "db: connection refused")

    set_health(Health.PASSING)
    _agree(c)
    assert _owners(c) == before
    assert c.ring(GROUP).shares() == ring_before.shares()
    assert c.health_changes == {"critical": 1, "passing": 1}


def test_chash_moves_only_its_keys_and_puts_it_back_last_as_go_upsert_does() -> None:
    c = _catalog("chash")
    before, ring_before = _owners(c), c.ring(GROUP)
    order = [f"svc-{i}" for i in range(10)]
    c.apply(VICTIM, _tags(3, Health.CRITICAL, "down"))
    _agree(c)
    rest = [k for k in order if k != VICTIM]
    after = _owners(c)
    assert after == _built("chash", ring_before.nodes, rest).get_many(KEYS)
    assert all(b == a or a == VICTIM for a, b in zip(before, after))
    c.apply(VICTIM, _tags(3, Health.PASSING))
    _agree(c)
    assert _owners(c) == _built("chash", ring_before.nodes, [*rest, VICTIM]).get_many(KEYS)
    assert [s.id for s in c.members(GROUP)] == [*rest, VICTIM]  # Members replays the ring's insert order


@pytest.mark.parametrize("only_passing", [False, True])
def test_warning_stays_on_the_ring_unless_only_passing(only_passing: bool) -> None:
    c = _catalog(only_passing=only_passing)
    before, ring_before = _owners(c), c.ring(GROUP)
    c.apply(VICTIM, _tags(3, Health.WARNING, "slow"))
    _agree(c)
    if only_passing:
        rest = [k for k in ring_before.nodes if k != VICTIM]
        assert _owners(c) == _built("consistent", ring_before.nodes, rest).get_many(KEYS)
    else:
        assert _owners(c) == before
        assert c.ring(GROUP) is ring_before  # nothing to do on the ring: the same snapshot


def test_a_health_change_is_a_group_change_and_a_note_change_leaves_the_ring_alone() -> None:
    c = _catalog()
    changes: list[GroupChange] = []
    c.subscribe(changes.append)
    v0 = c.version(GROUP)
    c.apply(VICTIM, _tags(3, Health.CRITICAL, "HTTP 500"))
    assert len(changes) == 1 and changes[0].version == v0 + 1 == c.version(GROUP)
    (updated,) = changes[0].updated
    assert (updated.id, updated.health, updated.health_note) == (VICTIM, Health.CRITICAL, "HTTP 500")
    assert not changes[0].added and not changes[0].removed
    ring = c.ring(GROUP)
    c.apply(VICTIM, _tags(3, Health.CRITICAL, "HTTP 503"))  # still critical, a new reason
    assert c.version(GROUP) == v0 + 2 and changes[1].updated[0].health_note == "HTTP 503"
    assert c.ring(GROUP) is ring  # off the ring before and after: the ring is not touched
    assert c.health_changes == {"critical": 1}


def test_every_service_critical_leaves_a_group_of_members_with_no_ring() -> None:
    c = Catalog()
    for i in range(2):
        c.apply(f"svc-{i}", _tags(i, Health.CRITICAL, "down"))
    c.apply("svc-2", _tags(2, Health.WARNING))
    c.apply("svc-2", _tags(2, Health.CRITICAL))
    _agree(c)
    assert c.groups() == [GROUP] and len(c.members(GROUP)) == 3
    with pytest.raises(UnknownGroup, match=r"'web': no service on its ring \(3 critical\)"):
        c.match(GROUP, "k")
    with pytest.raises(UnknownGroup, match="3 critical"):
        c.match_batch(GROUP, ["k"])
    c.apply("svc-1", _tags(1, Health.PASSING))
    assert {s.id for s in c.match_batch(GROUP, KEYS[:100])} == {"svc-1"}


def test_a_member_without_the_tag_or_with_an_unknown_word_is_passing_and_the_word_counted() -> None:
    c = Catalog()
    c.apply("go", {"group": GROUP, "addr": "10.0.0.1:80"})  # a Go service: no health tag
    c.apply("newer", {"group": GROUP, "addr": "10.0.0.2:80", "health": "maintenance", "health_note": "x"})
    assert [(s.id, s.health, s.health_note) for s in c.members(GROUP)] == [
        ("go", Health.PASSING, ""), ("newer", Health.PASSING, "")]
    assert set(c.ring(GROUP).nodes) == {"go", "newer"}
    assert c.stats["unknown_health"] == 1


def test_a_bulk_load_leaves_critical_members_off_the_ring() -> None:
    """A registry learning a whole pool (apply_many of many members: one Ring.build) routes as one
    that learned them one at a time."""
    one_by_one, bulk = Catalog(), Catalog()
    updates = [(f"svc-{i}", _tags(i, Health.CRITICAL if i % 5 == 0 else Health.PASSING)) for i in range(40)]
    for name, tags in updates:
        one_by_one.apply(name, tags)
    bulk.apply_many(updates)
    _agree(bulk)
    assert len(bulk.ring(GROUP).nodes) == 32 and len(bulk.members(GROUP)) == 40
    assert _owners(bulk) == _owners(one_by_one)


@pytest.mark.parametrize(("algorithm", "only_passing"), [("consistent", False), ("consistent", True),
                                                         ("chash", False)])
async def test_a_cached_group_view_fed_by_watch_answers_as_the_catalog_through_the_cycle(
        algorithm: str, only_passing: bool) -> None:
    """The API core's Watch stream (snapshot, then updates) into a client's GroupView: at every step
    its MatchBatch and Match(n) answers are the catalog's, so it drops and takes back what it does."""
    c = _catalog(algorithm, only_passing)
    core = RegistryCore(c)
    stream = cast(AsyncGenerator[bytes, None], core.watch(GROUP))
    view = GroupView(GROUP)
    try:
        view.apply(pb.WatchEvent.FromString(await stream.__anext__()))
        steps = [(Health.WARNING, "slow"), (Health.CRITICAL, "down"), (Health.PASSING, "")]
        for step in [None, *steps]:
            if step is not None:
                c.apply(VICTIM, _tags(3, *step))
                view.apply(pb.WatchEvent.FromString(await stream.__anext__()))
            assert [s.id for s in view.match_batch(KEYS)] == _owners(c)
            for key in KEYS[:50]:
                assert [s.id for s in view.match(key, 3)] == [s.id for s in c.match(GROUP, key, 3)]
            assert [(s.id, s.health, s.health_note) for s in view.members()] == [
                (s.id, s.health.word, s.health_note) for s in c.members(GROUP)]
        # a fresh snapshot of a group with a critical member (a new client, or a failover)
        c.apply(VICTIM, _tags(3, Health.CRITICAL, "down"))
        fresh = GroupView(GROUP)
        fresh.apply(pb.WatchEvent.FromString(core.snapshot(GROUP)[1]))
        assert [s.id for s in fresh.match_batch(KEYS)] == _owners(c)
        c.apply(VICTIM, _tags(3, Health.PASSING))  # ... and it takes the member back as the catalog does
        await stream.__anext__()  # the critical update
        fresh.apply(pb.WatchEvent.FromString(await stream.__anext__()))
        assert [s.id for s in fresh.match_batch(KEYS)] == _owners(c)
    finally:
        await stream.aclose()
        core.close()


def test_readers_never_get_a_critical_service_while_its_health_flaps() -> None:
    """Members and ring are one snapshot: a reader thread matching while the writer flips a service
    critical and back gets, in every answer, only services whose own health routes them."""
    c = _catalog()
    stop = threading.Event()
    seen: list[str] = []
    bad: list[str] = []

    def read() -> None:
        while not stop.is_set():
            for s in c.match_batch(GROUP, KEYS[:2000]):
                if not c.routed(s):
                    bad.append(f"{s.id} {s.health.word}")
            seen.append("x")

    reader = threading.Thread(target=read)
    reader.start()
    deadline = time.monotonic() + 30
    flips = 0
    try:  # at least 200 flips, and on until the reader has read through 20 of them
        while flips < 200 or len(seen) < 20:
            assert time.monotonic() < deadline, f"the reader read {len(seen)} times in {flips} flips"
            c.apply(VICTIM, _tags(3, Health.CRITICAL if flips % 2 == 0 else Health.PASSING, f"flap {flips}"))
            _agree(c)
            flips += 1
    finally:
        stop.set()
        reader.join(30)
    assert not bad, bad[:5]
