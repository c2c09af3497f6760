"""The log checks of tests/logcheck.py can fail a test: a handler bug in a real registry subprocess
fails `procs()`, and the line they look for is the one HandlerErrors really logs.

Before issue 13 a handler exception in a registry started by a test was only the counter
`drop.handler_error` in that process: every end-to-end test passed on it as long as the answers
were right (the other registries and the pool's retries made up for the failed merge)."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections import Counter
from pathlib import Path

import pytest

from registry.memberlist.driver import DriverBase
from registry.memberlist.handler_errors import HandlerErrors
from tests.logcheck import HandlerErrorRecords, bugs_in

from .helpers import Proc, Registry, procs, wait_for

# A registry whose Serf delegate fails on every push/pull state it merges: a handler bug, in a
# real `registry` process (the CLI's own main, JSON logs), injected before the server starts.
BUGGY_REGISTRY = """
import sys
from registry.serf.core import Serf

class InjectedBug(RuntimeError):
    pass

def merge_remote_state(self, buf, join):
    raise InjectedBug("injected: merging the remote state fails")

Serf.merge_remote_state = merge_remote_state
from registry.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_handler_bug_in_a_registry_subprocess_fails_the_test(tmp_path: Path) -> None:
    with pytest.raises(AssertionError) as info, procs() as ps:
        buggy = Proc([sys.executable, "-c", BUGGY_REGISTRY, "-id", "reg-buggy", "-bind", "127.0.0.1:0",
                      "-addr", "127.0.0.1:0", "-profile", "fast", "-log-format", "json"], tmp_path / "buggy.log")
        ps.append(buggy)
        seed = wait_for(lambda: _gossip_addr(buggy), 60, what="the buggy registry's gossip address")
        Registry(ps, tmp_path, "reg-joins", (seed,))  # its join makes the buggy one merge a state
        wait_for(buggy.bugs, 60, what="the handler error in the buggy registry's log")
        # the test body passes: only procs() can fail it now
    text = str(info.value)
    assert "buggy.log" in text and "InjectedBug" in text and "drop.handler_error" in text, text
    assert "reg-joins" not in text, text  # the healthy registry is not blamed


def _gossip_addr(proc: Proc) -> str | None:
    for line in proc.output().splitlines():
        if '"registry started"' in line:
            return str(json.loads(line)["gossip"])
    return None


def test_the_checks_match_what_handler_errors_logs() -> None:
    """The real HandlerErrors' first line of a kind, through a plain formatter and through the log
    record itself: both checks find it; a second failure of the same kind is not logged again."""
    log = logging.getLogger("tests.logcheck.probe")
    log.propagate = False
    out = io.StringIO()
    stream = logging.StreamHandler(out)
    records = HandlerErrorRecords()
    log.addHandler(stream)
    log.addHandler(records)
    try:
        errors = HandlerErrors(Counter(), log, strict=False)
        for _ in range(2):
            try:
                raise KeyError("boom")
            except KeyError as exc:
                errors.failed(exc, "ping", "127.0.0.1:1")
    finally:
        log.removeHandler(stream)
        log.removeHandler(records)
    assert errors.count == 2
    found = bugs_in(out.getvalue())
    assert len(found) == 1 and "KeyError" in found[0], out.getvalue()
    assert [exc for exc, _ in records.found] == ["KeyError"]
    assert bugs_in("member-failed r1\nhandler for ping is fine\n") == []


@pytest.mark.handler_errors("KeyError")  # and so the autouse fixture must see it through the root logger
def test_the_checks_match_what_a_driver_logs_for_a_raising_core() -> None:
    """A protocol core that raises into its driver (never outside strict mode: a bug) is logged by
    the driver's guard as a warning and counted; the process check finds that line too."""
    out = io.StringIO()
    stream = logging.StreamHandler(out)
    log = logging.getLogger("registry.memberlist.driver")
    log.addHandler(stream)

    def core_call() -> None:
        raise KeyError("boom")

    driver = DriverBase(None, None)
    try:
        assert driver._guard("receive_packet", core_call) is None
    finally:
        log.removeHandler(stream)
    assert driver.stats["runner.exception.receive_packet"] == 1
    found = bugs_in(out.getvalue())
    assert len(found) == 1 and "KeyError" in found[0], out.getvalue()
