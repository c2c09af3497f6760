"""The membership table and memberlist's rules for changing it (docs/wire.md §8.2, §8.4).

One part of the core (`core.Memberlist` owns it): every node we know, in a dict by name
and a shuffled probe order, and the alive / suspect / dead / refutation rules of Go's
state.go that are the only way a row changes.  What a change means for others is said
through the narrow things handed in, not through the rest of the core: news goes on the
broadcast queue, suspicion timers on the timer heap, events to the delegate hooks, and
`death_news` tells the core that a fresh death should be gossiped now.

Incarnation numbers order the claims about a node; only the node itself raises its own
(refutation), which is how a wrongly accused node clears its name.  The order is serial
(state.py): an accusation by someone else never raises the incarnation we record, so a
forged one spreads at most at the victim's real incarnation and its refutation beats it.
"""

from __future__ import annotations

import collections
import dataclasses
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from . import codec as wire
from .awareness import Awareness
from .broadcast import TransmitLimitedQueue
from .config import Config, suspicion_timeout
from .delegate import Hooks
from .messages import Alive, Dead, Suspect
from .state import inc_newer, next_inc
from .suspicion import Suspicion
from .timers import Clock, TimerHeap
from .types import Address, Node, NodeState, ip_from_bytes, ip_to_bytes

__all__ = ["Membership"]

_MEMBER = (NodeState.ALIVE, NodeState.SUSPECT)
_GONE = (NodeState.DEAD, NodeState.LEFT)


@dataclass(eq=False, repr=False, kw_only=True)
class Membership:
    """Every node we know and the state rules; see the module docstring."""

    config: Config
    advertise: Address
    clock: Clock
    rng: random.Random
    stats: collections.Counter[str]
    timers: TimerHeap
    broadcasts: TransmitLimitedQueue
    awareness: Awareness
    hooks: Hooks
    #: every node we know, by name (the dict object never changes: parts may keep it)
    nodes: dict[str, Node] = field(default_factory=dict, init=False)
    n_members: int = field(default=0, init=False)  # nodes ALIVE or SUSPECT (num_members is O(1))
    order: list[str] = field(default_factory=list, init=False)  # probe order
    probe_index: int = field(default=0, init=False)
    incarnation: int = field(default=0, init=False)  # our own
    suspicions: dict[str, tuple[Suspicion, int]] = field(default_factory=dict, init=False)
    leaving: bool = field(default=False, init=False)
    leave_sent: bool = field(default=False, init=False)
    death_news: bool = field(default=False, init=False)  # a peer was just declared dead/left: gossip it now
    #: the layer above may refuse a member's metadata (Serf: tags that are not UTF-8 text)
    accept_meta: Callable[[bytes], bool] | None = field(default=None, init=False)
    name: str = field(default="", init=False)
    advertise_ip: bytes = field(default=b"", init=False)

    def __post_init__(self) -> None:
        self.name = self.config.name
        self.advertise_ip = ip_to_bytes(self.advertise.host)

    # ------------------------------------------------------------------ queries

    def node_at(self, addr: Address) -> Node | None:
        for n in self.nodes.values():
            if n.port == addr.port and n.addr == addr.host:
                return n
        return None

    def any_alive_peer(self) -> bool:
        name = self.name
        return any(n.name != name and n.state in _MEMBER for n in self.nodes.values())

    def random_nodes(self, k: int, exclude: Callable[[Node], bool]) -> list[Node]:
        """Up to k distinct random nodes not excluded (Go's kRandomNodes).

        Small tables are filtered exhaustively; large ones are sampled with up to 3n random
        draws, so a gossip tick costs O(k), not O(n)."""
        order, nodes, rng = self.order, self.nodes, self.rng
        n = len(order)
        if n <= 3 * k + 3:
            pool = [nd for name in order if (nd := nodes.get(name)) is not None and not exclude(nd)]
            if len(pool) <= k:
                rng.shuffle(pool)
                return pool
            return rng.sample(pool, k)
        picked: dict[str, Node] = {}
        for _ in range(3 * n):
            if len(picked) >= k:
                break
            nd = nodes.get(order[rng.randrange(n)])
            if nd is None or nd.name in picked or exclude(nd):
                continue
            picked[nd.name] = nd
        return list(picked.values())

    def gossip_targets(self, k: int) -> list[Node]:
        """Up to k random peers to gossip to: members, and the dead for gossip_to_the_dead_time
        (so they hear of their death and can refute it)."""
        horizon = self.config.gossip_to_the_dead_time
        name, now = self.name, self.clock.now

        def exclude(n: Node) -> bool:
            if n.name == name:
                return True
            if n.state in _MEMBER:
                return False
            if n.state == NodeState.DEAD:
                return now - n.state_change > horizon
            return True

        return self.random_nodes(k, exclude)

    def next_to_probe(self, now: float) -> Node | None:
        """The next live peer in probe order, wrapping (and reaping) at the end of the list."""
        checked = 0
        while checked <= len(self.order):
            if self.probe_index >= len(self.order):
                self._reset_order(now)
                self.probe_index = 0
                checked += 1
                continue
            node = self.nodes.get(self.order[self.probe_index])
            self.probe_index += 1
            if node is None or node.name == self.name or node.state in _GONE:
                checked += 1
                continue
            return node
        return None

    def _reset_order(self, now: float) -> None:
        """On wrap: reap dead/left nodes older than gossip_to_the_dead_time, reshuffle."""
        horizon = self.config.gossip_to_the_dead_time
        for name in list(self.order):
            n = self.nodes[name]
            if n.state in _GONE and now - n.state_change > horizon and name != self.name:
                del self.nodes[name]
                self.cancel_suspicion(name)
                self.stats["nodes.reaped"] += 1
        self.order = list(self.nodes)
        self.rng.shuffle(self.order)

    # ------------------------------------------------------------------ our own node

    def announce(self, meta: bytes) -> None:
        """Our own alive at the next incarnation (start, or new metadata)."""
        self.incarnation = next_inc(self.incarnation)
        alive = Alive(self.incarnation, self.name, self.advertise_ip, self.advertise.port, meta, self.config.vsn)
        self.on_alive(alive, bootstrap=True)

    def leave(self) -> None:
        """Declare ourselves left (dead{me, From=me}); `leave_sent` turns True once it is sent."""
        if self.leaving:
            return
        self.leaving = True
        me = self.nodes[self.name]
        if not self.any_alive_peer():
            self.leave_sent = True
        self.on_dead(Dead(me.incarnation, self.name, self.name))

    def _refute(self, me: Node, accused: int) -> None:
        inc = next_inc(self.incarnation)
        if not inc_newer(inc, accused):
            inc = next_inc(accused)
        self.incarnation = inc
        me.incarnation = inc
        self.awareness.apply_delta(1)  # accused: maybe we are the slow one (Lifeguard)
        self.stats["refute"] += 1
        alive = Alive(inc, me.name, ip_to_bytes(me.addr), me.port, me.meta, me.vsn)
        self.broadcasts.queue(me.name, wire.encode(alive))

    def _leave_transmitted(self) -> None:
        self.leave_sent = True

    # ------------------------------------------------------------------ the rules

    def cancel_suspicion(self, name: str) -> None:
        entry = self.suspicions.pop(name, None)
        if entry is not None:
            self.timers.cancel(entry[1])

    def on_alive(self, a: Alive, *, bootstrap: bool = False) -> None:
        is_local = a.node == self.name
        if self.leaving and is_local:
            return
        if len(a.vsn) >= 3 and (a.vsn[0] == 0 or a.vsn[1] == 0 or a.vsn[0] > a.vsn[1]):
            self.stats["drop.bad_vsn"] += 1
            return
        try:
            host = ip_from_bytes(a.addr)
        except ValueError:
            self.stats["drop.bad_addr"] += 1
            return
        port = a.port or self.advertise.port
        meta = a.meta or b""
        if meta and self.accept_meta is not None and not bootstrap:
            known = self.nodes.get(a.node)
            if (known is None or known.meta != meta) and not self.accept_meta(meta):
                self.stats["drop.bad_meta"] += 1  # refused: the member is not admitted/updated
                return
        hooks = self.hooks
        if hooks.alive is not None and not bootstrap:
            err = hooks.alive.notify_alive(Node(a.node, host, port, meta, a.vsn, NodeState.ALIVE, a.incarnation))
            if err:
                self.stats["drop.alive_vetoed"] += 1
                return
        now = self.clock.now
        state = self.nodes.get(a.node)
        updates_node = False
        is_new = state is None
        if state is None:
            state = Node(a.node, host, port, meta, a.vsn, NodeState.DEAD, 0, now)
            self.nodes[a.node] = state
            pos = self.rng.randint(0, len(self.order))
            self.order.insert(pos, a.node)
            if pos < self.probe_index:
                self.probe_index += 1
        elif state.addr != host or state.port != port:
            reclaim = self.config.dead_node_reclaim_time
            can_reclaim = reclaim > 0 and now - state.state_change > reclaim
            if state.state == NodeState.LEFT or (state.state == NodeState.DEAD and can_reclaim):
                updates_node = True
            else:
                self.stats["drop.name_conflict"] += 1
                if hooks.conflict is not None:
                    other = Node(a.node, host, port, meta, a.vsn, NodeState.ALIVE, a.incarnation)
                    hooks.conflict.notify_conflict(dataclasses.replace(state), other)
                return
        if not (is_new or is_local or updates_node or inc_newer(a.incarnation, state.incarnation)):
            return
        if is_local and not is_new and inc_newer(state.incarnation, a.incarnation):
            return
        self.cancel_suspicion(a.node)
        if is_local and not bootstrap:
            if a.incarnation == state.incarnation and meta == state.meta and a.vsn == state.vsn:
                return
            self._refute(state, a.incarnation)
            return
        self.broadcasts.queue(a.node, wire.encode(a))
        old_state, old_meta = state.state, state.meta
        state.incarnation = a.incarnation
        state.meta = meta
        state.addr = host
        state.port = port
        if a.vsn:
            state.vsn = a.vsn
        if state.state != NodeState.ALIVE:
            if state.state != NodeState.SUSPECT:
                self.n_members += 1
            state.state = NodeState.ALIVE
            state.state_change = now
        if hooks.events is not None:
            if old_state in _GONE:
                hooks.events.notify_join(dataclasses.replace(state))
            elif old_meta != state.meta or updates_node:
                hooks.events.notify_update(dataclasses.replace(state))

    def on_suspect(self, s: Suspect) -> None:
        state = self.nodes.get(s.node)
        if state is None or inc_newer(state.incarnation, s.incarnation):
            return
        if s.node != self.name and s.incarnation != state.incarnation:
            s = Suspect(state.incarnation, s.node, s.sender)  # accusations never raise it
            self.stats["incarnation.clamped"] += 1
        entry = self.suspicions.get(s.node)
        if entry is not None:
            sus, handle = entry
            if sus.confirm(s.sender):
                self.broadcasts.queue(s.node, wire.encode(s))
                self.timers.cancel(handle)
                self._arm_suspicion(s.node, sus, state.state_change)
            return
        if state.state != NodeState.ALIVE:
            return
        if s.node == self.name:
            self._refute(state, s.incarnation)
            return
        now = self.clock.now
        self.broadcasts.queue(s.node, wire.encode(s))
        state.incarnation = s.incarnation
        state.state = NodeState.SUSPECT
        state.state_change = now
        lo, hi, k = suspicion_timeout(self.config, len(self.nodes))
        self._arm_suspicion(s.node, Suspicion(s.sender, k, lo, hi, now), now)

    def _arm_suspicion(self, name: str, sus: Suspicion, change: float) -> None:
        def fire(now: float) -> None:
            self.suspicions.pop(name, None)
            st = self.nodes.get(name)
            if st is not None and st.state == NodeState.SUSPECT and st.state_change == change:
                self.stats["suspicion.timeout"] += 1
                self.on_dead(Dead(st.incarnation, name, self.name))

        handle = self.timers.schedule(max(sus.deadline, self.clock.now), fire)
        self.suspicions[name] = (sus, handle)

    def on_dead(self, d: Dead) -> None:
        state = self.nodes.get(d.node)
        if state is None or inc_newer(state.incarnation, d.incarnation):
            return
        if d.node not in (self.name, d.sender) and d.incarnation != state.incarnation:
            d = Dead(state.incarnation, d.node, d.sender)  # accusations never raise it
            self.stats["incarnation.clamped"] += 1
        self.cancel_suspicion(d.node)
        if state.state in _GONE:
            return
        if d.node == self.name:
            if not self.leaving:
                self._refute(state, d.incarnation)
                return
            self.broadcasts.queue(d.node, wire.encode(d), self._leave_transmitted)
        else:
            self.broadcasts.queue(d.node, wire.encode(d))
        state.incarnation = d.incarnation
        self.n_members -= 1  # it was alive or suspect (dead/left returned above)
        state.state = NodeState.LEFT if d.node == d.sender else NodeState.DEAD
        state.state_change = self.clock.now
        if d.node != self.name:
            self.death_news = True
        events = self.hooks.events
        if events is not None:
            events.notify_leave(dataclasses.replace(state))
