"""One native gRPC connection: HTTP/2 events (`registry.h2.connection`) in, gRPC calls dispatched
to the server's methods, answers out. The server side (`registry.native.NativeServer`) owns the
methods, the listening sockets and the limits; a connection owns its calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from registry.api import Exhausted, Invalid, Missing
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
from registry.h2.hpack import encode_indexed_name_literal

if TYPE_CHECKING:
    from registry.native import NativeServer

__all__ = ["Connection"]

log = logging.getLogger("registry.native")

_STREAM_BUFFER = 1 << 20  # queued bytes per stream before a streaming call waits for the peer
_CONNECTION_BUFFER = 16 << 20  # queued bytes per connection above which new calls are refused (retryable)
# What one connection may send us before we credit any of it: with a 1 MiB stream window, a
# connection that stalls on the memory budget holds at most this much (it was 16 MiB: two
# stalled connections filled the budget and calls still receiving had to be refused).
_RECEIVE_WINDOW = 1 << 20
_CLOSE_GRACE = 5.0  # seconds a closed connection may take to hand its last bytes to a slow reader


class _Call:
    __slots__ = (
        "accounted", "buf", "done", "encoding", "ended", "held", "kind", "opened", "path", "paused", "started", "task"
    )

    def __init__(self, path: str, kind: str, encoding: str) -> None:
        self.path = path
        self.kind = kind  # "unary" | "stream" | "bidi"
        self.buf = bytearray()
        self.encoding = encoding
        self.task: asyncio.Task[None] | None = None
        self.done = False  # the request is whole (or refused): later DATA is dropped
        self.started = False  # response headers sent (bidi calls)
        self.held = 0  # received bytes not yet acknowledged to the HTTP/2 flow control
        self.accounted = 0  # len(buf) as the server's memory budget counts it
        self.paused = False  # bidi: answers wait behind the client's window; its requests wait too
        self.ended = False  # bidi: the client ended its side (answered once the buffer is drained)
        self.opened = asyncio.get_running_loop().time()  # a request still incomplete long after: refused


class Connection(asyncio.Protocol):
    """One client connection: HTTP/2 events in, gRPC calls dispatched."""

    def __init__(self, server: NativeServer, source: str = "", sock: socket.socket | None = None) -> None:
        self.server = server
        self.source = source  # the peer's address, for the per-source connection cap
        self.socket = sock  # until connection_made: shedding closes it before a transport exists
        self.shed_early = False
        self.h2 = ServerConnection(connection_window=_RECEIVE_WINDOW)
        self.transport: asyncio.Transport | None = None
        self.calls: dict[int, _Call] = {}
        self.writable = asyncio.Event()
        self.writable.set()
        self.preface_timer: asyncio.TimerHandle | None = None
        self.queued = 0  # h2.pending_total as last added to server.queued (answers behind closed windows)
        self.paused: set[int] = set()  # bidi calls not reading requests until their answers drain
        self.queued_limit = _STREAM_BUFFER  # past the process's output budget, more than this here: closed
        self.flush_pending = False
        self.busy = False  # what the connection table was last told (idle from accept on)

    # -- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.socket = None
        if self.shed_early:  # shed while its TLS handshake (or its first loop pass) was under way
            transport.abort()
            return
        self.server._connections.add(self)
        self.server.table.add(self)
        self.server.table.set_idle(self)
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
        self.server.table.remove(self)
        if self.preface_timer is not None:
            self.preface_timer.cancel()
        budget = self.server.budget
        for call in self.calls.values():
            budget.add(-call.accounted)  # the buffers go with the connection
            call.accounted = 0
            if call.task is not None:
                call.task.cancel()
        budget.forget(self)
        self.calls.clear()
        self.server.queued -= self.queued
        self.queued = 0
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
        opened = self.h2.last_stream_id
        try:
            events = self.h2.receive(data)
            # Requests whose whole body came in this read too (one DATA event, with END_STREAM):
            # a unary call is answered from it when its headers are handled (see `request`), and
            # its DATA event is skipped, acknowledged with the others after the loop.
            whole: dict[int, DataReceived | None] = {}
            for event in events:
                if type(event) is DataReceived:
                    sid = event.stream_id
                    whole[sid] = event if event.end_stream and sid not in whole else None
            consumed = 0
            for event in events:
                if type(event) is RequestReceived:
                    body = whole.get(event.stream_id) if whole and not event.end_stream else None
                    if body is None:
                        self.request(event)
                    elif self.request(event, body.data):
                        del whole[event.stream_id]
                        consumed += len(body.data)
                elif type(event) is DataReceived and event.stream_id not in whole:
                    continue  # consumed by `request`
                else:
                    self.handle(event)
            if consumed:  # those streams are closed for receiving: only the connection's window is owed
                self.h2.acknowledge_received_data(0, consumed)
        except Exception:  # a bug of ours must cost one connection, not the server
            log.exception("native gRPC: unexpected error %s", f"handling {type(event).__name__}" if event else "in HTTP/2")
            self.server.stats.internal_errors += 1
            self.h2.goaway(ErrorCode.INTERNAL_ERROR)
            self.flush()
            self.close()
            return
        if self.paused:
            self.resume_paused()
        self.flush()
        if self.busy != bool(self.calls or self.h2.open_streams):
            self.update_idle()
        elif not self.busy and self.h2.last_stream_id != opened:
            self.server.table.touch(self)  # calls came and went within this read: activity

    def update_idle(self) -> None:
        """Tell the connection table whether a call is open (grpc's idleness: no outstanding RPC)."""
        if self.calls or self.h2.open_streams:
            self.busy = True
            self.server.table.set_busy(self)
        else:
            self.busy = False
            self.server.table.set_idle(self)

    def shed(self) -> None:
        """Idle too long, or the oldest idle one when room is needed: GOAWAY, then close."""
        if self.transport is None:
            self.shed_early = True
            if self.socket is not None:  # ends a TLS handshake in progress now, not at its timeout
                with contextlib.suppress(OSError):
                    self.socket.shutdown(socket.SHUT_RDWR)
            return
        if self.transport.is_closing():
            return
        self.h2.goaway()
        self.flush()
        self.close()

    # -- output ------------------------------------------------------------------------

    def flush(self) -> None:
        queued = self.h2.pending_total
        if queued != self.queued and self.transport is not None:
            self.server.queued += queued - self.queued
            self.queued = queued
            if queued > self.queued_limit and self.server.queued > 2 * self.server.limits.output_budget:
                # Far over the budget, and growing here: this client is not reading what it
                # asks for. Its connection goes, with what is queued for it.
                self.server.stats.output_shed += 1
                self.h2.goaway(ErrorCode.ENHANCE_YOUR_CALM)
                out = self.h2.data_to_send()
                self.transport.write(out)
                self.transport.abort()
                return
        out = self.h2.data_to_send()
        if out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(out)
        if self.h2.goaway_sent and not self.h2.open_streams and self.transport is not None:
            self.close()

    def flush_soon(self) -> None:
        """Flush once this loop pass is over: a change fanned out to many Watch streams of one
        connection leaves in one write, not one per stream."""
        if not self.flush_pending:
            self.flush_pending = True
            asyncio.get_running_loop().call_soon(self._flush_later)

    def _flush_later(self) -> None:
        self.flush_pending = False
        self.flush()

    def close(self) -> None:
        """Close after what is written, but within _CLOSE_GRACE s: a peer that stops reading must
        not hold the socket (and what is queued for it) for ever."""
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.close()
            if transport.get_write_buffer_size():
                asyncio.get_running_loop().call_later(_CLOSE_GRACE, transport.abort)

    def credit(self, stream_id: int, call: _Call, *, drop: bool = False) -> None:
        """Settle the call's buffer with the server's memory budget and the client's flow control.

        Bytes no longer buffered (consumed, or all of them when `drop`) are credited whatever the
        budget: they cost nothing any more. Buffered ones are credited while the budget has room,
        up to one maximal message, and not while a bidi call's answers wait (`paused`); else the
        client stalls and this connection is told when room frees. Past the budget itself, the
        call is refused rather than buffer more (see registry.native_limits.Budget)."""
        if drop:
            call.buf.clear()
        size = len(call.buf)
        budget = self.server.budget
        if size != call.accounted:
            budget.add(size - call.accounted)
            call.accounted = size
        gone = call.held - size
        if gone > 0:
            self.h2.acknowledge_received_data(stream_id, gone)
            call.held = size
        if drop or not call.held:
            return
        if budget.over:
            self.server.stats.over_budget += 1
            self.refuse(stream_id, Status.RESOURCE_EXHAUSTED, "server memory budget for requests exhausted; retry later")
        elif budget.may_credit and not call.paused and size <= MAX_MESSAGE + 5:
            self.h2.acknowledge_received_data(stream_id, call.held)
            call.held = 0
        elif not call.paused:
            budget.wait(self)

    def budget_freed(self) -> None:
        """The memory budget has room again: credit what calls held back, then send it."""
        if self.transport is None:
            return
        for sid, call in list(self.calls.items()):
            if call.held and not call.paused and self.calls.get(sid) is call:
                self.credit(sid, call)
        self.flush()

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
            if call.kind != "bidi" and (len(call.buf) > MAX_MESSAGE + 5 or self._announced_too_large(call)):
                # Refused as soon as a length prefix says too much (grpcio does the same): the
                # client is told to stop (RST_STREAM) instead of sending us 16 MiB first.
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

    def request(self, event: RequestReceived, body: bytes | None = None) -> bool:
        """Open a call for a new stream. `body` is the whole request body when its DATA event
        (with END_STREAM) came in the same read: a unary call whose one uncompressed message it
        is exactly is answered now, with no `_Call` and nothing buffered (True: the caller skips
        that DATA event and acknowledges `body`); anything else takes the general path (False)."""
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
            # not a gRPC call: a plain HTTP answer (grpc's PROTOCOL-HTTP2.md); a body still coming is
            # read and dropped (no RST_STREAM: frames after ours must be ignored, so a peer's errors
            # on the stream would go unanswered, which h2spec's 5.1 and 8.1 cases catch when timing splits them)
            status = b"405" if method != "POST" else b"415"
            head = encode_indexed_name_literal(8, status) + encode_indexed_name_literal(31, b"text/plain")
            if method == "HEAD":  # no body, ever (RFC 9110 9.3.2)
                self.h2.send_headers(sid, head, end_stream=True)
            else:  # a short body: h2spec checks flow control and stream states with it
                self.h2.send_headers(sid, head)
                self.h2.send_data(sid, b"a gRPC server: POST application/grpc\n", end_stream=True)
            return False
        server = self.server
        if self.h2.pending_total:
            if self.h2.pending_total > _CONNECTION_BUFFER:
                # The client opens calls faster than it lets their answers through its flow-control
                # windows: REFUSED_STREAM is safe for it to retry, and bounds what we hold for it.
                server.stats.refused_streams += 1
                self.h2.reset(sid, ErrorCode.REFUSED_STREAM)
                return False
            if server.queued > server.limits.output_budget:
                # The same, summed over every connection: many clients that each stay under the
                # per-connection bound must not add up to more than the process can hold. Only
                # clients that leave answers waiting themselves are refused: one that reads its
                # answers is served whatever others do.
                server.stats.output_refused += 1
                self.h2.reset(sid, ErrorCode.REFUSED_STREAM)
                return False
        server.stats.calls += 1
        kind = server.kind_of(path)
        if (
            body is not None
            and kind == "unary"
            and 5 <= len(body) <= MAX_MESSAGE + 5
            and body[0] == 0
            and int.from_bytes(body[1:5], "big") == len(body) - 5
        ):
            self.unary_whole(sid, path, body)
            return True
        if kind is None:
            self.refuse(sid, Status.UNIMPLEMENTED, f"unknown method {path}", reset=not event.end_stream)
            return False
        if kind == "stream" and self._watches() >= server.limits.max_watches_per_connection:
            server.stats.watches_refused += 1
            limit = server.limits.max_watches_per_connection
            self.refuse(sid, Status.RESOURCE_EXHAUSTED, f"at most {limit} streams per connection", reset=not event.end_stream)
            return False
        call = self.calls[sid] = _Call(path, kind, encoding)
        if event.end_stream:
            self.request_complete(sid, call)
        return False

    def unary_whole(self, sid: int, path: str, body: bytes) -> None:
        """A unary call whose request (one uncompressed message of at most MAX_MESSAGE, nothing
        else) came whole in the read that opened its stream: answered now. What the
        general path (`_Call`, `handle`, `request_complete`) would do with it, without its
        bookkeeping: nothing is buffered, so the memory budget has nothing to count."""
        try:
            answer = self.server.unary[path](body[5:])
        except (CallError, Invalid, Missing, Exhausted) as exc:
            self.finish(sid, code_of(exc), str(exc), started=False)
            return
        except Exception as exc:
            log.exception("native gRPC: %s failed", path)
            self.finish(sid, Status.INTERNAL, f"internal error in {path}: {type(exc).__name__}", started=False)
            return
        self.h2.respond(sid, HEAD, frame_message(answer), TRAILERS_OK)

    def expire_requests(self, before: float) -> None:
        """Refuse calls opened before `before` whose request is still not whole: a never-ended
        request must not hold its stream and its share of the memory budget for ever."""
        for sid, call in list(self.calls.items()):
            if call.kind != "bidi" and not call.done and call.opened < before:
                self.server.stats.request_timeouts += 1
                self.refuse(sid, Status.RESOURCE_EXHAUSTED, "request not complete in time")
        self.flush()
        self.update_idle()

    def _watches(self) -> int:
        """Server-streaming calls (Watch) open on this connection."""
        return sum(1 for c in self.calls.values() if c.kind == "stream")

    def refuse(self, stream_id: int, code: int, message: str, *, reset: bool = True) -> None:
        """Answer now, before the request is whole, and tell the client to stop sending it."""
        call = self.calls.get(stream_id)
        if call is not None:
            call.done = True
        self.finish(stream_id, code, message, started=False)  # drops what the call held
        if reset:
            self.h2.reset(stream_id, ErrorCode.NO_ERROR)

    @staticmethod
    def _announced_too_large(call: _Call) -> bool:
        buf = call.buf
        return len(buf) >= 5 and int.from_bytes(buf[1:5], "big") > MAX_MESSAGE

    def _messages(self, call: _Call, most: int = 1 << 30) -> list[bytes]:
        """Complete messages at the front of `call.buf` (up to `most`, taken out), decompressed."""
        out: list[bytes] = []
        buf = call.buf
        while len(buf) >= 5 and len(out) < most:
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
        except (CallError, Invalid, Missing, Exhausted) as exc:
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
                self.h2.send_data(sid, self.server.framed(message))
                self.flush_soon()
                while self.h2.pending_bytes(sid) > _STREAM_BUFFER or not self.writable.is_set():
                    if self.transport is None:
                        return
                    await self.wait_writable(sid)
            self.finish(sid, Status.OK, "", started=started)
        except (Invalid, Missing, Exhausted) as exc:
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
        if self.transport is not None:
            self.update_idle()

    async def wait_writable(self, sid: int) -> None:
        """Until the transport drains and the stream's queue shrinks (polled: WINDOW_UPDATEs are cheap to wait for)."""
        await self.writable.wait()
        if self.h2.pending_bytes(sid) > _STREAM_BUFFER:
            await asyncio.sleep(0.01)

    def bidi_input(self, sid: int, call: _Call, end_stream: bool) -> None:
        """Reflection: one answer per request message, in order, on the same stream.

        While more than _STREAM_BUFFER of answers wait behind the client's window, its next
        requests stay unread in the buffer and are not credited (`paused`): a client that sends
        requests without reading answers stalls instead of making us queue answers without
        bound (10 MB of small requests once queued ~580 MB of answers)."""
        call.ended = call.ended or end_stream
        try:
            while True:
                if self.h2.pending_bytes(sid) > _STREAM_BUFFER:
                    if not call.paused:
                        call.paused = True
                        self.paused.add(sid)
                        self.server.stats.bidi_paused += 1
                    return
                messages = self._messages(call, 1)
                if not messages:
                    break
                answer = self.server.bidi[call.path](messages[0])
                if not self.h2.is_open(sid):
                    return
                if not call.started:  # first answer: the response headers go first
                    self.h2.send_headers(sid, HEAD)
                    call.started = True
                self.h2.send_data(sid, frame_message(answer))
        except (CallError, Invalid, ValueError) as exc:
            self.refuse(sid, code_of(exc), str(exc), reset=not call.ended)
            return
        call.paused = False
        self.paused.discard(sid)
        if call.ended:
            if call.buf:
                self.finish(sid, Status.INVALID_ARGUMENT, f"{len(call.buf)} stray bytes after the last message", started=call.started)
            else:
                self.finish(sid, Status.OK, "", started=call.started)

    def resume_paused(self) -> None:
        """After the client's WINDOW_UPDATEs: bidi calls whose answers drained read requests again."""
        for sid in list(self.paused):
            call = self.calls.get(sid)
            if call is None or not call.paused:
                self.paused.discard(sid)
            elif self.h2.pending_bytes(sid) <= _STREAM_BUFFER // 2:
                self.paused.discard(sid)
                call.paused = False
                self.bidi_input(sid, call, False)
                if self.calls.get(sid) is call:
                    self.credit(sid, call)
