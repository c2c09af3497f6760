"""A refused TCP fallback ping (the dead node's host answers, nothing listens) suspects the
target at once instead of at the probe interval's end. On the virtual clock, the same
cluster and seed with the node killed (`SimNetwork.kill`: TCP refused) and silenced
(`stop`: nothing answers at all) differ only by that."""

from __future__ import annotations

import statistics

import pytest

from registry.memberlist.config import Config
from registry.memberlist.types import NodeState
from tests.memberlist.memberlist_sim import make_cluster

CFG = Config.lan()
N = 5


def _dead_by_all(seed: int, kill: bool) -> tuple[float, float, int]:
    """(first suspicion, dead by all) in seconds after the failure; refused TCP pings counted."""
    c = make_cluster(N, CFG, seed=seed)
    names = {f"n{i}" for i in range(N)}
    assert c.net.run_until_true(lambda: c.alive_views(names), timeout=60)
    c.net.run_for(3.0 + seed * 0.137)  # a different probe phase per seed
    victim = c.addrs[N - 1]
    (c.net.kill if kill else c.net.stop)(victim)
    t0 = c.net.now
    first: list[float] = []

    def suspected() -> bool:
        states = [c.nodes[i].get(f"n{N - 1}").state for i in range(N - 1)]  # type: ignore[union-attr]
        if not first and any(s != NodeState.ALIVE for s in states):
            first.append(c.net.now - t0)
        return all(s == NodeState.DEAD for s in states)

    assert c.net.run_until_true(suspected, timeout=120, step=0.01)
    refused = sum(m.stats["probe.tcp_refused"] for m in c.nodes[: N - 1])
    return first[0], c.net.now - t0, refused


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_refused_fallback_ping_suspects_before_the_interval_ends(seed: int) -> None:
    first_killed, _, refused = _dead_by_all(seed, kill=True)
    first_silent, _, none = _dead_by_all(seed, kill=False)
    assert refused >= 1 and none == 0
    # the first prober suspects right after probe_timeout (+ a TCP round trip), not at probe_interval
    assert first_killed <= first_silent - (CFG.probe_interval - CFG.probe_timeout) * 0.8, (first_killed, first_silent)


def test_dead_by_all_earlier_when_the_host_refuses() -> None:
    killed = [_dead_by_all(seed, kill=True)[1] for seed in range(1, 6)]
    silent = [_dead_by_all(seed, kill=False)[1] for seed in range(1, 6)]
    assert statistics.median(killed) < statistics.median(silent) - 0.25, (killed, silent)


def test_refused_path_keeps_awareness_and_false_deaths_at_zero() -> None:
    """A killed node's probers keep their Lifeguard health score, and nobody alive is suspected."""
    c = make_cluster(N, CFG, seed=11)
    names = {f"n{i}" for i in range(N)}
    assert c.net.run_until_true(lambda: c.alive_views(names), timeout=60)
    c.net.run_for(2.0)
    c.net.kill(c.addrs[N - 1])
    assert c.net.run_until_true(
        lambda: all(c.nodes[i].get(f"n{N - 1}").state == NodeState.DEAD for i in range(N - 1)),  # type: ignore[union-attr]
        timeout=120, step=0.01)
    assert sum(m.stats["probe.tcp_refused"] for m in c.nodes) >= 1
    assert all(m.awareness.score == 0 for m in c.nodes[: N - 1])
    assert c.alive_views(names - {f"n{N - 1}"}, among=list(range(N - 1)))
