"""Hostile inbound gossip TCP streams against real processes (issue 11 item 2).

* Join lockout: more idle connections than the node has inbound slots, from several source
  IPs (one above the per-source cap), kept open for the whole test (any the node closes is
  reopened).  A service must still join through a registry process, and through a Register
  (the threaded driver), with and without `-encrypt`.  Before the fix every join failed at
  once: the node refused every newcomer while 128 idle connections held its slots.
* Memory: 20 connections announcing 19 MB messages and streaming the body at full speed.  The
  registry's RSS must stay within the inbound budget plus slack and the connections must be
  closed; before the fix it buffered everything (~400 MB).
"""

from __future__ import annotations

import base64
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import msgpack
import pytest

from registry.register import Register, RegisterError

from .helpers import Registry, procs, wait_for

if TYPE_CHECKING:
    from typing import Self

#: Source addresses of the attacker; 127.0.0.2 holds more than the per-source cap (16).
FLOOD = {"127.0.0.2": 24, **{f"127.0.0.{i}": 15 for i in range(3, 11)}}  # 144 > 128 slots


class IdleFlood:
    """Holds idle TCP connections to `port` from several source IPs, reopening any that the
    node closes (at most once per source and poll round), until stopped."""

    def __init__(self, port: int, per_source: dict[str, int]) -> None:
        self.port = port
        self.per_source = per_source
        self.open: dict[socket.socket, str] = {}
        self.connects = 0
        self.closed_by_peer = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="idle-flood", daemon=True)

    @property
    def target(self) -> int:
        return sum(self.per_source.values())

    def __enter__(self) -> Self:
        self._thread.start()
        wait_for(lambda: self.connects >= self.target, 60, what="the flood holding its connections")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        for s in list(self.open):
            s.close()
        self.open.clear()

    def _connect(self, source: str) -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind((source, 0))
            s.settimeout(2.0)
            s.connect(("127.0.0.1", self.port))
        except OSError:
            s.close()
            return
        s.setblocking(False)
        self.open[s] = source
        self.connects += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            held: dict[str, int] = {}
            for src in self.open.values():
                held[src] = held.get(src, 0) + 1
            for src, want in self.per_source.items():
                for _ in range(want - held.get(src, 0)):
                    self._connect(src)
            socks = list(self.open)
            readable = select.select(socks, [], [], 0.02)[0] if socks else []
            for s in readable:  # only EOF or a reset can arrive: we never send
                try:
                    data = s.recv(4096)
                except OSError:
                    data = b""
                if not data:
                    self.closed_by_peer += 1
                    del self.open[s]
                    s.close()


@pytest.fixture(params=["plain", "encrypt"])
def key(request: pytest.FixtureRequest) -> str | None:
    return base64.b64encode(os.urandom(16)).decode() if request.param == "encrypt" else None


@pytest.fixture
def registry(tmp_path: Path, key: str | None) -> Iterator[Registry]:
    extra = ["-encrypt", key] if key else []
    with procs() as ps:
        # The LAN profile: memberlist's 10 s TCP timeout, as measured in the attack.
        yield Registry(ps, tmp_path, "reg-hostile", (), *extra, profile="lan").wait_ready()


def _join(name: str, seed: str, key: str | None) -> tuple[Register, float]:
    reg = Register(name, "127.0.0.1:0", "", seed, "hostile", "127.0.0.1:9", profile="lan", encrypt=key)
    t0 = time.monotonic()
    reg.start()  # raises RegisterError if the join fails
    return reg, time.monotonic() - t0


@pytest.mark.slow
def test_idle_flood_does_not_lock_joins_out_of_a_registry(registry: Registry, key: str | None) -> None:
    port = registry.gossip_port
    with IdleFlood(port, FLOOD) as flood:
        try:
            reg, took = _join("svc-through-registry", registry.gossip, key)
        except RegisterError as exc:  # say what the node did with the joiner's stream
            lines = [ln for ln in registry.proc.output().splitlines() if "127.0.0.1:" in ln or "raised" in ln]
            raise AssertionError(f"{exc}; registry log: {lines[-30:]}") from None
        print(f"joined through a flooded registry in {took:.2f}s; flood: {flood.connects} connects, "
              f"{flood.closed_by_peer} closed by the node, {len(flood.open)} open")
        try:
            assert took < 15, took
            wait_for(lambda: "svc-through-registry" in registry.ids("hostile"), 30, what="the service listed")
            assert len(flood.open) > 100  # the flood was still holding the node's slots
        finally:
            reg.stop()
    assert registry.proc.alive()


@pytest.mark.slow
def test_idle_flood_does_not_lock_joins_out_of_a_register(registry: Registry, key: str | None) -> None:
    target, _ = _join("svc-target", registry.gossip, key)
    try:
        port = target.address.rsplit(":", 1)[1]
        with IdleFlood(int(port), FLOOD) as flood:
            reg, took = _join("svc-through-register", target.address, key)
            print(f"joined through a flooded Register in {took:.2f}s; flood: {flood.connects} connects, "
                  f"{flood.closed_by_peer} closed by the node, {len(flood.open)} open")
            try:
                assert took < 15, took
                assert len(flood.open) > 100
                assert target.agent is not None
                stats = target.agent.stats  # the threaded runner's counters
                assert stats["tcp.in.shed.global"] + stats["tcp.in.shed.source"] > 0, stats
                # Its membership reached the registry through the flooded Register.
                wait_for(lambda: "svc-through-register" in registry.ids("hostile"), 30, what="the service listed")
            finally:
                reg.stop()
    finally:
        target.stop()


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


ANNOUNCED = 19 * 1000 * 1000


def _big_header(kind: str) -> bytes:
    if kind == "encrypted":  # an encryption frame: nothing can be checked before the whole frame is in
        return bytes([10]) + struct.pack(">I", ANNOUNCED)
    if kind == "push_pull":  # 19 MB of user state: a legal size (memberlist allows 20 MiB)
        return bytes([6]) + bytes(msgpack.packb({"Nodes": 0, "UserStateLen": ANNOUNCED, "Join": False}))
    return bytes([8]) + bytes(msgpack.packb({"UserMsgLen": ANNOUNCED}))  # refused at its header (1 MiB)


#: RSS growth allowed (MB): the 24 MiB inbound budget (max_inbound_buffered) plus, when the budget
#: lets one 19 MB message complete (shedding keeps the smallest holders), that message's copies:
#: the framer's, then the AES-GCM output (encrypted) or the codec's (a legal 19 MB push/pull costs
#: ~3 copies while it is decoded and refused).  A user message is refused at its header (1 MiB).
#: Before the fix: +396 to +414 MB for each kind.
BOUND_MB = {"user": 10, "encrypted": 65, "push_pull": 90}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["user", "encrypted", "push_pull"])
def test_announced_big_messages_stay_within_the_memory_budget(tmp_path: Path, kind: str) -> None:
    key = base64.b64encode(os.urandom(16)).decode() if kind == "encrypted" else None
    with procs() as ps:
        registry = Registry(ps, tmp_path, "reg-bombs", (), *(["-encrypt", key] if key else []), profile="lan")
        registry.wait_ready()
        _bombard(registry, kind, key)


def _bombard(registry: Registry, kind: str, key: str | None) -> None:
    pid = registry.proc.p.pid
    base = _rss_kb(pid)
    peak = [base]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            try:
                peak[0] = max(peak[0], _rss_kb(pid))
            except (OSError, AssertionError):
                return
            stop.wait(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    socks: list[socket.socket] = []
    sent = [0] * 20
    closed = [False] * 20
    for i in range(20):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind((f"127.0.0.{2 + i % 5}", 0))
        s.connect(("127.0.0.1", registry.gossip_port))
        s.sendall(_big_header(kind))
        s.setblocking(False)
        socks.append(s)
    chunk = os.urandom(256 * 1024)
    deadline = time.monotonic() + 120
    try:
        while not all(closed[i] or sent[i] >= ANNOUNCED for i in range(20)):
            assert time.monotonic() < deadline, (sent, closed)
            live = [s for i, s in enumerate(socks) if not closed[i] and sent[i] < ANNOUNCED]
            writable = select.select([], live, [], 0.5)[1]
            for s in writable:
                i = socks.index(s)
                try:
                    sent[i] += s.send(chunk[: ANNOUNCED - sent[i]])
                except OSError:  # reset: the node shed this connection
                    closed[i] = True
        # Every connection is closed by the node: shed, or (a complete plain message) answered.
        def all_closed() -> bool:
            for i, s in enumerate(socks):
                if closed[i]:
                    continue
                try:
                    if s.recv(65536) == b"":
                        closed[i] = True
                except BlockingIOError:
                    pass
                except OSError:
                    closed[i] = True
            return all(closed)

        wait_for(all_closed, 30, what="the node closing the connections")
    finally:
        stop.set()
        sampler.join(5)
        for s in socks:
            s.close()
    grown_mb = (peak[0] - base) / 1024
    print(f"{kind}: RSS {base / 1024:.1f} MB -> peak {peak[0] / 1024:.1f} MB (+{grown_mb:.1f} MB); "
          f"sent {sum(sent) / 1e6:.0f} MB")
    assert grown_mb < BOUND_MB[kind], grown_mb
    assert registry.proc.alive()
    reg, _ = _join("svc-after-bombs", registry.gossip, key)  # still serving joins
    reg.stop()
