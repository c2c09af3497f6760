"""The sans-I/O SWIM + Lifeguard membership core, wire-compatible with HashiCorp memberlist.

`Memberlist` takes datagrams, stream messages and time in, and hands out
`SendPacket` / `OpenStream` outputs; a driver (asyncio runner or `SimNetwork`)
carries them out.  State rules follow memberlist's state.go (docs/wire.md §8),
gossip and push/pull follow §7/§6/§9.  Malformed or unwanted input is counted
in `stats` under "drop.<reason>" and never raised; an exception inside a handler is a bug,
counted as "drop.handler_error", logged once per kind and raised in strict mode (handler_errors.py).

The protocol lives in parts, each with its own state and unit tests, which this class owns
and wires (as aioquic's connection owns its recovery and stream parts): `Membership`
(membership.py: the table and the alive/suspect/dead rules), `Prober` (probe.py),
`PushPuller` (pushpull.py), `Exchanges` (exchange.py: TCP streams), `Outbox` (outbox.py:
outputs and packet filling), plus the broadcast queue, awareness, suspicion timers, one
`TimerHeap` and one `Clock`.  A part is handed the few objects it uses, never the core.
The delegate's interfaces are resolved once into `Hooks` (delegate.py).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import random
from collections.abc import Callable

from . import codec as wire
from .awareness import Awareness
from .broadcast import TransmitLimitedQueue
from .config import Config, push_pull_scale
from .delegate import (
    DEFAULT,
    AliveDelegate,
    ConflictDelegate,
    Delegate,
    EventDelegate,
    Hooks,
    MergeDelegate,
    PingDelegate,
    Wiring,
    _Default,
)
from .exchange import Exchanges
from .handler_errors import HandlerErrors
from .membership import Membership
from .messages import (
    Ack,
    Alive,
    Dead,
    IndirectPing,
    Message,
    Nack,
    Ping,
    PushPull,
    Suspect,
    UserMsg,
)
from .outbox import Outbox, StreamCtx, make_codec
from .probe import Prober
from .pushpull import PushPuller
from .timers import Clock, TimerHeap
from .types import META_MAX_SIZE, Address, Node, NodeState, Output

__all__ = ["MAX_PINGS_PER_PACKET", "Memberlist"]

log = logging.getLogger(__name__)

#: Pings (and, separately, indirect pings) answered per packet: Go sends one at most.
MAX_PINGS_PER_PACKET = 1


class Memberlist:
    """One memberlist node's protocol state machine (see module docstring).

    It owns the parts and wires them: `Membership` (the table and its rules), `Prober`,
    `PushPuller`, the `Outbox` (output list and packet filling), the broadcast queue, the
    awareness score, the timer heap and the clock they share; it dispatches inputs to them
    and keeps the public API the drivers and Serf use."""

    def __init__(
        self,
        config: Config,
        advertise: Address,
        delegate: Delegate | None = None,
        *,
        rng: random.Random | None = None,
        now: float = 0.0,
        events: EventDelegate | _Default | None = DEFAULT,
        conflict: ConflictDelegate | _Default | None = DEFAULT,
        merge: MergeDelegate | _Default | None = DEFAULT,
        alive: AliveDelegate | _Default | None = DEFAULT,
        ping: PingDelegate | _Default | None = DEFAULT,
    ) -> None:
        """`delegate` gets the required hooks; each optional interface goes to the object
        given for it (None: nobody), else to `delegate` if it implements it (delegate.py)."""
        if not config.name:
            raise ValueError("Config.name must be set")
        try:
            config.name.encode("utf-8")
        except UnicodeEncodeError:
            # peers refuse names that are not UTF-8 text (as we refuse theirs)
            raise ValueError(f"node name {config.name!r} is not valid UTF-8 text") from None
        self.config = config
        self.advertise = advertise
        self._wiring = Wiring(events, conflict, merge, alive, ping)
        self._hooks: Hooks = self._wiring.hooks(delegate)
        self.rng = rng if rng is not None else random.Random()
        self._clock = Clock(now)
        self.stats: collections.Counter[str] = collections.Counter()
        self._handler_errors = HandlerErrors(self.stats, log, strict=config.strict)
        self.codec = make_codec(config)
        self.awareness = Awareness(config.awareness_max_multiplier)
        self.broadcasts = TransmitLimitedQueue(config.retransmit_mult)
        self._timers = TimerHeap()
        self._shutdown = False
        # the parts, each handed what it uses (no part holds the whole core)
        hooks, stats, timers, clock, queue = self._hooks, self.stats, self._timers, self._clock, self.broadcasts
        self._members = members = Membership(
            config=config,
            advertise=advertise,
            clock=clock,
            rng=self.rng,
            stats=stats,
            timers=timers,
            broadcasts=queue,
            awareness=self.awareness,
            hooks=hooks,
        )
        self._outbox = outbox = Outbox(
            config=config, codec=self.codec, stats=stats, broadcasts=queue, hooks=hooks, nodes=members.nodes
        )
        self._prober = Prober(
            config=config,
            advertise=advertise,
            clock=clock,
            stats=stats,
            timers=timers,
            awareness=self.awareness,
            membership=members,
            outbox=outbox,
            hooks=hooks,
        )
        self._push_pull = PushPuller(
            config=config, stats=stats, timers=timers, membership=members, outbox=outbox, hooks=hooks
        )
        self._exchanges = Exchanges(
            name=config.name,
            codec=self.codec,
            stats=stats,
            handler_errors=self._handler_errors,
            hooks=hooks,
            outbox=outbox,
            prober=self._prober,
            push_pull=self._push_pull,
            gossip_now=self.gossip_now,
        )
        members.announce(self._checked_meta(None))
        self._schedule_periodic(now)

    # ------------------------------------------------------------------ public API

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def now(self) -> float:
        return self._clock.now

    @now.setter
    def now(self, value: float) -> None:
        self._clock.now = value

    @property
    def delegate(self) -> Delegate | None:
        return self._hooks.delegate

    @delegate.setter
    def delegate(self, value: Delegate | None) -> None:
        """A new delegate also answers the optional interfaces that were not given explicitly."""
        self._hooks.rewire(self._wiring.hooks(value))

    @property
    def refusal(self) -> str:
        """Why the last `stream_result` refused a reply, for a person ("" when it did not, or
        when only the stats can tell); drivers read it right after the call."""
        return self._exchanges.refusal

    @property
    def accept_meta(self) -> Callable[[bytes], bool] | None:
        """The layer above may refuse a member's metadata (Serf: tags that are not UTF-8 text)."""
        return self._members.accept_meta

    @accept_meta.setter
    def accept_meta(self, value: Callable[[bytes], bool] | None) -> None:
        self._members.accept_meta = value

    @property
    def local_node(self) -> Node:
        return dataclasses.replace(self._members.nodes[self.name])

    @property
    def strict(self) -> bool:
        """Handler exceptions raised to the caller instead of counted (Config.strict); a test
        driver such as `SimNetwork` may switch it on for a machine it was handed."""
        return self._handler_errors.strict

    @strict.setter
    def strict(self, value: bool) -> None:
        self._handler_errors.strict = value

    @property
    def handler_errors(self) -> int:
        """Exceptions raised inside message handlers ("drop.handler_error"): each a bug."""
        return self._handler_errors.count

    @property
    def health_score(self) -> int:
        return self.awareness.score

    @property
    def incarnation(self) -> int:
        return self._members.nodes[self.name].incarnation

    def members(self) -> list[Node]:
        return [
            dataclasses.replace(n)
            for n in self._members.nodes.values()
            if n.state in (NodeState.ALIVE, NodeState.SUSPECT)
        ]

    def all_nodes(self) -> list[Node]:
        return [dataclasses.replace(n) for n in self._members.nodes.values()]

    def num_members(self) -> int:
        return self._members.n_members

    def get(self, name: str) -> Node | None:
        n = self._members.nodes.get(name)
        return dataclasses.replace(n) if n is not None else None

    def join(self, addresses: list[Address], now: float) -> list[int]:
        """Start a Join=true push/pull with each address; results arrive via `stream_result`."""
        self._clock.now = now
        return [self._push_pull.open(addr, join=True) for addr in addresses]

    def push_pull(self, addr: Address, now: float) -> int:
        """Start one anti-entropy push/pull (Join=false) with `addr` now; its outcome arrives
        via `stream_result` (accepted: the peer read our whole state and we merged its)."""
        self._clock.now = now
        return self._push_pull.open(addr, join=False)

    def update_meta(self, now: float, meta: bytes | None = None) -> None:
        self._clock.now = now
        self._members.announce(self._checked_meta(meta))

    def _checked_meta(self, meta: bytes | None) -> bytes:
        """`meta`, or the delegate's when None, refused when over memberlist's limit."""
        if meta is None:
            delegate = self._hooks.delegate
            meta = delegate.node_meta(META_MAX_SIZE) if delegate is not None else b""
        if len(meta) > META_MAX_SIZE:
            raise ValueError(f"node metadata is {len(meta)} bytes, the limit is {META_MAX_SIZE}")
        return meta

    def leave(self, now: float) -> None:
        """Broadcast dead{me, From=me}, handing it to `gossip_nodes` peers at once (not at the
        next gossip tick: a departure is news to spread now); poll `leave_done()` until the
        queue has sent it its full retransmit count."""
        self._clock.now = now
        if self._members.leaving:
            return
        self._members.leave()
        self.gossip_now(now)

    def gossip_now(self, now: float) -> int:
        """Run one gossip round right away, besides the periodic ones (whose schedule stays).

        What is queued goes to `gossip_nodes` random peers now and counts towards its
        retransmit limit as on a tick, so nothing is sent more often than Go would send it,
        only sooner.  For news that must not wait up to a gossip interval (a leave).
        Returns the number of packets put on the output list."""
        if self._shutdown or self.config.gossip_nodes <= 0:
            return 0
        self._clock.now = max(self._clock.now, now)
        before = len(self._outbox.out)
        try:
            self._gossip()
        except Exception as exc:  # noqa: BLE001 - called from handlers and tick: logged once, raised if strict
            self._handler_errors.periodic_failed(exc, "memberlist gossip round", "gossip.errors")
            return len(self._outbox.out) - before
        self.stats["gossip.immediate"] += 1
        return len(self._outbox.out) - before

    def leave_done(self) -> bool:
        return self._members.leave_sent or not self._members.any_alive_peer()

    def shutdown(self) -> None:
        self._shutdown = True
        self._timers.clear()
        self._outbox.out.clear()
        self.broadcasts.reset()

    def send_best_effort(self, addr: Address, payload: bytes, now: float) -> None:
        """One UDP user message.  Called while a packet is being handled (a Serf query
        answer), it is a reply: to an address that is no member's it must fit the packet's
        reply budget (see `Outbox.emit_reply`)."""
        self._clock.now = now
        out = self._outbox
        node = self._members.node_at(addr)
        msg = wire.encode(UserMsg(payload))
        if out.reply_budget is not None and node is None and not out.trusted():
            out.emit_reply(addr, False, msg)
            return
        out.emit(addr, msg, node=node)

    def send_reliable(self, addr: Address, payload: bytes, now: float) -> int:
        self._clock.now = now
        data = self.codec.encode_stream(wire.encode_user_stream(payload), dialer=True)
        return self._outbox.open(addr, data, StreamCtx("user"), expect_reply=False)

    def _local_state(self, join: bool) -> PushPull:
        """Our side of a push/pull (tests encode it to check it always encodes)."""
        return self._push_pull.local_state(join)

    # ------------------------------------------------------------------ Machine

    def drain(self) -> list[Output]:
        return self._outbox.drain()

    def next_deadline(self) -> float | None:
        return None if self._shutdown else self._timers.next_deadline()

    def tick(self, now: float) -> None:
        if self._shutdown:
            return
        self._clock.now = now
        self._run_timers(now)
        self._flush_death_news()

    def _run_timers(self, now: float) -> None:
        """Run every due timer; one that raises is counted and the others still run (the
        periodic ones reschedule in `finally`, so no input can stop them); logged once per
        kind, raised when strict (see handler_errors.py)."""
        while True:
            try:
                self._timers.run_due(now)
                return
            except Exception as exc:  # noqa: BLE001 - logged once per kind, raised if strict
                self._handler_errors.periodic_failed(exc, "memberlist timer", "timer.errors")

    def _flush_death_news(self) -> None:
        """Hand a fresh death to `gossip_nodes` peers now instead of at the next gossip tick.

        A failure is only useful news once every member knows it: each hop waiting for a
        gossip tick adds up to a gossip interval per hop, which in a pool of 30 is about as
        long as the spread itself.  The immediate round counts toward the retransmit limit
        (nothing is sent more often than Go sends it, only sooner) and runs once per input
        that brought deaths, however many it brought."""
        if self._members.death_news:
            self._members.death_news = False
            if self.gossip_now(self._clock.now):
                self.stats["gossip.death_now"] += 1

    def receive_packet(self, data: bytes, source: Address, now: float) -> None:
        if self._shutdown:
            return
        self._clock.now = now
        try:
            msgs, drops = self.codec.decode_packet(data)
        except wire.DecodeError as e:
            self.stats["drop." + e.reason] += 1
            return
        except Exception:  # noqa: BLE001 - hostile input must never escape
            self.stats["drop.malformed"] += 1
            return
        for reason in drops:
            self.stats["drop." + reason] += 1
        # Answers to this packet sent to addresses that are no member's may total at most
        # its own size, and it may ask for one probe and one indirect probe (all Go ever
        # puts in a packet): no input amplifies towards a spoofed source.
        out = self._outbox
        out.reply_budget = len(data)
        pings = indirect = 0
        try:
            for msg in msgs:
                if isinstance(msg, Ping):
                    pings += 1
                    if pings > MAX_PINGS_PER_PACKET:
                        self.stats["drop.extra_ping"] += 1
                        continue
                elif isinstance(msg, IndirectPing):
                    indirect += 1
                    if indirect > MAX_PINGS_PER_PACKET:
                        self.stats["drop.extra_ping"] += 1
                        continue
                try:
                    self._handle_packet_msg(msg, source)
                except Exception as exc:  # noqa: BLE001 - a bug: logged once per kind, raised if strict
                    self._handler_errors.failed(exc, type(msg).__name__, source)
        finally:
            out.reply_budget = None
        self._flush_death_news()

    def receive_stream(self, data: bytes, source: Address, now: float) -> bytes | None:
        if self._shutdown:
            return None
        self._clock.now = now
        try:
            return self._exchanges.answer(data, source, now)
        finally:
            self._flush_death_news()

    def stream_result(self, stream_id: int, reply: bytes | None, now: float, refused: bool = False) -> bool:
        if self._shutdown:
            return False
        self._clock.now = now
        try:
            return self._exchanges.outcome(stream_id, reply, now, refused)
        finally:
            self._flush_death_news()

    # ------------------------------------------------------------------ timers

    def _schedule_periodic(self, now: float) -> None:
        cfg = self.config
        if cfg.probe_interval > 0:
            self._timers.schedule(now + self.rng.uniform(0, cfg.probe_interval), self._prober.tick)
        if cfg.gossip_interval > 0 and cfg.gossip_nodes > 0:
            self._timers.schedule(now + self.rng.uniform(0, cfg.gossip_interval), self._gossip_tick)
        if cfg.push_pull_interval > 0:
            first = push_pull_scale(cfg.push_pull_interval, len(self._members.nodes))
            self._timers.schedule(now + self.rng.uniform(0, first), self._push_pull.tick)

    def _gossip_tick(self, now: float) -> None:
        try:
            self._gossip()
        finally:  # rescheduled whatever happened: no input may stop gossip
            self._timers.schedule(now + self.config.gossip_interval, self._gossip_tick)

    # ------------------------------------------------------------------ packet dispatch

    def _handle_packet_msg(self, msg: Message, source: Address) -> None:
        if isinstance(msg, Ping):
            self._prober.on_ping(msg, source)
        elif isinstance(msg, IndirectPing):
            self._prober.on_indirect_ping(msg, source)
        elif isinstance(msg, Ack):
            self._prober.on_ack(msg)
        elif isinstance(msg, Nack):
            self._prober.on_nack(msg)
        elif isinstance(msg, Alive):
            self._members.on_alive(msg)
        elif isinstance(msg, Suspect):
            self._members.on_suspect(msg)
        elif isinstance(msg, Dead):
            self._members.on_dead(msg)
        elif isinstance(msg, UserMsg):
            delegate = self._hooks.delegate
            if delegate is not None:
                delegate.notify_msg(msg.payload)
        else:
            self.stats["drop.unexpected_packet"] += 1

    # ------------------------------------------------------------------ gossip

    def _gossip(self) -> None:
        if self._hooks.delegate is None and not len(self.broadcasts):
            return  # nothing could be sent: skip picking targets
        self._outbox.gossip(self._members.gossip_targets(self.config.gossip_nodes))
