"""What the WAN tests share: registry subprocesses in a datacenter, in-process servers, async waits.

In-process servers run on the test's loop, so waits here never block it (`until`): the servers'
gossip must go on while a test waits, or the fast profile would call them dead."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from registry.server import RegistryServer, ServerConfig
from tests.e2e.helpers import Proc, Registry, wait_for

T = TypeVar("T")


async def until(pred: Callable[[], T | None], timeout: float, what: str) -> T:
    """Poll `pred` on the loop until it returns something truthy; fail naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            last = value = pred()
            if value:
                return value
        except AssertionError:
            raise
        except Exception as exc:  # noqa: BLE001 - the condition may raise until the pool is up
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
        await asyncio.sleep(0.05)


def started_line(proc: Proc) -> dict[str, str]:
    """The child's "registry started" log line (its gossip, grpc and wan addresses), waited for."""
    def find() -> dict[str, str] | None:
        proc.check_running()
        for line in proc.output().splitlines():
            if '"registry started"' in line:
                row: dict[str, str] = json.loads(line)
                return row
        return None

    return wait_for(find, 60, what=f"{proc.log_path.name} started", interval=0.05)


def wan_registry(ps: list[Proc], tmp: Path, ident: str, dc: str, *extra: str,
                 lan: Sequence[str] = ()) -> tuple[Registry, dict[str, str]]:
    """A `registry` subprocess of datacenter `dc` with a WAN pool on a port of its choosing; its start line."""
    r = Registry(ps, tmp, f"{ident}", lan, "-datacenter", dc, "-wan-bind", "127.0.0.1:0", *extra)
    return r, started_line(r.proc)


def server_config(ident: str, dc: str, *, lan: Sequence[str] = (), wan_join: Sequence[str] = (),
                  key: str | None = None) -> ServerConfig:
    return ServerConfig(id=ident, bind=("127.0.0.1", 0), addr=("127.0.0.1", 0), registries=list(lan),
                        profile="fast", datacenter=dc, wan_bind=("127.0.0.1", 0), wan_join=list(wan_join),
                        wan_encrypt_key=key)


async def started(config: ServerConfig) -> RegistryServer:
    server = RegistryServer(config)
    try:
        await server.start()
    except BaseException:
        await server.close()
        raise
    return server
