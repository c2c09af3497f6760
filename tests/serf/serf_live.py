"""Helpers for Serf tests on a real event loop and loopback sockets (serf_sim.py is the
simulated, virtual-clock counterpart); the `nodes` fixture is in this folder's conftest.py."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def wait(pred: Callable[[], bool], timeout: float = 30.0) -> bool:
    """Poll `pred` every 50 ms without blocking the loop; its last value after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while loop.time() < end:
        if pred():
            return True
        await asyncio.sleep(0.05)
    return pred()
