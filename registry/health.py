"""grpc.health.v1.Health with no transport in it: the serving status of a registry, as both
gRPC fronts (`registry.native`, `registry.rpc`) answer it, so they cannot disagree.

Why our own and not grpcio's `HealthServicer`: the native front has no grpcio in its process,
and the status follows the registry's life, which only `registry.server` knows: NOT_SERVING
until it has joined (or formed) its pool and loaded its catalog, SERVING then, NOT_SERVING
again from the moment it starts leaving.  A load balancer or orchestrator polling Check (or
holding a Watch) then sends no traffic to a registry whose catalog is still empty because its
seeds have not answered yet, and stops sending it to one that is draining.

Statuses are the same for the whole server ("") and for each registry service (v1 and the
Go-compatible `R`); any other name is unknown: Check answers NOT_FOUND, Watch answers
SERVICE_UNKNOWN and stays open, as grpc's health protocol says.

A Watch sends the current status, then every change in order: each watcher has its own queue
(a registry changes status a handful of times in its life, so the queues stay tiny), and a
status equal to the last one sent is not sent again.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from grpc_health.v1 import health_pb2

from registry.api import (
    COMPAT_SERVICE,
    V1_SERVICE,
    Missing,
    StreamMethod,
    UnaryMethod,
    parse,
)

__all__ = ["HEALTH_SERVICE", "Health"]

HEALTH_SERVICE = "grpc.health.v1.Health"
_Status = health_pb2.HealthCheckResponse
SERVICES = ("", V1_SERVICE, COMPAT_SERVICE)


class Health:
    """One server's serving status and its Watch streams (made and changed on the serving loop).

    `serving` is where a server starts: True for a bare front on a catalog (it has all it needs),
    False for a registry server, which says when it is ready.  `shutdown()` latches NOT_SERVING:
    a server that is leaving never says SERVING again, whoever calls `set_serving` after.
    """

    def __init__(self, serving: bool = True) -> None:
        self._serving = serving
        self._shut = False
        self._watchers: set[asyncio.Queue[bool]] = set()

    @property
    def serving(self) -> bool:
        return self._serving

    def set_serving(self, serving: bool) -> None:
        """Change the status (ignored after `shutdown`); every open Watch is told, in order."""
        if self._shut or serving == self._serving:
            return
        self._serving = serving
        for q in self._watchers:
            q.put_nowait(serving)

    def shutdown(self) -> None:
        """NOT_SERVING from now on, for good (the server is leaving or stopping)."""
        self.set_serving(False)
        self._shut = True

    def status(self, service: str) -> int:
        """The grpc.health.v1 status of `service` ("" = the whole server)."""
        if service not in SERVICES:
            return int(_Status.SERVICE_UNKNOWN)
        return int(_Status.SERVING if self._serving else _Status.NOT_SERVING)

    async def watch(self, service: str) -> AsyncIterator[bytes]:
        """The status now, then each change; ends only when the caller stops iterating."""
        q: asyncio.Queue[bool] = asyncio.Queue()
        self._watchers.add(q)
        try:
            last = self.status(service)
            yield _answer(last)
            if last == _Status.SERVICE_UNKNOWN:
                await asyncio.Future()  # an unknown service never changes; the stream stays open
            while True:
                status = int(_Status.SERVING if await q.get() else _Status.NOT_SERVING)
                if status != last:
                    last = status
                    yield _answer(status)
        finally:
            self._watchers.discard(q)

    def watcher_count(self) -> int:
        return len(self._watchers)

    # -- wire methods: serialized request in, serialized response out --------------------

    def unary_methods(self) -> dict[str, UnaryMethod]:
        return {f"/{HEALTH_SERVICE}/Check": self.wire_check}

    def stream_methods(self) -> dict[str, StreamMethod]:
        return {f"/{HEALTH_SERVICE}/Watch": self.wire_watch}

    def wire_check(self, data: bytes) -> bytes:
        req = parse(health_pb2.HealthCheckRequest, data)
        status = self.status(req.service)
        if status == _Status.SERVICE_UNKNOWN:
            raise Missing(f"unknown service {req.service!r}")
        return _answer(status)

    def wire_watch(self, data: bytes) -> AsyncIterator[bytes]:
        """Parses before returning, so a malformed request fails before the stream starts."""
        req = parse(health_pb2.HealthCheckRequest, data)
        return self.watch(req.service)


def _answer(status: int) -> bytes:
    data: bytes = health_pb2.HealthCheckResponse(status=status).SerializeToString()
    return data
