"""One native gRPC connection as an asyncio Protocol: bytes read go through the HTTP/2 state
machine (`registry.h2.connection`), its events to the connection's gRPC calls
(`registry.native_calls`), and what both queue is written out here, within the output budget.
The server side (`registry.native.NativeServer`, seen through `registry.native_host.ServerSide`) owns
the methods, the listening sockets and the limits; a connection owns its transport, its idleness and its calls. See docs/native-front.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import TYPE_CHECKING

from registry.h2.connection import ServerConnection
from registry.h2.events import ConnectionEnded, DataReceived, ErrorCode, GoAwayReceived, RequestReceived, StreamReset
from registry.native_call import STREAM_BUFFER
from registry.native_calls import Calls

if TYPE_CHECKING:
    from registry.h2.events import Event
    from registry.native_host import ServerSide

__all__ = ["Connection"]

log = logging.getLogger("registry.native")

# What one connection may send us before we credit any of it: with a 1 MiB stream window, a
# connection that stalls on the memory budget holds at most this much (it was 16 MiB: two
# stalled connections filled the budget and calls still receiving had to be refused).
_RECEIVE_WINDOW = 1 << 20
_CLOSE_GRACE = 5.0  # seconds a closed connection may take to hand its last bytes to a slow reader


def _still_buffered(transport: asyncio.Transport) -> int:
    """Bytes still queued on a transport we just closed. Python 3.10's TLS transport raises
    AttributeError here once its socket is gone (sslproto reads its lost inner transport; seen in
    CI at a server stop): then nothing is left to send."""
    try:
        return transport.get_write_buffer_size()
    except AttributeError:
        return 0

class Connection(asyncio.Protocol):
    """One client connection: HTTP/2 events in, gRPC calls dispatched."""

    def __init__(self, server: ServerSide, source: str = "", sock: socket.socket | None = None) -> None:
        self.server = server
        self.source = source  # the peer's address, for the per-source connection cap
        self.socket = sock  # until connection_made: shedding closes it before a transport exists
        self.shed_early = False
        self.h2 = ServerConnection(connection_window=_RECEIVE_WINDOW)
        self.transport: asyncio.Transport | None = None
        self.calls = Calls(self, server, self.h2)
        self.writable = asyncio.Event()
        self.writable.set()
        self.preface_timer: asyncio.TimerHandle | None = None
        self.queued = 0  # h2.pending_total as last added to server.queued (answers behind closed windows)
        self.queued_limit = STREAM_BUFFER  # past the process's output budget, more than this here: closed
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
        self.server.connections.add(self)
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
        self.server.connections.discard(self)
        self.server.table.remove(self)
        if self.preface_timer is not None:
            self.preface_timer.cancel()
        self.calls.close()
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
                        self.calls.request(event)
                    elif self.calls.request(event, body.data):
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
        if self.calls.paused:
            self.calls.resume_paused()
        self.flush()
        if self.busy != bool(self.calls.open or self.h2.open_streams):
            self.update_idle()
        elif not self.busy and self.h2.last_stream_id != opened:
            self.server.table.touch(self)  # calls came and went within this read: activity

    def update_idle(self) -> None:
        """Tell the connection table whether a call is open (grpc's idleness: no outstanding RPC)."""
        if self.calls.open or self.h2.open_streams:
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
            if _still_buffered(transport):
                asyncio.get_running_loop().call_later(_CLOSE_GRACE, transport.abort)

    def budget_freed(self) -> None:
        """The memory budget has room again (see `Calls.credit`)."""
        self.calls.budget_freed()

    def expire_requests(self, before: float) -> None:
        """Refuse calls whose request has been arriving since before `before` (request_timeout)."""
        self.calls.expire(before)
        self.flush()
        self.update_idle()

    # -- events ------------------------------------------------------------------------

    def handle(self, event: Event) -> None:
        if isinstance(event, DataReceived):
            self.calls.data(event)
        elif isinstance(event, RequestReceived):
            self.calls.request(event)
        elif isinstance(event, StreamReset):
            self.calls.reset(event.stream_id)
        elif isinstance(event, GoAwayReceived):
            pass  # the client opens no more streams; the ones it has finish normally
        elif isinstance(event, ConnectionEnded):
            self.server.stats.protocol_errors += 1
            log.info("native gRPC: closing a connection: %s", event.reason)
            self.flush()
            self.close()
