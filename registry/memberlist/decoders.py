"""bytes -> memberlist messages, refusing what we could not hold or send on (docs/wire.md §5, §6).

Every entry point raises only ``DecodeError`` with a short ``reason`` (a counter key):
peers are untrusted, and the node must drop bad input and count it, never crash on it.
Text must be UTF-8 ("bad_utf8"), ``Vsn`` 6 bytes ("bad_vsn"), ``Meta`` at most 512 bytes
("meta_too_large"): see codec.py for why, fields.py for the readers.

The ping, ack and alive decoders have a fast path for well-formed input (one type test a
field, no calls) and fall back to the checked readers for anything unusual: they decode
most of the gossip a node receives.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import messages as M
from .fields import (
    MAX_PUSH_NODES,
    TEXT,
    DecodeError,
    check_member,
    next_object,
    read_bin,
    read_bool,
    read_hint,
    read_int,
    read_map,
    read_opt_bin,
    read_str,
    read_uint,
    unpacker,
)
from .messages import Ack, Alive, Message, MessageType, Ping, UserMsg  # the fast paths' classes, bound once

__all__ = ["decode", "decode_push_pull", "decode_user_stream"]

_U32 = 0xFFFFFFFF
_U16 = 0xFFFF
#: Drop reasons that refuse one push/pull row alone (a row Go may legally hold); any other
#: error in a row ends the message.
_ROW_REASONS = frozenset({"bad_utf8", "bad_vsn", "meta_too_large"})
#: Config.max_stream_size's default (memberlist master's limit), the bound when the caller names none.
_MAX_STREAM = 20 << 20


def _dec_ping(body: bytes) -> Ping:
    d = read_map(body)
    g = d.get
    seq, node, sa, sp, sn = g(b"SeqNo", 0), g(b"Node"), g(b"SourceAddr", b""), g(b"SourcePort", 0), g(b"SourceNode")
    if (  # fast path for well-formed input; anything unusual takes the checked path below
        type(seq) is int and 0 <= seq <= _U32 and type(node) is bytes and type(sa) is bytes
        and type(sp) is int and 0 <= sp <= _U16 and (sn is None or type(sn) is bytes)
    ):  # fmt: skip
        return Ping(seq, node.decode(TEXT), sa, sp, read_hint(d, b"SourceNode") if sn else "")
    return Ping(
        read_uint(d, b"SeqNo", 32),
        read_str(d, b"Node"),  # strict: a name that is not text is not ours, the ping is for someone else
        read_bin(d, b"SourceAddr"),
        read_uint(d, b"SourcePort", 16),
        read_hint(d, b"SourceNode"),
    )


def _dec_indirect(body: bytes) -> M.IndirectPing:
    d = read_map(body)
    return M.IndirectPing(
        read_uint(d, b"SeqNo", 32),
        read_bin(d, b"Target"),
        read_uint(d, b"Port", 16),
        read_hint(d, b"Node"),  # "" asks whoever answers at Target, which Go accepts
        read_bool(d, b"Nack"),
        read_bin(d, b"SourceAddr"),
        read_uint(d, b"SourcePort", 16),
        read_hint(d, b"SourceNode"),
    )


def _dec_ack(body: bytes) -> Ack:
    d = read_map(body)
    seq, payload = d.get(b"SeqNo", 0), d.get(b"Payload")
    if type(seq) is int and 0 <= seq <= _U32 and (payload is None or type(payload) is bytes):
        return Ack(seq, payload)
    return Ack(read_uint(d, b"SeqNo", 32), read_opt_bin(d, b"Payload"))


def _dec_nack(body: bytes) -> M.Nack:
    return M.Nack(read_uint(read_map(body), b"SeqNo", 32))


def _dec_claim(cls: type[M.Suspect] | type[M.Dead]) -> Callable[[bytes], M.Suspect | M.Dead]:
    # suspect and dead share one layout: who says it, about whom, at which incarnation
    def dec(body: bytes) -> M.Suspect | M.Dead:
        d = read_map(body)
        return cls(read_uint(d, b"Incarnation", 32), read_str(d, b"Node"), read_str(d, b"From"))

    return dec


def _row(d: dict[Any, Any], name_key: bytes) -> tuple[str, bytes, int, bytes | None, int]:
    """The fields an alive and a push/pull row share, checked: (name, addr, port, meta, incarnation)."""
    name, addr, port = read_str(d, name_key), read_bin(d, b"Addr"), read_uint(d, b"Port", 16)
    return name, addr, port, read_opt_bin(d, b"Meta"), read_uint(d, b"Incarnation", 32)


def _dec_alive(body: bytes) -> Alive:
    d = read_map(body)
    g = d.get
    inc, node, addr, port = g(b"Incarnation", 0), g(b"Node"), g(b"Addr"), g(b"Port", 0)
    meta, vsn = g(b"Meta"), g(b"Vsn")
    if (
        type(inc) is int and 0 <= inc <= _U32 and type(node) is bytes and type(addr) is bytes
        and type(port) is int and 0 <= port <= _U16 and (meta is None or type(meta) is bytes) and type(vsn) is bytes
    ):  # fmt: skip
        a = Alive(inc, node.decode(TEXT), addr, port, meta, vsn)
    else:
        read_uint(d, b"Incarnation", 32)  # checked first: an alive's reasons follow its field order
        name, addr, port, meta, inc = _row(d, b"Node")
        a = Alive(inc, name, addr, port, meta, read_bin(d, b"Vsn"))
    check_member(a.meta, a.vsn)
    return a


def _push_node(d: Any) -> M.PushNodeState:
    if not isinstance(d, dict):
        raise DecodeError("malformed", "push/pull node is not a map")
    try:
        name, addr, port, meta, inc = _row(d, b"Name")
    except UnicodeDecodeError:
        raise DecodeError("bad_utf8", "push/pull node name") from None
    n = M.PushNodeState(name, addr, port, meta, inc, read_int(d, b"State"), read_bin(d, b"Vsn"))
    check_member(n.meta, n.vsn)
    return n


def decode_push_pull(body: bytes, max_size: int = _MAX_STREAM) -> M.PushPull:
    """A push/pull body (after its type byte): header, ``Nodes`` rows, ``UserStateLen`` raw bytes.

    A row Go may legally hold but we cannot (non-UTF-8 name, odd Vsn/Meta) is refused alone
    and its reason kept in ``PushPull.dropped``, so a pool holding one still syncs with us."""
    up = unpacker(body)
    head = next_object(up)
    if not isinstance(head, dict):
        raise DecodeError("malformed", "push/pull header is not a map")
    n = read_int(head, b"Nodes")
    ulen = read_int(head, b"UserStateLen")
    if n < 0 or ulen < 0:
        raise DecodeError("malformed", "negative push/pull count")
    if n > MAX_PUSH_NODES or ulen > max_size:
        raise DecodeError("too_large", "push/pull header")
    if n > len(body):
        raise DecodeError("truncated", "push/pull nodes")
    nodes: list[M.PushNodeState] = []
    dropped: list[str] = []
    for _ in range(n):
        raw = next_object(up)
        try:
            nodes.append(_push_node(raw))
        except DecodeError as e:
            if e.reason not in _ROW_REASONS:
                raise
            dropped.append(e.reason)
    pos = up.tell()
    if pos + ulen > len(body):
        raise DecodeError("truncated", "push/pull user state")
    return M.PushPull(read_bool(head, b"Join"), nodes, body[pos : pos + ulen], tuple(dropped))


def decode_user_stream(body: bytes, max_size: int = _MAX_STREAM) -> UserMsg:
    """The TCP form of a user message (after its type byte): ``{UserMsgLen}``, then the payload."""
    up = unpacker(body)
    head = next_object(up)
    if not isinstance(head, dict):
        raise DecodeError("malformed", "user message header is not a map")
    ln = read_int(head, b"UserMsgLen")
    if ln < 0:
        raise DecodeError("malformed", "negative UserMsgLen")
    if ln > max_size:
        raise DecodeError("too_large", "UserMsgLen")
    pos = up.tell()
    if pos + ln > len(body):
        raise DecodeError("truncated", "user message payload")
    return UserMsg(body[pos : pos + ln])


def _dec_err(body: bytes) -> M.ErrResp:
    return M.ErrResp(read_str(read_map(body), b"Error"))


# Keyed by plain ints: a lookup with the wire's int against IntEnum keys is ~15 ns slower.
_DECODERS: dict[int, Callable[[bytes], Message]] = {
    int(t): dec
    for t, dec in (
        (MessageType.PING, _dec_ping),
        (MessageType.INDIRECT_PING, _dec_indirect),
        (MessageType.ACK, _dec_ack),
        (MessageType.SUSPECT, _dec_claim(M.Suspect)),
        (MessageType.ALIVE, _dec_alive),
        (MessageType.DEAD, _dec_claim(M.Dead)),
        (MessageType.PUSH_PULL, decode_push_pull),
        (MessageType.NACK, _dec_nack),
        (MessageType.ERR, _dec_err),
    )
}
_USER = int(MessageType.USER)


def decode(data: bytes, *, stream: bool = False) -> Message:
    """Decode exactly one message (type byte + body); wrappers (compound, compress, CRC) are refused.

    ``stream`` selects the TCP framing of a user message (header + length).
    """
    try:
        if not data:
            raise DecodeError("truncated", "empty message")
        t = data[0]
        if t == _USER:
            return decode_user_stream(data[1:]) if stream else UserMsg(bytes(data[1:]))
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
