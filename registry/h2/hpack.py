"""HPACK (RFC 7541): a full decoder and the few encodings the server's responses need.

The server never indexes what it sends, so encoding is a handful of stateless functions and only
the decoder keeps a dynamic table.  Header octets map 1:1 to str through latin-1: HTTP field
bytes need not be UTF-8 and gRPC metadata is ASCII.
"""

from __future__ import annotations

from collections import deque

from registry.h2 import huffman

__all__ = [
    "STATIC_TABLE",
    "Decoder",
    "HPACKError",
    "encode_indexed",
    "encode_indexed_name_literal",
    "encode_integer",
    "encode_literal",
]


class HPACKError(Exception):
    """A header block that cannot be decoded: the connection must fail with COMPRESSION_ERROR."""


# RFC 7541 Appendix A; index i is STATIC_TABLE[i - 1].
STATIC_TABLE: tuple[tuple[str, str], ...] = (
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
)

_STATIC_COUNT = len(STATIC_TABLE)
_ENTRY_OVERHEAD = 32  # RFC 7541 §4.1, also the per-field overhead of SETTINGS_MAX_HEADER_LIST_SIZE
_MAX_INT = 1 << 32  # nothing HPACK counts (indices, lengths, sizes) is legitimately larger
# Per-connection caches, bounded so a peer cannot grow them: ~20 kB and ~10 kB at most (they
# were 512 strings of 128 bytes, ~185 kB a connection, x 1,024 connections a source allows).
_HUFFMAN_CACHE_LIMIT = 64
_HUFFMAN_CACHE_MAX_LEN = 64
_BLOCK_CACHE_LIMIT = 16
_BLOCK_CACHE_MAX_LEN = 256


def _integer_tail(block: bytes, pos: int, value: int) -> tuple[int, int]:
    """Continues an integer whose prefix was all ones; returns (value, position after it)."""
    end = len(block)
    shift = 0
    while True:
        if pos >= end:
            raise HPACKError("truncated integer")
        octet = block[pos]
        pos += 1
        value += (octet & 0x7F) << shift
        if value > _MAX_INT:
            raise HPACKError("integer overflow")
        if not octet & 0x80:
            return value, pos
        shift += 7
        if shift > 28:  # 5 continuation octets carry 35 bits: more is padding with zeros
            raise HPACKError("integer overflow")


class Decoder:
    """One per connection: the dynamic table is the state the peer's encoder assumes we keep."""

    def __init__(self, max_table_size: int = 4096, max_header_list_size: int = 65536) -> None:
        self.max_allowed_table_size = max_table_size
        self.max_header_list_size = max_header_list_size
        self._max_size = max_table_size
        self._size = 0
        self._table: deque[tuple[str, str]] = deque()
        # Peers re-send the same Huffman strings (:path, user-agent) until they are indexed,
        # and values the encoder chose not to index on every request.
        self._huffman_cache: dict[bytes, str] = {}
        # Once a client has indexed its headers it re-sends the very same block on every request;
        # valid while the table is unchanged, so any table change empties it.
        self._blocks: dict[bytes, tuple[tuple[tuple[str, str], ...], int]] = {}
        # True when the last `decode` answered from that cache: the same bytes gave the same
        # fields under the same table, so a caller may reuse what it concluded about them then.
        self.reused = False

    @property
    def table_size(self) -> int:
        """The dynamic table's size as RFC 7541 §4.1 counts it."""
        return self._size

    @property
    def max_table_size(self) -> int:
        """The dynamic table's current limit, as last set by the peer (§6.3)."""
        return self._max_size

    @property
    def dynamic_table(self) -> tuple[tuple[str, str], ...]:
        """Newest first, so entry i has HPACK index 62 + i."""
        return tuple(self._table)

    def decode(self, block: bytes) -> list[tuple[str, str]]:
        """A whole header block (HEADERS + CONTINUATION payloads joined) to its ordered fields."""
        if type(block) is not bytes:  # a bytearray would not hash for the caches
            block = bytes(block)
        cached = self._blocks.get(block)
        if cached is not None and cached[1] <= self.max_header_list_size:
            self.reused = True
            return list(cached[0])
        self.reused = False
        headers: list[tuple[str, str]] = []
        changes_table = False
        table = self._table
        static = STATIC_TABLE
        limit = self.max_header_list_size
        total = 0
        pos = 0
        end = len(block)
        while pos < end:
            octet = block[pos]
            pos += 1
            if octet & 0x80:  # §6.1 indexed field
                index = octet & 0x7F
                if index == 0x7F:
                    index, pos = _integer_tail(block, pos, index)
                if 0 < index <= _STATIC_COUNT:
                    field = static[index - 1]
                elif index == 0:
                    raise HPACKError("index 0")
                elif index - _STATIC_COUNT <= len(table):
                    field = table[index - _STATIC_COUNT - 1]
                else:
                    raise HPACKError(f"index {index} beyond the tables")
            elif octet & 0x40:  # §6.2.1 literal with incremental indexing
                field, pos = self._literal(block, pos, octet & 0x3F, 0x3F)
                self._insert(field)
                changes_table = True
            elif octet & 0x20:  # §6.3 dynamic table size update
                if headers:
                    raise HPACKError("table size update after a header field")
                size = octet & 0x1F
                if size == 0x1F:
                    size, pos = _integer_tail(block, pos, size)
                if size > self.max_allowed_table_size:
                    raise HPACKError(f"table size {size} above the {self.max_allowed_table_size} allowed")
                self._max_size = size
                self._evict(size)
                self._blocks.clear()
                changes_table = True
                continue
            else:  # §6.2.2 without indexing (0000) and §6.2.3 never indexed (0001)
                field, pos = self._literal(block, pos, octet & 0x0F, 0x0F)
            total += len(field[0]) + len(field[1]) + _ENTRY_OVERHEAD
            if total > limit:
                raise HPACKError(f"header list larger than {limit}")
            headers.append(field)
        if not changes_table and len(block) <= _BLOCK_CACHE_MAX_LEN:
            if len(self._blocks) >= _BLOCK_CACHE_LIMIT:
                self._blocks.clear()
            self._blocks[block] = (tuple(headers), total)
        return headers

    def _literal(self, block: bytes, pos: int, index: int, prefix_max: int) -> tuple[tuple[str, str], int]:
        """A literal field (§6.2) after its first octet: name by index (0 = literal name), then the value."""
        if index == prefix_max:
            index, pos = _integer_tail(block, pos, index)
        if index:
            name = self._name(index)
        else:
            name, pos = self._string(block, pos)
        value, pos = self._string(block, pos)
        return (name, value), pos

    def _name(self, index: int) -> str:
        if index <= _STATIC_COUNT:
            return STATIC_TABLE[index - 1][0]
        if index - _STATIC_COUNT <= len(self._table):
            return self._table[index - _STATIC_COUNT - 1][0]
        raise HPACKError(f"name index {index} beyond the tables")

    def _string(self, block: bytes, pos: int) -> tuple[str, int]:
        if pos >= len(block):
            raise HPACKError("truncated string")
        octet = block[pos]
        length = octet & 0x7F
        pos += 1
        if length == 0x7F:
            length, pos = _integer_tail(block, pos, length)
        stop = pos + length
        if stop > len(block):
            raise HPACKError("truncated string")
        if not octet & 0x80:
            return block[pos:stop].decode("latin-1"), stop
        encoded = block[pos:stop]
        cache = self._huffman_cache
        text = cache.get(encoded)
        if text is None:
            try:
                text = huffman.decode(encoded).decode("latin-1")
            except ValueError as exc:
                raise HPACKError(str(exc)) from None
            if length <= _HUFFMAN_CACHE_MAX_LEN:
                if len(cache) >= _HUFFMAN_CACHE_LIMIT:
                    cache.clear()
                cache[encoded] = text
        return text, stop

    def _insert(self, field: tuple[str, str]) -> None:
        """§4.4: evict from the old end; an entry larger than the whole table just empties it."""
        self._blocks.clear()
        size = len(field[0]) + len(field[1]) + _ENTRY_OVERHEAD
        if size > self._max_size:
            self._table.clear()
            self._size = 0
            return
        self._evict(self._max_size - size)
        self._table.appendleft(field)
        self._size += size

    def _evict(self, keep: int) -> None:
        table = self._table
        while self._size > keep:
            name, value = table.pop()
            self._size -= len(name) + len(value) + _ENTRY_OVERHEAD


def encode_integer(value: int, prefix_bits: int, first_byte_flags: int = 0) -> bytes:
    """§5.1: value in the low prefix_bits of the first octet, the rest 7 bits an octet."""
    if value < 0 or not 1 <= prefix_bits <= 8:
        raise ValueError(f"cannot encode {value} with a {prefix_bits}-bit prefix")
    full = (1 << prefix_bits) - 1
    if value < full:
        return bytes((first_byte_flags | value,))
    out = bytearray((first_byte_flags | full,))
    value -= full
    while value >= 0x80:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    out.append(value)
    return bytes(out)


def encode_literal(name: bytes, value: bytes) -> bytes:
    """§6.2.2 with a literal name: for names outside the static table (grpc-status, ...)."""
    return b"".join((b"\x00", encode_integer(len(name), 7), name, encode_integer(len(value), 7), value))


def encode_indexed_name_literal(index: int, value: bytes) -> bytes:
    """§6.2.2 naming a static-table entry (e.g. 31 content-type) so the name costs one octet."""
    if not 0 < index <= _STATIC_COUNT:
        raise ValueError(f"static table index {index} out of 1..{_STATIC_COUNT}")
    return encode_integer(index, 4) + encode_integer(len(value), 7) + value


def encode_indexed(index: int) -> bytes:
    """§6.1: one octet for whole static fields such as :status 200 (index 8).

    Static indices only: our encoder's dynamic table stays empty, so 62+ would name nothing.
    """
    if not 0 < index <= _STATIC_COUNT:
        raise ValueError(f"static table index {index} out of 1..{_STATIC_COUNT}")
    return encode_integer(index, 7, 0x80)
