"""Run `gonode`, a Serf node on the newest HashiCorp releases (serf v0.10.2, memberlist v0.5.2,
go-msgpack v2), for interop tests; Debian's `serf` agent (tests/serfagent.py) is 0.9.4.

Usage::

    from tests.gonode import GoNode, gonode   # `gonode` is a pytest fixture factory

    def test_x(gonode):
        go = gonode("go1", tags={"group": "web"}, encrypt=KEY)   # started: lists itself alive
        go.bind                       # "127.0.0.1:<port>", the gossip address to join
        go.members()                  # GET /members: [{"name", "addr", "port", "status", "tags", "protocol"}]
        go.wait_member("py1", "alive", timeout=20)
        await go.await_member("py1", "left")   # the same without blocking an event loop
        go.terminate()                # SIGTERM: graceful leave, then exit 0
        go.kill()                     # SIGKILL: a failure

The binary is `$GONODE`, else `<repo>/../shared/tools/gonode`; the fixture SKIPS (with the path it
looked at) when it is absent, in CI too: it is a development check the project must pass without.
Ports are picked free and retried if another process takes them first; logs go to a temp file.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.agentproc import AgentProc, agent_factory, free_port

__all__ = ["GoNode", "GoNodeError", "gonode", "gonode_binary", "gonode_missing"]

ROOT = Path(__file__).resolve().parents[1]
#: Log lines about timing or a dead peer, not content: a starved node suspected and refuting,
#: UDP late but TCP fine, dialing a node just killed.
TIMING = (
    "Refuting a suspect message",
    "Was able to connect to",
    "connection refused",
    "connection reset by peer",
    "i/o timeout",
    "broken pipe",
)


class GoNodeError(RuntimeError):
    pass


def gonode_binary() -> str:
    """Where the binary is expected: `$GONODE`, else `<repo>/../shared/tools/gonode`."""
    return os.environ.get("GONODE") or str(ROOT.parent / "shared" / "tools" / "gonode")


def _usable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def gonode_missing() -> str | None:
    """Why gonode tests cannot run here (None when they can)."""
    path = gonode_binary()
    if _usable(path):
        return None
    return f"needs gonode, a serf v0.10.2 node: no executable at {path} (set $GONODE, or see ../shared/tools)"


class GoNode(AgentProc):
    """One gonode process on loopback. Construct, `start()`; `terminate()`/`kill()`/`close()` end it."""

    error = GoNodeError
    what = "gonode"

    def __init__(
        self,
        name: str = "go1",
        *,
        tags: Mapping[str, str] | None = None,
        encrypt: str | None = None,
        join: Sequence[str] = (),
        join_retry: float | None = None,
        protocol: int | None = None,
        port: int = 0,
        host: str = "127.0.0.1",
        wrap: Sequence[str] = (),
        binary: str | None = None,
    ) -> None:
        """`host`: the address to bind gossip and HTTP on; `wrap`: a command prefix, such as
        `ip netns exec NS` to run the node in a network namespace (tests/chaos/netlab.py)."""
        super().__init__(name, host=host, port=port, log_prefix="gonode")
        self.tags = dict(tags or {})
        self.encrypt = encrypt
        self.join = list(join)
        self.join_retry = join_retry
        self.protocol = protocol
        self.wrap = list(wrap)
        self.http_port = 0
        self.binary = binary or gonode_binary()

    @property
    def bind(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def json_name(self) -> str:
        """The name as /members shows it: a name given as `os.fsdecode(b"...\\xff")` reaches gonode
        as those raw bytes (Go strings are bytes), and Go's JSON writes bad UTF-8 as U+FFFD."""
        return os.fsencode(self.name).decode("utf-8", "replace")

    def command(self) -> list[str]:
        args = [*self.wrap, self.binary, "-name", self.name, "-bind", self.bind, "-http", f"{self.host}:{self.http_port}"]
        if self.tags:
            args += ["-tags", ",".join(f"{k}={v}" for k, v in self.tags.items())]
        if self.encrypt:
            args += ["-encrypt", self.encrypt]
        if self.join:
            args += ["-join", ",".join(self.join)]
        if self.join_retry is not None:
            args += ["-join-retry", f"{self.join_retry}s"]
        if self.protocol is not None:
            args += ["-protocol", str(self.protocol)]
        return args

    def _pick_ports(self, attempt: int) -> None:
        """Free ports on 127.0.0.1 (where the test runs, even when `host` is in a namespace)."""
        if self.port == 0 or attempt > 0:
            self.port = free_port()
        self.http_port = free_port()

    def _ready(self) -> bool:
        """True once /members lists this node alive."""
        try:
            return any(m["name"] == self.json_name and m["status"] == "alive" for m in self.members())
        except GoNodeError:
            return False

    def wait_log(self, text: str, timeout: float = 30.0) -> str:
        """Block until `text` is in the log (e.g. "] failed" of a `-join` given up); returns the log."""
        deadline = time.monotonic() + timeout
        while text not in (log := self.log_text()):
            if time.monotonic() > deadline:
                raise GoNodeError(f"{text!r} not in {self.name}'s log after {timeout}s:\n{log[-3000:]}")
            time.sleep(0.05)
        return log

    def join_failed(self, timeout: float = 30.0) -> bool:
        """Wait for the `-join` outcome: True if gonode gave it up ("join [...] failed"), False if it joined."""
        deadline = time.monotonic() + timeout
        while True:
            log = self.log_text()
            if "gonode: join [" in log and "] failed" in log:
                return True
            if "gonode: joined" in log:
                return False
            if time.monotonic() > deadline:
                raise GoNodeError(f"no -join outcome in {self.name}'s log after {timeout}s:\n{log[-3000:]}")
            time.sleep(0.05)

    def complaints(self, *expected: str) -> list[str]:
        """The node's `[ERR]`/`[WARN]` log lines (a message of ours it could not decode, a rejected
        coordinate, a failed push/pull merge, ...) except those containing one of `expected`, and
        except what a loaded machine or a killed peer causes (`TIMING`), which says nothing of the wire."""
        skip = TIMING + expected
        return [
            line
            for line in self.log_text().splitlines()
            if ("[ERR]" in line or "[WARN]" in line or "[ERROR]" in line) and not any(e in line for e in skip)
        ]

    def events(self) -> list[tuple[str, str, str]]:
        """`[EVENT]` lines so far, as (kind, name, "ip:port"): ("member-join", "py1", "127.0.0.1:7946")."""
        out = []
        for line in self.log_text().splitlines():
            _, sep, rest = line.partition("[EVENT] ")
            parts = rest.split()
            if sep and len(parts) >= 3:
                out.append((parts[0], parts[1], parts[2]))
        return out

    # -- GET /members --------------------------------------------------------------------------

    def members(self) -> list[dict[str, Any]]:
        try:
            with urllib.request.urlopen(f"http://{self.host}:{self.http_port}/members", timeout=5) as r:
                return list(json.loads(r.read()))
        except (OSError, urllib.error.URLError, ValueError) as exc:
            raise GoNodeError(f"GET /members on {self.name}: {exc}") from None


@pytest.fixture
def gonode() -> Iterator[Callable[..., GoNode]]:
    """Factory: `gonode("go1", tags=..., encrypt=..., join=[...], protocol=N)` starts a node (it
    lists itself alive) and kills it at teardown; `gonode(..., start=False)` only builds it.
    Skips the test when the binary is absent."""
    why = gonode_missing()
    if why is not None:
        pytest.skip(why)
    yield from agent_factory(GoNode)
