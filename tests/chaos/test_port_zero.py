"""`-bind :0 -addr :0` (ports picked by the system) must start every time.

The free-port check used to pick the gRPC port before gossip bound its own port 0: the probe's port
was free again when gossip's bind ran, which could take it, and the gRPC bind then failed "Address
already in use" (seen under load in CI).  A network namespace whose ephemeral range holds two ports
makes that collision near certain (4 of 4 starts failed before the fix): the namespace has only this
registry in it, so each pick has two choices."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time

import pytest

from tests.e2e.helpers import ROOT, env, terminate

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(120)]

SETUP = 'ip link set lo up && echo "40000 40001" > /proc/sys/net/ipv4/ip_local_port_range && exec "$@"'


def _start_once() -> str:
    """One start in a fresh namespace: the line it ended with ("registry started" on success)."""
    argv = [sys.executable, str(ROOT / "cmd" / "registry" / "main.py"), "-id", "p", "-bind", "127.0.0.1:0",
            "-addr", "127.0.0.1:0", "-profile", "fast", "-log-format", "json"]
    p = subprocess.Popen(["unshare", "-n", "sh", "-c", SETUP, "sh", *argv], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, env=env(), cwd=str(ROOT))
    assert p.stdout is not None
    last = ""
    deadline = time.monotonic() + 60
    try:
        for line in p.stdout:  # ends when the process exits
            last = line.strip()
            if '"registry started"' in line or time.monotonic() > deadline:
                break
    finally:
        terminate(p)
    return last


def test_ports_picked_by_the_system_never_collide() -> None:
    if shutil.which("unshare") is None:
        pytest.fail("needs unshare (util-linux)")
    for _ in range(4):
        last = _start_once()
        assert '"registry started"' in last, last
