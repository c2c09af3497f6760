"""TTL services through the gRPC API (issue 15): every answer says each service's kind, on both fronts
(native and grpcio), and the clients (sync, asyncio, cached) hand it out."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc.aio
import pytest

from registry.catalog import Catalog, ServiceKind
from registry.client import AsyncRpcClient, RpcClient
from registry.ttl.entry import Entry, entry_tags
from registry.v1 import registry_pb2 as pb
from registry.v1 import registry_pb2_grpc as pb_grpc
from tests.registry.rpc_fixtures import ENGINES, AnyServer, ServerThread, async_wait_for, start_server, tags, wait_for

KEYS = [f"user-{i}" for i in range(200)]


def ttl(group: str, id_: str, addr: str, **extra: str) -> tuple[str, str, dict[str, str]]:
    return (group, id_, entry_tags(Entry(group, id_, addr, tags=extra, replicas=40, written_ms=1, writer="r1")))


def mixed(catalog: Catalog) -> Catalog:
    """web: gossiping g1, g2 and TTL t1, t2 (t2 critical); api: TTL x only."""
    catalog.apply_many([("g1", tags("web", "10.0.0.1:80")), ("g2", tags("web", "10.0.0.2:80"))])
    catalog.apply_ttl([ttl("web", "t1", "10.0.1.1:80"), ttl("web", "t2", "10.0.1.2:80", health="critical"),
                       ttl("api", "x", "10.0.2.1:80")])
    return catalog


def kind_of(id_: str) -> str:
    return "ttl" if id_.startswith(("t", "x")) else "gossip"


@pytest.fixture(params=ENGINES)
async def served(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Catalog, AnyServer, pb_grpc.RegistryStub]]:
    catalog = mixed(Catalog())
    server = await start_server(catalog, request.param)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield catalog, server, pb_grpc.RegistryStub(channel)  # type: ignore[no-untyped-call]
    await server.stop(None)


async def test_match_and_members_say_the_kind(served: tuple[Catalog, AnyServer, pb_grpc.RegistryStub]) -> None:
    catalog, _, stub = served
    seen: set[tuple[str, str]] = set()
    for key in KEYS[:60]:
        for s in (await stub.Match(pb.MatchRequest(group="web", key=key, n=3))).services:
            seen.add((s.id, s.kind))
    batch = (await stub.MatchBatch(pb.MatchBatchRequest(group="web", keys=KEYS))).services
    seen |= {(s.id, s.kind) for s in batch}
    assert seen == {("g1", "gossip"), ("g2", "gossip"), ("t1", "ttl")}  # t2 is critical: off the ring
    assert [s.id for s in batch] == [s.id for s in catalog.match_batch("web", KEYS)]
    members = (await stub.Members(pb.MembersRequest(group="web"))).services
    assert [(s.id, s.kind, s.health, s.status) for s in members] == [
        ("g1", "gossip", "passing", ""), ("g2", "gossip", "passing", ""),
        ("t1", "ttl", "passing", ""), ("t2", "ttl", "critical", "")]
    assert all(s.replicas == 40 for s in members)


async def test_members_all_lists_ttl_services_as_alive(served: tuple[Catalog, AnyServer, pb_grpc.RegistryStub]) -> None:
    """Without a member table (a bare catalog) and with one (a registry's Serf table: TTL services are not in it)."""
    _, server, stub = served
    rows = (await stub.Members(pb.MembersRequest(group="", all=True))).services
    assert [(s.group, s.id, s.kind, s.status) for s in rows] == [
        ("api", "x", "ttl", "alive"), ("web", "g1", "gossip", "alive"), ("web", "g2", "gossip", "alive"),
        ("web", "t1", "ttl", "alive"), ("web", "t2", "ttl", "alive")]
    table = [("g1", tags("web", "10.0.0.1:80"), "alive"), ("gone", tags("web", "10.0.0.9:80"), "failed"),
             ("r1", {"role": "registry"}, "alive")]
    server.core.member_table = lambda: table
    rows = (await stub.Members(pb.MembersRequest(group="web", all=True))).services
    assert [(s.id, s.kind, s.status, s.replicas > 0) for s in rows] == [
        ("g1", "gossip", "alive", True), ("gone", "gossip", "failed", False),
        ("t1", "ttl", "alive", True), ("t2", "ttl", "alive", True)]


async def test_a_gossip_row_is_not_given_a_ttl_entry_of_its_name(
        served: tuple[Catalog, AnyServer, pb_grpc.RegistryStub]) -> None:
    """A member the table says is alive whose catalog entry of that id is still a TTL one (its join not
    applied yet): the row is the gossiping member's, the TTL service listed beside it."""
    _, server, stub = served
    server.core.member_table = lambda: [("t1", tags("web", "10.9.9.9:1"), "alive")]
    rows = (await stub.Members(pb.MembersRequest(group="web", all=True))).services
    assert sorted((s.id, s.kind, s.addr) for s in rows) == [
        ("t1", "gossip", "10.9.9.9:1"), ("t1", "ttl", "10.0.1.1:80"), ("t2", "ttl", "10.0.1.2:80")]


async def test_watch_says_the_kind(served: tuple[Catalog, AnyServer, pb_grpc.RegistryStub]) -> None:
    catalog, server, stub = served
    call = stub.Watch(pb.WatchRequest(group="web"))
    first = await call.read()
    assert first.snapshot and {(s.id, s.kind) for s in first.services} == {
        ("g1", "gossip"), ("g2", "gossip"), ("t1", "ttl"), ("t2", "ttl")}
    catalog.apply_ttl([ttl("web", "t3", "10.0.1.3:80")])
    ev = await call.read()
    assert [(s.id, s.kind) for s in ev.added] == [("t3", "ttl")] and ev.version == catalog.version("web")
    catalog.apply("t3", tags("web", "10.0.0.3:80"))  # a gossiping member takes the id: the TTL one aside
    ev = await call.read()
    assert [(s.id, s.kind, s.addr) for s in ev.updated] == [("t3", "gossip", "10.0.0.3:80")]
    catalog.apply("t3", None)
    ev = await call.read()
    assert [(s.id, s.kind, s.addr) for s in ev.updated] == [("t3", "ttl", "10.0.1.3:80")]
    catalog.apply_ttl([("web", "t3", None)])
    ev = await call.read()
    assert [(s.id, s.kind) for s in ev.removed] == [("t3", "ttl")]
    call.cancel()
    await async_wait_for(lambda: server.core.watcher_count("web") == 0, what="watcher unregistered")


@pytest.mark.parametrize("engine", ENGINES)
def test_sync_and_cached_clients_hand_out_the_kind(engine: str) -> None:
    server = ServerThread(engine=engine)
    try:
        server.call(mixed, server.catalog)
        with RpcClient(server.addr) as plain, RpcClient(server.addr, cache=True) as cached:
            assert [(s.id, s.kind) for s in plain.members("web")] == [
                ("g1", "gossip"), ("g2", "gossip"), ("t1", "ttl"), ("t2", "ttl")]
            assert plain.members("api")[0].kind == ServiceKind.TTL
            want = plain.match_batch("web", KEYS)
            assert {s.kind for s in want} == {"gossip", "ttl"}
            assert all(s.kind == kind_of(s.id) for s in want)
            assert cached.match_batch("web", KEYS) == want
            assert [(s.id, s.kind) for s in cached.members("web")] == [(s.id, s.kind) for s in plain.members("web")]
            # a TTL service's refresh (new addr) and removal reach the cache like any change
            server.call(server.catalog.apply_ttl, [ttl("web", "t1", "10.0.1.9:80")])
            version = server.call(server.catalog.version, "web")
            wait_for(lambda: cached.cache_version("web") >= version, what="cache caught up")
            assert [s.addr for s in cached.members("web") if s.id == "t1"] == ["10.0.1.9:80"]
            assert cached.match_batch("web", KEYS) == plain.match_batch("web", KEYS)
            everyone = plain.members("", all=True)
            assert {(s.id, s.kind, s.status) for s in everyone} >= {("x", "ttl", "alive"), ("t1", "ttl", "alive")}
    finally:
        server.stop()


@pytest.mark.parametrize("engine", ENGINES)
async def test_async_clients_hand_out_the_kind(engine: str) -> None:
    catalog = mixed(Catalog())
    server = await start_server(catalog, engine)
    try:
        addr = f"127.0.0.1:{server.port}"
        async with AsyncRpcClient(addr) as plain, AsyncRpcClient(addr, cache=True) as cached:
            match = await plain.match("web", "user-1", 4)
            assert all(s.kind == kind_of(s.id) for s in match)
            assert await cached.match_batch("web", KEYS) == await plain.match_batch("web", KEYS)
            assert [s.kind for s in await cached.members("web")] == ["gossip", "gossip", "ttl", "ttl"]
    finally:
        await server.stop(None)
