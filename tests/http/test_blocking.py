"""Blocking queries (`?index=N&wait=...`): an answer within 100 ms of a change, at the wait otherwise, at once
when the index moved; parked queries capped (429); the /v1/groups index follows any change."""

from __future__ import annotations

import asyncio
import time

import aiohttp

from registry.http.front import HttpLimits
from tests.http.conftest import GROUP, Front, close_front, make_front

#: The issue's bound is 100 ms. What makes it hold is checked exactly below (the change's own callback wakes
#: the parked query: no timer, no poll); the wall-clock bound only has the slack a loaded 2-core machine
#: needs (CI saw 193 ms with four suites at once); the time taken is printed.
LATE = 1.0


async def blocked(client: aiohttp.ClientSession, url: str) -> tuple[int, int, float]:
    """(status, X-Registry-Index, monotonic time the answer came)."""
    async with client.get(url) as r:
        await r.read()
        return r.status, int(r.headers["X-Registry-Index"]), time.monotonic()


async def parked(front: Front, n: int) -> None:
    deadline = time.monotonic() + 30
    while front.http.changes.parked < n:
        assert time.monotonic() < deadline, "the query never parked"
        await asyncio.sleep(0.001)


async def test_returns_within_100ms_of_a_change(front: Front, client: aiohttp.ClientSession) -> None:
    index = front.catalog.version(GROUP)
    for route in (f"/v1/members/{GROUP}", f"/v1/match/{GROUP}/k"):
        query = asyncio.ensure_future(blocked(client, f"{front.base}{route}?index={index}&wait=30s"))
        await parked(front, 1)
        changed_at = time.monotonic()
        assert front.http.changes.waiting(GROUP) == 1
        front.catalog.apply("late-joiner", {"group": GROUP, "addr": "10.9.9.9:1"})
        assert front.http.changes.waiting(GROUP) == 0  # woken inside apply, before this task yields
        status, new_index, answered_at = await query
        assert status == 200 and new_index == index + 1
        assert answered_at - changed_at < LATE, f"answered {answered_at - changed_at:.3f}s after the change"
        print(f"{route}: answered {1000 * (answered_at - changed_at):.1f} ms after the change")
        index = new_index
        front.catalog.apply("late-joiner", None)
        index += 1


async def test_returns_at_the_wait_with_the_same_index(front: Front, client: aiohttp.ClientSession) -> None:
    index = front.catalog.version(GROUP)
    start = time.monotonic()
    status, got, answered_at = await blocked(client, f"{front.base}/v1/members/{GROUP}?index={index}&wait=300ms")
    assert status == 200 and got == index
    assert answered_at - start >= 0.29
    assert front.http.changes.parked == 0


async def test_a_moved_index_answers_at_once(front: Front, client: aiohttp.ClientSession) -> None:
    index = front.catalog.version(GROUP)
    for stale in (index - 1, index + 100):  # older: changed since; newer: the registry restarted
        start = time.monotonic()
        status, got, answered_at = await blocked(client, f"{front.base}/v1/members/{GROUP}?index={stale}&wait=1m")
        assert (status, got) == (200, index)
        assert answered_at - start < 5  # at once (generous for a loaded machine; the wait is a minute)


async def test_groups_index_and_a_group_that_appears(front: Front, client: aiohttp.ClientSession) -> None:
    _, index, _ = await blocked(client, f"{front.base}/v1/groups")
    groups = asyncio.ensure_future(blocked(client, f"{front.base}/v1/groups?index={index}&wait=30s"))
    # a group that does not exist yet: 404 with index 0, and a query blocked on it answers when it appears
    status, zero, _ = await blocked(client, f"{front.base}/v1/match/new-group/k")
    assert (status, zero) == (404, 0)
    appears = asyncio.ensure_future(blocked(client, f"{front.base}/v1/match/new-group/k?index=0&wait=30s"))
    await parked(front, 2)
    front.catalog.apply("first", {"group": "new-group", "addr": "10.2.0.1:1"})
    assert (await appears)[:2] == (200, 1)
    status, after, _ = await groups
    assert status == 200 and after > index


async def test_parked_queries_are_capped(client: aiohttp.ClientSession) -> None:
    front = await make_front(HttpLimits(max_parked=2))
    try:
        index = front.catalog.version(GROUP)
        url = f"{front.base}/v1/members/{GROUP}?index={index}&wait=30s"
        two = [asyncio.ensure_future(blocked(client, url)) for _ in range(2)]
        await parked(front, 2)
        async with client.get(url) as r:
            assert r.status == 429
            body = await r.json()
        assert body["code"] == "RESOURCE_EXHAUSTED" and "at most 2" in body["error"]
        assert front.http.changes.parked_refused == 1
        front.catalog.apply("wake", {"group": GROUP, "addr": "10.3.0.1:1"})
        assert [s for s, _, _ in await asyncio.gather(*two)] == [200, 200]
    finally:
        await close_front(front)


async def test_stop_answers_parked_queries(client: aiohttp.ClientSession) -> None:
    front = await make_front()
    index = front.catalog.version(GROUP)
    query = asyncio.ensure_future(blocked(client, f"{front.base}/v1/members/{GROUP}?index={index}&wait=10m"))
    await parked(front, 1)
    start = time.monotonic()
    await close_front(front)
    status, _, answered_at = await query
    assert status == 200 and answered_at - start < 5
