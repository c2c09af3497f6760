"""Catalog: membership events -> groups, rings, versions, change notifications."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from registry.catalog import Catalog, GroupChange, Service, UnknownGroup
from registry.ring import DEFAULT_REPLICAS, Ring, RingNode
from tests.registry.readers import reads_during


def tags(group: str, addr: str = "", **extra: str) -> dict[str, str]:
    out = {"group": group, "addr": addr}
    out.update(extra)
    return out


def record(catalog: Catalog) -> list[GroupChange]:
    seen: list[GroupChange] = []
    catalog.subscribe(seen.append)
    return seen


def test_join_update_leave_versions_and_changes() -> None:
    cat = Catalog(default_replicas=64)
    seen = record(cat)
    cat.apply("a", tags("web", "10.0.0.1:80"))
    cat.apply("b", tags("web", "10.0.0.2:80"))
    assert cat.version("web") == 2
    assert [s.id for s in cat.members("web")] == ["a", "b"]
    assert seen[0].added[0].addr == "10.0.0.1:80" and seen[0].version == 1
    cat.apply("a", tags("web", "10.0.0.9:80"))
    assert seen[-1].updated[0].addr == "10.0.0.9:80" and seen[-1].version == 3
    cat.apply("a", tags("web", "10.0.0.9:80"))  # same tags: no change
    assert cat.version("web") == 3 and len(seen) == 3
    cat.apply("b", None)
    assert seen[-1].removed[0].id == "b" and seen[-1].version == 4
    assert [s.id for s in cat.members("web")] == ["a"]
    assert cat.match("web", "anything")[0].id == "a"
    cat.apply("nobody", None)  # unknown leave: ignored
    assert cat.version("web") == 4
    assert [c.version for c in seen] == [1, 2, 3, 4]


def test_member_without_group_is_ignored_and_losing_the_tag_leaves() -> None:
    cat = Catalog(default_replicas=16)
    cat.apply("agent", {"role": "x"})
    assert cat.groups() == [] and cat.stats["ignored_no_group"] == 1
    cat.apply("a", tags("web"))
    cat.apply("a", {"addr": "x"})
    assert cat.groups() == [] and cat.members("web") == []


def test_group_move() -> None:
    cat = Catalog(default_replicas=16)
    seen = record(cat)
    cat.apply("a", tags("old"))
    cat.apply("b", tags("old"))
    cat.apply("a", tags("new"))
    assert [s.id for s in cat.members("old")] == ["b"]
    assert [s.id for s in cat.members("new")] == ["a"]
    assert (seen[-2].group, seen[-2].removed[0].id) == ("old", "a")
    assert (seen[-1].group, seen[-1].added[0].id) == ("new", "a")
    assert cat.version("old") == 3 and cat.version("new") == 1
    assert cat.group_of("a") == "new"
    assert "a" not in cat.ring("old").nodes


def test_unknown_and_empty_groups() -> None:
    cat = Catalog(default_replicas=16)
    with pytest.raises(UnknownGroup, match="'ghost'"):
        cat.match("ghost", "k")
    cat.apply("a", tags("web"))
    cat.apply("a", None)
    with pytest.raises(UnknownGroup, match="'web'") as info:
        cat.match_batch("web", ["k"])
    assert info.value.group == "web"
    assert isinstance(info.value, LookupError)
    assert cat.groups() == [] and cat.members("web") == []
    cat.apply("b", tags("web"))
    assert cat.version("web") == 3  # versions never go back, even across emptiness


def test_bad_replicas_and_weight_fall_back_and_are_counted() -> None:
    cat = Catalog()
    for bad in ("abc", "", "-5", "0", "--5", "1e3", "99999999999999999"):
        cat.apply("a", tags("web", replicas=bad, weight="0"))
        svc = cat.members("web")[0]
        assert svc.replicas == DEFAULT_REPLICAS and svc.weight == 1
    assert cat.stats["bad_replicas"] == 7
    assert cat.stats["bad_weight"] == 7
    cat.apply("a", tags("web", replicas=" 128 ", weight="3"))
    svc = cat.members("web")[0]
    assert (svc.replicas, svc.weight) == (128, 3)
    assert cat.ring("web").nodes["a"] == RingNode(128, 3)


def test_ring_follows_replicas_and_weight_updates() -> None:
    cat = Catalog()
    cat.apply("a", tags("web", replicas="50"))
    cat.apply("b", tags("web", replicas="50"))
    ring1 = cat.ring("web")
    cat.apply("a", tags("web", "new-addr", replicas="50"))  # addr only: same ring object
    assert cat.ring("web") is ring1
    cat.apply("a", tags("web", replicas="50", weight="4"))
    shares = cat.ring("web").shares()
    assert shares["a"] > 0.6  # weight 4 of 5 points-units


def test_match_n_batch_and_consistency_with_ring() -> None:
    cat = Catalog(default_replicas=64)
    for i in range(5):
        cat.apply(f"s{i}", tags("web", f"10.0.0.{i}:80"))
    ring = Ring.build("consistent", {f"s{i}": RingNode(64) for i in range(5)})
    keys = [f"user-{i}" for i in range(200)]
    assert [s.id for s in cat.match_batch("web", keys)] == [ring.get(k) for k in keys]
    three = cat.match("web", "user-1", n=3)
    assert [s.id for s in three] == ring.get_n("user-1", 3)
    assert len(cat.match("web", "user-1", n=99)) == 5
    with pytest.raises(ValueError):
        cat.match("web", "user-1", n=0)
    assert isinstance(three[0], Service) and three[0].tags["group"] == "web"


def test_chash_go_answers_and_group_replicas_fixed_by_first_member() -> None:
    cat = Catalog(algorithm="chash")
    for i in (1, 2, 3):
        cat.apply(f"webservice-{i}", tags("webservice-group", replicas="10000"))
    got = [cat.match("webservice-group", f"user-id-{i}")[0].id for i in range(5)]
    assert got == ["webservice-2", "webservice-3", "webservice-3", "webservice-1", "webservice-1"]

    small = Catalog(algorithm="chash")
    small.apply("x", tags("g", replicas="20"))
    small.apply("y", tags("g", replicas="500"))  # ignored for placement, like Go
    assert small.ring("g").nodes["y"].replicas == 20
    small.apply("x", None)
    small.apply("y", None)
    small.apply("z", tags("g", replicas="500"))  # Go keeps the emptied group's replicas
    assert small.ring("g").nodes["z"].replicas == 20
    assert Catalog(algorithm="chash").default_replicas == 10000


def test_chash_members_replay_rebuilds_the_same_ring() -> None:
    # ids "1".."20" share points; which one owns a shared point depends on insert order.
    server = Catalog(algorithm="chash")
    for name in ["12", "2", "5", "11", "1", "20", "3"]:
        server.apply(name, tags("g", replicas="30"))
    server.apply("12", tags("g", "moved", replicas="30"))  # update: re-inserted last, like Go Upsert
    order = [s.id for s in server.members("g")]
    assert order == ["2", "5", "11", "1", "20", "3", "12"]
    client = Catalog(algorithm="chash")
    for s in server.members("g"):
        client.apply(s.id, dict(s.tags))
    keys = [f"user-{i}" for i in range(3000)]
    assert [s.id for s in client.match_batch("g", keys)] == [s.id for s in server.match_batch("g", keys)]
    # the order does matter on shared points ("1"+"12" == "11"+"2"): id order answers differently
    ring = server.ring("g")
    by_id = Ring.build("chash", {n: RingNode(30) for n in sorted(order)})
    assert any(ring.get(k) != by_id.get(k) for k in keys)


def test_listener_errors_are_counted_and_unsubscribe_works() -> None:
    cat = Catalog(default_replicas=8)

    def boom(change: GroupChange) -> None:
        raise RuntimeError("listener bug")

    cat.subscribe(boom)
    seen: list[GroupChange] = []
    unsubscribe = cat.subscribe(seen.append)
    cat.apply("a", tags("web"))
    assert cat.stats["listener_error"] == 1 and len(seen) == 1
    unsubscribe()
    cat.apply("b", tags("web"))
    assert len(seen) == 1 and cat.version("web") == 2


def test_a_change_rebuilds_only_its_own_group() -> None:
    cat = Catalog(default_replicas=32)
    cat.apply("a", tags("one"))
    cat.apply("b", tags("two"))
    two = cat.ring("two")
    cat.apply("c", tags("one"))
    cat.apply("a", None)
    assert cat.ring("two") is two and cat.version("two") == 1


def test_unknown_algorithm() -> None:
    with pytest.raises(ValueError):
        Catalog(algorithm="md5")


def test_concurrent_readers_during_joins_and_leaves() -> None:
    cat = Catalog(default_replicas=200)
    permanent = [f"svc-{i}" for i in range(5)]
    temporary = [f"tmp-{i}" for i in range(3)]
    for name in permanent:
        cat.apply(name, tags("web"))
    allowed = set(permanent) | set(temporary)

    def read() -> None:
        for i in range(50):
            svc = cat.match("web", f"k{i}")[0]
            assert svc.id in allowed
            batch = cat.match_batch("web", [f"k{i}", f"j{i}"])
            assert len(batch) == 2

    def write() -> None:
        for _ in range(10):
            for name in temporary:
                cat.apply(name, tags("web"))
            for name in temporary:
                cat.apply(name, None)

    reads_during(read, write)
    assert cat.version("web") == 5 + 60


@pytest.mark.parametrize("algorithm", ["consistent", "chash"])
def test_apply_many_equals_one_by_one(algorithm: str) -> None:
    import random

    rnd = random.Random(3)
    names = [str(i) for i in range(1, 25)]  # chash: shared points make order visible
    keys = [f"user-{i}" for i in range(400)]
    one = Catalog(algorithm=algorithm, default_replicas=24)
    many = Catalog(algorithm=algorithm, default_replicas=24)
    seen: list[GroupChange] = []
    many.subscribe(seen.append)
    for round_no in range(8):
        size = 3 if round_no == 0 else rnd.randint(1, 12)
        updates: list[tuple[str, dict[str, str] | None]] = []
        if round_no == 0:  # a whole group at once: the bulk path
            updates.extend((name, tags("g1", "start")) for name in rnd.sample(names, len(names)))
        for _ in range(size):
            name = rnd.choice(names)
            roll = rnd.random()
            if roll < 0.2:
                updates.append((name, None))
            elif roll < 0.25:
                updates.append((name, {"role": "no group"}))
            else:
                group = rnd.choice(["g1", "g2"])
                extra = {"weight": rnd.choice(["1", "2", "bad"])} if algorithm == "consistent" else {}
                updates.append((name, tags(group, f"a{rnd.randint(0, 2)}", **extra)))
        before = {g: many.version(g) for g in ("g1", "g2")}
        for name, t in updates:
            one.apply(name, t)
        mark = len(seen)
        many.apply_many(updates)
        for change in seen[mark:]:
            assert change.version == before[change.group] + 1  # one version per group per batch
        assert one.groups() == many.groups()
        for g in one.groups():
            assert one.members(g) == many.members(g)
            assert dict(one.ring(g).nodes) == dict(many.ring(g).nodes)
            assert [s.id for s in one.match_batch(g, keys)] == [s.id for s in many.match_batch(g, keys)]
        for name in names:
            assert one.group_of(name) == many.group_of(name)
    assert one.stats == many.stats


def test_apply_many_change_lists() -> None:
    cat = Catalog(default_replicas=16)
    cat.apply("a", tags("web"))
    cat.apply("b", tags("web"))
    seen = record(cat)
    cat.apply_many([("a", None), ("c", tags("web")), ("b", tags("web", "new")), ("d", tags("api"))])
    by_group = {c.group: c for c in seen}
    web = by_group["web"]
    assert ([s.id for s in web.added], [s.id for s in web.removed], [s.id for s in web.updated]) == (
        ["c"],
        ["a"],
        ["b"],
    )
    assert web.version == 3 and by_group["api"].version == 1
    cat.apply_many([("c", None), ("c", tags("web"))])  # net no change: no event
    assert len(seen) == 2


_tag_values = st.one_of(st.text(max_size=12), st.sampled_from(["0", "1", "-1", "10000", "65", "64", " 7 ", "1_0"]))


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "c", "d"]),
            st.one_of(
                st.none(),
                st.dictionaries(
                    st.sampled_from(["group", "addr", "replicas", "weight", "other"]),
                    _tag_values,
                    max_size=5,
                ),
            ),
        ),
        max_size=25,
    )
)
def test_apply_never_raises_and_keeps_invariants(updates: list[tuple[str, dict[str, str] | None]]) -> None:
    cat = Catalog(default_replicas=8)
    for name, t in updates:
        cat.apply(name, t)
    for g in cat.groups():
        members = cat.members(g)
        assert members and all(s.group == g and cat.group_of(s.id) == g for s in members)
        assert set(cat.ring(g).nodes) == {s.id for s in members}
        assert all(1 <= s.weight <= 64 and s.replicas >= 1 for s in members)
        assert cat.match(g, "key")[0] in members
