"""A simulated network of Replicators for the tests: one global clock (ms), per-registry clock offsets,
messages delivered after a random delay (so reordered), dropped at random, or cut by a partition; each
registry ticked at its own `next_deadline`. Deterministic for a seed."""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field

from registry.ttl.entry import Entry, Limits
from registry.ttl.replicator import ReplConfig, Replicator
from registry.ttl.store import Change, TtlStore

T0 = 1_700_000_000_000


@dataclass
class Node:
    name: str
    repl: Replicator
    offset: int  # this registry's clock minus the global one (ms)
    #: What the catalog would hold: the Changes of every call applied in order.
    catalog: dict[tuple[str, str], Entry] = field(default_factory=dict)

    def apply(self, changes: list[Change]) -> None:
        for change in changes:
            if change.entry is None:
                self.catalog.pop((change.group, change.id), None)
            else:
                self.catalog[(change.group, change.id)] = change.entry

    @property
    def store(self) -> TtlStore:
        return self.repl.store


@dataclass
class Net:
    names: list[str]
    seed: int = 0
    config: ReplConfig = field(default_factory=lambda: ReplConfig(anti_entropy_ms=1_000))
    limits: Limits = field(default_factory=Limits)
    max_offset_ms: int = 0
    now: int = T0
    drop: float = 0.0
    delay_ms: tuple[int, int] = (1, 5)
    cut: set[str] = field(default_factory=set)  # registries partitioned from all others
    connected: bool = True  # every registry starts with the others as peers
    tick_lag_ms: int = 0  # a registry's timer fires up to this late (a busy loop): input arrives in between
    bucketed_from: int = 1024  # groups this large go by buckets in anti-entropy (TtlStore's default)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.nodes = {
            n: Node(n, Replicator(TtlStore(n, self.limits, bucketed_from=self.bucketed_from), self.config,
                                  random.Random(f"{self.seed}-{n}")),
                    self.rng.randint(-self.max_offset_ms, self.max_offset_ms))
            for n in self.names}
        self._flight: list[tuple[int, int, str, str, bytes]] = []
        self._seq = 0
        self._lag: dict[tuple[str, int], int] = {}
        self.delivered = 0
        self.dropped = 0
        #: Every record written anywhere, newest stamp per key: the LWW outcome, computed independently.
        self.expected: dict[tuple[str, str], Entry] = {}
        for node in self.nodes.values() if self.connected else ():
            self.set_peers(node.name, [n for n in self.names if n != node.name])

    def clock(self, name: str) -> int:
        return self.now + self.nodes[name].offset

    def set_peers(self, name: str, peers: list[str]) -> None:
        self.nodes[name].repl.set_peers(peers, now_ms=self.clock(name))
        self._collect(name)

    def _note(self, entry: Entry | None) -> None:
        if entry is not None:
            held = self.expected.get(entry.key)
            if held is None or entry.stamp > held.stamp:
                self.expected[entry.key] = entry

    def write(self, name: str, group: str, id: str, *, addr: str, ttl_ms: int) -> Entry:
        node = self.nodes[name]
        entry, changes = node.store.write(group, id, addr=addr, ttl_ms=ttl_ms, now_ms=self.clock(name))
        node.apply(changes)
        node.repl.wrote(entry, now_ms=self.clock(name))
        self._note(entry)
        self._collect(name)
        return entry

    def delete(self, name: str, group: str, id: str) -> Entry | None:
        node = self.nodes[name]
        tomb, changes = node.store.delete(group, id, now_ms=self.clock(name))
        node.apply(changes)
        if tomb is not None:
            node.repl.wrote(tomb, now_ms=self.clock(name))
        self._note(tomb)
        self._collect(name)
        return tomb

    def _collect(self, name: str) -> None:
        for peer, data in self.nodes[name].repl.drain():
            if name in self.cut or peer in self.cut or self.rng.random() < self.drop:
                self.dropped += 1
                continue
            self._seq += 1
            heapq.heappush(self._flight, (self.now + self.rng.randint(*self.delay_ms), self._seq, name, peer, data))

    def run_until(self, until: int) -> None:
        """Deliver messages and tick registries, in time order, up to the global instant `until`."""
        while True:
            due = [(d - node.offset + self._lag_of(node.name, d), node.name) for node in self.nodes.values()
                   if (d := node.repl.next_deadline()) is not None]
            t_tick = min(due)[0] if due else None
            t_msg = self._flight[0][0] if self._flight else None
            t = min(x for x in (t_tick, t_msg, until + 1) if x is not None)
            if t > until:
                self.now = until
                return
            self.now = max(self.now, t)
            if t_msg is not None and t_msg <= self.now:
                _, _, src, dst, data = heapq.heappop(self._flight)
                if src in self.cut or dst in self.cut:  # in flight when the partition began
                    self.dropped += 1
                    continue
                self.delivered += 1
                self.nodes[dst].apply(self.nodes[dst].repl.receive(data, now_ms=self.clock(dst)))
                self._collect(dst)
                continue
            for deadline, name in due:
                if deadline <= self.now:
                    self.nodes[name].apply(self.nodes[name].repl.tick(now_ms=self.clock(name)))
                    self._collect(name)

    def _lag_of(self, name: str, deadline: int) -> int:
        key = (name, deadline)
        if key not in self._lag:
            if len(self._lag) > 10_000:
                self._lag.clear()
            self._lag[key] = self.rng.randint(0, self.tick_lag_ms)
        return self._lag[key]

    def live(self, name: str, groups: list[str]) -> dict[tuple[str, str], Entry]:
        """What the registry holds live at the global instant (the same instant for all, skew aside)."""
        store = self.nodes[name].store
        return {e.key: e for g in groups for e in store.live(g, now_ms=self.now)}

    def catalog_matches(self, name: str, groups: list[str]) -> bool:
        """Whether the Changes the registry returned left its catalog holding exactly its live entries
        (the same services), once its expiry has run at its own clock's now."""
        node = self.nodes[name]
        now = self.clock(name)
        node.apply(node.repl.tick(now_ms=now))
        self._collect(name)
        live = {e.key: e for g in groups for e in node.store.live(g, now_ms=now)}
        if live.keys() != node.catalog.keys():
            return False
        return all((e.addr, dict(e.tags)) == (live[k].addr, dict(live[k].tags)) for k, e in node.catalog.items())

    def expected_live(self) -> dict[tuple[str, str], Entry]:
        return {k: e for k, e in self.expected.items() if e.alive(self.now)}
