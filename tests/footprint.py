"""A `registry` server in a child process that tells which modules it has loaded, for the tests that a
part is imported only with its flag (registry.wan and registry.federation with -wan-bind, aiohttp and
the web page with -http-addr).

The child is the real CLI (`registry.cli.main`) plus one daemon thread that answers each line on its
stdin with the names in its `sys.modules`, as one JSON line; the parent asks once the start line is
logged, so whatever start-up imported lazily counts.  A test checks both ways (without the flag: not
loaded; with it: loaded), so the check can fail.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tests.e2e.helpers import env

__all__ = ["ModulesChild", "modules_child"]

CHILD = """
import json, sys, threading

def answer():
    for _ in sys.stdin:
        print(json.dumps(sorted(sys.modules)), flush=True)

threading.Thread(target=answer, daemon=True).start()
from registry.cli import main
sys.exit(main(sys.argv[1:]))
"""

#: What every such child runs with: fast timings, JSON logs (the start line is read as JSON), info level.
COMMON = ("-profile", "fast", "-log-format", "json", "-log-level", "info")


class ModulesChild:
    """The running child: its log lines so far, its parsed start line, and `modules()` to ask it."""

    def __init__(self, proc: subprocess.Popen[str], log: list[str]) -> None:
        self.proc = proc
        self.log = log  # appended by the reader thread
        line = next((x for x in log if '"registry started"' in x), None)
        assert line is not None, "no start line: " + "".join(log)
        self.started: dict[str, Any] = json.loads(line)

    def modules(self) -> set[str]:
        """The modules the child has loaded now."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("modules\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, "the child closed its stdout: " + "".join(self.log)
        return set(json.loads(line))

    def text(self) -> str:
        return "".join(self.log)


@contextmanager
def modules_child(*args: str, start_timeout: float = 60.0) -> Iterator[ModulesChild]:
    """Start `registry <args>` (plus COMMON) in a child, wait for its start line, yield it; then SIGTERM it
    and check it exited 0."""
    p = subprocess.Popen([sys.executable, "-c", CHILD, *args, *COMMON], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
    started = threading.Event()
    log: list[str] = []

    def read() -> None:
        assert p.stderr is not None
        for line in p.stderr:
            log.append(line)
            if '"registry started"' in line:
                started.set()
        started.set()  # the child ended: stop waiting

    threading.Thread(target=read, daemon=True).start()
    try:
        assert started.wait(start_timeout) and p.poll() is None, "".join(log)
        child = ModulesChild(p, log)
    except BaseException:
        p.kill()
        p.wait(30)
        raise
    try:
        yield child
    finally:
        if p.poll() is None:  # a test that ended the child itself checks how it ended
            p.terminate()
            assert p.wait(30) == 0, "".join(log)
