"""Catalog with TTL services (issue 15): both kinds in one group, keys, shadowing, rings, health, batches."""

from __future__ import annotations

import random

import pytest

from registry.catalog import Catalog, GroupChange, ServiceKind, UnknownGroup
from registry.ring import Ring, RingNode
from registry.ttl.entry import Entry, entry_tags

GOSSIP, TTL = ServiceKind.GOSSIP, ServiceKind.TTL


def tags(group: str, addr: str = "", **extra: str) -> dict[str, str]:
    return {"group": group, "addr": addr, **extra}


def ttl_tags(group: str, id_: str, addr: str, **extra: str) -> dict[str, str]:
    """What the TTL driver hands the catalog: `entry_tags` of the entry."""
    return entry_tags(Entry(group, id_, addr, tags=extra, written_ms=1, writer="r1"))


def record(catalog: Catalog) -> list[GroupChange]:
    seen: list[GroupChange] = []
    catalog.subscribe(seen.append)
    return seen


def kinds(cat: Catalog, group: str) -> dict[str, tuple[ServiceKind, str]]:
    return {s.id: (s.kind, s.addr) for s in cat.members(group)}


def test_both_kinds_in_one_group_and_removal() -> None:
    cat = Catalog(default_replicas=32)
    seen = record(cat)
    cat.apply("a", tags("web", "10.0.0.1:80"))
    cat.apply_ttl([("web", "b", ttl_tags("web", "b", "10.0.0.2:80"))])
    assert kinds(cat, "web") == {"a": (GOSSIP, "10.0.0.1:80"), "b": (TTL, "10.0.0.2:80")}
    assert seen[-1].added[0].kind is TTL and seen[-1].version == cat.version("web") == 2
    owners = {s.id for k in range(200) for s in cat.match("web", f"k{k}")}
    assert owners == {"a", "b"}
    assert not cat.holds_gossip("web", "b") and cat.holds_gossip("web", "a") and not cat.holds_gossip("api", "a")
    cat.apply_ttl([("web", "b", ttl_tags("web", "b", "10.0.0.3:80"))])  # a refresh with a new addr
    assert seen[-1].updated[0].addr == "10.0.0.3:80" and seen[-1].updated[0].kind is TTL
    cat.apply_ttl([("web", "b", ttl_tags("web", "b", "10.0.0.3:80"))])  # the same again: no change
    assert cat.version("web") == 3
    cat.apply_ttl([("web", "b", None)])
    assert seen[-1].removed[0].id == "b" and seen[-1].version == 4
    assert kinds(cat, "web") == {"a": (GOSSIP, "10.0.0.1:80")}
    cat.apply_ttl([("web", "b", None), ("web", "nobody", None)])  # unknown removals: nothing
    assert cat.version("web") == 4
    cat.apply("a", None)
    assert cat.groups() == []
    with pytest.raises(UnknownGroup):
        cat.match("web", "k")


def test_a_ttl_service_is_keyed_by_group_and_id() -> None:
    """web/1 and api/1 are two services; a gossiping member "1" in a third group touches neither."""
    cat = Catalog(default_replicas=16)
    cat.apply_ttl([("web", "1", ttl_tags("web", "1", "w:1")), ("api", "1", ttl_tags("api", "1", "a:1"))])
    cat.apply("1", tags("db", "d:1"))
    assert kinds(cat, "web") == {"1": (TTL, "w:1")}
    assert kinds(cat, "api") == {"1": (TTL, "a:1")}
    assert kinds(cat, "db") == {"1": (GOSSIP, "d:1")}
    cat.apply_ttl([("web", "1", None)])
    assert cat.groups() == ["api", "db"]
    assert cat.group_of("1") == "db"


@pytest.mark.parametrize("algorithm", ["consistent", "chash"])
def test_shadowing_both_ways(algorithm: str) -> None:
    cat = Catalog(algorithm=algorithm, default_replicas=16)
    cat.apply("other", tags("web", "o:1"))
    # a TTL entry first, then a gossiping member of the same name joins the group: it wins
    cat.apply_ttl([("web", "x", ttl_tags("web", "x", "ttl:1"))])
    assert kinds(cat, "web")["x"] == (TTL, "ttl:1")
    cat.apply("x", tags("web", "gossip:1"))
    assert kinds(cat, "web")["x"] == (GOSSIP, "gossip:1") and cat.stats["ttl_shadowed"] == 1
    cat.apply_ttl([("web", "x", ttl_tags("web", "x", "ttl:2"))])  # a refresh while aside: still aside
    assert kinds(cat, "web")["x"] == (GOSSIP, "gossip:1") and cat.stats["ttl_shadowed"] == 1
    # the member leaves: the TTL entry (its latest write) takes the id
    cat.apply("x", None)
    assert kinds(cat, "web")["x"] == (TTL, "ttl:2")
    assert dict(cat.ring("web").nodes).keys() == {"other", "x"}
    # it returns: aside again; it moves to another group: back again
    cat.apply("x", tags("web", "gossip:2"))
    assert kinds(cat, "web")["x"] == (GOSSIP, "gossip:2") and cat.stats["ttl_shadowed"] == 2
    cat.apply("x", tags("api", "gossip:2"))
    assert kinds(cat, "web")["x"] == (TTL, "ttl:2") and kinds(cat, "api") == {"x": (GOSSIP, "gossip:2")}
    # a TTL write of a name a gossiping member holds: held aside, counted; removed while aside: nothing left
    cat.apply_ttl([("api", "x", ttl_tags("api", "x", "ttl:3"))])
    assert kinds(cat, "api") == {"x": (GOSSIP, "gossip:2")} and cat.stats["ttl_shadowed"] == 3
    assert cat.holds_gossip("api", "x") and not cat.holds_gossip("web", "x")
    cat.apply_ttl([("api", "x", None)])
    cat.apply("x", None)
    assert cat.members("api") == [] and kinds(cat, "web")["x"] == (TTL, "ttl:2")


def test_a_member_joining_and_leaving_in_one_batch_with_ttl_writes() -> None:
    cat = Catalog(default_replicas=16)
    seen = record(cat)
    cat.apply_ttl([("web", "x", ttl_tags("web", "x", "ttl:1"))])
    cat.apply_many([("x", tags("web", "g:1")), ("x", None)])  # in and out: the TTL one stays
    assert kinds(cat, "web") == {"x": (TTL, "ttl:1")}
    assert len(seen) == 1 and cat.version("web") == 1  # nothing changed: no version
    assert cat.stats["ttl_shadowed"] == 1 and not cat.holds_gossip("web", "x")


def model_members(gossip: dict[str, dict[str, str]], ttl: dict[tuple[str, str], dict[str, str]],
                  group: str) -> dict[str, tuple[ServiceKind, dict[str, str]]]:
    """The rule, written plainly: a group's gossiping members, and its TTL entries whose id no
    gossiping member of the group holds."""
    out = {n: (GOSSIP, t) for n, t in gossip.items() if t["group"] == group}
    for (g, i), t in ttl.items():
        if g == group and i not in out:
            out[i] = (TTL, t)
    return out


def test_random_interleavings_match_the_rule_and_the_ring_is_the_nodes_ring() -> None:
    """Random gossip and TTL updates (singly and in batches, shadowing included): members and kinds are
    what the rule says, and each ring equals `Ring.build` of the routed members' nodes (the same ring
    a catalog of only gossiping members with those tags has), so Match answers alike."""
    rnd = random.Random(15)
    names = [f"n{i}" for i in range(8)]
    groups = ["g1", "g2"]
    keys = [f"key-{i}" for i in range(200)]
    cat = Catalog(default_replicas=24)
    gossip: dict[str, dict[str, str]] = {}
    ttl: dict[tuple[str, str], dict[str, str]] = {}
    for _ in range(150):
        g_updates: list[tuple[str, dict[str, str] | None]] = []
        t_updates: list[tuple[str, str, dict[str, str] | None]] = []
        for _ in range(rnd.randint(1, 4)):
            name, group = rnd.choice(names), rnd.choice(groups)
            extra = {"weight": rnd.choice(["1", "2"])}
            if rnd.random() < 0.3:
                extra["health"] = rnd.choice(["passing", "warning", "critical"])
            if rnd.random() < 0.5:
                t = tags(group, f"g-{name}", **extra) if rnd.random() < 0.7 else None
                g_updates.append((name, t))
                if t is None:
                    gossip.pop(name, None)
                else:
                    gossip[name] = t
            else:
                tt = ttl_tags(group, name, f"t-{name}", **extra) if rnd.random() < 0.7 else None
                t_updates.append((group, name, tt))
                if tt is None:
                    ttl.pop((group, name), None)
                else:
                    ttl[(group, name)] = tt
        cat.apply_many(g_updates)
        cat.apply_ttl(t_updates)
        for group in groups:
            want = model_members(gossip, ttl, group)
            assert {s.id: (s.kind, dict(s.tags)) for s in cat.members(group)} == want
            if not want:
                continue
            routed = {i: RingNode(24, int(t["weight"])) for i, (_, t) in want.items() if t.get("health") != "critical"}
            ring = Ring.build("consistent", routed)
            assert dict(cat.ring(group).nodes) == routed
            if routed:
                assert [s.id for s in cat.match_batch(group, keys)] == [ring.get(k) for k in keys]
            # the same tags as gossiping members only: the same ring and answers
            alone = Catalog(default_replicas=24)
            alone.apply_many([(i, t) for i, (_, t) in want.items()])
            assert dict(alone.ring(group).nodes) == routed
            if routed:
                assert [s.id for s in alone.match_batch(group, keys)] == [s.id for s in cat.match_batch(group, keys)]


def test_health_tags_on_a_ttl_service_route_as_on_a_gossiping_one() -> None:
    cat = Catalog(default_replicas=32)
    cat.apply("a", tags("web", "a:1"))
    cat.apply_ttl([("web", "b", ttl_tags("web", "b", "b:1", health="critical", health_note="db down")),
                   ("web", "c", ttl_tags("web", "c", "c:1", health="warning"))])
    by_id = {s.id: s for s in cat.members("web")}
    assert by_id["b"].health.word == "critical" and by_id["b"].health_note == "db down"
    assert dict(cat.ring("web").nodes).keys() == {"a", "c"}  # critical is off the ring, warning on it
    assert {s.id for k in range(100) for s in cat.match("web", f"k{k}")} == {"a", "c"}
    strict = Catalog(default_replicas=32, only_passing=True)
    strict.apply_ttl([("web", "c", ttl_tags("web", "c", "c:1", health="warning"))])
    with pytest.raises(UnknownGroup, match="1 warning"):
        strict.match("web", "k")
    cat.apply_ttl([("web", "b", ttl_tags("web", "b", "b:1"))])  # recovered: back on the ring
    assert dict(cat.ring("web").nodes).keys() == {"a", "b", "c"}
    assert cat.health_changes["passing"] == 1


def test_apply_ttl_batches_give_one_version_per_group() -> None:
    cat = Catalog(default_replicas=16)
    seen = record(cat)
    cat.apply("g", tags("web", "g:1"))
    cat.apply_ttl([(grp, f"s{i}", ttl_tags(grp, f"s{i}", f"a{i}")) for i in range(40) for grp in ("web", "api")])
    assert [(c.group, c.version, len(c.added)) for c in seen[1:]] == [("web", 2, 40), ("api", 1, 40)]
    cat.apply_ttl([("web", "s1", None), ("web", "s2", None), ("api", "s3", ttl_tags("api", "s3", "new"))])
    assert [(c.group, c.version, len(c.removed), len(c.updated)) for c in seen[3:]] == [("web", 3, 2, 0),
                                                                                       ("api", 2, 0, 1)]
    assert cat.stats["ttl_shadowed"] == 0


async def test_the_servers_reconcile_keeps_ttl_services() -> None:
    """The server's reconcile (every second at the fast profile) makes the catalog agree with Serf's member
    table: it must leave TTL services alone (they are in no member table), and still repair gossip ones."""
    from registry.server import RegistryServer
    from registry.server_config import ServerConfig

    server = RegistryServer(ServerConfig(id="r1", bind=("127.0.0.1", 0), addr=("127.0.0.1", 0), profile="fast"))
    await server.start()
    try:
        cat = server.catalog
        cat.apply_ttl([("web", "t1", ttl_tags("web", "t1", "10.0.0.1:80"))])
        cat.apply("ghost", tags("web", "10.0.0.2:80"))  # a gossip member Serf does not have: a dropped leave
        server._reconcile()
        assert kinds(cat, "web") == {"t1": (TTL, "10.0.0.1:80")}
        assert [s.id for s in cat.members("registry-group")] == ["r1"]
    finally:
        await server.stop()


def test_a_refresh_that_changes_nothing_costs_the_same_in_a_large_group() -> None:
    """Every TTL refresh reaches the catalog (10,000 services refreshed every 10 s: 1,000 a second), and
    most change nothing: that must not cost a copy or a comparison of the whole group. A ratio of two
    timings on the same machine, best of several (the machine is shared), not an absolute figure; it
    was ~400x (every service compared on each commit) before batches kept what they touched."""
    import time

    def cost(size: int) -> float:
        cat = Catalog(default_replicas=1)
        updates = [ttl_tags("g", f"s{i}", f"10.0.0.{i % 250}:80") for i in range(size)]
        cat.apply_ttl([("g", f"s{i}", t) for i, t in enumerate(updates)])
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            for i in range(100):
                cat.apply_ttl([("g", f"s{i % size}", updates[i % size])])
            best = min(best, time.perf_counter() - start)
        assert cat.version("g") == 1
        return best

    small, large = cost(10), cost(4000)
    assert large < 10 * small, (small, large)
