"""Process helpers for the end-to-end tests: free ports, condition waits, managed subprocesses."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (gossip needs both)."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
            t.bind(("127.0.0.1", 0))
            port = int(t.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                try:
                    u.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port")


def wait_for(pred: Callable[[], T | None], timeout: float = 30.0, interval: float = 0.05, what: str = "") -> T:
    """Poll `pred` until it returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            value = pred()
            if value:
                return value
        except Exception as exc:  # the condition may raise until the system is up
            last_exc = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or pred}; last error: {last_exc!r}")
        time.sleep(interval)


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
        self._log = open(log, "wb")
        self.p = subprocess.Popen(self.argv, stdout=self._log, stderr=subprocess.STDOUT, env=env(), cwd=str(ROOT))

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.p.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            self.p.send_signal(sig)

    def wait(self, timeout: float = 30.0) -> int:
        return self.p.wait(timeout)

    def stop(self) -> None:
        if self.alive():
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(15)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(5)
        self._log.close()


@contextmanager
def procs() -> Iterator[list[Proc]]:
    """Every Proc appended to the yielded list is stopped at the end, pass or fail."""
    started: list[Proc] = []
    try:
        yield started
    finally:
        for p in reversed(started):
            p.stop()


class Registry:
    """A `registry` server subprocess on free loopback ports, fast gossip profile."""

    def __init__(self, ps: list[Proc], tmp: Path, ident: str, seeds: Sequence[str] = (), *extra: str,
                 gossip: int = 0, rpc: int = 0) -> None:
        self.id = ident
        self.gossip_port = gossip or free_port()
        self.rpc_port = rpc or free_port()
        self.gossip = f"127.0.0.1:{self.gossip_port}"
        self.rpc = f"127.0.0.1:{self.rpc_port}"
        args = ["-id", ident, "-bind", self.gossip, "-addr", self.rpc, "-profile", "fast", "-log-format", "json",
                "-log-level", "debug"]
        if seeds:
            args += ["-registries", ",".join(seeds)]
        self.proc = Proc(registry_cmd(*args, *extra), tmp / f"{ident}-{self.gossip_port}.log")
        ps.append(self.proc)

    def client(self, **kw: object) -> "object":
        from client import RpcClient

        return RpcClient(self.rpc, timeout=10.0, **kw)  # type: ignore[arg-type]

    def ids(self, group: str) -> set[str]:
        """Ids of the group's members on this registry (empty if the group is unknown)."""
        from client import NotFound, RpcClient

        with RpcClient(self.rpc, timeout=10.0) as c:
            try:
                return {s.id for s in c.members(group)}
            except NotFound:
                return set()

    def wait_ready(self, timeout: float = 60.0) -> "Registry":
        wait_for(lambda: self.id in self.ids("registry-group"), timeout, what=f"{self.id} serving",
                 interval=0.1)
        assert self.proc.alive(), self.proc.output()
        return self


class Service:
    """examples/webservice.py (or async_webservice.py) as a subprocess."""

    def __init__(self, ps: list[Proc], tmp: Path, ident: str, seeds: Sequence[str], group: str = "webservice",
                 script: str = "webservice.py") -> None:
        self.id = ident
        self.group = group
        self.gossip_port = free_port()
        self.http_port = free_port()
        self.addr = f"127.0.0.1:{self.http_port}"
        self.proc = Proc(
            [sys.executable, str(ROOT / "examples" / script), "-id", ident, "-bind", f"127.0.0.1:{self.gossip_port}",
             "-registries", ",".join(seeds), "-group", group, "-addr", self.addr, "-profile", "fast"],
            tmp / f"{ident}.log",
        )
        ps.append(self.proc)

    def registered(self) -> bool:
        if not self.proc.alive():
            raise AssertionError(f"{self.id} exited: {self.proc.output()}")
        return "registered" in self.proc.output()

    def wait_registered(self, timeout: float = 60.0) -> "Service":
        wait_for(self.registered, timeout, what=f"{self.id} registered", interval=0.02)
        return self
