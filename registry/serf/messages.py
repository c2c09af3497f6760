"""Serf's message codec (docs/wire.md §10, §12-§15): one type byte + a msgpack map.

Encoding reproduces go-msgpack 0.5.x bytes (raw strings, sorted struct keys, nil for empty
byte slices where Go sends nil); decoding accepts both Go codec generations and drops what
it cannot read with `SerfDecodeError` (the caller counts it, a node never raises it).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

import msgpack

__all__ = [
    "FILTER_NODE",
    "FILTER_TAG",
    "QUERY_FLAG_ACK",
    "QUERY_FLAG_NO_BROADCAST",
    "ConflictMember",
    "Join",
    "KeyRequest",
    "KeyResponse",
    "Leave",
    "PushPullState",
    "QueryMsg",
    "QueryResponseMsg",
    "RelayHeader",
    "SerfDecodeError",
    "SerfMessage",
    "SerfMessageType",
    "UserEventEntry",
    "UserEventMsg",
    "UserEventSlot",
    "decode",
    "decode_conflict_response",
    "decode_filter",
    "decode_key_request",
    "decode_key_response",
    "decode_relay",
    "encode",
    "encode_conflict_response",
    "encode_key_request",
    "encode_key_response",
    "encode_node_filter",
    "encode_relay",
    "encode_tag_filter",
]


class SerfMessageType(enum.IntEnum):
    LEAVE = 0
    JOIN = 1
    PUSH_PULL = 2
    USER_EVENT = 3
    QUERY = 4
    QUERY_RESPONSE = 5
    CONFLICT_RESPONSE = 6
    KEY_REQUEST = 7
    KEY_RESPONSE = 8
    RELAY = 9


QUERY_FLAG_ACK = 1
QUERY_FLAG_NO_BROADCAST = 2
FILTER_NODE = 0
FILTER_TAG = 1


class SerfDecodeError(ValueError):
    """A Serf message that cannot be read; `reason` is a short counter key."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True)
class Leave:
    ltime: int
    node: str
    prune: bool = False


@dataclass(frozen=True)
class Join:
    ltime: int
    node: str


@dataclass(frozen=True)
class UserEventMsg:
    ltime: int
    name: str
    payload: bytes
    cc: bool = False


@dataclass(frozen=True)
class UserEventEntry:
    name: str
    payload: bytes


@dataclass
class UserEventSlot:
    """One slot of the 512-entry event ring: every event seen at one Lamport time."""

    ltime: int
    events: list[UserEventEntry] = field(default_factory=list)


@dataclass
class PushPullState:
    ltime: int
    status_ltimes: dict[str, int]
    left_members: list[str]
    event_ltime: int
    events: list[UserEventSlot | None]
    query_ltime: int
    #: entries refused alone on decode: names (or event names) that are not UTF-8
    dropped: int = 0


@dataclass(frozen=True)
class QueryMsg:
    ltime: int
    id: int
    addr: bytes
    port: int
    source_node: str
    filters: list[bytes]
    flags: int
    relay_factor: int
    timeout: int  # nanoseconds
    name: str
    payload: bytes

    @property
    def ack(self) -> bool:
        return bool(self.flags & QUERY_FLAG_ACK)

    @property
    def no_broadcast(self) -> bool:
        return bool(self.flags & QUERY_FLAG_NO_BROADCAST)


@dataclass(frozen=True)
class QueryResponseMsg:
    ltime: int
    id: int
    from_: str
    flags: int
    payload: bytes | None

    @property
    def ack(self) -> bool:
        return bool(self.flags & QUERY_FLAG_ACK)


@dataclass(frozen=True)
class RelayHeader:
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


SerfMessage = Leave | Join | UserEventMsg | QueryMsg | QueryResponseMsg


# -- helpers ---------------------------------------------------------------------------------------


def _pack(body: dict[str, Any]) -> bytes:
    out: bytes = msgpack.packb(dict(sorted(body.items())), use_bin_type=False)
    return out


def _unpack_map(data: bytes) -> dict[str, Any]:
    try:
        obj = msgpack.unpackb(data, raw=True)
    except msgpack.ExtraData:
        raise SerfDecodeError("malformed", "trailing bytes") from None
    except Exception as exc:  # msgpack raises several types for bad input  # noqa: BLE001 - msgpack raises many types on bad input
        raise SerfDecodeError("malformed", str(exc)) from None
    if not isinstance(obj, dict):
        raise SerfDecodeError("malformed", "body is not a map")
    return {_key(k): v for k, v in obj.items()}


def _utf8(raw: bytes) -> str:
    """Text from the wire: valid UTF-8 or the whole message is refused ("bad_utf8").

    Replacing bad bytes would turn a name into a different one (a leave intent for a node
    that does not exist, an event nobody sent); carrying them would make our own messages
    unencodable.  Go strings may hold any bytes, so a Go node can send such names: we drop
    and count those messages rather than act on a guess."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SerfDecodeError("bad_utf8", "text is not UTF-8") from None


def _key(k: object) -> str:
    if isinstance(k, bytes):
        return _utf8(k)
    return str(k)


def _str(m: dict[str, Any], key: str) -> str:
    v = m.get(key)
    if v is None:
        return ""
    if isinstance(v, bytes):
        return _utf8(v)
    if isinstance(v, str):
        return v
    raise SerfDecodeError("malformed", f"{key} is not a string")


def _bytes(m: dict[str, Any], key: str) -> bytes:
    v = m.get(key)
    if v is None:
        return b""
    if isinstance(v, bytes):
        return v
    if isinstance(v, str):
        return v.encode()
    if isinstance(v, list) and all(isinstance(x, int) and 0 <= x < 256 for x in v):
        return bytes(v)
    raise SerfDecodeError("malformed", f"{key} is not bytes")


def _int(m: dict[str, Any], key: str) -> int:
    v = m.get(key)
    if v is None:
        return 0
    if isinstance(v, bool) or not isinstance(v, int):
        raise SerfDecodeError("malformed", f"{key} is not an integer")
    return v


def _uint(m: dict[str, Any], key: str) -> int:
    v = _int(m, key)
    if v < 0:
        raise SerfDecodeError("malformed", f"{key} is negative")
    return v


def _bool(m: dict[str, Any], key: str) -> bool:
    v = m.get(key)
    if v is None:
        return False
    if not isinstance(v, bool):
        raise SerfDecodeError("malformed", f"{key} is not a bool")
    return v


def _list(m: dict[str, Any], key: str) -> list[Any]:
    v = m.get(key)
    if v is None:
        return []
    if not isinstance(v, list):
        raise SerfDecodeError("malformed", f"{key} is not an array")
    return v


def _text(v: object) -> str:
    if isinstance(v, bytes):
        return _utf8(v)
    if isinstance(v, str):
        return v
    raise SerfDecodeError("malformed", "expected a string")


# -- top-level messages ----------------------------------------------------------------------------


def encode(msg: SerfMessage | PushPullState) -> bytes:
    """Type byte + body, as carried in a memberlist user message (or push/pull user state)."""
    if isinstance(msg, Leave):
        return bytes([SerfMessageType.LEAVE]) + _pack(
            {"LTime": msg.ltime, "Node": msg.node, "Prune": msg.prune}
        )
    if isinstance(msg, Join):
        return bytes([SerfMessageType.JOIN]) + _pack(
            {"LTime": msg.ltime, "Node": msg.node}
        )
    if isinstance(msg, UserEventMsg):
        body = {
            "LTime": msg.ltime,
            "Name": msg.name,
            "Payload": msg.payload,
            "CC": msg.cc,
        }
        return bytes([SerfMessageType.USER_EVENT]) + _pack(body)
    if isinstance(msg, QueryMsg):
        body = {
            "LTime": msg.ltime,
            "ID": msg.id,
            "Addr": msg.addr,
            "Port": msg.port,
            "SourceNode": msg.source_node,
            "Filters": list(msg.filters) if msg.filters else None,
            "Flags": msg.flags,
            "RelayFactor": msg.relay_factor,
            "Timeout": msg.timeout,
            "Name": msg.name,
            "Payload": msg.payload,
        }
        return bytes([SerfMessageType.QUERY]) + _pack(body)
    if isinstance(msg, QueryResponseMsg):
        body = {
            "LTime": msg.ltime,
            "ID": msg.id,
            "From": msg.from_,
            "Flags": msg.flags,
            "Payload": msg.payload,
        }
        return bytes([SerfMessageType.QUERY_RESPONSE]) + _pack(body)
    if isinstance(msg, PushPullState):
        events: list[Any] = []
        for slot in msg.events:
            if slot is None:
                events.append(None)
            else:
                entries = [
                    _pack_sorted({"Name": e.name, "Payload": e.payload})
                    for e in slot.events
                ]
                events.append(_pack_sorted({"LTime": slot.ltime, "Events": entries}))
        body = {
            "LTime": msg.ltime,
            "StatusLTimes": dict(msg.status_ltimes),
            "LeftMembers": list(msg.left_members),
            "EventLTime": msg.event_ltime,
            "Events": events,
            "QueryLTime": msg.query_ltime,
        }
        return bytes([SerfMessageType.PUSH_PULL]) + _pack(body)
    raise TypeError(f"not a Serf message: {type(msg).__name__}")


def _pack_sorted(d: dict[str, Any]) -> dict[str, Any]:
    return dict(sorted(d.items()))


def decode(data: bytes) -> SerfMessage | PushPullState:
    """One Serf message (relay frames are handled by `decode_relay`)."""
    if not data:
        raise SerfDecodeError("truncated", "empty message")
    kind = data[0]
    if kind == SerfMessageType.RELAY:
        raise SerfDecodeError("relay", "relay frames are decoded with decode_relay")
    m = _unpack_map(data[1:])
    if kind == SerfMessageType.LEAVE:
        return Leave(_uint(m, "LTime"), _str(m, "Node"), _bool(m, "Prune"))
    if kind == SerfMessageType.JOIN:
        return Join(_uint(m, "LTime"), _str(m, "Node"))
    if kind == SerfMessageType.USER_EVENT:
        return UserEventMsg(
            _uint(m, "LTime"), _str(m, "Name"), _bytes(m, "Payload"), _bool(m, "CC")
        )
    if kind == SerfMessageType.QUERY:
        filters = []
        for f in _list(m, "Filters"):
            if not isinstance(f, bytes):
                raise SerfDecodeError("malformed", "filter is not bytes")
            filters.append(f)
        return QueryMsg(
            ltime=_uint(m, "LTime"),
            id=_uint(m, "ID"),
            addr=_bytes(m, "Addr"),
            port=_uint(m, "Port"),
            source_node=_str(m, "SourceNode"),
            filters=filters,
            flags=_uint(m, "Flags"),
            relay_factor=_uint(m, "RelayFactor"),
            timeout=_int(m, "Timeout"),
            name=_str(m, "Name"),
            payload=_bytes(m, "Payload"),
        )
    if kind == SerfMessageType.QUERY_RESPONSE:
        payload = m.get("Payload")
        return QueryResponseMsg(
            _uint(m, "LTime"),
            _uint(m, "ID"),
            _str(m, "From"),
            _uint(m, "Flags"),
            None if payload is None else _bytes(m, "Payload"),
        )
    if kind == SerfMessageType.PUSH_PULL:
        return _decode_push_pull(m)
    raise SerfDecodeError("unknown_type", f"serf message type {kind}")


def _decode_push_pull(m: dict[str, Any]) -> PushPullState:
    """Serf's push/pull state, refusing bad-name entries alone.

    It lists every member's name (StatusLTimes, LeftMembers) and recent event names, and
    a Go node may legally hold a name that is not UTF-8: refusing the whole state for one
    such entry would refuse it from every node of a pool that knows that member, so we
    would never merge clocks (a restarted node's leave intent would then be older than
    the status time Go holds for it: "failed" instead of "left") nor intents.  Such
    entries are skipped and counted (`dropped`); anything else malformed ends the message."""
    dropped = 0

    def name(raw: object) -> str | None:
        nonlocal dropped
        try:
            return _text(raw)
        except SerfDecodeError as e:
            if e.reason != "bad_utf8":
                raise
            dropped += 1
            return None

    statuses: dict[str, int] = {}
    raw_status = m.get("StatusLTimes") or {}
    if not isinstance(raw_status, dict):
        raise SerfDecodeError("malformed", "StatusLTimes is not a map")
    for k, v in raw_status.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise SerfDecodeError("malformed", "StatusLTimes value")
        if (key := name(k)) is not None:
            statuses[key] = v
    left = [n for n in map(name, _list(m, "LeftMembers")) if n is not None]
    slots: list[UserEventSlot | None] = []
    for raw_slot in _list(m, "Events"):
        if raw_slot is None:
            slots.append(None)
            continue
        if not isinstance(raw_slot, dict):
            raise SerfDecodeError("malformed", "event slot")
        sm = {_key(k): v for k, v in raw_slot.items()}
        entries = []
        for e in _list(sm, "Events"):
            if not isinstance(e, dict):
                raise SerfDecodeError("malformed", "event entry")
            em = {_key(k): v for k, v in e.items()}
            raw_name = em.get("Name")
            if (event := "" if raw_name is None else name(raw_name)) is not None:
                entries.append(UserEventEntry(event, _bytes(em, "Payload")))
        slots.append(UserEventSlot(_uint(sm, "LTime"), entries))
    return PushPullState(
        ltime=_uint(m, "LTime"),
        status_ltimes=statuses,
        left_members=left,
        event_ltime=_uint(m, "EventLTime"),
        events=slots,
        query_ltime=_uint(m, "QueryLTime"),
        dropped=dropped,
    )


# -- relay -----------------------------------------------------------------------------------------


def encode_relay(header: RelayHeader, inner: bytes) -> bytes:
    """`09` + relay header + the already-encoded message to forward (starting with its type byte)."""
    dest = {"IP": header.dest_ip, "Port": header.dest_port, "Zone": header.dest_zone}
    return (
        bytes([SerfMessageType.RELAY])
        + _pack({"DestAddr": _pack_sorted(dest), "DestName": header.dest_name})
        + inner
    )


def decode_relay(data: bytes) -> tuple[RelayHeader, bytes]:
    """Split a relay frame into its header and the inner message bytes."""
    if not data or data[0] != SerfMessageType.RELAY:
        raise SerfDecodeError("malformed", "not a relay frame")
    unpacker = msgpack.Unpacker(raw=True)
    unpacker.feed(data[1:])
    try:
        obj = unpacker.unpack()
    except Exception as exc:  # noqa: BLE001 - msgpack raises many types on bad input
        raise SerfDecodeError("malformed", f"relay header: {exc}") from None
    if not isinstance(obj, dict):
        raise SerfDecodeError("malformed", "relay header is not a map")
    m = {_key(k): v for k, v in obj.items()}
    dest_raw = m.get("DestAddr")
    if not isinstance(dest_raw, dict):
        raise SerfDecodeError("malformed", "relay DestAddr")
    d = {_key(k): v for k, v in dest_raw.items()}
    header = RelayHeader(
        _bytes(d, "IP"), _int(d, "Port"), _str(m, "DestName"), _str(d, "Zone")
    )
    inner = data[1 + unpacker.tell() :]
    if not inner:
        raise SerfDecodeError("truncated", "relay without a message")
    return header, inner


# -- query filters ---------------------------------------------------------------------------------


def encode_node_filter(nodes: list[str]) -> bytes:
    body: bytes = msgpack.packb(list(nodes), use_bin_type=False)
    return bytes([FILTER_NODE]) + body


def encode_tag_filter(tag: str, expr: str) -> bytes:
    return bytes([FILTER_TAG]) + _pack({"Tag": tag, "Expr": expr})


def decode_filter(raw: bytes) -> tuple[int, Any]:
    """(FILTER_NODE, [names]) or (FILTER_TAG, (tag, expr)); SerfDecodeError otherwise."""
    if not raw:
        raise SerfDecodeError("truncated", "empty filter")
    try:
        obj = msgpack.unpackb(raw[1:], raw=True)
    except Exception as exc:  # noqa: BLE001 - msgpack raises many types on bad input
        raise SerfDecodeError("malformed", f"filter: {exc}") from None
    if raw[0] == FILTER_NODE:
        if not isinstance(obj, list):
            raise SerfDecodeError("malformed", "node filter is not an array")
        return FILTER_NODE, [_text(x) for x in obj]
    if raw[0] == FILTER_TAG:
        if not isinstance(obj, dict):
            raise SerfDecodeError("malformed", "tag filter is not a map")
        m = {_key(k): v for k, v in obj.items()}
        return FILTER_TAG, (_str(m, "Tag"), _str(m, "Expr"))
    raise SerfDecodeError("unknown_type", f"filter type {raw[0]}")


# -- keyring and conflict payloads -----------------------------------------------------------------


def encode_key_request(key: bytes) -> bytes:
    return bytes([SerfMessageType.KEY_REQUEST]) + _pack({"Key": key})


def decode_key_request(data: bytes) -> KeyRequest:
    if not data or data[0] != SerfMessageType.KEY_REQUEST:
        raise SerfDecodeError("malformed", "not a key request")
    return KeyRequest(_bytes(_unpack_map(data[1:]), "Key"))


def encode_key_response(resp: KeyResponse) -> bytes:
    body = {
        "Result": resp.result,
        "Message": resp.message,
        "Keys": resp.keys,
        "PrimaryKey": resp.primary_key,
    }
    return bytes([SerfMessageType.KEY_RESPONSE]) + _pack(body)


def decode_key_response(data: bytes) -> KeyResponse:
    if not data or data[0] != SerfMessageType.KEY_RESPONSE:
        raise SerfDecodeError("malformed", "not a key response")
    m = _unpack_map(data[1:])
    keys = m.get("Keys")
    return KeyResponse(
        _bool(m, "Result"),
        _str(m, "Message"),
        None if keys is None else [_text(k) for k in _list(m, "Keys")],
        _str(m, "PrimaryKey"),
    )


def encode_conflict_response(member: ConflictMember | None) -> bytes:
    if member is None:
        return bytes([SerfMessageType.CONFLICT_RESPONSE, 0xC0])
    v = (list(member.vsn) + [0] * 6)[:6]
    body = {
        "Name": member.name,
        "Addr": member.addr,
        "Port": member.port,
        "Tags": dict(member.tags),
        "Status": member.status,
        "ProtocolMin": v[0],
        "ProtocolMax": v[1],
        "ProtocolCur": v[2],
        "DelegateMin": v[3],
        "DelegateMax": v[4],
        "DelegateCur": v[5],
    }
    return bytes([SerfMessageType.CONFLICT_RESPONSE]) + _pack(body)


def decode_conflict_response(data: bytes) -> ConflictMember | None:
    if not data or data[0] != SerfMessageType.CONFLICT_RESPONSE:
        raise SerfDecodeError("malformed", "not a conflict response")
    try:
        obj = msgpack.unpackb(data[1:], raw=True)
    except Exception as exc:  # noqa: BLE001 - msgpack raises many types on bad input
        raise SerfDecodeError("malformed", str(exc)) from None
    if obj is None:
        return None
    if not isinstance(obj, dict):
        raise SerfDecodeError("malformed", "conflict member is not a map")
    m = {_key(k): v for k, v in obj.items()}
    raw_tags = m.get("Tags") or {}
    if not isinstance(raw_tags, dict):
        raise SerfDecodeError("malformed", "Tags")
    vsn = bytes(
        _uint(m, k) & 0xFF
        for k in (
            "ProtocolMin",
            "ProtocolMax",
            "ProtocolCur",
            "DelegateMin",
            "DelegateMax",
            "DelegateCur",
        )
    )
    return ConflictMember(
        _str(m, "Name"),
        _bytes(m, "Addr"),
        _uint(m, "Port"),
        {_text(k): _text(v) for k, v in raw_tags.items()},
        _int(m, "Status"),
        vsn,
    )
