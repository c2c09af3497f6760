"""The gRPC server against a real Catalog: answers, errors, Watch, health, reflection."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from registry.catalog import Catalog
from registry.compat import rpcserver_pb2 as compat_pb2
from registry.compat import rpcserver_pb2_grpc as compat_grpc
from registry.rpc import COMPAT_SERVICE, MAX_MATCH_N, V1_SERVICE, WATCH_QUEUE_SIZE
from registry.v1 import registry_pb2 as pb
from registry.v1 import registry_pb2_grpc as pb_grpc
from tests.registry.rpc_fixtures import ENGINES, GROUP, AnyServer, async_wait_for, populate, start_server, tags

KEYS = [f"user-{i}" for i in range(300)]


@pytest.fixture
async def channel(server: AnyServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        yield ch


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> pb_grpc.RegistryStub:
    return pb_grpc.RegistryStub(channel)  # type: ignore[no-untyped-call]


def ids(services: object) -> list[str]:
    return [s.id for s in services]  # type: ignore[attr-defined]


async def test_match_equals_catalog(stub: pb_grpc.RegistryStub, catalog: Catalog) -> None:
    seen = set()
    for key in KEYS:
        resp = await stub.Match(pb.MatchRequest(group=GROUP, key=key))
        want = catalog.match(GROUP, key, 1)[0]
        assert len(resp.services) == 1
        got = resp.services[0]
        assert (got.id, got.group, got.addr) == (want.id, want.group, want.addr)
        assert dict(got.tags) == dict(want.tags)
        assert (got.replicas, got.weight) == (want.replicas, want.weight)
        seen.add(got.id)
    assert len(seen) > 1  # keys really spread over the ring


async def test_match_n_distinct_in_ring_order(stub: pb_grpc.RegistryStub, catalog: Catalog) -> None:
    for key in KEYS[:50]:
        resp = await stub.Match(pb.MatchRequest(group=GROUP, key=key, n=3))
        assert ids(resp.services) == ids(catalog.match(GROUP, key, 3))
        assert len(set(ids(resp.services))) == 3
        first = await stub.Match(pb.MatchRequest(group=GROUP, key=key, n=0))  # 0 means 1
        assert ids(first.services) == ids(resp.services)[:1]
    every = await stub.Match(pb.MatchRequest(group=GROUP, key="k", n=50))  # more than members: all of them
    assert sorted(ids(every.services)) == sorted(ids(catalog.members(GROUP)))


async def test_match_batch_in_key_order(stub: pb_grpc.RegistryStub, catalog: Catalog) -> None:
    resp = await stub.MatchBatch(pb.MatchBatchRequest(group=GROUP, keys=KEYS))
    assert ids(resp.services) == [catalog.match(GROUP, k, 1)[0].id for k in KEYS]
    empty = await stub.MatchBatch(pb.MatchBatchRequest(group=GROUP, keys=[]))
    assert list(empty.services) == []


async def test_members_and_groups(stub: pb_grpc.RegistryStub, catalog: Catalog) -> None:
    populate(catalog, "db", 2)
    resp = await stub.Members(pb.MembersRequest(group=GROUP))
    assert sorted(ids(resp.services)) == sorted(f"{GROUP}-{i}" for i in range(5))
    assert resp.version == catalog.version(GROUP)
    assert {s.addr for s in resp.services} == {f"10.0.0.{i}:8080" for i in range(1, 6)}
    groups = await stub.Groups(pb.GroupsRequest())
    assert sorted(groups.groups) == sorted(catalog.groups()) and {"db", GROUP} <= set(groups.groups)
    assert groups.ring.algorithm == "consistent"


async def test_answers_follow_catalog_changes(stub: pb_grpc.RegistryStub, catalog: Catalog) -> None:
    before = await stub.MatchBatch(pb.MatchBatchRequest(group=GROUP, keys=KEYS))
    owner = before.services[0].id
    catalog.apply(owner, None)
    after = await stub.MatchBatch(pb.MatchBatchRequest(group=GROUP, keys=KEYS))
    assert owner not in ids(after.services)
    assert ids(after.services) == [catalog.match(GROUP, k, 1)[0].id for k in KEYS]
    catalog.apply(owner, tags(GROUP, "10.9.9.9:1"))  # back, at a new address
    again = await stub.Match(pb.MatchRequest(group=GROUP, key=KEYS[0]))
    assert (again.services[0].id, again.services[0].addr) == (owner, "10.9.9.9:1")


async def _code(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    return info.value


@pytest.mark.parametrize(
    ("request_", "method", "fragment"),
    [
        (pb.MatchRequest(group="", key="k"), "Match", "group is empty"),
        (pb.MatchRequest(group=GROUP, key=""), "Match", "key is empty"),
        (pb.MatchRequest(group=GROUP, key="k", n=-1), "Match", "n=-1"),
        (pb.MatchRequest(group=GROUP, key="k", n=MAX_MATCH_N + 1), "Match", f"n={MAX_MATCH_N + 1}"),
        (pb.MatchBatchRequest(group="", keys=["a"]), "MatchBatch", "group is empty"),
        (pb.MatchBatchRequest(group=GROUP, keys=["a", ""]), "MatchBatch", "key #1 is empty"),
        (pb.MembersRequest(group=""), "Members", "group is empty"),
    ],
)
async def test_invalid_argument(stub: pb_grpc.RegistryStub, request_: pb.MatchRequest | pb.MatchBatchRequest | pb.MembersRequest, method: str, fragment: str) -> None:
    err = await _code(getattr(stub, method)(request_))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert fragment in (err.details() or "")
    if request_.group:
        assert repr(GROUP) in (err.details() or "")


# Watch(group="") watches every group (issue 17): tests/registry/test_watch_all.py.


async def test_not_found_names_group(stub: pb_grpc.RegistryStub, catalog: Catalog) -> None:
    for call in (
        stub.Match(pb.MatchRequest(group="nosuch", key="k")),
        stub.MatchBatch(pb.MatchBatchRequest(group="nosuch", keys=["k"])),
        stub.Members(pb.MembersRequest(group="nosuch")),
    ):
        err = await _code(call)
        assert err.code() == grpc.StatusCode.NOT_FOUND
        assert "group 'nosuch' not found" in (err.details() or "")
    populate(catalog, "gone", 2)
    catalog.apply("gone-0", None)
    catalog.apply("gone-1", None)  # the group exists no more / has no live member
    for call in (stub.Match(pb.MatchRequest(group="gone", key="k")), stub.Members(pb.MembersRequest(group="gone"))):
        err = await _code(call)
        assert err.code() == grpc.StatusCode.NOT_FOUND
        assert "group 'gone' has no live member" in (err.details() or "")


async def test_watch_snapshot_then_changes(stub: pb_grpc.RegistryStub, catalog: Catalog, server: AnyServer) -> None:
    call = stub.Watch(pb.WatchRequest(group=GROUP))
    first = await call.read()
    assert first.snapshot and first.group == GROUP
    assert sorted(ids(first.services)) == sorted(ids(catalog.members(GROUP)))
    assert first.version == catalog.version(GROUP)
    assert first.ring.algorithm == "consistent"

    catalog.apply("web-new", tags(GROUP, "10.1.1.1:1"))
    ev = await call.read()
    assert not ev.snapshot and ids(ev.added) == ["web-new"] and ev.version == catalog.version(GROUP)
    assert ev.version > first.version

    catalog.apply("web-new", tags(GROUP, "10.1.1.2:2"))
    ev2 = await call.read()
    assert ids(ev2.updated) == ["web-new"] and ev2.updated[0].addr == "10.1.1.2:2" and ev2.version > ev.version

    catalog.apply("web-new", None)
    ev3 = await call.read()
    assert ids(ev3.removed) == ["web-new"] and ev3.version > ev2.version

    populate(catalog, "other", 1)  # another group's changes are not sent to this watcher
    catalog.apply("web-0", None)
    ev4 = await call.read()
    assert ids(ev4.removed) == ["web-0"] and ev4.group == GROUP
    call.cancel()
    await async_wait_for(lambda: server.core.watcher_count(GROUP) == 0, what="watcher unregistered")


async def test_watch_change_from_another_thread(stub: pb_grpc.RegistryStub, catalog: Catalog) -> None:
    call = stub.Watch(pb.WatchRequest(group=GROUP))
    await call.read()
    await asyncio.to_thread(catalog.apply, "threaded", tags(GROUP, "10.4.4.4:4"))
    ev = await asyncio.wait_for(call.read(), 30)
    assert ids(ev.added) == ["threaded"] and ev.version == catalog.version(GROUP)
    call.cancel()


async def test_watch_unknown_group_starts_empty(stub: pb_grpc.RegistryStub, catalog: Catalog) -> None:
    call = stub.Watch(pb.WatchRequest(group="later"))
    first = await call.read()
    assert first.snapshot and list(first.services) == []
    catalog.apply("later-0", tags("later", "10.2.2.2:2"))
    ev = await call.read()
    assert ids(ev.added) == ["later-0"]
    call.cancel()


async def test_slow_watcher_gets_fresh_snapshot(stub: pb_grpc.RegistryStub, catalog: Catalog,
                                                server: AnyServer) -> None:
    call = stub.Watch(pb.WatchRequest(group=GROUP))
    await call.read()
    await async_wait_for(lambda: server.core.watcher_count(GROUP) == 1, what="watcher registered")
    # One synchronous burst: the stream cannot drain in between, so its queue overflows.
    for i in range(WATCH_QUEUE_SIZE + 10):
        catalog.apply(f"burst-{i}", tags(GROUP, f"10.3.{i // 250}.{i % 250}:1", replicas=1))
    ev = await call.read()
    assert ev.snapshot, "an overflowing watcher must be resynced with a snapshot"
    assert ev.version == catalog.version(GROUP)
    assert len(ev.services) == len(catalog.members(GROUP)) == 5 + WATCH_QUEUE_SIZE + 10
    catalog.apply("burst-0", None)
    nxt = await call.read()  # deltas continue after the resync, nothing stale in between
    assert not nxt.snapshot and ids(nxt.removed) == ["burst-0"] and nxt.version == catalog.version(GROUP)
    call.cancel()


async def test_health_serving(channel: grpc.aio.Channel) -> None:
    h = health_pb2_grpc.HealthStub(channel)
    for name in ("", V1_SERVICE, COMPAT_SERVICE):
        resp = await h.Check(health_pb2.HealthCheckRequest(service=name))
        assert resp.status == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_lists_services(channel: grpc.aio.Channel) -> None:
    r = reflection_pb2_grpc.ServerReflectionStub(channel)

    async def one(req: reflection_pb2.ServerReflectionRequest) -> reflection_pb2.ServerReflectionResponse:
        async for resp in r.ServerReflectionInfo(iter([req])):
            return resp
        raise AssertionError("no reflection answer")

    listed = await one(reflection_pb2.ServerReflectionRequest(list_services=""))
    names = {s.name for s in listed.list_services_response.service}
    assert {"registry.v1.Registry", "R", "grpc.health.v1.Health"} <= names
    for symbol in ("registry.v1.Registry", "R"):
        found = await one(reflection_pb2.ServerReflectionRequest(file_containing_symbol=symbol))
        assert found.file_descriptor_response.file_descriptor_proto, symbol


@pytest.mark.parametrize("engine", ENGINES)
async def test_taken_port_raises(server: AnyServer, catalog: Catalog, engine: str) -> None:
    with pytest.raises(OSError):
        await start_server(catalog, engine, f"127.0.0.1:{server.port}")


async def test_compat_wire_names() -> None:
    # What the Go original's generated code uses; a mismatch breaks its clients.
    assert COMPAT_SERVICE == "R"
    assert callable(compat_grpc.RStub)  # generated from registry/compat/rpcserver.proto
    fields = {m: {f.name: f.number for f in compat_pb2.DESCRIPTOR.message_types_by_name[m].fields}
              for m in ("MatchRequest", "MatchResponse", "MembersRequest", "MembersResponse")}
    assert fields == {
        "MatchRequest": {"group": 1, "key": 2},
        "MatchResponse": {"id": 1, "group": 2, "addr": 3},
        "MembersRequest": {"group": 1},
        "MembersResponse": {"services": 1},
    }
    assert compat_pb2.DESCRIPTOR.package == ""
