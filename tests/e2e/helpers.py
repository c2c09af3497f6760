"""Process helpers for the end-to-end tests: free ports, condition waits, managed subprocesses."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from registry.memberlist.config import Profile
from tests.agentproc import free_port as free_port  # noqa: PLC0414  (re-exported: the tests import it from here)
from tests.logcheck import bugs_in, check_outputs

if TYPE_CHECKING:
    from registry.client import RpcClient

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


class ProcessExited(AssertionError):
    """A child under test died: no point waiting for it any longer (wait_for re-raises at once)."""


def wait_for(pred: Callable[[], T | None], timeout: float = 30.0, interval: float = 0.05, what: str = "") -> T:
    """Poll `pred` until it returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            value = pred()
            if value:
                return value
        except ProcessExited:
            raise
        except Exception as exc:  # noqa: BLE001 - the condition may raise until the system is up
            last_exc = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or pred}; last error: {last_exc!r}")
        time.sleep(interval)


def terminate(p: subprocess.Popen[Any], grace: float = 15.0) -> None:
    """SIGTERM (a registry or service leaves the pool on it), SIGKILL if still running after `grace` s."""
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(grace)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(5)


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT) + os.pathsep + e.get("PYTHONPATH", "")
    e["PYTHONUNBUFFERED"] = "1"
    return e


def registry_cmd(*args: str) -> list[str]:
    return [sys.executable, str(ROOT / "cmd" / "registry" / "main.py"), *args]


class Proc:
    """A child process whose stderr goes to a file we can read while it runs."""

    def __init__(self, argv: Sequence[str], log: Path) -> None:
        self.argv = list(argv)
        self.log_path = log
        self._log = open(log, "wb")  # noqa: SIM115 - the child writes to it until stop()
        self.p = subprocess.Popen(self.argv, stdout=self._log, stderr=subprocess.STDOUT, env=env(), cwd=str(ROOT))

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def check_running(self) -> None:
        """ProcessExited, with its exit status and the end of its output, if it has exited: a wait
        on it then fails at once with the reason instead of at its deadline."""
        if not self.alive():
            raise ProcessExited(f"{self.log_path.name} exited {self.p.returncode}: {self.output()[-2000:]}")

    def logged(self, text: str) -> bool:
        """True once its output holds `text`; ProcessExited if it exited without."""
        if text in self.output():
            return True
        self.check_running()
        return False

    def bugs(self) -> list[str]:
        """The lines of its output that report a bug: a handler error, an unhandled exception."""
        return bugs_in(self.output())

    def alive(self) -> bool:
        return self.p.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            self.p.send_signal(sig)

    def wait(self, timeout: float = 30.0) -> int:
        return self.p.wait(timeout)

    def stop(self) -> None:
        if self.alive():
            terminate(self.p)
        self._log.close()


def check_logs(started: Sequence[Proc]) -> None:
    """Fail naming every process whose output reports a bug (tests/logcheck.py `check_outputs`)."""
    check_outputs({p.log_path.name: p.output() for p in started})


@contextmanager
def procs() -> Iterator[list[Proc]]:
    """Every Proc appended to the yielded list is stopped at the end, pass or fail; then the test
    fails if any of them logged a bug (after the test's own failure, if any, which stays shown)."""
    started: list[Proc] = []
    try:
        yield started
    finally:
        for p in reversed(started):
            p.stop()
        check_logs(started)


# Tests that do not measure timing use TOLERANT: the fast profile's 0.1 s probe timeout and
# 0.6 s suspicion can declare a CPU-starved process dead on a loaded machine (seen: a service
# "failed" 0.7 s after joining at load 8 on 2 cores, refuted 0.3 s later), and a Match in that
# window sees one service fewer.
TOLERANT: Profile = "lan"


class Registry:
    """A `registry` server subprocess on loopback (fast gossip profile unless told otherwise).

    Ports left at 0 are picked by the server itself and read back from its "registry started"
    log line: no window in which another process (the machine is shared) can take a port that
    a free_port() probe saw free.  Give explicit ports only where the test needs them up front.
    """

    def __init__(self, ps: list[Proc], tmp: Path, ident: str, seeds: Sequence[str] = (), *extra: str,
                 gossip: int = 0, rpc: int = 0, profile: str = "fast") -> None:
        self.id = ident
        self._gossip_port = gossip
        self._rpc_port = rpc
        args = ["-id", ident, "-bind", f"127.0.0.1:{gossip}", "-addr", f"127.0.0.1:{rpc}", "-profile", profile,
                "-log-format", "json", "-log-level", "debug"]
        if seeds:
            args += ["-registries", ",".join(seeds)]
        self.proc = Proc(registry_cmd(*args, *extra), tmp / f"{ident}-{gossip or os.getpid()}-{id(self)}.log")
        ps.append(self.proc)

    def _started(self) -> dict[str, str] | None:
        self.proc.check_running()
        for line in self.proc.output().splitlines():
            if '"registry started"' in line:
                row = json.loads(line)
                ports = {"gossip": str(row["gossip"]), "grpc": str(row["grpc"])}
                if "http" in row:  # started with -http-addr
                    ports["http"] = str(row["http"])
                return ports
        return None

    def _learn_ports(self) -> None:
        if self._gossip_port and self._rpc_port:
            return
        row = wait_for(self._started, 60, what=f"{self.id} logging its addresses", interval=0.05)
        self._gossip_port = int(row["gossip"].rsplit(":", 1)[1])
        self._rpc_port = int(row["grpc"].rsplit(":", 1)[1])

    @property
    def gossip_port(self) -> int:
        self._learn_ports()
        return self._gossip_port

    @property
    def rpc_port(self) -> int:
        self._learn_ports()
        return self._rpc_port

    @property
    def gossip(self) -> str:
        return f"127.0.0.1:{self.gossip_port}"

    @property
    def http(self) -> str:
        """The HTTP front's host:port (started with -http-addr), from the "registry started" line."""
        row = wait_for(self._started, 60, what=f"{self.id} logging its addresses", interval=0.05)
        assert "http" in row, f"{self.id} was started without -http-addr"
        return row["http"]

    @property
    def rpc(self) -> str:
        return f"127.0.0.1:{self.rpc_port}"

    def client(self, **kw: Any) -> RpcClient:
        from registry.client import RpcClient

        return RpcClient(self.rpc, timeout=10.0, **kw)

    def ids(self, group: str) -> set[str]:
        """Ids of the group's members on this registry (empty if the group is unknown)."""
        from registry.client import NotFound, RpcClient

        with RpcClient(self.rpc, timeout=10.0) as c:
            try:
                return {s.id for s in c.members(group)}
            except NotFound:
                return set()

    def wait_ready(self, timeout: float = 60.0) -> Registry:
        def serving() -> bool:
            self.proc.check_running()
            return self.id in self.ids("registry-group")

        wait_for(serving, timeout, what=f"{self.id} serving", interval=0.1)
        assert self.proc.alive(), self.proc.output()
        return self


class Service:
    """examples/webservice.py (or async_webservice.py) as a subprocess.

    Gossip and HTTP ports are 0 (picked by the example); `addr` and `gossip` are read back
    from the line it prints once registered.
    """

    def __init__(self, ps: list[Proc], tmp: Path, ident: str, seeds: Sequence[str], group: str = "webservice",
                 script: str = "webservice.py", profile: str = "fast") -> None:
        self.id = ident
        self.group = group
        self.addr = ""
        self.gossip = ""
        self.proc = Proc(
            [sys.executable, str(ROOT / "examples" / script), "-id", ident, "-bind", "127.0.0.1:0",
             "-registries", ",".join(seeds), "-group", group, "-addr", "127.0.0.1:0", "-profile", profile],
            tmp / f"{ident}-{id(self)}.log",
        )
        ps.append(self.proc)

    def registered(self) -> bool:
        out = self.proc.output()
        m = _REGISTERED.search(out)
        if m is None:
            self.proc.check_running()
            return False
        self.addr, self.gossip = m.group(1), m.group(2)
        return True

    def wait_registered(self, timeout: float = 60.0) -> Service:
        wait_for(self.registered, timeout, what=f"{self.id} registered", interval=0.02)
        return self


_REGISTERED = re.compile(r" registered in \S+, serving http://(\S+)/ \(gossip (\S+)\)")
