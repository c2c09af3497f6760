"""What the wrappers of a Go Serf process share: tests/gonode.py (gonode, serf v0.10.2) and
tests/serfagent.py (Debian's `serf agent`, 0.9.4) both subclass `AgentProc`.

`AgentProc` keeps the process's output in a temp file (`log_text()`), starts it on free ports
(retried with new ones when it dies at bind), ends it with a signal (`terminate()`, `kill()`,
`close()`), and polls its member list (`wait_member`, `await_member`).  A subclass says how to
run it (`command()`), how to pick its ports (`_pick_ports`), when it is up (`_ready`), and how
to read its member list (`members()`).  `free_port(host)` is the one free-port picker of the
test helpers (tests/e2e/helpers.py re-exports it).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from typing import Self  # 3.11+; annotations only (tests run on 3.10 too)

__all__ = ["AgentProc", "agent_factory", "free_port"]

#: How long a process may take to come up.
START_TIMEOUT = 20.0

A = TypeVar("A", bound="AgentProc")


def _below_ephemeral() -> range:
    """Ports under the kernel's ephemeral range (Linux: ip_local_port_range, 32768-60999 by default).

    A port picked with bind(0) is an ephemeral one, which the kernel hands to the next outgoing
    connection or bind(0) of any process: probed free here, it can be taken before the process
    under test binds it (CI saw "Address already in use" that way, four Pythons' suites at once).
    Ports below the range are taken only by explicit binds, so a probed one stays free."""
    low = 32768
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return range(max(1024, low - 12000), low) if low > 3024 else range(20000, 30000)


def free_port(host: str = "127.0.0.1") -> int:
    """A port currently free for both TCP and UDP on `host` (gossip needs both), picked at random
    below the ephemeral range (`_below_ephemeral` says why); races left are retried by
    `AgentProc.start`."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    pool = _below_ephemeral()
    rng = random.Random()  # its own generator: a test seeding `random` must not make suites pick alike
    for _ in range(200):
        port = rng.choice(pool)
        try:
            with socket.socket(fam, socket.SOCK_STREAM) as t, socket.socket(fam, socket.SOCK_DGRAM) as u:
                t.bind((host, port))
                u.bind((host, port))
        except OSError:
            continue
        return port
    raise RuntimeError(f"no free port on {host}")


class AgentProc:
    """One agent process.  Construct, `start()` (or `await astart()`); `terminate()`/`kill()`/`close()` end it."""

    #: Raised by the helpers (a subclass of RuntimeError per wrapper).
    error: type[RuntimeError] = RuntimeError
    #: What the process is called in messages ("gonode", "serf agent").
    what = "agent"
    #: What `start()` says when the process runs but is not up in time ("not up").
    not_up = "not up"

    def __init__(self, name: str, *, host: str, port: int, log_prefix: str) -> None:
        self.name = name
        self.host = host
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = tempfile.NamedTemporaryFile(prefix=f"{log_prefix}-{name}-", suffix=".log", delete=False)  # noqa: SIM115

    # -- what a subclass says --------------------------------------------------------------------

    def command(self) -> list[str]:
        raise NotImplementedError

    def _pick_ports(self, attempt: int) -> None:
        """Choose ports before start attempt `attempt` (0-based): a new gossip `port` if it is 0 or
        `attempt` > 0 (a `port` given is tried once only), and whatever else the process needs."""
        raise NotImplementedError

    def _ready(self) -> bool:
        """True once the started process answers."""
        raise NotImplementedError

    def members(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT) -> Self:
        """Start and wait until `_ready()` (new ports if it died at start, unless `port` was fixed)."""
        fixed = self.port != 0
        for attempt in range(5):
            self._pick_ports(attempt)
            self.proc = subprocess.Popen(
                self.command(), stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break  # port race, most likely: retry with new ports
                if self._ready():
                    return self
                time.sleep(0.05)
            else:
                self.kill()
                raise self.error(f"{self.what} {self.name} {self.not_up} in {timeout}s:\n{self.log_text()}")
            if fixed:
                break
        raise self.error(f"{self.what} {self.name} exited at start:\n{self.log_text()}")

    async def astart(self, timeout: float = START_TIMEOUT) -> Self:
        """`start()` in a thread, so Python nodes on the running loop keep answering meanwhile."""
        return await asyncio.to_thread(self.start, timeout)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _signal(self, sig: int, timeout: float = 10.0) -> int | None:
        """Send `sig` and wait up to `timeout` for the exit (then SIGKILL); returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def terminate(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, then wait for the exit; returns the exit code."""
        return self._signal(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """SIGKILL: the node vanishes without a leave (peers must find it failed)."""
        self._signal(signal.SIGKILL, 5.0)

    def close(self) -> None:
        self.kill()
        try:
            self._log.close()
            os.unlink(self._log.name)
        except OSError:
            pass

    def log_text(self) -> str:
        self._log.flush()
        try:
            with open(self._log.name, encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def __enter__(self) -> Self:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the member list ---------------------------------------------------------------------------

    def member(self, name: str) -> dict[str, Any] | None:
        return next((m for m in self.members() if m.get("name") == name), None)

    def wait_member(
        self, name: str, status: str = "alive", timeout: float = 30.0, tags: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        """Block until `name` has `status` (and exactly `tags`, if given) in this node's view."""
        deadline = time.monotonic() + timeout
        last: dict[str, Any] | None = None
        while True:
            last = self.member(name)
            if last is not None and last.get("status") == status and (tags is None or last.get("tags") == dict(tags)):
                return dict(last)
            if time.monotonic() > deadline:
                raise self.error(f"{name} not {status} (tags {tags}) in {self.name}'s view after {timeout}s: {last}")
            if not self.alive:
                raise self.error(f"{self.what} {self.name} exited:\n{self.log_text()}")
            time.sleep(0.1)

    async def await_member(
        self, name: str, status: str = "alive", timeout: float = 30.0, tags: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        """`wait_member` in a thread, without blocking an event loop."""
        return await asyncio.to_thread(self.wait_member, name, status, timeout, tags)


def agent_factory(cls: Callable[..., A]) -> Iterator[Callable[..., A]]:
    """The body of a fixture factory: `make(name, start=True, **kwargs)` builds `cls(name, **kwargs)`,
    starts it unless `start=False`, and every one made is closed at teardown."""
    made: list[A] = []

    def make(name: str = "go1", *, start: bool = True, **kwargs: Any) -> A:
        agent = cls(name, **kwargs)
        made.append(agent)
        return agent.start() if start else agent

    yield make
    for agent in made:
        agent.close()
