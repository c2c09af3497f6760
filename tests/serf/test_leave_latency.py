"""Serf leave and join news without waiting for gossip ticks; MEMBER_LEAVING; leave-before-intent.

Virtual clock; the gossip interval is made far longer than the windows checked, so only the
immediate rounds (`Memberlist.gossip_now`) explain a peer knowing within them."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from registry.memberlist.config import Config
from registry.memberlist.types import Node, NodeState
from registry.serf import messages as M
from registry.serf.events import EventType, MemberEvent
from registry.serf.member import MemberStatus
from tests.serf.serf_sim import addr, make_cluster

SLOW = Config.lan(gossip_interval=60.0)


def kinds(events: Sequence[object], name: str) -> list[EventType]:
    return [e.type for e in events if isinstance(e, MemberEvent) and e.members[0].name == name]


@pytest.mark.parametrize("leaving_events", [True, False])
def test_leave_intent_reaches_peers_at_once_then_leave(leaving_events: bool) -> None:
    c = make_cluster(4, memberlist=SLOW, leaving_events=leaving_events)
    c.net.run_for(1.0)
    c.pump_events()
    c.nodes[3].leave(c.net.now)
    c.net.kick(addr(3))
    c.net.run_for(0.02)
    c.pump_events()
    assert all(c.status(i, "s3") in (MemberStatus.LEAVING, MemberStatus.LEFT) for i in range(3))
    for i in range(3):
        got = kinds(c.events[i], "s3")
        assert (EventType.MEMBER_LEAVING in got) is leaving_events
    assert c.run_until(lambda: c.nodes[3].left and c.all_see("s3", MemberStatus.LEFT, [0, 1, 2]), 30.0)
    for i in range(3):
        got = [k for k in kinds(c.events[i], "s3") if k != EventType.MEMBER_JOIN]
        assert got == ([EventType.MEMBER_LEAVING] if leaving_events else []) + [EventType.MEMBER_LEAVE]


def test_memberlist_leave_still_waits_for_the_intent() -> None:
    # Go's order: memberlist's dead{me} only after the intent used its retransmits; the first
    # copies now go out at once, the rest at the (here slow) ticks.
    c = make_cluster(4, memberlist=SLOW)
    c.net.run_for(1.0)
    leaver = c.nodes[3]
    leaver.leave(c.net.now)
    c.net.kick(addr(3))  # sends what leave() put out; no time passes
    assert leaver.memberlist.get("s3").state == NodeState.ALIVE  # type: ignore[union-attr]
    assert c.run_until(lambda: leaver.memberlist.get("s3").state == NodeState.LEFT, 30.0)  # type: ignore[union-attr]


def test_joiner_intent_reaches_peers_at_once() -> None:
    c = make_cluster(3, memberlist=SLOW)
    c.net.run_for(1.0)
    new = c.add(3, memberlist=SLOW)
    new.join([addr(0)], c.net.now)
    c.net.kick(addr(3))
    c.net.run_for(0.02)
    assert c.all_see("s3", MemberStatus.ALIVE, [0, 1, 2])
    assert all(c.nodes[i].status_ltime("s3") for i in (1, 2))


def test_refuted_intent_brings_the_member_back_with_an_update() -> None:
    c = make_cluster(2, leaving_events=True)
    s0, s1 = c.nodes
    lt0 = s0.status_ltime("s1") or 0
    c.pump_events()
    seen = len(c.events[0])
    s0.notify_msg(M.encode(M.Leave(lt0 + 100, "s1")))  # s0 wrongly believes s1 leaves
    s0._broadcasts.queue(None, M.encode(M.Leave(lt0 + 100, "s1")))
    c.net.kick()
    assert c.run_until(lambda: c.status(0, "s1") == MemberStatus.ALIVE, 10.0)
    evs = [e for e in c.events[0][seen:] if isinstance(e, MemberEvent) and e.members[0].name == "s1"]
    assert [e.type for e in evs] == [EventType.MEMBER_LEAVING, EventType.MEMBER_UPDATE]
    assert [e.members[0].status for e in evs] == [MemberStatus.LEAVING, MemberStatus.ALIVE]
    assert s1.stats["intent.refuted"] > 0


def test_death_announced_by_the_leaver_itself_is_a_leave() -> None:
    c = make_cluster(1)
    s = c.nodes[0]
    for name in ("left", "died"):
        s.membership.notify_join(Node(name, "10.9.9.8", 7946))
        s.notify_msg(M.encode(M.Join(5, name)))
    s.drain_events()
    s.membership.notify_leave(Node("left", "10.9.9.8", 7946, state=NodeState.LEFT))  # dead{left, From=left}
    s.membership.notify_leave(Node("died", "10.9.9.8", 7946, state=NodeState.DEAD))
    assert [(e.type, e.members[0].name) for e in s.drain_events()] == [  # type: ignore[union-attr]
        (EventType.MEMBER_LEAVE, "left"),
        (EventType.MEMBER_FAILED, "died"),
    ]
    assert s.member("left").status == MemberStatus.LEFT  # type: ignore[union-attr]
    assert s.stats["leave.before_intent"] == 1
    s.notify_msg(M.encode(M.Leave(9, "left")))  # the intent, late: no news, no second event
    assert s.member("left").status == MemberStatus.LEFT and s.drain_events() == []  # type: ignore[union-attr]


@pytest.mark.parametrize("seed", range(6))
def test_graceful_leave_on_a_lossy_reordering_network_is_never_a_failure(seed: int) -> None:
    c = make_cluster(5, seed=seed)
    c.net.run_for(1.0)
    c.net.loss = 0.3
    c.net.jitter = 0.05
    c.nodes[4].leave(c.net.now)
    c.net.kick(addr(4))
    viewers = [0, 1, 2, 3]
    assert c.run_until(lambda: c.nodes[4].left, 30.0)
    c.net.stop(addr(4))
    assert c.run_until(lambda: all(c.status(v, "s4") in (MemberStatus.LEFT, MemberStatus.FAILED) for v in viewers), 60)
    for v in viewers:
        assert EventType.MEMBER_FAILED not in kinds(c.events[v], "s4"), f"s{v} saw s4 fail"


def test_fresh_leave_intents_are_relayed_at_once_across_a_larger_pool() -> None:
    # gossip_nodes=3 direct targets out of 15 peers: the rest learn from relays, which pass a
    # fresh intent on as it arrives (1 ms hops here) instead of at their next gossip tick
    c = make_cluster(16, memberlist=SLOW)
    c.net.run_for(1.0)
    c.nodes[15].leave(c.net.now)
    c.net.kick(addr(15))
    c.net.run_for(0.05)
    peers = list(range(15))
    assert all(c.status(i, "s15") in (MemberStatus.LEAVING, MemberStatus.LEFT) for i in peers)
    assert c.run_until(lambda: c.all_see("s15", MemberStatus.LEFT, peers), 60.0)
    assert not any(EventType.MEMBER_FAILED in kinds(c.events[i], "s15") for i in peers)
