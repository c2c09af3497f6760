"""What the federation tests share: waiting on a condition while the loop runs, and comparing a mirror's
answers with the registry it copies (the oracle: that registry's own MatchBatch over gRPC)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from registry.catalog import REGISTRY_GROUP, Catalog
from registry.client import AsyncRpcClient, NotFound


async def poll(pred: Callable[[], object], timeout: float, what: str, interval: float = 0.01) -> float:
    """Seconds until `pred()` (sync, cheap) is true; the loop keeps running servers and followers meanwhile."""
    start = time.monotonic()
    while not pred():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what} not within {timeout}s")
        await asyncio.sleep(interval)
    return time.monotonic() - start


async def differences(catalog: Callable[[], Catalog], addr: str, keys: list[str]) -> list[str]:
    """What Match on the mirror's catalog answers otherwise than MatchBatch on the registry at `addr` for
    `keys` ([]: nothing), every group but registry-group (never exported: -wan-export)."""
    async with AsyncRpcClient(addr, timeout=10.0) as c:
        groups = [g for g in await c.groups() if g != REGISTRY_GROUP]
        mirror = catalog()
        if mirror.groups() != groups:
            return [f"groups {mirror.groups()} != {groups}"]
        out = []
        for g in groups:
            try:
                want = [s.id for s in await c.match_batch(g, keys)]
            except NotFound:
                want = []
            try:
                got = [s.id for s in mirror.match_batch(g, keys)]
            except LookupError:
                got = []
            if got != want:
                out.append(f"{g}: {sum(a != b for a, b in zip(got, want))} keys differ, {len(got)} vs {len(want)}")
        return out
