"""Drive a sans-I/O gossip `Machine` with real sockets on an asyncio loop.

The machine decides everything; the runner only moves bytes and time: datagrams and
inbound streams go in, `SendPacket`/`OpenStream` outputs go out, and one timer is kept
armed at `machine.next_deadline()`.  After every input (and after API calls, via `kick`)
the runner drains the machine, so queued outputs leave at once.  An exception raised by
the machine while handling input is caught, logged and counted: bad input from the
network never takes the node down.  Inbound TCP streams are accepted and bounded by
`inbound.InboundServer` (admission, pre-auth deadline, byte budget).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

from .config import Config
from .inbound import InboundServer
from .transport import (
    StreamOutcome,
    UdpProtocol,
    bind_sockets,
    dial_stream,
)
from .types import REFUSED, Address, Machine, OpenStream, SendPacket, refusal_text

__all__ = ["MachineRunner", "StreamOutcome"]

log = logging.getLogger(__name__)

#: If a buggy machine keeps reporting a deadline in the past after `tick`, poll this often
#: instead of spinning.
_STUCK_TIMER_DELAY = 0.01


def _make_framer(*, expect_label: bool, max_size: int) -> Any:
    # Imported late: the codec is only needed once streams flow.
    from .stream import StreamFramer

    return StreamFramer(expect_label=expect_label, max_size=max_size)


class MachineRunner:
    """Runs one `Machine` on UDP + TCP sharing one port.

    `machine` may be given now or produced by `start(bind, factory)` once the bound address
    is known (needed when binding port 0, because the machine advertises its port).
    `now()` is the clock the machine is fed with (the loop's monotonic time); use it for
    API calls on the machine, then call `kick()`.
    """

    def __init__(self, machine: Machine | None = None, config: Config | None = None) -> None:
        self._machine = machine
        self.config = config if config is not None else Config()
        #: transport counters: bytes/packets in and out, timeouts, errors, exceptions caught.
        self.stats: Counter[str] = Counter()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._udp: UdpProtocol | None = None
        self._server: InboundServer | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._armed: float | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._watchers: dict[int, asyncio.Future[StreamOutcome]] = {}
        self._waiters: list[tuple[Callable[[], bool], asyncio.Future[None]]] = []
        self._bound: Address | None = None
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def machine(self) -> Machine:
        if self._machine is None:
            raise RuntimeError("the runner has no machine yet (start it first)")
        return self._machine

    @property
    def bound(self) -> Address:
        """The address actually bound (port filled in when 0 was asked)."""
        if self._bound is None:
            raise RuntimeError("the runner is not started")
        return self._bound

    @property
    def running(self) -> bool:
        return self._bound is not None and not self._closed

    def now(self) -> float:
        loop = self._loop if self._loop is not None else asyncio.get_running_loop()
        return loop.time()

    async def start(self, bind: Address, factory: Callable[[Address], Machine] | None = None) -> Address:
        """Bind UDP and TCP on `bind` (port 0 = pick a free one), then start driving the
        machine (made by `factory(bound)` if given).  Returns the bound address."""
        if self._bound is not None:
            raise RuntimeError("the runner was already started")
        loop = asyncio.get_running_loop()
        self._loop = loop
        tcp_sock, udp_sock = bind_sockets(bind.host, bind.port)
        try:
            host, port = udp_sock.getsockname()[:2]
            bound = Address(str(host), int(port))
            if factory is not None:
                self._machine = factory(bound)
            if self._machine is None:
                raise RuntimeError("MachineRunner.start needs a machine or a factory")
            _, proto = await loop.create_datagram_endpoint(
                lambda: UdpProtocol(self._on_packet, self.stats), sock=udp_sock
            )
            self._udp = proto
            self._server = InboundServer(tcp_sock, config=self.config, handle=self._handle_stream, stats=self.stats)
            self._server.start()
        except BaseException:
            if self._udp is not None and self._udp.transport is not None:
                self._udp.transport.close()
            udp_sock.close()
            tcp_sock.close()
            raise
        self._bound = bound
        log.debug("runner bound %s", bound)
        self.kick()
        return bound

    async def close(self) -> None:
        """Stop timers, sockets and in-flight streams.  Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._udp is not None and self._udp.transport is not None:
            self._udp.transport.close()
        if self._server is not None:
            await self._server.close()
        if self._udp is not None and self._udp.transport is not None:
            # Return only once the UDP socket is closed, so the port can be bound again at once
            # (a service restarting in the same process).  Nothing else here needs to yield to
            # the loop for that: since Python 3.12 `wait_for` on a finished coroutine does not.
            try:
                await asyncio.wait_for(asyncio.shield(self._udp.closed), 1.0)
            except asyncio.TimeoutError:  # not the builtin TimeoutError before Python 3.11
                self.stats["udp.close_timeout"] += 1
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2.0)
        for fut in self._watchers.values():
            if not fut.done():
                fut.set_result(StreamOutcome(False, "node shut down"))
        self._watchers.clear()
        for _, waiter in self._waiters:
            if not waiter.done():
                waiter.cancel()
        self._waiters.clear()

    # -- API helpers -------------------------------------------------------------------------

    def kick(self) -> None:
        """Send whatever the machine queued and re-arm its timer; call after every API call."""
        if self._closed or self._bound is None:
            return
        self._pump()

    def watch_stream(self, stream_id: int) -> asyncio.Future[StreamOutcome]:
        """A future resolved with the outcome of the machine's `OpenStream(stream_id)`.
        Register it before `kick()` so the result cannot be missed."""
        loop = self._loop if self._loop is not None else asyncio.get_running_loop()
        fut: asyncio.Future[StreamOutcome] = loop.create_future()
        if self._closed:
            fut.set_result(StreamOutcome(False, "node shut down"))
        else:
            self._watchers[stream_id] = fut
        return fut

    async def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until `predicate()` (checked after every input and timer) holds; False on timeout."""
        if predicate():
            return True
        if self._closed:
            return False
        loop = self._loop if self._loop is not None else asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        entry = (predicate, fut)
        self._waiters.append(entry)
        try:
            await asyncio.wait_for(asyncio.shield(fut), timeout)
            return True
        except asyncio.TimeoutError:  # not the builtin TimeoutError before Python 3.11
            return bool(predicate())
        except asyncio.CancelledError:
            if fut.cancelled() and self._closed:  # woken by close(), not cancelled ourselves
                return bool(predicate())
            raise
        finally:
            if entry in self._waiters:
                self._waiters.remove(entry)

    # -- the engine ----------------------------------------------------------------------------

    def _guard(self, where: str, fn: Callable[[], Any]) -> Any:
        """Run one machine call; an exception is logged and counted, never propagated."""
        try:
            return fn()
        except Exception as exc:
            self.stats["runner.exception." + where] += 1
            log.warning("machine raised in %s: %r", where, exc, exc_info=log.isEnabledFor(logging.DEBUG))
            return None

    def _on_packet(self, data: bytes, source: Address) -> None:
        if self._closed or self._machine is None:
            return
        machine = self._machine
        now = self.now()
        self._guard("receive_packet", lambda: machine.receive_packet(data, source, now))
        self._pump()

    def _on_timer(self) -> None:
        self._timer = None
        self._armed = None
        if self._closed or self._machine is None:
            return
        machine = self._machine
        now = self.now()
        self._guard("tick", lambda: machine.tick(now))
        self._pump(after_tick=now)

    def _pump(self, after_tick: float | None = None) -> None:
        """Drain and execute outputs, re-arm the timer, wake waiters."""
        machine = self._machine
        if machine is None or self._closed:
            return
        outputs = self._guard("drain", machine.drain) or []
        for out in outputs:
            if isinstance(out, SendPacket):
                assert self._udp is not None
                self._udp.send(out.data, out.addr)
            elif isinstance(out, OpenStream):
                self._spawn(self._run_outbound(out))
            else:
                self.stats["runner.unknown_output"] += 1
        self._arm(after_tick)
        if self._waiters:
            for pred, fut in list(self._waiters):
                if not fut.done():
                    ok = self._guard("waiter", pred)
                    if ok:
                        fut.set_result(None)

    def _arm(self, after_tick: float | None) -> None:
        machine = self._machine
        assert machine is not None
        deadline = self._guard("next_deadline", machine.next_deadline)
        if after_tick is not None and deadline is not None and deadline <= after_tick:
            # tick(now) left work due at or before now: do not spin on it.
            self.stats["runner.timer_stuck"] += 1
            deadline = after_tick + _STUCK_TIMER_DELAY
        if deadline == self._armed and self._timer is not None:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._armed = deadline
        if deadline is not None:
            assert self._loop is not None
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _spawn(self, coro: Any) -> None:
        assert self._loop is not None
        task: asyncio.Task[None] = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_outbound(self, out: OpenStream) -> None:
        framer = None
        if out.expect_reply:
            framer = _make_framer(expect_label=False, max_size=self.config.max_stream_size)
        timeout = out.timeout if out.timeout > 0 else self.config.tcp_timeout
        self.stats["tcp.dial"] += 1
        try:
            reply, error = await dial_stream(
                out.addr, out.data, timeout=timeout, expect_reply=out.expect_reply, framer=framer, stats=self.stats
            )
        except Exception as exc:  # noqa: BLE001 - e.g. an address the OS cannot parse
            self.stats["runner.exception.dial"] += 1
            log.warning("stream to %s failed unexpectedly: %r", out.addr, exc)
            reply, error = None, f"{type(exc).__name__}: {exc}"
        if self._closed or self._machine is None:
            return
        machine = self._machine
        now = self.now()
        refused = error == REFUSED
        accepted = self._guard("stream_result", lambda: machine.stream_result(out.stream_id, reply, now, refused))
        fut = self._watchers.pop(out.stream_id, None)
        if fut is not None and not fut.done():
            if reply is not None and not accepted:
                error = refusal_text(machine)
            fut.set_result(StreamOutcome(bool(accepted), error))
        self._pump()

    def _handle_stream(self, data: bytes, source: Address) -> bytes | None:
        if self._closed or self._machine is None:
            return None
        machine = self._machine
        now = self.now()
        reply: bytes | None = self._guard("receive_stream", lambda: machine.receive_stream(data, source, now))
        self._pump()
        return reply
