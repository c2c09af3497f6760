"""Drive a sans-I/O gossip `Machine` with real sockets on an asyncio loop.

The machine decides everything; the runner only moves bytes and time.  The rules around
the machine (guarded input, draining after every input and API call via `kick`, the timer at
`machine.next_deadline()`, stream outcomes and waiters) are `driver.DriverBase`'s, shared with
the thread driver; this module is their asyncio I/O: a `DatagramProtocol` for UDP, one task
per outbound exchange (`transport.dial_stream`), a loop timer, and futures for callers.
Inbound TCP streams are accepted and bounded by `inbound.InboundServer` (admission through
`gate.Gate`, pre-auth deadline, byte budget).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from .config import Config
from .driver import DriverBase, reply_framer
from .inbound import InboundServer
from .transport import StreamOutcome, UdpProtocol, dial_stream
from .types import Address, Machine, OpenStream, SendPacket

__all__ = ["MachineRunner", "StreamOutcome"]

log = logging.getLogger(__name__)


class MachineRunner(DriverBase):
    """Runs one `Machine` on UDP + TCP sharing one port.

    `machine` may be given now or produced by `start(bind, factory)` once the bound address
    is known (needed when binding port 0, because the machine advertises its port).
    `now()` is the clock the machine is fed with (the loop's monotonic time); use it for
    API calls on the machine, then call `kick()`.
    """

    def __init__(self, machine: Machine | None = None, config: Config | None = None) -> None:
        super().__init__(machine, config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._udp: UdpProtocol | None = None
        self._server: InboundServer | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._armed: float | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # -- lifecycle -------------------------------------------------------------------------

    def now(self) -> float:
        loop = self._loop if self._loop is not None else asyncio.get_running_loop()
        return loop.time()

    async def start(self, bind: Address, factory: Callable[[Address], Machine] | None = None) -> Address:
        """Bind UDP and TCP on `bind` (port 0 = pick a free one), then start driving the
        machine (made by `factory(bound)` if given).  Returns the bound address."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        tcp_sock, udp_sock, bound = self._bind(bind, factory)
        try:
            _, proto = await loop.create_datagram_endpoint(
                lambda: UdpProtocol(self._feed_packet, self.stats), sock=udp_sock
            )
            self._udp = proto
            self._server = InboundServer(tcp_sock, config=self.config, handle=self._feed_stream, stats=self.stats)
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
        self._stopping = self._closed = True
        self._set_timer(None)
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
        self._release_all()

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

        def done(accepted: bool, error: str) -> None:
            if not fut.done():
                fut.set_result(StreamOutcome(accepted, error))

        self.watch(stream_id, done)
        return fut

    async def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until `predicate()` (checked after every input and timer) holds; False on timeout."""
        if predicate():
            return True
        if self._closed:
            return False
        loop = self._loop if self._loop is not None else asyncio.get_running_loop()
        fut: asyncio.Future[bool] = loop.create_future()

        def wake(held: bool) -> None:
            if not fut.done():
                fut.set_result(held)

        entry = self._add_waiter(predicate, wake)
        try:
            held = await asyncio.wait_for(asyncio.shield(fut), timeout)
        except asyncio.TimeoutError:  # not the builtin TimeoutError before Python 3.11
            return bool(predicate())
        finally:
            self._remove_waiter(entry)
        return held or bool(predicate())  # woken by close(): say how things stand

    # -- I/O for DriverBase ------------------------------------------------------------------------

    def _on_timer(self) -> None:
        self._timer = None
        self._armed = None
        self._feed_tick(self.now())

    def _set_timer(self, deadline: float | None) -> None:
        if deadline == self._armed and self._timer is not None:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._armed = deadline
        if deadline is not None:
            assert self._loop is not None
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _send_packet(self, out: SendPacket) -> None:
        assert self._udp is not None
        self._udp.send(out.data, out.addr)

    def _open_stream(self, out: OpenStream) -> None:
        self._spawn(self._run_outbound(out))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        assert self._loop is not None
        task: asyncio.Task[None] = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_outbound(self, out: OpenStream) -> None:
        framer = reply_framer(self.config) if out.expect_reply else None
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
        self._stream_done(out, reply, error)
