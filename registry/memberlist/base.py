"""Shared state and send helpers of the memberlist core (the parts every protocol piece uses).

`CoreBase` only declares the node's tables and knows how to put packets and
streams on the output list; the protocol pieces (state rules, probing,
push/pull, gossip) are mixins on top of it, assembled in `core.Memberlist`.
"""

from __future__ import annotations

import collections
import random
from collections.abc import Callable
from dataclasses import dataclass

from . import codec as wire
from .awareness import Awareness
from .broadcast import TransmitLimitedQueue
from .config import Config
from .delegate import Hooks
from .messages import (
    Message,
)
from .suspicion import Suspicion
from .timers import TimerHeap
from .types import (
    Address,
    Node,
    NodeState,
    OpenStream,
    Output,
    SendPacket,
    ip_from_bytes,
)

__all__ = ["COMPOUND_HEADER", "COMPOUND_PART", "MAX_PARTS", "CoreBase"]

COMPOUND_HEADER = 2  # compound type byte + count
COMPOUND_PART = 2  # per-part length field
USER_MSG_OVERHEAD = 1  # userMsg type byte in front of delegate broadcasts
MAX_PARTS = 255


@dataclass
class StreamCtx:
    """What an outstanding OpenStream was for."""

    kind: str  # "push_pull" | "ping" | "user"
    join: bool = False
    seq: int = 0


class CoreBase:
    config: Config
    advertise: Address
    _hooks: Hooks  # who answers each delegate interface (delegate.py)
    rng: random.Random
    now: float
    stats: collections.Counter[str]
    codec: wire.WireCodec
    awareness: Awareness
    broadcasts: TransmitLimitedQueue
    _advertise_ip: bytes
    _nodes: dict[str, Node]
    _order: list[str]
    _probe_index: int
    _suspicions: dict[str, tuple[Suspicion, int]]
    _timers: TimerHeap
    _out: list[Output]
    _seq: int
    _stream_seq: int
    _incarnation: int
    _streams: dict[int, StreamCtx]
    _leaving: bool
    _leave_sent: bool
    _shutdown: bool
    _death_news: bool
    _n_members: int  # nodes in state ALIVE or SUSPECT, kept by the state rules (num_members is O(1))
    #: bytes we may still send to unverified addresses in answer to the packet being handled
    #: (None outside `receive_packet`: timers and API calls are not answers to anyone)
    _reply_budget: int | None
    #: the layer above may refuse a member's metadata (Serf: tags that are not UTF-8 text)
    accept_meta: Callable[[bytes], bool] | None

    @property
    def name(self) -> str:
        return self.config.name

    def _node_at(self, addr: Address) -> Node | None:
        for n in self._nodes.values():
            if n.port == addr.port and n.addr == addr.host:
                return n
        return None

    def _any_alive_peer(self) -> bool:
        return any(
            n.name != self.name and n.state in (NodeState.ALIVE, NodeState.SUSPECT) for n in self._nodes.values()
        )

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

    def _open(
        self, addr: Address, data: bytes, st: StreamCtx, *, expect_reply: bool = True, timeout: float | None = None
    ) -> int:
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
        delegate = self._hooks.delegate
        if delegate is not None:
            used = sum(len(m) + overhead for m in msgs)
            extra = delegate.get_broadcasts(overhead + USER_MSG_OVERHEAD, limit - used)
            msgs.extend(b"\x08" + m for m in extra)
        return msgs

    def _trusted(self) -> bool:
        """Every packet we accept comes from a key holder (encryption on and enforced)."""
        kr = self.codec.keyring
        return kr is not None and bool(kr.keys) and self.codec.verify_incoming

    def _verified(self, name: str, addr: Address) -> bool:
        """`addr` is where member `name` lives by our table (or every sender holds our key).

        Replies to anything else may be a reflection at a spoofed victim: they are sent
        without piggybacked gossip and within the reply budget of the packet that caused
        them (see `_emit_reply`)."""
        if self._trusted():
            return True
        n = self._nodes.get(name) if name else None
        return n is not None and n.port == addr.port and n.addr == addr.host

    def _emit_reply(self, addr: Address, verified: bool, *msgs: bytes, node: Node | None = None) -> bool:
        """Answer a packet: to a verified address like `_emit` with piggyback; otherwise the
        first of `msgs` (largest first, e.g. an ack with and without its payload) whose wire
        size fits what is left of the packet's reply budget, alone.  So one packet never
        makes us send more bytes than it had to an address we have not verified: no
        amplification towards a spoofed source.  Returns whether anything was sent."""
        if verified or self._reply_budget is None:
            self._emit(addr, msgs[0], node=node, piggyback=True)
            return True
        for m in msgs:
            data = self.codec.encode_packet(m, crc=node is not None and node.pmax >= 5)
            if len(data) <= self._reply_budget:
                self._reply_budget -= len(data)
                self._out.append(SendPacket(addr, data))
                self.stats["packets.sent"] += 1
                return True
        self.stats["drop.reply_budget"] += 1
        return False

    def _emit(self, addr: Address, msg: bytes, *, node: Node | None = None, piggyback: bool = False) -> None:
        """Send one message, optionally filling the rest of the packet with broadcasts."""
        if piggyback:
            # Go forgets the primary's own 2-byte length field and can overshoot by 2; we count it.
            avail = self.config.udp_buffer_size - len(msg) - COMPOUND_PART - COMPOUND_HEADER - self.codec.overhead
            extras = self._get_broadcasts(COMPOUND_PART, avail) if avail > 0 else []
            if extras:
                parts = [msg] + extras
                for i in range(0, len(parts), MAX_PARTS):
                    self._emit_raw(addr, wire.make_compound(parts[i : i + MAX_PARTS]), node)
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
