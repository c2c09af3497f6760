"""A node's outer wire layers stacked in Go's order, with its keyring (docs/wire.md §3.1, §4).

UDP, sending innermost first: message(s) -> compound -> compression -> CRC -> encryption ->
label; a stream: message -> compression -> encryption (with a length header) -> label (only
from the dialer).  Receiving undoes them in the opposite order and unwraps only the nestings
memberlist itself sends (``WireCodec._handle``), so one packet holds at most 255 messages and
inflates once, to at most ``MAX_PACKET_INFLATE`` bytes.  The single layers live in
layers.py, the messages in encoders.py/decoders.py.
"""

from __future__ import annotations

import dataclasses
import struct
from dataclasses import dataclass

from .crypto import EnvelopeVersion, Keyring, envelope_size
from .decoders import decode, decode_push_pull, decode_user_stream
from .encoders import type_prefix
from .fields import TEXT, DecodeError
from .layers import (
    MAX_INFLATE_RATIO,
    MAX_PACKET_INFLATE,
    add_crc,
    compress_msg,
    decompress_msg,
    label_header,
    split_compound,
    strip_crc,
    strip_label,
)
from .messages import Message, MessageType

__all__ = ["STREAM_TYPES", "UDP_TYPES", "WireCodec"]



def _codes(*types: MessageType) -> frozenset[int]:
    # Plain ints for the per-message tests: ``MessageType.X`` costs ~160 ns a lookup, and even
    # a member bound to a global compares ~13 ns slower than an int (the interpreter's fast
    # paths for == and for set and dict lookups take exact ints only); measured on 3.11.
    return frozenset(map(int, types))


#: What memberlist sends in a UDP packet, and on a stream (docs/wire.md §3.7, §4.5).
UDP_TYPES = _codes(
    MessageType.PING,
    MessageType.INDIRECT_PING,
    MessageType.ACK,
    MessageType.SUSPECT,
    MessageType.ALIVE,
    MessageType.DEAD,
    MessageType.USER,
    MessageType.NACK,
)
STREAM_TYPES = _codes(MessageType.PING, MessageType.ACK, MessageType.PUSH_PULL, MessageType.USER, MessageType.ERR)
# the same, for single types
_COMPOUND = int(MessageType.COMPOUND)
_COMPRESS = int(MessageType.COMPRESS)
_USER = int(MessageType.USER)
_ENCRYPT = int(MessageType.ENCRYPT)
_PUSH_PULL = int(MessageType.PUSH_PULL)
_ENCRYPT_PREFIX = type_prefix(MessageType.ENCRYPT)


@dataclass(kw_only=True, eq=False)
class WireCodec:
    """A node's view of the outer wire layers: compression, CRC, encryption, label.

    ``keyring`` may be swapped or edited at run time (Serf key rotation);
    encryption is on whenever it holds a key.
    """

    keyring: Keyring | None = dataclasses.field(default=None, repr=False)
    label: str = ""
    compress: bool = True
    #: UDP is compressed only when this is set too (Go compresses when smaller; receivers take both).
    compress_packets: bool = True
    verify_incoming: bool = True
    verify_outgoing: bool = True
    skip_inbound_label_check: bool = False
    max_decompressed: int = 40 << 20
    max_stream: int = 20 << 20
    #: Largest user message body a stream may carry (None: ``max_stream``). The framer checks it at
    #: the header of a plain stream; a compressed or encrypted one is checked here, once opened.
    max_user: int | None = None
    protocol_version: int = 2
    _label: bytes = dataclasses.field(init=False, repr=False)
    _label_hdr: bytes = dataclasses.field(init=False, repr=False)

    def __post_init__(self) -> None:
        lab = self.label.encode(TEXT)
        if len(lab) > 255:
            raise ValueError("a label is at most 255 bytes")
        self._label = lab
        self._label_hdr = label_header(lab)

    # -- helpers

    def _encrypting(self) -> bool:
        kr = self.keyring
        return kr is not None and bool(kr.keys)

    @property
    def _enc_version(self) -> EnvelopeVersion:
        return EnvelopeVersion.PADDED if self.protocol_version < 2 else EnvelopeVersion.PLAIN

    @property
    def overhead(self) -> int:
        """Bytes added to every UDP packet by the label header and encryption (packing budget)."""
        n = len(self._label_hdr)
        if self._encrypting() and self.verify_outgoing:
            n += envelope_size(0, self._enc_version)
        return n

    def _check_label(self, label: bytes) -> bytes:
        if self.skip_inbound_label_check:
            if label:
                raise DecodeError("label", "unexpected label header")
            return self._label
        if label != self._label:
            raise DecodeError("label", "label mismatch")
        return label

    # -- UDP

    def encode_packet(self, msg: bytes, *, crc: bool = False) -> bytes:
        """Wrap one message (or compound) for UDP the way Go sends it."""
        if self.compress and self.compress_packets:
            c = compress_msg(msg)
            if len(c) < len(msg):
                msg = c
        if crc:
            msg = add_crc(msg)
        kr = self.keyring
        if kr is not None and kr.keys and self.verify_outgoing:
            msg = kr.encrypt(msg, self._label, self._enc_version)
        return self._label_hdr + msg if self._label_hdr else msg

    def decode_packet(self, data: bytes) -> tuple[list[Message], list[str]]:
        """All messages in one datagram, plus drop reasons for unusable parts.

        Raises ``DecodeError`` when nothing in the packet can be used
        (bad label, undecryptable, bad CRC, malformed single message, ...).
        """
        try:
            label, buf = strip_label(data)
            label = self._check_label(label)
            kr = self.keyring
            if kr is not None and kr.keys:
                try:
                    buf = kr.decrypt(buf, label)
                except DecodeError:
                    if self.verify_incoming:
                        raise
            buf = strip_crc(buf)
            out: list[Message] = []
            drops: list[str] = []
            self._handle(buf, out, drops)
            return out, drops
        except DecodeError:
            raise
        except Exception as e:  # noqa: BLE001 - untrusted input
            raise DecodeError("malformed", f"{type(e).__name__}: {e}") from None

    def _handle(
        self, buf: bytes, out: list[Message], drops: list[str], *, inflated: bool = False, in_compound: bool = False
    ) -> None:
        """One message of a packet, unwrapping only what memberlist itself sends.

        Go builds a packet as [compress( compound( plain messages ) )] with either wrapper
        optional (net.go: sendMsg packs broadcasts around one message, rawSendMsgPacket
        compresses the result): a compound never holds a compound or a compressed part,
        and a compressed payload is never compressed again.  Go's receiver would unwrap any
        nesting, which let one 36 KB packet expand to 65,025 pings; we drop such parts
        (counted as "nested"), so one packet holds at most 255 messages and inflates once,
        to at most ``MAX_PACKET_INFLATE`` bytes."""
        if not buf:
            raise DecodeError("truncated", "empty message")
        t = buf[0]
        if t == _COMPOUND:
            if in_compound:
                raise DecodeError("nested", "compound inside a compound")
            parts, truncated = split_compound(buf)
            for p in parts:
                try:
                    self._handle(p, out, drops, inflated=inflated, in_compound=True)
                except DecodeError as e:
                    drops.append(e.reason)
            if truncated:
                drops.append("truncated")
        elif t == _COMPRESS:
            if inflated or in_compound:
                raise DecodeError("nested", "compressed message inside a wrapper")
            limit = min(self.max_decompressed, MAX_PACKET_INFLATE)
            self._handle(decompress_msg(buf[1:], limit), out, drops, inflated=True)
        elif t in UDP_TYPES:
            out.append(decode(buf))
        else:
            raise DecodeError("unknown_type", f"message type {t} in a packet")

    # -- TCP

    def _stream_inflate_limit(self, compressed: int) -> int:
        """Output bound for one compressed stream message: ``max_decompressed``, and at most
        ``MAX_INFLATE_RATIO`` times the compressed size (never below ``MAX_PACKET_INFLATE``),
        so a small bomb stops after a small, bounded amount of work."""
        return min(self.max_decompressed, max(MAX_PACKET_INFLATE, MAX_INFLATE_RATIO * compressed))

    def encode_stream(self, msg: bytes, *, dialer: bool) -> bytes:
        """One stream message: compressed (always, if enabled), encrypted, label header if dialing."""
        if self.compress:
            msg = compress_msg(msg)
        kr = self.keyring
        if kr is not None and kr.keys and self.verify_outgoing:
            ver = self._enc_version
            head = _ENCRYPT_PREFIX + struct.pack(">I", envelope_size(len(msg), ver))
            msg = head + kr.encrypt(msg, head + self._label, ver)
        if dialer and self._label_hdr:
            return self._label_hdr + msg
        return msg

    def decode_stream(self, data: bytes, *, from_dialer: bool) -> Message:
        """Decode one framed stream message (as ``StreamFramer`` returns it)."""
        try:
            if from_dialer:
                label, buf = strip_label(data)
                label = self._check_label(label)
            else:
                label, buf = self._label, data
            if not buf:
                raise DecodeError("truncated", "empty stream")
            if buf[0] == _ENCRYPT:
                buf = self._decrypt_stream(buf, label)
            elif self._encrypting() and self.verify_incoming:
                raise DecodeError("plaintext", "encryption is configured but the stream is not encrypted")
            if buf[0] == _COMPRESS:
                buf = decompress_msg(buf[1:], self._stream_inflate_limit(len(buf)))
            t = buf[0]
            if t not in STREAM_TYPES:
                raise DecodeError("unknown_type", f"message type {t} on a stream")
            if t == _PUSH_PULL:
                return decode_push_pull(buf[1:], self.max_stream)
            if t == _USER:
                return decode_user_stream(buf[1:], self.max_stream if self.max_user is None else self.max_user)
            return decode(buf)
        except DecodeError:
            raise
        except Exception as e:  # noqa: BLE001 - untrusted input
            raise DecodeError("malformed", f"{type(e).__name__}: {e}") from None

    def _decrypt_stream(self, buf: bytes, label: bytes) -> bytes:
        """The plaintext of ``10, length (4 bytes), envelope``; the header and label are its AAD."""
        kr = self.keyring
        if kr is None or not kr.keys:
            raise DecodeError("decrypt", "encrypted stream but no key configured")
        if len(buf) < 5:
            raise DecodeError("truncated", "encrypted stream header")
        (n,) = struct.unpack_from(">I", buf, 1)
        if n > self.max_stream:
            raise DecodeError("too_large", "encrypted stream length")
        if len(buf) < 5 + n:
            raise DecodeError("truncated", "encrypted stream body")
        plain = kr.decrypt(buf[5 : 5 + n], buf[:5] + label)
        if not plain:
            raise DecodeError("truncated", "empty plaintext")
        return plain
