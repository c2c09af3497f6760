"""The memberlist core's parts built alone, from real objects (no core, no mocks), for their
unit tests: a membership table, an outbox reading it, a prober, push/pull and the TCP exchanges
using both (the exchanges' "gossip now" is recorded in `gossip_rounds`)."""

from __future__ import annotations

import collections
import logging
import random
from dataclasses import dataclass

from registry.memberlist.awareness import Awareness
from registry.memberlist.broadcast import TransmitLimitedQueue
from registry.memberlist.codec import WireCodec
from registry.memberlist.config import Config
from registry.memberlist.delegate import Hooks
from registry.memberlist.exchange import Exchanges
from registry.memberlist.handler_errors import HandlerErrors
from registry.memberlist.membership import Membership
from registry.memberlist.messages import Alive, Message
from registry.memberlist.outbox import Outbox, make_codec
from registry.memberlist.probe import Prober
from registry.memberlist.pushpull import PushPuller
from registry.memberlist.timers import Clock, TimerHeap
from registry.memberlist.types import DEFAULT_VSN, Address, SendPacket, ip_to_bytes
from tests.memberlist.memberlist_sim import Recorder

ME = Address("10.0.0.1", 7946)


def peer_addr(i: int) -> Address:
    return Address(f"10.0.1.{i}", 7946)


def alive(name: str, inc: int = 1, addr: Address | None = None, meta: bytes = b"") -> Alive:
    where = addr if addr is not None else peer_addr(int(name[1:]) if name[1:].isdigit() else 99)
    return Alive(inc, name, ip_to_bytes(where.host), where.port, meta, DEFAULT_VSN)


@dataclass
class Parts:
    """One node's parts, wired as `core.Memberlist` wires them."""

    config: Config
    clock: Clock
    stats: collections.Counter[str]
    timers: TimerHeap
    queue: TransmitLimitedQueue
    awareness: Awareness
    events: Recorder
    members: Membership
    outbox: Outbox
    prober: Prober
    push_pull: PushPuller
    exchanges: Exchanges
    gossip_rounds: list[float]

    def run(self, until: float) -> None:
        """Advance the clock to `until`, running every timer due on the way."""
        while (at := self.timers.next_deadline()) is not None and at <= until:
            self.clock.now = at
            self.timers.run_due(at)
        self.clock.now = until

    def sent(self) -> list[tuple[Address, list[Message]]]:
        """Packets put out since the last call, decoded."""
        codec = WireCodec()
        out = []
        for o in self.outbox.drain():
            if isinstance(o, SendPacket):
                msgs, _ = codec.decode_packet(o.data)
                out.append((o.addr, list(msgs)))
        return out


def make_parts(name: str = "me", **cfg: object) -> Parts:
    config = Config.fast(name=name, strict=True, **cfg)
    clock, stats, timers = Clock(0.0), collections.Counter[str](), TimerHeap()
    queue = TransmitLimitedQueue(config.retransmit_mult)
    awareness = Awareness(config.awareness_max_multiplier)
    events = Recorder()
    hooks = Hooks(events=events, conflict=events)
    members = Membership(
        config=config,
        advertise=ME,
        clock=clock,
        rng=random.Random(1),
        stats=stats,
        timers=timers,
        broadcasts=queue,
        awareness=awareness,
        hooks=hooks,
    )
    outbox = Outbox(
        config=config, codec=make_codec(config), stats=stats, broadcasts=queue, hooks=hooks, nodes=members.nodes
    )
    prober = Prober(
        config=config,
        advertise=ME,
        clock=clock,
        stats=stats,
        timers=timers,
        awareness=awareness,
        membership=members,
        outbox=outbox,
        hooks=hooks,
    )
    push_pull = PushPuller(config=config, stats=stats, timers=timers, membership=members, outbox=outbox, hooks=hooks)
    gossip_rounds: list[float] = []

    def gossip_now(now: float) -> int:
        gossip_rounds.append(now)
        return 0

    exchanges = Exchanges(
        name=config.name,
        codec=outbox.codec,
        stats=stats,
        handler_errors=HandlerErrors(stats, logging.getLogger(__name__), strict=True),
        hooks=hooks,
        outbox=outbox,
        prober=prober,
        push_pull=push_pull,
        gossip_now=gossip_now,
    )
    members.announce(b"")
    return Parts(
        config,
        clock,
        stats,
        timers,
        queue,
        awareness,
        events,
        members,
        outbox,
        prober,
        push_pull,
        exchanges,
        gossip_rounds,
    )


def queued(parts: Parts) -> list[bytes]:
    """Every broadcast queued, and the queue emptied."""
    msgs = parts.queue.get_broadcasts(0, 1 << 20, 1)
    parts.queue.reset()
    return msgs


__all__ = ["ME", "Parts", "alive", "make_parts", "peer_addr", "queued"]
