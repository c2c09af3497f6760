"""Serf's gossip messages (docs/wire.md §10, §12-§14): one type byte + a msgpack map.

Each message is a frozen dataclass, and one table (`_SCHEMAS`) says how its attributes map to
Go's field names and how each field is read: encoding and decoding are the same two loops for
every message instead of a hand-written pair each, so a field cannot be added on one side only.
Encoding reproduces go-msgpack 0.5.x bytes (raw strings, sorted struct keys, nil for empty
byte slices where Go sends nil); decoding accepts both Go codec generations and drops what
it cannot read with `SerfDecodeError` (the caller counts it, a node never raises it).

The payloads that are not gossip messages (relay frames, query filters, key and conflict
answers) live in `payloads`; they are re-exported here, where callers have always found them.
"""

from __future__ import annotations

import enum
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from . import payloads
from .payloads import *  # noqa: F403 - re-exported: callers have always found them here
from .wire import (
    SerfDecodeError,
    SerfMessageType,
    bool_field,
    bytes_field,
    int_field,
    list_field,
    pack,
    pack_sorted,
    str_field,
    text,
    text_map,
    uint_field,
    unpack_map,
)

__all__ = [
    "Join",
    "Leave",
    "PushPullState",
    "QueryFlag",
    "QueryMsg",
    "QueryResponseMsg",
    "SerfDecodeError",
    "SerfMessage",
    "SerfMessageType",
    "UserEventEntry",
    "UserEventMsg",
    "UserEventSlot",
    "decode",
    "encode",
]
__all__ += payloads.__all__


class QueryFlag(enum.IntFlag):
    """Bits of a query's (and a query response's) Flags field."""

    ACK = 1
    NO_BROADCAST = 2


@dataclass(frozen=True)
class Leave:
    """A leave intent: `node` announced its departure at `ltime`; `prune` (force-leave -prune)
    asks every member to forget it at once instead of keeping a tombstone."""

    ltime: int
    node: str
    prune: bool = False


@dataclass(frozen=True)
class Join:
    """A join intent: `node` is a member as of `ltime` (also how a node refutes a leave intent
    about itself that it never sent)."""

    ltime: int
    node: str


@dataclass(frozen=True)
class UserEventMsg:
    """A user event as gossiped; `cc` lets receivers coalesce it with same-named newer ones."""

    ltime: int
    name: str
    payload: bytes
    cc: bool = False


@dataclass(frozen=True)
class UserEventEntry:
    """A user event inside a push/pull's event ring (its time is the slot's)."""

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
        return bool(self.flags & QueryFlag.ACK)

    @property
    def no_broadcast(self) -> bool:
        return bool(self.flags & QueryFlag.NO_BROADCAST)


@dataclass(frozen=True)
class QueryResponseMsg:
    ltime: int
    id: int
    from_: str
    flags: int
    payload: bytes | None

    @property
    def ack(self) -> bool:
        return bool(self.flags & QueryFlag.ACK)


SerfMessage = Leave | Join | UserEventMsg | QueryMsg | QueryResponseMsg


# -- the schema table ------------------------------------------------------------------------------


def _filters_field(m: dict[str, Any], key: str) -> list[bytes]:
    filters = list_field(m, key)
    if not all(isinstance(f, bytes) for f in filters):
        raise SerfDecodeError("malformed", "filter is not bytes")
    return filters


def _optional_bytes_field(m: dict[str, Any], key: str) -> bytes | None:
    """A []byte Go may send as nil (a query ack's Payload): None stays None."""
    return None if m.get(key) is None else bytes_field(m, key)


def _nil_if_empty(v: list[bytes]) -> list[bytes] | None:
    return list(v) if v else None


class _Field(NamedTuple):
    wire: str  # Go's field name
    attr: str  # the dataclass attribute
    read: Callable[[dict[str, Any], str], Any]
    write: Callable[[Any], Any] | None = None  # None: the attribute's value as it is


# fields several messages share
_LTIME = _Field("LTime", "ltime", uint_field)
_ID = _Field("ID", "id", uint_field)
_FLAGS = _Field("Flags", "flags", uint_field)
_NAME = _Field("Name", "name", str_field)
_PAYLOAD = _Field("Payload", "payload", bytes_field)
_NODE = _Field("Node", "node", str_field)

#: message class -> (type byte, fields in decode order: the first bad field names the reason)
_SCHEMAS: dict[type, tuple[SerfMessageType, tuple[_Field, ...]]] = {
    Leave: (SerfMessageType.LEAVE, (_LTIME, _NODE, _Field("Prune", "prune", bool_field))),
    Join: (SerfMessageType.JOIN, (_LTIME, _NODE)),
    UserEventMsg: (SerfMessageType.USER_EVENT, (_LTIME, _NAME, _PAYLOAD, _Field("CC", "cc", bool_field))),
    QueryMsg: (SerfMessageType.QUERY, (
        _Field("Filters", "filters", _filters_field, _nil_if_empty),
        _LTIME,
        _ID,
        _Field("Addr", "addr", bytes_field),
        _Field("Port", "port", uint_field),
        _Field("SourceNode", "source_node", str_field),
        _FLAGS,
        _Field("RelayFactor", "relay_factor", uint_field),
        _Field("Timeout", "timeout", int_field),  # signed: Go's time.Duration
        _NAME,
        _PAYLOAD,
    )),
    QueryResponseMsg: (SerfMessageType.QUERY_RESPONSE, (
        _LTIME, _ID, _Field("From", "from_", str_field), _FLAGS, _Field("Payload", "payload", _optional_bytes_field)
    )),
}
_BY_TYPE: dict[int, tuple[type, tuple[_Field, ...]]] = {kind: (cls, fields) for cls, (kind, fields) in _SCHEMAS.items()}


def _encoder(kind: SerfMessageType, fields: tuple[_Field, ...]) -> Callable[[Any], bytes]:
    """One message class's encoder, its field list read once here rather than on every call:
    Serf encodes on the gossip path (every intent, event and query it sends or relays)."""
    type_byte = bytes([kind])
    ordered = sorted(fields, key=lambda f: f.wire)  # Go's sorted struct keys
    wires = tuple(f.wire for f in ordered)
    values = operator.attrgetter(*(f.attr for f in ordered))
    writers = [(i, f.write) for i, f in enumerate(ordered) if f.write is not None]

    def encode_one(msg: Any) -> bytes:
        row = list(values(msg))
        for i, write in writers:
            row[i] = write(row[i])
        return type_byte + pack_sorted(dict(zip(wires, row)))

    return encode_one


_ENCODERS = {cls: _encoder(kind, fields) for cls, (kind, fields) in _SCHEMAS.items()}


# -- encode and decode -----------------------------------------------------------------------------


def encode(msg: SerfMessage | PushPullState) -> bytes:
    """Type byte + body, as carried in a memberlist user message (or push/pull user state)."""
    if isinstance(msg, PushPullState):
        return _encode_push_pull(msg)
    encoder = _ENCODERS.get(type(msg))
    if encoder is None:
        raise TypeError(f"not a Serf message: {type(msg).__name__}")
    return encoder(msg)


def decode(data: bytes) -> SerfMessage | PushPullState:
    """One Serf message (relay frames are handled by `decode_relay`)."""
    if not data:
        raise SerfDecodeError("truncated", "empty message")
    kind = data[0]
    if kind == SerfMessageType.RELAY:
        raise SerfDecodeError("relay", "relay frames are decoded with decode_relay")
    m = unpack_map(data[1:])
    if kind == SerfMessageType.PUSH_PULL:
        return _decode_push_pull(m)
    schema = _BY_TYPE.get(kind)
    if schema is None:
        raise SerfDecodeError("unknown_type", f"serf message type {kind}")
    cls, fields = schema
    msg: SerfMessage = cls(**{f.attr: f.read(m, f.wire) for f in fields})
    return msg


def _encode_push_pull(msg: PushPullState) -> bytes:
    events: list[Any] = []
    for slot in msg.events:
        if slot is None:
            events.append(None)
        else:
            entries = [{"Name": e.name, "Payload": e.payload} for e in slot.events]
            events.append({"Events": entries, "LTime": slot.ltime})
    body = {
        "LTime": msg.ltime,
        "StatusLTimes": dict(msg.status_ltimes),
        "LeftMembers": list(msg.left_members),
        "EventLTime": msg.event_ltime,
        "Events": events,
        "QueryLTime": msg.query_ltime,
    }
    return bytes([SerfMessageType.PUSH_PULL]) + pack(body)


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
            return text(raw)
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
    left = [n for n in map(name, list_field(m, "LeftMembers")) if n is not None]
    slots: list[UserEventSlot | None] = []
    for raw_slot in list_field(m, "Events"):
        if raw_slot is None:
            slots.append(None)
            continue
        sm = text_map(raw_slot, "event slot")
        entries = []
        for e in list_field(sm, "Events"):
            em = text_map(e, "event entry")
            raw_name = em.get("Name")
            if (event := "" if raw_name is None else name(raw_name)) is not None:
                entries.append(UserEventEntry(event, bytes_field(em, "Payload")))
        slots.append(UserEventSlot(uint_field(sm, "LTime"), entries))
    return PushPullState(
        ltime=uint_field(m, "LTime"),
        status_ltimes=statuses,
        left_members=left,
        event_ltime=uint_field(m, "EventLTime"),
        events=slots,
        query_ltime=uint_field(m, "QueryLTime"),
        dropped=dropped,
    )

