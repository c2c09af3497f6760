"""The sans-I/O Serf machine: tags, Lamport-ordered intents, user events and queries on top of
a `Memberlist`, wire-compatible with hashicorp/serf (protocol 2..5).

`Serf` owns a `Memberlist`, is its `Delegate`, and is itself a `Machine`: a driver (asyncio
runner or `SimNetwork`) feeds it packets, streams and time and carries out what `drain()`
returns.  Rules follow serf.go / delegate.go / query.go (docs/wire.md §10-§15).

This module is the wiring.  Each concern is a part with its own state, given what it needs
explicitly (like Go's serf.go beside delegate.go, event_delegate.go, query.go, coalesce*.go):
- `membership.Membership`: the member table, join/leave intents and their Lamport clock,
  prune/reap/reconnect; memberlist's EventDelegate;
- `joins.PendingJoins`: our joins in flight; `leaving.LeaveSequence`: our graceful leave;
- `user_events.UserEvents` (+ `Coalescer`): the event clock and ring, sending;
- `querying.Queries`: the query clock and ring, asking, answering, relaying;
  `conflict.NameConflicts` (memberlist's ConflictDelegate) and `keyring.answer_key_event`
  answer Serf's internal queries;
- `coordinate.Coordinates`: Vivaldi coordinates in probe acks; memberlist's PingDelegate;
- `app.AppChannel`: app messages, direct and reliable, between registries (not Go's);
- `broadcasts.SerfBroadcasts`: the three gossip queues; `events.EventQueue`: what waits for the
  application (bounded: the oldest is dropped and counted in `stats["events.dropped"]`, so a
  slow consumer never stalls gossip).
`Serf` itself is memberlist's required `Delegate` (delegate.go): its hooks at the end decode
Serf's messages and push/pull state and dispatch them to the parts.  Malformed input is
counted in `stats["serf.drop.<reason>"]`, never raised.
"""

from __future__ import annotations

import collections
import functools
import logging
import random
from collections.abc import Callable
from typing import TYPE_CHECKING

from registry.memberlist.core import Memberlist
from registry.memberlist.delegate import Delegate
from registry.memberlist.handler_errors import HandlerErrors
from registry.memberlist.timers import TimerHeap
from registry.memberlist.types import Address, Node, Output

from . import keyring as keys
from . import messages as msgs
from .app import APP_TYPE, AppChannel, AppHandler
from .broadcasts import SerfBroadcasts
from .config import SerfConfig
from .conflict import NameConflicts
from .coordinate import Coordinate, Coordinates
from .events import Event, EventQueue, QueryEvent
from .joins import PendingJoins
from .leaving import LeaveSequence
from .member import Member, MemberStatus, SerfState
from .membership import Membership
from .query import QueryHandle, QueryParams
from .querying import INTERNAL_QUERY_PREFIX, Queries
from .tags import check_tags, encode_tags, valid_meta
from .user_events import USER_EVENT_HARD_LIMIT, Coalescer, UserEvents

if TYPE_CHECKING:
    from registry.memberlist.crypto import Keyring

__all__ = ["INTERNAL_QUERY_PREFIX", "USER_EVENT_HARD_LIMIT", "Serf", "SerfState"]

log = logging.getLogger(__name__)


class Serf(Delegate):
    """One Serf node's protocol state (see module docstring)."""

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
        self._tags = dict(config.tags)
        check_tags(self._tags, config.protocol_version)
        #: called whenever an event is queued or a query/leave/join makes progress (drivers wake up)
        self.wakeup: Callable[[], None] | None = None
        self._timers = TimerHeap()
        self._events = EventQueue(config.event_queue_size, self.stats, self._wake)
        self._outbox = SerfBroadcasts(config.memberlist.retransmit_mult, config.max_queue_depth, self.stats)
        #: the intents' queue (tests queue raw intents here)
        self._broadcasts = self._outbox.intents
        self._joins = PendingJoins()
        #: every join push/pull's outcome, by stream id
        self.join_results = self._joins.results
        #: a fresh leave intent arrived: pass it on once the current input is handled
        self._forward_now = False

        ml_config = config.memberlist_config()
        self.keyring_file = config.keyring_file
        key_list = keys.initial_keys(config.memberlist.secret_keys, config.encrypt_key, config.keyring_file)
        if key_list:
            ml_config = ml_config.replace(secret_keys=key_list)
        self.name = ml_config.name
        self.coordinates = Coordinates(self.name, self.rng, self.stats, enabled=not config.disable_coordinates)
        self.coord_client = self.coordinates.client
        #: latest coordinate each peer reported in its acks (ours under our own name)
        self.coord_cache = self.coordinates.cache
        self.membership = Membership(
            config,
            self.name,
            stats=self.stats,
            timers=self._timers,
            rng=self.rng,
            now=lambda: self.now,
            local_state=lambda: self.state,
            emit=self._events.emit,
            broadcast=functools.partial(self._outbox.queue, self._outbox.intents),
            forget=self.coordinates.forget,
            rejoin=self._rejoin,
        )
        #: orders join/leave intents
        self.clock = self.membership.clock
        coalescer = None
        if config.user_coalesce_period > 0:
            coalescer = Coalescer(
                config.user_coalesce_period,
                config.user_quiescent_period,
                timers=self._timers,
                now=lambda: self.now,
                stats=self.stats,
                emit=self._events.emit,
            )
        self._user_events = UserEvents(
            config,
            stats=self.stats,
            emit=self._events.emit,
            coalescer=coalescer,
            broadcast=functools.partial(self._outbox.queue, self._outbox.events),
        )
        self.event_clock = self._user_events.clock
        self._conflicts = NameConflicts(
            config,
            lambda: self.memberlist.local_node,
            self.membership,
            stats=self.stats,
            local_state=lambda: self.state,
            during_join=lambda: self._joins.merging,
            ask=lambda op, payload: self.query(INTERNAL_QUERY_PREFIX + op, payload, self.now),
            shutdown=self.shutdown,
        )
        # memberlist announces us (notify_join) from here on: the parts above must exist.  Serf's
        # parts answer memberlist's optional interfaces themselves, as in Go's serf
        self.memberlist = Memberlist(
            ml_config,
            advertise,
            self,
            rng=self.rng,
            now=now,
            events=self.membership,
            conflict=self._conflicts,
            ping=self.coordinates,
        )
        self.memberlist.accept_meta = valid_meta  # a member whose tags are not text is refused
        self._app = AppChannel(self.memberlist, self.membership, self.stats)
        self._queries = Queries(
            config,
            self.memberlist,
            self.membership,
            stats=self.stats,
            timers=self._timers,
            rng=self.rng,
            emit=self._events.emit,
            wake=self._wake,
            broadcast=functools.partial(self._outbox.queue, self._outbox.queries),
            deliver_local=self.notify_msg,
            tags=lambda: self._tags,
            shut_down=lambda: self.state == SerfState.SHUTDOWN,
            encrypted=self.encryption_enabled,
        )
        self.query_clock = self._queries.clock
        self._queries.internal = {"ping": lambda _event: None, "conflict": self._conflicts.answer}
        for op_name, op in keys.KEY_OPS.items():
            self._queries.internal[op_name] = functools.partial(self._answer_key_query, op)
        self._leaving = LeaveSequence(
            config,
            self.memberlist,
            timers=self._timers,
            outbox=self._outbox,
            leaving=lambda: self.state == SerfState.LEAVING,
            on_left=self._on_left,
        )
        self.membership.start(now)

    # ------------------------------------------------------------------ clock

    @property
    def now(self) -> float:
        ml = getattr(self, "memberlist", None)
        return ml.now if ml is not None else self._start

    # ------------------------------------------------------------------ the parts' state that changes

    @property
    def conflict_lost(self) -> bool:
        """A name conflict was lost (Go shuts the node down)."""
        return self._conflicts.lost

    @property
    def name_taken_by(self) -> Node | None:
        """The node holding our name alive elsewhere, as a join's reply showed it."""
        return self._conflicts.taken_by

    # ------------------------------------------------------------------ public API

    def members(self) -> list[Member]:
        """Every member Serf knows, in any status (like `serf members`)."""
        return [ms.member.copy() for ms in self.membership.states()]

    def member(self, name: str) -> Member | None:
        ms = self.membership.get(name)
        return ms.member.copy() if ms is not None else None

    def local_member(self) -> Member:
        ms = self.membership.get(self.name)
        if ms is not None:
            return ms.member.copy()
        node = self.memberlist.local_node
        return Member(node.name, node.addr, node.port, dict(self._tags), MemberStatus.ALIVE, node.vsn)

    @property
    def tags(self) -> dict[str, str]:
        return dict(self._tags)

    def status_ltime(self, name: str) -> int | None:
        ms = self.membership.get(name)
        return ms.status_ltime if ms is not None else None

    def set_tags(self, tags: dict[str, str], now: float) -> None:
        """Replace our tags and gossip them (memberlist alive, incarnation + 1); TagsTooLarge if
        the encoded set exceeds 512 bytes (nothing changes then)."""
        check_tags(tags, self.config.protocol_version)
        self._tags = dict(tags)
        self.memberlist.update_meta(now)
        self._wake()

    def join(self, addresses: list[Address], now: float, ignore_old: bool = True) -> list[int]:
        """Push/pull with each address; when at least one succeeds, gossip our join intent.
        Outcomes land in `join_results[stream_id]`."""
        ids = self.memberlist.join(addresses, now)
        self._joins.add(ids, ignore_old)
        return ids

    def user_event(self, name: str, payload: bytes, coalesce: bool, now: float) -> None:
        """Send a user event (Serf's size checks raise ValueError)."""
        self.memberlist.now = max(self.memberlist.now, now)
        self._user_events.send(name, payload, coalesce)

    def send_app(self, name: str, payload: bytes, now: float) -> bool:
        """An app message to member `name` (reliable, TCP); False when no alive member has that name."""
        return self.state != SerfState.SHUTDOWN and self._app.send(name, payload, now)

    def set_app_handler(self, handler: AppHandler | None) -> None:
        """Who receives app messages' payloads (inside message handling: see `app.py`)."""
        self._app.handler = handler

    def query(self, name: str, payload: bytes, now: float, params: QueryParams | None = None) -> QueryHandle:
        """Start a query; responses accumulate on the returned handle until its deadline."""
        return self._queries.query(name, payload, now, params)

    def default_query_timeout(self) -> float:
        return self._queries.default_query_timeout()

    def leave(self, now: float) -> None:
        """Graceful leave: gossip our leave intent first, then memberlist's dead{me, From=me},
        then wait LeavePropagateDelay; `state` becomes LEFT at the end (`leaving`)."""
        self.memberlist.now = max(self.memberlist.now, now)
        if self.state != SerfState.ALIVE:
            return
        self.state = SerfState.LEAVING
        msg = msgs.Leave(self.clock.time(), self.name, False)
        self.clock.increment()
        self.membership.handle_leave_intent(msg)
        self._leaving.begin(msgs.encode(msg), self.membership.has_alive_others())

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

    def _rejoin(self, addr: Address, now: float) -> None:
        self.memberlist.join([addr], now)

    def _on_left(self) -> None:
        self.state = SerfState.LEFT
        self._wake()

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
        self._queries.close_all()
        self._wake()

    def drain_events(self) -> list[Event]:
        return self._events.drain()

    @property
    def keyring(self) -> Keyring | None:
        """memberlist's live keyring (None when encryption is off)."""
        return self.memberlist.codec.keyring

    def encryption_enabled(self) -> bool:
        kr = self.memberlist.codec.keyring
        return kr is not None and bool(kr.keys)

    def get_coordinate(self) -> Coordinate:
        return self.coordinates.client.coord.copy()

    def _answer_key_query(self, op: keys.KeyOp, event: QueryEvent) -> None:
        kr = self.memberlist.codec.keyring if self.encryption_enabled() else None
        keys.answer_key_event(
            op, event, kr, self.keyring_file, name=self.name, limit=self.config.query_response_size_limit
        )
        self._wake()

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
        join = self._joins.begin(stream_id)
        try:
            ok = self.memberlist.stream_result(stream_id, reply, now, refused)
        finally:
            self._joins.end()
        if join is not None:
            if self._joins.record(join, stream_id, ok) and self.state == SerfState.ALIVE:
                self.membership.broadcast_join(self.clock.time())
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
        due = [d for d in (self.memberlist.next_deadline(), self._timers.next_deadline()) if d is not None]
        return min(due, default=None)

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
        try:
            if msg[0] == msgs.SerfMessageType.RELAY:
                self._queries.handle_relay(msg)
                return
            if msg[0] == APP_TYPE:
                self._app.receive(msg)
                return
            decoded = msgs.decode(msg)
        except msgs.SerfDecodeError as e:
            self.stats["serf.drop." + e.reason] += 1
            return
        outbox = self._outbox
        if isinstance(decoded, msgs.Leave):
            if self.membership.handle_leave_intent(decoded):
                outbox.queue(outbox.intents, bytes(msg))
                self._forward_now = True
        elif isinstance(decoded, msgs.Join):
            if self.membership.handle_join_intent(decoded):
                outbox.queue(outbox.intents, bytes(msg))
        elif isinstance(decoded, msgs.UserEventMsg):
            if self._user_events.handle(decoded):
                outbox.queue(outbox.events, bytes(msg))
        elif isinstance(decoded, msgs.QueryMsg):
            if self._queries.handle(decoded):
                outbox.queue(outbox.queries, bytes(msg))
        elif isinstance(decoded, msgs.QueryResponseMsg):
            self._queries.handle_response(decoded)
        else:
            self.stats["serf.drop.unexpected_type"] += 1

    def get_broadcasts(self, overhead: int, limit: int) -> list[bytes]:
        # Go sizes Serf's retransmits by memberlist.NumMembers
        return self._outbox.get(overhead, limit, self.memberlist.num_members())

    def local_state(self, join: bool) -> bytes:
        state = msgs.PushPullState(
            ltime=self.clock.time(),
            status_ltimes=self.membership.status_ltimes(),
            left_members=self.membership.left_names(),
            event_ltime=self.event_clock.time(),
            events=self._user_events.slots(),
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
        clocks = ((self.clock, pp.ltime), (self.event_clock, pp.event_ltime), (self.query_clock, pp.query_ltime))
        for clock, seen in clocks:
            if seen > 0:
                clock.witness(seen - 1)
        self.membership.merge(pp)
        self._user_events.merge(pp, join and self._joins.ignore_old)

    def _wake(self) -> None:
        if self.wakeup is not None:
            self.wakeup()
