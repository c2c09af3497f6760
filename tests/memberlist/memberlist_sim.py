"""Helpers to build simulated memberlist clusters for the test_sim_* tests."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from registry.memberlist.config import Config
from registry.memberlist.core import Memberlist
from registry.memberlist.delegate import Delegate
from registry.memberlist.simnet import SimNetwork
from registry.memberlist.types import Address, Node, NodeState


@dataclass
class Recorder(Delegate):
    """Records membership events (a real Delegate, not a mock)."""

    joins: list[str] = field(default_factory=list)
    leaves: list[tuple[str, NodeState]] = field(default_factory=list)
    updates: list[str] = field(default_factory=list)
    conflicts: list[tuple[Node, Node]] = field(default_factory=list)
    msgs: list[bytes] = field(default_factory=list)
    meta: bytes = b""

    def node_meta(self, limit: int) -> bytes:
        return self.meta

    def notify_join(self, node: Node) -> None:
        self.joins.append(node.name)

    def notify_leave(self, node: Node) -> None:
        self.leaves.append((node.name, node.state))

    def notify_update(self, node: Node) -> None:
        self.updates.append(node.name)

    def notify_conflict(self, existing: Node, other: Node) -> None:
        self.conflicts.append((existing, other))

    def notify_msg(self, msg: bytes) -> None:
        self.msgs.append(msg)


def addr(i: int) -> Address:
    return Address(f"10.0.{i // 250}.{i % 250 + 1}", 7946)


@dataclass
class Cluster:
    net: SimNetwork
    nodes: list[Memberlist]
    delegates: list[Recorder]
    addrs: list[Address]

    def add(self, cfg: Config, i: int, seed: int = 0) -> Memberlist:
        rec = Recorder()
        m = Memberlist(cfg.replace(name=f"n{i}"), addr(i), rec, rng=random.Random(seed * 100003 + i), now=self.net.now)
        self.nodes.append(m)
        self.delegates.append(rec)
        self.addrs.append(addr(i))
        self.net.add(m, addr(i))
        return m

    def alive_views(self, names: set[str], among: list[int] | None = None) -> bool:
        """Every node in `among` sees exactly `names` as its alive members."""
        idx = among if among is not None else range(len(self.nodes))
        for i in idx:
            seen = {n.name for n in self.nodes[i].all_nodes() if n.state == NodeState.ALIVE}
            if seen != names:
                return False
        return True


def make_cluster(n: int, cfg: Config, *, seed: int = 1, join: bool = True, delay: float = 0.001) -> Cluster:
    net = SimNetwork(seed=seed, delay=delay)
    c = Cluster(net, [], [], [])
    for i in range(n):
        c.add(cfg, i, seed)
    if join:
        for i in range(1, n):
            c.nodes[i].join([c.addrs[0]], net.now)
            net.kick(c.addrs[i])
            net.run_for(0.05)
    return c
