"""SerfAgent (asyncio, real loopback sockets) between Python nodes: events API, queries, leave."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from registry.memberlist.config import Config
from registry.serf.agent import SerfAgent
from registry.serf.config import SerfConfig
from registry.serf.events import EventType, MemberEvent, QueryEvent, UserEvent
from registry.serf.member import MemberStatus
from registry.serf.tags import TagsTooLarge

pytestmark = pytest.mark.timeout(60)


async def make(name: str, **kw: Any) -> SerfAgent:
    cfg = SerfConfig(
        name=name,
        tags={"role": name},
        memberlist=Config.fast(bind_addr="127.0.0.1", bind_port=0),
        **kw,
    )
    a = SerfAgent(cfg)
    await a.start()
    return a


@pytest.fixture
async def pair() -> AsyncIterator[tuple[SerfAgent, SerfAgent]]:
    a = await make("a")
    b = await make("b")
    await b.join([str(a.address)])
    assert await a.wait_for(lambda: a.status_of("b") == MemberStatus.ALIVE, 20)
    yield a, b
    await a.shutdown()
    await b.shutdown()


async def test_event_iterator_and_callbacks_in_order(
    pair: tuple[SerfAgent, SerfAgent],
) -> None:
    a, b = pair
    stream = a.events()
    seen: list[str] = []
    a.add_handler(lambda e: seen.append(e.name) if isinstance(e, UserEvent) else None)
    for i in range(5):
        await b.user_event(f"e{i}", str(i).encode(), coalesce=False)
    got: list[UserEvent] = []

    async def collect() -> None:
        async for ev in stream:
            if isinstance(ev, UserEvent):
                got.append(ev)
                if len(got) == 5:
                    return

    await asyncio.wait_for(collect(), 20)
    assert sorted(e.name for e in got) == [f"e{i}" for i in range(5)]
    assert sorted(seen) == [f"e{i}" for i in range(5)]
    stream.close()


async def test_slow_consumer_drops_oldest_and_counts(
    pair: tuple[SerfAgent, SerfAgent],
) -> None:
    a, b = pair
    stream = a.events(size=3)
    for i in range(10):
        await b.user_event(f"x{i}", b"", coalesce=False)
    assert await a.wait_for(lambda: stream.dropped >= 7, 20)
    names = []
    while stream._buf:
        names.append(await stream.__anext__())
    assert len(names) == 3
    assert a.stats["events.dropped"] >= 7
    # gossip kept flowing meanwhile
    assert a.status_of("b") == MemberStatus.ALIVE


async def test_query_streams_responses(pair: tuple[SerfAgent, SerfAgent]) -> None:
    a, b = pair

    async def answer(e: object) -> None:
        if isinstance(e, QueryEvent) and e.name == "sum":
            await asyncio.sleep(0.05)
            e.respond(str(sum(e.payload)).encode())

    a.add_handler(answer)
    b.add_handler(answer)
    stream = b.query("sum", bytes([1, 2, 3]), request_ack=True, timeout=2.0)
    got = {item.from_: item.payload async for item in stream}
    assert got == {"a": b"6", "b": b"6"}
    assert sorted(stream.acks) == ["a", "b"]


async def test_tags_limit_and_update_event(pair: tuple[SerfAgent, SerfAgent]) -> None:
    a, b = pair
    with pytest.raises(TagsTooLarge, match="bytes"):
        await b.set_tags({"k": "v" * 600})
    updates: list[MemberEvent] = []
    a.add_handler(
        lambda e: (
            updates.append(e)
            if isinstance(e, MemberEvent) and e.type == EventType.MEMBER_UPDATE
            else None
        )
    )
    await b.set_tags({"role": "b", "v": "2"})
    assert await a.wait_for(lambda: bool(updates), 20)
    assert updates[-1].members[0].tags == {"role": "b", "v": "2"}


async def test_graceful_leave_between_python_nodes(
    pair: tuple[SerfAgent, SerfAgent],
) -> None:
    a, b = pair
    assert await b.leave(10.0)
    assert await a.wait_for(lambda: a.status_of("b") == MemberStatus.LEFT, 20)


async def test_name_conflict_newcomer_shuts_down(
    pair: tuple[SerfAgent, SerfAgent],
) -> None:
    a, b = pair
    imp = await make("a")  # same name as the running node `a`, another port
    try:
        await imp.join([str(b.address)])
        assert await b.wait_for(lambda: imp.is_shutdown, 20) or imp.is_shutdown
        assert imp.core.conflict_lost and not a.core.conflict_lost
        assert b.status_of("a") == MemberStatus.ALIVE
        held = b.core.member("a")
        assert (
            held is not None and a.address is not None and held.port == a.address.port
        )
    finally:
        await imp.shutdown()
