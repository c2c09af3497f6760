"""Exceptions inside message handlers (issue 13, item 5): logged once per kind with their
traceback on a running node, raised in strict mode, and never hidden by a simulation.

Before issue 13 a handler exception only became the counter "drop.handler_error": no log
line, nothing raised, and a simulated cluster whose handlers all failed still passed.
"""

from __future__ import annotations

import logging
import random
import socket
from collections.abc import AsyncIterator

import pytest

from registry.memberlist.codec import WireCodec, encode, encode_user_stream
from registry.memberlist.config import Config
from registry.memberlist.core import Memberlist
from registry.memberlist.messages import Alive, UserMsg
from registry.memberlist.node import MemberlistNode
from registry.memberlist.simnet import HandlerErrorCounted, SimNetwork
from registry.memberlist.types import DEFAULT_VSN, Address, ip_to_bytes
from tests.memberlist.memberlist_sim import Recorder, make_cluster
from tests.waiting import aeventually

LOOP4 = "127.0.0.1"
SRC = Address("10.9.9.9", 7946)


class Buggy(Recorder):
    """A delegate with a bug in its message hook (what a handler bug looks like to memberlist)."""

    def notify_msg(self, msg: bytes) -> None:
        raise KeyError(msg[:1])


@pytest.fixture
async def buggy_node() -> AsyncIterator[MemberlistNode]:
    node = await MemberlistNode.create(Config.fast(name="buggy", bind_addr=LOOP4, bind_port=0), Buggy())
    yield node
    await node.shutdown()


def handler_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "drop.handler_error" in r.getMessage()]


@pytest.mark.handler_errors("KeyError")  # injected on purpose
async def test_a_flood_of_one_handler_bug_logs_once_with_its_traceback(
    buggy_node: MemberlistNode, caplog: pytest.LogCaptureFixture
) -> None:
    """A running node (asyncio driver, real UDP) keeps going, counts every failure and logs the
    first of each kind with its traceback."""
    caplog.set_level(logging.ERROR, logger="registry.memberlist")
    packet = WireCodec().encode_packet(encode(UserMsg(b"\x07boom")))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _ in range(20):
            s.sendto(packet, (LOOP4, buggy_node.address.port))
        await aeventually(lambda: buggy_node.stats["drop.handler_error"] >= 20, 10, "20 handler errors counted")
    records = handler_records(caplog)
    assert len(records) == 1, [r.getMessage() for r in records]
    (rec,) = records
    assert "UserMsg" in rec.getMessage() and "KeyError" in rec.getMessage()
    assert rec.exc_info is not None and rec.exc_info[0] is KeyError  # the traceback, to find the bug
    assert buggy_node.core.handler_errors == 20
    assert not any(k.startswith("runner.exception") for k in buggy_node.stats)  # the node carried on


@pytest.mark.handler_errors("KeyError")  # injected on purpose
def test_another_kind_of_failure_gets_its_own_line(caplog: pytest.LogCaptureFixture) -> None:
    """Same exception type, other message type: a second line; repeats of either: none."""
    caplog.set_level(logging.ERROR, logger="registry.memberlist")
    m = Memberlist(Config.fast(name="me"), Address("10.0.0.1", 7946), Buggy(), rng=random.Random(1))
    codec = WireCodec()
    for _ in range(3):
        m.receive_packet(codec.encode_packet(encode(UserMsg(b"x"))), SRC, 0.0)
        m.receive_stream(codec.encode_stream(encode_user_stream(b"x"), dialer=True), SRC, 0.0)
    assert m.handler_errors == 6
    messages = [r.getMessage() for r in handler_records(caplog)]
    assert len(messages) == 2 and "stream UserMsg" in messages[1], messages


def test_strict_mode_raises_the_handler_exception() -> None:
    m = Memberlist(Config.fast(name="me", strict=True), Address("10.0.0.1", 7946), Buggy(), rng=random.Random(1))
    codec = WireCodec()
    with pytest.raises(KeyError):
        m.receive_packet(codec.encode_packet(encode(UserMsg(b"x"))), SRC, 0.0)
    with pytest.raises(KeyError):
        m.receive_stream(codec.encode_stream(encode_user_stream(b"x"), dialer=True), SRC, 0.0)
    # garbage is not a handler bug: still dropped and counted under its reason in strict mode
    m.receive_packet(b"\xfe\x00", SRC, 0.0)
    assert m.stats["drop.unknown_type"] == 1, dict(m.stats)


def test_a_simulation_raises_a_handler_bug() -> None:
    """SimNetwork makes its machines strict: the bug surfaces in the test, not as a counter."""
    c = make_cluster(2, Config.fast(), seed=3)
    c.nodes[1].delegate = Buggy()
    c.nodes[0].send_best_effort(c.addrs[1], b"\x01hello", c.net.now)
    c.net.kick(c.addrs[0])
    with pytest.raises(KeyError):
        c.net.run_for(1.0)


@pytest.mark.handler_errors("KeyError")  # injected on purpose
def test_a_simulation_fails_on_a_counted_handler_error() -> None:
    """A machine that only counted a handler error (not strict) fails the run at its end."""
    c = make_cluster(2, Config.fast(), seed=3)
    c.nodes[1].delegate = Buggy()
    c.nodes[1].strict = False
    c.nodes[0].send_best_effort(c.addrs[1], b"\x01hello", c.net.now)
    c.net.kick(c.addrs[0])
    with pytest.raises(HandlerErrorCounted, match=r"drop\.handler_error"):
        c.net.run_for(1.0)
    assert SimNetwork(strict=False).strict is False  # a driver may opt out, for fault injection


class BrokenBroadcasts(Recorder):
    """A delegate whose broadcast hook has a bug: every gossip round (a timer) raises."""

    def get_broadcasts(self, overhead: int, limit: int) -> list[bytes]:
        raise RuntimeError("broadcast bug")


def _with_a_peer(strict: bool) -> Memberlist:
    cfg = Config.fast(name="me", strict=strict, probe_interval=0, push_pull_interval=0)  # gossip timer only
    m = Memberlist(cfg, Address("10.0.0.1", 7946), BrokenBroadcasts(), rng=random.Random(1))
    m.receive_packet(encode(Alive(1, "peer", ip_to_bytes("10.0.0.2"), 7946, b"", DEFAULT_VSN)), SRC, 0.0)
    assert m.get("peer") is not None
    return m


@pytest.mark.handler_errors("RuntimeError")  # injected on purpose
def test_a_failing_timer_logs_once_and_keeps_running(caplog: pytest.LogCaptureFixture) -> None:
    """Before issue 13 every failing gossip tick logged its traceback (5 a second here)."""
    caplog.set_level(logging.ERROR, logger="registry.memberlist")
    m = _with_a_peer(strict=False)
    for i in range(1, 51):
        m.tick(i * m.config.gossip_interval)
    assert m.stats["timer.errors"] >= 40  # the timer kept being rescheduled
    records = [r for r in caplog.records if "memberlist timer" in r.getMessage()]
    assert len(records) == 1 and records[0].exc_info is not None, [r.getMessage() for r in caplog.records]


def test_strict_mode_raises_a_timer_failure() -> None:
    m = _with_a_peer(strict=True)
    with pytest.raises(RuntimeError, match="broadcast bug"):
        for i in range(1, 51):
            m.tick(i * m.config.gossip_interval)
