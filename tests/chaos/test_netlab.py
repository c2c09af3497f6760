"""The namespace helper itself: faults bite and go, close() and the stale sweep leave nothing."""

from __future__ import annotations

import subprocess

import pytest

from tests.e2e.helpers import wait_for

from . import netlab
from .netlab import NetLab

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(120)]


_PROBE = """
import socket, sys
s = socket.socket()
s.settimeout(2.0)
try:
    s.connect((sys.argv[1], 9))
except ConnectionRefusedError:
    sys.exit(0)   # the other kernel answered with a reset: reachable
except OSError:
    sys.exit(1)   # dropped: timed out
sys.exit(0)
"""


def _ping(lab: NetLab, src: str, dst: str) -> bool:
    """TCP to a closed port of `dst` from `src`: a reset means reachable (no ping binary needed)."""
    argv = lab.nodes[src].python("-c", _PROBE, lab.nodes[dst].ip)
    return subprocess.run(argv, capture_output=True, timeout=30, check=False).returncode == 0


def test_partition_drops_and_heal_restores_and_close_cleans_up() -> None:
    lab = NetLab()
    try:
        lab.start()
        for name in ("a", "b", "c"):
            lab.add(name)
        assert _ping(lab, "a", "b") and _ping(lab, "a", "c")
        lab.partition(["a"], ["b"])
        assert not _ping(lab, "a", "b") and not _ping(lab, "b", "a")
        assert _ping(lab, "a", "c") and _ping(lab, "c", "b")  # only a<->b is cut
        assert lab.drops("a") > 0 and lab.drops("b") > 0
        lab.heal()
        assert _ping(lab, "a", "b") and lab.drops("a") == 0
        # a process left running in a namespace does not keep it alive past close()
        sleeper = subprocess.Popen(lab.nodes["c"].argv("sleep", "300"))
        wait_for(lambda: str(sleeper.pid) in netlab.run(["ip", "netns", "pids", lab.nodes["c"].ns]).split(), 30,
                 what="the sleeper inside c's namespace")
    finally:
        lab.close()
    sleeper.wait(30)  # killed by close() (reaped there, so its status is not ours to read), not 300 s later
    assert lab.leftovers() == []


def test_sweep_removes_a_dead_runs_namespaces_and_links() -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    ns = f"{netlab.PREFIX}-{dead.pid}-0-hub"
    link = f"rc{dead.pid}-0"
    try:
        netlab.run(["ip", "netns", "add", ns])
        netlab.run(["ip", "link", "add", link, "type", "veth", "peer", "name", "up0", "netns", ns])
        # a link whose peer namespace is gone too: both ends in the root namespace
        netlab.run(["ip", "link", "add", f"rc{dead.pid}-1", "type", "veth", "peer", "name", f"rx{dead.pid}-1"])
        swept = netlab.sweep_stale()
        assert ns in swept and f"rc{dead.pid}-1" in swept
        assert ns not in netlab.namespaces()
        for name in (link, f"rc{dead.pid}-1"):
            assert netlab.run(["ip", "link", "show", name], check=False) == ""
    finally:
        netlab.run(["ip", "netns", "delete", ns], check=False)
        netlab.run(["ip", "link", "delete", link], check=False)
        netlab.run(["ip", "link", "delete", f"rc{dead.pid}-1"], check=False)
