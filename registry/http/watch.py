"""`GET /v1/watch/<group>`: the gRPC Watch's events as Server-Sent Events.

The stream is `RegistryCore.watch` itself (a snapshot, then every change, a fresh snapshot when the watcher
fell behind), so an SSE client and a gRPC Watch of the same group see the same versions and services. Each
WatchEvent is written as `event: snapshot` or `event: change`, `id: <version>`, `data: <the event as JSON>`
(`json_format.MessageToDict` with the proto's field names; its uint64 `version` is a JSON string there, as
proto3's JSON mapping says). A comment line every 15 s keeps proxies from closing an idle stream and finds
a vanished client. An SSE stream counts against the Watch cap of the registry (`registry.api.MAX_WATCHERS`,
both fronts and this one together): beyond it, 429 RESOURCE_EXHAUSTED before the stream starts.
`?dc=NAME` watches that datacenter's group from this registry's mirror of it, as gRPC's
`Watch(datacenter=...)` does (events numbered by the stream; an unknown datacenter 404, one not synced 503).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from registry.api import RegistryCore
from registry.http.answers import dumps, message_json
from registry.v1 import registry_pb2 as pb

__all__ = ["HEARTBEAT", "Watches"]

HEARTBEAT = 15.0


class Watches:
    """The SSE route; `close()` ends every open stream (the server is stopping)."""

    def __init__(self, core: RegistryCore, heartbeat: float = HEARTBEAT) -> None:
        self.core = core
        self.heartbeat = heartbeat
        self._closing = asyncio.get_running_loop().create_future()

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/v1/watch/{group}", self.watch, allow_head=False)]  # a HEAD would hold a watcher for nothing

    def close(self) -> None:
        if not self._closing.done():
            self._closing.set_result(None)

    async def watch(self, request: web.Request) -> web.StreamResponse:
        group = request.match_info["group"]
        self.core.check_group(group)
        dc = request.query.get("dc", "")
        if dc:  # another datacenter's group, from this registry's mirror of it (the gRPC Watch's datacenter)
            # wire_watch checks the datacenter and the watcher room before the stream starts (404/503/429)
            events = self.core.wire_watch(pb.WatchRequest(group=group, datacenter=dc).SerializeToString())
        else:
            self.core.check_watcher_room()  # 429 before any byte of the stream
            events = self.core.watch(group)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8",
                                               "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        try:
            await response.prepare(request)
            await self._pump(events, response)
        except ConnectionResetError:
            pass  # the client went away: the finally below frees the watcher (and on a cancel too)
        finally:
            close = getattr(events, "aclose", None)  # an async generator: its finally frees the watcher
            if close is not None:
                with contextlib.suppress(Exception):
                    await close()
        return response

    async def _pump(self, events: AsyncIterator[bytes], response: web.StreamResponse) -> None:
        pending: asyncio.Future[bytes] | None = None
        try:
            while not self._closing.done():
                if pending is None:
                    pending = asyncio.ensure_future(events.__anext__())
                done, _ = await asyncio.wait({pending, self._closing}, timeout=self.heartbeat,
                                             return_when=asyncio.FIRST_COMPLETED)
                if pending not in done:
                    if not self._closing.done():
                        await response.write(b": heartbeat\n\n")
                    continue
                data = pending.result()
                pending = None
                await response.write(sse_event(data))
        finally:
            if pending is not None and not pending.done():
                pending.cancel()
                with contextlib.suppress(BaseException):
                    await pending


def sse_event(data: bytes) -> bytes:
    """One serialized WatchEvent as an SSE event."""
    event = pb.WatchEvent()
    event.ParseFromString(data)
    kind = b"snapshot" if event.snapshot else b"change"
    return (b"event: " + kind + b"\nid: " + str(event.version).encode() + b"\ndata: "
            + dumps(message_json(event)) + b"\n\n")
