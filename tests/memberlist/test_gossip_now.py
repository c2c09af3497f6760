"""`Memberlist.gossip_now`: news that must not wait for the next gossip tick (a leave, a join).

On the virtual clock with a gossip interval far longer than the windows checked, so only an
immediate gossip round can explain a peer knowing within them."""

from __future__ import annotations

from registry.memberlist.config import Config
from registry.memberlist.types import NodeState
from tests.memberlist.memberlist_sim import make_cluster

SLOW_GOSSIP = Config.lan(gossip_interval=5.0)


def _state(c: object, viewer: int, name: str) -> NodeState | None:
    node = c.nodes[viewer].get(name)  # type: ignore[attr-defined]
    return None if node is None else node.state


def test_leave_reaches_every_peer_within_milliseconds() -> None:
    c = make_cluster(4, SLOW_GOSSIP, seed=3)
    names = {f"n{i}" for i in range(4)}
    assert c.net.run_until_true(lambda: c.alive_views(names), timeout=120)
    c.net.run_for(1.0)
    c.nodes[3].leave(c.net.now)
    c.net.kick()
    c.net.run_for(0.02)  # 1 ms one-way delay; the next gossip tick is up to 5 s away
    assert [_state(c, i, "n3") for i in range(3)] == [NodeState.LEFT] * 3
    assert c.nodes[3].stats["gossip.immediate"] == 1


def test_seed_passes_a_join_on_at_once() -> None:
    c = make_cluster(3, SLOW_GOSSIP, seed=5)
    names = {f"n{i}" for i in range(3)}
    assert c.net.run_until_true(lambda: c.alive_views(names), timeout=120)
    c.net.run_for(1.0)
    new = c.add(SLOW_GOSSIP, 3, seed=5)
    new.join([c.addrs[0]], c.net.now)
    c.net.kick(c.addrs[3])
    c.net.run_for(0.02)  # push/pull there and back, then the seed's immediate round
    assert [_state(c, i, "n3") for i in (1, 2)] == [NodeState.ALIVE] * 2


def test_gossip_now_spends_the_retransmit_budget_not_more() -> None:
    c = make_cluster(3, Config.lan(), seed=7)
    names = {f"n{i}" for i in range(3)}
    assert c.net.run_until_true(lambda: c.alive_views(names), timeout=60)
    c.net.run_for(10.0)  # let every queue drain
    m = c.nodes[0]
    assert len(m.broadcasts) == 0
    m.update_meta(c.net.now, b"v2")  # one alive{n0} queued: 4 transmits with 3 nodes
    assert len(m.broadcasts) == 1
    # no time passes between the calls: each round gives it to the 2 peers, then it is spent
    assert m.gossip_now(c.net.now) == 2
    assert m.gossip_now(c.net.now) == 2
    assert len(m.broadcasts) == 0
    assert m.gossip_now(c.net.now) == 0
    c.net.kick()
    c.net.run_for(0.02)
    assert all(c.nodes[i].get("n0").meta == b"v2" for i in (1, 2))  # type: ignore[union-attr]


def test_gossip_now_after_shutdown_sends_nothing() -> None:
    c = make_cluster(2, Config.lan(), seed=9)
    assert c.net.run_until_true(lambda: c.alive_views({"n0", "n1"}), timeout=60)
    m = c.nodes[0]
    m.update_meta(c.net.now, b"x")
    m.shutdown()
    assert m.gossip_now(c.net.now) == 0 and m.drain() == []


def test_a_death_crosses_the_pool_in_network_hops() -> None:
    c = make_cluster(8, SLOW_GOSSIP, seed=11)
    names = {f"n{i}" for i in range(8)}
    assert c.net.run_until_true(lambda: c.alive_views(names), timeout=300)
    c.net.run_for(30.0)  # let every queue drain
    c.net.stop(c.addrs[7])
    live = range(7)
    assert c.net.run_until_true(lambda: any(_state(c, i, "n7") == NodeState.DEAD for i in live), 300, 0.001)
    first = [i for i in live if _state(c, i, "n7") == NodeState.DEAD]
    c.net.run_for(0.05)  # a few 1 ms hops; the next gossip tick is up to 5 s away
    assert [_state(c, i, "n7") for i in live] == [NodeState.DEAD] * 7, first
    assert all(c.nodes[i].stats["gossip.death_now"] >= 1 for i in first)
