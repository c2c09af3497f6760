"""HTTP/2 framing constants (RFC 9113 sections 4, 6) and the one frame builder.

The enums name the numbers; per-frame code compares with the plain-int copies below them
(one global load against an enum attribute lookup per comparison), defined here once from the
enums so that no module writes the numbers again.
"""

from __future__ import annotations

from enum import IntEnum, IntFlag

__all__ = [
    "ACK",
    "CONTINUATION",
    "DATA",
    "DEFAULT_WINDOW",
    "END_HEADERS",
    "END_STREAM",
    "GOAWAY",
    "HEADERS",
    "MAX_FRAME",
    "MAX_WINDOW",
    "MIN_FRAME",
    "PADDED",
    "PING",
    "PREFACE",
    "PRIORITY",
    "PRIORITY_FLAG",
    "PUSH_PROMISE",
    "RST_STREAM",
    "SETTINGS",
    "WINDOW_UPDATE",
    "Flag",
    "FrameType",
    "Setting",
    "frame",
]

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

MAX_WINDOW = 2**31 - 1  # largest flow-control window (section 6.9.1)
DEFAULT_WINDOW = 65_535  # initial windows until SETTINGS say otherwise
MIN_FRAME, MAX_FRAME = 16_384, 2**24 - 1  # bounds of SETTINGS_MAX_FRAME_SIZE


class FrameType(IntEnum):
    DATA = 0x0
    HEADERS = 0x1
    PRIORITY = 0x2
    RST_STREAM = 0x3
    SETTINGS = 0x4
    PUSH_PROMISE = 0x5
    PING = 0x6
    GOAWAY = 0x7
    WINDOW_UPDATE = 0x8
    CONTINUATION = 0x9


class Flag(IntFlag):
    END_STREAM = 0x1  # DATA, HEADERS
    ACK = 0x1  # SETTINGS, PING
    END_HEADERS = 0x4
    PADDED = 0x8
    PRIORITY = 0x20


class Setting(IntEnum):
    HEADER_TABLE_SIZE = 0x1
    ENABLE_PUSH = 0x2
    MAX_CONCURRENT_STREAMS = 0x3
    INITIAL_WINDOW_SIZE = 0x4
    MAX_FRAME_SIZE = 0x5
    MAX_HEADER_LIST_SIZE = 0x6


DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = (
    int(t) for t in FrameType
)
END_STREAM, ACK, END_HEADERS, PADDED = int(Flag.END_STREAM), int(Flag.ACK), int(Flag.END_HEADERS), int(Flag.PADDED)
PRIORITY_FLAG = int(Flag.PRIORITY)


def frame(ftype: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    """One frame: the 9-byte header (length, type, flags, stream id) and its payload."""
    return len(payload).to_bytes(3, "big") + bytes((ftype, flags)) + stream_id.to_bytes(4, "big") + payload
