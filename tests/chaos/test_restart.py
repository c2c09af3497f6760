"""A registry restarted on the same ports right after it stops, with a client connected.

The stopping registry closes its side of the client's connection first, so its gRPC port is
left in TIME_WAIT (for about 60 s) on its address.  The restarted process must still start at
once (its listeners bind with SO_REUSEADDR, and so must any pre-check), rejoin the pool, and the
client that was connected before must be answered by it again.
"""

from __future__ import annotations

import signal
import time

import pytest

from .conftest import PoolFactory
from .pool import GROUP, KEYS, REGISTRY_GROUP, until

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(180)]

RESTART_DEADLINE = 30.0  # a start takes ~1-2 s here; TIME_WAIT would hold the port ~60 s


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

    assert r1.proc is not None
    r1.proc.signal(signal.SIGTERM)
    assert r1.proc.wait(30) == 0, r1.output()[-2000:]
    waiting = _time_wait_on(r1.node.argv(), 9800)
    t0 = time.monotonic()
    r1.start()
    until(r1.started, RESTART_DEADLINE, "r1 restarted on the same ports")
    started_after = time.monotonic() - t0
    pool.wait_converged(60, "the pool with the restarted r1")
    until(lambda: c.match(GROUP, KEYS[0]).id in pool.service_ids, 30,
          "the client connected before the restart answered by the new r1")
    assert r0.ids(REGISTRY_GROUP) == {"r0", "r1"}
    print(f"\nrestarted with {waiting} connection(s) in TIME_WAIT on :9800; started {started_after:.1f}s after exec")
    assert waiting > 0, "nothing was in TIME_WAIT: the test did not reproduce the condition"
