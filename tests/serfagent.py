"""Run a real HashiCorp `serf agent` (Debian's /usr/bin/serf) for interop tests.

Usage (sync or async tests alike)::

    from serfagent import SerfAgent, serf_agent   # `serf_agent` is a pytest fixture factory

    def test_x(serf_agent):
        agent = serf_agent(name="go1", tags={"role": "db"}, encrypt=KEY)   # started and answering RPC
        agent.bind        # Address-like "127.0.0.1:<port>" string for joins
        agent.members()   # list of dicts from `serf members -format=json`
        await agent.await_member("py1", "alive", timeout=20)   # async variant of wait_member
        agent.kill()      # SIGKILL (no leave)

From an async test with Python nodes already running, start agents with
`agent = await SerfAgent("go2").astart()` (the `serf_agents` fixture list closes them), so
the event loop is never blocked for the agent's start-up.

Every agent gets free loopback ports for its gossip bind and RPC; its log is kept in a temp
file (`agent.log_text()`), and it is killed on fixture teardown.  Blocking helpers
(`members`, `run`, `wait_member`) use subprocess; inside asyncio tests that also run a
Python node use the `a*` variants so the event loop keeps answering pings.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import pytest

__all__ = ["SerfAgent", "SerfAgentError", "free_port", "serf_agent", "serf_agents", "serf_binary"]

#: How long an agent may take to answer its first RPC.
START_TIMEOUT = 20.0


class SerfAgentError(RuntimeError):
    pass


def serf_binary() -> str | None:
    """Path of the `serf` executable, or None."""
    return shutil.which("serf")


def free_port(host: str = "127.0.0.1") -> int:
    """A port currently free for both TCP and UDP on `host` (races are retried by `SerfAgent.start`)."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(50):
        with socket.socket(fam, socket.SOCK_STREAM) as t:
            t.bind((host, 0))
            port = int(t.getsockname()[1])
            try:
                with socket.socket(fam, socket.SOCK_DGRAM) as u:
                    u.bind((host, port))
            except OSError:
                continue
            return port
    raise SerfAgentError("no free port found")


def _fmt_hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class SerfAgent:
    """One `serf agent` process on loopback.  Construct, then `start()`; `stop()`/`kill()` end it."""

    def __init__(
        self,
        name: str = "go1",
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        rpc_port: int = 0,
        tags: Mapping[str, str] | None = None,
        encrypt: str | None = None,
        event_handlers: Sequence[str] = (),
        profile: str = "lan",
        log_level: str = "debug",
        extra_args: Sequence[str] = (),
        binary: str | None = None,
    ) -> None:
        self.name = name
        self.host = host
        self.port = port
        self.rpc_port = rpc_port
        self.tags = dict(tags or {})
        self.encrypt = encrypt
        self.event_handlers = list(event_handlers)
        self.profile = profile
        self.log_level = log_level
        self.extra_args = list(extra_args)
        self.binary = binary or serf_binary() or "serf"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = tempfile.NamedTemporaryFile(prefix=f"serf-{name}-", suffix=".log", delete=False)

    # -- addresses -------------------------------------------------------------------------

    @property
    def bind(self) -> str:
        """The gossip address to join ("127.0.0.1:port")."""
        return _fmt_hostport(self.host, self.port)

    @property
    def rpc_addr(self) -> str:
        return f"127.0.0.1:{self.rpc_port}"

    # -- lifecycle ---------------------------------------------------------------------------

    def command(self) -> list[str]:
        args = [
            self.binary,
            "agent",
            f"-node={self.name}",
            f"-bind={self.bind}",
            f"-rpc-addr={self.rpc_addr}",
            f"-profile={self.profile}",
            f"-log-level={self.log_level}",
        ]
        for k, v in self.tags.items():
            args += ["-tag", f"{k}={v}"]
        if self.encrypt:
            args.append(f"-encrypt={self.encrypt}")
        for handler in self.event_handlers:
            args.append(f"-event-handler={handler}")
        return args + self.extra_args

    def start(self, timeout: float = START_TIMEOUT) -> SerfAgent:
        """Start the process and wait until `serf members` answers on its RPC port."""
        fixed = self.port != 0
        for _attempt in range(5):
            if not fixed:
                self.port = free_port(self.host)
            if self.rpc_port == 0 or _attempt > 0:
                self.rpc_port = free_port()
            self.proc = subprocess.Popen(
                self.command(), stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break  # died (port race?): retry with new ports
                if self._rpc_ok():
                    return self
                time.sleep(0.05)
            else:
                self.kill()
                raise SerfAgentError(f"serf agent {self.name} did not answer RPC in {timeout}s:\n{self.log_text()}")
            if fixed:
                break
        raise SerfAgentError(f"serf agent {self.name} exited at start:\n{self.log_text()}")

    async def astart(self, timeout: float = START_TIMEOUT) -> SerfAgent:
        """`start()` without blocking the event loop (use it while Python nodes are running)."""
        fixed = self.port != 0
        for _attempt in range(5):
            if not fixed:
                self.port = free_port(self.host)
            if self.rpc_port == 0 or _attempt > 0:
                self.rpc_port = free_port()
            self.proc = subprocess.Popen(
                self.command(), stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                try:
                    await self.arun("members", timeout=5)
                    return self
                except SerfAgentError:
                    await asyncio.sleep(0.05)
            else:
                self.kill()
                raise SerfAgentError(f"serf agent {self.name} did not answer RPC in {timeout}s:\n{self.log_text()}")
            if fixed:
                break
        raise SerfAgentError(f"serf agent {self.name} exited at start:\n{self.log_text()}")

    def _rpc_ok(self) -> bool:
        try:
            res = subprocess.run(
                [self.binary, "members", f"-rpc-addr={self.rpc_addr}"],
                capture_output=True,
                timeout=5,
            )
        except subprocess.TimeoutExpired:
            return False
        return res.returncode == 0

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: the agent vanishes without a leave (peers must detect it as failed)."""
        self._signal(signal.SIGKILL)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (the agent shuts down without leaving, like Ctrl-C would not)."""
        self._signal(signal.SIGTERM, timeout)

    def leave(self, timeout: float = 15.0) -> None:
        """Graceful leave through RPC (`serf leave`), then wait for the process to exit."""
        if self.alive:
            self.run("leave", timeout=timeout, check=False)
        self._signal(signal.SIGTERM, timeout)

    def _signal(self, sig: int, timeout: float = 10.0) -> None:
        if self.proc is None:
            return
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

    # -- CLI (blocking) --------------------------------------------------------------------

    def run(self, *args: str, timeout: float = 15.0, check: bool = True) -> str:
        """Run `serf <args> -rpc-addr=<this agent>`; returns stdout (raises on failure if check)."""
        cmd = [self.binary, args[0], f"-rpc-addr={self.rpc_addr}", *args[1:]]
        res = subprocess.run(cmd, capture_output=True, timeout=timeout)
        if check and res.returncode != 0:
            raise SerfAgentError(f"{' '.join(cmd)} failed ({res.returncode}): {res.stderr.decode(errors='replace')}")
        return res.stdout.decode(errors="replace")

    def members(self) -> list[dict[str, Any]]:
        """`serf members -format=json` as a list of dicts (name, addr, port, tags, status, protocol)."""
        out = json.loads(self.run("members", "-format=json"))
        return list(out.get("members") or [])

    def member(self, name: str) -> dict[str, Any] | None:
        return next((m for m in self.members() if m.get("name") == name), None)

    def wait_member(self, name: str, status: str = "alive", timeout: float = 30.0) -> dict[str, Any]:
        """Block until `name` has `status` in this agent's view (raises SerfAgentError on timeout)."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = self.member(name)
            if last is not None and last.get("status") == status:
                return dict(last)
            time.sleep(0.1)
        raise SerfAgentError(f"{name} not {status} in {self.name}'s view after {timeout}s (last: {last})")

    # -- CLI (async: keeps the event loop running) -------------------------------------------

    async def arun(self, *args: str, timeout: float = 15.0, check: bool = True) -> str:
        cmd = [self.binary, args[0], f"-rpc-addr={self.rpc_addr}", *args[1:]]
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise SerfAgentError(f"{' '.join(cmd)} timed out") from None
        if check and proc.returncode != 0:
            raise SerfAgentError(f"{' '.join(cmd)} failed ({proc.returncode}): {err.decode(errors='replace')}")
        return out.decode(errors="replace")

    async def amembers(self) -> list[dict[str, Any]]:
        out = json.loads(await self.arun("members", "-format=json"))
        return list(out.get("members") or [])

    async def amember(self, name: str) -> dict[str, Any] | None:
        return next((m for m in await self.amembers() if m.get("name") == name), None)

    async def await_member(self, name: str, status: str = "alive", timeout: float = 30.0) -> dict[str, Any]:
        """Async `wait_member`: polls `serf members` without blocking the loop."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = await self.amember(name)
            if last is not None and last.get("status") == status:
                return dict(last)
            await asyncio.sleep(0.1)
        raise SerfAgentError(f"{name} not {status} in {self.name}'s view after {timeout}s (last: {last})")

    # -- common commands -----------------------------------------------------------------------

    def join(self, *addrs: str) -> str:
        """`serf join ADDR...` (the agent dials out to a Python node, for instance)."""
        return self.run("join", *addrs)

    async def ajoin(self, *addrs: str) -> str:
        return await self.arun("join", *addrs)

    def event(self, name: str, payload: str = "", coalesce: bool = True) -> str:
        """`serf event [-coalesce=false] NAME [PAYLOAD]`: a Serf user event from this agent."""
        return self.run("event", f"-coalesce={str(coalesce).lower()}", name, *([payload] if payload else []))

    async def aevent(self, name: str, payload: str = "", coalesce: bool = True) -> str:
        return await self.arun("event", f"-coalesce={str(coalesce).lower()}", name, *([payload] if payload else []))

    def __enter__(self) -> SerfAgent:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.close()


@pytest.fixture
def serf_agents() -> Iterator[list[SerfAgent]]:
    """A list whose agents are closed at teardown: `agents.append(await SerfAgent(...).astart())`
    starts one from an async test without blocking its event loop."""
    agents: list[SerfAgent] = []
    yield agents
    for agent in agents:
        agent.close()


@pytest.fixture
def serf_agent() -> Iterator[Callable[..., SerfAgent]]:
    """Factory fixture: `serf_agent(name=..., tags=..., encrypt=..., event_handlers=[...])` starts an
    agent (ready for RPC) and kills it at teardown.  Tests using it should be marked `@pytest.mark.serf`."""
    agents: list[SerfAgent] = []

    def make(name: str = "go1", **kwargs: Any) -> SerfAgent:
        agent = SerfAgent(name, **kwargs)
        agents.append(agent)
        return agent.start()

    yield make
    for agent in agents:
        agent.close()
