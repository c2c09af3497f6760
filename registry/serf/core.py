"""The sans-I/O Serf machine: tags, Lamport-ordered intents, user events and queries on top of
a `Memberlist`, wire-compatible with hashicorp/serf (protocol 2..5).

`Serf` owns a `Memberlist`, is its `Delegate`, and is itself a `Machine`: a driver (asyncio
runner or `SimNetwork`) feeds it packets, streams and time and carries out what `drain()`
returns.  Rules follow serf.go / delegate.go / query.go (docs/wire.md §10-§15).  Events for
the application wait in a bounded queue (`drain_events`); when it is full the oldest event is
dropped and counted in `stats["events.dropped"]`, so a slow consumer never stalls gossip.
Malformed input is counted in `stats["serf.drop.<reason>"]`, never raised.
"""

from __future__ import annotations

import collections
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from registry.memberlist.broadcast import TransmitLimitedQueue
from registry.memberlist.core import Memberlist
from registry.memberlist.delegate import Delegate
from registry.memberlist.handler_errors import HandlerErrors
from registry.memberlist.timers import TimerHeap
from registry.memberlist.types import (
    Address,
    Node,
    NodeState,
    Output,
)

from . import keyring as keys
from . import messages as msgs
from .clock import LamportClock
from .config import SerfConfig
from .coordinate import (
    Coordinate,
    VivaldiClient,
    decode_ack_payload,
    encode_ack_payload,
)
from .events import Event, EventType, MemberEvent, UserEvent
from .member import Member, MemberState, MemberStatus, SerfState
from .query import QueryHandle
from .querying import INTERNAL_QUERY_PREFIX, QueryRules, _QuerySlot
from .tags import check_tags, decode_tags, encode_tags, valid_meta

if TYPE_CHECKING:
    from registry.memberlist.crypto import Keyring

__all__ = ["INTERNAL_QUERY_PREFIX", "USER_EVENT_HARD_LIMIT", "Serf", "SerfState"]

log = logging.getLogger(__name__)

USER_EVENT_HARD_LIMIT = 9 * 1024
_U64 = (1 << 64) - 1


@dataclass
class _Intent:
    kind: msgs.SerfMessageType
    ltime: int
    when: float


@dataclass
class _PendingJoin:
    pending: set[int]
    ignore_old: bool
    ok: int = 0


class Serf(QueryRules, Delegate):
    """One Serf node's protocol state (see module docstring; queries in `querying`)."""

    def __init__(
        self,
        config: SerfConfig,
        advertise: Address,
        *,
        rng: random.Random | None = None,
        now: float = 0.0,
    ) -> None:
        if not config.name and not config.memberlist.name:
            raise ValueError("SerfConfig.name must be set")
        self.config = config
        self.rng = rng if rng is not None else random.Random()
        self.stats: collections.Counter[str] = collections.Counter()
        #: Serf's own timers: a failure is counted, logged once per kind, raised when strict
        self._timer_errors = HandlerErrors(self.stats, log, strict=config.memberlist.strict)
        self.state = SerfState.ALIVE
        self._start = now
        self.clock = LamportClock()
        self.event_clock = LamportClock()
        self.query_clock = LamportClock()
        self.clock.increment()
        self.event_clock.increment()
        self.query_clock.increment()
        self._tags = dict(config.tags)
        check_tags(self._tags, config.protocol_version)
        self._members: dict[str, MemberState] = {}
        self._intents: dict[str, _Intent] = {}
        self._event_buffer: list[msgs.UserEventSlot | None] = [
            None
        ] * config.event_buffer
        self._event_min_time = 0
        self._query_buffer: list[_QuerySlot | None] = [None] * config.query_buffer
        self._query_min_time = 0
        self._queries: dict[int, QueryHandle] = {}
        mult = config.memberlist.retransmit_mult
        self._broadcasts = TransmitLimitedQueue(mult)
        self._event_broadcasts = TransmitLimitedQueue(mult)
        self._query_broadcasts = TransmitLimitedQueue(mult)
        self._events: collections.deque[Event] = collections.deque()
        self._timers = TimerHeap()
        self._joins: dict[int, _PendingJoin] = {}
        self._join_ignore = False
        self.join_results: dict[int, bool] = {}
        self._leave_intent_sent = False
        self._leave_stage = (
            0  # 0 none, 1 intent queued, 2 memberlist leave, 3 propagating
        )
        self._leave_deadline = 0.0
        #: a fresh leave intent arrived: pass it on once the current input is handled
        self._forward_now = False
        #: called whenever an event is queued or a query/leave/join makes progress (drivers wake up)
        self.wakeup: Callable[[], None] | None = None
        #: set when a name conflict was lost (Go shuts the node down)
        self.conflict_lost = False
        self._conflict_query: QueryHandle | None = None
        #: the node holding our name alive at another address, as a join's reply showed it: that
        #: peer kept the holder and refused our alive (the join still counts, as in Go, and the
        #: conflict query decides; an embedding SDK can refuse to start instead)
        self.name_taken_by: Node | None = None
        self._merging_join = False
        self.coord_client = VivaldiClient(rng=self.rng)
        #: latest coordinate each peer reported in its acks (ours under our own name)
        self.coord_cache: dict[str, Coordinate] = {}
        self._coalesced: dict[str, list[UserEvent]] = {}
        self._coalesce_end: int | None = None
        self._quiet_end: int | None = None

        ml_config = config.memberlist_config()
        self.keyring_file = config.keyring_file
        key_list = self._initial_keys(config)
        if key_list:
            ml_config = ml_config.replace(secret_keys=key_list)
        self.name = ml_config.name
        self.memberlist = Memberlist(ml_config, advertise, self, rng=self.rng, now=now)
        self.memberlist.accept_meta = valid_meta  # a member whose tags are not text is refused
        self._timers.schedule(now + config.reap_interval, self._reap_tick)
        self._timers.schedule(now + config.reconnect_interval, self._reconnect_tick)

    @staticmethod
    def _initial_keys(config: SerfConfig) -> list[bytes]:
        key_list = list(config.memberlist.secret_keys)
        if config.keyring_file:
            for k in keys.load_keyring_file(config.keyring_file):
                if k not in key_list:
                    key_list.append(k)
        if config.encrypt_key:
            primary = keys.decode_key(config.encrypt_key)
            key_list = [primary] + [k for k in key_list if k != primary]
        if config.keyring_file and key_list:
            keys.write_keyring_file(config.keyring_file, key_list)
        return key_list

    # ------------------------------------------------------------------ clock

    @property
    def now(self) -> float:
        ml = getattr(self, "memberlist", None)
        return ml.now if ml is not None else self._start

    # ------------------------------------------------------------------ public API

    def members(self) -> list[Member]:
        """Every member Serf knows, in any status (like `serf members`)."""
        return [ms.member.copy() for ms in self._members.values()]

    def member(self, name: str) -> Member | None:
        ms = self._members.get(name)
        return ms.member.copy() if ms is not None else None

    def local_member(self) -> Member:
        ms = self._members.get(self.name)
        if ms is not None:
            return ms.member.copy()
        node = self.memberlist.local_node
        return Member(
            node.name,
            node.addr,
            node.port,
            dict(self._tags),
            MemberStatus.ALIVE,
            node.vsn,
        )

    @property
    def tags(self) -> dict[str, str]:
        return dict(self._tags)

    def status_ltime(self, name: str) -> int | None:
        ms = self._members.get(name)
        return ms.status_ltime if ms is not None else None

    def set_tags(self, tags: dict[str, str], now: float) -> None:
        """Replace our tags and gossip them (memberlist alive, incarnation + 1); TagsTooLarge if
        the encoded set exceeds 512 bytes (nothing changes then)."""
        check_tags(tags, self.config.protocol_version)
        self._tags = dict(tags)
        self.memberlist.update_meta(now)
        self._wake()

    def join(
        self, addresses: list[Address], now: float, ignore_old: bool = True
    ) -> list[int]:
        """Push/pull with each address; when at least one succeeds, gossip our join intent.
        Outcomes land in `join_results[stream_id]`."""
        ids = self.memberlist.join(addresses, now)
        pj = _PendingJoin(set(ids), ignore_old)
        for sid in ids:
            self._joins[sid] = pj
        return ids

    def user_event(self, name: str, payload: bytes, coalesce: bool, now: float) -> None:
        """Send a user event (Serf's size checks raise ValueError)."""
        self.memberlist.now = max(self.memberlist.now, now)
        limit = self.config.user_event_size_limit
        size = len(name.encode()) + len(payload)
        if size > limit:
            raise ValueError(
                f"user event exceeds configured limit of {limit} bytes before encoding"
            )
        if size > USER_EVENT_HARD_LIMIT:
            raise ValueError(
                f"user event exceeds sane limit of {USER_EVENT_HARD_LIMIT} bytes before encoding"
            )
        msg = msgs.UserEventMsg(self.event_clock.time(), name, bytes(payload), coalesce)
        raw = msgs.encode(msg)
        if len(raw) > limit:
            raise ValueError(
                f"encoded user event exceeds configured limit of {limit} bytes after encoding"
            )
        self.event_clock.increment()
        self._handle_user_event(msg)
        self._queue(self._event_broadcasts, raw)

    def leave(self, now: float) -> None:
        """Graceful leave: gossip our leave intent first, then memberlist's dead{me, From=me},
        then wait LeavePropagateDelay; `state` becomes LEFT at the end.

        As in Go, memberlist's message waits until the intent has been sent its full retransmit
        count (so peers learn `leaving` before the death and report a leave, not a failure);
        unlike Go, the first copies of each go out at once instead of at the next gossip tick."""
        self.memberlist.now = max(self.memberlist.now, now)
        if self.state != SerfState.ALIVE:
            return
        self.state = SerfState.LEAVING
        msg = msgs.Leave(self.clock.time(), self.name, False)
        self.clock.increment()
        self._handle_leave_intent(msg)
        self._leave_stage = 1
        self._leave_deadline = self.now + self.config.broadcast_timeout
        if self._has_alive_members():
            self._queue(self._broadcasts, msgs.encode(msg), self._on_leave_intent_sent)
            self._timers.schedule(self._leave_deadline, self._leave_step)
            self.memberlist.gossip_now(self.now)
        else:
            self._timers.schedule(self.now, self._leave_step)

    def leave_now(self, now: float, confirm_with: list[Address]) -> list[int]:
        """Leave without waiting for gossip to spread it, for a node about to exit: the leave
        intent and memberlist's dead{me} go out at once (not the intent's full retransmit count,
        then the death's, then LeavePropagateDelay, as `leave` waits), and our state, which now
        says we left, is pushed to each of `confirm_with`.  Returns those push/pulls' stream ids:
        one accepted reply means that peer has merged our departure (it reads our state before
        it answers).  Gossip carries the news on from there and from the copies just sent."""
        self.leave(now)
        if self.state != SerfState.LEAVING:
            return []
        self.memberlist.leave(now)
        return [self.memberlist.push_pull(addr, now) for addr in confirm_with]

    @property
    def left(self) -> bool:
        return self.state in (SerfState.LEFT, SerfState.SHUTDOWN)

    @property
    def refusal(self) -> str:
        """Why the last `stream_result` refused a reply, for a person (memberlist's)."""
        return self.memberlist.refusal

    @property
    def strict(self) -> bool:
        """Handler and timer exceptions raised instead of counted.  Serf's message handlers run as
        memberlist's delegate, inside memberlist's handlers: memberlist's switch covers them;
        Serf's own timers follow the same switch."""
        return self.memberlist.strict

    @strict.setter
    def strict(self, value: bool) -> None:
        self.memberlist.strict = self._timer_errors.strict = value

    @property
    def handler_errors(self) -> int:
        """Exceptions raised inside message handlers, Serf's or memberlist's ("drop.handler_error"
        in `memberlist.stats`): a bug, each kind logged once with its traceback."""
        return self.memberlist.handler_errors

    def shutdown(self) -> None:
        if self.state == SerfState.SHUTDOWN:
            return
        self.state = SerfState.SHUTDOWN
        self.memberlist.shutdown()
        self._timers.clear()
        for h in list(self._queries.values()):
            h.close()
        self._queries.clear()
        self._wake()

    def drain_events(self) -> list[Event]:
        out = list(self._events)
        self._events.clear()
        return out

    @property
    def keyring(self) -> Keyring | None:
        """memberlist's live keyring (None when encryption is off)."""
        return self.memberlist.codec.keyring

    def encryption_enabled(self) -> bool:
        kr = self.memberlist.codec.keyring
        return kr is not None and bool(kr.keys)

    # ------------------------------------------------------------------ Machine

    def receive_packet(self, data: bytes, source: Address, now: float) -> None:
        self.memberlist.receive_packet(data, source, now)
        self._forward_news(now)

    def receive_stream(self, data: bytes, source: Address, now: float) -> bytes | None:
        reply = self.memberlist.receive_stream(data, source, now)
        self._forward_news(now)
        return reply

    def _forward_news(self, now: float) -> None:
        """A member announced its departure: relay the intent now rather than at our next
        gossip tick, so it crosses a large pool in network round trips, not gossip intervals
        (the relay counts toward its retransmit limit: no extra traffic, only earlier)."""
        if self._forward_now:
            self._forward_now = False
            self.memberlist.gossip_now(now)

    def stream_result(self, stream_id: int, reply: bytes | None, now: float, refused: bool = False) -> bool:
        pj = self._joins.pop(stream_id, None)
        if pj is not None:
            self._join_ignore = pj.ignore_old
            self._merging_join = True
        try:
            ok = self.memberlist.stream_result(stream_id, reply, now, refused)
        finally:
            self._join_ignore = self._merging_join = False
        if pj is not None:
            pj.pending.discard(stream_id)
            if ok:
                pj.ok += 1
            self.join_results[stream_id] = ok
            if not pj.pending and pj.ok > 0 and self.state == SerfState.ALIVE:
                self._broadcast_join(self.clock.time())
                self.memberlist.gossip_now(now)  # our join intent and alive: to peers now
            self._wake()
        return ok

    def tick(self, now: float) -> None:
        if self.state == SerfState.SHUTDOWN:
            return
        self.memberlist.tick(now)
        while True:  # one failing timer is counted; the others (and later ticks) still run
            try:
                self._timers.run_due(now)
                return
            except Exception as exc:  # noqa: BLE001 - logged once per kind, raised if strict (handler_errors.py)
                self._timer_errors.periodic_failed(exc, "serf timer", "timer.errors")

    def next_deadline(self) -> float | None:
        if self.state == SerfState.SHUTDOWN:
            return None
        a = self.memberlist.next_deadline()
        b = self._timers.next_deadline()
        if a is None:
            return b
        if b is None:
            return a
        return min(a, b)

    def drain(self) -> list[Output]:
        return self.memberlist.drain()

    # ------------------------------------------------------------------ memberlist Delegate

    def node_meta(self, limit: int) -> bytes:
        meta = encode_tags(self._tags, self.config.protocol_version)
        if len(meta) > limit:
            # set_tags refuses this up front; never hand memberlist an oversize Meta
            self.stats["tags.too_large"] += 1
            return meta[:0]
        return meta

    def notify_msg(self, msg: bytes) -> None:
        if not msg or self.state == SerfState.SHUTDOWN:
            return
        kind = msg[0]
        try:
            if kind == msgs.SerfMessageType.RELAY:
                self._handle_relay(msg)
                return
            decoded = msgs.decode(msg)
        except msgs.SerfDecodeError as e:
            self.stats["serf.drop." + e.reason] += 1
            return
        if isinstance(decoded, msgs.Leave):
            if self._handle_leave_intent(decoded):
                self._queue(self._broadcasts, bytes(msg))
                self._forward_now = True
        elif isinstance(decoded, msgs.Join):
            if self._handle_join_intent(decoded):
                self._queue(self._broadcasts, bytes(msg))
        elif isinstance(decoded, msgs.UserEventMsg):
            if self._handle_user_event(decoded):
                self._queue(self._event_broadcasts, bytes(msg))
        elif isinstance(decoded, msgs.QueryMsg):
            if self._handle_query(decoded, bytes(msg)):
                self._queue(self._query_broadcasts, bytes(msg))
        elif isinstance(decoded, msgs.QueryResponseMsg):
            self._handle_query_response(decoded)
        else:
            self.stats["serf.drop.unexpected_type"] += 1

    def get_broadcasts(self, overhead: int, limit: int) -> list[bytes]:
        n = (
            self.memberlist.num_members()
        )  # Go sizes Serf's retransmits by memberlist.NumMembers
        out: list[bytes] = []
        for q in (self._broadcasts, self._query_broadcasts, self._event_broadcasts):
            used = sum(len(m) + overhead for m in out)
            if limit - used <= overhead:
                break
            out.extend(q.get_broadcasts(overhead, limit - used, n))
        return out

    def local_state(self, join: bool) -> bytes:
        state = msgs.PushPullState(
            ltime=self.clock.time(),
            status_ltimes={name: ms.status_ltime for name, ms in self._members.items()},
            left_members=[
                name
                for name, ms in self._members.items()
                if ms.member.status == MemberStatus.LEFT
            ],
            event_ltime=self.event_clock.time(),
            events=list(self._event_buffer),
            query_ltime=self.query_clock.time(),
        )
        return msgs.encode(state)

    def merge_remote_state(self, buf: bytes, join: bool) -> None:
        if not buf or buf[0] != msgs.SerfMessageType.PUSH_PULL:
            self.stats["serf.drop.bad_remote_state"] += 1
            return
        try:
            pp = msgs.decode(buf)
        except msgs.SerfDecodeError as e:
            self.stats["serf.drop." + e.reason] += 1
            return
        if not isinstance(pp, msgs.PushPullState):
            return
        if pp.dropped:  # entries with non-UTF-8 names, refused alone (the rest still merges)
            self.stats["serf.drop.bad_utf8_entry"] += pp.dropped
        if pp.ltime > 0:
            self.clock.witness(pp.ltime - 1)
        if pp.event_ltime > 0:
            self.event_clock.witness(pp.event_ltime - 1)
        if pp.query_ltime > 0:
            self.query_clock.witness(pp.query_ltime - 1)
        left = set(pp.left_members)
        for name in pp.left_members:
            # one past the status time (current Go; older Serf used the time itself, which let a
            # node that saw the memberlist death first keep the leaver `failed` for good)
            self._handle_leave_intent(  # uint64 like Go's: 2**64-1 + 1 would make our state unencodable
                msgs.Leave((pp.status_ltimes.get(name, 0) + 1) & _U64, name)
            )
        for name, lt in pp.status_ltimes.items():
            if name not in left:
                self._handle_join_intent(msgs.Join(lt, name))
        if join and self._join_ignore and pp.event_ltime > self._event_min_time:
            self._event_min_time = pp.event_ltime
        for slot in pp.events:
            if slot is None:
                continue
            for entry in slot.events:
                self._handle_user_event(
                    msgs.UserEventMsg(slot.ltime, entry.name, entry.payload, False)
                )

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
                self.stats["leave.before_intent"] += 1
            ms.member.status = MemberStatus.LEFT
            kind = EventType.MEMBER_LEAVE
        elif ms.member.status == MemberStatus.ALIVE:
            ms.member.status = MemberStatus.FAILED
            kind = EventType.MEMBER_FAILED
        else:
            return
        ms.leave_time = self.now
        self._emit(MemberEvent(kind, [ms.member.copy()]))

    def notify_update(self, node: Node) -> None:
        ms = self._members.get(node.name)
        if ms is None:
            return
        m = ms.member
        m.addr, m.port, m.tags, m.vsn = (
            node.addr,
            node.port,
            decode_tags(node.meta),
            node.vsn,
        )
        self._emit(MemberEvent(EventType.MEMBER_UPDATE, [m.copy()]))

    def ack_payload(self) -> bytes:
        if self.config.disable_coordinates:
            return b""
        return encode_ack_payload(self.coord_client.coord)

    def notify_ping_complete(self, node: Node, rtt: float, payload: bytes) -> None:
        if self.config.disable_coordinates or not payload:
            return
        coord = decode_ack_payload(payload)
        if coord is None or not self.coord_client.update(node.name, coord, rtt):
            self.stats["coordinate.rejected"] += 1
            return
        self.coord_cache[node.name] = coord
        self.coord_cache[self.name] = self.coord_client.coord.copy()

    def get_coordinate(self) -> Coordinate:
        return self.coord_client.coord.copy()

    def notify_conflict(self, existing: Node, other: Node) -> None:
        self.stats["conflict.seen"] += 1
        if existing.name == self.name and self._merging_join:
            # A join's reply lists our name alive at another address: that peer (like every
            # member that knows the holder) refused our alive.  Known before the join returns,
            # where the conflict query below takes a query timeout to say so.
            self.stats["conflict.on_join"] += 1
            self.name_taken_by = other
        if (
            existing.name != self.name
            or not self.config.enable_name_conflict_resolution
        ):
            return
        if self.state != SerfState.ALIVE or self._conflict_query is not None:
            return
        self._resolve_conflict()

    # ------------------------------------------------------------------ intents

    def _has_alive_members(self) -> bool:
        return any(
            ms.member.status == MemberStatus.ALIVE and n != self.name
            for n, ms in self._members.items()
        )

    def _broadcast_join(self, ltime: int) -> None:
        msg = msgs.Join(ltime, self.name)
        self.clock.witness(ltime)
        self._handle_join_intent(msg)
        self._queue(self._broadcasts, msgs.encode(msg))

    def _upsert_intent(self, name: str, kind: msgs.SerfMessageType, ltime: int) -> bool:
        cur = self._intents.get(name)
        if cur is None or ltime > cur.ltime:
            self._intents[name] = _Intent(kind, ltime, self.now)
            return True
        return False

    def _handle_join_intent(self, msg: msgs.Join) -> bool:
        self.clock.witness(msg.ltime)
        ms = self._members.get(msg.node)
        if ms is None:
            return self._upsert_intent(msg.node, msgs.SerfMessageType.JOIN, msg.ltime)
        if msg.ltime <= ms.status_ltime:
            return False
        ms.status_ltime = msg.ltime
        if ms.member.status == MemberStatus.LEAVING:
            ms.member.status = MemberStatus.ALIVE
            if self.config.leaving_events:
                self._emit(MemberEvent(EventType.MEMBER_UPDATE, [ms.member.copy()]))
        return True

    def _handle_leave_intent(self, msg: msgs.Leave) -> bool:
        self.clock.witness(msg.ltime)
        ms = self._members.get(msg.node)
        if ms is None:
            return self._upsert_intent(msg.node, msgs.SerfMessageType.LEAVE, msg.ltime)
        if msg.ltime <= ms.status_ltime:
            return False
        if msg.node == self.name and self.state == SerfState.ALIVE:
            # someone thinks we are leaving: refute with a fresh join intent
            self.stats["intent.refuted"] += 1
            self._broadcast_join(self.clock.time())
            return False
        ms.status_ltime = msg.ltime
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

    def _prune(self, ms: MemberState) -> None:
        if ms.member.status == MemberStatus.LEAVING:
            self._timers.schedule(
                self.now
                + self.config.broadcast_timeout
                + self.config.leave_propagate_delay,
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
        del self._members[name]
        self._forget_coordinate(name)
        self._emit(MemberEvent(EventType.MEMBER_REAP, [ms.member.copy()]))

    def _forget_coordinate(self, name: str) -> None:
        self.coord_cache.pop(name, None)
        self.coord_client.forget(name)

    # ------------------------------------------------------------------ leave sequencing

    def _on_leave_intent_sent(self) -> None:
        self._leave_intent_sent = True
        self._timers.schedule(self.now, self._leave_step)

    def _leave_step(self, now: float) -> None:
        if self.state != SerfState.LEAVING:
            return
        if self._leave_stage == 1:
            self._leave_stage = 2
            self.memberlist.leave(now)
            self._leave_deadline = now + self.config.broadcast_timeout
            self._timers.schedule(now, self._leave_step)
        elif self._leave_stage == 2:
            if self.memberlist.leave_done() or now >= self._leave_deadline:
                self._leave_stage = 3
                self._timers.schedule(
                    now + self.config.leave_propagate_delay, self._leave_step
                )
            else:
                self._timers.schedule(
                    now + self.memberlist.config.gossip_interval, self._leave_step
                )
        elif self._leave_stage == 3:
            self.state = SerfState.LEFT
            self._wake()

    # ------------------------------------------------------------------ user events

    def _handle_user_event(self, msg: msgs.UserEventMsg) -> bool:
        self.event_clock.witness(msg.ltime)
        if msg.ltime < self._event_min_time:
            return False
        size = len(self._event_buffer)
        cur = self.event_clock.time()
        if cur > size and msg.ltime < cur - size:
            self.stats["events.too_old"] += 1
            return False
        idx = msg.ltime % size
        slot = self._event_buffer[idx]
        entry = msgs.UserEventEntry(msg.name, msg.payload)
        if slot is not None and slot.ltime == msg.ltime:
            if entry in slot.events:
                return False
        else:
            slot = msgs.UserEventSlot(msg.ltime, [])
            self._event_buffer[idx] = slot
        slot.events.append(entry)
        ev = UserEvent(msg.ltime, msg.name, msg.payload, msg.cc)
        if msg.cc and self.config.user_coalesce_period > 0:
            self._coalesce(ev)
        else:
            self._emit(ev)
        return True

    def _coalesce(self, ev: UserEvent) -> None:
        """Keep only the newest LTime per event name until the period ends or all goes quiet."""
        held = self._coalesced.get(ev.name)
        if held is None or ev.ltime > held[0].ltime:
            self._coalesced[ev.name] = [ev]
        elif ev.ltime == held[0].ltime:
            held.append(ev)
        else:
            self.stats["events.coalesced"] += 1
            return
        if self._coalesce_end is None:
            self._coalesce_end = self._timers.schedule(
                self.now + self.config.user_coalesce_period, self._flush_coalesced
            )
        self._timers.cancel(self._quiet_end)
        quiet = self.config.user_quiescent_period or self.config.user_coalesce_period
        self._quiet_end = self._timers.schedule(self.now + quiet, self._flush_coalesced)

    def _flush_coalesced(self, _now: float) -> None:
        self._timers.cancel(self._coalesce_end)
        self._timers.cancel(self._quiet_end)
        self._coalesce_end = self._quiet_end = None
        held, self._coalesced = self._coalesced, {}
        for events in held.values():
            for ev in events:
                self._emit(ev)

    # ------------------------------------------------------------------ timers

    def _reap_tick(self, now: float) -> None:
        self._timers.schedule(now + self.config.reap_interval, self._reap_tick)  # first: nothing below can stop it
        for name, ms in list(self._members.items()):
            st = ms.member.status
            if (
                (st == MemberStatus.FAILED
                and now - ms.leave_time > self.config.reconnect_timeout)
                or (st == MemberStatus.LEFT
                and now - ms.leave_time > self.config.tombstone_timeout)
            ):
                pass
            else:
                continue
            del self._members[name]
            self._forget_coordinate(name)
            self.stats["members.reaped"] += 1
            self._emit(MemberEvent(EventType.MEMBER_REAP, [ms.member.copy()]))
        horizon = now - self.config.recent_intent_timeout
        for name, intent in list(self._intents.items()):
            if intent.when < horizon:
                del self._intents[name]

    def _reconnect_tick(self, now: float) -> None:
        self._timers.schedule(  # first: nothing below can stop it
            now + self.config.reconnect_interval, self._reconnect_tick
        )
        if self.state != SerfState.ALIVE:
            return
        failed = [
            ms.member
            for ms in self._members.values()
            if ms.member.status == MemberStatus.FAILED
        ]
        if not failed:
            return
        left = sum(
            1 for ms in self._members.values() if ms.member.status == MemberStatus.LEFT
        )
        alive = max(1, len(self._members) - len(failed) - left)
        if self.rng.random() > len(failed) / alive:
            return
        m = self.rng.choice(failed)
        self.stats["reconnect.attempts"] += 1
        self.memberlist.join([Address(m.addr, m.port)], now)

    # ------------------------------------------------------------------ plumbing

    def _queue(
        self,
        q: TransmitLimitedQueue,
        raw: bytes,
        on_done: Callable[[], None] | None = None,
    ) -> None:
        q.queue(None, raw, on_done)
        if len(q) > self.config.max_queue_depth:
            self.stats["broadcasts.pruned"] += len(q) - self.config.max_queue_depth
            q.prune(self.config.max_queue_depth)

    def _emit(self, event: Event) -> None:
        if len(self._events) >= self.config.event_queue_size:
            self._events.popleft()
            self.stats["events.dropped"] += 1
        self._events.append(event)
        self._wake()

    def _wake(self) -> None:
        if self.wakeup is not None:
            self.wakeup()
