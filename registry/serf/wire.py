"""go-msgpack 0.5.x bytes for Serf's messages, and the field readers that decode them.

Every Serf body is a msgpack map with Go's field names as keys.  Packing sorts the keys and
writes raw strings (what go-msgpack 0.5.x emits, so our bytes equal Go's: docs/wire.md §10);
reading accepts both codec generations (raw or str keys, bytes or arrays of ints for []byte)
and refuses anything else with `SerfDecodeError`, whose `reason` a node counts
(`serf.drop.<reason>`) instead of raising.  `messages` and `payloads` build on these; the
type byte in front of each is `SerfMessageType`.
"""

from __future__ import annotations

import enum
from typing import Any

import msgpack

__all__ = [
    "SerfDecodeError",
    "SerfMessageType",
    "bool_field",
    "bytes_field",
    "int_field",
    "key_text",
    "list_field",
    "pack",
    "pack_sorted",
    "str_field",
    "text",
    "text_map",
    "uint_field",
    "unpack",
    "unpack_map",
    "utf8",
]


class SerfMessageType(enum.IntEnum):
    """The type byte in front of every Serf message and payload (Go's messageType)."""

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
    #: Not Go's: the registry's app messages between registries (`app.py`); far from Go's types
    #: (0..~13) so a future Go type cannot collide with it.
    APP = 0xF0


class SerfDecodeError(ValueError):
    """A Serf message that cannot be read; `reason` is a short counter key."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def pack(body: dict[str, Any]) -> bytes:
    """A map with sorted keys and raw strings: Go's bytes for a Serf struct."""
    return pack_sorted(dict(sorted(body.items())))


def pack_sorted(body: dict[str, Any]) -> bytes:
    """`pack` for a map whose keys are already in order (messages' precomputed encoders)."""
    out: bytes = msgpack.packb(body, use_bin_type=False)
    return out


def unpack(data: bytes, what: str = "") -> Any:
    """One msgpack object, all of `data`; any msgpack failure becomes "malformed"."""
    try:
        return msgpack.unpackb(data, raw=True)
    except msgpack.ExtraData:
        raise SerfDecodeError("malformed", "trailing bytes") from None
    except Exception as exc:  # noqa: BLE001 - msgpack raises many types on bad input
        raise SerfDecodeError("malformed", f"{what}{exc}") from None


def text_map(obj: object, what: str) -> dict[str, Any]:
    """A decoded map with text keys (raw keys must be UTF-8)."""
    if not isinstance(obj, dict):
        raise SerfDecodeError("malformed", f"{what} is not a map")
    return {key_text(k): v for k, v in obj.items()}


def unpack_map(data: bytes) -> dict[str, Any]:
    """A message body: one msgpack map, nothing after it."""
    return text_map(unpack(data), "body")


def utf8(raw: bytes) -> str:
    """Text from the wire: valid UTF-8 or the whole message is refused ("bad_utf8").

    Replacing bad bytes would turn a name into a different one (a leave intent for a node
    that does not exist, an event nobody sent); carrying them would make our own messages
    unencodable.  Go strings may hold any bytes, so a Go node can send such names: we drop
    and count those messages rather than act on a guess."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SerfDecodeError("bad_utf8", "text is not UTF-8") from None


def key_text(k: object) -> str:
    if isinstance(k, bytes):
        return utf8(k)
    return str(k)


def text(v: object) -> str:
    """A string element (of an array or a map) that must be text."""
    if isinstance(v, bytes):
        return utf8(v)
    if isinstance(v, str):
        return v
    raise SerfDecodeError("malformed", "expected a string")


# Field readers: a missing or nil field reads as Go's zero value, a field of another type
# refuses the message.


def str_field(m: dict[str, Any], key: str) -> str:
    v = m.get(key)
    if v is None:
        return ""
    if isinstance(v, bytes):
        return utf8(v)
    if isinstance(v, str):
        return v
    raise SerfDecodeError("malformed", f"{key} is not a string")


def bytes_field(m: dict[str, Any], key: str) -> bytes:
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


def int_field(m: dict[str, Any], key: str) -> int:
    v = m.get(key)
    if v is None:
        return 0
    if isinstance(v, bool) or not isinstance(v, int):
        raise SerfDecodeError("malformed", f"{key} is not an integer")
    return v


def uint_field(m: dict[str, Any], key: str) -> int:
    v = int_field(m, key)
    if v < 0:
        raise SerfDecodeError("malformed", f"{key} is negative")
    return v


def bool_field(m: dict[str, Any], key: str) -> bool:
    v = m.get(key)
    if v is None:
        return False
    if not isinstance(v, bool):
        raise SerfDecodeError("malformed", f"{key} is not a bool")
    return v


def list_field(m: dict[str, Any], key: str) -> list[Any]:
    v = m.get(key)
    if v is None:
        return []
    if not isinstance(v, list):
        raise SerfDecodeError("malformed", f"{key} is not an array")
    return v
