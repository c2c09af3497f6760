#!/usr/bin/env python3
"""Re-make the packet captures in tests/data/captures/ from real Serf agents on loopback.

Why: the wire tests (tests/memberlist/test_captures.py, test_fuzz.py) check our decoder and
encoder against bytes HashiCorp's own code sent, so the bytes must come from the real agent,
and they must live in the repository so that every clone runs those tests.

How: a sniffer reads every frame on the loopback interface through an AF_PACKET socket (what
tcpdump does, without needing tcpdump; needs root or CAP_NET_RAW), keeps the IPv4 UDP/TCP
frames to or from the gossip ports of the scenario, and writes them as a classic pcap file
(link type Ethernet, as Linux reports ``lo``) that tests/memberlist/pcap.py and Wireshark read.
Each scenario starts `serf agent` processes (and for one of them our `registry` command) on
fixed loopback ports, drives them with the `serf` CLI over their RPC ports, and waits on
conditions (with deadlines), never fixed sleeps, so the packets a capture holds depend on
the scenario, though their exact number varies a little from run to run (timers).

Usage:  sudo python3 tests/data/capture.py [scenario ...]    (default: all four)
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = Path(__file__).resolve().parent / "captures"
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4  # the loopback device shows each frame twice: keep the received copy only
HOST = "127.0.0.1"


class Sniffer:
    """Records loopback frames whose UDP/TCP source or destination port is one of `ports`."""

    def __init__(self, ports: set[int]) -> None:
        self.ports = ports
        self.frames: list[tuple[float, bytes]] = []
        self._stop = threading.Event()
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self._sock.bind(("lo", 0))
        self._sock.settimeout(0.1)
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _wanted(self, frame: bytes) -> bool:
        if len(frame) < 14 + 20 or frame[12:14] != b"\x08\x00":
            return False
        ip = frame[14:]
        if ip[9] not in (6, 17):
            return False
        ihl = (ip[0] & 0x0F) * 4
        sport, dport = struct.unpack_from(">HH", ip, ihl)
        return sport in self.ports or dport in self.ports

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                frame, addr = self._sock.recvfrom(65536)
            except TimeoutError:
                continue
            if addr[2] != PACKET_OUTGOING and self._wanted(frame):
                self.frames.append((time.time(), frame))

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        time.sleep(0.3)  # let the last frames already on the wire be read: not a wait for a condition
        self._stop.set()
        self._thread.join()
        self._sock.close()

    def write(self, path: Path) -> None:
        out = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for ts, frame in self.frames:
            sec = int(ts)
            out += struct.pack("<IIII", sec, int((ts - sec) * 1e6), len(frame), len(frame))
            out += frame
        path.write_bytes(bytes(out))


def wait_for(pred: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise SystemExit(f"capture: timed out waiting for {what}")
        time.sleep(0.05)


class Agent:
    """One `serf agent` on loopback: gossip on `port`, RPC on `port + 1000`."""

    def __init__(self, name: str, port: int, *extra: str) -> None:
        self.name, self.port, self.rpc = name, port, f"{HOST}:{port + 1000}"
        self.proc = subprocess.Popen(
            ["serf", "agent", f"-node={name}", f"-bind={HOST}:{port}", f"-rpc-addr={self.rpc}",
             "-log-level=warn", *extra],
            stdout=subprocess.DEVNULL,
        )
        wait_for(lambda: _listening(port + 1000), f"{name}'s RPC port")

    def cli(self, *args: str) -> str:
        done = subprocess.run(["serf", args[0], f"-rpc-addr={self.rpc}", *args[1:]], check=False,
                              capture_output=True, text=True, timeout=30)
        if done.returncode:
            raise SystemExit(f"capture: serf {' '.join(args)} failed: {done.stdout}{done.stderr}")
        return done.stdout

    def members(self) -> dict[str, str]:
        doc = json.loads(self.cli("members", "-format=json"))
        return {m["name"]: m["status"] for m in doc["members"]}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # an agent's interrupt is a graceful leave
            self.proc.wait(30)


def _listening(port: int) -> bool:
    try:
        socket.create_connection((HOST, port), 0.2).close()
        return True
    except OSError:
        return False


@contextmanager
def sniffing(ports: set[int]) -> Iterator[Sniffer]:
    sniff = Sniffer(ports)
    sniff.start()
    try:
        yield sniff
    finally:
        sniff.stop()


@contextmanager
def agents() -> Iterator[list[Agent]]:
    started: list[Agent] = []
    try:
        yield started
    finally:
        for a in started:
            if a.proc.poll() is None:
                a.proc.kill()
                a.proc.wait()


#: The gossip key of serf_encrypted (AES-128: bytes 0..15), public on purpose: a test vector.
ENCRYPT_KEY = "AAECAwQFBgcICQoLDA0ODw=="


def two_agents(compress: bool, *extra: str) -> Sniffer:
    """Agent b joins agent a, b fires a user event and a query (a answers), then b leaves."""
    flags = ([] if compress else ["-disable-compression"]) + list(extra)
    with sniffing({18401, 18402}) as sniff, agents() as live:
        a = Agent("cap-a", 18401, "-tag", "group=g1", "-tag", f"addr={HOST}:8000", *flags)
        live.append(a)
        b = Agent("cap-b", 18402, "-tag", "group=g1", "-tag", f"addr={HOST}:8001", *flags)
        live.append(b)
        b.cli("join", f"{HOST}:18401")
        wait_for(lambda: a.members().get("cap-b") == "alive", "a to list b alive")
        b.cli("event", "deploy", "v1")
        b.cli("query", "-timeout=1s", "ping", "p")
        wait_for(lambda: len(sniff.frames) > 40, "the event and query gossiped (40 frames)")
        b.stop()
        wait_for(lambda: a.members().get("cap-b") == "left", "a to list b left")
        a.stop()
    return sniff


def registry_service() -> Sniffer:
    """Our registry r1 with two services (serf agents) joining it; svc-b is SIGKILLed and svc-a,
    a real agent, suspects it and declares it dead; then svc-a leaves and r1 stops."""
    with sniffing({18501, 18502, 18503}) as sniff, agents() as live:
        reg = subprocess.Popen(
            [sys.executable, str(ROOT / "cmd" / "registry" / "main.py"), "-id", "r1",
             "-bind", f"{HOST}:18501", "-addr", f"{HOST}:18600", "-log-level", "warning"],
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        try:
            sa = Agent("svc-a", 18502, "-tag", "group=g1", "-tag", f"addr={HOST}:8001")
            live.append(sa)
            sb = Agent("svc-b", 18503, "-tag", "group=g1", "-tag", f"addr={HOST}:8002")
            live.append(sb)
            wait_for(lambda: _listening(18501), "r1's gossip port")
            sa.cli("join", f"{HOST}:18501")
            sb.cli("join", f"{HOST}:18501")
            wait_for(lambda: sa.members().get("svc-b") == "alive", "svc-a to list svc-b")
            sb.proc.kill()
            sb.proc.wait()
            wait_for(lambda: sa.members().get("svc-b") == "failed", "svc-a to find svc-b failed", 60)
            sa.stop()
        finally:
            reg.send_signal(signal.SIGTERM)
            try:
                reg.wait(30)
            except subprocess.TimeoutExpired:
                reg.kill()
                reg.wait()
    return sniff


SCENARIOS: dict[str, Callable[[], Sniffer]] = {
    "serf_plain": lambda: two_agents(compress=False),
    "serf_default": lambda: two_agents(compress=True),
    "registry_service": registry_service,
    "serf_encrypted": lambda: two_agents(True, f"-encrypt={ENCRYPT_KEY}"),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("scenario", nargs="*", help=f"any of {', '.join(SCENARIOS)} (default: all)")
    names = ap.parse_args().scenario or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        ap.error(f"unknown scenario {unknown[0]!r}: choose from {', '.join(SCENARIOS)}")
    OUT.mkdir(exist_ok=True)
    for name in names:
        sniff = SCENARIOS[name]()
        path = OUT / f"{name}.pcap"
        sniff.write(path)
        print(f"{path.relative_to(ROOT)}: {len(sniff.frames)} frames, {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
