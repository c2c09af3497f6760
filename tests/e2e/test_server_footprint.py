"""What a `registry` server process loads: no grpcio (its default gRPC front is the native one),
no OpenSSL through Python (asyncio's ssl, hashlib), and `cryptography` only when -encrypt is
given; it still serves gRPC, health and reflection and exits 0 on SIGTERM.  (Memory: grpcio's
C core is ~10 MiB of RSS, OpenSSL's libraries ~5 MiB, see benchmarks/bench_memory.py.)"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.logcheck import bugs_in

from .helpers import Registry, env, procs

# The server runs in a child whose helper thread answers "modules" on stdin with the heavy
# modules loaded so far (checked after real RPCs, so lazily loaded ones count too).
CHILD = """
import sys, threading

def answer():
    for line in sys.stdin:
        if line.strip() == "modules":
            heavy = ("ssl", "_ssl", "_hashlib", "hashlib", "hmac", "secrets", "cryptography", "grpc")
            loaded = sorted(m for m in sys.modules if m.split(".")[0] in heavy)
            print("MODULES " + " ".join(loaded), flush=True)
        elif line.strip() == "threads":
            others = sorted(t.name for t in threading.enumerate() if t is not threading.current_thread())
            print("THREADS " + " ".join(others), flush=True)

threading.Thread(target=answer, daemon=True).start()
from registry.cli import main
sys.exit(main(sys.argv[1:]))
"""

HEAVY_SSL = {"ssl", "_ssl", "_hashlib", "hashlib", "hmac"}


def _start(*extra: str) -> tuple[subprocess.Popen[str], dict[str, str], list[str]]:
    args = ["-id", "footprint", "-bind", "127.0.0.1:0", "-addr", "127.0.0.1:0", "-profile", "fast",
            "-log-format", "json", "-log-level", "info", *extra]
    p = subprocess.Popen([sys.executable, "-c", CHILD, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env())
    assert p.stderr is not None
    lines: list[str] = []
    started: list[dict[str, str]] = []
    ready = threading.Event()

    def read_log() -> None:
        assert p.stderr is not None
        for line in p.stderr:
            lines.append(line)
            if '"registry started"' in line:
                row = json.loads(line)
                started.append({"grpc": str(row["grpc"]), "gossip": str(row["gossip"])})
                ready.set()
        ready.set()

    threading.Thread(target=read_log, daemon=True).start()
    if not ready.wait(60) or not started:
        p.kill()
        raise AssertionError("server did not start: " + "".join(lines))
    return p, started[0], lines


def _ask(p: subprocess.Popen[str], what: str) -> list[str]:
    """The child's answer to "modules" (heavy modules loaded) or "threads" (its threads but the helper)."""
    assert p.stdin is not None and p.stdout is not None
    p.stdin.write(what + "\n")
    p.stdin.flush()
    line = p.stdout.readline()
    assert line.startswith(what.upper()), line
    return line.split()[1:]


def _use(addr: str, peer: str) -> None:
    """Health, reflection and the registry API, as an operator's tools would; gossip with a peer."""
    from registry.client import RpcClient

    with grpc.insecure_channel(addr) as ch:
        h = health_pb2_grpc.HealthStub(ch)
        resp = h.Check(health_pb2.HealthCheckRequest(service="registry.v1.Registry"), timeout=10)
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
        r = reflection_pb2_grpc.ServerReflectionStub(ch)
        answers = r.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10)
        names = {s.name for a in answers for s in a.list_services_response.service}
        assert {"registry.v1.Registry", "R", "grpc.health.v1.Health"} <= names
    deadline = time.monotonic() + 30
    with RpcClient(addr, timeout=10.0) as c:
        while not {"footprint", peer} <= {s.id for s in c.members("registry-group")}:
            assert time.monotonic() < deadline, "the server never listed itself and its peer"
            time.sleep(0.05)
        assert c.match("registry-group", "some-key").id in ("footprint", peer)


def _stop(p: subprocess.Popen[str]) -> int:
    p.terminate()
    try:
        return p.wait(30)
    finally:
        if p.poll() is None:
            p.kill()


@pytest.mark.parametrize("encrypt", [False, True], ids=["plain", "encrypt"])
def test_server_loads_no_openssl_and_cryptography_only_with_encrypt(encrypt: bool, tmp_path: Path) -> None:
    extra = ["-encrypt", base64.b64encode(bytes(range(16))).decode()] if encrypt else []
    p, addr, log = _start(*extra)
    try:
        with procs() as ps:
            Registry(ps, tmp_path, "footprint-peer", [addr["gossip"]], *extra, profile="lan")
            _use(addr["grpc"], "footprint-peer")  # gossip both ways: AES-GCM used when encrypted
            loaded = set(_ask(p, "modules"))
            threads = _ask(p, "threads")
    finally:
        rc = _stop(p)
    assert rc == 0, "".join(log)
    assert not loaded & HEAVY_SSL, loaded  # asyncio got no ssl; `secrets` (hmac, hashlib) is keygen-only
    # native front: no grpcio C core (reflection's *_pb2 messages are plain protobuf, loaded on first use)
    assert not {m for m in loaded if m.split(".")[0] == "grpc"}, loaded
    assert ("cryptography" in loaded) == encrypt, loaded
    # one thread: binding numeric addresses must not start asyncio's resolver executor (+1 thread, +0.9 MiB)
    assert threads == ["MainThread"], threads
    assert any('"registry stopped"' in line for line in log), "".join(log)
    assert not bugs_in("".join(log)), "".join(log)


def test_ssl_stays_importable_after_the_server_path_loaded_asyncio() -> None:
    """Only asyncio's own view of ssl is affected: others can still import it afterwards."""
    code = """
import sys
from registry.cli import _import_asyncio_without_ssl
_import_asyncio_without_ssl()
import asyncio, asyncio.base_events
assert "ssl" not in sys.modules and asyncio.base_events.ssl is None
import ssl
print("OK", ssl.OPENSSL_VERSION.split()[0])
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env(), timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("OK"), out.stdout
