"""What the memberlist core sends: packets with piggybacked gossip, streams, bounded replies.

One part of the core (`core.Memberlist` owns it): the output list a driver drains, the
outstanding streams, and the rules for filling a packet (docs/wire.md §7): a message first,
then as many queued broadcasts as fit, split into compounds of at most 255 parts.  Replies
to addresses that are no member's are bounded by the size of the packet that caused them
(the reply budget), so no input makes us amplify traffic towards a spoofed source.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

from . import codec as wire
from .broadcast import TransmitLimitedQueue
from .config import Config
from .delegate import Hooks
from .messages import Message
from .types import Address, Node, OpenStream, Output, SendPacket, ip_from_bytes

__all__ = ["COMPOUND_HEADER", "COMPOUND_PART", "MAX_PARTS", "Outbox", "StreamCtx", "make_codec"]

COMPOUND_HEADER = 2  # compound type byte + count
COMPOUND_PART = 2  # per-part length field
USER_MSG_OVERHEAD = 1  # userMsg type byte in front of delegate broadcasts
MAX_PARTS = 255


def make_codec(config: Config) -> wire.WireCodec:
    """The codec a node's config asks for (keys, label, compression, limits)."""
    keyring = None
    if config.secret_keys:
        from .crypto import Keyring  # lazy: cryptography only when a key is configured

        keyring = Keyring(config.secret_keys)
    return wire.WireCodec(
        keyring=keyring,
        label=config.label,
        compress=config.enable_compression,
        compress_packets=config.enable_compression and config.compress_packets,
        verify_incoming=config.gossip_verify_incoming,
        verify_outgoing=config.gossip_verify_outgoing,
        skip_inbound_label_check=config.skip_inbound_label_check,
        max_decompressed=config.max_decompressed_size,
        max_stream=config.max_stream_size,
        max_user=config.max_stream_user_msg_size,
        protocol_version=config.protocol_version,
    )


@dataclass
class StreamCtx:
    """What an outstanding OpenStream was for."""

    kind: str  # "push_pull" | "ping" | "user"
    join: bool = False
    seq: int = 0


@dataclass(eq=False, repr=False, kw_only=True)
class Outbox:
    """The core's outputs and the rules for what goes into a packet (module docstring).

    Reads the membership table (`nodes`, by name) only to tell a member's address from a
    stranger's and to size retransmits; never changes it."""

    config: Config
    codec: wire.WireCodec
    stats: collections.Counter[str]
    broadcasts: TransmitLimitedQueue
    hooks: Hooks
    nodes: dict[str, Node]
    out: list[Output] = field(default_factory=list, init=False)
    streams: dict[int, StreamCtx] = field(default_factory=dict, init=False)
    _stream_seq: int = field(default=0, init=False)
    #: bytes we may still send to unverified addresses in answer to the packet being handled
    #: (None outside `receive_packet`: timers and API calls are not answers to anyone)
    reply_budget: int | None = field(default=None, init=False)

    def drain(self) -> list[Output]:
        out, self.out = self.out, []
        return out

    # ------------------------------------------------------------------ streams

    def open(
        self, addr: Address, data: bytes, st: StreamCtx, *, expect_reply: bool = True, timeout: float | None = None
    ) -> int:
        self._stream_seq += 1
        sid = self._stream_seq
        self.streams[sid] = st
        self.out.append(
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

    def stream_reply(self, msg: Message) -> bytes:
        return self.codec.encode_stream(wire.encode(msg), dialer=False)

    # ------------------------------------------------------------------ packets

    def get_broadcasts(self, overhead: int, limit: int) -> list[bytes]:
        msgs = self.broadcasts.get_broadcasts(overhead, limit, len(self.nodes))
        delegate = self.hooks.delegate
        if delegate is not None:
            used = sum(len(m) + overhead for m in msgs)
            extra = delegate.get_broadcasts(overhead + USER_MSG_OVERHEAD, limit - used)
            msgs.extend(b"\x08" + m for m in extra)
        return msgs

    def encrypting(self) -> bool:
        kr = self.codec.keyring
        return kr is not None and bool(kr.keys)

    def trusted(self) -> bool:
        """Every packet we accept comes from a key holder (encryption on and enforced)."""
        kr = self.codec.keyring
        return kr is not None and bool(kr.keys) and self.codec.verify_incoming

    def verified(self, name: str, addr: Address) -> bool:
        """`addr` is where member `name` lives by our table (or every sender holds our key).

        Replies to anything else may be a reflection at a spoofed victim: they are sent
        without piggybacked gossip and within the reply budget of the packet that caused
        them (see `emit_reply`)."""
        if self.trusted():
            return True
        n = self.nodes.get(name) if name else None
        return n is not None and n.port == addr.port and n.addr == addr.host

    def emit_reply(self, addr: Address, verified: bool, *msgs: bytes, node: Node | None = None) -> bool:
        """Answer a packet: to a verified address like `emit` with piggyback; otherwise the
        first of `msgs` (largest first, e.g. an ack with and without its payload) whose wire
        size fits what is left of the packet's reply budget, alone.  So one packet never
        makes us send more bytes than it had to an address we have not verified: no
        amplification towards a spoofed source.  Returns whether anything was sent."""
        if verified or self.reply_budget is None:
            self.emit(addr, msgs[0], node=node, piggyback=True)
            return True
        for m in msgs:
            data = self.codec.encode_packet(m, crc=node is not None and node.pmax >= 5)
            if len(data) <= self.reply_budget:
                self.reply_budget -= len(data)
                self.out.append(SendPacket(addr, data))
                self.stats["packets.sent"] += 1
                return True
        self.stats["drop.reply_budget"] += 1
        return False

    def emit(self, addr: Address, msg: bytes, *, node: Node | None = None, piggyback: bool = False) -> None:
        """Send one message, optionally filling the rest of the packet with broadcasts."""
        if piggyback:
            # Go forgets the primary's own 2-byte length field and can overshoot by 2; we count it.
            avail = self.config.udp_buffer_size - len(msg) - COMPOUND_PART - COMPOUND_HEADER - self.codec.overhead
            extras = self.get_broadcasts(COMPOUND_PART, avail) if avail > 0 else []
            if extras:
                parts = [msg] + extras
                for i in range(0, len(parts), MAX_PARTS):
                    self.emit_raw(addr, wire.make_compound(parts[i : i + MAX_PARTS]), node)
                return
        self.emit_raw(addr, msg, node)

    def emit_raw(self, addr: Address, msg: bytes, node: Node | None) -> None:
        crc = node is not None and node.pmax >= 5
        self.out.append(SendPacket(addr, self.codec.encode_packet(msg, crc=crc)))
        self.stats["packets.sent"] += 1

    def gossip(self, targets: list[Node]) -> None:
        """One gossip round: to each target a packet of queued broadcasts, while any remain."""
        budget = self.config.udp_buffer_size - COMPOUND_HEADER - self.codec.overhead
        for node in targets:
            msgs = self.get_broadcasts(COMPOUND_PART, budget)
            if not msgs:
                return
            if len(msgs) == 1:
                self.emit_raw(node.address, msgs[0], node)
            else:
                for i in range(0, len(msgs), MAX_PARTS):
                    self.emit_raw(node.address, wire.make_compound(msgs[i : i + MAX_PARTS]), node)

    def reply_addr(self, source_addr: bytes, source_port: int, source: Address) -> Address:
        """Where a ping's answer goes: the address it names for itself, else where it came from."""
        if source_addr and source_port:
            try:
                return Address(ip_from_bytes(source_addr), source_port)
            except ValueError:
                self.stats["drop.bad_source_addr"] += 1
        return source
