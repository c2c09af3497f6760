"""Helpers for Serf tests on a real event loop and loopback sockets (serf_sim.py is the
simulated, virtual-clock counterpart); the `nodes` fixture is in this folder's conftest.py."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from registry.memberlist.config import Config
from registry.serf.agent import SerfAgent
from registry.serf.config import SerfConfig


async def wait(pred: Callable[[], bool], timeout: float = 30.0) -> bool:
    """Poll `pred` every 50 ms without blocking the loop; its last value after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while loop.time() < end:
        if pred():
            return True
        await asyncio.sleep(0.05)
    return pred()


async def py_node(nodes: list[SerfAgent], name: str, tags: dict[str, str] | None = None, **kw: Any) -> SerfAgent:
    """A Python Serf agent on a free loopback port (LAN timings), started; in `nodes` (the fixture's
    list, shut down at teardown) before it starts, so a failed start is cleaned up too."""
    cfg = SerfConfig(name=name, tags=tags or {}, memberlist=Config.lan(bind_addr="127.0.0.1", bind_port=0), **kw)
    agent = SerfAgent(cfg)
    nodes.append(agent)
    await agent.start()
    return agent
