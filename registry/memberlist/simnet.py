"""An in-memory network with a virtual clock for driving many sans-I/O Machines.

Lets tests run minutes of cluster life in seconds of CPU, deterministically
for a given seed, with loss, delay jitter (reordering), duplication,
partitions, silenced nodes (`stop`: a host gone quiet) and killed processes (`kill`: the
host still answers, so a TCP connection to the dead node is refused at once).

A simulation is strict by default: every machine added that has a `strict` switch (Memberlist,
Serf) raises exceptions from its message handlers instead of counting them, and every
`run_until` ends by checking that no machine counted one ("drop.handler_error" == 0), so no
simulated test can pass on a handler bug.  Malformed input is still dropped and counted.
"""

from __future__ import annotations

import functools
import heapq
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from .types import Address, Machine, OpenStream, SendPacket

__all__ = ["HandlerErrorCounted", "Link", "SimNetwork"]


@runtime_checkable
class _Checked(Protocol):
    """A machine whose handler exceptions can be raised (`strict`) and are counted."""

    strict: bool

    @property
    def handler_errors(self) -> int: ...


class HandlerErrorCounted(AssertionError):
    """A machine of a strict simulation counted an exception from a message handler."""


@dataclass(eq=False)  # a network is compared and hashed by identity
class Link:
    """What the simulated wire does to one datagram: it arrives after `delay` plus up to
    `jitter` seconds more (so packets reorder), is lost with probability `loss`, or else is
    duplicated with probability `duplicate`.  Tests change these mid-run (`net.loss = 0.3`)."""

    delay: float = 0.001
    jitter: float = 0.0
    loss: float = 0.0
    duplicate: float = 0.0

    def latency(self, rng: random.Random) -> float:
        return self.delay + (rng.uniform(0.0, self.jitter) if self.jitter > 0 else 0.0)

    def copies(self, rng: random.Random) -> int:
        """How many copies of a datagram arrive: 0 (lost), 1, or 2 (duplicated)."""
        if self.loss > 0 and rng.random() < self.loss:
            return 0
        if self.duplicate > 0 and rng.random() < self.duplicate:
            return 2
        return 1


class SimNetwork(Link):
    """Machines joined by one `Link` model, on a virtual clock: see the module docstring."""

    def __init__(
        self,
        *,
        seed: int = 0,
        delay: float = 0.001,
        jitter: float = 0.0,
        loss: float = 0.0,
        duplicate: float = 0.0,
        now: float = 0.0,
        strict: bool = True,
    ) -> None:
        super().__init__(delay, jitter, loss, duplicate)
        self.rng = random.Random(seed)
        #: machines added are switched to strict, and `run_until` checks that none counted a
        #: handler error (see the module docstring)
        self.strict = strict
        self.now = now
        self.machines: dict[Address, Machine] = {}
        self.stopped: set[Address] = set()
        self.killed: set[Address] = set()  # stopped, and their host refuses TCP connections
        self._groups: list[frozenset[Address]] = []
        self._events: list[tuple[float, int, Callable[[float], None]]] = []
        self._seq = 0
        self._armed: dict[Address, float] = {}
        self.packets_sent = 0
        self.max_packet = 0
        self.packets_dropped = 0
        self.streams_opened = 0

    # -- topology ------------------------------------------------------------------------------

    def add(self, machine: Machine, address: Address) -> None:
        if self.strict and isinstance(machine, _Checked):
            machine.strict = True
        self.machines[address] = machine
        self.stopped.discard(address)
        self.killed.discard(address)
        self.kick(address)

    def stop(self, address: Address) -> None:
        """Make a node silent: it gets nothing, sends nothing, its timers stop."""
        self.stopped.add(address)

    def kill(self, address: Address) -> None:
        """Like `stop`, but as when the process dies on a live host: packets to it are lost,
        TCP connections to it are refused (ECONNREFUSED) after one network delay."""
        self.stopped.add(address)
        self.killed.add(address)

    def remove(self, address: Address) -> None:
        self.machines.pop(address, None)
        self.stopped.discard(address)

    def partition(self, *groups: Iterable[Address]) -> None:
        """Addresses in different groups cannot reach each other (addresses in no group reach everyone)."""
        self._groups = [frozenset(g) for g in groups]

    def heal(self) -> None:
        self._groups = []

    def reachable(self, a: Address, b: Address) -> bool:
        if a in self.stopped or b in self.stopped or b not in self.machines:
            return False
        return self._same_side(a, b)

    def _same_side(self, a: Address, b: Address) -> bool:
        ga = next((g for g in self._groups if a in g), None)
        gb = next((g for g in self._groups if b in g), None)
        return ga is None or gb is None or ga is gb

    # -- clock ---------------------------------------------------------------------------------

    def kick(self, address: Address | None = None) -> None:
        """Collect outputs and re-arm timers after API calls made directly on machines."""
        for addr in [address] if address is not None else list(self.machines):
            self._after(addr)

    def run_until(self, t: float) -> None:
        self.kick()
        events = self._events
        while events and events[0][0] <= t:
            at, _, fn = heapq.heappop(events)
            self.now = max(self.now, at)
            fn(self.now)
        self.now = max(self.now, t)
        if self.strict:
            self.check_handler_errors()

    def handler_errors(self) -> dict[Address, int]:
        """Exceptions raised inside message handlers, per machine that counted any."""
        counts = {a: m.handler_errors for a, m in self.machines.items() if isinstance(m, _Checked)}
        return {a: n for a, n in counts.items() if n}

    def check_handler_errors(self) -> None:
        """Raise `HandlerErrorCounted` if any machine counted a handler error (in a strict run
        the handler raised; a count means something swallowed it, or a machine was not strict)."""
        errors = self.handler_errors()
        if errors:
            where = ", ".join(f"{a.host}:{a.port} ({n})" for a, n in errors.items())
            raise HandlerErrorCounted(f"drop.handler_error counted at {where}: see the log for the traceback")

    def run_for(self, dt: float) -> None:
        self.run_until(self.now + dt)

    def run_until_true(self, pred: Callable[[], bool], timeout: float, step: float = 0.1) -> bool:
        """Advance virtual time in `step`s until `pred()` holds; False if `timeout` virtual seconds passed."""
        end = self.now + timeout
        while True:
            if pred():
                return True
            if self.now >= end:
                return False
            self.run_until(min(end, self.now + step))

    # -- internals -----------------------------------------------------------------------------

    def _push(self, at: float, fn: Callable[[float], None]) -> None:
        self._seq += 1
        heapq.heappush(self._events, (at, self._seq, fn))

    def _after(self, addr: Address) -> None:
        """Route a machine's outputs and make sure a tick event is queued for its next deadline."""
        m = self.machines.get(addr)
        if m is None or addr in self.stopped:
            return
        for out in m.drain():
            if isinstance(out, SendPacket):
                self._send_packet(addr, out)
            else:
                self._open_stream(addr, out)
        deadline = m.next_deadline()
        if deadline is not None:
            armed = self._armed.get(addr)
            if armed is None or deadline < armed or armed < self.now:
                self._armed[addr] = deadline
                self._push(max(deadline, self.now), functools.partial(self._tick, addr))

    def _tick(self, addr: Address, now: float) -> None:
        if self._armed.get(addr) is not None and self._armed[addr] <= now:
            del self._armed[addr]
        m = self.machines.get(addr)
        if m is None or addr in self.stopped:
            return
        deadline = m.next_deadline()
        if deadline is not None and deadline <= now:
            m.tick(now)
        self._after(addr)

    def _send_packet(self, src: Address, out: SendPacket) -> None:
        self.packets_sent += 1
        self.max_packet = max(self.max_packet, len(out.data))
        copies = self.copies(self.rng)
        if copies == 0:
            self.packets_dropped += 1
        for _ in range(copies):
            self._push(self.now + self.latency(self.rng), functools.partial(self._deliver, src, out))

    def _deliver(self, src: Address, out: SendPacket, now: float) -> None:
        if not self.reachable(src, out.addr):
            self.packets_dropped += 1
            return
        self.machines[out.addr].receive_packet(out.data, src, now)
        self._after(out.addr)

    def _refuses(self, src: Address, dst: Address) -> bool:
        return dst in self.killed and src not in self.stopped and self._same_side(src, dst)

    def _open_stream(self, src: Address, out: OpenStream) -> None:
        self.streams_opened += 1
        if self._refuses(src, out.addr):
            self._push(self.now + 2 * self.latency(self.rng), lambda now: self._stream_done(src, out.stream_id, None, now, True))
            return
        if not self.reachable(src, out.addr):
            self._push(self.now + out.timeout, lambda now: self._stream_done(src, out.stream_id, None, now))
            return
        self._push(self.now + self.latency(self.rng), lambda now: self._stream_arrive(src, out, now))

    def _stream_arrive(self, src: Address, out: OpenStream, now: float) -> None:
        if self._refuses(src, out.addr):
            self._push(now + self.latency(self.rng), lambda t: self._stream_done(src, out.stream_id, None, t, True))
            return
        if not self.reachable(src, out.addr):
            self._push(now + out.timeout, lambda t: self._stream_done(src, out.stream_id, None, t))
            return
        target = self.machines[out.addr]
        reply = target.receive_stream(out.data, src, now)
        self._after(out.addr)
        if not out.expect_reply:
            result: bytes | None = b""
        else:
            result = reply
        self._push(now + self.latency(self.rng), lambda t: self._stream_done(src, out.stream_id, result, t))

    def _stream_done(
        self, src: Address, stream_id: int, reply: bytes | None, now: float, refused: bool = False
    ) -> None:
        m = self.machines.get(src)
        if m is None or src in self.stopped:
            return
        m.stream_result(stream_id, reply, now, refused)
        self._after(src)
