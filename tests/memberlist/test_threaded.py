"""ThreadedRunner (selectors + one thread, no asyncio) driving the memberlist core on real
loopback sockets, against asyncio `MemberlistNode`s: join, failure detection both ways,
leave, clean stop, hostile input counted, machine exceptions contained."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest

from registry.addresses import bind_pair
from registry.memberlist.config import Config
from registry.memberlist.core import Memberlist
from registry.memberlist.node import MemberlistNode
from registry.memberlist.threaded import RunnerClosed, ThreadedRunner, local_advertise
from registry.memberlist.types import Address, NodeState, Output
from tests.waiting import eventually

LOOP4 = "127.0.0.1"


class ThreadedNode:
    """A memberlist core on a ThreadedRunner, with blocking helpers for the tests."""

    def __init__(self, name: str, **cfg: object) -> None:
        config = Config.fast(name=name, bind_addr=LOOP4, bind_port=0, **cfg)
        self.runner = ThreadedRunner(None, config, name=name)
        cores: list[Memberlist] = []

        def factory(bound: Address) -> Memberlist:
            core = Memberlist(config.replace(bind_port=bound.port), local_advertise(config, bound), None, now=self.runner.now())
            cores.append(core)
            return core

        self.address = self.runner.start(Address(LOOP4, 0), factory)
        self.core = cores[0]

    def join(self, addr: Address, timeout: float = 10.0) -> tuple[bool, str]:
        done = threading.Event()
        result: list[tuple[bool, str]] = []

        def finish(ok: bool, why: str) -> None:
            result.append((ok, why))
            done.set()

        def begin() -> None:
            for sid in self.core.join([addr], self.runner.now()):
                self.runner.watch_stream(sid, finish)

        self.runner.call(begin)
        assert done.wait(timeout), "the join did not finish"
        return result[0]

    def state_of(self, name: str) -> NodeState | None:
        def get() -> NodeState | None:
            n = self.core.get(name)
            return None if n is None else n.state

        return self.runner.call(get)

    def names(self) -> set[str]:
        return self.runner.call(lambda: {m.name for m in self.core.members()})


Threaded = Callable[..., "ThreadedNode"]
Anode = Callable[[str], Awaitable[MemberlistNode]]


async def aeventually(pred: Callable[[], bool], timeout: float, what: str) -> None:
    await asyncio.to_thread(eventually, pred, timeout, what)


@pytest.fixture
def threaded() -> Iterator[Callable[..., ThreadedNode]]:
    nodes: list[ThreadedNode] = []

    def make(name: str, **cfg: object) -> ThreadedNode:
        node = ThreadedNode(name, **cfg)
        nodes.append(node)
        return node

    yield make
    bugs = {n.core.name: n.core.handler_errors for n in nodes}  # exceptions inside handlers: see the log
    for n in nodes:
        n.runner.close()
    assert not any(bugs.values()), f"drop.handler_error counted: {bugs}"


@pytest.fixture
async def anode() -> AsyncIterator[Callable[[str], Awaitable[MemberlistNode]]]:
    nodes: list[MemberlistNode] = []

    async def make(name: str) -> MemberlistNode:
        node = await MemberlistNode.create(Config.fast(name=name, bind_addr=LOOP4, bind_port=0))
        nodes.append(node)
        return node

    yield make
    bugs = {n.name: n.core.handler_errors for n in nodes}
    for n in nodes:
        await n.shutdown()
    assert not any(bugs.values()), f"drop.handler_error counted: {bugs}"


async def test_threaded_joins_asyncio_and_detects_failure_both_ways(threaded: Threaded, anode: Anode) -> None:
    a = await anode("a")
    b = await anode("b")
    assert await b.join([str(a.address)]) == 1
    t = threaded("t")
    assert t.address.port != 0 and t.runner.bound == t.address
    ok, why = await asyncio.to_thread(t.join, a.address)
    assert ok, why
    await aeventually(lambda: t.names() == {"a", "b", "t"}, 10, "threaded node sees all")
    await a.wait_until(lambda: {m.name for m in a.members()} == {"a", "b", "t"}, 10)
    await b.wait_until(lambda: {m.name for m in b.members()} == {"a", "b", "t"}, 10)
    # the asyncio node b dies: the threaded node's probes find it dead
    await b.shutdown()
    await aeventually(lambda: t.state_of("b") == NodeState.DEAD, 15, "threaded node declares b dead")
    # whoever suspected b first did it on a refused TCP fallback ping (b's port is closed on a live host)
    assert t.runner.call(lambda: t.core.stats["probe.tcp_refused"]) + a.stats["probe.tcp_refused"] >= 1
    refused_before = a.stats["probe.tcp_refused"]
    # the threaded node dies (thread stopped, sockets closed): a finds it dead
    await asyncio.to_thread(t.runner.close)
    assert not t.runner.running
    assert await a.wait_until(lambda: a.get("t") is not None and a.get("t").state == NodeState.DEAD, 15)  # type: ignore[union-attr]
    assert a.stats["probe.tcp_refused"] > refused_before  # the asyncio runner reports refusals too


async def test_threaded_leave_is_seen_as_left(threaded: Threaded, anode: Anode) -> None:
    a = await anode("a")
    t = threaded("t")
    ok, why = await asyncio.to_thread(t.join, a.address)
    assert ok, why
    await a.wait_until(lambda: a.get("t") is not None, 10)
    runner = t.runner
    runner.call(lambda: t.core.leave(runner.now()))
    assert await asyncio.to_thread(runner.wait_until, t.core.leave_done, 10.0)
    assert await a.wait_until(lambda: a.get("t") is not None and a.get("t").state == NodeState.LEFT, 10)  # type: ignore[union-attr]


def test_join_to_a_dead_port_reports_the_error(threaded: Threaded) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOP4, 0))
        dead = Address(LOOP4, s.getsockname()[1])
    t = threaded("t")
    ok, why = t.join(dead)
    assert not ok and "refused" in why.lower()
    assert t.runner.stats["tcp.dial.error"] == 1


def test_close_joins_the_thread_and_frees_the_port(threaded: Threaded) -> None:
    t = threaded("t")
    thread = t.runner.thread
    assert thread is not None and thread.is_alive()
    port = t.address.port
    t.runner.close()
    assert not thread.is_alive()
    with pytest.raises(RunnerClosed):
        t.runner.call(lambda: None)
    assert not t.runner.wait_until(lambda: True, 1.0)
    tcp, udp = bind_pair(LOOP4, port)  # both sockets were released
    tcp.close()
    udp.close()
    t.runner.close()  # idempotent


async def test_hostile_input_is_counted_not_fatal(threaded: Threaded, anode: Anode) -> None:
    a = await anode("a")
    t = threaded("t", tcp_timeout=1.0)
    ok, why = await asyncio.to_thread(t.join, a.address)
    assert ok, why
    port = t.address.port

    def drops() -> dict[str, int]:
        stats = t.runner.call(lambda: dict(t.core.stats))
        return {k: stats.get(k, 0) for k in ("drop.unknown_type", "drop.truncated")}

    before = drops()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for junk in (b"\xff" * 100, b"\x00", b"\x07\x05", b"\x09\x81\xa4Algo"):
            s.sendto(junk, (LOOP4, port))
    # the first datagram is of no known type, the other three end too soon
    want = {"drop.unknown_type": before["drop.unknown_type"] + 1, "drop.truncated": before["drop.truncated"] + 3}
    await aeventually(lambda: drops() == want, 10, "udp garbage counted")
    garbage = socket.create_connection((LOOP4, port))
    garbage.sendall(b"\xee\x00\x01" * 50)
    slow = socket.create_connection((LOOP4, port))
    slow.sendall(b"\x06")  # a push/pull that never completes
    slow.settimeout(10.0)
    assert await asyncio.to_thread(slow.recv, 10) == b""  # closed by the tcp timeout
    garbage.settimeout(10.0)
    assert await asyncio.to_thread(garbage.recv, 10) == b""
    garbage.close()
    slow.close()
    stats = t.runner.stats
    assert stats["tcp.in.timeout"] >= 1
    assert not any(k.startswith("runner.exception") for k in stats)
    assert t.runner.thread is not None and t.runner.thread.is_alive()
    await aeventually(lambda: t.names() == {"a", "t"}, 5, "still a member")
    assert a.get("t") is not None and a.get("t").state == NodeState.ALIVE  # type: ignore[union-attr]


class Exploding:
    """A machine whose every input raises: the driver must count, not die."""

    def __init__(self) -> None:
        self.ticks = 0

    def receive_packet(self, data: bytes, source: Address, now: float) -> None:
        raise RuntimeError("boom")

    def receive_stream(self, data: bytes, source: Address, now: float) -> bytes | None:
        raise RuntimeError("boom")

    def stream_result(self, stream_id: int, reply: bytes | None, now: float, refused: bool = False) -> bool:
        return False

    def tick(self, now: float) -> None:
        self.ticks += 1
        raise RuntimeError("boom")

    def next_deadline(self) -> float | None:
        return time.monotonic() + 0.01

    def drain(self) -> list[Output]:
        return []


@pytest.mark.handler_errors("RuntimeError")  # injected on purpose
def test_machine_exceptions_are_contained() -> None:
    machine = Exploding()
    runner = ThreadedRunner(machine, Config.fast(name="x"))
    bound = runner.start(Address(LOOP4, 0))
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(b"\x00", (LOOP4, bound.port))
        eventually(lambda: runner.stats["runner.exception.receive_packet"] >= 1, 5, "packet exception counted")
        eventually(lambda: runner.stats["runner.exception.tick"] >= 3, 5, "tick exceptions counted")
        assert runner.call(lambda: 42) == 42  # still serving
        with pytest.raises(ZeroDivisionError):
            runner.call(lambda: 1 // 0)  # a caller's error goes back to the caller
        assert runner.thread is not None and runner.thread.is_alive()
    finally:
        runner.close()
