"""MachineRunner + transport on real loopback sockets, driven by a tiny ping-pong test Machine.

The test double implements the `Machine` protocol only (it is not a memberlist); stream
messages it exchanges use the real memberlist TCP user-message framing so `StreamFramer`
can delimit them.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import msgpack
import pytest

from registry.addresses import bind_pair
from registry.memberlist.config import Config
from registry.memberlist.runner import MachineRunner
from registry.memberlist.types import Address, OpenStream, Output, SendPacket
from tests.waiting import aeventually

LOOP4 = "127.0.0.1"
LOOP6 = "::1"

MakeRunner = Callable[..., Awaitable[tuple[MachineRunner, "PingPong"]]]


def user_frame(payload: bytes) -> bytes:
    """memberlist's TCP user message: 0x08, {UserMsgLen: n}, n raw bytes."""
    header: bytes = msgpack.packb({"UserMsgLen": len(payload)})
    return b"\x08" + header + payload


def frame_payload(frame: bytes) -> bytes:
    assert frame[0] == 8
    unpacker = msgpack.Unpacker(raw=True)
    unpacker.feed(frame[1:])
    header = unpacker.unpack()
    n = header[b"UserMsgLen"]
    return frame[len(frame) - n :]


class PingPong:
    """Test double of `Machine`: answers b"ping:x" with b"pong:x", echoes streams, keeps timers."""

    def __init__(self) -> None:
        self.out: list[Output] = []
        self.packets: list[tuple[bytes, Address]] = []
        self.streams: list[tuple[bytes, Address]] = []
        self.results: dict[int, bytes | None] = {}
        self.deadlines: list[float] = []
        self.ticks: list[float] = []
        self._next_stream = 0

    # Machine protocol
    def receive_packet(self, data: bytes, source: Address, now: float) -> None:
        if data == b"boom":
            raise RuntimeError("bad input made the machine raise")
        self.packets.append((data, source))
        if data.startswith(b"ping:"):
            self.out.append(SendPacket(source, b"pong:" + data[5:]))
        elif data.startswith(b"arm:"):
            self.deadlines.append(now + float(data[4:]))

    def receive_stream(self, data: bytes, source: Address, now: float) -> bytes | None:
        payload = frame_payload(data)
        if payload == b"boom":
            raise RuntimeError("bad stream")
        self.streams.append((payload, source))
        if payload == b"noreply":
            return None
        return user_frame(b"echo:" + payload)

    def stream_result(self, stream_id: int, reply: bytes | None, now: float, refused: bool = False) -> bool:
        self.results[stream_id] = reply
        return reply is not None

    def tick(self, now: float) -> None:
        due = [d for d in self.deadlines if d <= now]
        self.deadlines = [d for d in self.deadlines if d > now]
        self.ticks.extend([now] * len(due))

    def next_deadline(self) -> float | None:
        return min(self.deadlines) if self.deadlines else None

    def drain(self) -> list[Output]:
        out, self.out = self.out, []
        return out

    # test API
    def send(self, addr: Address, data: bytes) -> None:
        self.out.append(SendPacket(addr, data))

    def open(self, addr: Address, payload: bytes, *, timeout: float = 2.0, expect_reply: bool = True) -> int:
        self._next_stream += 1
        self.out.append(OpenStream(self._next_stream, addr, user_frame(payload), timeout, expect_reply, "user"))
        return self._next_stream


@pytest.fixture
async def make_runner() -> AsyncIterator[MakeRunner]:
    runners: list[MachineRunner] = []

    async def make(host: str = LOOP4, config: Config | None = None) -> tuple[MachineRunner, PingPong]:
        machine = PingPong()
        runner = MachineRunner(machine, config or Config.fast(tcp_timeout=1.0))
        await runner.start(Address(host, 0))
        runners.append(runner)
        return runner, machine

    yield make
    for r in runners:
        await r.close()


@pytest.mark.parametrize("host", [LOOP4, LOOP6])
async def test_udp_ping_pong_port_zero(make_runner: MakeRunner, host: str) -> None:
    a, ma = await make_runner(host)
    b, mb = await make_runner(host)
    assert a.bound.port != 0 and a.bound.port != b.bound.port
    assert a.bound.host == host
    ma.send(b.bound, b"ping:1")
    a.kick()
    await aeventually(lambda: any(d == b"pong:1" for d, _ in ma.packets), 10)
    src = next(s for d, s in mb.packets if d == b"ping:1")
    assert src == a.bound  # replies go to the sender's real UDP port
    assert a.stats["udp.out.packets"] >= 1 and a.stats["udp.in.bytes"] >= 6


async def test_udp_and_tcp_share_the_port(make_runner: MakeRunner) -> None:
    a, _ = await make_runner()
    # Both protocols are bound: binding either again on the same port must fail.
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        s = socket.socket(socket.AF_INET, kind)
        with pytest.raises(OSError):
            s.bind((LOOP4, a.bound.port))
        s.close()


@pytest.mark.parametrize("host", [LOOP4, LOOP6])
async def test_stream_request_reply(make_runner: MakeRunner, host: str) -> None:
    a, ma = await make_runner(host)
    b, mb = await make_runner(host)
    sid = ma.open(b.bound, b"hello")
    fut = a.watch_stream(sid)
    a.kick()
    outcome = await asyncio.wait_for(fut, 10)
    assert outcome.accepted and outcome.error == ""
    assert frame_payload(ma.results[sid] or b"") == b"echo:hello"
    assert mb.streams[0][0] == b"hello"


async def test_stream_without_reply_reports_empty(make_runner: MakeRunner) -> None:
    a, ma = await make_runner()
    b, mb = await make_runner()
    sid = ma.open(b.bound, b"noreply", expect_reply=False)
    fut = a.watch_stream(sid)
    a.kick()
    assert (await asyncio.wait_for(fut, 10)).accepted
    assert ma.results[sid] == b""
    await aeventually(lambda: mb.streams == [(b"noreply", mb.streams[0][1])] if mb.streams else False, 10)


async def test_stream_to_closed_port_fails_with_reason(make_runner: MakeRunner) -> None:
    a, ma = await make_runner()
    with socket.socket() as s:
        s.bind((LOOP4, 0))
        dead = Address(LOOP4, s.getsockname()[1])  # bound, not listening: connection refused
        sid = ma.open(dead, b"x")
        fut = a.watch_stream(sid)
        a.kick()
        outcome = await asyncio.wait_for(fut, 10)
    assert not outcome.accepted
    assert "refused" in outcome.error.lower()
    assert ma.results[sid] is None


async def test_wait_until_returns_false_at_its_deadline(make_runner: MakeRunner) -> None:
    """A predicate that never holds: False after `timeout` (on 3.10 asyncio's TimeoutError is not
    the builtin one, and `except TimeoutError` let it escape to the caller, e.g. a Serf leave)."""
    a, _ = await make_runner()
    started = time.monotonic()
    assert await a.wait_until(lambda: False, 0.05) is False
    assert time.monotonic() - started < 5


async def test_close_releases_the_port_before_it_returns(make_runner: MakeRunner) -> None:
    """The port can be bound again right after close(), without yielding to the loop first:
    asyncio closes a datagram socket one loop iteration after transport.close()."""
    a, _ = await make_runner()
    await a.close()
    tcp, udp = bind_pair(LOOP4, a.bound.port)
    tcp.close()
    udp.close()


async def test_stream_to_silent_peer_times_out(make_runner: MakeRunner) -> None:
    a, ma = await make_runner()
    accepted: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # read nothing, answer nothing

    server = await asyncio.start_server(silent, LOOP4, 0)
    port = server.sockets[0].getsockname()[1]
    try:
        started = time.monotonic()
        sid = ma.open(Address(LOOP4, port), b"x", timeout=0.3)
        fut = a.watch_stream(sid)
        a.kick()
        outcome = await asyncio.wait_for(fut, 10)
        assert not outcome.accepted and "timed out" in outcome.error
        assert time.monotonic() - started < 5
        assert a.stats["tcp.dial.timeout"] == 1
    finally:
        for w in accepted:
            w.close()
        server.close()


async def test_inbound_silent_and_garbage_connections_are_dropped(make_runner: MakeRunner) -> None:
    b, _mb = await make_runner(config=Config.fast(tcp_timeout=0.5))
    a, ma = await make_runner()
    # A silent client: the node must close it after tcp_timeout.
    r1, w1 = await asyncio.open_connection(LOOP4, b.bound.port)
    w1.write(b"\x08")  # a started but never finished message
    # Garbage: not a memberlist stream at all.
    r2, w2 = await asyncio.open_connection(LOOP4, b.bound.port)
    w2.write(b"\xee" * 64)
    await w2.drain()
    # Meanwhile the node still serves UDP and good streams.
    ma.send(b.bound, b"ping:alive")
    sid = ma.open(b.bound, b"good")
    fut = a.watch_stream(sid)
    a.kick()
    assert (await asyncio.wait_for(fut, 10)).accepted
    await aeventually(lambda: any(d == b"pong:alive" for d, _ in ma.packets), 10)
    assert await asyncio.wait_for(r2.read(), 10) == b""  # closed without a reply
    started = time.monotonic()
    assert await asyncio.wait_for(r1.read(), 10) == b""  # closed by the node's deadline
    assert time.monotonic() - started < 5
    assert b.stats["tcp.in.timeout"] == 1
    assert {k: v for k, v in b.stats.items() if k.startswith("tcp.in.drop.")} == {"tcp.in.drop.unknown_type": 1}  # the garbage
    w1.close()
    w2.close()


@pytest.mark.handler_errors("RuntimeError")  # injected on purpose
async def test_machine_exceptions_are_contained(make_runner: MakeRunner) -> None:
    a, ma = await make_runner()
    b, _mb = await make_runner()
    ma.send(b.bound, b"boom")
    sid = ma.open(b.bound, b"boom")
    fut = a.watch_stream(sid)
    a.kick()
    outcome = await asyncio.wait_for(fut, 10)
    assert not outcome.accepted  # the peer's machine raised, so no reply was written
    await aeventually(lambda: b.stats["runner.exception.receive_packet"] == 1, 10)
    assert b.stats["runner.exception.receive_stream"] == 1
    # Still healthy afterwards.
    ma.send(b.bound, b"ping:after")
    a.kick()
    await aeventually(lambda: any(d == b"pong:after" for d, _ in ma.packets), 10)


async def test_udp_garbage_does_not_hurt(make_runner: MakeRunner) -> None:
    b, _mb = await make_runner()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((LOOP4, 0))
        s.sendto(b"\x00" * 2000, (LOOP4, b.bound.port))
        s.sendto(b"ping:raw", (LOOP4, b.bound.port))
        s.settimeout(10)
        # loop.sock_recvfrom is 3.11+; a blocking read on a worker thread runs on 3.10 too.
        data, _ = await asyncio.to_thread(s.recvfrom, 65536)
    assert data == b"pong:raw"
    assert b.stats["udp.in.packets"] == 2


async def test_timer_armed_at_next_deadline_and_rearmed(make_runner: MakeRunner) -> None:
    a, ma = await make_runner()
    b, mb = await make_runner()
    # An input that creates a deadline must re-arm the runner's timer.
    sent = b.now()
    ma.send(b.bound, b"arm:0.2")
    a.kick()
    await aeventually(lambda: len(mb.ticks) == 1, 10)
    assert mb.ticks[0] >= sent + 0.2 - 0.01
    # An earlier deadline arriving later replaces a pending later one.
    ma.send(b.bound, b"arm:5")
    ma.send(b.bound, b"arm:0.1")
    a.kick()
    await aeventually(lambda: len(mb.ticks) == 2, 10)
    assert len(mb.deadlines) == 1  # the 5 s one is still pending
    # kick() after an API call arms timers set through the API.
    mb.deadlines.append(b.now() + 0.05)
    b.kick()
    await aeventually(lambda: len(mb.ticks) == 3, 10)


async def test_inbound_concurrency_is_capped(make_runner: MakeRunner) -> None:
    b, _mb = await make_runner(config=Config.fast(tcp_timeout=5.0, max_concurrent_push_pulls=2))
    conns = [await asyncio.open_connection(LOOP4, b.bound.port) for _ in range(2)]
    await aeventually(lambda: b.stats["tcp.accept"] == 2, 10)
    _r3, w3 = await asyncio.open_connection(LOOP4, b.bound.port)
    # The newcomer is admitted; the oldest idle holder is shed at once, not after tcp_timeout.
    assert await asyncio.wait_for(conns[0][0].read(), 5) == b""
    await aeventually(lambda: b.stats["tcp.accept"] == 3, 10)
    # (the per-source cap, 2 here too, spares young streams; the global rule does not)
    assert b.stats["tcp.in.shed.global"] == 1 and b.stats["tcp.in.rejected_busy"] == 0
    for _, w in conns:
        w.close()
    w3.close()


async def test_close_resolves_pending_streams() -> None:
    machine = PingPong()
    runner = MachineRunner(machine, Config.fast())
    await runner.start(Address(LOOP4, 0))

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    server = await asyncio.start_server(silent, LOOP4, 0)
    port = server.sockets[0].getsockname()[1]
    sid = machine.open(Address(LOOP4, port), b"x", timeout=30)
    fut = runner.watch_stream(sid)
    runner.kick()
    await aeventually(lambda: runner.stats["tcp.dial"] == 1, 10)
    await runner.close()
    outcome = await asyncio.wait_for(fut, 5)
    assert not outcome.accepted
    assert not runner.running
    server.close()
    # Binding the same port again works once closed.
    again = MachineRunner(PingPong(), Config.fast())
    await again.start(runner.bound)
    await again.close()


async def test_factory_gets_the_bound_address() -> None:
    seen: list[Address] = []

    def factory(bound: Address) -> PingPong:
        seen.append(bound)
        return PingPong()

    runner = MachineRunner(None, Config.fast())
    bound = await runner.start(Address(LOOP6, 0), factory)
    try:
        assert seen == [bound] and bound.port > 0
    finally:
        await runner.close()
