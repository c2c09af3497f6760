"""Graceful stop at the LAN profile, real processes: the service leaves Match on the registry it
joined and on another one, and both registries took it out on its leave intent (`member-leaving`
in their logs), not on memberlist's leave a gossip round later.  The deadline (2 s) is generous;
bench_discovery.py prints the figure."""

from __future__ import annotations

import functools
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from registry.client import NotFound, RpcClient
from registry.register import Register

from .helpers import Registry, procs, wait_for

GROUP = "leave-latency"


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Registry, Registry]]:
    tmp = tmp_path_factory.mktemp("leave")
    with procs() as ps:
        r1 = Registry(ps, tmp, "leave-r1", profile="lan").wait_ready()
        r2 = Registry(ps, tmp, "leave-r2", [r1.gossip], profile="lan").wait_ready()
        both = {"leave-r1", "leave-r2"}
        wait_for(lambda: r1.ids("registry-group") == r2.ids("registry-group") == both, 30, what="registries pooled")
        yield r1, r2


def _leaving_logged(r: Registry, name: str) -> bool:
    for line in r.proc.output().splitlines():
        if '"membership"' in line and "member-leaving" in line:
            row = json.loads(line)
            if name in row.get("members", []):
                return True
    return False


def test_stopped_service_leaves_match_on_its_leave_intent(pair: tuple[Registry, Registry]) -> None:
    r1, r2 = pair
    reg = Register("svc-leave", "127.0.0.1:0", "", r1.gossip, GROUP, "127.0.0.1:8123", profile="lan")
    reg.start()
    stopper = threading.Thread(target=reg.stop)
    try:
        with r1.client() as c1, r2.client() as c2:

            def matched(c: RpcClient, present: bool) -> bool:
                try:
                    return (c.match(GROUP, "user-1").id == "svc-leave") is present
                except NotFound:  # the group is empty
                    return not present

            wait_for(lambda: matched(c1, True) and matched(c2, True), 30, what="svc-leave matched on both")
            t0 = time.monotonic()
            stopper.start()
            wait_for(lambda: matched(c1, False) and matched(c2, False), 2.0, interval=0.005, what="svc-leave gone")
            took = time.monotonic() - t0
        print(f"graceful stop -> gone from Match on both registries: {took * 1000:.0f} ms")
        for r in (r1, r2):
            wait_for(functools.partial(_leaving_logged, r, "svc-leave"), 10, what=f"{r.id} logging member-leaving")
    finally:
        if stopper.ident is None:
            reg.stop()
        stopper.join(30)


async def test_an_embedded_server_leaves_the_collector_alone() -> None:
    """gc.freeze() is process-wide: a RegistryServer embedded in a program must not freeze that
    program's heap (it did by default before issue 13: ServerConfig.freeze_gc=True)."""
    import gc

    from registry.server import RegistryServer, ServerConfig

    gc.unfreeze()
    server = RegistryServer(ServerConfig(id="gc-r", bind=("127.0.0.1", 0), addr=("127.0.0.1", 0)))
    try:
        await server.start()
        frozen = gc.get_freeze_count()
    finally:
        await server.close()
        gc.unfreeze()  # this is a test process, not a server: let the collector see it all again
    assert frozen == 0


#: Runs the `registry` command and, as it exits, prints how many objects gc.freeze() hid.
_COUNT_FROZEN = """
import atexit, gc, sys
atexit.register(lambda: print("frozen-objects", gc.get_freeze_count(), flush=True))
from registry.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_the_registry_command_freezes_its_startup_heap(tmp_path: Path) -> None:
    """The command, which owns its process, still freezes what start-up allocated (an ~80 ms
    first full collection on the event loop otherwise)."""
    import signal
    import sys

    from .helpers import Proc

    argv = [sys.executable, "-c", _COUNT_FROZEN, "-id", "gc-cli", "-bind", "127.0.0.1:0", "-addr", "127.0.0.1:0",
            "-profile", "fast", "-log-format", "json"]
    with procs() as ps:
        p = Proc(argv, tmp_path / "gc-cli.log")
        ps.append(p)
        wait_for(lambda: '"registry started"' in p.output() or not p.alive(), 60, what="registry started")
        assert p.alive(), p.output()
        p.signal(signal.SIGTERM)
        assert p.wait(30) == 0, p.output()
        out = p.output()
    counts = [int(line.split()[1]) for line in out.splitlines() if line.startswith("frozen-objects")]
    assert len(counts) == 1 and counts[0] > 0, out
