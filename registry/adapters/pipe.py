"""Frames between a registry and an adapter running in a child process (`registry.adapters.process`).

Why a module of its own: both ends (the parent's `ProcessAdapter` and the child's main in
`registry.adapters.child`) must agree on one encoding, and this is the whole of it: a 4-byte big-endian
length, then a msgpack array whose first item is a `Kind`.  msgpack because it is already a dependency
(Serf's wire format) and decodes in C: a 10,000-service view costs the parent a few milliseconds.

Every frame is checked before it is buffered: its length against `MAX_FRAME`, its shape against the
kind's (a child is an adapter, someone else's code: what it says is validated like network input).
"""

from __future__ import annotations

import asyncio
import enum
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import msgpack

from registry.adapters.base import CatalogView, ExportedService, ExternalService

__all__ = ["MAX_FRAME", "FrameError", "Kind", "decode_service", "decode_view", "encode", "encode_service",
           "encode_view", "read_frame"]

#: Bytes of one frame's body: a view of 100,000 services of ~200 bytes each fits four times over.
MAX_FRAME = 64 * 1024 * 1024
_LEN = struct.Struct(">I")


class Kind(enum.IntEnum):
    """What a frame carries. Child -> parent: UPSERT, DELETE, REPLACE_ALL, LOG, WANT_VIEWS.
    Parent -> child: VIEW."""

    UPSERT = 1
    DELETE = 2
    REPLACE_ALL = 3
    LOG = 4
    WANT_VIEWS = 5
    VIEW = 6


class FrameError(ValueError):
    """A frame too long, not msgpack, or not of its kind's shape: the other end is broken."""


def encode(kind: Kind, *items: Any) -> bytes:
    body: bytes = msgpack.packb([int(kind), *items], use_bin_type=True)
    if len(body) > MAX_FRAME:
        raise FrameError(f"frame of {len(body)} bytes over the {MAX_FRAME} limit")
    return _LEN.pack(len(body)) + body


async def read_frame(reader: asyncio.StreamReader) -> tuple[Kind, list[Any]] | None:
    """The next frame, or None at a clean end of stream (between frames)."""
    try:
        head = await reader.readexactly(_LEN.size)
    except asyncio.IncompleteReadError as e:
        if e.partial:
            raise FrameError("stream ended inside a frame header") from None
        return None
    (n,) = _LEN.unpack(head)
    if n > MAX_FRAME:
        raise FrameError(f"frame of {n} bytes over the {MAX_FRAME} limit")
    try:
        body = await reader.readexactly(n)
    except asyncio.IncompleteReadError:
        raise FrameError("stream ended inside a frame") from None
    try:
        doc = msgpack.unpackb(body, raw=False, strict_map_key=True)
        kind = Kind(doc[0])
    except (ValueError, TypeError, IndexError, KeyError, msgpack.ExtraData, msgpack.FormatError,
            msgpack.StackError) as e:
        raise FrameError(f"not a frame: {e}") from None
    return kind, list(doc[1:])


def _str(x: Any) -> str:
    if not isinstance(x, str):
        raise FrameError(f"expected a string, got {type(x).__name__}")
    return x


def _tags(x: Any) -> dict[str, str]:
    if not isinstance(x, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in x.items()):
        raise FrameError("tags must be a map of strings")
    return dict(x)


def _opt_int(x: Any) -> int | None:
    if x is None:
        return None
    if not isinstance(x, int) or isinstance(x, bool):
        raise FrameError("replicas/weight must be an int or nil")
    return x


def encode_service(s: ExternalService) -> list[Any]:
    return [s.group, s.id, s.addr, dict(s.tags), s.replicas, s.weight]


def decode_service(x: Any) -> ExternalService:
    if not isinstance(x, Sequence) or isinstance(x, (str, bytes)) or len(x) != 6:
        raise FrameError("a service is [group, id, addr, tags, replicas, weight]")
    return ExternalService(_str(x[0]), _str(x[1]), _str(x[2]), _tags(x[3]), _opt_int(x[4]), _opt_int(x[5]))


def encode_view(view: CatalogView) -> bytes:
    return encode(Kind.VIEW, view.datacenter,
                  [[s.group, s.id, s.addr, dict(s.tags), s.health, s.kind, s.origin] for s in view.services])


def decode_view(items: list[Any]) -> CatalogView:
    if len(items) != 2 or not isinstance(items[1], list):
        raise FrameError("a view is [datacenter, [service, ...]]")
    services = []
    for x in items[1]:
        if not isinstance(x, list) or len(x) != 7:
            raise FrameError("an exported service is [group, id, addr, tags, health, kind, origin]")
        services.append(ExportedService(_str(x[0]), _str(x[1]), _str(x[2]), _tags(x[3]), _str(x[4]), _str(x[5]),
                                        _str(x[6])))
    return CatalogView(_str(items[0]), services)
