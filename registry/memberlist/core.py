"""The sans-I/O SWIM + Lifeguard membership core, wire-compatible with HashiCorp memberlist.

`Memberlist` takes datagrams, stream messages and time in, and hands out
`SendPacket` / `OpenStream` outputs; a driver (asyncio runner or `SimNetwork`)
carries them out.  State rules follow memberlist's state.go (reference §8),
gossip and push/pull follow §5/§6/§9.  Malformed or unwanted input is counted
in `stats` under "drop.<reason>" and never raised.
"""

from __future__ import annotations

import collections
import dataclasses
import random
from dataclasses import dataclass, field
from typing import Callable

from . import codec as wire
from .awareness import Awareness
from .broadcast import TransmitLimitedQueue, retransmit_limit
from .config import Config, push_pull_scale, suspicion_timeout
from .delegate import Delegate
from .messages import (
    Ack,
    Alive,
    Dead,
    ErrResp,
    IndirectPing,
    Message,
    Nack,
    Ping,
    PushNodeState,
    PushPull,
    Suspect,
    UserMsg,
)
from .suspicion import Suspicion
from .timers import TimerHeap
from .types import META_MAX_SIZE, Address, Node, NodeState, OpenStream, Output, SendPacket, ip_from_bytes, ip_to_bytes

__all__ = ["Memberlist"]

_COMPOUND_HEADER = 2  # compound type byte + count
_COMPOUND_PART = 2  # per-part length field
_USER_MSG_OVERHEAD = 1  # userMsg type byte in front of delegate broadcasts
_MAX_PARTS = 255


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


@dataclass
class _Stream:
    kind: str  # "push_pull" | "ping" | "user"
    join: bool = False
    seq: int = 0


class Memberlist:
    """One memberlist node's protocol state machine (see module docstring)."""

    def __init__(
        self,
        config: Config,
        advertise: Address,
        delegate: Delegate | None = None,
        *,
        rng: random.Random | None = None,
        now: float = 0.0,
    ) -> None:
        if not config.name:
            raise ValueError("Config.name must be set")
        self.config = config
        self.advertise = advertise
        self.delegate = delegate
        self.rng = rng if rng is not None else random.Random()
        self.now = now
        self.stats: collections.Counter[str] = collections.Counter()
        self.codec = self._make_codec(config)
        self.awareness = Awareness(config.awareness_max_multiplier)
        self._advertise_ip = ip_to_bytes(advertise.host)
        self.broadcasts = TransmitLimitedQueue(config.retransmit_mult)

        self._nodes: dict[str, Node] = {}
        self._order: list[str] = []  # probe order
        self._probe_index = 0
        self._suspicions: dict[str, tuple[Suspicion, int]] = {}
        self._timers = TimerHeap()
        self._out: list[Output] = []
        self._seq = 0
        self._stream_seq = 0
        self._incarnation = 0
        self._probes: dict[int, _Probe] = {}
        self._relays: dict[int, _Relay] = {}
        self._streams: dict[int, _Stream] = {}
        self._leaving = False
        self._leave_sent = False
        self._shutdown = False

        meta = delegate.node_meta(META_MAX_SIZE) if delegate is not None else b""
        if len(meta) > META_MAX_SIZE:
            raise ValueError(f"node metadata is {len(meta)} bytes, the limit is {META_MAX_SIZE}")
        self._incarnation = 1
        self._on_alive(self._self_alive(self._incarnation, meta), bootstrap=True)
        self._schedule_periodic(now)

    # ------------------------------------------------------------------ public API

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def local_node(self) -> Node:
        return dataclasses.replace(self._nodes[self.name])

    @property
    def health_score(self) -> int:
        return self.awareness.score

    @property
    def incarnation(self) -> int:
        return self._nodes[self.name].incarnation

    def members(self) -> list[Node]:
        return [dataclasses.replace(n) for n in self._nodes.values() if n.state in (NodeState.ALIVE, NodeState.SUSPECT)]

    def all_nodes(self) -> list[Node]:
        return [dataclasses.replace(n) for n in self._nodes.values()]

    def num_members(self) -> int:
        return sum(1 for n in self._nodes.values() if n.state in (NodeState.ALIVE, NodeState.SUSPECT))

    def get(self, name: str) -> Node | None:
        n = self._nodes.get(name)
        return dataclasses.replace(n) if n is not None else None

    def join(self, addresses: list[Address], now: float) -> list[int]:
        """Start a Join=true push/pull with each address; results arrive via `stream_result`."""
        self.now = now
        ids = []
        for addr in addresses:
            ids.append(self._open_push_pull(addr, join=True))
        return ids

    def update_meta(self, now: float, meta: bytes | None = None) -> None:
        self.now = now
        if meta is None:
            meta = self.delegate.node_meta(META_MAX_SIZE) if self.delegate is not None else b""
        if len(meta) > META_MAX_SIZE:
            raise ValueError(f"node metadata is {len(meta)} bytes, the limit is {META_MAX_SIZE}")
        self._incarnation = self._nodes[self.name].incarnation + 1
        self._on_alive(self._self_alive(self._incarnation, meta), bootstrap=True)

    def leave(self, now: float) -> None:
        """Broadcast dead{me, From=me}; poll `leave_done()` until it went out."""
        self.now = now
        if self._leaving:
            return
        self._leaving = True
        me = self._nodes[self.name]
        if not self._any_alive_peer():
            self._leave_sent = True
        self._on_dead(Dead(me.incarnation, self.name, self.name))

    def leave_done(self) -> bool:
        return self._leave_sent or not self._any_alive_peer()

    def shutdown(self) -> None:
        self._shutdown = True
        self._timers.clear()
        self._out.clear()
        self.broadcasts.reset()

    def send_best_effort(self, addr: Address, payload: bytes, now: float) -> None:
        self.now = now
        self._emit(addr, wire.encode(UserMsg(payload)), node=self._node_at(addr))

    def send_reliable(self, addr: Address, payload: bytes, now: float) -> int:
        self.now = now
        data = self.codec.encode_stream(wire.encode_user_stream(payload), dialer=True)
        return self._open(addr, data, _Stream("user"), expect_reply=False)

    # ------------------------------------------------------------------ Machine

    def drain(self) -> list[Output]:
        out, self._out = self._out, []
        return out

    def next_deadline(self) -> float | None:
        return None if self._shutdown else self._timers.next_deadline()

    def tick(self, now: float) -> None:
        if self._shutdown:
            return
        self.now = now
        self._timers.run_due(now)

    def receive_packet(self, data: bytes, source: Address, now: float) -> None:
        if self._shutdown:
            return
        self.now = now
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
        for msg in msgs:
            try:
                self._handle_packet_msg(msg, source)
            except Exception:  # noqa: BLE001
                self.stats["drop.handler_error"] += 1

    def receive_stream(self, data: bytes, source: Address, now: float) -> bytes | None:
        if self._shutdown:
            return None
        self.now = now
        try:
            msg = self.codec.decode_stream(data, from_dialer=True)
        except wire.DecodeError as e:
            self.stats["drop." + e.reason] += 1
            return self._stream_reply(ErrResp(f"failed to receive: {e.reason}"))
        except Exception:  # noqa: BLE001
            self.stats["drop.malformed"] += 1
            return self._stream_reply(ErrResp("failed to receive: malformed"))
        try:
            return self._handle_stream_msg(msg, source)
        except Exception:  # noqa: BLE001
            self.stats["drop.handler_error"] += 1
            return None

    def stream_result(self, stream_id: int, reply: bytes | None, now: float) -> bool:
        if self._shutdown:
            return False
        self.now = now
        st = self._streams.pop(stream_id, None)
        if st is None:
            return False
        if st.kind == "user":
            ok = reply is not None
            self.stats["stream.user." + ("ok" if ok else "failed")] += 1
            return ok
        if reply is None:
            self.stats[f"stream.{st.kind}.failed"] += 1
            return False
        try:
            msg = self.codec.decode_stream(reply, from_dialer=False)
        except wire.DecodeError as e:
            self.stats["drop." + e.reason] += 1
            return False
        except Exception:  # noqa: BLE001
            self.stats["drop.malformed"] += 1
            return False
        try:
            if st.kind == "ping":
                return self._tcp_ping_result(st.seq, msg)
            if isinstance(msg, ErrResp):
                self.stats["push_pull.remote_error"] += 1
                return False
            if not isinstance(msg, PushPull):
                self.stats["drop.unexpected_reply"] += 1
                return False
            ok = self._merge_remote(msg, st.join)
            self.stats["push_pull." + ("ok" if ok else "failed")] += 1
            return ok
        except Exception:  # noqa: BLE001
            self.stats["drop.handler_error"] += 1
            return False

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _make_codec(config: Config) -> wire.WireCodec:
        keyring = None
        if config.secret_keys:
            from .crypto import Keyring  # lazy: cryptography only when a key is configured

            keyring = Keyring(config.secret_keys)
        return wire.WireCodec(
            keyring=keyring,
            label=config.label,
            compress=config.enable_compression,
            verify_incoming=config.gossip_verify_incoming,
            verify_outgoing=config.gossip_verify_outgoing,
            skip_inbound_label_check=config.skip_inbound_label_check,
            max_decompressed=config.max_decompressed_size,
            max_stream=config.max_stream_size,
            protocol_version=config.protocol_version,
        )

    def _self_alive(self, incarnation: int, meta: bytes) -> Alive:
        return Alive(
            incarnation=incarnation,
            node=self.name,
            addr=self._advertise_ip,
            port=self.advertise.port,
            meta=meta,
            vsn=self.config.vsn,
        )

    def _node_at(self, addr: Address) -> Node | None:
        for n in self._nodes.values():
            if n.port == addr.port and n.addr == addr.host:
                return n
        return None

    def _any_alive_peer(self) -> bool:
        return any(n.name != self.name and n.state == NodeState.ALIVE for n in self._nodes.values())

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        return self._seq

    def _random_nodes(self, k: int, exclude: Callable[[Node], bool]) -> list[Node]:
        """Up to k distinct random nodes not excluded (Go's kRandomNodes).

        Small tables are filtered exhaustively; large ones are sampled with up to 3n random
        draws, so a gossip tick costs O(k), not O(n)."""
        order = self._order
        n = len(order)
        if n <= 3 * k + 3:
            pool = [nd for name in order if (nd := self._nodes.get(name)) is not None and not exclude(nd)]
            if len(pool) <= k:
                self.rng.shuffle(pool)
                return pool
            return self.rng.sample(pool, k)
        picked: dict[str, Node] = {}
        for _ in range(3 * n):
            if len(picked) >= k:
                break
            nd = self._nodes.get(order[self.rng.randrange(n)])
            if nd is None or nd.name in picked or exclude(nd):
                continue
            picked[nd.name] = nd
        return list(picked.values())

    def _stream_reply(self, msg: Message) -> bytes:
        return self.codec.encode_stream(wire.encode(msg), dialer=False)

    def _open(self, addr: Address, data: bytes, st: _Stream, *, expect_reply: bool = True, timeout: float | None = None) -> int:
        self._stream_seq += 1
        sid = self._stream_seq
        self._streams[sid] = st
        self._out.append(
            OpenStream(
                stream_id=sid,
                addr=addr,
                data=data,
                timeout=self.config.tcp_timeout if timeout is None else timeout,
                expect_reply=expect_reply,
                kind=st.kind,
            )
        )
        return sid

    # ------------------------------------------------------------------ sending

    def _get_broadcasts(self, overhead: int, limit: int) -> list[bytes]:
        msgs = self.broadcasts.get_broadcasts(overhead, limit, len(self._nodes))
        if self.delegate is not None:
            used = sum(len(m) + overhead for m in msgs)
            extra = self.delegate.get_broadcasts(overhead + _USER_MSG_OVERHEAD, limit - used)
            msgs.extend(b"\x08" + m for m in extra)
        return msgs

    def _emit(self, addr: Address, msg: bytes, *, node: Node | None = None, piggyback: bool = False) -> None:
        """Send one message, optionally filling the rest of the packet with broadcasts."""
        if piggyback:
            avail = self.config.udp_buffer_size - len(msg) - _COMPOUND_HEADER - self.codec.overhead
            extras = self._get_broadcasts(_COMPOUND_PART, avail) if avail > 0 else []
            if extras:
                parts = [msg] + extras
                for i in range(0, len(parts), _MAX_PARTS):
                    self._emit_raw(addr, wire.make_compound(parts[i : i + _MAX_PARTS]), node)
                return
        self._emit_raw(addr, msg, node)

    def _emit_raw(self, addr: Address, msg: bytes, node: Node | None) -> None:
        crc = node is not None and node.pmax >= 5
        self._out.append(SendPacket(addr, self.codec.encode_packet(msg, crc=crc)))
        self.stats["packets.sent"] += 1

    def _reply_addr(self, source_addr: bytes, source_port: int, source: Address) -> Address:
        if source_addr and source_port:
            try:
                return Address(ip_from_bytes(source_addr), source_port)
            except ValueError:
                self.stats["drop.bad_source_addr"] += 1
        return source

    # ------------------------------------------------------------------ timers

    def _schedule_periodic(self, now: float) -> None:
        cfg = self.config
        if cfg.probe_interval > 0:
            self._timers.schedule(now + self.rng.uniform(0, cfg.probe_interval), self._probe_tick)
        if cfg.gossip_interval > 0 and cfg.gossip_nodes > 0:
            self._timers.schedule(now + self.rng.uniform(0, cfg.gossip_interval), self._gossip_tick)
        if cfg.push_pull_interval > 0:
            first = push_pull_scale(cfg.push_pull_interval, len(self._nodes))
            self._timers.schedule(now + self.rng.uniform(0, first), self._push_pull_tick)

    def _probe_tick(self, now: float) -> None:
        interval = self.awareness.scale(self.config.probe_interval)
        self._probe_next(now, interval)
        self._timers.schedule(now + interval, self._probe_tick)

    def _gossip_tick(self, now: float) -> None:
        self._gossip()
        self._timers.schedule(now + self.config.gossip_interval, self._gossip_tick)

    def _push_pull_tick(self, now: float) -> None:
        peers = self._random_nodes(1, lambda n: n.name == self.name or n.state != NodeState.ALIVE)
        if peers:
            self._open_push_pull(peers[0].address, join=False)
        self._timers.schedule(now + push_pull_scale(self.config.push_pull_interval, len(self._nodes)), self._push_pull_tick)

    # ------------------------------------------------------------------ probing

    def _probe_next(self, now: float, interval: float) -> None:
        checked = 0
        while checked <= len(self._order):
            if self._probe_index >= len(self._order):
                self._reset_nodes(now)
                self._probe_index = 0
                checked += 1
                continue
            node = self._nodes.get(self._order[self._probe_index])
            self._probe_index += 1
            if node is None or node.name == self.name or node.state in (NodeState.DEAD, NodeState.LEFT):
                checked += 1
                continue
            self._probe_node(node, now, interval)
            return

    def _reset_nodes(self, now: float) -> None:
        """On wrap: reap dead/left nodes older than gossip_to_the_dead_time, reshuffle."""
        horizon = self.config.gossip_to_the_dead_time
        for name in list(self._order):
            n = self._nodes[name]
            if n.state in (NodeState.DEAD, NodeState.LEFT) and now - n.state_change > horizon and name != self.name:
                del self._nodes[name]
                self._cancel_suspicion(name)
                self.stats["nodes.reaped"] += 1
        self._order = list(self._nodes)
        self.rng.shuffle(self._order)

    def _probe_node(self, node: Node, now: float, interval: float) -> None:
        seq = self._next_seq()
        probe = _Probe(node.name, now, now + interval)
        self._probes[seq] = probe
        ping = wire.encode(self._ping(seq, node.name))
        if node.state == NodeState.ALIVE:
            self._emit(node.address, ping, node=node, piggyback=True)
        else:
            sus = wire.encode(Suspect(node.incarnation, node.name, self.name))
            self._emit(node.address, wire.make_compound([ping, sus]), node=node)
        self.stats["probe.sent"] += 1
        probe.timers.append(self._timers.schedule(now + self.config.probe_timeout, lambda t: self._probe_indirect(seq, t)))
        probe.timers.append(self._timers.schedule(probe.deadline, lambda t: self._probe_finish(seq, t)))

    def _ping(self, seq: int, target: str) -> Ping:
        return Ping(
            seq_no=seq,
            node=target,
            source_addr=self._advertise_ip,
            source_port=self.advertise.port,
            source_node=self.name,
        )

    def _probe_indirect(self, seq: int, now: float) -> None:
        probe = self._probes.get(seq)
        if probe is None or probe.done:
            return
        node = self._nodes.get(probe.target)
        if node is None:
            return
        helpers = self._random_nodes(
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
                source_addr=self._advertise_ip,
                source_port=self.advertise.port,
                source_node=self.name,
            )
            self._emit(h.address, wire.encode(req), node=h, piggyback=True)
        self.stats["probe.indirect"] += 1
        if not self.config.disable_tcp_pings and node.pmax >= 3:
            data = self.codec.encode_stream(wire.encode(self._ping(seq, node.name)), dialer=True)
            self._open(node.address, data, _Stream("ping", seq=seq), timeout=max(0.001, probe.deadline - now))

    def _probe_finish(self, seq: int, now: float) -> None:
        probe = self._probes.pop(seq, None)
        if probe is None or probe.done:
            return
        probe.done = True
        if probe.tcp_ok:
            self.stats["probe.tcp_fallback_ok"] += 1
            self.awareness.apply_delta(-1)
            return
        self.stats["probe.failed"] += 1
        if probe.expected_nacks > 0:
            self.awareness.apply_delta(probe.expected_nacks - probe.nacks)
        else:
            self.awareness.apply_delta(1)
        node = self._nodes.get(probe.target)
        if node is not None and node.state not in (NodeState.DEAD, NodeState.LEFT):
            self._on_suspect(Suspect(node.incarnation, node.name, self.name))

    def _probe_acked(self, seq: int, payload: bytes | None, now: float) -> bool:
        probe = self._probes.get(seq)
        if probe is None or probe.done:
            return False
        probe.done = True
        del self._probes[seq]
        for t in probe.timers:
            self._timers.cancel(t)
        self.awareness.apply_delta(-1)
        self.stats["probe.ok"] += 1
        node = self._nodes.get(probe.target)
        if node is not None and self.delegate is not None:
            self.delegate.notify_ping_complete(dataclasses.replace(node), now - probe.start, payload or b"")
        return True

    def _tcp_ping_result(self, seq: int, msg: Message) -> bool:
        probe = self._probes.get(seq)
        if isinstance(msg, Ack) and msg.seq_no == seq:
            if probe is not None:
                probe.tcp_ok = True
            return True
        self.stats["drop.bad_tcp_ack"] += 1
        return False

    # ------------------------------------------------------------------ packet dispatch

    def _handle_packet_msg(self, msg: Message, source: Address) -> None:
        if isinstance(msg, Ping):
            self._on_ping(msg, source)
        elif isinstance(msg, IndirectPing):
            self._on_indirect_ping(msg, source)
        elif isinstance(msg, Ack):
            if not self._probe_acked(msg.seq_no, msg.payload, self.now):
                relay = self._relays.pop(msg.seq_no, None)
                if relay is not None:
                    self._timers.cancel(relay.timer)
                    self._emit(relay.reply_to, wire.encode(Ack(relay.orig_seq, None)), piggyback=True)
                else:
                    self.stats["drop.unknown_ack"] += 1
        elif isinstance(msg, Nack):
            probe = self._probes.get(msg.seq_no)
            if probe is not None and not probe.done:
                probe.nacks += 1
            else:
                self.stats["drop.unknown_nack"] += 1
        elif isinstance(msg, Alive):
            self._on_alive(msg)
        elif isinstance(msg, Suspect):
            self._on_suspect(msg)
        elif isinstance(msg, Dead):
            self._on_dead(msg)
        elif isinstance(msg, UserMsg):
            if self.delegate is not None:
                self.delegate.notify_msg(msg.payload)
        else:
            self.stats["drop.unexpected_packet"] += 1

    def _on_ping(self, ping: Ping, source: Address) -> None:
        if ping.node and ping.node != self.name:
            self.stats["drop.ping_wrong_node"] += 1
            return
        payload = (self.delegate.ack_payload() or None) if self.delegate is not None else None
        dest = self._reply_addr(ping.source_addr, ping.source_port, source)
        self._emit(dest, wire.encode(Ack(ping.seq_no, payload)), piggyback=True)

    def _on_indirect_ping(self, req: IndirectPing, source: Address) -> None:
        try:
            target = Address(ip_from_bytes(req.target), req.port or self.advertise.port)
        except ValueError:
            self.stats["drop.bad_target"] += 1
            return
        reply_to = self._reply_addr(req.source_addr, req.source_port, source)
        seq = self._next_seq()
        relay = _Relay(req.seq_no, reply_to, req.nack)
        self._relays[seq] = relay
        relay.timer = self._timers.schedule(self.now + self.config.probe_timeout, lambda t: self._relay_expired(seq))
        self._emit(target, wire.encode(self._ping(seq, req.node)), node=self._nodes.get(req.node), piggyback=True)

    def _relay_expired(self, seq: int) -> None:
        relay = self._relays.pop(seq, None)
        if relay is not None and relay.want_nack:
            self._emit(relay.reply_to, wire.encode(Nack(relay.orig_seq)), piggyback=True)

    # ------------------------------------------------------------------ streams

    def _handle_stream_msg(self, msg: Message, source: Address) -> bytes | None:
        if isinstance(msg, Ping):
            if msg.node and msg.node != self.name:
                self.stats["drop.ping_wrong_node"] += 1
                return None
            return self._stream_reply(Ack(msg.seq_no, None))
        if isinstance(msg, PushPull):
            if len(msg.nodes) > self.config.max_push_pull_nodes:
                self.stats["drop.too_large"] += 1
                return self._stream_reply(ErrResp("too many nodes"))
            reply = self._stream_reply(self._local_state(msg.join))
            ok = self._merge_remote(msg, msg.join)
            self.stats["push_pull.inbound_" + ("ok" if ok else "failed")] += 1
            return reply
        if isinstance(msg, UserMsg):
            if self.delegate is not None:
                self.delegate.notify_msg(msg.payload)
            return None
        self.stats["drop.unexpected_stream"] += 1
        return None

    def _open_push_pull(self, addr: Address, join: bool) -> int:
        data = self.codec.encode_stream(wire.encode(self._local_state(join)), dialer=True)
        self.stats["push_pull.sent"] += 1
        return self._open(addr, data, _Stream("push_pull", join=join))

    def _local_state(self, join: bool) -> PushPull:
        nodes = [
            PushNodeState(
                name=n.name,
                addr=ip_to_bytes(n.addr),
                port=n.port,
                meta=n.meta,
                incarnation=n.incarnation,
                state=int(n.state),
                vsn=n.vsn,
            )
            for n in self._nodes.values()
        ]
        user = self.delegate.local_state(join) if self.delegate is not None else b""
        return PushPull(join=join, nodes=nodes, user_state=user)

    def _verify_protocol(self, remote: list[PushNodeState]) -> bool:
        """Go's verifyProtocol: every node's current versions inside everyone's common range."""
        vsns = [n.vsn for n in self._nodes.values() if n.state == NodeState.ALIVE]
        vsns += [r.vsn for r in remote if r.state == int(NodeState.ALIVE)]
        ranged = [v for v in vsns if len(v) >= 5]
        if not ranged:
            return True
        p_lo = max(v[0] for v in ranged)
        p_hi = min(v[1] for v in ranged)
        d_lo = max(v[3] for v in ranged)
        d_hi = min(v[4] for v in ranged)
        for v in [n.vsn for n in self._nodes.values()] + [r.vsn for r in remote]:
            pcur = v[2] if len(v) >= 6 else 0
            dcur = v[5] if len(v) >= 6 else 0
            if not (p_lo <= pcur <= p_hi and d_lo <= dcur <= d_hi):
                return False
        return True

    def _merge_remote(self, pp: PushPull, join: bool) -> bool:
        if not self._verify_protocol(pp.nodes):
            self.stats["drop.incompatible_version"] += 1
            return False
        if join and self.delegate is not None:
            peers = [self._node_from_state(r) for r in pp.nodes]
            err = self.delegate.notify_merge(peers)
            if err:
                self.stats["drop.merge_vetoed"] += 1
                return False
        for r in pp.nodes:
            try:
                st = NodeState(r.state)
            except ValueError:
                self.stats["drop.bad_state"] += 1
                continue
            if st == NodeState.ALIVE:
                self._on_alive(Alive(r.incarnation, r.name, r.addr, r.port, r.meta, r.vsn))
            elif st == NodeState.LEFT:
                self._on_dead(Dead(r.incarnation, r.name, r.name))
            else:
                self._on_suspect(Suspect(r.incarnation, r.name, self.name))
        if pp.user_state and self.delegate is not None:
            self.delegate.merge_remote_state(pp.user_state, join)
        return True

    @staticmethod
    def _node_from_state(r: PushNodeState) -> Node:
        try:
            host = ip_from_bytes(r.addr)
        except ValueError:
            host = ""
        return Node(r.name, host, r.port, r.meta or b"", r.vsn, NodeState(r.state) if 0 <= r.state <= 3 else NodeState.DEAD, r.incarnation)

    # ------------------------------------------------------------------ gossip

    def _gossip(self) -> None:
        if self.delegate is None and not len(self.broadcasts):
            return  # nothing could be sent: skip picking targets
        horizon = self.config.gossip_to_the_dead_time

        def exclude(n: Node) -> bool:
            if n.name == self.name:
                return True
            if n.state in (NodeState.ALIVE, NodeState.SUSPECT):
                return False
            if n.state == NodeState.DEAD:
                return self.now - n.state_change > horizon
            return True

        targets = self._random_nodes(self.config.gossip_nodes, exclude)
        budget = self.config.udp_buffer_size - _COMPOUND_HEADER - self.codec.overhead
        for node in targets:
            msgs = self._get_broadcasts(_COMPOUND_PART, budget)
            if not msgs:
                return
            if len(msgs) == 1:
                self._emit_raw(node.address, msgs[0], node)
            else:
                for i in range(0, len(msgs), _MAX_PARTS):
                    self._emit_raw(node.address, wire.make_compound(msgs[i : i + _MAX_PARTS]), node)

    # ------------------------------------------------------------------ state machine (§8.2)

    def _cancel_suspicion(self, name: str) -> None:
        entry = self._suspicions.pop(name, None)
        if entry is not None:
            self._timers.cancel(entry[1])

    def _refute(self, me: Node, accused: int) -> None:
        inc = self._incarnation + 1
        if accused >= inc:
            inc = accused + 1
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
        if self.delegate is not None and not bootstrap:
            err = self.delegate.notify_alive(Node(a.node, host, port, meta, a.vsn, NodeState.ALIVE, a.incarnation))
            if err:
                self.stats["drop.alive_vetoed"] += 1
                return
        state = self._nodes.get(a.node)
        updates_node = False
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
                if self.delegate is not None:
                    other = Node(a.node, host, port, meta, a.vsn, NodeState.ALIVE, a.incarnation)
                    self.delegate.notify_conflict(dataclasses.replace(state), other)
                return
        if a.incarnation <= state.incarnation and not is_local and not updates_node:
            return
        if a.incarnation < state.incarnation and is_local:
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
            state.state = NodeState.ALIVE
            state.state_change = self.now
        if self.delegate is not None:
            if old_state in (NodeState.DEAD, NodeState.LEFT):
                self.delegate.notify_join(dataclasses.replace(state))
            elif old_meta != state.meta or updates_node:
                self.delegate.notify_update(dataclasses.replace(state))

    def _on_suspect(self, s: Suspect) -> None:
        state = self._nodes.get(s.node)
        if state is None or s.incarnation < state.incarnation:
            return
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
        if state is None or d.incarnation < state.incarnation:
            return
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
        state.state = NodeState.LEFT if d.node == d.sender else NodeState.DEAD
        state.state_change = self.now
        if self.delegate is not None:
            self.delegate.notify_leave(dataclasses.replace(state))

    def _leave_transmitted(self) -> None:
        self._leave_sent = True
