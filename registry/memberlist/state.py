"""memberlist's node state rules (docs/wire.md §8.2, §8.4): alive, suspect, dead, refutation.

Incarnation numbers order the claims about a node; only the node itself raises
its own (refutation), which is how a wrongly accused node clears its name.

Forged incarnations (issue 11, item 7).  memberlist compares incarnations as plain uint32s
and refutes at ``accused + 1``: one forged ``dead`` at 2**32-1 wedges its victim for good
(Go's refutation wraps to 0 and is ignored until the dead node is reaped; ours became 2**32,
which no decoder accepts).  We do better, in two ways that agree with Go on every
incarnation an honest cluster produces:

* Incarnations are compared in RFC 1982 serial-number order modulo 2**32 (`inc_newer`):
  ``a`` is newer than ``b`` when ``0 < (a - b) mod 2**32 < 2**31``.  Honest incarnations
  are small and only grow by one per refutation, so this is the plain order for them; but
  2**32-1 is now *older* than a live node's incarnation (ignored), and a node can always
  refute: ``accused + 1`` wraps past 2**32-1 (skipping 0) and is newer than the accusation.
* An accusation by someone else (suspect, dead with ``From != Node``) never raises the
  incarnation we record for a node: it applies at the incarnation the node itself last
  announced (its alive, or its own leave), and is passed on in that form.  So a forged
  accusation spreads at most at the victim's real incarnation, and the victim's ordinary
  refutation at ``known + 1`` beats it everywhere, Go peers included.  The cost: when our
  record is stale, an honest accusation at a newer incarnation applies to the older one;
  the node's newer alive (gossip, or the next push/pull) still overrides it.
"""

from __future__ import annotations

import dataclasses

from . import codec as wire
from .base import CoreBase
from .config import suspicion_timeout
from .messages import (
    Alive,
    Dead,
    Suspect,
)
from .suspicion import Suspicion
from .types import (
    Node,
    NodeState,
    ip_from_bytes,
    ip_to_bytes,
)

__all__ = ["StateRules", "inc_newer", "next_inc"]

_INC_SPACE = 1 << 32
_INC_HALF = 1 << 31


def inc_newer(a: int, b: int) -> bool:
    """Incarnation `a` is later than `b` in serial-number order mod 2**32 (module docstring)."""
    d = (a - b) % _INC_SPACE
    return 0 < d < _INC_HALF


def next_inc(inc: int) -> int:
    """The incarnation after `inc` (wrapping past 2**32-1 to 1: 0 means "never announced")."""
    return (inc + 1) % _INC_SPACE or 1


class StateRules(CoreBase):
    def _cancel_suspicion(self, name: str) -> None:
        entry = self._suspicions.pop(name, None)
        if entry is not None:
            self._timers.cancel(entry[1])

    def _refute(self, me: Node, accused: int) -> None:
        inc = next_inc(self._incarnation)
        if not inc_newer(inc, accused):
            inc = next_inc(accused)
        self._incarnation = inc
        me.incarnation = inc
        self.awareness.apply_delta(1)
        self.stats["refute"] += 1
        alive = Alive(inc, me.name, ip_to_bytes(me.addr), me.port, me.meta, me.vsn)
        self.broadcasts.queue(me.name, wire.encode(alive))

    def _on_alive(self, a: Alive, *, bootstrap: bool = False) -> None:
        is_local = a.node == self.name
        if self._leaving and is_local:
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
            known = self._nodes.get(a.node)
            if (known is None or known.meta != meta) and not self.accept_meta(meta):
                self.stats["drop.bad_meta"] += 1  # refused: the member is not admitted/updated
                return
        hooks = self._hooks
        if hooks.alive is not None and not bootstrap:
            err = hooks.alive.notify_alive(Node(a.node, host, port, meta, a.vsn, NodeState.ALIVE, a.incarnation))
            if err:
                self.stats["drop.alive_vetoed"] += 1
                return
        state = self._nodes.get(a.node)
        updates_node = False
        is_new = state is None
        if state is None:
            state = Node(a.node, host, port, meta, a.vsn, NodeState.DEAD, 0, self.now)
            self._nodes[a.node] = state
            pos = self.rng.randint(0, len(self._order))
            self._order.insert(pos, a.node)
            if pos < self._probe_index:
                self._probe_index += 1
        elif state.addr != host or state.port != port:
            reclaim = self.config.dead_node_reclaim_time
            can_reclaim = reclaim > 0 and self.now - state.state_change > reclaim
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
        self._cancel_suspicion(a.node)
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
                self._n_members += 1
            state.state = NodeState.ALIVE
            state.state_change = self.now
        if hooks.events is not None:
            if old_state in (NodeState.DEAD, NodeState.LEFT):
                hooks.events.notify_join(dataclasses.replace(state))
            elif old_meta != state.meta or updates_node:
                hooks.events.notify_update(dataclasses.replace(state))

    def _on_suspect(self, s: Suspect) -> None:
        state = self._nodes.get(s.node)
        if state is None or inc_newer(state.incarnation, s.incarnation):
            return
        if s.node != self.name and s.incarnation != state.incarnation:
            s = Suspect(state.incarnation, s.node, s.sender)  # accusations never raise it
            self.stats["incarnation.clamped"] += 1
        entry = self._suspicions.get(s.node)
        if entry is not None:
            sus, handle = entry
            if sus.confirm(s.sender):
                self.broadcasts.queue(s.node, wire.encode(s))
                self._timers.cancel(handle)
                self._arm_suspicion(s.node, sus, state.state_change)
            return
        if state.state != NodeState.ALIVE:
            return
        if s.node == self.name:
            self._refute(state, s.incarnation)
            return
        self.broadcasts.queue(s.node, wire.encode(s))
        state.incarnation = s.incarnation
        state.state = NodeState.SUSPECT
        state.state_change = self.now
        n = len(self._nodes)
        lo, hi, k = suspicion_timeout(self.config, n)
        sus = Suspicion(s.sender, k, lo, hi, self.now)
        self._arm_suspicion(s.node, sus, state.state_change)

    def _arm_suspicion(self, name: str, sus: Suspicion, change: float) -> None:
        def fire(now: float) -> None:
            self._suspicions.pop(name, None)
            st = self._nodes.get(name)
            if st is not None and st.state == NodeState.SUSPECT and st.state_change == change:
                self.stats["suspicion.timeout"] += 1
                self._on_dead(Dead(st.incarnation, name, self.name))

        handle = self._timers.schedule(max(sus.deadline, self.now), fire)
        self._suspicions[name] = (sus, handle)

    def _on_dead(self, d: Dead) -> None:
        state = self._nodes.get(d.node)
        if state is None or inc_newer(state.incarnation, d.incarnation):
            return
        if d.node not in (self.name, d.sender) and d.incarnation != state.incarnation:
            d = Dead(state.incarnation, d.node, d.sender)  # accusations never raise it
            self.stats["incarnation.clamped"] += 1
        self._cancel_suspicion(d.node)
        if state.state in (NodeState.DEAD, NodeState.LEFT):
            return
        if d.node == self.name:
            if not self._leaving:
                self._refute(state, d.incarnation)
                return
            self.broadcasts.queue(d.node, wire.encode(d), self._leave_transmitted)
        else:
            self.broadcasts.queue(d.node, wire.encode(d))
        state.incarnation = d.incarnation
        self._n_members -= 1  # it was alive or suspect (dead/left returned above)
        state.state = NodeState.LEFT if d.node == d.sender else NodeState.DEAD
        state.state_change = self.now
        if d.node != self.name:
            self._death_news = True
        events = self._hooks.events
        if events is not None:
            events.notify_leave(dataclasses.replace(state))

    def _leave_transmitted(self) -> None:
        self._leave_sent = True
