"""Membership alone: the table and its alive/suspect/dead/refute rules (membership.py),
driven without the rest of the core."""

from __future__ import annotations

from registry.memberlist.codec import decode
from registry.memberlist.messages import Alive, Dead, Suspect
from registry.memberlist.types import Address, NodeState
from tests.memberlist.parts import alive, make_parts, queued


def test_alive_adds_a_member_and_news_of_it_is_queued() -> None:
    p = make_parts()
    m = p.members
    assert m.n_members == 1 and p.events.joins == ["me"]
    queued(p)
    m.on_alive(alive("n1", 3))
    assert m.nodes["n1"].state == NodeState.ALIVE and m.nodes["n1"].incarnation == 3
    assert m.n_members == 2 and p.events.joins == ["me", "n1"] and "n1" in m.order
    (news,) = queued(p)
    assert decode(news) == alive("n1", 3)
    m.on_alive(alive("n1", 2))  # older: ignored, nothing queued
    m.on_alive(alive("n1", 3))  # same: ignored
    assert queued(p) == [] and m.nodes["n1"].incarnation == 3
    m.on_alive(alive("n1", 4, meta=b"x"))
    assert p.events.updates == ["n1"] and m.nodes["n1"].meta == b"x"


def test_suspicion_times_out_to_dead_and_flags_death_news() -> None:
    p = make_parts()
    m = p.members
    m.on_alive(alive("n1"))
    m.on_suspect(Suspect(1, "n1", "n2"))
    assert m.nodes["n1"].state == NodeState.SUSPECT and "n1" in m.suspicions
    assert m.n_members == 2 and not m.death_news  # a suspect is still a member
    deadline = m.suspicions["n1"][0].deadline
    p.run(deadline - 0.001)
    assert m.nodes["n1"].state == NodeState.SUSPECT
    p.run(deadline)
    assert m.nodes["n1"].state is not NodeState.SUSPECT
    assert m.nodes["n1"].state == NodeState.DEAD and m.n_members == 1
    assert m.death_news and p.events.leaves == [("n1", NodeState.DEAD)]
    assert p.stats["suspicion.timeout"] == 1 and "n1" not in m.suspicions


def test_an_alive_refutes_a_suspicion() -> None:
    p = make_parts()
    m = p.members
    m.on_alive(alive("n1"))
    m.on_suspect(Suspect(1, "n1", "n2"))
    m.on_alive(alive("n1", 2))
    assert m.nodes["n1"].state == NodeState.ALIVE and not m.suspicions
    p.run(60.0)
    assert m.nodes["n1"].state == NodeState.ALIVE  # the cancelled timer did not fire


def test_accused_we_refute_and_our_health_score_rises() -> None:
    p = make_parts()
    m = p.members
    queued(p)
    m.on_suspect(Suspect(1, "me", "n2"))
    assert m.nodes["me"].state == NodeState.ALIVE and m.incarnation == 2 and p.awareness.score == 1
    (news,) = queued(p)
    refutation = decode(news)
    assert isinstance(refutation, Alive) and refutation.node == "me" and refutation.incarnation == 2
    m.on_dead(Dead(7, "me", "n2"))  # a dead at a later incarnation: refuted past it
    assert m.incarnation == 8 and m.nodes["me"].state == NodeState.ALIVE and p.stats["refute"] == 2


def test_an_accusation_never_raises_the_incarnation_we_record() -> None:
    p = make_parts()
    m = p.members
    m.on_alive(alive("n1", 5))
    m.on_dead(Dead(900, "n1", "n2"))
    assert m.nodes["n1"].state == NodeState.DEAD and m.nodes["n1"].incarnation == 5
    assert p.stats["incarnation.clamped"] == 1


def test_a_name_claimed_from_another_address_is_a_conflict() -> None:
    p = make_parts()
    m = p.members
    m.on_alive(alive("n1"))
    m.on_alive(alive("n1", 2, addr=Address("10.0.9.9", 7946)))
    assert m.nodes["n1"].addr == "10.0.1.1" and p.stats["drop.name_conflict"] == 1
    ((existing, other),) = p.events.conflicts
    assert existing.addr == "10.0.1.1" and other.addr == "10.0.9.9"


def test_probe_order_skips_us_and_the_dead_and_reaps_them_on_wrap() -> None:
    p = make_parts()
    m = p.members
    for name in ("n1", "n2", "n3"):
        m.on_alive(alive(name))
    m.on_dead(Dead(1, "n2", "n1"))
    seen = [node.name for _ in range(6) if (node := m.next_to_probe(0.0)) is not None]
    # a round that meets too many skips probes nobody, as Go's probe() does (numCheck)
    assert set(seen) == {"n1", "n3"} and len(seen) >= 4
    horizon = p.config.gossip_to_the_dead_time
    for _ in range(4):  # at least one wrap after the horizon
        m.next_to_probe(horizon + 1.0)
    assert "n2" not in m.nodes and "n2" not in m.order and p.stats["nodes.reaped"] == 1


def test_leaving_alone_is_done_at_once_and_with_peers_once_sent() -> None:
    p = make_parts()
    p.members.leave()
    assert p.members.leave_sent and p.members.nodes["me"].state == NodeState.LEFT
    p = make_parts()
    m = p.members
    m.on_alive(alive("n1"))
    queued(p)
    m.leave()
    takes = 0
    while not m.leave_sent and p.queue.get_broadcasts(0, 1 << 20, 2):  # one transmit per take
        takes += 1
    assert m.leave_sent and takes == p.config.retransmit_mult  # done at the retransmit limit
