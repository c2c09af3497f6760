"""ThreadedSerf (Serf machine on a background thread, no asyncio) with an asyncio SerfAgent on
real loopback sockets: join, member events, tags, leave, failure, join errors, clean stop."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

from registry.memberlist.config import Config
from registry.serf.agent import SerfAgent
from registry.serf.config import SerfConfig
from registry.serf.events import Event, EventType, MemberEvent
from registry.serf.member import MemberStatus
from registry.serf.threaded import SerfJoinError, ThreadedSerf
from tests.waiting import eventually

pytestmark = pytest.mark.timeout(60)


def config(name: str, **kw: Any) -> SerfConfig:
    return SerfConfig(name=name, tags={"role": name}, memberlist=Config.fast(bind_addr="127.0.0.1", bind_port=0), **kw)


@pytest.fixture
async def agent() -> AsyncIterator[SerfAgent]:
    a = SerfAgent(config("a"))
    await a.start()
    yield a
    await a.shutdown()


def status(t: ThreadedSerf, name: str) -> MemberStatus | None:
    return next((m.status for m in t.members() if m.name == name), None)


async def test_join_events_tags_and_leave(agent: SerfAgent) -> None:
    t = ThreadedSerf(config("t"))
    events: list[Event] = []
    t.add_handler(events.append)
    t.start()
    try:
        assert await asyncio.to_thread(t.join, [str(agent.address)], 10.0) == 1
        assert t.local_member().name == "t"
        assert await agent.wait_for(lambda: agent.status_of("t") == MemberStatus.ALIVE, 10)
        joined = lambda: any(  # noqa: E731
            isinstance(e, MemberEvent) and e.type == EventType.MEMBER_JOIN and any(m.name == "a" for m in e.members)
            for e in list(events)
        )
        await asyncio.to_thread(eventually, joined, 10, "member-join event for a")
        # tags gossip out from the thread
        await asyncio.to_thread(t.set_tags, {"role": "t", "zone": "z1"})
        assert await agent.wait_for(lambda: agent.core.member("t") is not None and agent.core.member("t").tags.get("zone") == "z1", 10)  # type: ignore[union-attr]
        with pytest.raises(ValueError):
            t.set_tags({"big": "x" * 600})
        # updates from the asyncio side reach the handler
        await agent.set_tags({"role": "a", "v": "2"})
        updated = lambda: any(  # noqa: E731
            isinstance(e, MemberEvent) and e.type == EventType.MEMBER_UPDATE for e in list(events)
        )
        await asyncio.to_thread(eventually, updated, 10, "member-update event")
        assert await asyncio.to_thread(t.leave, 10.0)
        assert await agent.wait_for(lambda: agent.status_of("t") == MemberStatus.LEFT, 10)
    finally:
        await asyncio.to_thread(t.shutdown)
    thread = t.runner.thread
    assert thread is not None and not thread.is_alive()
    assert t.is_shutdown


async def test_failure_of_either_side_is_detected(agent: SerfAgent) -> None:
    t = ThreadedSerf(config("t"))
    t.start()
    try:
        assert await asyncio.to_thread(t.join, [str(agent.address)], 10.0) == 1
        assert await agent.wait_for(lambda: agent.status_of("t") == MemberStatus.ALIVE, 10)
        b = SerfAgent(config("b"))
        await b.start()
        await b.join([str(agent.address)])
        await asyncio.to_thread(eventually, lambda: status(t, "b") == MemberStatus.ALIVE, 10, "t sees b")
        await b.shutdown()
        await asyncio.to_thread(eventually, lambda: status(t, "b") == MemberStatus.FAILED, 20, "t sees b failed")
    finally:
        await asyncio.to_thread(t.shutdown)
    assert await agent.wait_for(lambda: agent.status_of("t") == MemberStatus.FAILED, 20)


def test_join_errors_name_every_address() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"
    t = ThreadedSerf(config("t"))
    t.start()
    try:
        with pytest.raises(SerfJoinError) as err:
            t.join([dead, "bad:address:x"], 5.0)
        assert set(err.value.failures) == {dead, "bad:address:x"}
        assert "refused" in err.value.failures[dead].lower()
    finally:
        t.shutdown()
    with pytest.raises(SerfJoinError):
        t.join([dead], 1.0)  # after shutdown
    assert not t.leave(1.0)


async def test_failing_handler_is_counted_like_the_agents(agent: SerfAgent) -> None:
    """A handler that raises is counted (`handler.errors`, as SerfAgent counts it) and the
    handlers after it still get the event (before: ThreadedSerf only logged it, uncounted)."""
    t = ThreadedSerf(config("t"))
    seen: list[Event] = []

    def broken(ev: Event) -> None:
        raise RuntimeError("handler bug")

    t.add_handler(broken)
    t.add_handler(seen.append)
    t.start()
    try:
        assert await asyncio.to_thread(t.join, [str(agent.address)], 10.0) == 1
        await asyncio.to_thread(eventually, lambda: t.stats["handler.errors"] >= 1, 10, "handler error counted")
        assert seen, "the handler after the failing one got no event"
        assert t.stats["handler.errors"] == len(seen)
    finally:
        await asyncio.to_thread(t.shutdown)
