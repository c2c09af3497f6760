"""Validated readers for the fields of an untrusted msgpack message (docs/wire.md §2, §5, §6.2).

A peer's map may lack a key (Go writes zero values, or nil for an empty slice), hold a
value of the wrong msgpack type, or text that is not UTF-8.  Every reader here returns the
typed value or raises ``DecodeError`` with a short stable ``reason`` (a drop-counter key),
so the decoders stay one line per field and the state machines never see a value they
could not send on.  Kept apart from the decoders because the push/pull row, the alive and
the stream headers all read the same way.
"""

from __future__ import annotations

from typing import Any

import msgpack

from .types import META_MAX_SIZE

__all__ = [
    "MAX_PUSH_NODES",
    "TEXT",
    "VSN_LEN",
    "DecodeError",
    "check_member",
    "next_object",
    "read_bin",
    "read_bool",
    "read_hint",
    "read_int",
    "read_map",
    "read_object",
    "read_opt_bin",
    "read_str",
    "read_uint",
    "unpacker",
]

#: Upper bound on ``pushPullHeader.Nodes`` (Go master's limit).
MAX_PUSH_NODES = 1 << 20
#: ``Vsn`` is always ``[pmin, pmax, pcur, dmin, dmax, dcur]``.
VSN_LEN = 6
#: Go strings are bytes; we hold only those that are UTF-8 (gRPC strings must be).
TEXT = "utf-8"


class DecodeError(ValueError):
    """Input that cannot be used; ``reason`` is a short stable key for drop counters."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def read_object(body: bytes) -> Any:
    """First msgpack object of ``body``; trailing bytes are ignored like Go's stream decoder."""
    try:
        return msgpack.unpackb(body, raw=True)
    except msgpack.ExtraData as e:
        return e.unpacked
    except ValueError as e:  # FormatError/StackError/OutOfData are ValueErrors too
        short = isinstance(e, msgpack.OutOfData) or "incomplete" in str(e)
        raise DecodeError("truncated" if short else "malformed", str(e)) from None


def read_map(body: bytes) -> dict[Any, Any]:
    """The message body as a map (every memberlist message body is one)."""
    obj = read_object(body)
    if not isinstance(obj, dict):
        raise DecodeError("malformed", "body is not a map")
    return obj


def unpacker(body: bytes) -> msgpack.Unpacker:
    """A reader of the successive objects of a stream body (push/pull header, rows, ...);
    its buffer is the body itself, so reading it allocates nothing more."""
    up = msgpack.Unpacker(raw=True, max_buffer_size=max(len(body), 1))
    up.feed(body)
    return up


def next_object(up: msgpack.Unpacker) -> Any:
    """The next object of ``up``; a body that ends early is "truncated", not a crash."""
    try:
        return up.unpack()
    except msgpack.OutOfData:
        raise DecodeError("truncated", "stream message ends early") from None
    except ValueError as e:
        raise DecodeError("malformed", str(e)) from None


def read_uint(d: dict[Any, Any], key: bytes, bits: int) -> int:
    """An unsigned field of ``bits`` bits; missing or nil reads as 0, as Go's zero value."""
    v = d.get(key, 0)
    if v is None:
        return 0
    if type(v) is not int or v < 0 or v >> bits:
        raise DecodeError("malformed", f"{key.decode()} is not a uint{bits}")
    return v


def read_int(d: dict[Any, Any], key: bytes) -> int:
    """A signed 64-bit field (Go ``int``); missing or nil reads as 0."""
    v = d.get(key, 0)
    if v is None:
        return 0
    if type(v) is not int or not -(1 << 63) <= v < (1 << 63):
        raise DecodeError("malformed", f"{key.decode()} is not an int")
    return v


def read_str(d: dict[Any, Any], key: bytes) -> str:
    """A text field; missing or nil reads as "".

    Invalid UTF-8 raises ``UnicodeDecodeError``, which ``decode`` turns into
    ``DecodeError("bad_utf8")`` and ``read_hint`` into "" (see there)."""
    v = d.get(key)
    if v is None:
        return ""
    if type(v) is not bytes:
        raise DecodeError("malformed", f"{key.decode()} is not a string")
    return v.decode(TEXT)


def read_hint(d: dict[Any, Any], key: bytes) -> str:
    """A name used only to look a member up, never stored nor passed on (a probe's sender or
    target): one that is not UTF-8 names no member we hold, so it reads as "" (unknown).
    Refusing the probe instead would leave a Go node whose name is not UTF-8 unanswered,
    and it would keep suspecting us."""
    try:
        return read_str(d, key)
    except UnicodeDecodeError:
        return ""


def read_bin(d: dict[Any, Any], key: bytes) -> bytes:
    """A byte-string field; missing or nil reads as b""."""
    v = d.get(key)
    if v is None:
        return b""
    if type(v) is bytes:
        return v
    return _bytes_from_list(v, key)


def read_opt_bin(d: dict[Any, Any], key: bytes) -> bytes | None:
    """A byte-string field where nil (Go's nil slice) is kept as ``None``: it is re-encoded as nil."""
    v = d.get(key)
    if v is None or type(v) is bytes:
        return v
    return _bytes_from_list(v, key)


def _bytes_from_list(v: Any, key: bytes) -> bytes:
    # Go also accepts a []byte written as an array of small ints (e.g. Vsn).
    if type(v) is list and all(type(x) is int and 0 <= x < 256 for x in v):
        return bytes(v)
    raise DecodeError("malformed", f"{key.decode()} is not a byte string")


def read_bool(d: dict[Any, Any], key: bytes) -> bool:
    """A bool field; missing or nil reads as False."""
    v = d.get(key, False)
    if v is None:
        return False
    if type(v) is not bool:
        raise DecodeError("malformed", f"{key.decode()} is not a bool")
    return v


def check_member(meta: bytes | None, vsn: bytes) -> None:
    """Refuse what we could not hold or send on: a member row is re-encoded in every
    push/pull and gossiped on, so a Vsn that is not 6 bytes (our encoder refuses it, Go's
    decoders misread it) or Meta over memberlist's 512-byte limit (Go panics sending it)
    would break every later exchange, not only this message."""
    if len(vsn) != VSN_LEN:
        raise DecodeError("bad_vsn", f"Vsn has {len(vsn)} bytes")
    if meta is not None and len(meta) > META_MAX_SIZE:
        raise DecodeError("meta_too_large", f"Meta has {len(meta)} bytes")
