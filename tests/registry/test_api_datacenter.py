"""The API's datacenter (issue 17) on both gRPC fronts and through the clients, in one process: dc1's
registry core gets a Federation-shaped object (`Datacenters`) whose mirrors are real `Mirror`s fed by
the Watch of every group of real `RegistryCore`s of dc2 and dc3 (no network between them, only the
fronts and the clients over loopback). The server wiring (registry.federation.federation) is tested
with real processes in tests/federation/test_api_e2e.py."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio
import pytest

from registry.api import RegistryCore
from registry.api_errors import NotSynced, UnknownDatacenter
from registry.catalog import Catalog, GroupChange
from registry.client import AsyncRpcClient, NotFound, RpcClient, Unavailable
from registry.federation.mirror import Mirror
from registry.v1 import registry_pb2 as pb
from registry.v1 import registry_pb2_grpc as pb_grpc
from tests.registry.rpc_fixtures import ENGINES, AnyServer, async_wait_for, populate, start_server, tags

KEYS = [f"user-{i}" for i in range(1000)]


@dataclass(frozen=True)
class Info:
    name: str
    local: bool
    stale_seconds: float
    rtt_ms: float | None
    registries: int


class Datacenters:
    """Federation-shaped (registry.api_dc.Federation): mirrors of other datacenters' cores, each fed
    by a task reading that core's Watch of every group, as a follower does over gRPC."""

    def __init__(self, local: str) -> None:
        self.local = local
        self.mirrors: dict[str, Mirror] = {}
        self.rtt: dict[str, float | None] = {}
        self._subs: dict[str, list[Callable[[GroupChange], None]]] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def follow(self, dc: str, core: RegistryCore | None, rtt: float | None = None) -> Mirror:
        """A mirror of `dc` fed from `core` (None: never synced)."""
        mirror = self.mirrors[dc] = Mirror(dc)
        self.rtt[dc] = rtt
        self._subs.setdefault(dc, [])
        if core is not None:
            self._tasks.append(asyncio.create_task(self._feed(dc, mirror, core)))
        return mirror

    async def _feed(self, dc: str, mirror: Mirror, core: RegistryCore) -> None:
        async for data in core.watch_all():
            before = set(mirror.catalog.groups())
            mirror.apply(data, now=time.monotonic())
            ev = pb.WatchEvent.FromString(data)
            groups = before | set(mirror.catalog.groups()) if not ev.group else {ev.group}
            for g in sorted(groups):
                for cb in list(self._subs[dc]):
                    cb(GroupChange(g, 0, [], [], []))

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t

    def _mirror(self, dc: str) -> Mirror:
        mirror = self.mirrors.get(dc)
        if mirror is None:
            raise UnknownDatacenter(f"unknown datacenter {dc!r} (known: {', '.join([self.local, *sorted(self.mirrors)])})")
        return mirror

    def catalog(self, dc: str) -> Catalog:
        mirror = self._mirror(dc)
        if mirror.sequences == 0:
            raise NotSynced(f"datacenter {dc!r} not synced yet")
        return mirror.catalog

    def stale_for(self, dc: str) -> float:
        return self._mirror(dc).stale_for(time.monotonic()) or 0.0

    def nearest(self) -> list[str]:
        synced = [dc for dc, m in self.mirrors.items() if m.sequences]
        return sorted(synced, key=lambda dc: (self.rtt[dc] is None, self.rtt[dc] or 0.0, dc))

    def datacenters(self) -> list[Info]:
        return [Info(self.local, True, 0.0, None, 0)] + [
            Info(dc, False, self.stale_for(dc), self.rtt[dc], 1) for dc in sorted(self.mirrors)]

    def subscribe(self, dc: str, callback: Callable[[GroupChange], None]) -> Callable[[], None]:
        subs = self._subs[self._mirror(dc).datacenter]
        subs.append(callback)
        return lambda: subs.remove(callback)


@dataclass
class World:
    server: AnyServer
    stub: pb_grpc.RegistryStub
    dcs: Datacenters
    local: Catalog
    dc2: Catalog
    dc3: Catalog
    addr: str


@pytest.fixture(params=ENGINES)
async def world(request: pytest.FixtureRequest) -> AsyncIterator[World]:
    local, dc2, dc3 = Catalog(), Catalog(), Catalog()
    populate(local, "web", 3)
    for i in range(7):
        dc2.apply(f"dc2-web-{i}", tags("web", f"10.2.0.{i}:80"))
    populate(dc2, "pay", 2)
    populate(dc3, "pay", 3)
    cores = [RegistryCore(dc2), RegistryCore(dc3)]
    dcs = Datacenters("dc1")
    dcs.follow("dc2", cores[0], rtt=50.0)
    dcs.follow("dc3", cores[1], rtt=5.0)
    dcs.follow("dc4", None)
    await async_wait_for(lambda: dcs.mirrors["dc2"].synced and dcs.mirrors["dc3"].synced, what="mirrors synced")
    server = await start_server(local, request.param)
    server.core.federation = dcs
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        yield World(server, pb_grpc.RegistryStub(ch), dcs, local, dc2, dc3,  # type: ignore[no-untyped-call]
                    f"127.0.0.1:{server.port}")
    await server.stop(None)
    await dcs.close()
    for core in cores:
        core.close()


async def test_match_for_another_datacenter_answers_as_its_catalog(world: World) -> None:
    for key in KEYS:
        resp = await world.stub.Match(pb.MatchRequest(group="web", key=key, datacenter="dc2"))
        assert [s.id for s in resp.services] == [s.id for s in world.dc2.match("web", key, 1)], key
        assert (resp.datacenter, resp.stale_seconds) == ("dc2", 0.0)
    resp = await world.stub.Match(pb.MatchRequest(group="web", key="k", n=4, datacenter="dc2"))
    assert [s.id for s in resp.services] == [s.id for s in world.dc2.match("web", "k", 4)]
    batch = await world.stub.MatchBatch(pb.MatchBatchRequest(group="web", keys=KEYS, datacenter="dc2"))
    assert [s.id for s in batch.services] == [s.id for s in world.dc2.match_batch("web", KEYS)]
    assert batch.datacenter == "dc2"
    # the local name is the local catalog, and says so
    resp = await world.stub.Match(pb.MatchRequest(group="web", key="k", datacenter="dc1"))
    assert [s.id for s in resp.services] == [world.local.match("web", "k")[0].id]
    assert resp.datacenter == "dc1"
    # a change in dc2 reaches the answer
    world.dc2.apply("dc2-web-0", None)
    await async_wait_for(lambda: "dc2-web-0" not in [s.id for s in world.dcs.mirrors["dc2"].catalog.members("web")],
                         what="the mirror followed a leave")
    batch = await world.stub.MatchBatch(pb.MatchBatchRequest(group="web", keys=KEYS, datacenter="dc2"))
    assert [s.id for s in batch.services] == [s.id for s in world.dc2.match_batch("web", KEYS)]


async def test_default_answers_are_unchanged_bytes(world: World) -> None:
    """With a federation, a request that names no datacenter gets the very bytes it got before
    (no datacenter, no stale_seconds); Groups gains only the datacenters list."""
    bare = RegistryCore(world.local)  # no federation: the registry before issue 17
    try:
        fed = world.server.core
        requests: list[tuple[str, bytes]] = [
            ("Match", pb.MatchRequest(group="web", key="k").SerializeToString()),
            ("Match", pb.MatchRequest(group="web", key="k", n=2).SerializeToString()),
            ("MatchBatch", pb.MatchBatchRequest(group="web", keys=KEYS[:50]).SerializeToString()),
            ("Members", pb.MembersRequest(group="web").SerializeToString()),
            ("Members", pb.MembersRequest(group="web", all=True).SerializeToString()),
        ]
        for method, data in requests:
            got = fed.unary_methods()[f"/registry.v1.Registry/{method}"](data)
            assert got == bare.unary_methods()[f"/registry.v1.Registry/{method}"](data), method
            if method == "Match":
                answer = pb.MatchResponse.FromString(got)
                assert got == pb.MatchResponse(services=answer.services).SerializeToString()
            assert b"dc1" not in got  # no datacenter field
        groups = fed.wire_groups(b"")
        assert groups != bare.wire_groups(b"")
        answer = pb.GroupsResponse.FromString(groups)
        assert [d.name for d in answer.datacenters] == ["dc1", "dc2", "dc3", "dc4"]
        del answer.datacenters[:]
        assert answer.SerializeToString() == bare.wire_groups(b"")
    finally:
        bare.close()


async def test_unknown_and_unsynced_datacenters(world: World) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await world.stub.Match(pb.MatchRequest(group="web", key="k", datacenter="dc9"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert err.value.details() == "unknown datacenter 'dc9' (known: dc1, dc2, dc3, dc4)"
    for call in (world.stub.Members(pb.MembersRequest(group="web", datacenter="dc9")),
                 world.stub.Groups(pb.GroupsRequest(datacenter="dc9"))):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await world.stub.Match(pb.MatchRequest(group="web", key="k", datacenter="dc4"))
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert err.value.details() == "datacenter 'dc4' not synced yet"
    with pytest.raises(grpc.aio.AioRpcError) as err:  # failover never hides the caller's typo
        await world.stub.Match(pb.MatchRequest(group="web", key="k", datacenter="dc9", failover=True))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    world.server.core.federation = None  # a registry without a WAN pool
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await world.stub.Match(pb.MatchRequest(group="web", key="k", datacenter="dc2"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert err.value.details().startswith("unknown datacenter 'dc2' (known: dc1")


async def test_failover_answers_from_the_nearest_datacenter_routing_the_group(world: World) -> None:
    async def match(**kw: object) -> pb.MatchResponse:
        resp: pb.MatchResponse = await world.stub.Match(pb.MatchRequest(group="pay", key="k", **kw))  # type: ignore[arg-type]
        return resp

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await match()
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    resp = await match(failover=True)
    assert resp.datacenter == "dc3"  # rtt 5 ms against dc2's 50
    assert resp.services[0].id == world.dc3.match("pay", "k")[0].id
    world.dcs.rtt["dc3"] = 80.0
    assert (await match(failover=True)).datacenter == "dc2"
    populate(world.local, "pay", 1)  # a local service returns: the answer is local again
    resp = await match(failover=True)
    assert (resp.datacenter, resp.services[0].id) == ("dc1", "pay-0")
    # asked for dc2, whose group is gone: the local datacenter is the nearest of all
    resp = await world.stub.Match(pb.MatchRequest(group="web", key="k", datacenter="dc3", failover=True))
    assert resp.datacenter == "dc1"


async def test_members_groups_and_staleness_of_another_datacenter(world: World) -> None:
    resp = await world.stub.Members(pb.MembersRequest(group="web", datacenter="dc2"))
    assert [s.id for s in resp.services] == [s.id for s in world.dc2.members("web")]
    assert resp.datacenter == "dc2" and resp.version > 0
    every = await world.stub.Members(pb.MembersRequest(all=True, datacenter="dc2"))
    assert {s.status for s in every.services} == {"alive"}
    assert sorted(s.id for s in every.services) == sorted(s.id for g in world.dc2.groups() for s in world.dc2.members(g))
    groups = await world.stub.Groups(pb.GroupsRequest(datacenter="dc3"))
    assert (list(groups.groups), groups.datacenter) == (world.dc3.groups(), "dc3")
    assert [(d.name, d.local, d.rtt_ms) for d in groups.datacenters] == [
        ("dc1", True, 0.0), ("dc2", False, 50.0), ("dc3", False, 5.0), ("dc4", False, 0.0)]
    world.dcs.mirrors["dc2"].mark_lost(now=time.monotonic() - 30)  # its sources lost 30 s ago: kept, stale
    resp = await world.stub.Members(pb.MembersRequest(group="web", datacenter="dc2"))
    assert resp.stale_seconds >= 30
    match = await world.stub.Match(pb.MatchRequest(group="web", key="k", datacenter="dc2"))
    assert match.stale_seconds >= 30 and len(match.services) == 1
    groups = await world.stub.Groups(pb.GroupsRequest())
    assert groups.datacenters[1].stale_seconds >= 30


async def test_watch_of_a_group_of_another_datacenter(world: World) -> None:
    call = world.stub.Watch(pb.WatchRequest(group="web", datacenter="dc2"))
    first = await call.read()
    assert first.snapshot and [s.id for s in first.services] == [s.id for s in world.dc2.members("web")]
    world.dc2.apply("dc2-web-new", tags("web", "10.2.9.9:80"))
    ev = await asyncio.wait_for(call.read(), 30)
    assert (ev.snapshot, [s.id for s in ev.added], ev.version) == (False, ["dc2-web-new"], first.version + 1)
    world.dc2.apply("dc2-web-1", None)
    ev = await asyncio.wait_for(call.read(), 30)
    assert [s.id for s in ev.removed] == ["dc2-web-1"] and not ev.added
    # the mirror resyncs (a new source): its catalog is replaced, nothing changed: no event; the
    # next change still arrives as a difference
    mirror = world.dcs.mirrors["dc2"]
    sequences = mirror.sequences
    mirror.reset()
    for data in RegistryCore(world.dc2).snapshot_all()[1]:
        mirror.apply(data, now=time.monotonic())
    assert mirror.sequences == sequences + 1
    world.dc2.apply("dc2-web-2", None)
    ev = await asyncio.wait_for(call.read(), 30)
    assert [s.id for s in ev.removed] == ["dc2-web-2"] and not ev.added and not ev.snapshot
    call.cancel()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await world.stub.Watch(pb.WatchRequest(group="", datacenter="dc2")).read()
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    await async_wait_for(lambda: world.server.core.watcher_count() == 0, what="the watcher counted out")


async def test_clients_take_datacenter_and_failover(world: World) -> None:
    async with AsyncRpcClient(world.addr) as c:
        found = await c.match("web", "k", datacenter="dc2")
        assert (found.id, found.datacenter, found.stale_seconds) == (world.dc2.match("web", "k")[0].id, "dc2", 0.0)
        assert (await c.match("web", "k")).datacenter == ""  # the default answer names none
        batch = await c.match_batch("web", KEYS, datacenter="dc2")
        assert [s.id for s in batch] == [s.id for s in world.dc2.match_batch("web", KEYS)]
        assert {s.datacenter for s in batch} == {"dc2"}
        assert [s.id for s in await c.members("pay", datacenter="dc3")] == [s.id for s in world.dc3.members("pay")]
        assert await c.groups(datacenter="dc2") == world.dc2.groups()
        assert [(d.name, d.local) for d in await c.datacenters()][:2] == [("dc1", True), ("dc2", False)]
        assert (await c.match("pay", "k", failover=True)).datacenter == "dc3"
        with pytest.raises(NotFound, match="unknown datacenter 'dc9'"):
            await c.match("web", "k", datacenter="dc9")
        with pytest.raises(Unavailable, match="not synced yet"):
            await c.match("web", "k", datacenter="dc4")
        with pytest.raises(ValueError, match="datacenter 'DC 2'"):
            await c.match("web", "k", datacenter="DC 2")
    async with AsyncRpcClient(world.addr, cache=True) as cached:
        got = await cached.match_batch("web", KEYS, datacenter="dc2")
        assert [s.id for s in got] == [s.id for s in world.dc2.match_batch("web", KEYS)]
        assert got[0].datacenter == "dc2"
        assert (await cached.match("web", "k")).id == world.local.match("web", "k")[0].id  # a separate view
        world.dc2.apply("dc2-web-3", None)

        async def follows() -> bool:
            return [s.id for s in await cached.match_batch("web", KEYS, datacenter="dc2")] == [
                s.id for s in world.dc2.match_batch("web", KEYS)]

        deadline = time.monotonic() + 30
        while not await follows():
            assert time.monotonic() < deadline, "the cached ring of dc2 did not follow a leave"
            await asyncio.sleep(0.01)
        assert (await cached.match("pay", "k", failover=True)).datacenter == "dc3"  # no local ring: asks

    def blocking() -> None:
        with RpcClient(world.addr) as c:
            assert c.match("web", "k", datacenter="dc2").datacenter == "dc2"
            assert c.match("pay", "k", 2, failover=True)[0].datacenter == "dc3"
            assert [s.id for s in c.members("web", datacenter="dc2")] == [s.id for s in world.dc2.members("web")]

    await asyncio.to_thread(blocking)


async def sse_event(r: Any) -> tuple[str, dict[str, Any]]:
    """The next Server-Sent Event of an aiohttp response (heartbeat comments skipped): (event, data)."""
    kind, data = "", ""
    while True:
        line = (await r.content.readline()).decode().rstrip("\n")
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: "):
            data = line[6:]
        elif not line and kind:
            return kind, json.loads(data)


async def test_http_reads_take_dc_and_failover(world: World) -> None:
    import aiohttp

    from registry.health import Health
    from registry.http.front import HttpFront

    http = HttpFront(world.server.core, Health(), ttl=lambda: None)
    await http.start("127.0.0.1", 0)
    base = f"http://127.0.0.1:{http.port}"
    try:
        async with aiohttp.ClientSession() as session:
            async def get(path: str) -> tuple[int, dict[str, object]]:
                async with session.get(base + path) as r:
                    return r.status, await r.json()

            status, body = await get("/v1/match/web/user-7?dc=dc2&n=2")
            assert status == 200, body
            assert [s["id"] for s in body["services"]] == [s.id for s in world.dc2.match("web", "user-7", 2)]  # type: ignore[attr-defined]
            assert (body["datacenter"], body["stale_seconds"]) == ("dc2", 0.0)
            status, body = await get("/v1/match/web/user-7")
            assert status == 200 and "datacenter" not in body  # the default answer is unchanged
            status, body = await get("/v1/match/pay/k?failover=1")
            assert (status, body["datacenter"]) == (200, "dc3")
            status, body = await get("/v1/match/pay/k")
            assert status == 404
            status, body = await get("/v1/members/web?dc=dc2")
            assert [s["id"] for s in body["services"]] == [s.id for s in world.dc2.members("web")]  # type: ignore[attr-defined]
            status, body = await get("/v1/groups?dc=dc3")
            assert (body["groups"], body["datacenter"]) == (world.dc3.groups(), "dc3")
            assert [d["name"] for d in body["datacenters"]] == ["dc1", "dc2", "dc3", "dc4"]  # type: ignore[attr-defined]
            status, body = await get("/v1/match/web/k?dc=dc9")
            assert status == 404 and "unknown datacenter 'dc9'" in str(body), body
            status, body = await get("/v1/members/web?dc=dc4")
            assert status == 503 and "not synced yet" in str(body), body
            status, body = await get("/v1/members/web?dc=dc2&index=1")
            assert status == 400 and "blocking query" in str(body), body
            # SSE: a remote group's Watch, the gRPC Watch(datacenter=...)'s events
            async with session.get(base + "/v1/watch/web?dc=dc2") as r:
                assert r.status == 200
                first = await sse_event(r)
                assert first[0] == "snapshot"
                assert [s["id"] for s in first[1]["services"]] == [s.id for s in world.dc2.members("web")]
                world.dc2.apply("dc2-web-sse", tags("web", "10.2.9.8:80"))
                kind, data = await asyncio.wait_for(sse_event(r), 30)
                assert (kind, [s["id"] for s in data["added"]]) == ("change", ["dc2-web-sse"])
            status, body = await get("/v1/watch/web?dc=dc9")
            assert status == 404 and "unknown datacenter 'dc9'" in str(body), body
    finally:
        await http.stop()
