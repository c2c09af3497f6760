"""Run a real HashiCorp `serf agent` (Debian's /usr/bin/serf) for interop tests.

Usage (sync or async tests alike)::

    from tests.serfagent import SerfAgent, serf_agent   # `serf_agent` is a pytest fixture factory

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
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import pytest

from tests.agentproc import AgentProc, agent_factory, free_port

__all__ = ["SerfAgent", "SerfAgentError", "free_port", "serf_agent", "serf_agents", "serf_binary"]


class SerfAgentError(RuntimeError):
    pass


def serf_binary() -> str | None:
    """Path of the `serf` executable, or None."""
    return shutil.which("serf")


def _fmt_hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class SerfAgent(AgentProc):
    """One `serf agent` process on loopback.  Construct, then `start()`; `stop()`/`kill()` end it."""

    error = SerfAgentError
    what = "serf agent"
    not_up = "did not answer RPC"

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
        super().__init__(name, host=host, port=port, log_prefix="serf")
        self.rpc_port = rpc_port
        self.tags = dict(tags or {})
        self.encrypt = encrypt
        self.event_handlers = list(event_handlers)
        self.profile = profile
        self.log_level = log_level
        self.extra_args = list(extra_args)
        self.binary = binary or serf_binary() or "serf"

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

    def _pick_ports(self, attempt: int) -> None:
        if self.port == 0 or attempt > 0:
            self.port = free_port(self.host)
        if self.rpc_port == 0 or attempt > 0:
            self.rpc_port = free_port()

    def _ready(self) -> bool:
        """True once `serf members` answers on the RPC port."""
        try:
            res = subprocess.run(
                [self.binary, "members", f"-rpc-addr={self.rpc_addr}"],
                check=False,
                capture_output=True,
                timeout=5,
            )
        except subprocess.TimeoutExpired:
            return False
        return res.returncode == 0

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (the agent shuts down without leaving, like Ctrl-C would not)."""
        self._signal(signal.SIGTERM, timeout)

    def leave(self, timeout: float = 15.0) -> None:
        """Graceful leave through RPC (`serf leave`), then wait for the process to exit."""
        if self.alive:
            self.run("leave", timeout=timeout, check=False)
        self._signal(signal.SIGTERM, timeout)

    # -- CLI (blocking) --------------------------------------------------------------------

    def run(self, *args: str, timeout: float = 15.0, check: bool = True) -> str:
        """Run `serf <args> -rpc-addr=<this agent>`; returns stdout (raises on failure if check)."""
        cmd = [self.binary, args[0], f"-rpc-addr={self.rpc_addr}", *args[1:]]
        res = subprocess.run(cmd, check=False, capture_output=True, timeout=timeout)
        if check and res.returncode != 0:
            raise SerfAgentError(f"{' '.join(cmd)} failed ({res.returncode}): {res.stderr.decode(errors='replace')}")
        return res.stdout.decode(errors="replace")

    def members(self) -> list[dict[str, Any]]:
        """`serf members -format=json` as a list of dicts (name, addr, port, tags, status, protocol)."""
        out = json.loads(self.run("members", "-format=json"))
        return list(out.get("members") or [])

    # -- CLI (async: keeps the event loop running) -------------------------------------------

    async def arun(self, *args: str, timeout: float = 15.0, check: bool = True) -> str:
        cmd = [self.binary, args[0], f"-rpc-addr={self.rpc_addr}", *args[1:]]
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout)
        except asyncio.TimeoutError:  # not the builtin TimeoutError before Python 3.11
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
    yield from agent_factory(SerfAgent)
