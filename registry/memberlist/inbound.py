"""Inbound gossip TCP streams on asyncio: our own accept loop and one Protocol per connection.

Why not `asyncio.start_server` with a StreamReader: its accept loop logs a traceback every
second while the process is out of file descriptors, a StreamReader buffers up to twice its
limit per connection whatever we decide, and it admits whoever connects.  Here every byte is
charged to the `gate.Gate` (the thread driver's too) before it reaches the framer, a newcomer
at a full table sheds an idle holder instead of being refused, and accept failures for lack
of descriptors shed or pause quietly and are counted.  Each stream reads one message (within `inbound_message_timeout` of
accept), hands it to the machine, writes the reply and closes, all within `tcp_timeout`.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import Counter
from collections.abc import Callable
from typing import Any, cast

from .admission import NO_FD_BACKOFF, first_message_timeout
from .config import Config
from .gate import Gate, accept_some, inbound_framer, peer_address
from .types import Address

__all__ = ["InboundServer"]

log = logging.getLogger(__name__)

class _Stream(asyncio.Protocol):
    """One inbound exchange: read one framed message, answer it, close."""

    def __init__(self, server: InboundServer, source: Address, accepted: float) -> None:
        self._server = server
        self.source = source
        self.accepted = accepted
        self._framer = inbound_framer(server.config)
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
        msg = server.gate.receive(self, self._framer, data, server.loop.time())
        if msg is None:
            return
        self.done = True
        transport = self._transport
        assert transport is not None
        transport.pause_reading()
        self._arm(self.accepted + server.config.tcp_timeout)
        try:
            reply = server.handle(msg, self.source)
        except Exception as exc:  # noqa: BLE001 - never let one connection hurt the node
            server.stats["runner.exception.connection"] += 1
            log.warning("inbound connection failed: %r", exc)
            self.abort()
            return
        if self.closed:
            return
        if reply:
            transport.write(reply)
            server.stats["tcp.out.bytes"] += len(reply)
        transport.close()  # after the reply is flushed; the exchange deadline still applies

    def eof_received(self) -> bool:
        if not self.done:
            self._server.stats["tcp.in.eof"] += 1
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None and not self.closed:
            self._server.gate.failed(self, exc)
        self._forget()

    # -- ours -------------------------------------------------------------------------------

    def _arm(self, deadline: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._server.loop.call_at(deadline, self._expired)

    def _expired(self) -> None:
        self._timer = None
        if not self.closed:
            self._server.gate.timed_out(self)

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
        self.gate: Gate[_Stream] = Gate(config, stats, _Stream.abort)
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
        accept_some(self._sock, self.stats, self._admit, self._out_of_fds)

    def _out_of_fds(self) -> bool:
        """No descriptor for the next connection: shed an idle stream to make one (it is
        closed by the loop before accepting resumes), else pause accepting briefly."""
        self._pause(0.0 if self.gate.out_of_fds(self.loop.time()) else NO_FD_BACKOFF)
        return False

    def _admit(self, conn: socket.socket, peer: Any) -> None:
        stream = _Stream(self, peer_address(peer), self.loop.time())
        if not self.gate.admit(stream, stream.accepted):
            conn.close()
            return
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
            conn.close()
            self.gate.failed(stream, f"at setup: {exc}")

    # -- called by streams ------------------------------------------------------------------

    def forget(self, stream: _Stream) -> None:
        self.gate.release(stream)
        self._streams.discard(stream)
