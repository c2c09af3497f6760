"""A service stopped and started again on the same gossip port, in one process, rejoins.

On Python 3.12+ `asyncio.Server.close()` no longer closes the listening socket before
`wait_closed()` is awaited (and that waits for every connection), so a gossip node built on
`asyncio.start_server` kept its TCP port after `stop()`: the second `start()` failed with
"Address already in use" on 3.12 and 3.13 only.  The node now owns its listening socket
(memberlist/inbound.py) and closes it in `close()`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import pytest

from registry.register import AsyncRegister, Register

from .helpers import Registry, free_port, procs, wait_for

GROUP = "restart-same-port"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with procs() as ps:
        yield Registry(ps, tmp_path_factory.mktemp("restart"), "reg-restart").wait_ready()


def _addr_of(registry: Registry, ident: str) -> str:
    """The service address `registry` lists for `ident` ("" when not listed)."""
    from registry.client import NotFound, RpcClient

    with RpcClient(registry.rpc, timeout=10.0) as c:
        try:
            return next((s.addr for s in c.members(GROUP) if s.id == ident), "")
        except NotFound:
            return ""


def _listed(registry: Registry, ident: str, addr: str) -> Callable[[], bool]:
    return lambda: _addr_of(registry, ident) == addr


async def test_async_register_restarts_on_the_same_port(registry: Registry) -> None:
    """start(), stop(), start() at once (no pause between: the old socket closed a loop
    iteration or more after stop() returned), three times; each run is listed."""
    port = free_port()
    for round_ in range(3):
        addr = f"127.0.0.1:{8000 + round_}"
        reg = AsyncRegister("svc-again", f"127.0.0.1:{port}", "", registry.gossip, GROUP, addr, profile="fast")
        assert await reg.start() == 1, f"round {round_}"
        assert reg.address == f"127.0.0.1:{port}"
        await asyncio.to_thread(wait_for, _listed(registry, "svc-again", addr), 20, 0.05, f"{addr} listed")
        await reg.stop()
    await asyncio.to_thread(wait_for, lambda: not _addr_of(registry, "svc-again"), 20, 0.05, "dropped")


def test_register_restarts_on_the_same_port(registry: Registry) -> None:
    port = free_port()
    for round_ in range(2):
        addr = f"127.0.0.1:{8100 + round_}"
        with Register("svc-again-sync", f"127.0.0.1:{port}", "", registry.gossip, GROUP, addr, profile="fast") as reg:
            assert reg.address == f"127.0.0.1:{port}", f"round {round_}"
            wait_for(_listed(registry, "svc-again-sync", addr), 20, what=f"{addr} listed")
    wait_for(lambda: not _addr_of(registry, "svc-again-sync"), 20, what="dropped")
