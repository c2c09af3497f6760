"""A registry restarted on the same ports right after it stops, with a client connected.

A connection the stopping registry closes first leaves its gRPC port in TIME_WAIT (for about
60 s) on its address.  With grpcio's client that is a race (on GOAWAY the client may close
first, and then the TIME_WAIT is the client's), so besides the gRPC client the test holds one
plain TCP connection that closes only once the server has: the server's side of it is then
in TIME_WAIT for certain, and the test checks that it is.  The restarted process must still start at
once (its listeners bind with SO_REUSEADDR, and so must any pre-check), rejoin the pool, and the
client that was connected before must be answered by it again.
"""

from __future__ import annotations

import signal
import socket
import time

import pytest

from tests.e2e.helpers import wait_for

from .conftest import PoolFactory
from .pool import GROUP, KEYS, REGISTRY_GROUP, RPC_PORT, until

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(180)]

RESTART_DEADLINE = 30.0  # a start takes ~1-2 s here; TIME_WAIT would hold the port ~60 s


def _close_after_server(sock: socket.socket, timeout: float) -> None:
    """Read until the server closes (its FIN comes first), then close our side."""
    sock.settimeout(timeout)
    while sock.recv(4096):  # the server may have sent its HTTP/2 SETTINGS first
        pass
    sock.close()


def _time_wait_on(node_argv: list[str], port: int) -> int:
    """Sockets in TIME_WAIT on local port `port` inside a namespace (ss from iproute2)."""
    import subprocess

    out = subprocess.run([*node_argv, "ss", "-Htan", "state", "time-wait", f"( sport = :{port} )"],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    return len([line for line in out.splitlines() if line.strip()])


def test_restart_on_same_ports_with_a_client_connected(make_pool: PoolFactory) -> None:
    pool = make_pool(registries=2, services=1, profile="fast")
    pool.wait_converged(90, "the pool before the restart")
    r0, r1 = pool.registries
    c = r1.client()
    for key in KEYS[:20]:  # the client's connection to r1 is up and in use
        c.match(GROUP, key)
    raw = socket.create_connection((r1.node.ip, RPC_PORT), timeout=30)

    assert r1.proc is not None
    r1.proc.signal(signal.SIGTERM)
    assert r1.proc.wait(30) == 0, r1.output()[-2000:]
    _close_after_server(raw, 30)
    waiting = wait_for(lambda: _time_wait_on(r1.node.argv(), RPC_PORT), 30, interval=0.02,
                       what="r1's side of the plain connection in TIME_WAIT")
    t0 = time.monotonic()
    r1.start()
    until(r1.started, RESTART_DEADLINE, "r1 restarted on the same ports")
    started_after = time.monotonic() - t0
    pool.wait_converged(60, "the pool with the restarted r1")
    until(lambda: c.match(GROUP, KEYS[0]).id in pool.service_ids, 30,
          "the client connected before the restart answered by the new r1")
    assert r0.ids(REGISTRY_GROUP) == {"r0", "r1"}
    print(f"\nrestarted with {waiting} connection(s) in TIME_WAIT on :9800; started {started_after:.1f}s after exec")
