"""The outer wire layers one at a time: compound, compression, CRC, label (docs/wire.md §3, §4).

Each is a pure function pair (wrap, unwrap) with no configuration; ``WireCodec``
(wirecodec.py) decides which of them a node's packets and streams carry, in which order,
and adds encryption with its keyring.  Unwrapping raises only ``DecodeError``.
"""

from __future__ import annotations

import enum
import struct
import zlib

from . import lzw
from .encoders import packb, type_prefix
from .fields import DecodeError, read_map
from .messages import MessageType

__all__ = [
    "MAX_INFLATE_RATIO",
    "MAX_PACKET_INFLATE",
    "CompressionAlgo",
    "add_crc",
    "compress_msg",
    "decompress_msg",
    "label_header",
    "make_compound",
    "split_compound",
    "strip_crc",
    "strip_label",
]

#: Largest message a UDP packet may inflate to: a datagram carries at most 64 KiB, and Go
#: compresses a packet only when that makes it smaller, so nothing legitimate is larger.
MAX_PACKET_INFLATE = 1 << 16
#: Stream messages may inflate to ``max_decompressed`` but never to more than this many
#: times their compressed size (Go's LZW of real push/pull state stays far below it; a
#: bomb reaches ~2,500:1) -- and never below ``MAX_PACKET_INFLATE``.
MAX_INFLATE_RATIO = 64
#: A compound counts its parts in one byte, and each part's length in two.
_MAX_PARTS = 255
_MAX_PART = 0xFFFF

# plain ints: compared on every packet (see wirecodec.py)
_COMPOUND = int(MessageType.COMPOUND)
_LABEL = int(MessageType.HAS_LABEL)
_CRC = int(MessageType.HAS_CRC)
_COMPRESS_PREFIX = type_prefix(MessageType.COMPRESS)
_CRC_PREFIX = type_prefix(MessageType.HAS_CRC)


class CompressionAlgo(enum.IntEnum):
    """``compress.Algo``: memberlist defines only LZW."""

    LZW = 0


def make_compound(parts: list[bytes]) -> bytes:
    """Compound message (type 7) of 1..255 complete messages; the caller splits larger batches."""
    if not 0 < len(parts) <= _MAX_PARTS:
        raise ValueError(f"a compound holds 1..{_MAX_PARTS} parts, not {len(parts)}")
    lengths = [len(p) for p in parts]
    if max(lengths) > _MAX_PART:
        raise ValueError(f"a compound part is limited to {_MAX_PART} bytes")
    return b"".join([bytes((_COMPOUND, len(parts))), struct.pack(f">{len(parts)}H", *lengths), *parts])


def split_compound(data: bytes) -> tuple[list[bytes], bool]:
    """Parts of a compound message (``data`` starts with its type byte 7).

    Returns ``(parts, truncated)``: as in Go, a part running past the end is
    dropped together with all later ones, earlier parts are kept.
    """
    if len(data) < 2 or data[0] != _COMPOUND:
        raise DecodeError("truncated" if len(data) < 2 else "malformed", "compound header")
    n = data[1]
    pos = 2 + 2 * n
    if len(data) < pos:
        raise DecodeError("truncated", "compound length table")
    lengths = struct.unpack_from(f">{n}H", data, 2)
    parts: list[bytes] = []
    for ln in lengths:
        end = pos + ln
        if end > len(data):
            return parts, True
        parts.append(data[pos:end])
        pos = end
    return parts, False


def compress_msg(msg: bytes) -> bytes:
    """``9, {Algo: 0, Buf: lzw(msg)}``."""
    return _COMPRESS_PREFIX + packb({b"Algo": CompressionAlgo.LZW.value, b"Buf": lzw.compress(msg)})


def decompress_msg(body: bytes, limit: int) -> bytes:
    """The message inside a compress wrapper (``body`` follows its type byte), at most ``limit`` bytes."""
    d = read_map(body)
    algo = d.get(b"Algo", 0)
    if algo != CompressionAlgo.LZW or type(algo) is not int:
        raise DecodeError("decompress", f"unknown compression algorithm {algo!r}")
    buf = d.get(b"Buf")
    if type(buf) is not bytes:
        raise DecodeError("decompress", "Buf is not a byte string")
    try:
        out = lzw.decompress(buf, limit)
    except lzw.LZWError as e:
        raise DecodeError(e.reason, str(e)) from None
    if not out:
        raise DecodeError("decompress", "empty decompressed payload")
    return out


def add_crc(msg: bytes) -> bytes:
    """``12, CRC-32 (big-endian)`` in front of ``msg``."""
    return _CRC_PREFIX + struct.pack(">I", zlib.crc32(msg)) + msg


def strip_crc(buf: bytes) -> bytes:
    """``buf`` without its CRC header if it has one (checked), else ``buf`` unchanged."""
    if len(buf) >= 5 and buf[0] == _CRC:
        (want,) = struct.unpack_from(">I", buf, 1)
        buf = buf[5:]
        if zlib.crc32(buf) != want:
            raise DecodeError("bad_crc", "CRC mismatch")
    return buf


def label_header(label: bytes) -> bytes:
    """``244, len, label`` (empty when no label is configured)."""
    return bytes((_LABEL, len(label))) + label if label else b""


def strip_label(data: bytes) -> tuple[bytes, bytes]:
    """Split a leading label header off: ``(label, rest)``; no header gives ``(b"", data)``."""
    if not data or data[0] != _LABEL:
        return b"", data
    if len(data) < 2:
        raise DecodeError("truncated", "label header")
    ln = data[1]
    if ln == 0:
        raise DecodeError("label", "empty label in header")
    if len(data) < 2 + ln:
        raise DecodeError("truncated", "label header")
    return data[2 : 2 + ln], data[2 + ln :]
