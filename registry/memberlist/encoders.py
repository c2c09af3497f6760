"""memberlist messages -> bytes, exactly as go-msgpack 0.5.x writes them (docs/wire.md §2, §5, §6).

One message is its type byte and a msgpack map whose keys are the Go struct field names, in
the order Go writes them; byte-identical output is what lets the tests compare against the
captured bytes of real agents.  Go omits the optional source fields of a probe when they are
empty (``omitempty``), so do we.  Encoding never validates peers' data: it was validated at
decode (fields.py), and our own at start.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgpack

from . import messages as M
from .fields import TEXT, VSN_LEN
from .messages import Message, MessageType

__all__ = ["encode", "encode_user_stream", "packb", "type_prefix"]


def type_prefix(t: MessageType) -> bytes:
    """The one-byte header of a message of type ``t``."""
    return bytes((t,))


def _t(s: str) -> bytes:
    # Strict: every text we hold was validated at decode (or is our own, checked at start),
    # so this cannot raise on anything the wire gave us.
    return s.encode(TEXT)


def packb(obj: Any) -> bytes:
    """msgpack as go-msgpack 0.5.x writes it: byte strings as raw str, never bin."""
    return msgpack.packb(obj, use_bin_type=False)  # type: ignore[no-any-return]


def _source(d: dict[bytes, Any], m: M.Ping | M.IndirectPing) -> None:
    # the probe's sender, omitted when empty (Go's omitempty)
    if m.source_addr:
        d[b"SourceAddr"] = m.source_addr
    if m.source_node:
        d[b"SourceNode"] = _t(m.source_node)
    if m.source_port:
        d[b"SourcePort"] = m.source_port


def _ping(m: M.Ping) -> bytes:
    d: dict[bytes, Any] = {b"Node": _t(m.node), b"SeqNo": m.seq_no}
    _source(d, m)
    return packb(d)


def _indirect(m: M.IndirectPing) -> bytes:
    d: dict[bytes, Any] = {b"Nack": m.nack, b"Node": _t(m.node), b"Port": m.port, b"SeqNo": m.seq_no}
    _source(d, m)
    d[b"Target"] = m.target
    return packb(d)


def _ack(m: M.Ack) -> bytes:
    return packb({b"Payload": m.payload, b"SeqNo": m.seq_no})


def _nack(m: M.Nack) -> bytes:
    return packb({b"SeqNo": m.seq_no})


def _claim(m: M.Suspect | M.Dead) -> bytes:
    # suspect and dead share one layout: who says it, about whom, at which incarnation
    return packb({b"From": _t(m.sender), b"Incarnation": m.incarnation, b"Node": _t(m.node)})


def _check_vsn(vsn: bytes) -> bytes:
    if len(vsn) != VSN_LEN:
        raise ValueError(f"Vsn must be {VSN_LEN} bytes, got {len(vsn)}")
    return bytes(vsn)


def _member(m: M.Alive | M.PushNodeState, name_key: bytes, name: str) -> dict[bytes, Any]:
    # an alive and a push/pull row carry one member alike, but for the name's key and State;
    # keys in Go's field order, Vsn (last) added by the caller
    return {b"Addr": m.addr, b"Incarnation": m.incarnation, b"Meta": m.meta, name_key: _t(name), b"Port": m.port}


def _alive(m: M.Alive) -> bytes:
    d = _member(m, b"Node", m.node)
    d[b"Vsn"] = _check_vsn(m.vsn)
    return packb(d)


def _push_node(n: M.PushNodeState) -> bytes:
    d = _member(n, b"Name", n.name)
    d[b"State"] = n.state
    d[b"Vsn"] = _check_vsn(n.vsn)
    return packb(d)


def _push_pull(m: M.PushPull) -> bytes:
    head = packb({b"Join": m.join, b"Nodes": len(m.nodes), b"UserStateLen": len(m.user_state)})
    return b"".join([head, *map(_push_node, m.nodes), m.user_state])


def _user(m: M.UserMsg) -> bytes:
    return m.payload


def _err(m: M.ErrResp) -> bytes:
    return packb({b"Error": _t(m.error)})


#: message class -> (type byte, body encoder)
_ENCODERS: dict[type, tuple[bytes, Callable[[Any], bytes]]] = {
    cls: (type_prefix(t), body)
    for cls, t, body in (
        (M.Ping, MessageType.PING, _ping),
        (M.IndirectPing, MessageType.INDIRECT_PING, _indirect),
        (M.Ack, MessageType.ACK, _ack),
        (M.Nack, MessageType.NACK, _nack),
        (M.Suspect, MessageType.SUSPECT, _claim),
        (M.Alive, MessageType.ALIVE, _alive),
        (M.Dead, MessageType.DEAD, _claim),
        (M.PushPull, MessageType.PUSH_PULL, _push_pull),
        (M.UserMsg, MessageType.USER, _user),
        (M.ErrResp, MessageType.ERR, _err),
    )
}
_USER = type_prefix(MessageType.USER)


def encode(msg: Message) -> bytes:
    """Type byte + msgpack body, byte-identical to Go; a ``UserMsg`` gets the UDP form (0x08 + payload)."""
    try:
        prefix, body = _ENCODERS[type(msg)]
    except KeyError:
        raise TypeError(f"not a memberlist message: {type(msg).__name__}") from None
    return prefix + body(msg)


def encode_user_stream(payload: bytes) -> bytes:
    """TCP form of a user message: 0x08, ``{UserMsgLen}``, then the payload bytes."""
    return _USER + packb({b"UserMsgLen": len(payload)}) + payload
