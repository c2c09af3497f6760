"""Incremental framing of one memberlist TCP stream message.

A Go peer keeps the connection open until it has our reply, so the end of its
message must be found from the bytes themselves, never from EOF.  The framer
walks the msgpack structure without building objects (cheap, bounded) and
remembers how many bytes it needs next, so feeding 1 byte at a time or 64 KiB
at a time both stay close to linear.
"""

from __future__ import annotations

import msgpack

from .codec import MAX_PUSH_NODES, DecodeError
from .messages import MessageType

__all__ = ["StreamFramer"]

_MAX_NEST = 64


class _Short(Exception):
    """Not enough bytes yet; ``need`` is the smallest total length worth retrying at."""

    def __init__(self, need: int) -> None:
        self.need = need


def _skip(buf: bytes | bytearray, pos: int, limit: int) -> int:
    """End offset of the msgpack object starting at ``pos`` (iterative, depth-bounded)."""
    n = len(buf)
    pending = 1  # objects still to skip at the current level
    stack: list[int] = []
    while True:
        while pending:
            if pos >= n:
                raise _Short(pos + 1)
            b = buf[pos]
            pos += 1
            pending -= 1
            size = 0
            children = 0
            if b <= 0x7F or b >= 0xE0 or b == 0xC0 or b == 0xC2 or b == 0xC3:
                pass
            elif 0xA0 <= b <= 0xBF:
                size = b & 0x1F
            elif 0x90 <= b <= 0x9F:
                children = b & 0x0F
            elif 0x80 <= b <= 0x8F:
                children = 2 * (b & 0x0F)
            elif b == 0xC1:
                raise DecodeError("malformed", "msgpack byte 0xc1")
            elif b in (0xCC, 0xD0):
                size = 1
            elif b in (0xCD, 0xD1):
                size = 2
            elif b in (0xCE, 0xD2, 0xCA):
                size = 4
            elif b in (0xCF, 0xD3, 0xCB):
                size = 8
            elif b in (0xD4, 0xD5, 0xD6, 0xD7, 0xD8):  # fixext 1/2/4/8/16 (+ type byte)
                size = 1 + (1 << (b - 0xD4))
            else:
                # Length-prefixed families: str8/16/32, bin8/16/32, ext8/16/32, array16/32, map16/32.
                width = {0xD9: 1, 0xC4: 1, 0xC7: 1, 0xDA: 2, 0xC5: 2, 0xC8: 2, 0xDC: 2, 0xDE: 2,
                         0xDB: 4, 0xC6: 4, 0xC9: 4, 0xDD: 4, 0xDF: 4}[b]
                if pos + width > n:
                    raise _Short(pos + width)
                ln = int.from_bytes(buf[pos : pos + width], "big")
                pos += width
                if b in (0xDC, 0xDD):
                    children = ln
                elif b in (0xDE, 0xDF):
                    children = 2 * ln
                elif b in (0xC7, 0xC8, 0xC9):
                    size = ln + 1
                else:
                    size = ln
            if size:
                pos += size
                if pos > limit:
                    raise DecodeError("too_large", "stream message exceeds the size limit")
                if pos > n:
                    raise _Short(pos)
            if children:
                if pos + children > limit:  # every child takes at least one byte
                    raise DecodeError("too_large", "stream message exceeds the size limit")
                if len(stack) >= _MAX_NEST:
                    raise DecodeError("malformed", "msgpack nested too deep")
                stack.append(pending)
                pending = children
        if not stack:
            return pos
        pending = stack.pop()


def _header(buf: bytes | bytearray, pos: int, end: int) -> dict[bytes, object]:
    try:
        obj = msgpack.unpackb(bytes(buf[pos:end]), raw=True)
    except Exception as e:  # noqa: BLE001 - untrusted input
        raise DecodeError("malformed", f"stream header: {e}") from None
    if not isinstance(obj, dict):
        raise DecodeError("malformed", "stream header is not a map")
    return obj


def _count(head: dict[bytes, object], key: bytes) -> int:
    v = head.get(key, 0)
    if v is None:
        return 0
    if type(v) is not int or v < 0:
        raise DecodeError("malformed", f"bad {key.decode()}")
    return v


class StreamFramer:
    """Collects bytes of one inbound stream message and says when it is complete.

    ``expect_label``: we accepted the connection, so a label header (244, len,
    label) may come first.  ``max_size`` bounds everything buffered.
    """

    def __init__(self, *, expect_label: bool, max_size: int) -> None:
        self._expect_label = expect_label
        self._max = max_size
        self._buf = bytearray()
        self._need = 1

    def feed(self, data: bytes) -> bytes | None:
        """Add bytes; return the whole framed message (label header included) once complete."""
        self._buf += data
        if len(self._buf) < self._need:
            if len(self._buf) > self._max:
                raise DecodeError("too_large", "stream message exceeds the size limit")
            return None
        try:
            end = self._frame()
        except _Short as s:
            self._need = max(s.need, len(self._buf) + 1)
            if len(self._buf) > self._max or s.need > self._max + self._label_room():
                raise DecodeError("too_large", "stream message exceeds the size limit") from None
            return None
        except DecodeError:
            raise
        except Exception as e:  # noqa: BLE001 - untrusted input
            raise DecodeError("malformed", f"{type(e).__name__}: {e}") from None
        msg = bytes(self._buf[:end])
        # Anything after the message belongs to a next one (never labelled).
        del self._buf[:end]
        self._expect_label = False
        self._need = 1
        return msg

    def _label_room(self) -> int:
        return 257 if self._expect_label else 0

    def _frame(self) -> int:
        buf = self._buf
        n = len(buf)
        pos = 0
        if self._expect_label and buf[0] == MessageType.HAS_LABEL:
            if n < 2:
                raise _Short(2)
            ln = buf[1]
            if ln == 0:
                raise DecodeError("label", "empty label in header")
            pos = 2 + ln
            if n <= pos:
                raise _Short(pos + 1)
        start = pos
        limit = start + self._max
        t = buf[pos]
        pos += 1
        if t == MessageType.ENCRYPT:
            if n < pos + 4:
                raise _Short(pos + 4)
            ln = int.from_bytes(buf[pos : pos + 4], "big")
            if ln > self._max:
                raise DecodeError("too_large", "encrypted stream length")
            end = pos + 4 + ln
            if n < end:
                raise _Short(end)
            return end
        if t in (MessageType.COMPRESS, MessageType.PING, MessageType.ACK, MessageType.ERR):
            return _skip(buf, pos, limit)
        if t == MessageType.USER:
            hend = _skip(buf, pos, limit)
            ln = _count(_header(buf, pos, hend), b"UserMsgLen")
            end = hend + ln
            if end > limit:
                raise DecodeError("too_large", "user message length")
            if n < end:
                raise _Short(end)
            return end
        if t == MessageType.PUSH_PULL:
            hend = _skip(buf, pos, limit)
            head = _header(buf, pos, hend)
            nodes = _count(head, b"Nodes")
            ulen = _count(head, b"UserStateLen")
            if nodes > MAX_PUSH_NODES:
                raise DecodeError("too_large", "push/pull node count")
            if hend + nodes + ulen > limit:
                raise DecodeError("too_large", "push/pull size")
            pos = hend
            for _ in range(nodes):
                pos = _skip(buf, pos, limit)
            end = pos + ulen
            if n < end:
                raise _Short(end)
            return end
        raise DecodeError("unknown_type", f"message type {t} on a stream")
