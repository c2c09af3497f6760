"""The registry's own gRPC server: gRPC over HTTP/2 on an asyncio Protocol, with no grpcio.

Why not grpc.aio: on a 2-core machine its call path costs ~200 us of event-loop time per
unary call, against a few tens of microseconds here (frames parsed by
`registry.h2.connection`, answers from `registry.api.RegistryCore` as cached bytes), and
grpcio's C core adds ~10 MiB to every registry process. Clients are unchanged: this is
gRPC on the wire (PROTOCOL-HTTP2.md of grpc/grpc), tested against grpcio's client.

What it serves: every registry method (unary and Watch), grpc.health.v1.Health (Check,
Watch) and server reflection (v1alpha), in plaintext or over TLS (Python's ssl, loaded only
then; mutual TLS with a CA). Compression: requests in gzip or deflate are accepted, answers
are never compressed (they are small, and mostly cached bytes).

How the front is cut into modules, its connection and stream model, its limits and its tests:
docs/native-front.md.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from registry.addresses import parse_hostport
from registry.api import (
    COMPAT_SERVICE,
    V1_SERVICE,
    RegistryCore,
    StreamMethod,
    UnaryMethod,
)
from registry.catalog import Catalog
from registry.grpcwire import frame_message
from registry.health import HEALTH_SERVICE, Health
from registry.native_call import CallKind
from registry.native_conn import Connection
from registry.native_limits import Budget, Limits
from registry.native_listen import ConnectionTable, Listener
from registry.native_stats import Stats
from registry.tls import TlsFiles

__all__ = ["HEALTH_SERVICE", "KEEPALIVE", "PREFACE_TIMEOUT", "NativeServer", "start_native"]

log = logging.getLogger(__name__)

REFLECTION_SERVICE = "grpc.reflection.v1alpha.ServerReflection"
KEEPALIVE = 30.0  # PING connections with open streams this often; no answer by the next: close
PREFACE_TIMEOUT = 20.0  # a connection that has not sent the HTTP/2 preface by then is closed


class NativeServer:
    """A listening native gRPC server; `port` is the bound port (useful with port 0)."""

    def __init__(
        self,
        catalog: Catalog,
        keepalive: float = KEEPALIVE,
        preface_timeout: float = PREFACE_TIMEOUT,
        limits: Limits | None = None,
        health: Health | None = None,
    ) -> None:
        self.keepalive = keepalive
        self.preface_timeout = preface_timeout
        self.limits = limits if limits is not None else Limits()
        self.core = RegistryCore(catalog, self.limits.max_watchers)
        self.stats = Stats()
        self.table = ConnectionTable(self.limits, self.stats)
        self.budget = Budget(self.limits.memory_budget)  # request bytes buffered, all connections
        self.queued = 0  # answer bytes waiting behind clients' flow-control windows, all connections
        self.port = 0
        #: The status health Check/Watch report; a registry server passes its own and drives it.
        self.health = health if health is not None else Health()
        self.unary: dict[str, UnaryMethod] = {**self.core.unary_methods(), **self.health.unary_methods()}
        self.streams: dict[str, StreamMethod] = {**self.core.stream_methods(), **self.health.stream_methods()}
        self.bidi: dict[str, Callable[[bytes], bytes]] = {f"/{REFLECTION_SERVICE}/ServerReflectionInfo": self._reflect}
        self._reflection: Any = None
        self._listener: Listener | None = None
        #: Live connections (each adds and removes itself: registry.native_host.ServerSide).
        self.connections: set[Connection] = set()
        self._keepalive_timer: asyncio.TimerHandle | None = None
        self._requests_timer: asyncio.TimerHandle | None = None
        self._framed: tuple[bytes, bytes] | None = None  # (message, framed): a change fans out framed once

    def framed(self, message: bytes) -> bytes:
        """`message` with its gRPC prefix; the same change sent to every watcher is framed once."""
        last = self._framed
        if last is not None and last[0] is message:
            return last[1]
        out = frame_message(message)
        self._framed = (message, out)
        return out

    def kind_of(self, path: str) -> CallKind | None:
        """How the method at `path` is run (see registry.native_call.CallKind); None: no such method."""
        if path in self.unary:
            return "unary"
        if path in self.streams:
            return "stream"
        if path in self.bidi:
            return "bidi"
        return None

    async def start(self, host: str, port: int, tls: TlsFiles | None = None) -> None:
        loop = asyncio.get_running_loop()
        ssl = tls.ssl_context() if tls is not None else None
        self._listener = Listener(lambda source, sock: Connection(self, source, sock), self.table, ssl=ssl)
        self.port = await self._listener.start(host.strip("[]"), port, backlog=1024)
        self._keepalive_timer = loop.call_later(self.keepalive, self._ping_idle_streams)
        self._requests_timer = loop.call_later(self.limits.request_timeout / 2, self._expire_requests)

    def _expire_requests(self) -> None:
        """Every half request_timeout: refuse requests that have been arriving for longer."""
        loop = asyncio.get_running_loop()
        try:
            before = loop.time() - self.limits.request_timeout
            for conn in list(self.connections):
                if conn.calls.open:
                    conn.expire_requests(before)
        finally:
            self._requests_timer = loop.call_later(self.limits.request_timeout / 2, self._expire_requests)

    def _ping_idle_streams(self) -> None:
        """Keep long Watch streams alive through NATs, and drop peers that stopped answering."""
        for conn in list(self.connections):
            if not conn.calls.open:
                continue
            if conn.h2.pings_sent > conn.h2.pings_acked:
                log.info("native gRPC: a peer left a keepalive PING unanswered for %.0f s; closing", self.keepalive)
                conn.close()
                continue
            conn.h2.ping()
            conn.flush()
        self._keepalive_timer = asyncio.get_running_loop().call_later(self.keepalive, self._ping_idle_streams)

    async def stop(self, grace: float | None = 1.0) -> None:
        """Refuse new calls (GOAWAY), let unary ones finish for up to `grace` s, end streams UNAVAILABLE."""
        self.health.shutdown()
        if self._keepalive_timer is not None:
            self._keepalive_timer.cancel()
        if self._requests_timer is not None:
            self._requests_timer.cancel()
        if self._listener is not None:
            self._listener.close()
        for conn in list(self.connections):
            conn.h2.goaway()
            conn.flush()
        for _ in range(3):  # health watchers wake on the next loop turn: let them send NOT_SERVING
            await asyncio.sleep(0)
        for conn in list(self.connections):
            conn.calls.cancel_tasks()
        deadline = asyncio.get_running_loop().time() + (grace or 0.0)
        while self.connections and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        for conn in list(self.connections):
            conn.flush()
            conn.close()
        if self._listener is not None:
            await self._listener.wait_closed()
        self.core.close()

    # -- reflection ----------------------------------------------------------------------

    def _reflect(self, data: bytes) -> bytes:
        if self._reflection is None:
            from registry.reflection import (
                Reflection,  # first use only: descriptors cost memory
            )

            self._reflection = Reflection((V1_SERVICE, COMPAT_SERVICE, HEALTH_SERVICE, REFLECTION_SERVICE))
        return self._reflection.answer(data)  # type: ignore[no-any-return]


async def start_native(
    catalog: Catalog,
    addr: str,
    *,
    tls: TlsFiles | None = None,
    keepalive: float = KEEPALIVE,
    preface_timeout: float = PREFACE_TIMEOUT,
    limits: Limits | None = None,
    health: Health | None = None,
) -> NativeServer:
    """Bind `addr` ("host:port", ":port" = every interface, port 0 = pick) and start serving,
    over TLS (HTTP/2 by ALPN; mutual when `tls.ca` is set) when `tls` is given."""
    listen = parse_hostport(addr, "gRPC address")  # UsageError, a ValueError, when malformed
    host = listen.host
    server = NativeServer(catalog, keepalive, preface_timeout, limits, health)
    try:
        await server.start(host, listen.port, tls)
    except BaseException:
        server.core.close()
        raise
    log.info("gRPC (native) listening on %s:%d (tls=%s)", host or "*", server.port, tls is not None)
    return server
