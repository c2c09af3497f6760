"""SWIM probing with Lifeguard (docs/wire.md §8.3, §8.6), and answering pings.

One node per (awareness-scaled) probe interval, round-robin over a shuffled
list; no ack within probe_timeout -> indirect pings through random helpers
(asking for nacks) and a TCP fallback ping; nothing by the interval's end ->
suspect.  We also serve as the helper for other nodes' indirect probes.

One departure from memberlist: when the TCP fallback ping is *refused* (the target's host
answered that nothing listens on its gossip port: its process is gone), the target is
suspected at once instead of at the interval's end. Waiting could only bring an ack from a
process that the OS just said is not there; suspicion itself, its timeout and the
target's chance to refute are unchanged, so this moves detection earlier by up to
probe_interval - probe_timeout without adding false deaths.
"""

from __future__ import annotations

import collections
import dataclasses
from dataclasses import dataclass, field

from . import codec as wire
from .awareness import Awareness
from .config import Config
from .delegate import Hooks
from .membership import Membership
from .messages import (
    Ack,
    IndirectPing,
    Message,
    Nack,
    Ping,
    Suspect,
)
from .outbox import Outbox, StreamCtx
from .timers import Clock, TimerHeap
from .types import Address, Node, NodeState, ip_from_bytes, ip_to_bytes

__all__ = ["Prober"]


@dataclass
class _Probe:
    """An outstanding probe of `target` (direct, then indirect + TCP fallback)."""

    target: str
    start: float
    deadline: float
    expected_nacks: int = 0
    nacks: int = 0
    tcp_ok: bool = False
    done: bool = False
    timers: list[int] = field(default_factory=list)


@dataclass
class _Relay:
    """We forward an indirect ping for `requester`; ack/nack goes back to `reply_to`."""

    orig_seq: int
    reply_to: Address
    want_nack: bool
    timer: int = 0
    #: `reply_to` is a member's address: the answer may carry piggybacked gossip (else it
    #: goes alone, its size reserved from the request's reply budget)
    verified: bool = True


@dataclass(eq=False, repr=False, kw_only=True)
class Prober:
    """One part of the core (`core.Memberlist` owns it): the probe schedule, outstanding
    probes and relayed indirect probes, and the Lifeguard health score they feed.

    A failed probe becomes a suspicion through `Membership.on_suspect`, the one way a row
    changes; packets go out through the `Outbox`."""

    config: Config
    advertise: Address
    clock: Clock
    stats: collections.Counter[str]
    timers: TimerHeap
    awareness: Awareness
    membership: Membership
    outbox: Outbox
    hooks: Hooks
    probes: dict[int, _Probe] = field(default_factory=dict, init=False)
    relays: dict[int, _Relay] = field(default_factory=dict, init=False)
    _seq: int = field(default=0, init=False)  # ping sequence numbers (ours and relayed)
    name: str = field(default="", init=False)
    advertise_ip: bytes = field(default=b"", init=False)

    def __post_init__(self) -> None:
        self.name = self.config.name
        self.advertise_ip = ip_to_bytes(self.advertise.host)

    def tick(self, now: float) -> None:
        """The periodic probe: the next node in probe order, then itself again an (awareness-
        scaled) interval later."""
        interval = self.awareness.scale(self.config.probe_interval)
        try:
            node = self.membership.next_to_probe(now)
            if node is not None:
                self._probe_node(node, now, interval)
        finally:  # rescheduled whatever happened: no input may stop probing
            self.timers.schedule(now + interval, self.tick)

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        return self._seq

    # ------------------------------------------------------------------ probing

    def _probe_node(self, node: Node, now: float, interval: float) -> None:
        seq = self._next_seq()
        probe = _Probe(node.name, now, now + interval)
        self.probes[seq] = probe
        ping = wire.encode(self._ping(seq, node.name))
        if node.state == NodeState.ALIVE:
            self.outbox.emit(node.address, ping, node=node, piggyback=True)
        else:
            sus = wire.encode(Suspect(node.incarnation, node.name, self.name))
            self.outbox.emit(node.address, wire.make_compound([ping, sus]), node=node)
        self.stats["probe.sent"] += 1
        probe.timers.append(
            self.timers.schedule(now + self.config.probe_timeout, lambda t: self._probe_indirect(seq, t))
        )
        probe.timers.append(self.timers.schedule(probe.deadline, lambda t: self._probe_finish(seq, t)))

    def _ping(self, seq: int, target: str) -> Ping:
        return Ping(
            seq_no=seq,
            node=target,
            source_addr=self.advertise_ip,
            source_port=self.advertise.port,
            source_node=self.name,
        )

    def _probe_indirect(self, seq: int, now: float) -> None:
        probe = self.probes.get(seq)
        if probe is None or probe.done:
            return
        node = self.membership.nodes.get(probe.target)
        if node is None:
            return
        helpers = self.membership.random_nodes(
            self.config.indirect_checks,
            lambda n: n.name in (self.name, probe.target) or n.state != NodeState.ALIVE,
        )
        addr = ip_to_bytes(node.addr)
        for h in helpers:
            want_nack = h.pmax >= 4
            if want_nack:
                probe.expected_nacks += 1
            req = IndirectPing(
                seq_no=seq,
                target=addr,
                port=node.port,
                node=node.name,
                nack=want_nack,
                source_addr=self.advertise_ip,
                source_port=self.advertise.port,
                source_node=self.name,
            )
            self.outbox.emit(h.address, wire.encode(req), node=h, piggyback=True)
        self.stats["probe.indirect"] += 1
        if not self.config.disable_tcp_pings and node.pmax >= 3:
            data = self.outbox.codec.encode_stream(wire.encode(self._ping(seq, node.name)), dialer=True)
            self.outbox.open(node.address, data, StreamCtx("ping", seq=seq), timeout=max(0.001, probe.deadline - now))

    def tcp_ping_refused(self, seq: int, now: float) -> None:
        """The fallback ping's connection was refused: suspect now (see the module docstring)."""
        probe = self.probes.get(seq)
        if probe is None or probe.done or probe.tcp_ok:
            return
        self.stats["probe.tcp_refused"] += 1
        for t in probe.timers:
            self.timers.cancel(t)
        self._probe_finish(seq, now, refused=True)

    def _probe_finish(self, seq: int, now: float, refused: bool = False) -> None:
        probe = self.probes.pop(seq, None)
        if probe is None or probe.done:
            return
        probe.done = True
        if probe.tcp_ok:
            self.stats["probe.tcp_fallback_ok"] += 1
            self.awareness.apply_delta(-1)
            return
        self.stats["probe.failed"] += 1
        if refused:
            pass  # early: missing nacks would say nothing about our own health (Lifeguard's score)
        elif probe.expected_nacks > 0:
            self.awareness.apply_delta(probe.expected_nacks - probe.nacks)
        else:
            self.awareness.apply_delta(1)
        node = self.membership.nodes.get(probe.target)
        if node is not None and node.state not in (NodeState.DEAD, NodeState.LEFT):
            self.membership.on_suspect(Suspect(node.incarnation, node.name, self.name))

    def on_ack(self, ack: Ack) -> None:
        """An ack: for one of our probes, or for a ping we relay (passed back to its asker)."""
        if self._probe_acked(ack.seq_no, ack.payload, self.clock.now):
            return
        relay = self.relays.pop(ack.seq_no, None)
        if relay is not None:
            self.timers.cancel(relay.timer)
            answer = wire.encode(Ack(relay.orig_seq, None))  # its size was reserved if unverified
            self.outbox.emit(relay.reply_to, answer, piggyback=relay.verified)
        else:
            self.stats["drop.unknown_ack"] += 1

    def on_nack(self, nack: Nack) -> None:
        probe = self.probes.get(nack.seq_no)
        if probe is not None and not probe.done:
            probe.nacks += 1
        else:
            self.stats["drop.unknown_nack"] += 1

    def _probe_acked(self, seq: int, payload: bytes | None, now: float) -> bool:
        probe = self.probes.get(seq)
        if probe is None or probe.done:
            return False
        probe.done = True
        del self.probes[seq]
        for t in probe.timers:
            self.timers.cancel(t)
        self.awareness.apply_delta(-1)
        self.stats["probe.ok"] += 1
        node = self.membership.nodes.get(probe.target)
        ping = self.hooks.ping
        if node is not None and ping is not None:
            ping.notify_ping_complete(dataclasses.replace(node), now - probe.start, payload or b"")
        return True

    def tcp_ping_result(self, seq: int, msg: Message) -> bool:
        probe = self.probes.get(seq)
        if isinstance(msg, Ack) and msg.seq_no == seq:
            if probe is not None:
                probe.tcp_ok = True
            return True
        self.stats["drop.bad_tcp_ack"] += 1
        return False

    # ------------------------------------------------------------------ answering

    def on_ping(self, ping: Ping, source: Address) -> None:
        if ping.node and ping.node != self.name:
            self.stats["drop.ping_wrong_node"] += 1
            return
        hook = self.hooks.ping
        payload = (hook.ack_payload() or None) if hook is not None else None
        out = self.outbox
        dest = out.reply_addr(ping.source_addr, ping.source_port, source)
        verified = out.verified(ping.source_node, dest)
        full = wire.encode(Ack(ping.seq_no, payload))
        if payload is None:
            out.emit_reply(dest, verified, full)
        else:  # an unverified asker gets the bare ack if the coordinate would not fit its budget
            out.emit_reply(dest, verified, full, wire.encode(Ack(ping.seq_no, None)))

    def on_indirect_ping(self, req: IndirectPing, source: Address) -> None:
        try:
            target = Address(ip_from_bytes(req.target), req.port or self.advertise.port)
        except ValueError:
            self.stats["drop.bad_target"] += 1
            return
        out = self.outbox
        reply_to = out.reply_addr(req.source_addr, req.source_port, source)
        verified = out.verified(req.source_node, reply_to)
        if not verified and out.reply_budget is not None:
            # reserve the answer we owe (a relayed ack, or a nack) out of this packet's budget
            owed = len(out.codec.encode_packet(wire.encode(Ack(req.seq_no, None))))
            if owed > out.reply_budget:
                self.stats["drop.reply_budget"] += 1
                return
            out.reply_budget -= owed
        seq = self._next_seq()
        node = self.membership.nodes.get(req.node)
        ping = wire.encode(self._ping(seq, req.node))
        if not out.emit_reply(target, out.verified(req.node, target), ping, node=node):
            return
        relay = _Relay(req.seq_no, reply_to, req.nack, verified=verified)
        self.relays[seq] = relay
        relay.timer = self.timers.schedule(
            self.clock.now + self.config.probe_timeout, lambda t: self._relay_expired(seq)
        )

    def _relay_expired(self, seq: int) -> None:
        relay = self.relays.pop(seq, None)
        if relay is not None and relay.want_nack:
            self.outbox.emit(relay.reply_to, wire.encode(Nack(relay.orig_seq)), piggyback=relay.verified)
