"""`GET /v1/watch/<group>` (Server-Sent Events) against a gRPC Watch of the same group: the same snapshot,
versions and services through joins, updates and leaves; the heartbeat comment; the shared watcher cap."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import grpc

from registry.http.answers import message_json
from registry.http.front import HttpLimits
from registry.server import RegistryServer
from registry.v1 import registry_pb2 as pb
from registry.v1 import registry_pb2_grpc as pb_grpc
from tests.http.conftest import GROUP, Front, close_front, make_front


async def sse_events(response: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, str, dict[str, Any]]]:
    """(event, id, data) of each event; comments skipped."""
    fields: dict[str, str] = {}
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if not line:
            if fields:
                yield fields["event"], fields["id"], json.loads(fields["data"])
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(": ")
            fields[name] = value


def view(event: dict[str, Any]) -> tuple[int, bool, list[tuple[str, list[str]]]]:
    """What a watcher learns from one event: version, snapshot or not, ids per list."""
    lists = [(k, sorted(s["id"] for s in event.get(k, []))) for k in ("services", "added", "removed", "updated")]
    return int(event["version"]), bool(event.get("snapshot")), lists


async def test_sse_sees_what_grpc_watch_sees(front: Front, client: aiohttp.ClientSession) -> None:
    changes = 6
    async with grpc.aio.insecure_channel(front.grpc_addr) as ch, \
            client.get(f"{front.base}/v1/watch/{GROUP}") as resp:
        assert resp.status == 200 and resp.content_type == "text/event-stream"
        call = pb_grpc.RegistryStub(ch).Watch(  # type: ignore[no-untyped-call]
            pb.WatchRequest(group=GROUP), timeout=30)
        sse = sse_events(resp)
        grpc_seen: list[Any] = []
        sse_seen: list[Any] = []
        kinds: list[str] = []

        async def read_grpc() -> None:
            async for ev in call:
                grpc_seen.append(view(message_json(ev)))
                if len(grpc_seen) == changes + 1:
                    return

        async def read_sse() -> None:
            async for kind, ident, data in sse:
                sse_seen.append(view(data))
                kinds.append(kind)
                assert int(ident) == int(data["version"])
                if len(sse_seen) == changes + 1:
                    return

        readers = asyncio.gather(read_grpc(), read_sse())
        while front.http.core.watcher_count(GROUP) < 2:  # both subscribed: no change can fall before them
            await asyncio.sleep(0.001)
        front.catalog.apply("j1", {"group": GROUP, "addr": "10.5.0.1:1"})
        front.catalog.apply("j2", {"group": GROUP, "addr": "10.5.0.2:1"})
        front.catalog.apply("j1", {"group": GROUP, "addr": "10.5.0.1:2"})  # an update
        front.catalog.apply("web-0", None)
        front.catalog.apply("j2", None)
        front.catalog.apply_many([("j3", {"group": GROUP, "addr": "10.5.0.3:1"}), ("j1", None)])
        await asyncio.wait_for(readers, 30)
        call.cancel()
    assert kinds[0] == "snapshot" and set(kinds[1:]) == {"change"}
    assert sse_seen == grpc_seen
    assert [v for v, _, _ in sse_seen] == list(range(sse_seen[0][0], sse_seen[0][0] + changes + 1))


async def test_heartbeat_and_watcher_cap(client: aiohttp.ClientSession) -> None:
    front = await make_front(HttpLimits(heartbeat=0.05))
    front.http.core.max_watchers = 1
    try:
        async with client.get(f"{front.base}/v1/watch/{GROUP}") as resp:
            assert resp.status == 200
            lines = []
            while b": heartbeat\n" not in lines:
                lines.append(await asyncio.wait_for(resp.content.readline(), 30))
            assert lines[0] == b"event: snapshot\n"
            async with client.get(f"{front.base}/v1/watch/{GROUP}") as second:  # beyond the cap: 429, no stream
                assert second.status == 429
                assert (await second.json())["code"] == "RESOURCE_EXHAUSTED"
        # the first stream's watcher is freed once its client goes away
        for _ in range(3000):
            if front.http.core.watcher_count() == 0:
                break
            await asyncio.sleep(0.01)
        assert front.http.core.watcher_count() == 0
    finally:
        await close_front(front)


async def test_stop_ends_streams(client: aiohttp.ClientSession) -> None:
    front = await make_front()
    resp = await client.get(f"{front.base}/v1/watch/{GROUP}")
    assert (await resp.content.readline()) == b"event: snapshot\n"
    await asyncio.wait_for(close_front(front), 10)
    await asyncio.wait_for(resp.read(), 10)  # the stream ended (no hang)
    resp.release()
    assert front.http.core.watcher_count() == 0


async def test_head_is_not_a_watch(front: Front, client: aiohttp.ClientSession) -> None:
    async with client.head(f"{front.base}/v1/watch/{GROUP}") as r:
        assert r.status == 405
    assert front.http.core.watcher_count() == 0


async def test_sse_and_grpc_watch_through_ttl_writes(registry: RegistryServer, client: aiohttp.ClientSession) -> None:
    """The same through a whole registry: TTL services joining, updated and leaving by HTTP writes."""
    base = f"http://{registry.http_address}"
    writes = [("PUT", "t1", {"addr": "10.6.0.1:1"}), ("PUT", "t2", {"addr": "10.6.0.2:1"}),
              ("PUT", "t1", {"addr": "10.6.0.1:2"}), ("DELETE", "t2", None), ("DELETE", "t1", None)]
    async with grpc.aio.insecure_channel(registry.grpc_address) as ch, \
            client.get(f"{base}/v1/watch/ttl-web") as resp:
        call = pb_grpc.RegistryStub(ch).Watch(  # type: ignore[no-untyped-call]
            pb.WatchRequest(group="ttl-web"), timeout=30)
        grpc_seen: list[Any] = []
        sse_seen: list[Any] = []

        async def read_grpc() -> None:
            async for ev in call:
                grpc_seen.append(view(message_json(ev)))
                if len(grpc_seen) == len(writes) + 1:
                    return

        async def read_sse() -> None:
            async for _, _, data in sse_events(resp):
                sse_seen.append(view(data))
                if len(sse_seen) == len(writes) + 1:
                    return

        readers = asyncio.gather(read_grpc(), read_sse())
        while registry._grpc.core.watcher_count("ttl-web") < 2:
            await asyncio.sleep(0.001)
        for method, ident, body in writes:
            async with client.request(method, f"{base}/v1/services/ttl-web/{ident}", json=body) as r:
                assert r.status == 200, await r.text()
        await asyncio.wait_for(readers, 30)
        call.cancel()
    assert sse_seen == grpc_seen
    assert [lists for _, _, lists in sse_seen[1:]] == [
        [("services", []), ("added", ["t1"]), ("removed", []), ("updated", [])],
        [("services", []), ("added", ["t2"]), ("removed", []), ("updated", [])],
        [("services", []), ("added", []), ("removed", []), ("updated", ["t1"])],
        [("services", []), ("added", []), ("removed", ["t2"]), ("updated", [])],
        [("services", []), ("added", []), ("removed", ["t1"]), ("updated", [])],
    ]
