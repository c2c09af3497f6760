"""Watch of every group (`WatchRequest.group == ""`, issue 17) on both gRPC fronts: every live group's
snapshot, the end marker, then every change of every group; an overflowing watcher gets the whole
sequence again (a group gone meanwhile is not in it); the watcher cap counts these streams too."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import grpc.aio
import pytest

from registry.api import WATCH_QUEUE_SIZE
from registry.catalog import Catalog
from registry.v1 import registry_pb2 as pb
from registry.v1 import registry_pb2_grpc as pb_grpc
from tests.registry.rpc_fixtures import AnyServer, async_wait_for, populate, tags


@pytest.fixture
async def catalog() -> Catalog:
    c = Catalog()
    populate(c, "web", 3)
    populate(c, "api", 2)
    populate(c, "gone", 1)
    c.apply("gone-0", None)  # a group with a version but no live member: in no snapshot
    return c


@pytest.fixture
async def stub(server: AnyServer) -> AsyncIterator[pb_grpc.RegistryStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        yield pb_grpc.RegistryStub(ch)  # type: ignore[no-untyped-call]


def ids(services: object) -> list[str]:
    return sorted(s.id for s in services)  # type: ignore[attr-defined]


async def read_sequence(call: object) -> dict[str, pb.WatchEvent]:
    """Snapshot events up to and including the marker, by group ("" the marker)."""
    seen: dict[str, pb.WatchEvent] = {}
    while True:
        ev: pb.WatchEvent = await call.read()  # type: ignore[attr-defined]
        assert ev.snapshot, f"a delta inside a snapshot sequence: {ev}"
        assert ev.group not in seen, f"group {ev.group!r} twice in one sequence"
        seen[ev.group] = ev
        if not ev.group:
            return seen


async def test_snapshot_of_every_group_then_marker_then_all_changes(
        stub: pb_grpc.RegistryStub, catalog: Catalog, server: AnyServer) -> None:
    call = stub.Watch(pb.WatchRequest(group=""))
    first = await read_sequence(call)
    assert sorted(first) == ["", "api", "web"]  # "gone" has no live member: no snapshot
    for g in ("api", "web"):
        assert ids(first[g].services) == ids(catalog.members(g)) and first[g].version == catalog.version(g)
        assert first[g].ring.algorithm == "consistent" and first[g].ring.default_replicas == catalog.default_replicas
    marker = first[""]
    assert not marker.services and marker.ring.algorithm == "consistent"
    assert server.core.watcher_count("") == 1

    catalog.apply("web-new", tags("web", "10.1.1.1:1"))  # a change of a listed group
    ev = await call.read()
    assert (ev.group, ids(ev.added), ev.version, ev.snapshot) == ("web", ["web-new"], catalog.version("web"), False)
    catalog.apply("later-0", tags("later", "10.2.2.2:2"))  # a group that appears now: its first `added`
    ev = await call.read()
    assert (ev.group, ids(ev.added), ev.version) == ("later", ["later-0"], catalog.version("later"))
    catalog.apply("gone-1", tags("gone", "10.3.3.3:3"))  # a group with a past comes back: its next version
    ev = await call.read()
    assert (ev.group, ids(ev.added), ev.version) == ("gone", ["gone-1"], 3)
    catalog.apply("api-0", tags("api", "10.0.0.1:8080", health="critical"))  # health: `updated`
    ev = await call.read()
    assert ev.group == "api" and ids(ev.updated) == ["api-0"] and ev.updated[0].health == "critical"
    catalog.apply("api-0", None)
    catalog.apply("api-1", None)  # the group's last service leaves: a `removed` event
    for want in ("api-0", "api-1"):
        ev = await call.read()
        assert (ev.group, ids(ev.removed)) == ("api", [want])
    assert ev.version == catalog.version("api") and catalog.members("api") == []
    call.cancel()
    await async_wait_for(lambda: server.core.watcher_count("") == 0, what="the all-groups watcher unregistered")
    assert server.core.watcher_count() == 0


async def test_overflowing_watcher_gets_every_snapshot_again(
        stub: pb_grpc.RegistryStub, catalog: Catalog, server: AnyServer) -> None:
    call = stub.Watch(pb.WatchRequest(group=""))
    await read_sequence(call)
    await async_wait_for(lambda: server.core.watcher_count("") == 1, what="watcher registered")
    # One synchronous burst: the stream cannot drain in between, so its queue overflows; meanwhile
    # "api" empties (it must be absent from the resync) and "burst" appears.
    catalog.apply("api-0", None)
    catalog.apply("api-1", None)
    for i in range(WATCH_QUEUE_SIZE + 10):
        catalog.apply(f"burst-{i}", tags("burst", f"10.3.{i // 250}.{i % 250}:1", replicas=1))
    again = await read_sequence(call)
    assert sorted(again) == ["", "burst", "web"]
    assert len(again["burst"].services) == WATCH_QUEUE_SIZE + 10
    assert again["burst"].version == catalog.version("burst")
    assert again["web"].version == catalog.version("web")
    catalog.apply("burst-0", None)
    nxt = await call.read()  # deltas go on after the resync, nothing older in between
    assert (nxt.snapshot, nxt.group, ids(nxt.removed)) == (False, "burst", ["burst-0"])
    assert nxt.version == catalog.version("burst")
    call.cancel()


async def test_all_groups_watchers_count_against_the_cap(stub: pb_grpc.RegistryStub, server: AnyServer) -> None:
    server.core.max_watchers = 2
    one = stub.Watch(pb.WatchRequest(group=""))
    two = stub.Watch(pb.WatchRequest(group="web"))
    await read_sequence(one)
    assert (await two.read()).snapshot
    over = stub.Watch(pb.WatchRequest(group=""))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await over.read()
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert server.core.watchers_refused == 1
    one.cancel()
    two.cancel()
    await async_wait_for(lambda: server.core.watcher_count() == 0, what="both watchers gone")


async def test_client_watch_events_yields_the_raw_stream(server: AnyServer, catalog: Catalog) -> None:
    """`AsyncRpcClient.watch_events("")`: the serialized events as the registry sent them (a mirror checks
    them itself); an unreachable registry is Unavailable, naming it."""
    from registry.client import AsyncRpcClient, Unavailable
    from tests.e2e.helpers import free_port

    async with AsyncRpcClient(f"127.0.0.1:{server.port}", timeout=10) as c:
        stream = c.watch_events("")
        groups = []
        async for data in stream:
            assert isinstance(data, bytes)
            ev = pb.WatchEvent.FromString(data)
            groups.append(ev.group)
            if not ev.group:
                break
        assert groups == ["api", "web", ""]
        await stream.aclose()  # type: ignore[attr-defined]
    dead = f"127.0.0.1:{free_port()}"
    async with AsyncRpcClient(dead, timeout=2) as c:
        with pytest.raises(Unavailable, match=dead):
            async for _ in c.watch_events(""):
                pass
