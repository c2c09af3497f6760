"""HTTP/2 bytes for the sans-I/O connection tests: frames read back out of what the server
wrote, and header blocks of literal fields (no table: the simplest thing a peer may send).
Frames are built with the package's own `registry.h2.frames.frame` (its 9-byte header is what
h2 and hyperframe parse in the conformance tests, so it is checked there independently)."""

from __future__ import annotations

from registry.h2.hpack import encode_literal

__all__ = ["block", "parse_frames"]


def block(headers: list[tuple[str, str]]) -> bytes:
    return b"".join(encode_literal(n.encode(), v.encode()) for n, v in headers)


def parse_frames(data: bytes) -> list[tuple[int, int, int, bytes]]:
    """(type, flags, stream id, payload) of each frame in `data`, which must end on a frame's end."""
    out, pos = [], 0
    while pos < len(data):
        n = int.from_bytes(data[pos:pos + 3], "big")
        out.append((data[pos + 3], data[pos + 4], int.from_bytes(data[pos + 5:pos + 9], "big"), data[pos + 9:pos + 9 + n]))
        pos += 9 + n
    assert pos == len(data), "output ends inside a frame"
    return out
