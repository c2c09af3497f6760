"""memberlist wire codec: messages <-> bytes exactly as go-msgpack 0.5.x writes them.

Sans-I/O.  ``encode``/``decode`` handle one message (type byte + body);
``WireCodec`` adds the outer layers of a UDP packet or TCP stream message
(compression, CRC, encryption, label) with a node's configuration.

Every decode entry point raises only ``DecodeError`` with a short ``reason``
(a counter key): peers are untrusted, and the node must drop bad input and
count it, never crash on it.

Validated once, here, so the state machines never hold what they could not send on
(issue 11: one alive whose name was not UTF-8 once made every push/pull reply
unencodable, pool-wide):

* text (node names, ``From``, ``Error``) must be UTF-8: the message is refused
  ("bad_utf8").  Go strings are byte strings, so a Go node may legally carry such a
  name; we do not admit that member (it cannot be served over gRPC either, whose strings
  are UTF-8), refuse gossip about it, skip its row in a push/pull (the rest merges), and
  still answer its probes (a probe's sender name is only a lookup hint, see ``_hint``);
* ``Vsn`` must be 6 bytes ("bad_vsn") and ``Meta`` at most 512 bytes ("meta_too_large"),
  as Go sends them: both are re-encoded in every push/pull we send;
* wrappers nest only as memberlist nests them (``WireCodec._handle``), and inflate to at
  most ``MAX_PACKET_INFLATE`` bytes per packet, ``MAX_INFLATE_RATIO`` x per stream.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgpack

from . import lzw
from .messages import (
    Ack,
    Alive,
    Dead,
    ErrResp,
    IndirectPing,
    Message,
    MessageType,
    Nack,
    Ping,
    PushNodeState,
    PushPull,
    Suspect,
    UserMsg,
)
from .types import META_MAX_SIZE

if TYPE_CHECKING:
    from .crypto import Keyring

__all__ = [
    "MAX_INFLATE_RATIO",
    "MAX_PACKET_INFLATE",
    "MAX_PUSH_NODES",
    "VSN_LEN",
    "DecodeError",
    "WireCodec",
    "decode",
    "encode",
    "encode_user_stream",
    "label_header",
    "make_compound",
    "split_compound",
    "strip_label",
]

#: Upper bound on ``pushPullHeader.Nodes`` (Go master's limit).
MAX_PUSH_NODES = 1 << 20
#: ``Vsn`` is always ``[pmin, pmax, pcur, dmin, dmax, dcur]``.
VSN_LEN = 6

# Plain-int type codes for hot paths (enum attribute lookups cost ~150 ns each).
_COMPOUND = int(MessageType.COMPOUND)
_COMPRESS = int(MessageType.COMPRESS)
_USER = int(MessageType.USER)
_CRC = int(MessageType.HAS_CRC)
_LABEL = int(MessageType.HAS_LABEL)
_ENCRYPT = int(MessageType.ENCRYPT)
_PUSH_PULL = int(MessageType.PUSH_PULL)
_U32 = 0xFFFFFFFF
_U16 = 0xFFFF
_TEXT = "utf-8"
#: Largest message a UDP packet may inflate to: a datagram carries at most 64 KiB, and Go
#: compresses a packet only when that makes it smaller, so nothing legitimate is larger.
MAX_PACKET_INFLATE = 1 << 16
#: Stream messages may inflate to ``max_decompressed`` but never to more than this many
#: times their compressed size (Go's LZW of real push/pull state stays far below it; a
#: bomb reaches ~2,500:1) -- and never below ``MAX_PACKET_INFLATE``.
MAX_INFLATE_RATIO = 64


class DecodeError(ValueError):
    """Input that cannot be used; ``reason`` is a short stable key for drop counters."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


# --------------------------------------------------------------------- encoding


def _t(s: str) -> bytes:
    # Strict: every text we hold was validated at decode (or is our own, checked at start),
    # so this cannot raise on anything the wire gave us.
    return s.encode(_TEXT)


def _packb(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=False)  # type: ignore[no-any-return]


def _enc_ping(m: Ping) -> bytes:
    d: dict[bytes, Any] = {b"Node": _t(m.node), b"SeqNo": m.seq_no}
    if m.source_addr:
        d[b"SourceAddr"] = m.source_addr
    if m.source_node:
        d[b"SourceNode"] = _t(m.source_node)
    if m.source_port:
        d[b"SourcePort"] = m.source_port
    return b"\x00" + _packb(d)


def _enc_indirect(m: IndirectPing) -> bytes:
    d: dict[bytes, Any] = {
        b"Nack": m.nack,
        b"Node": _t(m.node),
        b"Port": m.port,
        b"SeqNo": m.seq_no,
    }
    if m.source_addr:
        d[b"SourceAddr"] = m.source_addr
    if m.source_node:
        d[b"SourceNode"] = _t(m.source_node)
    if m.source_port:
        d[b"SourcePort"] = m.source_port
    d[b"Target"] = m.target
    return b"\x01" + _packb(d)


def _enc_ack(m: Ack) -> bytes:
    return b"\x02" + _packb({b"Payload": m.payload, b"SeqNo": m.seq_no})


def _enc_nack(m: Nack) -> bytes:
    return b"\x0b" + _packb({b"SeqNo": m.seq_no})


def _enc_suspect(m: Suspect) -> bytes:
    return b"\x03" + _packb(
        {b"From": _t(m.sender), b"Incarnation": m.incarnation, b"Node": _t(m.node)}
    )


def _enc_dead(m: Dead) -> bytes:
    return b"\x05" + _packb(
        {b"From": _t(m.sender), b"Incarnation": m.incarnation, b"Node": _t(m.node)}
    )


def _check_vsn(vsn: bytes) -> bytes:
    if len(vsn) != VSN_LEN:
        raise ValueError(f"Vsn must be {VSN_LEN} bytes, got {len(vsn)}")
    return bytes(vsn)


def _enc_alive(m: Alive) -> bytes:
    return b"\x04" + _packb(
        {
            b"Addr": m.addr,
            b"Incarnation": m.incarnation,
            b"Meta": m.meta,
            b"Node": _t(m.node),
            b"Port": m.port,
            b"Vsn": _check_vsn(m.vsn),
        }
    )


def _enc_push_node(n: PushNodeState) -> bytes:
    return _packb(
        {
            b"Addr": n.addr,
            b"Incarnation": n.incarnation,
            b"Meta": n.meta,
            b"Name": _t(n.name),
            b"Port": n.port,
            b"State": n.state,
            b"Vsn": _check_vsn(n.vsn),
        }
    )


def _enc_push_pull(m: PushPull) -> bytes:
    head = _packb(
        {b"Join": m.join, b"Nodes": len(m.nodes), b"UserStateLen": len(m.user_state)}
    )
    return b"".join([b"\x06", head, *map(_enc_push_node, m.nodes), m.user_state])


def _enc_user(m: UserMsg) -> bytes:
    return b"\x08" + m.payload


def _enc_err(m: ErrResp) -> bytes:
    return b"\x0d" + _packb({b"Error": _t(m.error)})


_ENCODERS: dict[type, Callable[[Any], bytes]] = {
    Ping: _enc_ping,
    IndirectPing: _enc_indirect,
    Ack: _enc_ack,
    Nack: _enc_nack,
    Suspect: _enc_suspect,
    Alive: _enc_alive,
    Dead: _enc_dead,
    PushPull: _enc_push_pull,
    UserMsg: _enc_user,
    ErrResp: _enc_err,
}


def encode(msg: Message) -> bytes:
    """Type byte + msgpack body, byte-identical to Go; a ``UserMsg`` gets the UDP form (0x08 + payload)."""
    try:
        enc = _ENCODERS[type(msg)]
    except KeyError:
        raise TypeError(f"not a memberlist message: {type(msg).__name__}") from None
    return enc(msg)


def encode_user_stream(payload: bytes) -> bytes:
    """TCP form of a user message: 0x08, ``{UserMsgLen}``, then the payload bytes."""
    return b"\x08" + _packb({b"UserMsgLen": len(payload)}) + payload


def make_compound(parts: list[bytes]) -> bytes:
    """Compound message (type 7) of 1..255 complete messages; the caller splits larger batches."""
    if not 0 < len(parts) <= 255:
        raise ValueError(f"a compound holds 1..255 parts, not {len(parts)}")
    lengths = [len(p) for p in parts]
    if max(lengths) > 0xFFFF:
        raise ValueError("a compound part is limited to 65535 bytes")
    return b"".join(
        [bytes((7, len(parts))), struct.pack(f">{len(parts)}H", *lengths), *parts]
    )


def split_compound(data: bytes) -> tuple[list[bytes], bool]:
    """Parts of a compound message (``data`` starts with its type byte 7).

    Returns ``(parts, truncated)``: as in Go, a part running past the end is
    dropped together with all later ones, earlier parts are kept.
    """
    if len(data) < 2 or data[0] != MessageType.COMPOUND:
        raise DecodeError(
            "truncated" if len(data) < 2 else "malformed", "compound header"
        )
    n = data[1]
    pos = 2 + 2 * n
    if len(data) < pos:
        raise DecodeError("truncated", "compound length table")
    lengths = struct.unpack_from(f">{n}H", data, 2)
    parts: list[bytes] = []
    for ln in lengths:
        end = pos + ln
        if end > len(data):
            return parts, True
        parts.append(data[pos:end])
        pos = end
    return parts, False


# --------------------------------------------------------------------- decoding


def _obj(body: bytes) -> Any:
    """First msgpack object of ``body``; trailing bytes are ignored like Go's stream decoder."""
    try:
        return msgpack.unpackb(body, raw=True)
    except msgpack.ExtraData as e:
        return e.unpacked
    except ValueError as e:  # FormatError/StackError/OutOfData are ValueErrors too
        short = isinstance(e, msgpack.OutOfData) or "incomplete" in str(e)
        raise DecodeError("truncated" if short else "malformed", str(e)) from None


def _map(body: bytes) -> dict[Any, Any]:
    obj = _obj(body)
    if not isinstance(obj, dict):
        raise DecodeError("malformed", "body is not a map")
    return obj


def _uint(d: dict[Any, Any], key: bytes, bits: int) -> int:
    v = d.get(key, 0)
    if v is None:
        return 0
    if type(v) is not int or v < 0 or v >> bits:
        raise DecodeError("malformed", f"{key.decode()} is not a uint{bits}")
    return v


def _int(d: dict[Any, Any], key: bytes) -> int:
    v = d.get(key, 0)
    if v is None:
        return 0
    if type(v) is not int or not -(1 << 63) <= v < (1 << 63):
        raise DecodeError("malformed", f"{key.decode()} is not an int")
    return v


def _str(d: dict[Any, Any], key: bytes) -> str:
    v = d.get(key)
    if v is None:
        return ""
    if type(v) is not bytes:
        raise DecodeError("malformed", f"{key.decode()} is not a string")
    return v.decode(_TEXT)  # invalid UTF-8 -> UnicodeDecodeError -> DecodeError("bad_utf8") in decode()


def _bin(d: dict[Any, Any], key: bytes) -> bytes:
    v = d.get(key)
    if v is None:
        return b""
    if type(v) is bytes:
        return v
    return _bytes_from_list(v, key)


def _opt_bin(d: dict[Any, Any], key: bytes) -> bytes | None:
    v = d.get(key)
    if v is None or type(v) is bytes:
        return v
    return _bytes_from_list(v, key)


def _bytes_from_list(v: Any, key: bytes) -> bytes:
    # Go also accepts a []byte written as an array of small ints (e.g. Vsn).
    if type(v) is list and all(type(x) is int and 0 <= x < 256 for x in v):
        return bytes(v)
    raise DecodeError("malformed", f"{key.decode()} is not a byte string")


def _bool(d: dict[Any, Any], key: bytes) -> bool:
    v = d.get(key, False)
    if v is None:
        return False
    if type(v) is not bool:
        raise DecodeError("malformed", f"{key.decode()} is not a bool")
    return v


def _dec_ping(body: bytes) -> Ping:
    d = _map(body)
    g = d.get
    seq, node, sa, sp, sn = (
        g(b"SeqNo", 0),
        g(b"Node"),
        g(b"SourceAddr", b""),
        g(b"SourcePort", 0),
        g(b"SourceNode"),
    )
    if (  # fast path for well-formed input; anything unusual takes the checked path below
        type(seq) is int and 0 <= seq <= _U32 and type(node) is bytes and type(sa) is bytes
        and type(sp) is int and 0 <= sp <= _U16 and (sn is None or type(sn) is bytes)
    ):  # fmt: skip
        return Ping(seq, node.decode(_TEXT), sa, sp, _hint(d, b"SourceNode") if sn else "")
    return Ping(
        _uint(d, b"SeqNo", 32),
        _str(d, b"Node"),  # strict: a name that is not text is not ours, the ping is for someone else
        _bin(d, b"SourceAddr"),
        _uint(d, b"SourcePort", 16),
        _hint(d, b"SourceNode"),
    )


def _hint(d: dict[Any, Any], key: bytes) -> str:
    """A name used only to look a member up, never stored nor passed on (a probe's sender or
    target): one that is not UTF-8 names no member we hold, so it reads as "" (unknown).
    Refusing the probe instead would leave a Go node whose name is not UTF-8 unanswered,
    and it would keep suspecting us."""
    try:
        return _str(d, key)
    except UnicodeDecodeError:
        return ""


def _dec_indirect(body: bytes) -> IndirectPing:
    d = _map(body)
    return IndirectPing(
        _uint(d, b"SeqNo", 32),
        _bin(d, b"Target"),
        _uint(d, b"Port", 16),
        _hint(d, b"Node"),  # "" asks whoever answers at Target, which Go accepts
        _bool(d, b"Nack"),
        _bin(d, b"SourceAddr"),
        _uint(d, b"SourcePort", 16),
        _hint(d, b"SourceNode"),
    )


def _dec_ack(body: bytes) -> Ack:
    d = _map(body)
    seq, payload = d.get(b"SeqNo", 0), d.get(b"Payload")
    if (
        type(seq) is int
        and 0 <= seq <= _U32
        and (payload is None or type(payload) is bytes)
    ):
        return Ack(seq, payload)
    return Ack(_uint(d, b"SeqNo", 32), _opt_bin(d, b"Payload"))


def _dec_nack(body: bytes) -> Nack:
    return Nack(_uint(_map(body), b"SeqNo", 32))


def _dec_suspect(body: bytes) -> Suspect:
    d = _map(body)
    return Suspect(_uint(d, b"Incarnation", 32), _str(d, b"Node"), _str(d, b"From"))


def _dec_dead(body: bytes) -> Dead:
    d = _map(body)
    return Dead(_uint(d, b"Incarnation", 32), _str(d, b"Node"), _str(d, b"From"))


def _dec_alive(body: bytes) -> Alive:
    d = _map(body)
    g = d.get
    inc, node, addr, port, meta, vsn = (
        g(b"Incarnation", 0),
        g(b"Node"),
        g(b"Addr"),
        g(b"Port", 0),
        g(b"Meta"),
        g(b"Vsn"),
    )
    if (
        type(inc) is int and 0 <= inc <= _U32 and type(node) is bytes and type(addr) is bytes
        and type(port) is int and 0 <= port <= _U16 and (meta is None or type(meta) is bytes) and type(vsn) is bytes
    ):  # fmt: skip
        a = Alive(inc, node.decode(_TEXT), addr, port, meta, vsn)
    else:
        a = Alive(
            _uint(d, b"Incarnation", 32),
            _str(d, b"Node"),
            _bin(d, b"Addr"),
            _uint(d, b"Port", 16),
            _opt_bin(d, b"Meta"),
            _bin(d, b"Vsn"),
        )
    _check_member(a.meta, a.vsn)
    return a


def _check_member(meta: bytes | None, vsn: bytes) -> None:
    """Refuse what we could not hold or send on: a member row is re-encoded in every
    push/pull and gossiped on, so a Vsn that is not 6 bytes (our encoder refuses it, Go's
    decoders misread it) or Meta over memberlist's 512-byte limit (Go panics sending it)
    would break every later exchange, not only this message."""
    if len(vsn) != VSN_LEN:
        raise DecodeError("bad_vsn", f"Vsn has {len(vsn)} bytes")
    if meta is not None and len(meta) > META_MAX_SIZE:
        raise DecodeError("meta_too_large", f"Meta has {len(meta)} bytes")


_ROW_REASONS = frozenset({"bad_utf8", "bad_vsn", "meta_too_large"})


def _push_node(d: Any) -> PushNodeState:
    if not isinstance(d, dict):
        raise DecodeError("malformed", "push/pull node is not a map")
    try:
        name = _str(d, b"Name")
    except UnicodeDecodeError:
        raise DecodeError("bad_utf8", "push/pull node name") from None
    n = PushNodeState(
        name,
        _bin(d, b"Addr"),
        _uint(d, b"Port", 16),
        _opt_bin(d, b"Meta"),
        _uint(d, b"Incarnation", 32),
        _int(d, b"State"),
        _bin(d, b"Vsn"),
    )
    _check_member(n.meta, n.vsn)
    return n


def _unpacker(body: bytes) -> msgpack.Unpacker:
    up = msgpack.Unpacker(raw=True, max_buffer_size=max(len(body), 1))
    up.feed(body)
    return up


def _next(up: msgpack.Unpacker) -> Any:
    try:
        return up.unpack()
    except msgpack.OutOfData:
        raise DecodeError("truncated", "stream message ends early") from None
    except ValueError as e:
        raise DecodeError("malformed", str(e)) from None


def _dec_push_pull(body: bytes, max_size: int = 20 << 20) -> PushPull:
    up = _unpacker(body)
    head = _next(up)
    if not isinstance(head, dict):
        raise DecodeError("malformed", "push/pull header is not a map")
    n = _int(head, b"Nodes")
    ulen = _int(head, b"UserStateLen")
    if n < 0 or ulen < 0:
        raise DecodeError("malformed", "negative push/pull count")
    if n > MAX_PUSH_NODES or ulen > max_size:
        raise DecodeError("too_large", "push/pull header")
    if n > len(body):
        raise DecodeError("truncated", "push/pull nodes")
    nodes: list[PushNodeState] = []
    dropped: list[str] = []
    for _ in range(n):
        raw = _next(up)
        try:
            nodes.append(_push_node(raw))
        except DecodeError as e:
            # a row Go may legally hold (non-UTF-8 name, odd Vsn/Meta) is refused alone, so
            # a pool holding one still syncs with us; a malformed row ends the message
            if e.reason not in _ROW_REASONS:
                raise
            dropped.append(e.reason)
    pos = up.tell()
    if pos + ulen > len(body):
        raise DecodeError("truncated", "push/pull user state")
    return PushPull(_bool(head, b"Join"), nodes, body[pos : pos + ulen], tuple(dropped))


def _dec_user_stream(body: bytes, max_size: int = 20 << 20) -> UserMsg:
    up = _unpacker(body)
    head = _next(up)
    if not isinstance(head, dict):
        raise DecodeError("malformed", "user message header is not a map")
    ln = _int(head, b"UserMsgLen")
    if ln < 0:
        raise DecodeError("malformed", "negative UserMsgLen")
    if ln > max_size:
        raise DecodeError("too_large", "UserMsgLen")
    pos = up.tell()
    if pos + ln > len(body):
        raise DecodeError("truncated", "user message payload")
    return UserMsg(body[pos : pos + ln])


def _dec_err(body: bytes) -> ErrResp:
    return ErrResp(_str(_map(body), b"Error"))


_DECODERS: dict[int, Callable[[bytes], Message]] = {
    int(MessageType.PING): _dec_ping,
    int(MessageType.INDIRECT_PING): _dec_indirect,
    int(MessageType.ACK): _dec_ack,
    int(MessageType.SUSPECT): _dec_suspect,
    int(MessageType.ALIVE): _dec_alive,
    int(MessageType.DEAD): _dec_dead,
    int(MessageType.PUSH_PULL): _dec_push_pull,
    int(MessageType.NACK): _dec_nack,
    int(MessageType.ERR): _dec_err,
}


def decode(data: bytes, *, stream: bool = False) -> Message:
    """Decode exactly one message (type byte + body); wrappers (compound, compress, CRC) are refused.

    ``stream`` selects the TCP framing of a user message (header + length).
    """
    try:
        if not data:
            raise DecodeError("truncated", "empty message")
        t = data[0]
        if t == _USER:
            return _dec_user_stream(data[1:]) if stream else UserMsg(bytes(data[1:]))
        dec = _DECODERS.get(t)
        if dec is None:
            raise DecodeError("unknown_type", f"message type {t}")
        return dec(data[1:])
    except DecodeError:
        raise
    except UnicodeDecodeError as e:  # a text field that is not UTF-8: refused, never carried
        raise DecodeError("bad_utf8", str(e)) from None
    except Exception as e:  # noqa: BLE001 - untrusted input: nothing else may escape
        raise DecodeError("malformed", f"{type(e).__name__}: {e}") from None


# ------------------------------------------------------------------ outer layers

_UDP_TYPES = frozenset(
    {
        MessageType.PING,
        MessageType.INDIRECT_PING,
        MessageType.ACK,
        MessageType.SUSPECT,
        MessageType.ALIVE,
        MessageType.DEAD,
        MessageType.USER,
        MessageType.NACK,
    }
)
_STREAM_TYPES = frozenset(
    {
        MessageType.PING,
        MessageType.ACK,
        MessageType.PUSH_PULL,
        MessageType.USER,
        MessageType.ERR,
    }
)
_COMPRESS_ALGO_LZW = 0


def _compress_msg(msg: bytes) -> bytes:
    return b"\x09" + _packb({b"Algo": _COMPRESS_ALGO_LZW, b"Buf": lzw.compress(msg)})


def _decompress_msg(body: bytes, limit: int) -> bytes:
    d = _map(body)
    algo = d.get(b"Algo", 0)
    if algo != _COMPRESS_ALGO_LZW or type(algo) is not int:
        raise DecodeError("decompress", f"unknown compression algorithm {algo!r}")
    buf = d.get(b"Buf")
    if type(buf) is not bytes:
        raise DecodeError("decompress", "Buf is not a byte string")
    try:
        out = lzw.decompress(buf, limit)
    except lzw.LZWError as e:
        raise DecodeError(e.reason, str(e)) from None
    if not out:
        raise DecodeError("decompress", "empty decompressed payload")
    return out


def label_header(label: bytes) -> bytes:
    """``244, len, label`` (empty when no label is configured)."""
    return bytes((MessageType.HAS_LABEL, len(label))) + label if label else b""


def strip_label(data: bytes) -> tuple[bytes, bytes]:
    """Split a leading label header off: ``(label, rest)``; no header gives ``(b"", data)``."""
    if not data or data[0] != _LABEL:
        return b"", data
    if len(data) < 2:
        raise DecodeError("truncated", "label header")
    ln = data[1]
    if ln == 0:
        raise DecodeError("label", "empty label in header")
    if len(data) < 2 + ln:
        raise DecodeError("truncated", "label header")
    return data[2 : 2 + ln], data[2 + ln :]


class WireCodec:
    """A node's view of the outer wire layers: compression, CRC, encryption, label.

    ``keyring`` may be swapped or edited at run time (Serf key rotation);
    encryption is on whenever it holds a key.
    """

    def __init__(
        self,
        *,
        keyring: Keyring | None = None,
        label: str = "",
        compress: bool = True,
        compress_packets: bool = True,
        verify_incoming: bool = True,
        verify_outgoing: bool = True,
        skip_inbound_label_check: bool = False,
        max_decompressed: int = 40 << 20,
        max_stream: int = 20 << 20,
        protocol_version: int = 2,
    ) -> None:
        lab = _t(label)
        if len(lab) > 255:
            raise ValueError("a label is at most 255 bytes")
        self.keyring = keyring
        self.label = label
        self._label = lab
        self._label_hdr = label_header(lab)
        self.compress = compress
        #: UDP is compressed only when this is set too (Go compresses when smaller; receivers take both).
        self.compress_packets = compress_packets
        self.verify_incoming = verify_incoming
        self.verify_outgoing = verify_outgoing
        self.skip_inbound_label_check = skip_inbound_label_check
        self.max_decompressed = max_decompressed
        self.max_stream = max_stream
        self.protocol_version = protocol_version

    # -- helpers

    def _encrypting(self) -> bool:
        kr = self.keyring
        return kr is not None and bool(kr.keys)

    @property
    def _enc_version(self) -> int:
        return 0 if self.protocol_version < 2 else 1

    @property
    def overhead(self) -> int:
        """Bytes added to every UDP packet by the label header and encryption (packing budget)."""
        n = len(self._label_hdr)
        if self._encrypting() and self.verify_outgoing:
            n += 29 if self._enc_version == 1 else 45
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
            c = _compress_msg(msg)
            if len(c) < len(msg):
                msg = c
        if crc:
            msg = b"\x0c" + struct.pack(">I", zlib.crc32(msg)) + msg
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
            if len(buf) >= 5 and buf[0] == _CRC:
                (want,) = struct.unpack_from(">I", buf, 1)
                buf = buf[5:]
                if zlib.crc32(buf) != want:
                    raise DecodeError("bad_crc", "CRC mismatch")
            out: list[Message] = []
            drops: list[str] = []
            self._handle(buf, out, drops)
            return out, drops
        except DecodeError:
            raise
        except Exception as e:  # noqa: BLE001 - untrusted input
            raise DecodeError("malformed", f"{type(e).__name__}: {e}") from None

    def _handle(
        self,
        buf: bytes,
        out: list[Message],
        drops: list[str],
        *,
        inflated: bool = False,
        in_compound: bool = False,
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
            self._handle(_decompress_msg(buf[1:], limit), out, drops, inflated=True)
        elif t in _UDP_TYPES:
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
            msg = _compress_msg(msg)
        kr = self.keyring
        if kr is not None and kr.keys and self.verify_outgoing:
            ver = self._enc_version
            n = 29 + len(msg) if ver == 1 else 29 + (len(msg) // 16 + 1) * 16
            head = b"\x0a" + struct.pack(">I", n)
            env = kr.encrypt(msg, head + self._label, ver)
            msg = head + env
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
            kr = self.keyring
            encrypted = kr is not None and bool(kr.keys)
            if buf[0] == _ENCRYPT:
                if kr is None or not encrypted:
                    raise DecodeError(
                        "decrypt", "encrypted stream but no key configured"
                    )
                if len(buf) < 5:
                    raise DecodeError("truncated", "encrypted stream header")
                (n,) = struct.unpack_from(">I", buf, 1)
                if n > self.max_stream:
                    raise DecodeError("too_large", "encrypted stream length")
                if len(buf) < 5 + n:
                    raise DecodeError("truncated", "encrypted stream body")
                buf = kr.decrypt(buf[5 : 5 + n], buf[:5] + label)
                if not buf:
                    raise DecodeError("truncated", "empty plaintext")
            elif encrypted and self.verify_incoming:
                raise DecodeError(
                    "plaintext",
                    "encryption is configured but the stream is not encrypted",
                )
            if buf[0] == _COMPRESS:
                buf = _decompress_msg(buf[1:], self._stream_inflate_limit(len(buf)))
            t = buf[0]
            if t not in _STREAM_TYPES:
                raise DecodeError("unknown_type", f"message type {t} on a stream")
            if t == _PUSH_PULL:
                return _dec_push_pull(buf[1:], self.max_stream)
            if t == _USER:
                return _dec_user_stream(buf[1:], self.max_stream)
            return decode(buf)
        except DecodeError:
            raise
        except Exception as e:  # noqa: BLE001 - untrusted input
            raise DecodeError("malformed", f"{type(e).__name__}: {e}") from None
