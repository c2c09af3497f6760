"""Helpers for simulated Serf clusters on W2's SimNetwork (virtual clock)."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from registry.memberlist.config import Config
from registry.memberlist.simnet import SimNetwork
from registry.memberlist.types import Address
from registry.serf.config import SerfConfig
from registry.serf.core import Serf
from registry.serf.events import Event
from registry.serf.member import MemberStatus


def addr(i: int) -> Address:
    return Address(f"10.1.0.{i + 1}", 7946)


@dataclass
class SerfCluster:
    net: SimNetwork
    nodes: list[Serf] = field(default_factory=list)
    events: list[list[Event]] = field(default_factory=list)

    def add(self, i: int, **overrides: object) -> Serf:
        base: dict[str, object] = {
            "name": f"s{i}",
            "tags": {"role": f"r{i}"},
            "memberlist": Config.fast(),
            "reap_interval": 1.0,
            "reconnect_interval": 2.0,
        }
        base.update(overrides)
        cfg = SerfConfig(**base)  # type: ignore[arg-type]
        s = Serf(cfg, addr(i), rng=random.Random(1000 + i), now=self.net.now)
        while len(self.nodes) <= i:
            self.nodes.append(None)  # type: ignore[arg-type]
            self.events.append([])
        self.nodes[i] = s
        self.events[i] = []
        self.net.add(s, addr(i))
        return s

    def pump_events(self) -> None:
        for i, s in enumerate(self.nodes):
            if s is not None:
                self.events[i].extend(s.drain_events())

    def status(self, viewer: int, name: str) -> MemberStatus | None:
        m = self.nodes[viewer].member(name)
        return m.status if m is not None else None

    def all_see(self, name: str, status: MemberStatus, viewers: list[int]) -> bool:
        return all(self.status(v, name) == status for v in viewers)

    def run_until(self, pred: Callable[[], bool], timeout: float) -> bool:
        def wrapped() -> bool:
            self.pump_events()
            return bool(pred())

        return self.net.run_until_true(wrapped, timeout)


def make_cluster(n: int, *, seed: int = 1, **overrides: object) -> SerfCluster:
    c = SerfCluster(SimNetwork(seed=seed))
    for i in range(n):
        c.add(i, **overrides)
    for i in range(1, n):
        c.nodes[i].join([addr(0)], c.net.now)
        c.net.kick(addr(i))
    names = {f"s{i}" for i in range(n)}
    ok = c.run_until(
        lambda: all(
            {m.name for m in s.members() if m.status == MemberStatus.ALIVE} == names
            for s in c.nodes
        ),
        30.0,
    )
    assert ok, "simulated serf cluster did not converge"
    return c
