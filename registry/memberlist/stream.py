"""Incremental framing of one memberlist TCP stream message.

A Go peer keeps the connection open until it has our reply, so the end of its
message must be found from the bytes themselves, never from EOF.  The framer
walks the msgpack structure without building objects and keeps its place
between ``feed`` calls, so the work is linear in the message size whether
bytes arrive one at a time or 64 KiB at a time (a hostile peer cannot make it
re-scan a large buffer on every chunk).  See docs/wire.md §4.1.

Why not ``msgpack.Unpacker`` (feed/skip/tell, also resumable and linear): it must hold a
msgpack string or binary whole before it moves past it, in a buffer of its own that grows by
doubling, while this framer must keep every byte anyway (the message is returned whole) and
charges only those to the admission budget.  A compressed stream message -- the default form
-- is one such binary, so the Unpacker would hold a second, uncharged copy of up to twice the
message (20 MiB streams: ~40 MiB a stream, outside ``max_inbound_buffered``).  Measured by
benchmarks/bench_stream_framing.py (1 KiB chunks, Python 3.11): a compressed push/pull of 1 MiB
of state (1.4 MB) holds 3.6 MiB more with the Unpacker, 79 KiB more with this framer; an
uncompressed 1 MiB push/pull of 9,050 rows is framed in 3.1 ms by the Unpacker and 40 ms here
(a cost only uncompressed streams pay: 0.07 ms for the same state compressed).
"""

from __future__ import annotations

from typing import Any

from .fields import MAX_PUSH_NODES, DecodeError, read_map, read_uint
from .messages import MessageType
from .wirecodec import STREAM_TYPES

__all__ = ["StreamFramer"]

_MAX_NEST = 64
#: What may start a stream message after the label: a message a stream carries, or the
#: compression wrapper around one (encryption is framed by its length header).
_FRAMED = STREAM_TYPES | {int(MessageType.COMPRESS)}

# Length-prefixed msgpack families: type byte -> width of the length field.
_LEN_WIDTH = {
    0xD9: 1, 0xC4: 1, 0xC7: 1,  # str8, bin8, ext8
    0xDA: 2, 0xC5: 2, 0xC8: 2, 0xDC: 2, 0xDE: 2,  # str16, bin16, ext16, array16, map16
    0xDB: 4, 0xC6: 4, 0xC9: 4, 0xDD: 4, 0xDF: 4,  # str32, bin32, ext32, array32, map32
}  # fmt: skip
# Fixed-size scalars: type byte -> bytes after it.
_FIXED = {
    0xCC: 1, 0xD0: 1, 0xCD: 2, 0xD1: 2, 0xCE: 4, 0xD2: 4, 0xCA: 4, 0xCF: 8, 0xD3: 8, 0xCB: 8,
    0xD4: 2, 0xD5: 3, 0xD6: 5, 0xD7: 9, 0xD8: 17,  # fixext: type byte + data
}  # fmt: skip


class _Short(Exception):
    """Not enough bytes yet; ``need`` is the smallest total length worth retrying at."""

    def __init__(self, need: int) -> None:
        self.need = need


class _Skipper:
    """Finds the end of one msgpack object; resumable after running out of bytes."""

    __slots__ = ("pending", "pos", "stack")

    def __init__(self, pos: int) -> None:
        self.pos = pos
        self.pending = 1  # objects still to skip at the current nesting level
        self.stack: list[int] = []

    def run(self, buf: bytes | bytearray, limit: int) -> int:
        n = len(buf)
        pos = self.pos
        pending = self.pending
        stack = self.stack
        while True:
            while pending:
                if pos >= n:
                    self.pos, self.pending = pos, pending
                    raise _Short(pos + 1)
                b = buf[pos]
                p = pos + 1
                children = 0
                if b <= 0x7F or b >= 0xE0 or b == 0xC0 or b == 0xC2 or b == 0xC3:
                    pass
                elif b >= 0xA0 and b <= 0xBF:
                    p += b & 0x1F
                elif b >= 0x80 and b <= 0x8F:
                    children = 2 * (b & 0x0F)
                elif b >= 0x90 and b <= 0x9F:
                    children = b & 0x0F
                elif b in _FIXED:
                    p += _FIXED[b]
                elif b in _LEN_WIDTH:
                    w = _LEN_WIDTH[b]
                    if p + w > n:
                        self.pos, self.pending = pos, pending
                        raise _Short(p + w)
                    ln = int.from_bytes(buf[p : p + w], "big")
                    p += w
                    if b == 0xDC or b == 0xDD:
                        children = ln
                    elif b == 0xDE or b == 0xDF:
                        children = 2 * ln
                    elif b >= 0xC7 and b <= 0xC9:
                        p += ln + 1
                    else:
                        p += ln
                else:  # 0xc1 is never used
                    raise DecodeError("malformed", f"msgpack byte {b:#x}")
                if (
                    p > limit or p + children > limit
                ):  # every child takes at least one byte
                    raise DecodeError(
                        "too_large", "stream message exceeds the size limit"
                    )
                if p > n:
                    self.pos, self.pending = pos, pending
                    raise _Short(p)
                pos = p
                pending -= 1
                if children:
                    if len(stack) >= _MAX_NEST:
                        raise DecodeError("malformed", "msgpack nested too deep")
                    stack.append(pending)
                    pending = children
            if not stack:
                self.pos, self.pending = pos, 0
                return pos
            pending = stack.pop()


def _header(buf: bytes | bytearray, pos: int, end: int) -> dict[Any, Any]:
    # the skipper found the header's end, so this is one whole msgpack object
    return read_map(bytes(buf[pos:end]))


def _count(head: dict[Any, Any], key: bytes) -> int:
    # a length or count: msgpack's largest uint at most; its bound is checked by the caller
    return read_uint(head, key, 64)


class StreamFramer:
    """Collects bytes of one inbound stream message and says when it is complete.

    ``expect_label``: we accepted the connection, so a label header (244, len,
    label) may come first.  ``max_size`` bounds the message (label excluded);
    ``max_user_size`` bounds the body a user message announces (Serf sends none
    on streams; memberlist has no such bound, but its reader allocates whatever is
    announced).  Every announced length is checked before its bytes are awaited.
    After a message is returned, further bytes start a new (unlabelled) one.
    """

    def __init__(self, *, expect_label: bool, max_size: int, max_user_size: int | None = None) -> None:
        self._expect_label = expect_label
        self._max = max_size
        self._max_user = max_size if max_user_size is None else max_user_size
        self._buf = bytearray()
        self._reset()

    def _reset(self) -> None:
        self._need = 1
        self._start = -1  # offset of the type byte once the label header is past
        self._skipper: _Skipper | None = None
        self._objects_left = 0  # push/pull node maps still to skip
        self._tail = (
            0  # raw bytes after the msgpack objects (user state / user message)
        )
        self._in_header = True

    def feed(self, data: bytes) -> bytes | None:
        """Add bytes; return the whole framed message (label header included) once complete."""
        self._buf += data
        if len(self._buf) < self._need:
            return None
        try:
            end = self._frame()
        except _Short as s:
            self._need = s.need
            return None
        except DecodeError:
            raise
        except Exception as e:  # noqa: BLE001 - untrusted input
            raise DecodeError("malformed", f"{type(e).__name__}: {e}") from None
        with memoryview(self._buf) as view:  # one copy: a slice of a bytearray would be a second
            msg = bytes(view[:end])
        del self._buf[:end]
        self._expect_label = False
        self._reset()
        return msg

    def _frame(self) -> int:
        buf = self._buf
        n = len(buf)
        if self._start < 0:
            pos = 0
            if self._expect_label and buf[0] == MessageType.HAS_LABEL:
                if n < 2:
                    raise _Short(2)
                if buf[1] == 0:
                    raise DecodeError("label", "empty label in header")
                pos = 2 + buf[1]
                if n <= pos:
                    raise _Short(pos + 1)
            self._start = pos
        start = self._start
        limit = start + self._max
        t = buf[start]
        if t == MessageType.ENCRYPT:
            if n < start + 5:
                raise _Short(start + 5)
            ln = int.from_bytes(buf[start + 1 : start + 5], "big")
            if ln > self._max:
                raise DecodeError("too_large", "encrypted stream length")
            if n < start + 5 + ln:
                raise _Short(start + 5 + ln)
            return start + 5 + ln
        if t not in _FRAMED:
            raise DecodeError("unknown_type", f"message type {t} on a stream")
        if self._skipper is None:
            self._skipper = _Skipper(start + 1)
        sk = self._skipper
        while True:
            end = sk.run(buf, limit)
            if self._in_header:
                self._in_header = False
                if t == MessageType.USER:
                    self._tail = _count(_header(buf, start + 1, end), b"UserMsgLen")
                    if self._tail > self._max_user:
                        raise DecodeError("too_large", "user message length")
                elif t == MessageType.PUSH_PULL:
                    head = _header(buf, start + 1, end)
                    self._objects_left = _count(head, b"Nodes")
                    self._tail = _count(head, b"UserStateLen")
                    if self._objects_left > MAX_PUSH_NODES:
                        raise DecodeError("too_large", "push/pull node count")
                if end + self._objects_left + self._tail > limit:
                    raise DecodeError(
                        "too_large", "stream message exceeds the size limit"
                    )
            elif self._objects_left:
                self._objects_left -= 1
            if not self._objects_left:
                break
            sk = self._skipper = _Skipper(end)
        total = end + self._tail
        if n < total:
            raise _Short(total)
        return total
