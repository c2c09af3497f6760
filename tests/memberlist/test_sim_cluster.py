"""Cluster behaviour on the simulated network (virtual clock, no real sleeping)."""

from __future__ import annotations

import time

import pytest

from registry.memberlist.codec import encode
from registry.memberlist.config import Config, failure_detection_bound
from registry.memberlist.messages import Suspect
from registry.memberlist.types import NodeState
from tests.memberlist.memberlist_sim import make_cluster


def test_100_nodes_join_through_one_seed() -> None:
    t0 = time.process_time()
    c = make_cluster(100, Config.lan(), seed=7)
    names = {f"n{i}" for i in range(100)}
    assert c.net.run_until_true(lambda: c.alive_views(names), timeout=120, step=1.0)
    assert c.net.max_packet <= Config.lan().udp_buffer_size + 5  # + CRC header, as Go
    print(f"100-node LAN join converged at virtual t={c.net.now:.1f}s in {time.process_time() - t0:.1f}s CPU")


@pytest.mark.parametrize("profile,n", [("fast", 30), ("lan", 100)])
def test_stopped_node_declared_dead_within_bound(profile: str, n: int) -> None:
    cfg = Config.profile(profile)
    c = make_cluster(n, cfg, seed=3)
    names = {f"n{i}" for i in range(n)}
    assert c.net.run_until_true(lambda: c.alive_views(names), timeout=60, step=0.5)
    c.net.stop(c.addrs[5])
    t_stop = c.net.now
    bound = failure_detection_bound(cfg, n)
    others = [i for i in range(n) if i != 5]

    def all_dead() -> bool:
        for i in others:
            nd = c.nodes[i].get("n5")
            if nd is not None and nd.state not in (NodeState.DEAD,):
                return False
        return True

    assert c.net.run_until_true(all_dead, timeout=bound, step=0.05), f"not dead everywhere within {bound:.2f}s"
    took = c.net.now - t_stop
    print(f"n={n} {profile}: detected everywhere after {took:.2f}s (bound {bound:.2f}s)")
    assert all(("n5", NodeState.DEAD) in c.delegates[i].leaves for i in others)


@pytest.mark.parametrize("tcp_pings", [True, False])
def test_lossy_network_no_false_deaths(tcp_pings: bool) -> None:
    """10% loss on every datagram.  With TCP fallback pings the probes are rescued by TCP; without,
    some probes fail and suspicions must be refuted in time (Lifeguard) so no one is declared dead."""
    n = 20
    cfg = Config.lan(disable_tcp_pings=not tcp_pings)
    c = make_cluster(n, cfg, seed=11)
    names = {f"n{i}" for i in range(n)}
    assert c.net.run_until_true(lambda: c.alive_views(names), timeout=60)
    for d in c.delegates:
        d.leaves.clear()
    c.net.loss = 0.10
    c.net.run_for(600.0)  # 10 virtual minutes at LAN timing: ~600 probes per node
    suspicions = sum(m.stats["probe.failed"] for m in c.nodes)
    refutes = sum(m.stats["refute"] for m in c.nodes)
    rescued = sum(m.stats["probe.tcp_fallback_ok"] for m in c.nodes)
    print(
        f"10% loss, 10 min, tcp={tcp_pings}: {suspicions} failed probes, {refutes} refutations, {rescued} TCP rescues"
    )
    if tcp_pings:
        assert rescued > 0
    else:
        assert suspicions > 0 and refutes > 0  # the failure path was really exercised
    assert [d.leaves for d in c.delegates] == [[] for _ in range(n)]
    c.net.loss = 0.0
    assert c.net.run_until_true(lambda: c.alive_views(names), timeout=30)


def test_false_suspicion_is_refuted() -> None:
    n = 8
    c = make_cluster(n, Config.fast(), seed=5)
    names = {f"n{i}" for i in range(n)}
    assert c.net.run_until_true(lambda: c.alive_views(names), timeout=30)
    victim = c.nodes[3]
    inc = victim.incarnation
    # n1 accuses n3 by gossip: inject the suspect as if received from the network
    c.nodes[1].receive_packet(c.nodes[1].codec.encode_packet(encode(Suspect(inc, "n3", "n2"))), c.addrs[2], c.net.now)
    c.net.kick()
    assert c.nodes[1].get("n3").state == NodeState.SUSPECT  # type: ignore[union-attr]

    def refuted() -> bool:
        return all(
            (nd := m.get("n3")) is not None and nd.state == NodeState.ALIVE and nd.incarnation > inc for m in c.nodes
        )

    assert c.net.run_until_true(refuted, timeout=10, step=0.05)
    assert victim.incarnation > inc
    assert all(d.leaves == [] for d in c.delegates)


def test_partition_heals_within_two_push_pull_rounds() -> None:
    """A 40/60 split: each side declares the other dead.  memberlist alone never dials dead
    nodes again, so (as Serf's reconnector does) one node re-joins one address of the other
    side once the partition is lifted; the views must then merge within two push/pull rounds."""
    n = 20
    cfg = Config.fast()
    c = make_cluster(n, cfg, seed=9)
    names = {f"n{i}" for i in range(n)}
    assert c.net.run_until_true(lambda: c.alive_views(names), timeout=30)
    a = list(range(8))
    b = list(range(8, n))
    c.net.partition({c.addrs[i] for i in a}, {c.addrs[i] for i in b})
    na = {f"n{i}" for i in a}
    nb = {f"n{i}" for i in b}
    assert c.net.run_until_true(lambda: c.alive_views(na, a) and c.alive_views(nb, b), timeout=120, step=0.5)
    c.net.heal()
    t_heal = c.net.now
    c.nodes[0].join([c.addrs[n - 1]], c.net.now)
    c.net.kick()
    assert c.net.run_until_true(lambda: c.alive_views(names), timeout=2 * cfg.push_pull_interval, step=0.05)
    print(f"healed after {c.net.now - t_heal:.2f}s (push/pull interval {cfg.push_pull_interval}s)")


def test_short_partition_heals_without_rejoin() -> None:
    """Lifted before the sides finish declaring each other dead: push/pull and refutation heal it."""
    n = 20
    cfg = Config.fast()
    c = make_cluster(n, cfg, seed=13)
    names = {f"n{i}" for i in range(n)}
    assert c.net.run_until_true(lambda: c.alive_views(names), timeout=30)
    c.net.partition({c.addrs[i] for i in range(8)}, {c.addrs[i] for i in range(8, n)})
    c.net.run_for(1.5)
    c.net.heal()
    assert c.net.run_until_true(lambda: c.alive_views(names), timeout=2 * cfg.push_pull_interval + 5, step=0.05)


def test_encrypted_labelled_cluster_converges_and_rejects_strangers() -> None:
    key = bytes(range(16))
    cfg = Config.fast(secret_keys=[key], label="prod")
    c = make_cluster(6, cfg, seed=17)
    names = {f"n{i}" for i in range(6)}
    assert c.net.run_until_true(lambda: c.alive_views(names), timeout=30)
    # a node with another key cannot join: its push/pull is refused and it learns nobody
    stranger = c.add(Config.fast(secret_keys=[bytes(16)], label="prod"), 6, seed=17)
    stranger.join([c.addrs[0]], c.net.now)
    c.net.kick()
    c.net.run_for(5.0)
    assert {n.name for n in stranger.members()} == {"n6"}
    assert c.nodes[0].get("n6") is None
    assert c.nodes[0].stats["drop.decrypt"] >= 1  # the stranger's join, under the wrong key


def test_seeded_runs_are_deterministic() -> None:
    def run() -> tuple[int, list[dict[str, int]]]:
        c = make_cluster(8, Config.fast(), seed=23)
        c.net.loss = 0.2
        c.net.jitter = 0.05
        c.net.duplicate = 0.05
        c.net.run_for(20.0)
        return c.net.packets_sent, [dict(m.stats) for m in c.nodes]

    first = run()
    assert first[0] > 100
    assert run() == first
