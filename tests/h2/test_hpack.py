"""HPACK codec: RFC 7541 Appendix C vectors, Huffman code, error handling, fuzzing, nghttp2."""

from __future__ import annotations

import random
import re
import socket
import subprocess
import threading
from fractions import Fraction

import pytest

from registry.h2 import huffman
from registry.h2.hpack import (
    STATIC_TABLE,
    Decoder,
    HPACKError,
    encode_indexed,
    encode_indexed_name_literal,
    encode_integer,
    encode_literal,
)

Fields = list[tuple[str, str]]


def hx(text: str) -> bytes:
    """The RFC's hex dumps, spaces and line breaks included."""
    return bytes.fromhex("".join(text.split()))


def huffman_encode(data: bytes) -> bytes:
    """Test-only encoder, straight from RFC 7541 §5.2: codes MSB first, padded with EOS ones."""
    acc = 0
    bits = 0
    for octet in data:
        code, length = huffman.CODES[octet]
        acc = (acc << length) | code
        bits += length
    pad = -bits % 8
    return ((acc << pad) | ((1 << pad) - 1)).to_bytes((bits + pad) // 8, "big")


def huffman_literal(data: bytes) -> bytes:
    encoded = huffman_encode(data)
    return encode_integer(len(encoded), 7, 0x80) + encoded


def plain_literal(data: bytes) -> bytes:
    return encode_integer(len(data), 7) + data


def decode_integer_reference(data: bytes, prefix_bits: int) -> tuple[int, int]:
    """RFC 7541 §5.1's decoding pseudocode, for checking encode_integer at every prefix size."""
    full = (1 << prefix_bits) - 1
    value = data[0] & full
    if value < full:
        return value, 1
    m = 0
    pos = 1
    while True:
        octet = data[pos]
        pos += 1
        value += (octet & 0x7F) << m
        m += 7
        if not octet & 0x80:
            return value, pos


# --- tables -----------------------------------------------------------------------------


def test_static_table_matches_appendix_a_spot_checks() -> None:
    assert len(STATIC_TABLE) == 61
    assert STATIC_TABLE[0] == (":authority", "")
    assert STATIC_TABLE[1] == (":method", "GET")
    assert STATIC_TABLE[7] == (":status", "200")
    assert STATIC_TABLE[15] == ("accept-encoding", "gzip, deflate")
    assert STATIC_TABLE[30] == ("content-type", "")
    assert STATIC_TABLE[57] == ("user-agent", "")
    assert STATIC_TABLE[60] == ("www-authenticate", "")


def test_huffman_table_is_the_canonical_complete_code() -> None:
    """Codes and lengths were transcribed separately: the canonical rebuild cross-checks both."""
    codes = huffman.CODES
    assert len(codes) == 257
    expected = 0
    previous = codes[0][1]
    for position, symbol in enumerate(sorted(range(257), key=lambda s: (codes[s][1], s))):
        code, length = codes[symbol]
        if position:
            expected = (expected + 1) << (length - previous)
        assert code == expected, symbol
        previous = length
    assert sum(Fraction(1, 1 << length) for _, length in codes) == 1
    assert codes[huffman.EOS] == ((1 << 30) - 1, 30)
    assert codes[ord("/")] == (0x18, 6)  # the RFC's own worked example


# --- C.1 integers -----------------------------------------------------------------------


def test_c1_integer_encodings() -> None:
    assert encode_integer(10, 5) == bytes([0b00001010])  # C.1.1
    assert encode_integer(1337, 5) == bytes([0b00011111, 0b10011010, 0b00001010])  # C.1.2
    assert encode_integer(42, 8) == bytes([0b00101010])  # C.1.3
    assert encode_integer(10, 5, 0xE0) == bytes([0xEA])  # flags keep the bits above the prefix


def test_c1_integer_decodings_through_table_size_updates() -> None:
    """A dynamic table size update carries a 5-bit prefix integer: exactly C.1.1 and C.1.2."""
    decoder = Decoder()
    assert decoder.decode(bytes([0x20 | 0b01010])) == []
    assert decoder.max_table_size == 10
    assert decoder.decode(bytes([0x20 | 0b11111, 0b10011010, 0b00001010])) == []
    assert decoder.max_table_size == 1337
    assert decoder.decode(encode_integer(42, 5, 0x20)) == []
    assert decoder.max_table_size == 42


@pytest.mark.parametrize("prefix_bits", range(1, 9))
def test_encode_integer_matches_the_rfc_pseudocode(prefix_bits: int) -> None:
    values = [*range(300), 1337, 16383, 16384, 2**21, 2**32 - 1, 2**32]
    for value in values:
        encoded = encode_integer(value, prefix_bits)
        assert decode_integer_reference(encoded, prefix_bits) == (value, len(encoded))


def test_encode_integer_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        encode_integer(-1, 5)
    with pytest.raises(ValueError):
        encode_integer(1, 0)
    with pytest.raises(ValueError):
        encode_integer(1, 9)


# --- C.2 single representations ---------------------------------------------------------


def test_c2_1_literal_with_indexing() -> None:
    decoder = Decoder()
    block = hx("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572")
    assert decoder.decode(block) == [("custom-key", "custom-header")]
    assert decoder.dynamic_table == (("custom-key", "custom-header"),)
    assert decoder.table_size == 55


def test_c2_2_literal_without_indexing() -> None:
    decoder = Decoder()
    assert decoder.decode(hx("040c 2f73 616d 706c 652f 7061 7468")) == [(":path", "/sample/path")]
    assert decoder.dynamic_table == () and decoder.table_size == 0


def test_c2_3_literal_never_indexed() -> None:
    decoder = Decoder()
    block = hx("1008 7061 7373 776f 7264 0673 6563 7265 74")
    assert decoder.decode(block) == [("password", "secret")]
    assert decoder.dynamic_table == () and decoder.table_size == 0


def test_c2_4_indexed_field() -> None:
    decoder = Decoder()
    assert decoder.decode(hx("82")) == [(":method", "GET")]
    assert decoder.dynamic_table == () and decoder.table_size == 0


# --- C.3 / C.4 requests -----------------------------------------------------------------

AUTHORITY = (":authority", "www.example.com")
NO_CACHE = ("cache-control", "no-cache")
CUSTOM = ("custom-key", "custom-value")
REQUESTS: list[tuple[Fields, tuple[tuple[str, str], ...], int]] = [
    ([(":method", "GET"), (":scheme", "http"), (":path", "/"), AUTHORITY], (AUTHORITY,), 57),
    ([(":method", "GET"), (":scheme", "http"), (":path", "/"), AUTHORITY, NO_CACHE], (NO_CACHE, AUTHORITY), 110),
    (
        [(":method", "GET"), (":scheme", "https"), (":path", "/index.html"), AUTHORITY, CUSTOM],
        (CUSTOM, NO_CACHE, AUTHORITY),
        164,
    ),
]
C3 = [
    "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
    "8286 84be 5808 6e6f 2d63 6163 6865",
    "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
]
C4 = [
    "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
    "8286 84be 5886 a8eb 1064 9cbf",
    "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
]


@pytest.mark.parametrize("blocks", [C3, C4], ids=["C.3", "C.4-huffman"])
def test_c3_c4_requests_share_one_dynamic_table(blocks: list[str]) -> None:
    decoder = Decoder()
    for block, (fields, table, size) in zip(blocks, REQUESTS, strict=True):
        assert decoder.decode(hx(block)) == fields
        assert decoder.dynamic_table == table
        assert decoder.table_size == size


# --- C.5 / C.6 responses, 256-octet table -----------------------------------------------

DATE1 = ("date", "Mon, 21 Oct 2013 20:13:21 GMT")
DATE2 = ("date", "Mon, 21 Oct 2013 20:13:22 GMT")
LOCATION = ("location", "https://www.example.com")
PRIVATE = ("cache-control", "private")
GZIP = ("content-encoding", "gzip")
COOKIE = ("set-cookie", "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1")
RESPONSES: list[tuple[Fields, tuple[tuple[str, str], ...], int]] = [
    ([(":status", "302"), PRIVATE, DATE1, LOCATION], (LOCATION, DATE1, PRIVATE, (":status", "302")), 222),
    ([(":status", "307"), PRIVATE, DATE1, LOCATION], ((":status", "307"), LOCATION, DATE1, PRIVATE), 222),
    ([(":status", "200"), PRIVATE, DATE2, LOCATION, GZIP, COOKIE], (COOKIE, GZIP, DATE2), 215),
]
C5 = [
    """4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133
       2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70
       6c65 2e63 6f6d""",
    "4803 3330 37c1 c0bf",
    """88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d
       54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049
       5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e
       3d31""",
]
C6 = [
    """4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6
       2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3""",
    "4883 640e ffc1 c0bf",
    """88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab
       77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f
       9587 3160 65c0 03ed 4ee5 b106 3d50 07""",
]


@pytest.mark.parametrize("blocks", [C5, C6], ids=["C.5", "C.6-huffman"])
def test_c5_c6_responses_evict_from_a_256_octet_table(blocks: list[str]) -> None:
    decoder = Decoder(max_table_size=256)
    for block, (fields, table, size) in zip(blocks, RESPONSES, strict=True):
        assert decoder.decode(hx(block)) == fields
        assert decoder.dynamic_table == table
        assert decoder.table_size == size


def all_rfc_blocks() -> list[bytes]:
    return [hx(b) for b in C3 + C4 + C5 + C6]


# --- dynamic table management -----------------------------------------------------------


def test_table_size_update_evicts_oldest_entries() -> None:
    decoder = Decoder()
    for block in C3:
        decoder.decode(hx(block))
    assert decoder.decode(encode_integer(110, 5, 0x20) + hx("be")) == [CUSTOM]
    assert decoder.dynamic_table == (CUSTOM, NO_CACHE) and decoder.table_size == 107
    assert decoder.decode(encode_integer(0, 5, 0x20) + encode_integer(4096, 5, 0x20)) == []
    assert not decoder.dynamic_table and decoder.table_size == 0 and decoder.max_table_size == 4096


def test_entry_larger_than_the_table_empties_it_and_is_not_added() -> None:
    decoder = Decoder(max_table_size=100)
    decoder.decode(b"\x40" + plain_literal(b"a") + plain_literal(b"b"))
    assert decoder.table_size == 34
    big = b"\x40" + plain_literal(b"n") + plain_literal(b"v" * 68)  # 1 + 68 + 32 = 101
    assert decoder.decode(big) == [("n", "v" * 68)]
    assert not decoder.dynamic_table and decoder.table_size == 0
    exact = b"\x40" + plain_literal(b"n") + plain_literal(b"v" * 67)  # exactly 100: fits
    decoder.decode(exact)
    assert decoder.dynamic_table == (("n", "v" * 67),) and decoder.table_size == 100


def test_new_entry_may_name_the_entry_its_insertion_evicts() -> None:
    decoder = Decoder(max_table_size=80)
    decoder.decode(b"\x40" + plain_literal(b"x-name") + plain_literal(b"1"))  # 39
    block = encode_integer(62, 6, 0x40) + plain_literal(b"v" * 10)  # 6 + 10 + 32 = 48: 39 must go
    assert decoder.decode(block) == [("x-name", "v" * 10)]
    assert decoder.dynamic_table == (("x-name", "v" * 10),) and decoder.table_size == 48


def test_literal_without_and_never_indexed_with_dynamic_name() -> None:
    decoder = Decoder()
    decoder.decode(hx(C3[0]))
    assert decoder.decode(encode_integer(62, 4, 0x00) + plain_literal(b"a")) == [(":authority", "a")]
    assert decoder.decode(encode_integer(62, 4, 0x10) + huffman_literal(b"b")) == [(":authority", "b")]
    assert decoder.dynamic_table == (AUTHORITY,)


def test_max_allowed_table_size_is_enforced_and_settable() -> None:
    decoder = Decoder()
    decoder.max_allowed_table_size = 100
    assert decoder.decode(encode_integer(100, 5, 0x20)) == []
    with pytest.raises(HPACKError):
        decoder.decode(encode_integer(101, 5, 0x20))
    with pytest.raises(HPACKError):
        Decoder().decode(encode_integer(4097, 5, 0x20))


# --- encoders round trip ----------------------------------------------------------------


def test_encoders_round_trip_through_the_decoder() -> None:
    block = b"".join(
        (
            encode_indexed(8),
            encode_indexed_name_literal(31, b"application/grpc"),
            encode_literal(b"grpc-status", b"0"),
            encode_literal(b"grpc-message", b"x" * 300),
            encode_literal(b"x-bin", bytes(range(256))),
            encode_indexed_name_literal(58, b""),
        )
    )
    assert Decoder().decode(block) == [
        (":status", "200"),
        ("content-type", "application/grpc"),
        ("grpc-status", "0"),
        ("grpc-message", "x" * 300),
        ("x-bin", bytes(range(256)).decode("latin-1")),
        ("user-agent", ""),
    ]
    assert encode_indexed(8) == b"\x88"
    assert encode_indexed_name_literal(31, b"ab") == b"\x0f\x10\x02ab"
    assert encode_literal(b"k", b"v") == b"\x00\x01k\x01v"


def test_every_static_index_round_trips() -> None:
    for index in range(1, 62):
        assert Decoder().decode(encode_indexed(index)) == [STATIC_TABLE[index - 1]]
        name = STATIC_TABLE[index - 1][0]
        assert Decoder().decode(encode_indexed_name_literal(index, b"v")) == [(name, "v")]


def test_encoders_reject_indices_outside_the_static_table() -> None:
    for bad in (0, 62):
        with pytest.raises(ValueError):
            encode_indexed(bad)
        with pytest.raises(ValueError):
            encode_indexed_name_literal(bad, b"v")


# --- Huffman ----------------------------------------------------------------------------


def test_test_encoder_reproduces_rfc_huffman_strings() -> None:
    assert huffman_encode(b"www.example.com") == hx("f1e3 c2e5 f23a 6ba0 ab90 f4ff")
    assert huffman_encode(b"no-cache") == hx("a8eb 1064 9cbf")
    assert huffman_encode(b"custom-key") == hx("25a8 49e9 5ba9 7d7f")
    assert huffman_encode(b"302") == hx("6402")


@pytest.mark.parametrize(
    "text",
    [
        b"",
        b"a",
        b"application/grpc",
        b"/registry.v1.Registry/Lookup",
        b"grpc-python/1.85.3 grpc-c/51.0.0 (linux; chttp2)",
        b"identity,deflate,gzip",
        b"trailers",
        b"\x00\xff\x80 ~\x7f\\",
    ],
)
def test_huffman_round_trip(text: bytes) -> None:
    assert huffman.decode(huffman_encode(text)) == text
    assert Decoder().decode(b"\x00" + huffman_literal(b"k") + huffman_literal(text)) == [("k", text.decode("latin-1"))]


def test_huffman_all_octets_round_trip() -> None:
    every = bytes(range(256))
    assert huffman.decode(huffman_encode(every)) == every
    assert huffman.decode(huffman_encode(every[::-1] * 3)) == every[::-1] * 3
    for octet in range(256):
        for text in (bytes([octet]), bytes([octet, octet, 0x61])):
            assert huffman.decode(huffman_encode(text)) == text


def bits_to_bytes(bits: str) -> bytes:
    assert len(bits) % 8 == 0
    return int(bits, 2).to_bytes(len(bits) // 8, "big")


A_BITS = "00011"  # 'a'
EOS_BITS = "1" * 30


def test_huffman_accepts_padding_of_zero_to_seven_ones() -> None:
    pads = set()
    for count in range(1, 9):  # 5 * count bits leave every padding length 0..7 once
        bits = A_BITS * count
        pads.add(-len(bits) % 8)
        assert huffman.decode(bits_to_bytes(bits + "1" * (-len(bits) % 8))) == b"a" * count
    assert pads == set(range(8))


@pytest.mark.parametrize(
    "bits",
    [
        A_BITS + "000",  # padding with zeros
        A_BITS + "101",  # padding that is not all ones
        "11111111",  # 8 bits of padding
        A_BITS + "111" + "11111111",  # 11 bits of padding
        EOS_BITS + "11",  # EOS alone
        A_BITS + EOS_BITS + A_BITS,  # EOS between symbols
        "0" * 8,  # incomplete code, zero padded
    ],
)
def test_invalid_huffman_raises(bits: str) -> None:
    data = bits_to_bytes(bits)
    with pytest.raises(ValueError):
        huffman.decode(data)
    with pytest.raises(HPACKError):
        Decoder().decode(b"\x00" + plain_literal(b"k") + encode_integer(len(data), 7, 0x80) + data)
    decoder = Decoder()
    decoder.decode(b"\x00" + huffman_literal(b"k") + huffman_literal(b"v"))
    with pytest.raises(HPACKError):  # as a name, with valid strings in the cache
        decoder.decode(b"\x00" + encode_integer(len(data), 7, 0x80) + data + plain_literal(b"v"))


def test_huffman_cache_is_bounded_and_transparent() -> None:
    decoder = Decoder()
    for i in range(2000):
        value = f"value-{i}".encode()
        block = encode_integer(58, 4) + huffman_literal(value)
        assert decoder.decode(block) == [("user-agent", value.decode())]
        assert decoder.decode(block) == [("user-agent", value.decode())]
    assert len(decoder._huffman_cache) <= 512
    long_value = b"long " * 60
    assert decoder.decode(encode_integer(58, 4) + huffman_literal(long_value)) == [("user-agent", long_value.decode())]
    assert max(map(len, decoder._huffman_cache)) <= 128  # long strings are decoded, not kept


def test_repeated_blocks_follow_table_changes() -> None:
    """Identical blocks may be answered from a cache; it must never outlive the table it read."""
    decoder = Decoder()
    decoder.decode(b"\x40" + plain_literal(b"a") + plain_literal(b"1"))
    first = decoder.decode(b"\x82\xbe")
    first.append(("mutated", "by the caller"))
    assert decoder.decode(b"\x82\xbe") == [(":method", "GET"), ("a", "1")]
    decoder.decode(b"\x40" + plain_literal(b"b") + plain_literal(b"2"))  # insertion shifts index 62
    assert decoder.decode(b"\x82\xbe") == [(":method", "GET"), ("b", "2")]
    assert decoder.decode(bytearray(b"\x82\xbe")) == [(":method", "GET"), ("b", "2")]  # type: ignore[arg-type]
    decoder.decode(b"\x20\x3f\xe1\x1f")  # emptied by a size update, then back to 4096
    with pytest.raises(HPACKError):
        decoder.decode(b"\x82\xbe")


def test_repeated_blocks_honour_a_lowered_header_list_limit() -> None:
    decoder = Decoder(max_header_list_size=84)
    assert len(decoder.decode(b"\x82\x82")) == 2
    assert len(decoder.decode(b"\x82\x82")) == 2
    decoder.max_header_list_size = 83
    with pytest.raises(HPACKError):
        decoder.decode(b"\x82\x82")


# --- errors -----------------------------------------------------------------------------

ERRORS = {
    "index 0": b"\x80",
    "static index past an empty dynamic table": b"\xbe",
    "index past the dynamic table": hx(C3[0]) + b"\xbf",
    "huge index": b"\xff\xff\xff\xff\xff\x0f",
    "integer above 2**32": b"\xff" + encode_integer(2**32 + 1, 7)[1:],
    "integer zero-padded past 5 octets": b"\x3f\x80\x80\x80\x80\x80\x00",  # 31, in 7 octets
    "truncated integer": b"\xff\x80",
    "truncated index prefix": b"\xff",
    "literal name index out of range": b"\x7e" + plain_literal(b"v"),
    "literal name index 62 without indexing": b"\x0f\x2f" + plain_literal(b"v"),
    "literal without name": b"\x40",
    "literal without value": b"\x40" + plain_literal(b"k"),
    "truncated name": b"\x40\x05ab",
    "truncated value": b"\x04\x05ab",
    "truncated huffman": b"\x04\x85\xff",
    "huge string length": b"\x04\x7f\xff\xff\xff\xff\x0f",
    "string length above 2**32": b"\x04\xff" + encode_integer(2**32 + 1, 7)[1:],
    "table size update after a field": b"\x82\x20",
    "table size update after a literal": b"\x04\x00\x3f\xe1\x1f",
    "table size update above the maximum": b"\x3f\xe2\x1f",  # 31 + 4066 = 4097
    "truncated table size update": b"\x3f",
}


@pytest.mark.parametrize("block", ERRORS.values(), ids=ERRORS.keys())
def test_malformed_blocks_raise_hpack_error(block: bytes) -> None:
    with pytest.raises(HPACKError):
        Decoder().decode(block)


def test_integer_boundaries() -> None:
    assert Decoder().decode(b"\x3f\xe1\x1f") == []  # 31 + 4065 = 4096: allowed
    assert Decoder().decode(b"\x3f\x80\x80\x80\x80\x00") == []  # 31 zero-padded to 5 octets: allowed
    decoder = Decoder(max_table_size=2**32)
    assert decoder.decode(encode_integer(2**32, 5, 0x20)) == []  # the largest integer accepted
    assert decoder.max_table_size == 2**32
    with pytest.raises(HPACKError):  # one more is refused as an integer, whatever it counts
        Decoder(max_table_size=2**33).decode(encode_integer(2**32 + 1, 5, 0x20))
    assert Decoder().decode(b"\x82\x04\x80") == [(":method", "GET"), (":path", "")]


def test_truncated_rfc_blocks_fail_or_decode_a_prefix() -> None:
    """Cut anywhere, a block either fails or (cut between fields) yields the leading fields."""
    for blocks, expected in ((C3, REQUESTS), (C4, REQUESTS), (C5, RESPONSES), (C6, RESPONSES)):
        for i, block in enumerate(blocks):
            full = hx(block)
            for cut in range(1, len(full)):
                decoder = Decoder(max_table_size=256 if expected is RESPONSES else 4096)
                for earlier in blocks[:i]:
                    decoder.decode(hx(earlier))
                try:
                    fields = decoder.decode(full[:cut])
                except HPACKError:
                    continue
                assert fields == expected[i][0][: len(fields)] and len(fields) < len(expected[i][0])


def test_header_list_size_limit() -> None:
    block = b"\x82\x82"  # 2 x (7 + 3 + 32) = 84
    assert len(Decoder(max_header_list_size=84).decode(block)) == 2
    with pytest.raises(HPACKError):
        Decoder(max_header_list_size=83).decode(block)
    decoder = Decoder()  # a small block expanding to a large list through the dynamic table
    decoder.decode(b"\x40" + plain_literal(b"k") + plain_literal(b"v" * 4000))
    with pytest.raises(HPACKError):
        decoder.decode(b"\xbe" * 17)  # 17 x 4033 > 65536
    assert len(decoder.decode(b"\xbe" * 16)) == 16


# --- fuzzing ----------------------------------------------------------------------------


def try_decode(decoder: Decoder, block: bytes) -> None:
    try:
        fields = decoder.decode(block)
    except HPACKError:
        return
    assert all(type(n) is str and type(v) is str for n, v in fields)


def valid_blocks() -> list[bytes]:
    return [
        *all_rfc_blocks(),
        encode_indexed(8) + encode_indexed_name_literal(31, b"application/grpc") + encode_literal(b"grpc-status", b"0"),
        b"\x40" + huffman_literal(b"x-key") + huffman_literal(bytes(range(256))),
        encode_integer(200, 5, 0x20) + encode_integer(62, 6, 0x40) + huffman_literal(b"v"),
    ]


def test_fuzz_random_bytes_raise_only_hpack_error() -> None:
    rng = random.Random(7541)
    for _ in range(2000):
        decoder = Decoder(max_table_size=rng.choice((0, 64, 256, 4096)))
        try_decode(decoder, rng.randbytes(rng.randrange(0, 64)))
        try_decode(decoder, rng.randbytes(rng.randrange(0, 16)))  # against whatever table is left


def test_fuzz_mutated_blocks_raise_only_hpack_error() -> None:
    rng = random.Random(20150501)
    seeds = valid_blocks()
    for _ in range(2000):
        block = bytearray(rng.choice(seeds))
        for _ in range(rng.randrange(1, 4)):
            kind = rng.randrange(4)
            pos = rng.randrange(len(block) + 1)
            if kind == 0 and block:  # flip a bit
                pos = min(pos, len(block) - 1)
                block[pos] ^= 1 << rng.randrange(8)
            elif kind == 1:  # insert random octets
                block[pos:pos] = rng.randbytes(rng.randrange(1, 4))
            elif kind == 2:  # delete a run
                del block[pos : pos + rng.randrange(1, 4)]
            else:  # set an octet to a boundary value
                if block:
                    block[min(pos, len(block) - 1)] = rng.choice((0x00, 0x7F, 0x80, 0xFF, 0x3F, 0x1F, 0x0F))
        decoder = Decoder(max_table_size=256)
        for earlier in rng.sample(seeds, 2):  # mutate against a populated table too
            try_decode(decoder, earlier)
        try_decode(decoder, bytes(block))


# --- a real encoder: nghttp2's h2load ---------------------------------------------------


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def _frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "big") + bytes((kind, flags)) + stream.to_bytes(4, "big") + payload


def _serve_once(listener: socket.socket, got: list[Fields], decoder: Decoder, errors: list[BaseException]) -> None:
    """The least of an HTTP/2 server: enough for h2load to send its requests and count replies."""
    response = b"".join(
        (encode_indexed(8), encode_indexed_name_literal(31, b"application/grpc"), encode_literal(b"grpc-status", b"0"))
    )
    try:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(20)
            assert _recv_exact(conn, 24) == b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
            conn.sendall(_frame(4, 0, 0, b""))
            block = b""
            while True:
                try:
                    header = _recv_exact(conn, 9)
                except EOFError:
                    return
                kind, flags = header[3], header[4]
                stream = int.from_bytes(header[5:9], "big") & 0x7FFFFFFF
                payload = _recv_exact(conn, int.from_bytes(header[:3], "big"))
                if kind == 4 and not flags & 1:
                    conn.sendall(_frame(4, 1, 0, b""))
                elif kind == 7:
                    return
                elif kind in (1, 9):
                    if kind == 1:
                        pad = payload[0] if flags & 0x8 else 0
                        payload = payload[1 if flags & 0x8 else 0 : len(payload) - pad]
                        payload = payload[5:] if flags & 0x20 else payload
                    block += payload
                    if flags & 0x4:
                        got.append(decoder.decode(block))
                        block = b""
                        conn.sendall(_frame(1, 0x5, stream, response))
    except BaseException as exc:  # noqa: BLE001 - reported by the test thread
        errors.append(exc)


@pytest.mark.nghttp2
def test_decodes_nghttp2_requests_and_it_decodes_our_responses() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(30)
    port = listener.getsockname()[1]
    got: list[Fields] = []
    errors: list[BaseException] = []
    decoder = Decoder()
    thread = threading.Thread(target=_serve_once, args=(listener, got, decoder, errors), daemon=True)
    thread.start()
    try:
        run = subprocess.run(
            ["h2load", "-n", "3", "-c", "1", "-m", "1", "-H", "x-trace: Zz9~ /\\\"q", "-H", "grpc-timeout: 4999m",
             f"http://127.0.0.1:{port}/registry.v1.Registry/Lookup"],
            capture_output=True, text=True, timeout=30,
        )
        thread.join(timeout=30)
    finally:
        listener.close()
    assert not errors, errors
    assert re.search(r"requests: 3 total, 3 started, 3 done, 3 succeeded", run.stdout), run.stdout + run.stderr
    assert len(got) == 3 and got[0] == got[1] == got[2]
    fields = dict(got[0])
    assert fields[":method"] == "GET" and fields[":scheme"] == "http"
    assert fields[":path"] == "/registry.v1.Registry/Lookup"
    assert fields[":authority"] == f"127.0.0.1:{port}"
    assert fields["x-trace"] == 'Zz9~ /\\"q' and fields["grpc-timeout"] == "4999m"
    assert fields["user-agent"].startswith("h2load nghttp2/")
    assert len(decoder.dynamic_table) >= 3  # nghttp2 indexed what it sent: requests 2 and 3 reused it
