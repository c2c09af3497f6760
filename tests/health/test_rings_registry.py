"""Health decides the rings, through real registries (issue 14, items 2 and 3).

Two `registry` processes on loopback (r1: native front, default; r2: grpcio front, -only-passing) and
ten services in one group: nine `Register`s that publish their health with `Register.set_tags` (as
the service's checks do) and one Go-style member (a Serf node whose tags carry no health, as a Go
service's). Through passing -> critical -> passing, MatchBatch of 10,000 keys on both registries and
on a caching client (its ring fed by Watch) gives identical answers: exactly the critical service's
keys move, each to the owner the ring without it gives, and all come back. Warning stays on r1's
rings and off r2's. Members(all) and `registry members` say each service's health and why.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import grpc
import pytest

from registry.client import RpcClient
from registry.compat import rpcserver_pb2 as compat_pb
from registry.compat import rpcserver_pb2_grpc as compat_grpc
from registry.healthtags import Health, health_tags
from registry.memberlist.config import Config
from registry.metrics import render
from registry.register import Register
from registry.ring import Ring, RingNode
from registry.serf.agent import SerfAgent
from registry.serf.config import SerfConfig
from registry.serf.threaded import ThreadedSerf
from registry.server import RegistryServer, ServerConfig
from registry.v1 import registry_pb2 as pb
from registry.v1 import registry_pb2_grpc as pb_grpc
from tests.e2e.helpers import TOLERANT, Registry, env, procs, registry_cmd, wait_for
from tests.gonode import GoNode, gonode  # noqa: F401  (gonode: the fixture)
from tests.waiting import aeventually

GROUP = "shop"
KEYS = [f"user-{i}" for i in range(10_000)]
VICTIM = "svc-3"
GO_STYLE = "go-svc"


@dataclass
class Pool:
    r1: Registry  # default: warning stays on the rings
    r2: Registry  # -only-passing, grpcio front
    services: dict[str, Register]
    cache1: RpcClient  # caching client of r1
    cache2: RpcClient  # caching client of r2


def _members(rpc: str, all: bool = False) -> dict[str, pb.Service]:
    """Members as the registry sends them (ring parameters included), by id."""
    with grpc.insecure_channel(rpc) as ch:
        stub = pb_grpc.RegistryStub(ch)  # type: ignore[no-untyped-call]
        return {s.id: s for s in stub.Members(pb.MembersRequest(group=GROUP, all=all), timeout=10).services}


def _healths(rpc: str) -> dict[str, tuple[str, str]]:
    return {k: (s.health, s.health_note) for k, s in _members(rpc).items()}


def _owners(rpc: str) -> list[str]:
    with RpcClient(rpc, timeout=10) as c:
        return [s.id for s in c.match_batch(GROUP, KEYS)]


def _compat(rpc: str) -> tuple[set[str], bool]:
    """(ids Members lists, whether Match returned VICTIM for one of 200 keys) on the Go-compatible API."""
    with grpc.insecure_channel(rpc) as ch:
        stub = compat_grpc.RStub(ch)  # type: ignore[no-untyped-call]
        ids = {m.id for m in stub.Members(compat_pb.MembersRequest(group=GROUP), timeout=10).services}
        hit = any(stub.Match(compat_pb.MatchRequest(group=GROUP, key=k), timeout=10).id == VICTIM for k in KEYS[:200])
    return ids, hit


def _cached(c: RpcClient) -> list[str]:
    return [s.id for s in c.match_batch(GROUP, KEYS)]


def _cache_says(c: RpcClient, owners: list[str]) -> bool:
    return _cached(c) == owners


def _health_is(rpc: str, name: str, want: tuple[str, str]) -> bool:
    return _healths(rpc).get(name) == want


def _lists_all(rpc: str) -> bool:
    return set(_members(rpc)) == _all_ids()


def _all_ids() -> set[str]:
    return {f"svc-{i}" for i in range(9)} | {GO_STYLE}


def _ring_without(rpc: str, gone: str) -> list[str]:
    """Owners on a ring built here, from scratch, of the registry's members minus `gone`, with the
    ring parameters the registry reports."""
    nodes = {k: RingNode(s.replicas, s.weight) for k, s in _members(rpc).items() if k != gone}
    return Ring.build("consistent", nodes).get_many(KEYS)


def _set_health(pool: Pool, name: str, health: Health, note: str = "") -> None:
    pool.services[name].set_tags(health_tags(health, note))
    want = (health.word, note if health is not Health.PASSING else "")
    for r in (pool.r1, pool.r2):
        wait_for(partial(_health_is, r.rpc, name, want), 30, what=f"{r.id}: {name} {want}")


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    tmp = tmp_path_factory.mktemp("rings")
    with procs() as ps:
        r1 = Registry(ps, tmp, "r1", profile=TOLERANT)
        r2 = Registry(ps, tmp, "r2", [r1.gossip], "-only-passing", "-rpc-engine", "grpcio", profile=TOLERANT)
        services: dict[str, Register] = {}
        go = ThreadedSerf(SerfConfig(name=GO_STYLE, tags={"group": GROUP, "addr": "127.0.0.1:7299"},
                                     memberlist=Config.lan(bind_addr="127.0.0.1", bind_port=0)))
        go.start()
        try:
            go.join([r1.gossip], 30)
            for i in range(9):
                reg = services[f"svc-{i}"] = Register(f"svc-{i}", "127.0.0.1:0", "", r1.gossip, GROUP,
                                                       f"127.0.0.1:{7200 + i}", replicas=256, profile=TOLERANT)
                reg.start()
            for r in (r1, r2):
                wait_for(partial(_lists_all, r.rpc), 60, what=f"{r.id}: 10 services")
            with RpcClient(r1.rpc, timeout=10, cache=True) as cache1, \
                    RpcClient(r2.rpc, timeout=10, cache=True) as cache2:
                yield Pool(r1, r2, services, cache1, cache2)
        finally:
            for reg in services.values():
                reg.stop()
            go.shutdown()


def test_critical_moves_exactly_its_keys_on_both_registries_and_the_cache_and_back(pool: Pool) -> None:
    before = _owners(pool.r1.rpc)
    assert _owners(pool.r2.rpc) == before and before.count(VICTIM) > 0
    for c in (pool.cache1, pool.cache2):
        wait_for(partial(_cache_says, c, before), 30, what="the caches agree with the registries")
    expected = _ring_without(pool.r1.rpc, VICTIM)
    try:
        _set_health(pool, VICTIM, Health.CRITICAL, "db: connection refused")
        for r in (pool.r1, pool.r2):
            after = _owners(r.rpc)
            assert after == expected, r.id
            assert all(a in (b, VICTIM) for a, b in zip(before, after))
            with RpcClient(r.rpc, timeout=10) as c:
                ten = [s.id for s in c.match(GROUP, "user-7", 10)]  # every owner, in ring order: nine
                assert len(ten) == 9 and set(ten) == _all_ids() - {VICTIM}
                assert VICTIM not in {s.id for k in KEYS[:100] for s in c.match(GROUP, k, 3)}
                assert {s.id: s.health for s in c.members(GROUP)}[VICTIM] == "critical"  # still a member
            assert _compat(r.rpc) == (_all_ids() - {VICTIM}, False)  # a Go client sees no health: left out
        for c in (pool.cache1, pool.cache2):
            wait_for(partial(_cache_says, c, expected), 30, what="the caches drop the critical service")
            three = [[s.id for s in c.match(GROUP, k, 3)] for k in KEYS[:100]]
            with RpcClient(pool.r1.rpc, timeout=10) as direct:
                assert three == [[s.id for s in direct.match(GROUP, k, 3)] for k in KEYS[:100]]
    finally:
        _set_health(pool, VICTIM, Health.PASSING)
    assert _owners(pool.r1.rpc) == _owners(pool.r2.rpc) == before
    for c in (pool.cache1, pool.cache2):
        wait_for(partial(_cache_says, c, before), 30, what="the caches take the service back")


def test_warning_stays_on_the_rings_of_a_default_registry_and_leaves_those_of_an_only_passing_one(
        pool: Pool) -> None:
    before = _owners(pool.r1.rpc)
    without = _ring_without(pool.r1.rpc, VICTIM)
    try:
        _set_health(pool, VICTIM, Health.WARNING, "p99 latency 2 s")
        assert _owners(pool.r1.rpc) == before
        assert _owners(pool.r2.rpc) == without
        wait_for(lambda: _cached(pool.cache2) == without, 30, what="r2's cache drops the warning service")
        assert _cached(pool.cache1) == before  # r1's cache kept it all along (and was told of the change)
        with RpcClient(pool.r1.rpc, timeout=10) as c:
            assert {s.id: (s.health, s.health_note) for s in c.members(GROUP)}[VICTIM] == (
                "warning", "p99 latency 2 s")
    finally:
        _set_health(pool, VICTIM, Health.PASSING)
    wait_for(lambda: _cached(pool.cache2) == before, 30, what="r2's cache takes it back")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(registry_cmd(*args), check=False, capture_output=True, text=True, env=env(), timeout=60)


def test_members_all_and_registry_members_show_health_and_note(pool: Pool) -> None:
    note = "GET /health: 500, db down"
    try:
        _set_health(pool, VICTIM, Health.CRITICAL, note)
        for r in (pool.r1, pool.r2):
            every = _members(r.rpc, all=True)
            assert (every[VICTIM].health, every[VICTIM].health_note, every[VICTIM].status) == (
                "critical", note, "alive")
            assert every[VICTIM].replicas == 256  # the ring parameters it gets back in with
            assert (every[GO_STYLE].health, every[GO_STYLE].health_note) == ("passing", "")  # no tag: passing
            assert {s.health for k, s in every.items() if k != VICTIM} == {"passing"}
        out = _cli("members", "-rpc", pool.r1.rpc, "-group", GROUP)
        assert out.returncode == 0 and out.stderr == "", out
        rows = {ln.split()[0]: ln for ln in out.stdout.splitlines()}
        assert set(rows) == _all_ids(), out.stdout
        for name, line in rows.items():
            cols = line.split()  # ID GROUP ADDR STATUS HEALTH KIND TAGS [note="..."]
            assert cols[3:5] == ["alive", "critical" if name == VICTIM else "passing"], line
            assert "health" not in cols[6], line  # the health tags are the HEALTH column and the note
        assert rows[VICTIM].endswith("  note=" + json.dumps(note)), rows[VICTIM]
        assert "note=" not in rows[GO_STYLE]
        only = _cli("members", "-rpc", pool.r2.rpc, "-health", "critical")
        assert only.returncode == 0 and [ln.split()[0] for ln in only.stdout.splitlines()] == [VICTIM], only
        bad = _cli("members", "-rpc", pool.r1.rpc, "-health", "sick")
        assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "-health" in bad.stderr, bad
    finally:
        _set_health(pool, VICTIM, Health.PASSING)


def test_match_says_why_when_no_service_of_a_group_is_on_its_ring(tmp_path: Path) -> None:
    """One service, critical: Members lists it, Match is NOT_FOUND saying how healthy the group is."""
    with procs() as ps:
        r = Registry(ps, tmp_path, "solo", profile=TOLERANT)
        reg = Register("lonely", "127.0.0.1:0", "", r.gossip, "solo-group", "127.0.0.1:7300", replicas=16,
                       profile=TOLERANT)
        reg.start()
        try:
            reg.set_tags(health_tags(Health.CRITICAL, "disk full"))
            wait_for(lambda: r.ids("solo-group") == {"lonely"} and _critical(r.rpc), 30, what="lonely critical")
            out = _cli("match", "-rpc", r.rpc, "solo-group", "k1")
            assert out.returncode == 1 and "'solo-group' has no passing or warning member (1 critical)" in out.stderr
        finally:
            reg.stop()


def _critical(rpc: str) -> bool:
    with RpcClient(rpc, timeout=10) as c:
        return [s.health for s in c.members("solo-group")] == ["critical"]


async def test_watch_and_metrics_follow_a_health_change() -> None:
    """An in-process registry and a Serf service on loopback: the Watch stream's update carries
    the new health, and the metrics count services by health and the change."""
    server = RegistryServer(ServerConfig(id="r-metrics", bind=("127.0.0.1", 0), addr=("127.0.0.1", 0),
                                         profile=TOLERANT))
    await server.start()
    svc = SerfAgent(SerfConfig(name="svc", tags={"group": GROUP, "addr": "127.0.0.1:7400"},
                               memberlist=Config.lan(bind_addr="127.0.0.1", bind_port=0)))
    try:
        await svc.start()
        await svc.join([server.gossip_address])
        await aeventually(lambda: [s.id for s in server.catalog.members(GROUP)] == ["svc"], 30, "svc known")
        async with grpc.aio.insecure_channel(server.grpc_address) as ch:
            stub = pb_grpc.RegistryStub(ch)  # type: ignore[no-untyped-call]
            stream = stub.Watch(pb.WatchRequest(group=GROUP), timeout=30)
            snapshot = await stream.read()
            assert [(s.id, s.health) for s in snapshot.services] == [("svc", "passing")]
            assert snapshot.ring.only_passing is False
            await svc.set_tags({"group": GROUP, "addr": "127.0.0.1:7400", **health_tags(Health.CRITICAL, "boom")})
            update = await asyncio.wait_for(stream.read(), 30)
            assert [(s.id, s.health, s.health_note) for s in update.updated] == [("svc", "critical", "boom")]
            assert update.version == snapshot.version + 1
            stream.cancel()
        text = render(server._collect())
        assert f'registry_services{{group="{GROUP}",health="critical"}} 1' in text
        assert f'registry_services{{group="{GROUP}",health="passing"}} 0' in text
        assert 'registry_health_changes_total{health="critical"} 1' in text
    finally:
        await svc.shutdown()
        await server.close()


def test_gonode_member_without_the_tag_is_passing_and_routed(pool: Pool, gonode: Callable[..., GoNode]) -> None:
    """A real Go Serf node (serf v0.10.2) in the pool with a service's tags and no health tag."""
    gonode("go-real", tags={"group": "go-group", "addr": "127.0.0.1:7500"}, join=[pool.r1.gossip])
    wait_for(partial(_go_routed, pool.r1.rpc), 30, what="the Go node routed")


def _go_routed(rpc: str) -> bool:
    with RpcClient(rpc, timeout=10) as c:
        every = c.members("go-group", all=True)
        return [(s.id, s.health) for s in every] == [("go-real", "passing")] and \
            c.match("go-group", "k").id == "go-real"
