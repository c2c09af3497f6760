"""Our HPACK decoder against python-hyper's `hpack` library (independent of ours) on random header
lists: encoded by hpack's Encoder with and without Huffman, with indexing, never-indexed fields and
dynamic table size changes; decoded by both; the fields and the dynamic tables must agree."""

from __future__ import annotations

import hpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from registry.h2.hpack import Decoder, HPACKError

# Names: mostly short tokens (so the encoder's dynamic table gets hits), some arbitrary octets.
names = st.one_of(
    st.sampled_from([":method", ":path", "content-type", "te", "grpc-timeout", "user-agent", "x-a", "x-b"]),
    st.text("abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=20),
    st.binary(min_size=1, max_size=30),
)
values = st.one_of(st.sampled_from(["", "POST", "application/grpc", "trailers"]), st.binary(max_size=200))
fields = st.tuples(names, values, st.booleans())  # (name, value, never indexed)
blocks = st.lists(
    st.tuples(st.lists(fields, max_size=12), st.one_of(st.none(), st.integers(0, 4096), st.tuples(st.integers(0, 4096), st.integers(0, 4096)))),
    min_size=1,
    max_size=8,
)


def _octets(x: str | bytes) -> bytes:
    return x.encode("latin-1") if isinstance(x, str) else bytes(x)


@settings(max_examples=400, deadline=None)
@given(blocks, st.booleans())
def test_decoder_equals_the_hpack_library(sequence: list[tuple[list[tuple[str | bytes, str | bytes, bool]], object]], huffman: bool) -> None:
    encoder, reference, ours = hpack.Encoder(), hpack.Decoder(), Decoder()
    for headers, table_change in sequence:
        if isinstance(table_change, int):
            encoder.header_table_size = table_change
        elif isinstance(table_change, tuple):  # two changes before one block: both are announced
            encoder.header_table_size, encoder.header_table_size = table_change
        tuples = [hpack.NeverIndexedHeaderTuple(_octets(n), _octets(v)) if never else (_octets(n), _octets(v))
                  for n, v, never in headers]
        block = encoder.encode(tuples, huffman=huffman)
        try:
            want = [(bytes(n), bytes(v)) for n, v in reference.decode(block, raw=True)]
        except hpack.HPACKError:
            # hpack 4.x's encoder forgets to announce a table size set twice to the same value, then
            # refers to entries the decoder's table cannot hold: both decoders must refuse that block.
            with pytest.raises(HPACKError):
                ours.decode(block)
            return
        got = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in ours.decode(block)]
        assert got == [(n, v) for n, v, *_ in tuples]  # what the encoder was given
        assert got == want
        assert [(n.encode("latin-1"), v.encode("latin-1")) for n, v in ours.dynamic_table] == [
            (bytes(n), bytes(v)) for n, v in reference.header_table.dynamic_entries
        ]
        assert ours.max_table_size == reference.header_table.maxsize
