"""The thread driver's TCP exchanges: outbound dials and inbound accepts, each a non-blocking
socket in the driver's selector, with a deadline.

Split from `threaded.py` (the thread, its calls and UDP) because the exchanges are their own
concern: a small state machine per connection (connect, write, read one framed message, write
the reply) that the gossip thread steps whenever `select()` says a socket is ready or a
deadline passed.  Inbound streams are admitted, charged and shed by the same `gate.Gate` as the
asyncio driver's (`inbound.py`), so both report alike; a complete inbound message goes to
`handle` (the machine) and an outbound outcome to `done` (`DriverBase._stream_done`).
"""

from __future__ import annotations

import errno
import os
import selectors
import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from registry.addresses import family_of

from .admission import NO_FD_BACKOFF, first_message_timeout
from .config import Config
from .driver import dial_bad_reply, dial_eof, dial_error, dial_timed_out, os_error_text, reply_framer
from .gate import Gate, accept_some, inbound_framer, peer_address
from .stream import StreamFramer
from .types import Address, OpenStream

__all__ = ["TcpStreams"]

_CHUNK = 65536


@dataclass(eq=False, slots=True)  # identity: a key of the admission table
class _Conn:
    """One TCP exchange in flight: outbound (dial, write, maybe read a reply) or inbound
    (read one message, write the machine's reply)."""

    sock: socket.socket
    outbound: OpenStream | None
    deadline: float
    timeout: float
    framer: StreamFramer | None
    source: Address
    out: bytes = b""  # still to write
    accepted: float = field(default_factory=time.monotonic)
    done: bool = False  # inbound: its message arrived (no longer sheddable)
    open: bool = True
    connected: bool = field(init=False)

    def __post_init__(self) -> None:
        self.connected = self.outbound is None  # an inbound socket comes connected


class TcpStreams:
    """Every TCP exchange of one thread-driven node, and its listener.  Runs on the gossip
    thread only: `dial` for each `OpenStream`, `next_deadline`/`expire` from the loop."""

    def __init__(
        self,
        sel: selectors.BaseSelector,
        listener: socket.socket,
        config: Config,
        stats: Counter[str],
        *,
        handle: Callable[[bytes, Address], bytes | None],
        done: Callable[[OpenStream, bytes | None, str], None],
    ) -> None:
        self._sel = sel
        self._tcp = listener
        self.config = config
        self.stats = stats
        self._handle = handle
        self._done = done
        self._conns: set[_Conn] = set()
        self.gate: Gate[_Conn] = Gate(config, stats, self._drop)
        self._accept_resume: float | None = None  # accepting paused (out of descriptors) until then
        sel.register(listener, selectors.EVENT_READ, self._on_accept)

    def next_deadline(self) -> float | None:
        """The earliest moment `expire` has work: an exchange's deadline or accepting's resume."""
        soonest = self._accept_resume
        for conn in self._conns:
            if soonest is None or conn.deadline < soonest:
                soonest = conn.deadline
        return soonest

    def expire(self, now: float) -> None:
        if self._accept_resume is not None and self._accept_resume <= now:
            self._resume_accepting()
        for conn in [c for c in self._conns if c.deadline <= now]:
            self._timed_out(conn)

    def close(self) -> None:
        """Close every exchange, unreported (the driver tells watchers it shut down)."""
        for conn in list(self._conns):
            self._drop(conn)

    def dial(self, out: OpenStream) -> None:
        """Start the exchange an `OpenStream` asks for; its outcome goes to `done`."""
        timeout = out.timeout if out.timeout > 0 else self.config.tcp_timeout
        self.stats["tcp.dial"] += 1
        try:
            sock = socket.socket(family_of(out.addr.host), socket.SOCK_STREAM)
        except OSError as exc:
            self._done(out, None, dial_error(self.stats, exc))
            return
        framer = reply_framer(self.config) if out.expect_reply else None
        conn = _Conn(sock, out, time.monotonic() + timeout, timeout, framer, out.addr, out.data)
        sock.setblocking(False)
        try:
            err = sock.connect_ex((out.addr.host, out.addr.port))
        except (OSError, ValueError, TypeError, OverflowError) as exc:
            sock.close()
            self.stats["runner.exception.dial"] += 1
            self._done(out, None, f"{type(exc).__name__}: {exc}")
            return
        if err not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN):
            sock.close()
            self._done(out, None, dial_error(self.stats, OSError(err, os.strerror(err))))
            return
        self._sel.register(sock, selectors.EVENT_WRITE, lambda key, mask: self._on_conn(conn, mask))
        self._conns.add(conn)

    def _on_accept(self, key: selectors.SelectorKey, mask: int) -> None:
        accept_some(self._tcp, self.stats, self._admit, self._out_of_fds)

    def _out_of_fds(self) -> bool:
        """Out of descriptors with a newcomer waiting: the listener stays readable, so
        retrying at once would spin.  Shed an idle stream (its descriptor is free at once) and
        retry, else pause accepting briefly."""
        if self.gate.out_of_fds(time.monotonic()):
            return True
        self._pause_accepting()
        return False

    def _pause_accepting(self) -> None:
        self._sel.unregister(self._tcp)
        self._accept_resume = time.monotonic() + NO_FD_BACKOFF

    def _resume_accepting(self) -> None:
        self._accept_resume = None
        self._sel.register(self._tcp, selectors.EVENT_READ, self._on_accept)

    def _admit(self, sock: socket.socket, peer: Any) -> None:
        source = peer_address(peer)
        now = time.monotonic()
        conn = _Conn(sock, None, now + first_message_timeout(self.config), self.config.tcp_timeout,
                     inbound_framer(self.config), source)
        if not self.gate.admit(conn, conn.accepted):
            sock.close()
            return
        sock.setblocking(False)
        self._conns.add(conn)
        self._sel.register(sock, selectors.EVENT_READ, lambda key, mask, c=conn: self._on_conn(c, mask))

    def _on_conn(self, conn: _Conn, mask: int) -> None:
        if not conn.open:
            return
        try:
            if not conn.connected:
                err = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    raise OSError(err, os.strerror(err))
                conn.connected = True
            if mask & selectors.EVENT_WRITE:
                self._write(conn)
            elif mask & selectors.EVENT_READ:
                self._read(conn)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            if conn.outbound is not None:
                self._finish(conn, None, dial_error(self.stats, exc))
            else:
                self.gate.failed(conn, os_error_text(exc))
        except ValueError as exc:  # DecodeError from a reply's framer (the gate frames inbound streams)
            if conn.outbound is not None:
                self._finish(conn, None, dial_bad_reply(self.stats, exc))
            else:
                self.gate.malformed(conn, exc)

    def _write(self, conn: _Conn) -> None:
        while conn.out:
            n = conn.sock.send(conn.out)
            self.stats["tcp.out.bytes"] += n
            conn.out = conn.out[n:]
        out = conn.outbound
        if out is None:  # inbound: our reply is out
            self._drop(conn)
        elif not out.expect_reply:
            self._finish(conn, b"", "")
        else:
            self._sel.modify(conn.sock, selectors.EVENT_READ, self._sel.get_key(conn.sock).data)

    def _read(self, conn: _Conn) -> None:
        assert conn.framer is not None
        while conn.open:
            data = conn.sock.recv(_CHUNK)
            if not data:
                if conn.outbound is not None:
                    self._finish(conn, None, dial_eof(self.stats))
                else:
                    self.stats["tcp.in.eof"] += 1
                    self._drop(conn)
                return
            if conn.outbound is not None:
                self.stats["tcp.in.bytes"] += len(data)
                msg = conn.framer.feed(data)  # a DecodeError is a bad reply (`_on_conn`)
                if msg is not None:
                    self._finish(conn, msg, "")
                    return
                continue
            msg = self.gate.receive(conn, conn.framer, data, time.monotonic())
            if msg is None:
                continue  # more to come, or shed or malformed (then closed)
            conn.done = True
            conn.deadline = conn.accepted + conn.timeout
            reply = self._handle(msg, conn.source)
            if not reply or not conn.open:
                self._drop(conn)
                return
            conn.out = reply
            self._sel.modify(conn.sock, selectors.EVENT_WRITE, self._sel.get_key(conn.sock).data)
            return

    def _timed_out(self, conn: _Conn) -> None:
        if conn.outbound is not None:
            self._finish(conn, None, dial_timed_out(self.stats, conn.timeout))
        else:
            self.gate.timed_out(conn)

    def _drop(self, conn: _Conn) -> None:
        """Forget and close one exchange (without reporting it to the machine)."""
        if not conn.open:
            return
        conn.open = False
        self._conns.discard(conn)
        if conn.outbound is None:
            self.gate.release(conn)
        try:
            self._sel.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        conn.sock.close()

    def _finish(self, conn: _Conn, reply: bytes | None, error: str) -> None:
        self._drop(conn)
        assert conn.outbound is not None
        self._done(conn.outbound, reply, error)
