"""Go-compatible LZW: reference example, round trips across table resets, limits and corrupt input."""

from __future__ import annotations

import random

import pytest

from registry.memberlist import lzw

H = bytes.fromhex


def test_reference_example() -> None:
    data = b"hello hello hello hello"
    packed = lzw.compress(data)
    assert packed.hex() == "00d19461c3e60d0881040d222c787060c180"
    assert lzw.decompress(packed, 1000) == data


def test_empty_input_is_clear_then_eof() -> None:
    # CLEAR (256) and EOF (257), 9 bits each, LSB first.
    assert lzw.compress(b"") == H("00030200"[:6])
    assert lzw.decompress(lzw.compress(b""), 10) == b""


@pytest.mark.parametrize(
    "size", [1, 2, 3, 255, 256, 257, 1000, 4093, 4094, 4095, 4096, 10_000, 100_000]
)
def test_round_trip_sizes(size: int) -> None:
    rng = random.Random(size)
    samples = [
        bytes(rng.getrandbits(8) for _ in range(size)),
        bytes(size),
        bytes(rng.choice(b"abc ") for _ in range(size)),
        bytes(i % 251 for i in range(size)),
    ]
    for data in samples:
        packed = lzw.compress(data)
        assert lzw.decompress(packed, size) == data


def test_table_full_without_reset_sequence() -> None:
    # Random 8-bit data fills the 12-bit table several times, exercising the width-12 full-table path.
    rng = random.Random(7)
    data = bytes(rng.getrandbits(8) for _ in range(50_000))
    assert lzw.decompress(lzw.compress(data), len(data)) == data


def test_decoder_accepts_stream_without_leading_clear() -> None:
    packed = lzw.compress(b"abcabcabcabc")
    # Drop the leading 9-bit CLEAR code by shifting the bit string.
    bits = int.from_bytes(packed, "little") >> 9
    nbits = len(packed) * 8 - 9
    shifted = bits.to_bytes((nbits + 7) // 8, "little")
    assert lzw.decompress(shifted, 100) == b"abcabcabcabc"


def test_limit() -> None:
    packed = lzw.compress(bytes(100_000))
    assert len(packed) < 2000
    with pytest.raises(lzw.LZWError) as ei:
        lzw.decompress(packed, 99_999)
    assert ei.value.reason == "too_large"
    assert len(lzw.decompress(packed, 100_000)) == 100_000


def test_corrupt_input() -> None:
    packed = lzw.compress(b"hello hello hello hello")
    with pytest.raises(lzw.LZWError) as ei:
        lzw.decompress(packed[:-2], 1000)  # EOF code missing
    assert ei.value.reason == "decompress"
    with pytest.raises(lzw.LZWError):
        lzw.decompress(b"", 1000)
    # code 300 right after CLEAR: beyond the table
    bad = (256 | (300 << 9)).to_bytes(3, "little")
    with pytest.raises(lzw.LZWError) as ei:
        lzw.decompress(bad, 1000)
    assert ei.value.reason == "decompress"


def test_round_trip_around_table_reset() -> None:
    # Random bytes emit about one code per byte, so these lengths put the 4095-code reset
    # (CLEAR emitted by the writer) at and around the final code written by close.
    rng = random.Random(5)
    base = bytes(rng.getrandbits(8) for _ in range(3900))
    for length in range(3800, 3900):
        data = base[:length]
        assert lzw.decompress(lzw.compress(data), length) == data
