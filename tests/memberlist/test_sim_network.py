"""SimNetwork on its own, with a tiny real Machine (an echo node)."""

from __future__ import annotations

from registry.memberlist.simnet import SimNetwork
from registry.memberlist.types import Address, OpenStream, Output, SendPacket


class Echo:
    """Echoes packets back, replies to streams, and pings a peer every second."""

    def __init__(self, peer: Address | None = None) -> None:
        self.peer = peer
        self.got: list[tuple[float, bytes, Address]] = []
        self.results: list[tuple[int, bytes | None, float]] = []
        self.out: list[Output] = []
        self.next = 1.0 if peer else None
        self.sent = 0

    def receive_packet(self, data: bytes, source: Address, now: float) -> None:
        self.got.append((now, data, source))
        if data.startswith(b"ping"):
            self.out.append(SendPacket(source, b"pong" + data[4:]))

    def receive_stream(self, data: bytes, source: Address, now: float) -> bytes | None:
        return b"re:" + data

    def stream_result(self, stream_id: int, reply: bytes | None, now: float, refused: bool = False) -> bool:
        self.results.append((stream_id, reply, now))
        return reply is not None

    def tick(self, now: float) -> None:
        assert self.next is not None and self.peer is not None
        self.sent += 1
        self.out.append(SendPacket(self.peer, b"ping%d" % self.sent))
        self.next = now + 1.0

    def next_deadline(self) -> float | None:
        return self.next

    def drain(self) -> list[Output]:
        out, self.out = self.out, []
        return out


A, B = Address("10.0.0.1", 7946), Address("10.0.0.2", 7946)


def test_timers_packets_and_delay() -> None:
    net = SimNetwork(delay=0.01)
    a, b = Echo(B), Echo()
    net.add(a, A)
    net.add(b, B)
    net.run_until(10.5)
    assert a.sent == 10
    assert len(b.got) == 10 and abs(b.got[0][0] - 1.01) < 1e-9
    assert len(a.got) == 10 and a.got[0][1] == b"pong1"


def test_loss_is_deterministic_per_seed() -> None:
    def run(seed: int) -> int:
        net = SimNetwork(seed=seed, loss=0.3)
        a, b = Echo(B), Echo()
        net.add(a, A)
        net.add(b, B)
        net.run_until(100.5)
        return len(b.got)

    assert run(1) == run(1)
    assert 40 < run(1) < 90


def test_partition_stop_and_streams() -> None:
    net = SimNetwork(delay=0.01)
    a, b = Echo(B), Echo()
    net.add(a, A)
    net.add(b, B)
    net.partition({A}, {B})
    net.run_until(5.5)
    assert b.got == []
    a.out.append(OpenStream(1, B, b"hello", timeout=2.0))
    net.kick(A)
    net.run_until(8.0)
    assert a.results == [(1, None, 7.5)]
    net.heal()
    a.out.append(OpenStream(2, B, b"hello", timeout=2.0))
    net.run_until(9.0)
    assert a.results[-1][:2] == (2, b"re:hello")
    n = len(b.got)
    assert n >= 1
    net.stop(B)
    net.run_until(12.0)
    assert len(b.got) == n


def test_duplicates_and_reordering() -> None:
    net = SimNetwork(seed=3, delay=0.001, jitter=2.5, duplicate=0.5)
    a, b = Echo(B), Echo()
    net.add(a, A)
    net.add(b, B)
    net.run_until(60)
    payloads = [d for _, d, _ in b.got]
    assert len(payloads) > len(set(payloads))  # some duplicated
    nums = [int(p[4:]) for p in payloads]
    assert nums != sorted(nums)  # some reordered
