"""Drive a sans-I/O gossip `Machine` from one background thread, without asyncio.

The asyncio driver (`runner.MachineRunner`) costs an embedding process `import asyncio`,
which pulls in ssl and OpenSSL (~8 MiB RSS) before a single packet is sent.  A service
that only wants to stay in the pool (`register.Register`) needs none of that: this driver
does the same job with `selectors`, non-blocking sockets and the machine's own timers.

One thread owns the machine.  It waits in `select()` on the UDP socket, the TCP listener,
every open TCP exchange and a wake-up socketpair, with a timeout at the earliest of the
machine's `next_deadline()` and the exchanges' deadlines.  Other threads never touch the
machine: they hand a function to `call()`, which runs it on the gossip thread (woken
through the socketpair) and returns its result.

What is the same in both drivers (feeding the machine under a guard, draining its outputs
after every input, timers, stream outcomes, waiters) is `driver.DriverBase`'s; this module
is the thread, its calls and UDP.  TCP exchanges are `threaded_streams.TcpStreams`, whose
inbound streams go through the same `gate.Gate` as the asyncio driver's (slots per source and
in all, a pre-auth deadline, a byte budget, shedding or pausing when out of descriptors).
"""

from __future__ import annotations

import logging
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

from .config import Config
from .driver import UDP_RECV_MAX, DriverBase, StreamDone, local_advertise
from .threaded_streams import TcpStreams
from .types import Address, Machine, OpenStream, SendPacket

__all__ = [
    "RunnerClosed",
    "StreamDone",
    "ThreadedRunner",
    "local_advertise",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Datagrams read per readiness event before the other sockets get a turn.
_UDP_BATCH = 64


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
        self._exchanges: TcpStreams | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._calls: deque[_Call] = deque()
        self._lock = threading.Lock()
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
            exchanges = TcpStreams(sel, tcp, self.config, self.stats, handle=self._feed_stream, done=self._stream_done)
            sel.register(wake_r, selectors.EVENT_READ, self._on_wake)
        except BaseException:
            sel.close()
            for s in (tcp, udp, wake_r, wake_w):
                s.close()
            raise
        self._sel, self._tcp, self._udp, self._wake_r, self._wake_w = sel, tcp, udp, wake_r, wake_w
        self._exchanges = exchanges
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
        sel, exchanges = self._sel, self._exchanges
        assert sel is not None and exchanges is not None
        try:
            while not self._stopping:
                now = time.monotonic()
                wait = None
                soonest = self._deadline
                streams_due = exchanges.next_deadline()
                if streams_due is not None and (soonest is None or streams_due < soonest):
                    soonest = streams_due
                if soonest is not None:
                    wait = max(0.0, soonest - now)
                for key, mask in sel.select(wait):
                    if self._stopping:
                        break
                    key.data(key, mask)
                if self._stopping:
                    break
                now = time.monotonic()
                exchanges.expire(now)
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
        if self._exchanges is not None:
            self._exchanges.close()
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
                data, addr = udp.recvfrom(UDP_RECV_MAX)
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

    def _open_stream(self, out: OpenStream) -> None:
        assert self._exchanges is not None
        self._exchanges.dial(out)
