"""gRPC front of a Catalog: the v1 `registry.v1.Registry` API, the Go-compatible `R`
service, health and reflection, all on one grpc.aio server.

Why the handlers look unusual: they are hot (Match is the whole point of a registry),
so responses are assembled from cached, already-serialized protobuf bytes per service
and handed to gRPC with no serializer. A cache entry is keyed by (group, id) and is
valid while the catalog still hands out the *same* Service object (the catalog swaps
the object when a member changes), so no invalidation protocol is needed beyond
dropping entries of removed services.

Watch fan-out: every watcher owns a bounded asyncio.Queue fed synchronously by the
catalog's change callback (same loop, never blocks). A watcher whose queue is full is
not buffered further: its queue is emptied and replaced by one "resync" marker, and
the stream sends a fresh full snapshot (snapshot=true) when it gets there. Changes
queued after the marker whose version is not newer than that snapshot are skipped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from registry.catalog import Catalog, GroupChange, Service, UnknownGroup
from registry.ring import RingNode
from registry.compat import rpcserver_pb2 as compat_pb2
from registry.v1 import registry_pb2 as pb

__all__ = [
    "COMPAT_SERVICE",
    "MAX_BATCH_KEYS",
    "MAX_MATCH_N",
    "RpcServer",
    "TlsFiles",
    "V1_SERVICE",
    "WATCH_QUEUE_SIZE",
    "serve",
    "serve_grpc",
    "start_rpc",
]

log = logging.getLogger(__name__)

V1_SERVICE = pb.DESCRIPTOR.services_by_name["Registry"].full_name  # "registry.v1.Registry"
COMPAT_SERVICE = compat_pb2.DESCRIPTOR.services_by_name["R"].full_name  # "R" (no package, as in Go)
MAX_MATCH_N = 1000  # more distinct owners of one key than this is a client bug
MAX_BATCH_KEYS = 100_000
WATCH_QUEUE_SIZE = 1024  # changes buffered per watcher before it is resynced with a snapshot

_SERVER_OPTIONS: Sequence[tuple[str, Any]] = (
    ("grpc.so_reuseport", 0),  # a taken port must fail, not be shared
    ("grpc.keepalive_time_ms", 30_000),  # keep idle Watch streams alive through NATs
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),  # keep pinging idle Watch streams
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.max_receive_message_length", 16 << 20),
    ("grpc.max_send_message_length", 64 << 20),
)


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for the gRPC server; with `ca` clients must present a certificate it signed."""

    cert: str
    key: str
    ca: str | None = None

    def credentials(self) -> grpc.ServerCredentials:
        with open(self.cert, "rb") as f:
            cert = f.read()
        with open(self.key, "rb") as f:
            key = f.read()
        ca = None
        if self.ca:
            with open(self.ca, "rb") as f:
                ca = f.read()
        return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=ca is not None)


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field1(payload: bytes) -> bytes:
    """`payload` framed as length-delimited field 1 (the `services` field everywhere)."""
    return b"\x0a" + _varint(len(payload)) + payload


def service_pb(s: Service, nodes: Mapping[str, RingNode]) -> pb.Service:
    """`s` with the ring parameters the server's ring really uses for it (`nodes`: the ring's)."""
    node = nodes.get(s.id)
    replicas, weight = (node.replicas, node.weight) if node is not None else (s.replicas, s.weight)
    return pb.Service(id=s.id, group=s.group, addr=s.addr, tags=dict(s.tags), replicas=replicas, weight=weight)


def ring_info(catalog: Catalog) -> pb.RingInfo:
    """How `catalog` builds rings, so caching clients build identical ones."""
    return pb.RingInfo(algorithm=catalog.algorithm, default_replicas=catalog.default_replicas)


class _Encoded:
    """One service's pre-serialized forms (v1 Service and compat MatchResponse, field-1 framed).

    Valid as long as the catalog hands out the same Service object: a service's ring
    parameters depend only on itself and its group's fixed replica count (chash).
    """

    __slots__ = ("source", "v1", "compat", "compat_bare")
    source: Service
    v1: bytes
    compat: bytes
    compat_bare: bytes

    def __init__(self, s: Service, nodes: Mapping[str, RingNode]) -> None:
        self.source = s
        self.v1 = _field1(service_pb(s, nodes).SerializeToString())
        self.compat_bare = compat_pb2.MatchResponse(id=s.id, group=s.group, addr=s.addr).SerializeToString()
        self.compat = _field1(self.compat_bare)


_Item = tuple[int, bytes] | None  # (version, serialized WatchEvent) or None = resync


class _Watcher:
    __slots__ = ("queue",)

    def __init__(self) -> None:
        self.queue: asyncio.Queue[_Item] = asyncio.Queue(WATCH_QUEUE_SIZE)

    def offer(self, item: tuple[int, bytes]) -> None:
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(None)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class _Invalid(Exception):
    pass


class _Missing(Exception):
    pass


class RegistryCore:
    """Request handling shared by the v1 and compat services (no gRPC types inside).

    Made on the serving loop. The catalog should be changed on that loop too (the
    registry server does); a change from another thread is handed to the loop.
    """

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._encoded: dict[str, dict[str, _Encoded]] = {}
        self._watchers: dict[str, set[_Watcher]] = {}
        self._loop = asyncio.get_running_loop()
        self._unsubscribe = catalog.subscribe(self._on_change)

    def close(self) -> None:
        self._unsubscribe()

    # -- cache ---------------------------------------------------------------------------

    def encoded(self, s: Service) -> _Encoded:
        group = self._encoded.get(s.group)
        if group is None:
            group = self._encoded[s.group] = {}
        e = group.get(s.id)
        if e is None or e.source is not s:
            e = group[s.id] = _Encoded(s, self.ring_nodes(s.group))
        return e

    def ring_nodes(self, group: str) -> Mapping[str, RingNode]:
        try:
            return self.catalog.ring(group).nodes
        except UnknownGroup:
            return {}

    def _on_change(self, change: GroupChange) -> None:
        """Catalog callback (runs right after the change, on the applying thread)."""
        cached = self._encoded.get(change.group)
        if cached is not None:
            for s in change.removed:
                cached.pop(s.id, None)
        watchers = self._watchers.get(change.group)
        if watchers:
            # Serialized once for every watcher, with the ring as it is right after the change.
            nodes = self.ring_nodes(change.group)
            event = pb.WatchEvent(
                group=change.group,
                version=change.version,
                added=[service_pb(s, nodes) for s in change.added],
                removed=[service_pb(s, nodes) for s in change.removed],
                updated=[service_pb(s, nodes) for s in change.updated],
            ).SerializeToString()
            item = (change.version, event)
            if _running_loop() is self._loop:
                self._fan_out(change.group, item)
            else:  # the catalog was changed from another thread: queues belong to our loop
                self._loop.call_soon_threadsafe(self._fan_out, change.group, item)

    def _fan_out(self, group: str, item: tuple[int, bytes]) -> None:
        for w in tuple(self._watchers.get(group, ())):
            w.offer(item)

    # -- queries -------------------------------------------------------------------------

    @staticmethod
    def check_group(group: str) -> None:
        if not group:
            raise _Invalid("group is empty")

    def match(self, group: str, key: str, n: int) -> list[Service]:
        if not group:
            raise _Invalid("group is empty")
        if not key:
            raise _Invalid(f"key is empty (group {group!r})")
        if n == 0:
            n = 1
        elif n < 0 or n > MAX_MATCH_N:
            raise _Invalid(f"n={n} out of range 1..{MAX_MATCH_N} (group {group!r})")
        try:
            found = self.catalog.match(group, key, n)
        except UnknownGroup:
            raise self._missing(group) from None
        if not found:
            raise self._missing(group)
        return found

    def _missing(self, group: str) -> _Missing:
        if self.catalog.version(group) > 0:
            return _Missing(f"group {group!r} has no live member")
        return _Missing(f"group {group!r} not found")

    def match_batch(self, group: str, keys: Sequence[str]) -> list[Service]:
        if not group:
            raise _Invalid("group is empty")
        if len(keys) > MAX_BATCH_KEYS:
            raise _Invalid(f"{len(keys)} keys, at most {MAX_BATCH_KEYS} per batch (group {group!r})")
        if "" in keys:
            raise _Invalid(f"key #{list(keys).index('')} is empty (group {group!r})")
        try:
            found = self.catalog.match_batch(group, keys)
        except UnknownGroup:
            raise self._missing(group) from None
        if len(found) != len(keys):
            raise self._missing(group)
        return found

    def members(self, group: str) -> list[Service]:
        if not group:
            raise _Invalid("group is empty")
        try:
            found = self.catalog.members(group)
        except UnknownGroup:
            raise self._missing(group) from None
        if not found:
            raise self._missing(group)
        return found

    def version(self, group: str) -> int:
        return self.catalog.version(group)

    def snapshot(self, group: str) -> tuple[int, bytes]:
        version = self.version(group)
        nodes = self.ring_nodes(group)
        event = pb.WatchEvent(
            group=group,
            version=version,
            snapshot=True,
            services=[service_pb(s, nodes) for s in self.catalog.members(group)],
            ring=ring_info(self.catalog),
        )
        return version, event.SerializeToString()

    async def watch(self, group: str) -> AsyncIterator[bytes]:
        """Snapshot, then every change; see the module docstring for slow watchers."""
        if not group:
            raise _Invalid("group is empty")
        w = _Watcher()
        self._watchers.setdefault(group, set()).add(w)
        try:
            sent, data = self.snapshot(group)
            yield data
            while True:
                item = await w.queue.get()
                if item is None:
                    sent, data = self.snapshot(group)
                    yield data
                elif item[0] > sent:
                    sent = item[0]
                    yield item[1]
        finally:
            watchers = self._watchers.get(group)
            if watchers is not None:
                watchers.discard(w)
                if not watchers:
                    del self._watchers[group]

    def watcher_count(self, group: str) -> int:
        return len(self._watchers.get(group, ()))


# -- gRPC glue -------------------------------------------------------------------------------

_Handler = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Any]


async def _fail(context: grpc.aio.ServicerContext[Any, Any], exc: Exception) -> None:
    code = grpc.StatusCode.INVALID_ARGUMENT if isinstance(exc, _Invalid) else grpc.StatusCode.NOT_FOUND
    await context.abort(code, str(exc))


def _v1_handlers(core: RegistryCore) -> grpc.GenericRpcHandler:
    async def match(req: pb.MatchRequest, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        try:
            found = core.match(req.group, req.key, req.n)
        except (_Invalid, _Missing) as exc:
            await _fail(context, exc)
            raise  # unreachable: abort raises
        enc = core.encoded
        if len(found) == 1:
            return enc(found[0]).v1
        return b"".join([enc(s).v1 for s in found])

    async def match_batch(req: pb.MatchBatchRequest, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        try:
            found = core.match_batch(req.group, req.keys)
        except (_Invalid, _Missing) as exc:
            await _fail(context, exc)
            raise
        # Batches repeat few services many times: encode each distinct object once.
        local: dict[int, bytes] = {}
        out = []
        for s in found:
            b = local.get(id(s))
            if b is None:
                b = local[id(s)] = core.encoded(s).v1
            out.append(b)
        return b"".join(out)

    async def members(req: pb.MembersRequest, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        try:
            found = core.members(req.group)
        except (_Invalid, _Missing) as exc:
            await _fail(context, exc)
            raise
        body = b"".join([core.encoded(s).v1 for s in found])
        version = core.version(req.group)
        return body + (b"\x10" + _varint(version) if version else b"")

    async def groups(req: pb.GroupsRequest, context: grpc.aio.ServicerContext[Any, Any]) -> pb.GroupsResponse:
        return pb.GroupsResponse(groups=core.catalog.groups(), ring=ring_info(core.catalog))

    async def watch(req: pb.WatchRequest, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[bytes]:
        try:
            core.check_group(req.group)
        except _Invalid as exc:
            await _fail(context, exc)
            raise
        async for event in core.watch(req.group):
            yield event

    raw = None  # responses of the hot methods are pre-serialized bytes
    return grpc.method_handlers_generic_handler(
        V1_SERVICE,
        {
            "Match": grpc.unary_unary_rpc_method_handler(match, pb.MatchRequest.FromString, raw),
            "MatchBatch": grpc.unary_unary_rpc_method_handler(match_batch, pb.MatchBatchRequest.FromString, raw),
            "Members": grpc.unary_unary_rpc_method_handler(members, pb.MembersRequest.FromString, raw),
            "Groups": grpc.unary_unary_rpc_method_handler(
                groups, pb.GroupsRequest.FromString, pb.GroupsResponse.SerializeToString
            ),
            "Watch": grpc.unary_stream_rpc_method_handler(watch, pb.WatchRequest.FromString, raw),
        },
    )


def _compat_handlers(core: RegistryCore) -> grpc.GenericRpcHandler:
    async def match(req: compat_pb2.MatchRequest, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        try:
            found = core.match(req.group, req.key, 1)
        except (_Invalid, _Missing) as exc:
            await _fail(context, exc)
            raise
        return core.encoded(found[0]).compat_bare

    async def members(req: compat_pb2.MembersRequest, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        try:
            found = core.members(req.group)
        except (_Invalid, _Missing) as exc:
            await _fail(context, exc)
            raise
        return b"".join([core.encoded(s).compat for s in found])

    return grpc.method_handlers_generic_handler(
        COMPAT_SERVICE,
        {
            "Match": grpc.unary_unary_rpc_method_handler(match, compat_pb2.MatchRequest.FromString, None),
            "Members": grpc.unary_unary_rpc_method_handler(members, compat_pb2.MembersRequest.FromString, None),
        },
    )


@dataclass
class RpcServer:
    """A started gRPC server: `port` is the bound port (useful with port 0)."""

    server: grpc.aio.Server
    port: int
    core: RegistryCore
    health: health.aio.HealthServicer

    async def stop(self, grace: float | None = 1.0) -> None:
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        self.core.close()


def _split_port(addr: str) -> tuple[str, int]:
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"gRPC address {addr!r} is not host:port")
    return host, int(port)


async def start_rpc(
    catalog: Catalog,
    addr: str,
    *,
    tls: TlsFiles | None = None,
    options: Iterable[tuple[str, Any]] = (),
) -> RpcServer:
    """Bind `addr` ("host:port", ":port" = every interface, port 0 = pick) and start serving."""
    host, port = _split_port(addr)
    bind = f"{host or '[::]'}:{port}"
    server = grpc.aio.server(options=[*_SERVER_OPTIONS, *options])
    core = RegistryCore(catalog)
    try:
        server.add_generic_rpc_handlers((_v1_handlers(core), _compat_handlers(core)))
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        reflection.enable_server_reflection(
            (V1_SERVICE, COMPAT_SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        try:
            bound = server.add_secure_port(bind, tls.credentials()) if tls else server.add_insecure_port(bind)
        except RuntimeError as exc:  # grpc raises RuntimeError when it cannot bind
            raise OSError(f"cannot listen for gRPC on {addr}: {exc}") from exc
        if bound == 0:
            raise OSError(f"cannot listen for gRPC on {addr}")
        for name in ("", V1_SERVICE, COMPAT_SERVICE):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        await server.start()
    except BaseException:
        core.close()
        await server.stop(None)
        raise
    log.info("gRPC listening on %s:%d (tls=%s)", host or "*", bound, tls is not None)
    return RpcServer(server, bound, core, health_servicer)


async def serve_grpc(catalog: Catalog, addr: str, *, tls: TlsFiles | None = None) -> grpc.aio.Server:
    """Contract entry point: start serving `catalog` on `addr`; stop with `await server.stop(grace)`."""
    return (await start_rpc(catalog, addr, tls=tls)).server


serve = serve_grpc
