"""Serf's member table: memberlist's view plus Lamport-ordered join/leave intents
(docs/wire.md §12, serf.go's handleNode*/handleNodeLeaveIntent/handleNodeJoinIntent).

memberlist says who is reachable; intents say why someone is gone.  A leave intent that
arrives before memberlist declares the node dead turns the coming death into a *leave*
rather than a *failure*; intents about nodes not yet known are kept a while
(`recent_intent_timeout`) for when they show up.  Every intent carries the sender's
Lamport time (`clock`), so an old intent never undoes a newer one.  The table also decides
when departed members are forgotten (prune, reap) and which failed one to try again
(reconnect).  It is memberlist's `EventDelegate` (event_delegate.go): memberlist tells it
directly who joined, left or changed.  It owns no socket and no queue: what it wants sent goes to `broadcast`, what
the application should hear goes to `emit`.
"""

from __future__ import annotations

import collections
import random
from collections.abc import Callable
from dataclasses import dataclass

from registry.memberlist.timers import TimerHeap
from registry.memberlist.types import Address, Node, NodeState

from . import messages as msgs
from .clock import LamportClock
from .config import SerfConfig
from .events import Event, EventType, MemberEvent
from .member import Member, MemberState, MemberStatus, SerfState
from .tags import decode_tags

__all__ = ["Membership"]

_U64 = (1 << 64) - 1


@dataclass
class _Intent:
    """An intent about a node we do not know yet, kept until it appears or times out."""

    kind: msgs.SerfMessageType
    ltime: int
    when: float


class Membership:
    """Members, intents and the intent clock of one Serf node (see module docstring)."""

    def __init__(
        self,
        config: SerfConfig,
        name: str,
        *,
        stats: collections.Counter[str],
        timers: TimerHeap,
        rng: random.Random,
        now: Callable[[], float],
        local_state: Callable[[], SerfState],
        emit: Callable[[Event], None],
        broadcast: Callable[[bytes], None],
        forget: Callable[[str], None],
        rejoin: Callable[[Address, float], None],
    ) -> None:
        """`broadcast` gossips an encoded intent, `forget` drops what other parts keep about
        a member that is erased (its coordinate), `rejoin` asks memberlist to reconnect."""
        self.config = config
        self.name = name
        self.clock = LamportClock(1)
        self._stats = stats
        self._timers = timers
        self._rng = rng
        self._now = now
        self._local_state = local_state
        self._emit = emit
        self._broadcast = broadcast
        self._forget = forget
        self._rejoin = rejoin
        self._members: dict[str, MemberState] = {}
        self._intents: dict[str, _Intent] = {}

    def start(self, now: float) -> None:
        """Schedule the periodic reap and reconnect."""
        self._timers.schedule(now + self.config.reap_interval, self._reap_tick)
        self._timers.schedule(now + self.config.reconnect_interval, self._reconnect_tick)

    # ------------------------------------------------------------------ reading

    def get(self, name: str) -> MemberState | None:
        return self._members.get(name)

    def states(self) -> list[MemberState]:
        return list(self._members.values())

    def __len__(self) -> int:
        return len(self._members)

    def has_alive_others(self) -> bool:
        return any(
            ms.member.status == MemberStatus.ALIVE and n != self.name
            for n, ms in self._members.items()
        )

    # ------------------------------------------------------------------ memberlist's EventDelegate

    def notify_join(self, node: Node) -> None:
        ms = self._members.get(node.name)
        tags = decode_tags(node.meta)
        if ms is None:
            status = MemberStatus.ALIVE
            ltime = 0
            intent = self._intents.get(node.name)
            if intent is not None:
                ltime = intent.ltime
                if intent.kind == msgs.SerfMessageType.LEAVE:
                    status = MemberStatus.LEAVING
            ms = MemberState(
                Member(node.name, node.addr, node.port, tags, status, node.vsn), ltime
            )
            self._members[node.name] = ms
        else:
            m = ms.member
            m.status = MemberStatus.ALIVE
            ms.leave_time = 0.0
            ms.rejoining = False
            m.addr, m.port, m.tags, m.vsn = node.addr, node.port, tags, node.vsn
        self._emit(MemberEvent(EventType.MEMBER_JOIN, [ms.member.copy()]))

    def notify_leave(self, node: Node) -> None:
        ms = self._members.get(node.name)
        if ms is None:
            return
        # memberlist marks a node LEFT only on dead{node, From=node}: it announced its own
        # departure, so it left even when its leave intent lost the race (loss, reordering
        # under load).  Go reports `failed` there until the intent arrives; we report the leave.
        if ms.member.status == MemberStatus.LEAVING or (
            ms.member.status == MemberStatus.ALIVE and node.state == NodeState.LEFT
        ):
            if ms.member.status == MemberStatus.ALIVE:
                self._stats["leave.before_intent"] += 1
            ms.member.status = MemberStatus.LEFT
            kind = EventType.MEMBER_LEAVE
        elif ms.member.status == MemberStatus.ALIVE:
            ms.member.status = MemberStatus.FAILED
            kind = EventType.MEMBER_FAILED
        else:
            return
        ms.leave_time = self._now()
        self._emit(MemberEvent(kind, [ms.member.copy()]))

    def notify_update(self, node: Node) -> None:
        ms = self._members.get(node.name)
        if ms is None:
            return
        m = ms.member
        m.addr, m.port, m.tags, m.vsn = node.addr, node.port, decode_tags(node.meta), node.vsn
        self._emit(MemberEvent(EventType.MEMBER_UPDATE, [m.copy()]))

    # ------------------------------------------------------------------ intents

    def broadcast_join(self, ltime: int) -> None:
        """Gossip our own join intent at `ltime` (after a join, or to refute a leave)."""
        msg = msgs.Join(ltime, self.name)
        self.clock.witness(ltime)
        self.handle_join_intent(msg)
        self._broadcast(msgs.encode(msg))

    def _witness(self, kind: msgs.SerfMessageType, ltime: int, node: str) -> tuple[MemberState | None, bool]:
        """An intent arrived: (the member it is news for, True), or (None, whether it was news
        as an intent kept for a node not known yet)."""
        self.clock.witness(ltime)
        ms = self._members.get(node)
        if ms is None:
            return None, self._upsert_intent(node, kind, ltime)
        return (ms, True) if ltime > ms.status_ltime else (None, False)

    def _upsert_intent(self, name: str, kind: msgs.SerfMessageType, ltime: int) -> bool:
        cur = self._intents.get(name)
        if cur is None or ltime > cur.ltime:
            self._intents[name] = _Intent(kind, ltime, self._now())
            return True
        return False

    def handle_join_intent(self, msg: msgs.Join) -> bool:
        """True when the intent is news (to be passed on)."""
        ms, news = self._witness(msgs.SerfMessageType.JOIN, msg.ltime, msg.node)
        if ms is None:
            return news
        ms.status_ltime = msg.ltime
        if ms.member.status == MemberStatus.LEFT:
            ms.rejoining = True  # see left_names
        if ms.member.status == MemberStatus.LEAVING:
            ms.member.status = MemberStatus.ALIVE
            if self.config.leaving_events:
                self._emit(MemberEvent(EventType.MEMBER_UPDATE, [ms.member.copy()]))
        return True

    def handle_leave_intent(self, msg: msgs.Leave) -> bool:
        """True when the intent is news (to be passed on)."""
        ms, news = self._witness(msgs.SerfMessageType.LEAVE, msg.ltime, msg.node)
        if ms is None:
            return news
        if msg.node == self.name and self._local_state() == SerfState.ALIVE:
            # someone thinks we are leaving: refute with a fresh join intent
            self._stats["intent.refuted"] += 1
            self.broadcast_join(self.clock.time())
            return False
        ms.status_ltime = msg.ltime
        ms.rejoining = False
        status = ms.member.status
        if status == MemberStatus.ALIVE:
            ms.member.status = MemberStatus.LEAVING
            if self.config.leaving_events:
                self._emit(MemberEvent(EventType.MEMBER_LEAVING, [ms.member.copy()]))
        elif status == MemberStatus.FAILED:
            ms.member.status = MemberStatus.LEFT
            self._emit(MemberEvent(EventType.MEMBER_LEAVE, [ms.member.copy()]))
        elif status not in (MemberStatus.LEAVING, MemberStatus.LEFT):
            return False
        if msg.prune:
            self._prune(ms)
        return True

    # ------------------------------------------------------------------ push/pull

    def status_ltimes(self) -> dict[str, int]:
        return {name: ms.status_ltime for name, ms in self._members.items()}

    def left_names(self) -> list[str]:
        """Members that left, as push/pull tells peers (each becomes a leave intent one past its status
        time there). Not one whose newest intent is a join: it left, restarted and rejoined, and we heard
        its join before memberlist's alive. Go lists it (serf.go's localState), and a peer that already
        has it alive at that join's time then takes the "leave" one past it as newer and holds a live
        member `leaving` for good (nothing refutes an intent learnt by push/pull): seen as a restarted
        registry missing from one peer's catalog for over 60 s under load."""
        return [name for name, ms in self._members.items()
                if ms.member.status == MemberStatus.LEFT and not ms.rejoining]

    def merge(self, pp: msgs.PushPullState) -> None:
        """A peer's member statuses: its left members as leave intents, the rest as joins."""
        left = set(pp.left_members)
        for name in pp.left_members:
            # one past the status time (current Go; older Serf used the time itself, which let a
            # node that saw the memberlist death first keep the leaver `failed` for good)
            self.handle_leave_intent(  # uint64 like Go's: 2**64-1 + 1 would make our state unencodable
                msgs.Leave((pp.status_ltimes.get(name, 0) + 1) & _U64, name)
            )
        for name, lt in pp.status_ltimes.items():
            if name not in left:
                self.handle_join_intent(msgs.Join(lt, name))

    # ------------------------------------------------------------------ forgetting

    def _prune(self, ms: MemberState) -> None:
        if ms.member.status == MemberStatus.LEAVING:
            self._timers.schedule(
                self._now() + self.config.broadcast_timeout + self.config.leave_propagate_delay,
                lambda _now: self._erase(ms.member.name),
            )
        else:
            self._erase(ms.member.name)

    def _erase(self, name: str) -> None:
        ms = self._members.get(name)
        if ms is None or ms.member.status not in (
            MemberStatus.LEFT,
            MemberStatus.LEAVING,
            MemberStatus.FAILED,
        ):
            return
        self._remove(name, ms)

    def _remove(self, name: str, ms: MemberState) -> None:
        del self._members[name]
        self._forget(name)
        self._emit(MemberEvent(EventType.MEMBER_REAP, [ms.member.copy()]))

    def _reap_tick(self, now: float) -> None:
        self._timers.schedule(now + self.config.reap_interval, self._reap_tick)  # first: nothing below can stop it
        for name, ms in list(self._members.items()):
            st = ms.member.status
            if (st == MemberStatus.FAILED and now - ms.leave_time > self.config.reconnect_timeout) or (
                st == MemberStatus.LEFT and now - ms.leave_time > self.config.tombstone_timeout
            ):
                self._stats["members.reaped"] += 1
                self._remove(name, ms)
        horizon = now - self.config.recent_intent_timeout
        for name, intent in list(self._intents.items()):
            if intent.when < horizon:
                del self._intents[name]

    def _reconnect_tick(self, now: float) -> None:
        """Now and then, try a failed member again (Go's reconnect: the fewer alive members
        per failed one, the likelier an attempt)."""
        self._timers.schedule(  # first: nothing below can stop it
            now + self.config.reconnect_interval, self._reconnect_tick
        )
        if self._local_state() != SerfState.ALIVE:
            return
        failed = [ms.member for ms in self._members.values() if ms.member.status == MemberStatus.FAILED]
        if not failed:
            return
        left = sum(1 for ms in self._members.values() if ms.member.status == MemberStatus.LEFT)
        alive = max(1, len(self._members) - len(failed) - left)
        if self._rng.random() > len(failed) / alive:
            return
        m = self._rng.choice(failed)
        self._stats["reconnect.attempts"] += 1
        self._rejoin(Address(m.addr, m.port), now)
