"""Serf's payloads that are not gossip messages of their own (docs/wire.md §14, §15): the relay
frame that carries a query answer through another member, query filters, and the bodies of the
internal queries' requests and answers (key management, name conflicts).

They share `wire`'s packing with `messages`, but each has its own framing (a filter's type
byte, a relay header followed by a whole message), so they live apart from the one-type-byte
gossip messages.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import msgpack

from . import wire
from .wire import SerfDecodeError, SerfMessageType, pack, str_field, text, text_map

__all__ = [
    "ConflictMember",
    "FilterType",
    "KeyRequest",
    "KeyResponse",
    "RelayHeader",
    "decode_conflict_response",
    "decode_filter",
    "decode_key_request",
    "decode_key_response",
    "decode_relay",
    "encode_conflict_response",
    "encode_key_request",
    "encode_key_response",
    "encode_node_filter",
    "encode_relay",
    "encode_tag_filter",
]


class FilterType(enum.IntEnum):
    """A query filter's leading byte (Go's filterType)."""

    NODE = 0
    TAG = 1


@dataclass(frozen=True)
class RelayHeader:
    """Where a relayed query answer goes: the asker's address and name (the zone is IPv6's,
    carried as Go's net.UDPAddr has it)."""

    dest_ip: bytes
    dest_port: int
    dest_name: str
    dest_zone: str = ""


@dataclass(frozen=True)
class KeyRequest:
    key: bytes


@dataclass(frozen=True)
class KeyResponse:
    result: bool
    message: str = ""
    keys: list[str] | None = None
    primary_key: str = ""


@dataclass(frozen=True)
class ConflictMember:
    """Serf's `Member` struct as carried in a `_serf_conflict` answer."""

    name: str
    addr: bytes
    port: int
    tags: dict[str, str]
    status: int
    vsn: bytes  # pmin pmax pcur dmin dmax dcur


#: ConflictMember's version bytes, in `vsn` order, under Go's field names
_VSN_FIELDS = ("ProtocolMin", "ProtocolMax", "ProtocolCur", "DelegateMin", "DelegateMax", "DelegateCur")


def _expect_type(data: bytes, kind: SerfMessageType, what: str) -> None:
    if not data or data[0] != kind:
        raise SerfDecodeError("malformed", f"not a {what}")


# -- relay -----------------------------------------------------------------------------------------


def encode_relay(header: RelayHeader, inner: bytes) -> bytes:
    """`09` + relay header + the already-encoded message to forward (starting with its type byte)."""
    dest = {"IP": header.dest_ip, "Port": header.dest_port, "Zone": header.dest_zone}
    return (
        bytes([SerfMessageType.RELAY])
        + pack({"DestAddr": dict(sorted(dest.items())), "DestName": header.dest_name})
        + inner
    )


def decode_relay(data: bytes) -> tuple[RelayHeader, bytes]:
    """Split a relay frame into its header and the inner message bytes."""
    _expect_type(data, SerfMessageType.RELAY, "relay frame")
    unpacker = msgpack.Unpacker(raw=True)
    unpacker.feed(data[1:])
    try:
        obj = unpacker.unpack()
    except Exception as exc:  # noqa: BLE001 - msgpack raises many types on bad input
        raise SerfDecodeError("malformed", f"relay header: {exc}") from None
    m = text_map(obj, "relay header")
    dest_raw = m.get("DestAddr")
    if not isinstance(dest_raw, dict):
        raise SerfDecodeError("malformed", "relay DestAddr")
    d = text_map(dest_raw, "relay DestAddr")
    header = RelayHeader(
        wire.bytes_field(d, "IP"), wire.int_field(d, "Port"), str_field(m, "DestName"), str_field(d, "Zone")
    )
    inner = data[1 + unpacker.tell() :]
    if not inner:
        raise SerfDecodeError("truncated", "relay without a message")
    return header, inner


# -- query filters ---------------------------------------------------------------------------------


def encode_node_filter(nodes: list[str]) -> bytes:
    body: bytes = msgpack.packb(list(nodes), use_bin_type=False)
    return bytes([FilterType.NODE]) + body


def encode_tag_filter(tag: str, expr: str) -> bytes:
    return bytes([FilterType.TAG]) + pack({"Tag": tag, "Expr": expr})


def decode_filter(raw: bytes) -> tuple[FilterType, Any]:
    """(NODE, [names]) or (TAG, (tag, expr)); SerfDecodeError otherwise."""
    if not raw:
        raise SerfDecodeError("truncated", "empty filter")
    obj = wire.unpack(raw[1:], "filter: ")
    if raw[0] == FilterType.NODE:
        if not isinstance(obj, list):
            raise SerfDecodeError("malformed", "node filter is not an array")
        return FilterType.NODE, [text(x) for x in obj]
    if raw[0] == FilterType.TAG:
        m = text_map(obj, "tag filter")
        return FilterType.TAG, (str_field(m, "Tag"), str_field(m, "Expr"))
    raise SerfDecodeError("unknown_type", f"filter type {raw[0]}")


# -- keyring and conflict payloads -----------------------------------------------------------------


def encode_key_request(key: bytes) -> bytes:
    return bytes([SerfMessageType.KEY_REQUEST]) + pack({"Key": key})


def decode_key_request(data: bytes) -> KeyRequest:
    _expect_type(data, SerfMessageType.KEY_REQUEST, "key request")
    return KeyRequest(wire.bytes_field(wire.unpack_map(data[1:]), "Key"))


def encode_key_response(resp: KeyResponse) -> bytes:
    body = {
        "Result": resp.result,
        "Message": resp.message,
        "Keys": resp.keys,
        "PrimaryKey": resp.primary_key,
    }
    return bytes([SerfMessageType.KEY_RESPONSE]) + pack(body)


def decode_key_response(data: bytes) -> KeyResponse:
    _expect_type(data, SerfMessageType.KEY_RESPONSE, "key response")
    m = wire.unpack_map(data[1:])
    keys = m.get("Keys")
    return KeyResponse(
        wire.bool_field(m, "Result"),
        str_field(m, "Message"),
        None if keys is None else [text(k) for k in wire.list_field(m, "Keys")],
        str_field(m, "PrimaryKey"),
    )


def encode_conflict_response(member: ConflictMember | None) -> bytes:
    if member is None:
        return bytes([SerfMessageType.CONFLICT_RESPONSE, 0xC0])
    body: dict[str, Any] = {
        "Name": member.name,
        "Addr": member.addr,
        "Port": member.port,
        "Tags": dict(member.tags),
        "Status": member.status,
    }
    body.update(zip(_VSN_FIELDS, (list(member.vsn) + [0] * 6)[:6]))
    return bytes([SerfMessageType.CONFLICT_RESPONSE]) + pack(body)


def decode_conflict_response(data: bytes) -> ConflictMember | None:
    _expect_type(data, SerfMessageType.CONFLICT_RESPONSE, "conflict response")
    obj = wire.unpack(data[1:])
    if obj is None:
        return None
    m = text_map(obj, "conflict member")
    raw_tags = m.get("Tags") or {}
    if not isinstance(raw_tags, dict):
        raise SerfDecodeError("malformed", "Tags")
    vsn = bytes(wire.uint_field(m, k) & 0xFF for k in _VSN_FIELDS)
    return ConflictMember(
        str_field(m, "Name"),
        wire.bytes_field(m, "Addr"),
        wire.uint_field(m, "Port"),
        {text(k): text(v) for k, v in raw_tags.items()},
        wire.int_field(m, "Status"),
        vsn,
    )
