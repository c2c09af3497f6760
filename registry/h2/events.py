"""What a `ServerConnection` tells its application: HTTP/2 error codes and events.

Kept apart from the state machine so that an application (the gRPC front) depends on these
small types only, and the connection module stays about frames and states.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Union

__all__ = [
    "ConnectionEnded",
    "DataReceived",
    "ErrorCode",
    "Event",
    "GoAwayReceived",
    "RequestReceived",
    "StreamReset",
]


class ErrorCode(IntEnum):
    """HTTP/2 error codes (RFC 9113 section 7)."""

    NO_ERROR = 0x0
    PROTOCOL_ERROR = 0x1
    INTERNAL_ERROR = 0x2
    FLOW_CONTROL_ERROR = 0x3
    SETTINGS_TIMEOUT = 0x4
    STREAM_CLOSED = 0x5
    FRAME_SIZE_ERROR = 0x6
    REFUSED_STREAM = 0x7
    CANCEL = 0x8
    COMPRESSION_ERROR = 0x9
    CONNECT_ERROR = 0xA
    ENHANCE_YOUR_CALM = 0xB
    INADEQUATE_SECURITY = 0xC
    HTTP_1_1_REQUIRED = 0xD


@dataclass(slots=True)
class RequestReceived:
    """A new stream's header block (pseudo-headers included, in order), already checked to be
    a well-formed request (RFC 9113 section 8.3): malformed ones never reach the application."""

    stream_id: int
    headers: list[tuple[str, str]]
    end_stream: bool


@dataclass(slots=True)
class DataReceived:
    """Request body bytes; `end_stream` also comes with empty data (a trailing HEADERS or empty DATA).

    The peer gets no flow-control credit for `data` until the application passes
    `len(data)` to `ServerConnection.acknowledge_received_data` (once it consumed or dropped
    the bytes, even if the stream has ended or been reset since). `flow_controlled_length`
    is what the frame cost of the windows, padding included; the connection credits the
    padding back itself.
    """

    stream_id: int
    data: bytes
    end_stream: bool
    flow_controlled_length: int


@dataclass(slots=True)
class StreamReset:
    """The stream is over before its end: the peer cancelled it (RST_STREAM), this side
    refused it, or the peer broke the protocol on it (a stream error: RST_STREAM was sent).
    The application still acknowledges the data it had received on it."""

    stream_id: int
    error_code: int


@dataclass(slots=True)
class GoAwayReceived:
    """The peer will open no more streams; ones up to `last_stream_id` may still finish."""

    last_stream_id: int
    error_code: int


@dataclass(slots=True)
class ConnectionEnded:
    """The connection is over (a peer protocol error: GOAWAY is queued); close the transport."""

    error_code: int
    reason: str


Event = Union[RequestReceived, DataReceived, StreamReset, GoAwayReceived, ConnectionEnded]  # noqa: UP007
