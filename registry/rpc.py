"""grpcio front of a Catalog: the v1 `registry.v1.Registry` API, the Go-compatible `R`
service, health and reflection, all on one grpc.aio server.

The registry's default front is the native one (`registry.native`); this one serves
with `-rpc-engine grpcio` (its TLS is grpcio's own BoringSSL). Both call the same
`registry.api.RegistryCore` methods on serialized bytes, so answers and errors are
identical; here gRPC gets no (de)serializers at all.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_reflection.v1alpha import reflection

from registry.addresses import format_hostport, parse_hostport
from registry.api import (
    COMPAT_SERVICE,
    MAX_BATCH_KEYS,
    MAX_MATCH_N,
    V1_SERVICE,
    WATCH_QUEUE_SIZE,
    Exhausted,
    Invalid,
    Missing,
    RegistryCore,
    StreamMethod,
    UnaryMethod,
)
from registry.catalog import Catalog
from registry.grpcwire import code_of
from registry.health import HEALTH_SERVICE, Health
from registry.tls import TlsFiles

__all__ = [
    "COMPAT_SERVICE",
    "MAX_BATCH_KEYS",
    "MAX_MATCH_N",
    "V1_SERVICE",
    "WATCH_QUEUE_SIZE",
    "RegistryCore",
    "RpcServer",
    "TlsFiles",
    "serve",
    "serve_grpc",
    "start_rpc",
]

log = logging.getLogger(__name__)

_SERVER_OPTIONS: Sequence[tuple[str, Any]] = (
    ("grpc.so_reuseport", 0),  # a taken port must fail, not be shared
    ("grpc.keepalive_time_ms", 30_000),  # keep idle Watch streams alive through NATs
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),  # keep pinging idle Watch streams
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.max_receive_message_length", 16 << 20),
    ("grpc.max_send_message_length", 64 << 20),
)


# -- gRPC glue -------------------------------------------------------------------------------


def _code(exc: Exception) -> grpc.StatusCode:
    """The status both fronts give a failed call (registry.grpcwire.code_of), as grpcio names it."""
    return grpc.StatusCode[code_of(exc).name]


def _unary(method: UnaryMethod) -> grpc.RpcMethodHandler:
    async def handle(data: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        try:
            return method(data)
        except (Invalid, Missing) as exc:
            await context.abort(_code(exc), str(exc))
            raise  # unreachable: abort raises

    return grpc.unary_unary_rpc_method_handler(handle, None, None)


def _stream(method: StreamMethod) -> grpc.RpcMethodHandler:
    async def handle(data: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[bytes]:
        try:
            events = method(data)
            async for event in events:
                yield event
        except (Invalid, Missing, Exhausted) as exc:
            await context.abort(_code(exc), str(exc))

    return grpc.unary_stream_rpc_method_handler(handle, None, None)


def _handlers(core: RegistryCore, health: Health) -> grpc.GenericRpcHandler:
    """One generic handler for every registry and health method, keyed by full path.

    Health is `registry.health`'s, not grpcio's HealthServicer: the same status, and the same
    answers, as the native front's, driven by the registry server's life.
    """
    unary = {**core.unary_methods(), **health.unary_methods()}
    table: dict[str, grpc.RpcMethodHandler] = {path: _unary(m) for path, m in unary.items()}
    streams = {**core.stream_methods(), **health.stream_methods()}
    table.update({path: _stream(m) for path, m in streams.items()})

    class Handler(grpc.GenericRpcHandler):  # type: ignore[misc]
        def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
            return table.get(details.method)

    return Handler()


@dataclass
class RpcServer:
    """A started gRPC server: `port` is the bound port (useful with port 0)."""

    server: grpc.aio.Server
    port: int
    core: RegistryCore
    health: Health

    async def stop(self, grace: float | None = 1.0) -> None:
        self.health.shutdown()
        for _ in range(3):  # health watchers wake on the next loop turns: let them send NOT_SERVING
            await asyncio.sleep(0)
        await self.server.stop(grace)
        self.core.close()


async def start_rpc(
    catalog: Catalog,
    addr: str,
    *,
    tls: TlsFiles | None = None,
    options: Iterable[tuple[str, Any]] = (),
    health: Health | None = None,
) -> RpcServer:
    """Bind `addr` ("host:port", ":port" = every interface, port 0 = pick) and start serving;
    health reports `health` (SERVING from the start when None)."""
    listen = parse_hostport(addr, "gRPC address")  # UsageError, a ValueError, when malformed
    host = listen.host
    bind = format_hostport(host or "::", listen.port)
    if tls is not None:
        tls.ssl_context()  # grpcio reports unusable PEM files as "Failed to bind": check them first, by name
    server = grpc.aio.server(options=[*_SERVER_OPTIONS, *options])
    core = RegistryCore(catalog)
    health = health if health is not None else Health()
    try:
        server.add_generic_rpc_handlers((_handlers(core, health),))
        reflection.enable_server_reflection((V1_SERVICE, COMPAT_SERVICE, HEALTH_SERVICE, reflection.SERVICE_NAME), server)
        try:
            bound = server.add_secure_port(bind, tls.credentials()) if tls else server.add_insecure_port(bind)
        except RuntimeError as exc:  # grpc raises RuntimeError when it cannot bind
            raise OSError(f"cannot listen for gRPC on {addr}: {exc}") from exc
        if bound == 0:
            raise OSError(f"cannot listen for gRPC on {addr}")
        await server.start()
    except BaseException:
        core.close()
        await server.stop(None)
        raise
    log.info("gRPC listening on %s:%d (tls=%s)", host or "*", bound, tls is not None)
    return RpcServer(server, bound, core, health)


async def serve_grpc(catalog: Catalog, addr: str, *, tls: TlsFiles | None = None) -> grpc.aio.Server:
    """Contract entry point: start serving `catalog` on `addr`; stop with `await server.stop(grace)`."""
    return (await start_rpc(catalog, addr, tls=tls)).server


serve = serve_grpc
