"""Inbound gossip TCP streams on asyncio: our own accept loop and one Protocol per connection.

Why not `asyncio.start_server` with a StreamReader: its accept loop logs a traceback every
second while the process is out of file descriptors, a StreamReader buffers up to twice its
limit per connection whatever we decide, and it admits whoever connects.  Here every byte is
charged to `Admission` before it reaches the framer, a newcomer at a full table sheds an idle
holder instead of being refused, and accept failures for lack of descriptors shed or pause
quietly and are counted.  Each stream reads one message (within `inbound_message_timeout` of
accept), hands it to the machine, writes the reply and closes, all within `tcp_timeout`.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import Counter
from collections.abc import Callable
from typing import Any, cast

from .admission import (
    ACCEPT_BATCH,
    NO_FD_BACKOFF,
    NO_FD_ERRNOS,
    Admission,
    Shed,
    first_message_timeout,
    make_admission,
)
from .config import Config
from .types import Address

__all__ = ["InboundServer"]

log = logging.getLogger(__name__)

class _Stream(asyncio.Protocol):
    """One inbound exchange: read one framed message, answer it, close."""

    def __init__(self, server: InboundServer, source: Address, accepted: float) -> None:
        from .stream import StreamFramer  # the codec is only needed once streams flow

        self._server = server
        self.source = source
        self.accepted = accepted
        self._framer = StreamFramer(expect_label=True, max_size=server.config.max_stream_size,
                                    max_user_size=server.config.max_stream_user_msg_size)
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.done = False  # the message arrived
        self.closed = False

    # -- asyncio callbacks ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        if self.closed:  # shed before its transport existed
            self._transport.abort()
            return
        self._arm(self.accepted + first_message_timeout(self._server.config))

    def data_received(self, data: bytes) -> None:
        if self.done or self.closed:
            return
        server = self._server
        stats = server.stats
        stats["tcp.in.bytes"] += len(data)
        try:
            for victim, why in server.admission.charge(self, len(data)):
                server.shed(victim, why)
            if self.closed:
                return
            msg = self._framer.feed(data)
        except ValueError as exc:  # DecodeError: too large, malformed, unknown type
            stats["tcp.in.drop." + str(getattr(exc, "reason", "malformed"))] += 1
            log.debug("inbound stream from %s dropped: %s", self.source, exc)
            self.abort()
            return
        if msg is None:
            return
        self.done = True
        server.admission.complete(self, server.loop.time())
        transport = self._transport
        assert transport is not None
        transport.pause_reading()
        self._arm(self.accepted + server.config.tcp_timeout)
        try:
            reply = server.handle(msg, self.source)
        except Exception as exc:  # noqa: BLE001 - never let one connection hurt the node
            stats["runner.exception.connection"] += 1
            log.warning("inbound connection failed: %r", exc)
            self.abort()
            return
        if self.closed:
            return
        if reply:
            transport.write(reply)
            stats["tcp.out.bytes"] += len(reply)
        transport.close()  # after the reply is flushed; the exchange deadline still applies

    def eof_received(self) -> bool:
        if not self.done:
            self._server.stats["tcp.in.eof"] += 1
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None and not self.closed:
            self._server.stats["tcp.in.error"] += 1
            log.debug("inbound stream from %s failed: %s", self.source, exc)
        self._forget()

    # -- ours -------------------------------------------------------------------------------

    def _arm(self, deadline: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._server.loop.call_at(deadline, self._expired)

    def _expired(self) -> None:
        self._timer = None
        if self.closed:
            return
        stats = self._server.stats
        stats["tcp.in.timeout"] += 1
        if not self.done:
            stats["tcp.in.timeout.first_message"] += 1
        log.debug("inbound stream from %s timed out", self.source)
        self.abort()

    def _forget(self) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._server.forget(self)

    def abort(self) -> None:
        """Close now, discarding anything unsent (shed, timed out, or malformed)."""
        if self.closed:
            return
        self._forget()
        if self._transport is not None:
            self._transport.abort()


class InboundServer:
    """Accepts gossip TCP connections on a listening socket and serves each as a `_Stream`."""

    def __init__(
        self,
        sock: socket.socket,
        *,
        config: Config,
        handle: Callable[[bytes, Address], bytes | None],
        stats: Counter[str],
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.config = config
        self.handle = handle
        self.stats = stats
        self.admission: Admission[_Stream] = make_admission(config)
        self._sock = sock
        self._streams: set[_Stream] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._reading = False
        self._resume: asyncio.TimerHandle | None = None
        self._closed = False
        sock.setblocking(False)

    def start(self) -> None:
        self._listen()

    def _listen(self) -> None:
        self._resume = None
        if not self._closed and not self._reading:
            self.loop.add_reader(self._sock.fileno(), self._on_readable)
            self._reading = True

    def _pause(self, delay: float) -> None:
        if self._reading:
            self.loop.remove_reader(self._sock.fileno())
            self._reading = False
        if self._resume is None:
            self._resume = self.loop.call_later(delay, self._listen)

    async def close(self) -> None:
        """Stop accepting and abort every open stream.  Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._resume is not None:
            self._resume.cancel()
        if self._reading:
            self.loop.remove_reader(self._sock.fileno())
            self._reading = False
        self._sock.close()
        for stream in list(self._streams):
            stream.abort()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2.0)
        # An aborted transport closes its socket on the next loop iteration: let it, so the
        # port can be bound again as soon as close() returns.
        await asyncio.sleep(0)

    # -- accepting --------------------------------------------------------------------------

    def _on_readable(self) -> None:
        for i in range(ACCEPT_BATCH):
            try:
                conn, peer = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in NO_FD_ERRNOS:
                    # Linux checks for a free descriptor before looking at the queue, so only a
                    # failure on the first try (the listener was readable) proves a newcomer waits.
                    if i == 0:
                        self._out_of_fds()
                else:  # e.g. ECONNABORTED: that connection is gone, the listener is fine
                    self.stats["tcp.accept.error"] += 1
                    log.debug("accept failed: %s", exc)
                return
            self._admit(conn, peer)

    def _out_of_fds(self) -> None:
        """No descriptor for the next connection: shed an idle stream to make one (it is
        closed by the loop before accepting resumes), else pause accepting briefly.  Counted,
        never logged per retry, never spinning."""
        self.stats["tcp.accept.no_fd"] += 1
        victim = self.admission.shed_for_fd(self.loop.time())
        if victim is not None:
            self.shed(victim, Shed.NO_FD)
            self._pause(0.0)
        else:
            self._pause(NO_FD_BACKOFF)

    def _admit(self, conn: socket.socket, peer: Any) -> None:
        try:
            source = Address(str(peer[0]), int(peer[1]))
        except (IndexError, TypeError, ValueError):
            source = Address("0.0.0.0", 0)
        stream = _Stream(self, source, self.loop.time())
        admitted, shed = self.admission.admit(stream, source.host, stream.accepted)
        for victim, why in shed:
            self.shed(victim, why)
        if not admitted:
            self.stats["tcp.in.rejected_busy"] += 1
            conn.close()
            return
        self.stats["tcp.accept"] += 1
        self._streams.add(stream)
        task = self.loop.create_task(self._connect(stream, conn))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect(self, stream: _Stream, conn: socket.socket) -> None:
        try:
            await self.loop.connect_accepted_socket(lambda: stream, conn)
        except asyncio.CancelledError:
            conn.close()
            stream.abort()
        except Exception as exc:  # noqa: BLE001 - e.g. the peer reset already
            self.stats["tcp.in.error"] += 1
            log.debug("inbound stream from %s failed at setup: %s", stream.source, exc)
            conn.close()
            stream.abort()

    # -- called by streams ------------------------------------------------------------------

    def shed(self, victim: _Stream, why: Shed) -> None:
        self.stats["tcp.in.shed." + why.value] += 1
        log.debug("inbound stream from %s shed (%s)", victim.source, why.value)
        victim.abort()

    def forget(self, stream: _Stream) -> None:
        self.admission.release(stream)
        self._streams.discard(stream)
