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
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from grpc_health.v1 import health_pb2

from registry.api import COMPAT_SERVICE, V1_SERVICE, Invalid, Missing, RegistryCore, StreamMethod, UnaryMethod, parse
from registry.catalog import Catalog
from registry.h2.connection import (
    ConnectionEnded,
    DataReceived,
    ErrorCode,
    Event,
    GoAwayReceived,
    RequestReceived,
    ServerConnection,
    StreamReset,
)
from registry.grpcwire import (
    HEAD,
    MAX_MESSAGE,
    TRAILERS_OK,
    CallError,
    Status,
    code_of,
    decompress,
    frame_message,
    status_block,
)
from registry.h2.hpack import encode_indexed_name_literal
from registry.tls import TlsFiles

__all__ = ["HEALTH_SERVICE", "KEEPALIVE", "NativeServer", "PREFACE_TIMEOUT", "start_native"]

log = logging.getLogger(__name__)

HEALTH_SERVICE = "grpc.health.v1.Health"
REFLECTION_SERVICE = "grpc.reflection.v1alpha.ServerReflection"
_STREAM_BUFFER = 1 << 20  # queued bytes per stream before a streaming call waits for the peer
_CONNECTION_BUFFER = 16 << 20  # queued bytes per connection above which new calls are refused (retryable)
KEEPALIVE = 30.0  # PING connections with open streams this often; no answer by the next: close
PREFACE_TIMEOUT = 20.0  # a connection that has not sent the HTTP/2 preface by then is closed


@dataclass
class Stats:
    """Counters a scrape or a test can read."""

    connections: int = 0
    calls: int = 0
    errors: dict[int, int] = field(default_factory=dict)  # grpc-status -> calls that ended with it
    protocol_errors: int = 0  # connections ended for an HTTP/2 violation
    compressed_requests: int = 0
    internal_errors: int = 0  # connections closed for a bug of ours (logged with a traceback)
    refused_streams: int = 0  # calls refused while a connection had too much output queued
    preface_timeouts: int = 0  # connections closed for not starting HTTP/2 in time


class _Call:
    __slots__ = ("path", "kind", "buf", "encoding", "task", "done", "started", "held")

    def __init__(self, path: str, kind: str, encoding: str) -> None:
        self.path = path
        self.kind = kind  # "unary" | "stream" | "bidi"
        self.buf = bytearray()
        self.encoding = encoding
        self.task: asyncio.Task[None] | None = None
        self.done = False  # the request is whole (or refused): later DATA is dropped
        self.started = False  # response headers sent (bidi calls)
        self.held = 0  # received bytes not yet acknowledged to the HTTP/2 flow control


class _Connection(asyncio.Protocol):
    """One client connection: HTTP/2 events in, gRPC calls dispatched."""

    def __init__(self, server: NativeServer) -> None:
        self.server = server
        self.h2 = ServerConnection()
        self.transport: asyncio.Transport | None = None
        self.calls: dict[int, _Call] = {}
        self.writable = asyncio.Event()
        self.writable.set()
        self.preface_timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server._connections.add(self)
        self.server.stats.connections += 1
        self.preface_timer = asyncio.get_running_loop().call_later(self.server.preface_timeout, self._preface_due)
        self.flush()

    def _preface_due(self) -> None:
        """Idle or non-HTTP/2 connections must not hold a socket for ever."""
        self.preface_timer = None
        if not self.h2.preface_received:
            self.server.stats.preface_timeouts += 1
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server._connections.discard(self)
        if self.preface_timer is not None:
            self.preface_timer.cancel()
        for call in self.calls.values():
            if call.task is not None:
                call.task.cancel()
        self.calls.clear()
        self.writable.set()
        self.transport = None

    def pause_writing(self) -> None:
        # The peer is not reading: stop reading its requests too, so answers cannot pile up.
        self.writable.clear()
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.writable.set()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        event: Event | None = None
        try:
            for event in self.h2.receive(data):
                self.handle(event)
        except Exception:  # a bug of ours must cost one connection, not the server
            log.exception("native gRPC: unexpected error %s", f"handling {type(event).__name__}" if event else "in HTTP/2")
            self.server.stats.internal_errors += 1
            self.h2.goaway(ErrorCode.INTERNAL_ERROR)
            self.flush()
            self.close()
            return
        self.flush()

    # -- output ------------------------------------------------------------------------

    def flush(self) -> None:
        out = self.h2.data_to_send()
        if out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(out)
        if self.h2.goaway_sent and not self.h2.open_streams and self.transport is not None:
            self.close()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def credit(self, stream_id: int, call: _Call, *, drop: bool = False) -> None:
        """Give the client flow-control credit for what the call no longer holds beyond one
        maximal message (everything when `drop`): its buffer, not its windows, bounds it."""
        keep = 0 if drop else max(0, len(call.buf) - MAX_MESSAGE - 5)
        if call.held > keep:
            self.h2.acknowledge_received_data(stream_id, call.held - keep)
            call.held = keep
        if drop:
            call.buf.clear()

    def finish(self, stream_id: int, code: int, message: str, *, started: bool) -> None:
        """End a call with `code`: trailers if the response has begun, else a trailers-only answer."""
        call = self.calls.pop(stream_id, None)
        if call is not None:
            self.credit(stream_id, call, drop=True)
        stats = self.server.stats
        if code:
            stats.errors[code] = stats.errors.get(code, 0) + 1
        block = status_block(code, message) if code else TRAILERS_OK
        if started:
            self.h2.send_trailers(stream_id, block)
        else:
            self.h2.send_headers(stream_id, HEAD + block, end_stream=True)

    # -- events ------------------------------------------------------------------------

    def handle(self, event: Event) -> None:
        if isinstance(event, DataReceived):
            call = self.calls.get(event.stream_id)
            if call is None or call.done:
                self.h2.acknowledge_received_data(event.stream_id, len(event.data))
                return
            call.buf += event.data
            call.held += len(event.data)
            if len(call.buf) > MAX_MESSAGE + 5 and call.kind != "bidi":
                self.refuse(event.stream_id, Status.RESOURCE_EXHAUSTED, f"request larger than {MAX_MESSAGE} bytes")
            elif call.kind == "bidi":
                self.bidi_input(event.stream_id, call, event.end_stream)
            elif event.end_stream:
                self.request_complete(event.stream_id, call)
            if self.calls.get(event.stream_id) is call:
                self.credit(event.stream_id, call)
        elif isinstance(event, RequestReceived):
            self.request(event)
        elif isinstance(event, StreamReset):
            call = self.calls.pop(event.stream_id, None)
            if call is not None:
                self.credit(event.stream_id, call, drop=True)
                if call.task is not None:
                    call.task.cancel()
        elif isinstance(event, GoAwayReceived):
            pass  # the client opens no more streams; the ones it has finish normally
        elif isinstance(event, ConnectionEnded):
            self.server.stats.protocol_errors += 1
            log.info("native gRPC: closing a connection: %s", event.reason)
            self.flush()
            self.close()

    def request(self, event: RequestReceived) -> None:
        sid = event.stream_id
        path = method = content_type = ""
        encoding = "identity"
        for name, value in event.headers:
            if name == ":path":
                path = value
            elif name == ":method":
                method = value
            elif name == "content-type":
                content_type = value
            elif name == "grpc-encoding":
                encoding = value
        if method != "POST" or not content_type.startswith("application/grpc"):
            # not a gRPC call: a plain HTTP answer (grpc's PROTOCOL-HTTP2.md), and no more of its body
            status = b"405" if method != "POST" else b"415"
            self.h2.send_headers(sid, encode_indexed_name_literal(8, status), end_stream=True)
            if not event.end_stream:
                self.h2.reset(sid, ErrorCode.NO_ERROR)
            return
        if self.h2.pending_total > _CONNECTION_BUFFER:
            # The client opens calls faster than it lets their answers through its flow-control
            # windows: REFUSED_STREAM is safe for it to retry, and bounds what we hold for it.
            self.server.stats.refused_streams += 1
            self.h2.reset(sid, ErrorCode.REFUSED_STREAM)
            return
        self.server.stats.calls += 1
        kind = self.server.kind_of(path)
        if kind is None:
            self.refuse(sid, Status.UNIMPLEMENTED, f"unknown method {path}", reset=not event.end_stream)
            return
        call = self.calls[sid] = _Call(path, kind, encoding)
        if event.end_stream:
            self.request_complete(sid, call)

    def refuse(self, stream_id: int, code: int, message: str, *, reset: bool = True) -> None:
        """Answer now, before the request is whole, and tell the client to stop sending it."""
        call = self.calls.get(stream_id)
        if call is not None:
            call.done = True
        self.finish(stream_id, code, message, started=False)  # drops what the call held
        if reset:
            self.h2.reset(stream_id, ErrorCode.NO_ERROR)

    def _messages(self, call: _Call) -> list[bytes]:
        """Complete messages at the front of `call.buf` (taken out), decompressed."""
        out: list[bytes] = []
        buf = call.buf
        while len(buf) >= 5:
            size = int.from_bytes(buf[1:5], "big")
            if size > MAX_MESSAGE:
                raise CallError(Status.RESOURCE_EXHAUSTED, f"request message of {size} bytes, at most {MAX_MESSAGE}")
            if len(buf) < 5 + size:
                break
            compressed, data = buf[0], bytes(buf[5 : 5 + size])
            del buf[: 5 + size]
            if compressed:
                data = decompress(call.encoding, data)
                self.server.stats.compressed_requests += 1
            out.append(data)
        return out

    def request_complete(self, sid: int, call: _Call) -> None:
        call.done = True
        try:
            messages = self._messages(call)
            if len(messages) != 1 or call.buf:
                raise CallError(
                    Status.INVALID_ARGUMENT,
                    f"{call.path} takes exactly one request message, got {len(messages)}"
                    + (f" and {len(call.buf)} stray bytes" if call.buf else ""),
                )
            if call.kind == "unary":
                body = self.server.unary[call.path](messages[0])
                del self.calls[sid]
                self.credit(sid, call, drop=True)
                self.h2.respond(sid, HEAD, frame_message(body), TRAILERS_OK)
                return
            stream = self.server.streams[call.path](messages[0])  # checks the request first
        except (CallError, Invalid, Missing) as exc:
            self.finish(sid, code_of(exc), str(exc), started=False)
            return
        except Exception as exc:
            log.exception("native gRPC: %s failed", call.path)
            self.finish(sid, Status.INTERNAL, f"internal error in {call.path}: {type(exc).__name__}", started=False)
            return
        call.task = asyncio.ensure_future(self.run_stream(sid, call, stream))

    async def run_stream(self, sid: int, call: _Call, stream: AsyncIterator[bytes]) -> None:
        started = False
        try:
            async for message in stream:
                if not started:
                    self.h2.send_headers(sid, HEAD)
                    started = True
                self.h2.send_data(sid, frame_message(message))
                self.flush()
                while self.h2.pending_bytes(sid) > _STREAM_BUFFER or not self.writable.is_set():
                    if self.transport is None:
                        return
                    await self.wait_writable(sid)
            self.finish(sid, Status.OK, "", started=started)
        except (Invalid, Missing) as exc:
            self.finish(sid, code_of(exc), str(exc), started=started)
        except asyncio.CancelledError:
            if self.transport is not None and sid in self.calls:  # server stopping: tell the client why
                self.finish(sid, Status.UNAVAILABLE, "server shutting down", started=started)
                self.flush()
            raise
        except Exception as exc:
            log.exception("native gRPC: %s failed", call.path)
            self.finish(sid, Status.INTERNAL, f"internal error in {call.path}: {type(exc).__name__}", started=started)
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()
        self.flush()

    async def wait_writable(self, sid: int) -> None:
        """Until the transport drains and the stream's queue shrinks (polled: WINDOW_UPDATEs are cheap to wait for)."""
        await self.writable.wait()
        if self.h2.pending_bytes(sid) > _STREAM_BUFFER:
            await asyncio.sleep(0.01)

    def bidi_input(self, sid: int, call: _Call, end_stream: bool) -> None:
        """Reflection: one answer per request message, in order, on the same stream."""
        try:
            for message in self._messages(call):
                answer = self.server.bidi[call.path](message)
                if not self.h2.is_open(sid):
                    return
                if not call.started:  # first answer: the response headers go first
                    self.h2.send_headers(sid, HEAD)
                    call.started = True
                self.h2.send_data(sid, frame_message(answer))
        except (CallError, Invalid, ValueError) as exc:
            self.refuse(sid, code_of(exc), str(exc), reset=not end_stream)
            return
        if end_stream:
            self.finish(sid, Status.OK, "", started=call.started)


class NativeServer:
    """A listening native gRPC server; `port` is the bound port (useful with port 0)."""

    def __init__(self, catalog: Catalog, keepalive: float = KEEPALIVE, preface_timeout: float = PREFACE_TIMEOUT) -> None:
        self.keepalive = keepalive
        self.preface_timeout = preface_timeout
        self.core = RegistryCore(catalog)
        self.stats = Stats()
        self.port = 0
        self.unary: dict[str, UnaryMethod] = self.core.unary_methods()
        self.unary[f"/{HEALTH_SERVICE}/Check"] = self._health_check
        self.streams: dict[str, StreamMethod] = self.core.stream_methods()
        self.streams[f"/{HEALTH_SERVICE}/Watch"] = self._health_watch
        self.bidi: dict[str, Callable[[bytes], bytes]] = {f"/{REFLECTION_SERVICE}/ServerReflectionInfo": self._reflect}
        self._reflection: Any = None
        self._serving = True
        self._health_changed = asyncio.Event()
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[_Connection] = set()
        self._keepalive_timer: asyncio.TimerHandle | None = None

    def kind_of(self, path: str) -> str | None:
        if path in self.unary:
            return "unary"
        if path in self.streams:
            return "stream"
        if path in self.bidi:
            return "bidi"
        return None

    async def start(self, host: str, port: int, tls: TlsFiles | None = None) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self),
            host.strip("[]") or None,
            port,
            reuse_address=True,
            backlog=1024,
            ssl=tls.ssl_context() if tls is not None else None,
            ssl_handshake_timeout=10.0 if tls is not None else None,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._keepalive_timer = loop.call_later(self.keepalive, self._ping_idle_streams)

    def _ping_idle_streams(self) -> None:
        """Keep long Watch streams alive through NATs, and drop peers that stopped answering."""
        for conn in list(self._connections):
            if not conn.calls:
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
        self._serving = False
        self._health_changed.set()
        if self._keepalive_timer is not None:
            self._keepalive_timer.cancel()
        if self._server is not None:
            self._server.close()
        for conn in list(self._connections):
            conn.h2.goaway()
            conn.flush()
        for _ in range(3):  # health watchers wake on the next loop turn: let them send NOT_SERVING
            await asyncio.sleep(0)
        for conn in list(self._connections):
            for call in list(conn.calls.values()):
                if call.task is not None:
                    call.task.cancel()
        deadline = asyncio.get_running_loop().time() + (grace or 0.0)
        while self._connections and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        for conn in list(self._connections):
            conn.flush()
            conn.close()
        if self._server is not None:
            await self._server.wait_closed()
        self.core.close()

    # -- health and reflection -----------------------------------------------------------

    def _health_status(self, service: str) -> int:
        r = health_pb2.HealthCheckResponse
        if service not in ("", V1_SERVICE, COMPAT_SERVICE):
            return int(r.SERVICE_UNKNOWN)
        return int(r.SERVING if self._serving else r.NOT_SERVING)

    @staticmethod
    def _health_answer(status: int) -> bytes:
        data: bytes = health_pb2.HealthCheckResponse(status=status).SerializeToString()
        return data

    def _health_check(self, data: bytes) -> bytes:
        req = parse(health_pb2.HealthCheckRequest, data)
        status = self._health_status(req.service)
        if status == health_pb2.HealthCheckResponse.SERVICE_UNKNOWN:
            raise Missing(f"unknown service {req.service!r}")
        return self._health_answer(status)

    def _health_watch(self, data: bytes) -> AsyncIterator[bytes]:
        req = parse(health_pb2.HealthCheckRequest, data)
        return self._health_updates(req.service)

    async def _health_updates(self, service: str) -> AsyncIterator[bytes]:
        status = self._health_status(service)
        yield self._health_answer(status)
        if self._serving:
            await self._health_changed.wait()
            if self._health_status(service) != status:
                yield self._health_answer(self._health_status(service))
        await asyncio.Future()  # a Watch stays open until the client or the server ends it

    def _reflect(self, data: bytes) -> bytes:
        if self._reflection is None:
            from registry.reflection import Reflection  # first use only: descriptors cost memory

            self._reflection = Reflection((V1_SERVICE, COMPAT_SERVICE, HEALTH_SERVICE, REFLECTION_SERVICE))
        return self._reflection.answer(data)  # type: ignore[no-any-return]


async def start_native(
    catalog: Catalog,
    addr: str,
    *,
    tls: TlsFiles | None = None,
    keepalive: float = KEEPALIVE,
    preface_timeout: float = PREFACE_TIMEOUT,
) -> NativeServer:
    """Bind `addr` ("host:port", ":port" = every interface, port 0 = pick) and start serving,
    over TLS (HTTP/2 by ALPN; mutual when `tls.ca` is set) when `tls` is given."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"gRPC address {addr!r} is not host:port")
    server = NativeServer(catalog, keepalive, preface_timeout)
    try:
        await server.start(host, int(port), tls)
    except BaseException:
        server.core.close()
        raise
    log.info("gRPC (native) listening on %s:%d (tls=%s)", host or "*", server.port, tls is not None)
    return server
