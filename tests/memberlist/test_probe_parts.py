"""Prober alone, on a membership table and an outbox: the probe schedule, indirect probes,
suspicion, acks and the health score (probe.py)."""

from __future__ import annotations

from registry.memberlist.messages import Ack, IndirectPing, Nack, Ping
from registry.memberlist.types import NodeState, ip_to_bytes
from tests.memberlist.parts import Parts, alive, make_parts, peer_addr


def _probed(p: Parts, now: float) -> Ping:
    """Probe once at `now`; the ping that went out."""
    p.clock.now = now
    p.prober.tick(now)
    pings = [m for _, msgs in p.sent() for m in msgs if isinstance(m, Ping)]
    assert len(pings) == 1
    return pings[0]


def test_an_unanswered_probe_goes_indirect_then_suspects() -> None:
    p = make_parts(disable_tcp_pings=True)
    p.members.on_alive(alive("n1"))
    p.members.on_alive(alive("n2"))
    ping = _probed(p, 1.0)
    target = ping.node
    helper = "n2" if target == "n1" else "n1"
    p.run(1.0 + p.config.probe_timeout)
    ((to, msgs),) = p.sent()
    req = msgs[0]
    assert to == p.members.nodes[helper].address and isinstance(req, IndirectPing) and req.node == target
    assert req.nack  # the helper speaks protocol 4+: it will nack if the target is silent
    p.prober.on_nack(Nack(req.seq_no))
    p.run(1.0 + p.config.probe_interval)
    assert p.members.nodes[target].state == NodeState.SUSPECT
    assert p.stats["probe.failed"] == 1 and p.awareness.score == 0  # the nack came: we are fine


def test_an_ack_ends_the_probe_and_lowers_the_score() -> None:
    p = make_parts()
    p.members.on_alive(alive("n1"))
    p.awareness.apply_delta(2)
    ping = _probed(p, 1.0)
    p.clock.now = 1.004
    p.prober.on_ack(Ack(ping.seq_no, b"coord"))
    assert p.stats["probe.ok"] == 1 and p.awareness.score == 1 and not p.prober.probes
    p.run(1.0 + 3 * p.config.probe_interval)  # to its deadline (score 2: 3 intervals)
    # its timers were cancelled: no indirect probe, no suspicion
    assert p.stats["probe.indirect"] == 0 and p.stats["probe.failed"] == 0
    assert p.members.nodes["n1"].state == NodeState.ALIVE
    p.prober.on_ack(Ack(ping.seq_no, None))
    assert p.stats["drop.unknown_ack"] == 1


def test_we_answer_pings_and_relay_indirect_ones() -> None:
    p = make_parts()
    p.members.on_alive(alive("n1"))
    p.members.on_alive(alive("n2"))
    p.sent()
    p.prober.on_ping(Ping(5, "me", ip_to_bytes("10.0.1.1"), 7946, "n1"), peer_addr(1))
    ((to, msgs),) = p.sent()
    assert to == peer_addr(1) and msgs[0] == Ack(5, None)
    p.prober.on_indirect_ping(
        IndirectPing(9, ip_to_bytes("10.0.1.2"), 7946, "n2", True, ip_to_bytes("10.0.1.1"), 7946, "n1"),
        peer_addr(1),
    )
    ((to, msgs),) = p.sent()
    relayed = msgs[0]
    assert to == peer_addr(2) and isinstance(relayed, Ping) and relayed.source_node == "me"
    p.prober.on_ack(Ack(relayed.seq_no, None))  # n2 answered us: the ack goes back to n1
    ((to, msgs),) = p.sent()
    assert to == peer_addr(1) and msgs[0] == Ack(9, None)
    assert not p.prober.relays
