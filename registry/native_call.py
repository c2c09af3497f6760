"""One gRPC call of the native front: its kind, its request buffer and the flags that say where
it stands, and the gRPC message framing read out of that buffer.

Apart from `registry.native_calls` (which runs a connection's calls) so that what a call *is*
can be read, and tested, without the dispatch around it. See docs/native-front.md.
"""

from __future__ import annotations

import asyncio
from typing import Literal

from registry.grpcwire import MAX_MESSAGE, CallError, Status, decompress
from registry.native_stats import Stats

__all__ = ["STREAM_BUFFER", "Call", "CallKind", "announced_too_large", "take_messages"]

#: How a method answers, which decides how its call is run: "unary" (one request, one answer),
#: "stream" (one request, answers until the server ends: Watch), "bidi" (one answer per request
#: message, in order: reflection).
CallKind = Literal["unary", "stream", "bidi"]

STREAM_BUFFER = 1 << 20  # queued bytes per stream before a streaming call waits for the peer


class Call:
    """The state of one open call (a stream the client opened on a gRPC method)."""

    __slots__ = (
        "accounted", "buf", "done", "encoding", "ended", "held", "kind", "opened", "path", "paused", "started", "task"
    )

    def __init__(self, path: str, kind: CallKind, encoding: str) -> None:
        self.path = path
        self.kind: CallKind = kind
        self.buf = bytearray()
        self.encoding = encoding
        self.task: asyncio.Task[None] | None = None
        self.done = False  # the request is whole (or refused): later DATA is dropped
        self.started = False  # response headers sent (bidi calls)
        self.held = 0  # received bytes not yet acknowledged to the HTTP/2 flow control
        self.accounted = 0  # len(buf) as the server's memory budget counts it
        self.paused = False  # bidi: answers wait behind the client's window; its requests wait too
        self.ended = False  # bidi: the client ended its side (answered once the buffer is drained)
        self.opened = asyncio.get_running_loop().time()  # a request still incomplete long after: refused


def announced_too_large(call: Call) -> bool:
    """The first message's length prefix already says more than MAX_MESSAGE (grpcio refuses
    on the prefix too, so the client is stopped before it sends the 16 MiB)."""
    buf = call.buf
    return len(buf) >= 5 and int.from_bytes(buf[1:5], "big") > MAX_MESSAGE


def take_messages(call: Call, stats: Stats, most: int = 1 << 30) -> list[bytes]:
    """Complete messages at the front of `call.buf` (up to `most`, taken out), decompressed
    (counted in `stats.compressed_requests`)."""
    out: list[bytes] = []
    buf = call.buf
    while len(buf) >= 5 and len(out) < most:
        size = int.from_bytes(buf[1:5], "big")
        if size > MAX_MESSAGE:
            raise CallError(Status.RESOURCE_EXHAUSTED, f"request message of {size} bytes, at most {MAX_MESSAGE}")
        if len(buf) < 5 + size:
            break
        compressed, data = buf[0], bytes(buf[5 : 5 + size])
        del buf[: 5 + size]
        if compressed:
            data = decompress(call.encoding, data)
            stats.compressed_requests += 1
        out.append(data)
    return out
