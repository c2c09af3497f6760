"""Drive a sans-I/O gossip `Machine` from one background thread, without asyncio.

The asyncio driver (`runner.MachineRunner`) costs an embedding process `import asyncio`,
which pulls in ssl and OpenSSL (~8 MiB RSS) before a single packet is sent.  A service
that only wants to stay in the pool (`register.Register`) needs none of that: this driver
does the same job with `selectors`, non-blocking sockets and the machine's own timers.

One thread owns the machine.  It waits in `select()` on the UDP socket, the TCP listener,
every open TCP exchange and a wake-up socketpair, with a timeout at the earliest of the
machine's `next_deadline()` and the exchanges' deadlines.  Other threads never touch the
machine: they hand a function to `call()`, which runs it on the gossip thread (woken
through the socketpair) and returns its result.  As in the asyncio driver, every input is
followed by a drain of the machine's outputs, and an exception raised by the machine is
logged and counted, never allowed to stop the thread.  Inbound streams go through the same
`Admission` as the asyncio driver's (slots per source and in all, a pre-auth deadline, a byte
budget), and running out of descriptors sheds or pauses accepting instead of spinning.
"""

from __future__ import annotations

import errno
import logging
import os
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

from registry.addresses import bind_pair, family_of

from .admission import (
    ACCEPT_BATCH,
    NO_FD_BACKOFF,
    NO_FD_ERRNOS,
    Shed,
    first_message_timeout,
    make_admission,
)
from .config import Config
from .driver import DriverBase, StreamDone, local_advertise
from .stream import StreamFramer
from .types import Address, Machine, OpenStream, SendPacket

__all__ = [
    "RunnerClosed",
    "StreamDone",
    "ThreadedRunner",
    "bind_pair",
    "family_of",
    "local_advertise",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Largest datagram we accept (Go reads UDP with a 64 KiB buffer).
_UDP_RECV_MAX = 65536
#: Datagrams read per readiness event before the other sockets get a turn.
_UDP_BATCH = 64
_CHUNK = 65536


class RunnerClosed(RuntimeError):
    """The runner is not running (never started, or closed)."""


class _Call:
    """A function to run on the gossip thread, and its result for the caller."""

    __slots__ = ("done", "error", "fn", "result")

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None


class _Conn:
    """One TCP exchange in flight: outbound (dial, write, maybe read a reply) or inbound
    (read one message, write the machine's reply)."""

    __slots__ = ("accepted", "connected", "deadline", "done", "framer", "open", "out", "outbound", "sock", "source",
                 "timeout")

    def __init__(self, sock: socket.socket, outbound: OpenStream | None, deadline: float, timeout: float,
                 framer: StreamFramer | None, source: Address) -> None:
        self.accepted = time.monotonic()
        self.done = False  # inbound: its message arrived (no longer sheddable)
        self.sock = sock
        self.outbound = outbound
        self.deadline = deadline
        self.timeout = timeout
        self.out = b""
        self.framer = framer
        self.open = True
        self.connected = outbound is None
        self.source = source


class ThreadedRunner(DriverBase):
    """Runs one `Machine` on UDP + TCP sharing one port, from a daemon thread.

    `start(bind, factory)` binds, builds the machine with `factory(bound)` (so a port-0
    bind can advertise the port it got) and starts the thread.  Touch the machine only
    inside `call(fn)`; `fn` runs on the gossip thread and its outputs leave right after.
    """

    def __init__(self, machine: Machine | None = None, config: Config | None = None, *, name: str = "gossip") -> None:
        super().__init__(machine, config)
        self.name = name
        self._sel: selectors.BaseSelector | None = None
        self._udp: socket.socket | None = None
        self._tcp: socket.socket | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._calls: deque[_Call] = deque()
        self._lock = threading.Lock()
        self._conns: set[_Conn] = set()
        self._admission = make_admission(self.config)
        self._accept_resume: float | None = None  # accepting paused (out of descriptors) until then
        self._deadline: float | None = None

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def thread(self) -> threading.Thread | None:
        return self._thread

    @staticmethod
    def now() -> float:
        """The clock the machine is fed with (monotonic, like the asyncio loop's)."""
        return time.monotonic()

    def start(self, bind: Address, factory: Callable[[Address], Machine] | None = None) -> Address:
        """Bind UDP and TCP on `bind` (port 0 = a free one), build the machine and start the
        gossip thread.  Returns the bound address."""
        tcp, udp, bound = self._bind(bind, factory)
        wake_r, wake_w = socket.socketpair()
        sel = selectors.DefaultSelector()
        try:
            for s in (wake_r, wake_w):
                s.setblocking(False)
            sel.register(udp, selectors.EVENT_READ, self._on_udp)
            sel.register(tcp, selectors.EVENT_READ, self._on_accept)
            sel.register(wake_r, selectors.EVENT_READ, self._on_wake)
        except BaseException:
            sel.close()
            for s in (tcp, udp, wake_r, wake_w):
                s.close()
            raise
        self._sel, self._tcp, self._udp, self._wake_r, self._wake_w = sel, tcp, udp, wake_r, wake_w
        self._bound = bound
        self._thread = threading.Thread(target=self._run, name=f"{self.name}-{bound.port}", daemon=True)
        self._thread.start()
        self.submit(lambda: None)  # first pump: send what the machine queued and arm its timer
        log.debug("threaded runner bound %s", bound)
        return bound

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread (joined unless called from it), close every socket.  Idempotent."""
        thread = self._thread
        if self._bound is None or thread is None:
            self._closed = True
            return
        self._stopping = True
        self._wake()
        if thread is not threading.current_thread():
            thread.join(timeout)

    # -- API from any thread -------------------------------------------------------------------

    def on_thread(self) -> bool:
        return self._thread is threading.current_thread()

    def call(self, fn: Callable[[], T], timeout: float | None = 30.0) -> T:
        """Run `fn()` on the gossip thread, then send what the machine queued; returns its
        result or raises its exception.  On the gossip thread itself, runs it at once."""
        if self.on_thread():
            result = fn()
            self.kick()
            return result
        c = self._enqueue(fn)
        if not c.done.wait(timeout):
            raise TimeoutError(f"the gossip thread did not run the call within {timeout}s")
        if c.error is not None:
            raise c.error
        return c.result  # type: ignore[no-any-return]

    def submit(self, fn: Callable[[], object]) -> None:
        """Run `fn()` on the gossip thread later, without waiting (errors are logged)."""
        if self.on_thread():
            self._guard("call", fn)
            self.kick()
            return
        self._enqueue(fn)

    def _enqueue(self, fn: Callable[[], Any]) -> _Call:
        c = _Call(fn)
        with self._lock:
            if self._stopping or self._bound is None:
                raise RunnerClosed("the gossip runner is not running")
            self._calls.append(c)
        self._wake()
        return c

    def kick(self) -> None:
        """Send whatever the machine queued and re-arm its timer (gossip thread only)."""
        if self.on_thread() and not self._closed:
            self._pump()

    def watch_stream(self, stream_id: int, done: StreamDone) -> None:
        """Have `done(accepted, error)` called on the gossip thread with the outcome of the
        machine's `OpenStream(stream_id)`.  Call it (on the gossip thread) before the outputs
        are drained, i.e. inside the same `call` that made the machine open the stream."""
        self.watch(stream_id, done)

    def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Block (not on the gossip thread) until `predicate()`, evaluated on the gossip thread
        after every input and timer, holds; False on timeout or when the runner stops."""
        if self.on_thread():
            raise RuntimeError("wait_until would block the gossip thread it waits on")
        ev = threading.Event()
        entries: list[Any] = []

        def add() -> bool:
            if predicate():
                return True
            entries.append(self._add_waiter(predicate, lambda _held: ev.set()))
            return False

        try:
            if self.call(add, timeout):
                return True
        except (RunnerClosed, TimeoutError):
            return False
        ev.wait(timeout)

        def remove() -> bool:
            for entry in entries:
                self._remove_waiter(entry)
            return bool(predicate())

        try:
            return self.call(remove, 5.0)
        except (RunnerClosed, TimeoutError):
            return False

    # -- the gossip thread ------------------------------------------------------------------------

    def _wake(self) -> None:
        w = self._wake_w
        if w is None:
            return
        try:
            w.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # the pipe is full (a wake-up is pending anyway) or already closed

    def _run(self) -> None:
        sel = self._sel
        assert sel is not None
        try:
            while not self._stopping:
                now = time.monotonic()
                wait = None
                soonest = self._deadline
                if self._accept_resume is not None and (soonest is None or self._accept_resume < soonest):
                    soonest = self._accept_resume
                for conn in self._conns:
                    if soonest is None or conn.deadline < soonest:
                        soonest = conn.deadline
                if soonest is not None:
                    wait = max(0.0, soonest - now)
                for key, mask in sel.select(wait):
                    if self._stopping:
                        break
                    key.data(key, mask)
                if self._stopping:
                    break
                now = time.monotonic()
                if self._accept_resume is not None and self._accept_resume <= now:
                    self._resume_accepting()
                expired = [c for c in self._conns if c.deadline <= now]
                for conn in expired:
                    self._timed_out(conn)
                if self._deadline is not None and self._deadline <= now:
                    self._deadline = None
                    self._feed_tick(now)
        except BaseException:
            log.exception("the gossip thread failed")
            raise
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        with self._lock:
            self._stopping = True
            calls = list(self._calls)
            self._calls.clear()
        self._closed = True
        for c in calls:
            c.error = RunnerClosed("the gossip runner stopped")
            c.done.set()
        for conn in list(self._conns):
            self._drop(conn)
        self._release_all()
        if self._sel is not None:
            self._sel.close()
        for s in (self._udp, self._tcp, self._wake_r, self._wake_w):
            if s is not None:
                s.close()
        self._wake_w = None

    def _on_wake(self, key: selectors.SelectorKey, mask: int) -> None:
        assert self._wake_r is not None
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        while True:
            with self._lock:
                if not self._calls:
                    break
                c = self._calls.popleft()
            try:
                c.result = c.fn()
            except BaseException as exc:  # noqa: BLE001 - handed back to the caller
                c.error = exc
            c.done.set()
            self._pump()

    def _set_timer(self, deadline: float | None) -> None:
        self._deadline = deadline  # the loop in `_run` sleeps until then at most

    # -- UDP ------------------------------------------------------------------------------

    def _on_udp(self, key: selectors.SelectorKey, mask: int) -> None:
        udp = self._udp
        machine = self._machine
        assert udp is not None and machine is not None
        for _ in range(_UDP_BATCH):
            try:
                data, addr = udp.recvfrom(_UDP_RECV_MAX)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # ICMP errors surface here on some systems
                self.stats["udp.error"] += 1
                log.debug("udp receive failed: %s", exc)
                return
            self.stats["udp.in.packets"] += 1
            self.stats["udp.in.bytes"] += len(data)
            self._feed_packet(data, Address(str(addr[0]), int(addr[1])))
            if self._stopping:
                return

    def _send_packet(self, out: SendPacket) -> None:
        udp = self._udp
        assert udp is not None
        try:
            udp.sendto(out.data, (out.addr.host, out.addr.port))
        except (OSError, ValueError, TypeError, OverflowError) as exc:
            self.stats["udp.error"] += 1
            log.debug("udp send to %s failed: %s", out.addr, exc)
            return
        self.stats["udp.out.packets"] += 1
        self.stats["udp.out.bytes"] += len(out.data)

    # -- TCP ------------------------------------------------------------------------------

    def _open_stream(self, out: OpenStream) -> None:
        timeout = out.timeout if out.timeout > 0 else self.config.tcp_timeout
        self.stats["tcp.dial"] += 1
        try:
            sock = socket.socket(family_of(out.addr.host), socket.SOCK_STREAM)
        except OSError as exc:
            self.stats["tcp.dial.error"] += 1
            self._stream_done(out, None, os.strerror(exc.errno) if exc.errno else str(exc))
            return
        framer = StreamFramer(expect_label=False, max_size=self.config.max_stream_size) if out.expect_reply else None
        conn = _Conn(sock, out, time.monotonic() + timeout, timeout, framer, out.addr)
        conn.out = out.data
        sock.setblocking(False)
        try:
            err = sock.connect_ex((out.addr.host, out.addr.port))
        except (OSError, ValueError, TypeError, OverflowError) as exc:
            sock.close()
            self.stats["runner.exception.dial"] += 1
            self._stream_done(out, None, f"{type(exc).__name__}: {exc}")
            return
        if err not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN):
            sock.close()
            self.stats["tcp.dial.error"] += 1
            self._stream_done(out, None, os.strerror(err))
            return
        assert self._sel is not None
        self._sel.register(sock, selectors.EVENT_WRITE, lambda key, mask: self._on_conn(conn, mask))
        self._conns.add(conn)

    def _on_accept(self, key: selectors.SelectorKey, mask: int) -> None:
        tcp = self._tcp
        assert tcp is not None and self._sel is not None
        accepted = False
        for _ in range(ACCEPT_BATCH):  # then UDP and the open streams get a turn
            if self._accept_resume is not None:
                return
            try:
                sock, peer = tcp.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno not in NO_FD_ERRNOS:  # e.g. ECONNABORTED: that peer is gone
                    self.stats["tcp.accept.error"] += 1
                    log.debug("accept failed: %s", exc)
                    return
                if accepted:
                    # Linux checks for a free descriptor before looking at the queue: after an
                    # accept this proves nobody waits; select says so if someone does.
                    return
                # Out of descriptors with a newcomer waiting: the listener stays readable, so
                # retrying at once would spin.  Shed an idle stream (its descriptor is free at
                # once) and retry, else pause accepting briefly.  Counted, never logged per retry.
                self.stats["tcp.accept.no_fd"] += 1
                victim = self._admission.shed_for_fd(time.monotonic())
                if victim is None:
                    self._pause_accepting()
                    return
                self._shed(victim, Shed.NO_FD)
                continue
            accepted = True
            self._admit(sock, peer)

    def _pause_accepting(self) -> None:
        assert self._sel is not None and self._tcp is not None
        self._sel.unregister(self._tcp)
        self._accept_resume = time.monotonic() + NO_FD_BACKOFF

    def _resume_accepting(self) -> None:
        self._accept_resume = None
        if self._sel is not None and self._tcp is not None:
            self._sel.register(self._tcp, selectors.EVENT_READ, self._on_accept)

    def _admit(self, sock: socket.socket, peer: Any) -> None:
        assert self._sel is not None
        try:
            source = Address(str(peer[0]), int(peer[1]))
        except (IndexError, TypeError, ValueError):
            source = Address("0.0.0.0", 0)
        framer = StreamFramer(expect_label=True, max_size=self.config.max_stream_size,
                              max_user_size=self.config.max_stream_user_msg_size)
        now = time.monotonic()
        conn = _Conn(sock, None, now + first_message_timeout(self.config), self.config.tcp_timeout, framer, source)
        admitted, shed = self._admission.admit(conn, source.host, conn.accepted)
        for victim, why in shed:
            self._shed(victim, why)
        if not admitted:
            self.stats["tcp.in.rejected_busy"] += 1
            sock.close()
            return
        self.stats["tcp.accept"] += 1
        sock.setblocking(False)
        self._conns.add(conn)
        self._sel.register(sock, selectors.EVENT_READ, lambda key, mask, c=conn: self._on_conn(c, mask))

    def _shed(self, conn: _Conn, why: Shed) -> None:
        self.stats["tcp.in.shed." + why.value] += 1
        log.debug("inbound stream from %s shed (%s)", conn.source, why.value)
        self._drop(conn)

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
            self._failed(conn, os.strerror(exc.errno) if exc.errno else str(exc), "error")
        except ValueError as exc:  # DecodeError from the framer
            if conn.outbound is not None:
                self._failed(conn, f"bad reply: {exc}", "bad_reply")
            else:
                self.stats["tcp.in.drop." + str(getattr(exc, "reason", "malformed"))] += 1
                log.debug("inbound stream from %s dropped: %s", conn.source, exc)
                self._drop(conn)

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
            assert self._sel is not None
            self._sel.modify(conn.sock, selectors.EVENT_READ, self._sel.get_key(conn.sock).data)

    def _read(self, conn: _Conn) -> None:
        assert conn.framer is not None
        while conn.open:
            data = conn.sock.recv(_CHUNK)
            if not data:
                if conn.outbound is not None:
                    self.stats["tcp.dial.eof"] += 1
                    self._finish(conn, None, "connection closed before a reply")
                else:
                    self.stats["tcp.in.eof"] += 1
                    self._drop(conn)
                return
            self.stats["tcp.in.bytes"] += len(data)
            if conn.outbound is None:
                for victim, why in self._admission.charge(conn, len(data)):
                    self._shed(victim, why)
                if not conn.open:
                    return
            msg = conn.framer.feed(data)
            if msg is None:
                continue
            if conn.outbound is not None:
                self._finish(conn, msg, "")
                return
            conn.done = True
            conn.deadline = conn.accepted + conn.timeout
            self._admission.complete(conn, time.monotonic())
            reply = self._feed_stream(msg, conn.source)
            if not reply or not conn.open:
                self._drop(conn)
                return
            conn.out = reply
            assert self._sel is not None
            self._sel.modify(conn.sock, selectors.EVENT_WRITE, self._sel.get_key(conn.sock).data)
            return

    def _timed_out(self, conn: _Conn) -> None:
        if conn.outbound is not None:
            self.stats["tcp.dial.timeout"] += 1
            self._finish(conn, None, f"timed out after {conn.timeout:g}s")
        else:
            self.stats["tcp.in.timeout"] += 1
            if not conn.done:
                self.stats["tcp.in.timeout.first_message"] += 1
            log.debug("inbound stream from %s timed out after %gs", conn.source, conn.timeout)
            self._drop(conn)

    def _failed(self, conn: _Conn, why: str, kind: str) -> None:
        if conn.outbound is not None:
            self.stats["tcp.dial." + kind] += 1
            self._finish(conn, None, why)
        else:
            self.stats["tcp.in.error"] += 1
            log.debug("inbound stream from %s failed: %s", conn.source, why)
            self._drop(conn)

    def _drop(self, conn: _Conn) -> None:
        """Forget and close one exchange (without reporting it to the machine)."""
        if not conn.open:
            return
        conn.open = False
        self._conns.discard(conn)
        if conn.outbound is None:
            self._admission.release(conn)
        if self._sel is not None:
            try:
                self._sel.unregister(conn.sock)
            except (KeyError, ValueError):
                pass
        conn.sock.close()

    def _finish(self, conn: _Conn, reply: bytes | None, error: str) -> None:
        self._drop(conn)
        assert conn.outbound is not None
        self._stream_done(conn.outbound, reply, error)
