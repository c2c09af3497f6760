"""The gRPC calls of one native connection: a new stream's request dispatched to the server's
method, request bytes buffered and settled with the memory budget and the client's flow
control, answers (unary, streamed, bidi) queued on the HTTP/2 connection.

Apart from `registry.native_conn` (the asyncio Protocol: transport, output, idleness) so that
the gRPC rules live in one place and the socket glue in another; this module never touches
the transport, it asks its connection (`Host`) to flush. See docs/native-front.md.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Protocol

from registry.api import Exhausted, Invalid, Missing
from registry.grpcwire import HEAD, MAX_MESSAGE, TRAILERS_OK, CallError, Status, code_of, frame_message, status_block
from registry.h2.connection import ServerConnection
from registry.h2.events import DataReceived, ErrorCode, RequestReceived
from registry.h2.hpack import encode_indexed_name_literal
from registry.native_call import STREAM_BUFFER, Call, announced_too_large, take_messages

if TYPE_CHECKING:
    from registry.native_host import ServerSide

__all__ = ["CONNECTION_BUFFER", "Calls", "Host"]

log = logging.getLogger("registry.native")

CONNECTION_BUFFER = 16 << 20  # queued bytes per connection above which new calls are refused (retryable)

# Failures of a call's own making (its request, the catalog's answer): reported with their status.
_CALL_FAILURES = (CallError, Invalid, Missing, Exhausted)


class Host(Protocol):
    """What the calls need of their connection: send what is queued, now or after this loop
    pass, wait until the transport drains, and hear that calls came or went."""

    writable: asyncio.Event

    def flush(self) -> None: ...

    def flush_soon(self) -> None: ...

    def update_idle(self) -> None: ...


class Calls:
    """The open calls of one connection, by stream id, and everything done to them."""

    def __init__(self, host: Host, server: ServerSide, h2: ServerConnection) -> None:
        self.host = host
        self.server = server
        self.h2 = h2
        self.open: dict[int, Call] = {}
        self.paused: set[int] = set()  # bidi calls not reading requests until their answers drain
        self.closed = False  # the connection is gone: streaming calls stop

    def close(self) -> None:
        """The connection is lost: give back what calls buffered and cancel their tasks."""
        self.closed = True
        budget = self.server.budget
        for call in self.open.values():
            budget.add(-call.accounted)  # the buffers go with the connection
            call.accounted = 0
            if call.task is not None:
                call.task.cancel()
        budget.forget(self)
        self.open.clear()

    def cancel_tasks(self) -> None:
        """Server stopping: streaming calls end (UNAVAILABLE, see `run_stream`)."""
        for call in list(self.open.values()):
            if call.task is not None:
                call.task.cancel()

    # -- flow control and the memory budget --------------------------------------------------

    def credit(self, stream_id: int, call: Call, *, drop: bool = False) -> None:
        """Settle the call's buffer with the server's memory budget and the client's flow control.

        Bytes no longer buffered (consumed, or all of them when `drop`) are credited whatever the
        budget: they cost nothing any more. Buffered ones are credited while the budget has room,
        up to one maximal message, and not while a bidi call's answers wait (`paused`); else the
        client stalls and these calls are told when room frees. Past the budget itself, the
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
        if self.closed:
            return
        for sid, call in list(self.open.items()):
            if call.held and not call.paused and self.open.get(sid) is call:
                self.credit(sid, call)
        self.host.flush()

    # -- ending calls --------------------------------------------------------------------------

    def finish(self, stream_id: int, code: Status, message: str, *, started: bool) -> None:
        """End a call with `code`: trailers if the response has begun, else a trailers-only answer."""
        call = self.open.pop(stream_id, None)
        if call is not None:
            self.credit(stream_id, call, drop=True)
        stats = self.server.stats
        if code:
            key = int(code)  # a plain int: metrics print it (str() of a Status on 3.10 is its name)
            stats.errors[key] = stats.errors.get(key, 0) + 1
        block = status_block(code, message) if code else TRAILERS_OK
        if started:
            self.h2.send_trailers(stream_id, block)
        else:
            self.h2.send_headers(stream_id, HEAD + block, end_stream=True)

    def fail(self, stream_id: int, path: str, exc: Exception, *, started: bool) -> None:
        """End a call whose method raised: its own status for a failure of the call's making,
        INTERNAL (and a logged traceback) for a bug."""
        if isinstance(exc, _CALL_FAILURES):
            self.finish(stream_id, code_of(exc), str(exc), started=started)
            return
        log.error("native gRPC: %s failed", path, exc_info=exc)
        self.finish(stream_id, Status.INTERNAL, f"internal error in {path}: {type(exc).__name__}", started=started)

    def refuse(self, stream_id: int, code: Status, message: str, *, reset: bool = True) -> None:
        """Answer now, before the request is whole, and tell the client to stop sending it."""
        call = self.open.get(stream_id)
        if call is not None:
            call.done = True
        self.finish(stream_id, code, message, started=False)  # drops what the call held
        if reset:
            self.h2.reset(stream_id, ErrorCode.NO_ERROR)

    def reset(self, stream_id: int) -> None:
        """The client reset the stream (or the connection refused it): the call goes, unanswered."""
        call = self.open.pop(stream_id, None)
        if call is not None:
            self.credit(stream_id, call, drop=True)
            if call.task is not None:
                call.task.cancel()

    def expire(self, before: float) -> None:
        """Refuse calls opened before `before` whose request is still not whole: a never-ended
        request must not hold its stream and its share of the memory budget for ever."""
        for sid, call in list(self.open.items()):
            if call.kind != "bidi" and not call.done and call.opened < before:
                self.server.stats.request_timeouts += 1
                self.refuse(sid, Status.RESOURCE_EXHAUSTED, "request not complete in time")

    # -- requests ------------------------------------------------------------------------------

    def request(self, event: RequestReceived, body: bytes | None = None) -> bool:
        """Open a call for a new stream. `body` is the whole request body when its DATA event
        (with END_STREAM) came in the same read: a unary call whose one uncompressed message it
        is exactly is answered now, with no `Call` and nothing buffered (True: the caller skips
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
            self._not_grpc(sid, method)
            return False
        server = self.server
        if self.h2.pending_total:
            if self.h2.pending_total > CONNECTION_BUFFER:
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
        call = self.open[sid] = Call(path, kind, encoding)
        if event.end_stream:
            self.request_complete(sid, call)
        return False

    def _not_grpc(self, sid: int, method: str) -> None:
        """Not a gRPC call: a plain HTTP answer (grpc's PROTOCOL-HTTP2.md); a body still coming is
        read and dropped (no RST_STREAM: frames after ours must be ignored, so a peer's errors on
        the stream would go unanswered, which h2spec's 5.1 and 8.1 cases catch when timing splits them)."""
        status = b"405" if method != "POST" else b"415"
        head = encode_indexed_name_literal(8, status) + encode_indexed_name_literal(31, b"text/plain")
        if method == "HEAD":  # no body, ever (RFC 9110 9.3.2)
            self.h2.send_headers(sid, head, end_stream=True)
        else:  # a short body: h2spec checks flow control and stream states with it
            self.h2.send_headers(sid, head)
            self.h2.send_data(sid, b"a gRPC server: POST application/grpc\n", end_stream=True)

    def unary_whole(self, sid: int, path: str, body: bytes) -> None:
        """A unary call whose request (one uncompressed message of at most MAX_MESSAGE, nothing
        else) came whole in the read that opened its stream: answered now. What the
        general path (`Call`, `data`, `request_complete`) would do with it, without its
        bookkeeping: nothing is buffered, so the memory budget has nothing to count."""
        try:
            answer = self.server.unary[path](body[5:])
        except Exception as exc:  # noqa: BLE001 - a bug in a method costs its call (INTERNAL), logged by fail
            self.fail(sid, path, exc, started=False)
            return
        self.h2.respond(sid, HEAD, frame_message(answer), TRAILERS_OK)

    def data(self, event: DataReceived) -> None:
        """Request bytes for a call: buffered, and acted on once a message (bidi) or the whole
        request (unary, stream) is in; dropped (and credited) for a call that is over."""
        sid = event.stream_id
        call = self.open.get(sid)
        if call is None or call.done:
            self.h2.acknowledge_received_data(sid, len(event.data))
            return
        call.buf += event.data
        call.held += len(event.data)
        if call.kind != "bidi" and (len(call.buf) > MAX_MESSAGE + 5 or announced_too_large(call)):
            # Refused as soon as a length prefix says too much (grpcio does the same): the
            # client is told to stop (RST_STREAM) instead of sending us 16 MiB first.
            self.refuse(sid, Status.RESOURCE_EXHAUSTED, f"request larger than {MAX_MESSAGE} bytes")
        elif call.kind == "bidi":
            self.bidi_input(sid, call, event.end_stream)
        elif event.end_stream:
            self.request_complete(sid, call)
        if self.open.get(sid) is call:
            self.credit(sid, call)

    def _watches(self) -> int:
        """Server-streaming calls (Watch) open on this connection."""
        return sum(1 for c in self.open.values() if c.kind == "stream")

    def request_complete(self, sid: int, call: Call) -> None:
        call.done = True
        try:
            messages = take_messages(call, self.server.stats)
            if len(messages) != 1 or call.buf:
                raise CallError(
                    Status.INVALID_ARGUMENT,
                    f"{call.path} takes exactly one request message, got {len(messages)}"
                    + (f" and {len(call.buf)} stray bytes" if call.buf else ""),
                )
            if call.kind == "unary":
                body = self.server.unary[call.path](messages[0])
                del self.open[sid]
                self.credit(sid, call, drop=True)
                self.h2.respond(sid, HEAD, frame_message(body), TRAILERS_OK)
                return
            stream = self.server.streams[call.path](messages[0])  # checks the request first
        except Exception as exc:  # noqa: BLE001 - a bug in a method costs its call (INTERNAL), logged by fail
            self.fail(sid, call.path, exc, started=False)
            return
        call.task = asyncio.ensure_future(self.run_stream(sid, call, stream))

    # -- answers -------------------------------------------------------------------------------

    async def run_stream(self, sid: int, call: Call, stream: AsyncIterator[bytes]) -> None:
        started = False
        host = self.host
        try:
            async for message in stream:
                if not started:
                    self.h2.send_headers(sid, HEAD)
                    started = True
                self.h2.send_data(sid, self.server.framed(message))
                host.flush_soon()
                while self.h2.pending_bytes(sid) > STREAM_BUFFER or not host.writable.is_set():
                    if self.closed:
                        return
                    await self.wait_writable(sid)
            self.finish(sid, Status.OK, "", started=started)
        except asyncio.CancelledError:
            if not self.closed and sid in self.open:  # server stopping: tell the client why
                self.finish(sid, Status.UNAVAILABLE, "server shutting down", started=started)
                host.flush()
            raise
        except Exception as exc:  # noqa: BLE001 - a bug in a method costs its call (INTERNAL), logged by fail
            self.fail(sid, call.path, exc, started=started)
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()
        host.flush()
        if not self.closed:
            host.update_idle()

    async def wait_writable(self, sid: int) -> None:
        """Until the transport drains and the stream's queue shrinks (polled: WINDOW_UPDATEs are cheap to wait for)."""
        await self.host.writable.wait()
        if self.h2.pending_bytes(sid) > STREAM_BUFFER:
            await asyncio.sleep(0.01)

    def bidi_input(self, sid: int, call: Call, end_stream: bool) -> None:
        """Reflection: one answer per request message, in order, on the same stream.

        While more than STREAM_BUFFER of answers wait behind the client's window, its next
        requests stay unread in the buffer and are not credited (`paused`): a client that sends
        requests without reading answers stalls instead of making us queue answers without
        bound (10 MB of small requests once queued ~580 MB of answers)."""
        call.ended = call.ended or end_stream
        try:
            while True:
                if self.h2.pending_bytes(sid) > STREAM_BUFFER:
                    if not call.paused:
                        call.paused = True
                        self.paused.add(sid)
                        self.server.stats.bidi_paused += 1
                    return
                messages = take_messages(call, self.server.stats, 1)
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
            call = self.open.get(sid)
            if call is None or not call.paused:
                self.paused.discard(sid)
            elif self.h2.pending_bytes(sid) <= STREAM_BUFFER // 2:
                self.paused.discard(sid)
                call.paused = False
                self.bidi_input(sid, call, False)
                if self.open.get(sid) is call:
                    self.credit(sid, call)
