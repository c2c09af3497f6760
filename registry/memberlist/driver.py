"""What both gossip drivers do alike, written once: feeding a sans-I/O `Machine` and carrying
out what it asks.

A driver moves bytes and time between sockets and a `Machine` (memberlist alone, or Serf on
top).  The asyncio driver (`runner.MachineRunner`) and the thread driver
(`threaded.ThreadedRunner`) differ only in *how* they wait for sockets and timers; the rules
around the machine are the same and live here, in `DriverBase`:

- every input (datagram, stream message, timer, stream outcome) is fed through `_guard`: an
  exception from the machine is logged and counted (`runner.exception.<where>`), never
  allowed to stop the node, because bad input from the network must not take it down;
- after every input the machine is drained (`_pump`): `SendPacket` and `OpenStream` go to
  the driver's `_send_packet` and `_open_stream`, the timer is re-armed at
  `machine.next_deadline()` (never in the past right after a tick: a buggy machine must not
  make the driver spin), waiters whose predicate now holds are woken, and the `on_pump` hook
  runs; a hook that queues more output makes the drain repeat;
- an outbound stream's outcome goes back to the machine (`stream_result`) and then to whoever
  watches that stream (`watch`), with the machine's own refusal text when it refused a reply;
- at shutdown every watcher hears "node shut down" and every waiter is woken.

Nothing here waits or touches a socket (besides binding the pair at start), and nothing here
imports asyncio: the thread driver is what `Register` uses so that a synchronous service pays
neither asyncio nor ssl.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from registry.addresses import bind_pair, outward_host

from .config import Config
from .types import REFUSED, Address, Machine, OpenStream, SendPacket, refusal_text

if TYPE_CHECKING:
    from .stream import StreamFramer

__all__ = [
    "SHUT_DOWN",
    "STUCK_TIMER_DELAY",
    "UDP_RECV_MAX",
    "DriverBase",
    "StreamDone",
    "Wake",
    "dial_bad_reply",
    "dial_eof",
    "dial_error",
    "dial_timed_out",
    "local_advertise",
    "os_error_text",
    "reply_framer",
    "started",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: If a buggy machine keeps reporting a deadline in the past after `tick`, poll this often
#: instead of spinning.
STUCK_TIMER_DELAY = 0.01

#: Largest datagram a driver reads (Go reads UDP with a 64 KiB buffer).
UDP_RECV_MAX = 65536

#: The error every stream watcher gets when the node stops before its stream ended.
SHUT_DOWN = "node shut down"

#: `done(accepted, error)`: the outcome of one outbound stream, as the machine judged it.
StreamDone = Callable[[bool, str], None]
#: `wake(held)`: a waiter's predicate held (True), or the driver stopped (False).
Wake = Callable[[bool], None]


def started(value: T | None, why: str) -> T:
    """`value`, set once its owner started; RuntimeError(`why`) before (a caller's mistake)."""
    if value is None:
        raise RuntimeError(why)
    return value


def local_advertise(config: Config, bound: Address) -> Address:
    """What peers should dial: the configured advertise address, else the bound one; a
    wildcard bind advertises the address the OS would use to reach the outside."""
    port = config.advertise_port or bound.port
    if config.advertise_addr:
        return Address(config.advertise_addr, port)
    return Address(outward_host(bound.host), port)


def reply_framer(config: Config) -> StreamFramer:
    """The framer an outbound exchange reads its one reply with (no label on replies)."""
    from .stream import StreamFramer  # the codec is only needed once streams flow

    return StreamFramer(expect_label=False, max_size=config.max_stream_size)


# -- how a failed outbound exchange is counted (`tcp.dial.<kind>`) and worded, by both drivers:
# the wording reaches operators (JoinError) and `REFUSED` is recognised by the machine.


def os_error_text(exc: BaseException) -> str:
    """ "Connection refused" rather than asyncio's "Connect call failed (...)"."""
    code = getattr(exc, "errno", None)
    if isinstance(code, int) and code > 0:
        return os.strerror(code)
    return str(exc) or type(exc).__name__


def dial_error(stats: Counter[str], exc: BaseException) -> str:
    """Connecting, writing or reading failed (refused, unreachable, reset)."""
    stats["tcp.dial.error"] += 1
    return os_error_text(exc)


def dial_timed_out(stats: Counter[str], timeout: float) -> str:
    stats["tcp.dial.timeout"] += 1
    return f"timed out after {timeout:g}s"


def dial_bad_reply(stats: Counter[str], exc: ValueError) -> str:
    """The framer refused the reply (too large, malformed)."""
    stats["tcp.dial.bad_reply"] += 1
    return f"bad reply: {exc}"


def dial_eof(stats: Counter[str]) -> str:
    stats["tcp.dial.eof"] += 1
    return "connection closed before a reply"


class DriverBase:
    """The machine-facing half of a driver; subclasses supply the I/O.

    A subclass implements `now()` (the clock fed to the machine), `_send_packet`,
    `_open_stream` (start an exchange that ends in `_stream_done`) and `_set_timer` (have
    `_feed_tick` called at that deadline, or cancel with None).  It sets `_stopping` when no
    more input may reach the machine and `_closed` once its sockets are gone.
    """

    def __init__(self, machine: Machine | None, config: Config | None) -> None:
        self._machine = machine
        self.config = config if config is not None else Config()
        #: transport counters: bytes/packets in and out, timeouts, errors, exceptions caught.
        self.stats: Counter[str] = Counter()
        #: run after every drain of the machine (event dispatch hooks here)
        self.on_pump: Callable[[], None] | None = None
        self._bound: Address | None = None
        self._watchers: dict[int, StreamDone] = {}
        self._waiters: list[tuple[Callable[[], bool], Wake]] = []
        self._stopping = False
        self._closed = False
        self._pumping = False
        self._again = False

    # -- views ---------------------------------------------------------------------------------

    @property
    def machine(self) -> Machine:
        return started(self._machine, "the runner has no machine yet (start it first)")

    @property
    def bound(self) -> Address:
        """The address actually bound (port filled in when 0 was asked)."""
        return started(self._bound, "the runner is not started")

    @property
    def running(self) -> bool:
        return self._bound is not None and not self._stopping

    def now(self) -> float:
        raise NotImplementedError

    # -- what a subclass provides -----------------------------------------------------------------

    def _send_packet(self, out: SendPacket) -> None:
        raise NotImplementedError

    def _open_stream(self, out: OpenStream) -> None:
        raise NotImplementedError

    def _set_timer(self, deadline: float | None) -> None:
        raise NotImplementedError

    # -- start and stop ---------------------------------------------------------------------------

    def _bind(
        self, bind: Address, factory: Callable[[Address], Machine] | None
    ) -> tuple[socket.socket, socket.socket, Address]:
        """Bind the UDP+TCP pair on `bind` and build the machine for the address bound (a
        port-0 bind advertises the port it got).  Returns (tcp, udp, bound); closes both on
        failure."""
        if self._bound is not None or self._closed:
            raise RuntimeError("the runner was already started")
        tcp, udp = bind_pair(bind.host, bind.port)
        try:
            host, port = udp.getsockname()[:2]
            bound = Address(str(host), int(port))
            if factory is not None:
                self._machine = factory(bound)
            if self._machine is None:
                raise RuntimeError(f"{type(self).__name__}.start needs a machine or a factory")
        except BaseException:
            tcp.close()
            udp.close()
            raise
        return tcp, udp, bound

    def _release_all(self) -> None:
        """The driver stopped: every watcher hears so, every waiter wakes."""
        watchers = list(self._watchers.values())
        self._watchers.clear()
        for done in watchers:
            self._guard("watcher", functools.partial(done, False, SHUT_DOWN))
        waiters = list(self._waiters)
        self._waiters.clear()
        for _, wake in waiters:
            wake(False)

    # -- watching ------------------------------------------------------------------------------

    def watch(self, stream_id: int, done: StreamDone) -> None:
        """Have `done(accepted, error)` called with the outcome of the machine's
        `OpenStream(stream_id)`.  Register it before the machine's outputs are drained (in the
        same turn as the call that opened the stream) so the outcome cannot be missed."""
        if self._stopping:
            done(False, SHUT_DOWN)
        else:
            self._watchers[stream_id] = done

    def _add_waiter(self, predicate: Callable[[], bool], wake: Wake) -> tuple[Callable[[], bool], Wake]:
        """Have `wake(True)` called once `predicate()` holds after some input (or `wake(False)`
        when the driver stops); returns the entry for `_remove_waiter`."""
        entry = (predicate, wake)
        self._waiters.append(entry)
        return entry

    def _remove_waiter(self, entry: tuple[Callable[[], bool], Wake]) -> None:
        if entry in self._waiters:
            self._waiters.remove(entry)

    # -- feeding the machine ----------------------------------------------------------------------

    def _guard(self, where: str, fn: Callable[[], T]) -> T | None:
        """Run one machine call; an exception is logged and counted, never propagated."""
        try:
            return fn()
        except Exception as exc:
            self.stats["runner.exception." + where] += 1
            log.warning("machine raised in %s: %r", where, exc, exc_info=log.isEnabledFor(logging.DEBUG))
            return None

    def _feed_packet(self, data: bytes, source: Address) -> None:
        machine = self._machine
        if machine is None or self._stopping:
            return
        now = self.now()
        self._guard("receive_packet", lambda: machine.receive_packet(data, source, now))
        self._pump()

    def _feed_stream(self, msg: bytes, source: Address) -> bytes | None:
        """A complete inbound stream message; returns the machine's reply, if any."""
        machine = self._machine
        if machine is None or self._stopping:
            return None
        now = self.now()
        reply = self._guard("receive_stream", lambda: machine.receive_stream(msg, source, now))
        self._pump()
        return reply

    def _feed_tick(self, now: float) -> None:
        machine = self._machine
        if machine is None or self._stopping:
            return
        self._guard("tick", lambda: machine.tick(now))
        self._pump(after_tick=now)

    def _stream_done(self, out: OpenStream, reply: bytes | None, error: str) -> None:
        """An outbound exchange ended: `reply` (b"" when none was expected) or None and why."""
        machine = self._machine
        if machine is None or self._stopping:
            return
        now = self.now()
        refused = error == REFUSED
        accepted = bool(self._guard("stream_result", lambda: machine.stream_result(out.stream_id, reply, now, refused)))
        done = self._watchers.pop(out.stream_id, None)
        if done is not None:
            if reply is not None and not accepted:
                error = refusal_text(machine)
            self._guard("watcher", lambda: done(accepted, error))
        self._pump()

    # -- carrying out ------------------------------------------------------------------------------

    def _pump(self, after_tick: float | None = None) -> None:
        """Drain and carry out the machine's outputs, re-arm its timer, wake waiters; the
        `on_pump` hook may queue more, so repeat until nothing new was asked."""
        if self._pumping:
            self._again = True
            return
        machine = self._machine
        if machine is None or self._closed:
            return
        self._pumping = True
        try:
            while True:
                self._again = False
                for out in self._guard("drain", machine.drain) or []:
                    if isinstance(out, SendPacket):
                        self._send_packet(out)
                    elif isinstance(out, OpenStream):
                        self._open_stream(out)
                    else:
                        self.stats["runner.unknown_output"] += 1
                self._set_timer(self._next_timer(machine, after_tick))
                if self._waiters:
                    self._wake_waiters()
                if self.on_pump is not None:
                    self._guard("on_pump", self.on_pump)
                if not self._again:
                    break
        finally:
            self._pumping = False

    def _next_timer(self, machine: Machine, after_tick: float | None) -> float | None:
        deadline = self._guard("next_deadline", machine.next_deadline)
        if after_tick is not None and deadline is not None and deadline <= after_tick:
            self.stats["runner.timer_stuck"] += 1  # tick(now) left work due now: do not spin
            deadline = after_tick + STUCK_TIMER_DELAY
        return deadline

    def _wake_waiters(self) -> None:
        for entry in list(self._waiters):
            predicate, wake = entry
            if self._guard("waiter", predicate):
                self._remove_waiter(entry)
                wake(True)
