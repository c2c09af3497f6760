"""Serf app messages (registry/serf/app.py): registry-to-registry messages over memberlist's reliable
user messages, between real SerfAgents on loopback, plain and encrypted, beside a Go `serf agent`."""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest

from registry.memberlist.config import Config
from registry.memberlist.types import Address
from registry.serf.agent import SerfAgent
from registry.serf.app import APP_TYPE
from registry.serf.config import SerfConfig
from registry.serf.member import MemberStatus
from tests.serf.serf_live import py_node, wait
from tests.serfagent import SerfAgent as GoAgent

pytestmark = pytest.mark.timeout(60)

KEY = base64.b64encode(bytes(range(32))).decode()
#: memberlist's default bound on a user message's body (Config.max_stream_user_msg_size)
LIMIT = 1024 * 1024
#: what a Go serf agent logs for a Serf message type it does not know
UNKNOWN = "serf: Received message of unknown type"


class Inbox:
    """An app handler that keeps what it was given."""

    def __init__(self) -> None:
        self.got: list[bytes] = []

    def __call__(self, payload: bytes) -> None:
        self.got.append(payload)


async def _agent(name: str, key: str | None, **ml: Any) -> SerfAgent:
    cfg = SerfConfig(name=name, tags={"repl": "1"}, encrypt_key=key,
                     memberlist=Config.fast(bind_addr="127.0.0.1", bind_port=0, **ml))
    agent = SerfAgent(cfg)
    await agent.start()
    return agent


async def _pair(key: str | None) -> tuple[SerfAgent, SerfAgent]:
    a = await _agent("a", key)
    b = await _agent("b", key)
    await b.join([str(a.address)])
    assert await wait(lambda: a.status_of("b") == MemberStatus.ALIVE and b.status_of("a") == MemberStatus.ALIVE, 20)
    return a, b


@pytest.fixture(params=[None, KEY], ids=["plain", "encrypted"])
async def pair(request: pytest.FixtureRequest) -> AsyncIterator[tuple[SerfAgent, SerfAgent]]:
    a, b = await _pair(request.param)
    if request.param is not None:
        assert a.core.encryption_enabled() and b.core.encryption_enabled()
    yield a, b
    bugs = {n.name: n.core.handler_errors for n in (a, b)}
    await a.shutdown()
    await b.shutdown()
    assert not any(bugs.values()), f"drop.handler_error counted: {bugs}"


async def test_both_ways_and_a_900_kib_payload_whole(pair: tuple[SerfAgent, SerfAgent]) -> None:
    a, b = pair
    in_a, in_b = Inbox(), Inbox()
    a.set_app_handler(in_a)
    b.set_app_handler(in_b)
    big = os.urandom(900 * 1024)  # random: compression cannot shrink it below the bound's reach
    assert a.send_app("b", b"hello b")
    assert b.send_app("a", b"hello a")
    assert a.send_app("b", big)
    assert await wait(lambda: len(in_b.got) == 2 and len(in_a.got) == 1, 20)
    assert sorted(in_b.got, key=len) == [b"hello b", big]
    assert in_a.got == [b"hello a"]
    assert b.stats["app.received"] == 2 and a.stats["app.sent"] == 2


async def test_a_handler_may_send_from_inside(pair: tuple[SerfAgent, SerfAgent]) -> None:
    """The handler runs inside the message's handling (the replication answers a digest there): a send
    from it goes out like any other."""
    a, b = pair
    in_a = Inbox()
    a.set_app_handler(in_a)
    sent: list[bool] = []
    b.set_app_handler(lambda payload: sent.append(b.send_app("a", b"re: " + payload)))
    for i in range(3):
        assert a.send_app("b", b"%d" % i)
    assert await wait(lambda: sorted(in_a.got) == [b"re: 0", b"re: 1", b"re: 2"], 20), in_a.got
    assert sent == [True, True, True]


async def test_over_the_limit_is_refused_on_receive(pair: tuple[SerfAgent, SerfAgent]) -> None:
    """A body over max_stream_user_msg_size is dropped by the receiver (plain: at the stream's header;
    compressed or encrypted: once opened), and the channel still works after it."""
    a, b = pair
    in_b = Inbox()
    b.set_app_handler(in_b)
    assert a.send_app("b", os.urandom(LIMIT))  # + the type byte: one byte over
    assert await wait(lambda: b.stats["drop.too_large"] == 1, 20), b.stats
    assert a.send_app("b", b"after")
    assert await wait(lambda: in_b.got == [b"after"], 20)


async def test_a_datagram_app_message_is_delivered_too(pair: tuple[SerfAgent, SerfAgent]) -> None:
    a, b = pair
    in_b = Inbox()
    b.set_app_handler(in_b)
    assert b.address is not None
    a.core.memberlist.send_best_effort(Address(b.address.host, b.address.port), bytes([APP_TYPE]) + b"udp", a.runner.now())
    a.runner.kick()
    assert await wait(lambda: in_b.got == [b"udp"], 20)


async def test_no_alive_member_of_that_name(pair: tuple[SerfAgent, SerfAgent]) -> None:
    a, b = pair
    assert not a.send_app("nobody", b"x")
    await b.shutdown()  # no leave: a sees it fail
    assert await wait(lambda: a.status_of("b") == MemberStatus.FAILED, 20)
    assert not a.send_app("b", b"x")
    assert a.stats["app.send.no_member"] == 2


async def test_without_a_handler_they_are_counted_and_dropped(pair: tuple[SerfAgent, SerfAgent]) -> None:
    a, b = pair
    assert a.send_app("b", b"x")
    assert await wait(lambda: b.stats["serf.drop.app_no_handler"] == 1, 20)


class AppHandlerBug(Exception):
    pass


@pytest.mark.handler_errors("AppHandlerBug")  # injected on purpose
async def test_a_handler_that_raises_is_counted_and_the_node_goes_on() -> None:
    a, b = await _pair(None)
    try:
        got: list[bytes] = []

        def handler(payload: bytes) -> None:
            if payload == b"bug":
                raise AppHandlerBug("bug")
            got.append(payload)

        b.set_app_handler(handler)
        assert a.send_app("b", b"bug")
        assert await wait(lambda: b.core.handler_errors == 1, 20)
        assert a.send_app("b", b"fine")
        assert await wait(lambda: got == [b"fine"], 20)
        assert b.core.handler_errors == 1
        assert b.status_of("a") == MemberStatus.ALIVE
    finally:
        await a.shutdown()
        await b.shutdown()


@pytest.mark.serf
async def test_a_go_serf_agent_in_the_pool_gets_nothing(serf_agent: Any, nodes: list[SerfAgent]) -> None:
    """Python nodes exchange app messages with a Go agent in the pool: it logs nothing of them and sees
    everyone alive. Then one is sent to it on purpose, to show its log would tell (unknown type)."""
    go: GoAgent = serf_agent(name="go1")
    py1 = await py_node(nodes, "py1", {"repl": "1"})
    py2 = await py_node(nodes, "py2", {"repl": "1"})
    in1, in2 = Inbox(), Inbox()
    py1.set_app_handler(in1)
    py2.set_app_handler(in2)
    await py1.join([go.bind])
    await py2.join([go.bind])
    assert await wait(lambda: all(p.status_of(n) == MemberStatus.ALIVE
                                  for p in (py1, py2) for n in ("py1", "py2", "go1")), 20)
    for i in range(20):
        repl = [m.name for m in py1.members() if m.tags.get("repl") == "1" and m.name != py1.name]
        assert repl == ["py2"]
        assert py1.send_app("py2", b"%d" % i)
        assert py2.send_app("py1", b"%d" % i)
    assert await wait(lambda: len(in1.got) == len(in2.got) == 20, 20)
    members = {m["name"]: m["status"] for m in await go.amembers()}
    assert members == {"go1": "alive", "py1": "alive", "py2": "alive"}
    assert UNKNOWN not in go.log_text()
    # the check above can fail: a message sent to the Go node is logged there
    assert py1.send_app("go1", b"not for go")
    assert await wait(lambda: UNKNOWN + ": 240" in go.log_text(), 20), go.log_text()
