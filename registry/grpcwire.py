"""gRPC's layer over HTTP/2, as bytes (grpc/grpc PROTOCOL-HTTP2.md): status codes, the
response header blocks, message framing, grpc-message encoding and request decompression.
Pure functions and constants, shared by the native front's connections."""

from __future__ import annotations

import zlib
from enum import IntEnum

from registry.api import Exhausted, Missing, NotSynced
from registry.h2.hpack import encode_indexed, encode_indexed_name_literal, encode_literal

__all__ = [
    "HEAD",
    "MAX_MESSAGE",
    "TRAILERS_OK",
    "CallError",
    "Status",
    "code_of",
    "decompress",
    "frame_message",
    "percent_encode",
    "status_block",
]

MAX_MESSAGE = 16 << 20  # largest request message accepted (grpcio front: the same)


class Status(IntEnum):
    """gRPC status codes (grpc/grpc doc/statuscodes.md), as grpc-status carries them.

    Written out with b"%d" or int(): on Python 3.10 str() of an IntEnum member is its name."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


HEAD = encode_indexed(8) + encode_indexed_name_literal(31, b"application/grpc")  # :status 200, content-type
TRAILERS_OK = encode_literal(b"grpc-status", b"0")


def percent_encode(text: str) -> bytes:
    """grpc-message encoding: UTF-8, with bytes outside printable ASCII and '%' as %XX."""
    out = bytearray()
    for b in text.encode("utf-8"):
        if 0x20 <= b <= 0x7E and b != 0x25:
            out.append(b)
        else:
            out += b"%%%02X" % b
    return bytes(out)


def status_block(code: int, message: str) -> bytes:
    """grpc-status (and grpc-message, cut to 1 KiB) as a header block: trailers, or a trailers-only tail."""
    block = encode_literal(b"grpc-status", b"%d" % code)
    if message:
        block += encode_literal(b"grpc-message", percent_encode(message[:1024]))
    return block


def frame_message(data: bytes) -> bytes:
    """One length-prefixed message, uncompressed."""
    return b"\x00" + len(data).to_bytes(4, "big") + data


class CallError(Exception):
    """A call that fails for a reason of the gRPC layer (framing, size, compression), with its status."""

    def __init__(self, code: Status, message: str) -> None:
        super().__init__(message)
        self.code = code


def code_of(exc: Exception) -> Status:
    """The status a failed call reports: CallError's own, UNAVAILABLE for NotSynced (a Missing to
    retry), NOT_FOUND for Missing, RESOURCE_EXHAUSTED for Exhausted, else INVALID_ARGUMENT."""
    if isinstance(exc, CallError):
        return exc.code
    if isinstance(exc, NotSynced):
        return Status.UNAVAILABLE
    if isinstance(exc, Missing):
        return Status.NOT_FOUND
    if isinstance(exc, Exhausted):
        return Status.RESOURCE_EXHAUSTED
    return Status.INVALID_ARGUMENT


def decompress(encoding: str, data: bytes) -> bytes:
    """A compressed request message, bounded by MAX_MESSAGE however well it compresses."""
    wbits = {"gzip": 31, "deflate": 15}.get(encoding)
    if wbits is None:
        raise CallError(Status.UNIMPLEMENTED, f"request compressed with {encoding!r}; this server takes gzip, deflate")
    d = zlib.decompressobj(wbits)
    try:
        out = d.decompress(data, MAX_MESSAGE + 1)
    except zlib.error as exc:
        raise CallError(Status.INTERNAL, f"request does not decompress as {encoding}: {exc}") from None
    if len(out) > MAX_MESSAGE:
        raise CallError(Status.RESOURCE_EXHAUSTED, f"request larger than {MAX_MESSAGE} bytes once decompressed")
    return out
