"""Hostile inbound gossip TCP streams against both drivers on real loopback sockets.

Each test runs against the asyncio `MachineRunner` (registry servers) and the threaded
`ThreadedRunner` (the Register SDK), with small limits so the attack is cheap: idle holders are
shed instead of locking newcomers out (per source, then globally from the heaviest source), the
first message must arrive within `inbound_message_timeout`, bytes are charged to a per-node
budget before they are buffered, announced sizes are refused at the header, and running out of
file descriptors neither spins the accept loop nor logs per retry (a child process with a low
descriptor limit).  `Admission`'s decisions are also checked on their own.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import msgpack
import pytest

from registry.addresses import bind_pair
from registry.memberlist.admission import GRACE, Admission, Shed
from registry.memberlist.config import Config
from registry.memberlist.runner import MachineRunner
from registry.memberlist.threaded import ThreadedRunner
from registry.memberlist.types import Address, Output

LOOP = "127.0.0.1"
ROOT = Path(__file__).resolve().parents[2]


class Echo:
    """A `Machine` that answers every inbound stream message with b"ok" (sent raw)."""

    def receive_packet(self, data: bytes, source: Address, now: float) -> None:
        pass

    def receive_stream(self, data: bytes, source: Address, now: float) -> bytes | None:
        return b"ok"

    def stream_result(self, stream_id: int, reply: bytes | None, now: float, refused: bool = False) -> bool:
        return False

    def tick(self, now: float) -> None:
        pass

    def next_deadline(self) -> float | None:
        return None

    def drain(self) -> list[Output]:
        return []


class Node:
    """One driver on loopback, used from the test thread whichever driver it is."""

    def __init__(self, kind: str, config: Config) -> None:
        self.kind = kind
        self.closed = False
        self.loop: asyncio.AbstractEventLoop | None = None
        if kind == "threaded":
            self.threaded = ThreadedRunner(Echo(), config)
            self.port = self.threaded.start(Address(LOOP, 0)).port
            return
        loop = self.loop = asyncio.new_event_loop()
        threading.Thread(target=loop.run_forever, daemon=True).start()
        self.aio = MachineRunner(Echo(), config)
        self.port = asyncio.run_coroutine_threadsafe(self.aio.start(Address(LOOP, 0)), loop).result(10).port

    def stats(self) -> Counter[str]:
        """A copy of the driver's counters, taken on the driver's own thread."""
        if self.loop is None:
            return self.threaded.call(lambda: Counter(self.threaded.stats))

        async def copy() -> Counter[str]:
            return Counter(self.aio.stats)

        return asyncio.run_coroutine_threadsafe(copy(), self.loop).result(10)

    def close(self) -> None:
        if self.loop is None:
            self.threaded.close()
            return
        if not self.closed:
            self.closed = True
            asyncio.run_coroutine_threadsafe(self.aio.close(), self.loop).result(10)
            self.loop.call_soon_threadsafe(self.loop.stop)


@pytest.fixture(params=["asyncio", "threaded"])
def make_node(request: pytest.FixtureRequest) -> Iterator[Callable[..., Node]]:
    nodes: list[Node] = []

    def make(**cfg: object) -> Node:
        config = Config.fast()
        for name, value in cfg.items():  # set one by one: the same test runs against older code
            setattr(config, name, value)
        node = Node(request.param, config)
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node.close()


def user_msg(body: bytes, announce: int | None = None) -> bytes:
    head = msgpack.packb({"UserMsgLen": len(body) if announce is None else announce})
    return bytes([8]) + bytes(head) + body


def connect(port: int, source: str = LOOP) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((source, 0))
    s.settimeout(10)
    s.connect((LOOP, port))
    return s


def closed_within(s: socket.socket, timeout: float) -> bool:
    """True once the node closed `s` (EOF or reset) within `timeout` seconds."""
    s.settimeout(timeout)
    try:
        while s.recv(65536):
            pass
        return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def still_open(s: socket.socket) -> bool:
    return not select.select([s], [], [], 0)[0]


def exchange(port: int, source: str = LOOP) -> bytes:
    with connect(port, source) as s:
        s.sendall(user_msg(b"hello"))
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
        return reply


def wait_until(pred: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


# -- Admission on its own --------------------------------------------------------------------


def test_admission_sheds_oldest_idle_of_the_source_then_of_the_heaviest_source() -> None:
    adm: Admission[str] = Admission(max_streams=5, max_per_source=3, max_buffered=100, grace=1.0)
    for k in ("a1", "a2", "a3"):
        assert adm.admit(k, "A", 0.0) == (True, [])
    assert adm.admit("a4", "A", 0.5) == (True, [])  # over A's cap, but a1 is young: spared
    assert adm.admit("a5", "A", 1.0) == (True, [("a1", Shed.SOURCE)])
    assert adm.admit("b1", "B", 1.0) == (True, [])  # full: a2 a3 a4 a5 b1
    assert adm.admit("c1", "C", 1.0) == (True, [("a2", Shed.GLOBAL)])  # A is the heaviest; age ignored
    adm.complete("a3", 8.5)
    adm.complete("a4", 8.5)
    adm.complete("a5", 8.5)  # A holds 3 complete streams: the oldest incomplete anywhere goes
    assert adm.admit("c2", "C", 1.0) == (True, [("b1", Shed.GLOBAL)])
    assert adm.admit("a6", "A", 9.0) == (False, [])  # A at its cap with only complete streams, answered 0.5 s ago
    for k in ("c1", "c2"):
        adm.complete(k, 8.5)
    assert adm.admit("d1", "D", 9.0) == (False, [])  # every holder completed its message just now: refuse
    assert len(adm) == 5 and "d1" not in adm
    assert adm.shed_for_fd(9.0) is None


def test_admission_sheds_peers_that_leave_our_reply_unread() -> None:
    """Completing a message and then not reading the answer must not lock joiners out either:
    once a completed stream has waited `grace` with our reply unread it goes before a newcomer
    is refused (the oldest first), globally and per source."""
    adm: Admission[str] = Admission(max_streams=4, max_per_source=2, max_buffered=100, grace=1.0)
    for i, src in enumerate(("A", "A", "B", "B")):
        key = f"{src}{i}"
        assert adm.admit(key, src, 0.0) == (True, [])
        adm.complete(key, 0.5 + i * 0.1)  # A0 answered at 0.5, A1 at 0.6, B2 at 0.7, B3 at 0.8
    assert adm.admit("C1", "C", 1.2) == (False, [])  # every reply is younger than the grace
    assert adm.admit("C1", "C", 1.55) == (True, [("A0", Shed.GLOBAL)])  # A0 waited 1.05 s
    assert adm.admit("B9", "B", 1.75) == (True, [("B2", Shed.SOURCE)])  # B at its cap: its stalled B2 goes
    assert adm.admit("D1", "D", 1.75) == (True, [("A1", Shed.GLOBAL)])  # full: stalled A1 before incomplete B9
    assert adm.admit("D2", "D", 1.75) == (True, [("B9", Shed.GLOBAL)])  # B3 waited 0.95 s: B's incomplete goes
    assert len(adm) == 4 and adm.from_source("A") == 0 and "B3" in adm
    for k in ("C1", "D1", "D2"):
        adm.complete(k, 1.76)
    assert adm.admit("E1", "E", 1.79) == (False, [])  # all answered within the grace: refuse


def test_admission_spares_young_streams_when_out_of_descriptors() -> None:
    adm: Admission[str] = Admission(max_streams=5, max_per_source=5, max_buffered=100, grace=1.0)
    adm.admit("old", "A", 0.0)
    adm.admit("new", "A", 5.0)
    assert adm.shed_for_fd(5.5) == "old"
    assert adm.shed_for_fd(5.5) is None  # "new" was accepted half a second ago
    assert adm.shed_for_fd(6.0) == "new"


def test_admission_budget_sheds_the_largest_incomplete_holder() -> None:
    adm: Admission[str] = Admission(max_streams=10, max_per_source=10, max_buffered=100)
    for k in ("x", "y", "z"):
        adm.admit(k, "S")
    assert adm.charge("x", 60) == []
    assert adm.charge("y", 30) == []
    assert adm.charge("z", 20) == [("x", Shed.BUDGET)]  # 110 > 100: x held the most
    assert adm.buffered == 50
    assert adm.charge("y", 80) == [("y", Shed.BUDGET)]  # y itself would hold the most: not buffered
    assert adm.buffered == 20
    adm.complete("z")
    assert adm.buffered == 0 and adm.charge("z", 500) == []  # a complete message is not charged
    adm.release("z")
    assert len(adm) == 0 and adm.shed_for_fd(100.0) is None


# -- both drivers, real sockets --------------------------------------------------------------


def test_idle_streams_must_deliver_their_first_message_quickly(make_node: Callable[..., Node]) -> None:
    node = make_node(tcp_timeout=20.0, inbound_message_timeout=0.5)
    idle = connect(node.port)
    partial = connect(node.port)
    partial.sendall(user_msg(b"x" * 100)[:8])  # a header and part of a body, then silence
    started = time.monotonic()
    assert closed_within(idle, 8) and closed_within(partial, 8)
    assert time.monotonic() - started < 8  # the pre-auth deadline, not tcp_timeout (20 s)
    assert exchange(node.port) == b"ok"  # a peer that sends at once is answered
    stats = node.stats()
    assert stats["tcp.in.timeout.first_message"] == 2, stats


def test_newcomers_shed_idle_holders_per_source_then_globally(make_node: Callable[..., Node]) -> None:
    node = make_node(tcp_timeout=20.0, inbound_message_timeout=20.0, max_concurrent_push_pulls=8,
                     max_inbound_streams_per_source=4)
    a = [connect(node.port, "127.0.0.2") for _ in range(4)]
    since = time.monotonic()
    wait_until(lambda: node.stats()["tcp.accept"] == 4)
    wait_until(lambda: time.monotonic() - since > GRACE + 0.1)  # younger ones would be spared
    a.append(connect(node.port, "127.0.0.2"))  # over 127.0.0.2's cap: its oldest goes
    assert closed_within(a[0], 8)
    wait_until(lambda: node.stats()["tcp.accept"] == 5)
    b = [connect(node.port, "127.0.0.3") for _ in range(4)]
    wait_until(lambda: node.stats()["tcp.accept"] == 9)  # the table is full: a[1:5] and b
    assert all(still_open(s) for s in a[1:] + b)
    # A legitimate peer from another source still gets through, at the cost of the oldest idle
    # holder of the heaviest source (a tie: the first of them).
    assert exchange(node.port) == b"ok"
    assert closed_within(a[1], 8)
    assert all(still_open(s) for s in a[2:] + b)
    stats = node.stats()
    assert stats["tcp.in.shed.source"] == 1 and stats["tcp.in.shed.global"] == 1, stats
    assert stats["tcp.in.rejected_busy"] == 0
    for s in a + b:
        s.close()


def test_a_burst_from_one_address_is_not_shed(make_node: Callable[..., Node]) -> None:
    """Services behind one NAT starting together: over the per-source cap, but all young."""
    node = make_node(tcp_timeout=20.0, max_concurrent_push_pulls=64, max_inbound_streams_per_source=4)
    conns = [connect(node.port) for _ in range(30)]  # all connected before any sends
    wait_until(lambda: node.stats()["tcp.accept"] == 30)
    for c in conns:
        c.sendall(user_msg(b"join"))
    for c in conns:
        assert c.recv(16) == b"ok"
        c.close()
    stats = node.stats()
    assert stats["tcp.in.shed.source"] == 0 and stats["tcp.in.rejected_busy"] == 0, stats


def test_buffered_bytes_share_one_budget(make_node: Callable[..., Node]) -> None:
    node = make_node(tcp_timeout=20.0, inbound_message_timeout=20.0, max_inbound_buffered=300_000)
    conns = [connect(node.port, f"127.0.0.{2 + i}") for i in range(3)]
    for s in conns:  # each announces 900 kB and sends 200 kB: 600 kB > the 300 kB budget
        try:
            s.sendall(user_msg(b"\0" * 200_000, announce=900_000))
        except (ConnectionResetError, BrokenPipeError):
            pass
    wait_until(lambda: node.stats()["tcp.in.shed.budget"] >= 1)
    assert sum(closed_within(s, 0.5) for s in conns) >= 1
    assert exchange(node.port) == b"ok"  # small messages still fit
    for s in conns:
        s.close()


def test_announced_sizes_are_checked_before_the_body(make_node: Callable[..., Node]) -> None:
    node = make_node(tcp_timeout=20.0, inbound_message_timeout=20.0, max_stream_user_msg_size=1 << 20)
    s = connect(node.port)
    s.sendall(user_msg(b"", announce=2 << 20))  # no body follows: refused at the header
    assert closed_within(s, 8)
    s.close()
    enc = connect(node.port)  # an encryption frame longer than max_stream_size
    enc.sendall(bytes([10]) + (Config().max_stream_size + 1).to_bytes(4, "big"))
    assert closed_within(enc, 8)
    enc.close()
    assert node.stats()["tcp.in.drop.too_large"] == 2


def test_close_frees_the_port_with_a_connection_open(make_node: Callable[..., Node]) -> None:
    node = make_node()
    s = connect(node.port)
    wait_until(lambda: node.stats()["tcp.accept"] == 1)
    node.close()
    tcp, udp = bind_pair(LOOP, node.port)  # at once: no lingering listener or stream
    tcp.close()
    udp.close()
    s.close()


# -- out of file descriptors: a child process with a low limit -------------------------------

CHILD = textwrap.dedent(
    """
    import asyncio, json, os, resource, sys
    sys.path.insert(0, sys.argv[2])
    from registry.memberlist.config import Config
    from registry.memberlist.types import Address

    class Echo:
        def receive_packet(self, data, source, now): pass
        def receive_stream(self, data, source, now): return b"ok"
        def stream_result(self, stream_id, reply, now, refused=False): return False
        def tick(self, now): pass
        def next_deadline(self): return None
        def drain(self): return []

    kind = sys.argv[1]
    cfg = Config.fast(tcp_timeout=30.0)
    cfg.inbound_message_timeout = 30.0
    dummies = []

    def exhaust():
        # Leave no descriptor free: a low soft limit, then fill it.
        used = len(os.listdir("/proc/self/fd"))
        resource.setrlimit(resource.RLIMIT_NOFILE, (used + 16, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
        try:
            while True:
                dummies.append(os.open("/dev/null", os.O_RDONLY))
        except OSError:
            pass

    def commands(stats):
        for line in sys.stdin:
            cmd = line.strip()
            if cmd == "exhaust":
                exhaust()
            elif cmd == "free":
                while dummies:
                    os.close(dummies.pop())
            print(cmd, json.dumps(dict(stats())), flush=True)

    if kind == "threaded":
        from registry.memberlist.threaded import ThreadedRunner
        r = ThreadedRunner(Echo(), cfg)
        port = r.start(Address("127.0.0.1", 0)).port
        print("port", port, flush=True)
        commands(lambda: r.call(lambda: dict(r.stats)))
    else:
        from registry.memberlist.runner import MachineRunner

        async def main():
            r = MachineRunner(Echo(), cfg)
            port = (await r.start(Address("127.0.0.1", 0))).port
            print("port", port, flush=True)
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, commands, lambda: asyncio.run_coroutine_threadsafe(
                copy(r), loop).result(10))

        async def copy(r):
            return dict(r.stats)

        asyncio.run(main())
    """
)


class Child:
    def __init__(self, kind: str, log: Path) -> None:
        self.log = log
        self._err = open(log, "wb")  # noqa: SIM115 - the child writes to it until stop()
        self.p = subprocess.Popen(
            [sys.executable, "-c", CHILD, kind, str(ROOT)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self._err, text=True, cwd=str(ROOT),
        )
        assert self.p.stdout is not None
        first = self.p.stdout.readline().split()
        assert first[:1] == ["port"], (first, log.read_text())
        self.port = int(first[1])

    def command(self, cmd: str) -> dict[str, int]:
        assert self.p.stdin is not None and self.p.stdout is not None
        self.p.stdin.write(cmd + "\n")
        self.p.stdin.flush()
        line = self.p.stdout.readline()
        assert line.startswith(cmd + " "), (line, self.log.read_text())
        return dict(json.loads(line[len(cmd) + 1 :]))

    def cpu_seconds(self) -> float:
        """utime + stime of the child (fields 14 and 15 of /proc/PID/stat)."""
        fields = Path(f"/proc/{self.p.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.p.kill()
        self.p.wait(10)
        self._err.close()


@pytest.mark.parametrize("kind", ["asyncio", "threaded"])
def test_out_of_descriptors_neither_spins_nor_logs_and_sheds_idle_holders(kind: str, tmp_path: Path) -> None:
    child = Child(kind, tmp_path / "child.log")
    try:
        idle = connect(child.port)
        since = time.monotonic()
        wait_until(lambda: child.command("stats").get("tcp.accept", 0) == 1)
        child.command("exhaust")
        # Only a holder older than the grace may be shed for lack of descriptors.
        wait_until(lambda: time.monotonic() - since > GRACE + 0.1)
        # A newcomer while no descriptor is free: the idle holder is shed to make room.
        s = connect(child.port)
        s.sendall(user_msg(b"hi"))
        assert closed_within(idle, 10)
        s.settimeout(10)
        assert s.recv(16) == b"ok"
        s.close()
        # Nothing left to shed: pending connections wait in the backlog while the node neither
        # spins on accept nor logs per retry.
        waiting = [connect(child.port) for _ in range(3)]
        for w in waiting:
            w.sendall(user_msg(b"hi"))
        wait_until(lambda: child.command("stats").get("tcp.accept.no_fd", 0) >= 3)
        cpu0, t0 = child.cpu_seconds(), time.monotonic()
        wait_until(lambda: time.monotonic() - t0 >= 1.5, 5)
        cpu = (child.cpu_seconds() - cpu0) / (time.monotonic() - t0)
        assert cpu < 0.5, f"accept loop busy: {cpu:.0%} of a core"
        stats = child.command("free")
        for w in waiting:  # served once descriptors are free again
            w.settimeout(15)
            assert w.recv(16) == b"ok"
            w.close()
        assert stats["tcp.in.shed.no_fd"] == 1, stats
        assert len(child.log.read_text()) < 2000, child.log.read_text()[:2000]
    finally:
        child.stop()
