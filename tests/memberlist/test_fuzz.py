"""Property test: hostile bytes never raise anything but DecodeError, and never hang.

Inputs are random bytes and mutations (bit flips, truncations, splices,
insertions) of real Go packets/streams from the captures plus our own
encrypted, labelled, compressed and CRC-wrapped variants.  Size limits are
small so a decompression bomb or a huge declared length cannot slow a case.
"""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from registry.memberlist.codec import (
    DecodeError,
    WireCodec,
    decode,
    encode,
    make_compound,
)
from registry.memberlist.crypto import Keyring
from registry.memberlist.messages import Ack, Alive, Ping, PushNodeState, PushPull
from registry.memberlist.stream import StreamFramer
from tests.memberlist.pcap import read_pcap

KEY = bytes(range(16))
VSN = bytes([1, 5, 2, 2, 5, 5])
# Real agents' traffic, made by tests/data/capture.py (see tests/data/captures/README.md).
CAPTURES = Path(__file__).resolve().parents[1] / "data" / "captures"


def _corpus() -> tuple[list[bytes], list[bytes]]:
    packets: list[bytes] = []
    streams: list[bytes] = []
    for name in ("serf_plain", "serf_default", "registry_service", "serf_encrypted"):
        cap = read_pcap(CAPTURES / f"{name}.pcap")
        packets += [d.payload for d in cap.udp]
        streams += [t.data for t in cap.tcp]
    # Our own variants, so the fuzzer also reaches decryption, labels and CRC.
    ping = encode(Ping(1, "node-b", b"\x7f\x00\x00\x01", 7946, "node-a"))
    alive = encode(Alive(3, "node-a", b"\x7f\x00\x00\x01", 7946, b"\xff\x80", VSN))
    compound = make_compound([ping, alive, encode(Ack(1, b"coord"))])
    pp = encode(
        PushPull(
            True,
            [PushNodeState("a", b"\x7f\x00\x00\x01", 1, None, 1, 0, VSN)] * 3,
            b"\x02x",
        )
    )
    for codec in (
        WireCodec(),
        WireCodec(keyring=Keyring([KEY]), label="prod"),
        WireCodec(protocol_version=1, keyring=Keyring([KEY])),
    ):
        packets += [codec.encode_packet(compound, crc=True), codec.encode_packet(ping)]
        streams += [
            codec.encode_stream(pp, dialer=True),
            codec.encode_stream(ping, dialer=False),
        ]
    streams.append(WireCodec(compress=False).encode_stream(pp, dialer=True))
    return packets, streams


PACKETS, STREAMS = _corpus()

CODECS = [
    WireCodec(max_decompressed=1 << 16, max_stream=1 << 16),
    WireCodec(
        keyring=Keyring([KEY]),
        label="prod",
        max_decompressed=1 << 16,
        max_stream=1 << 16,
    ),
    WireCodec(
        keyring=Keyring([KEY]),
        verify_incoming=False,
        max_decompressed=1 << 16,
        max_stream=1 << 16,
    ),
    WireCodec(
        label="prod",
        skip_inbound_label_check=True,
        max_decompressed=1 << 16,
        max_stream=1 << 16,
    ),
]


@st.composite
def mutated(draw: st.DrawFn, corpus: list[bytes]) -> bytes:
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=600))
    data = bytearray(draw(st.sampled_from(corpus)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.integers(0, 4))
        if op == 0 and data:  # bit flip
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == 1 and data:  # truncate
            del data[draw(st.integers(0, len(data) - 1)) :]
        elif op == 2:  # splice with another sample
            other = draw(st.sampled_from(corpus))
            cut = draw(st.integers(0, len(data)))
            data = data[:cut] + other[draw(st.integers(0, len(other))) :]
        elif op == 3:  # insert random bytes
            at = draw(st.integers(0, len(data)))
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif data:  # overwrite a byte with an interesting value
            i = draw(st.integers(0, len(data) - 1))
            data[i] = draw(
                st.sampled_from(
                    [0x00, 0x7F, 0x80, 0xC1, 0xCE, 0xDA, 0xDB, 0xDD, 0xDF, 0xF4, 0xFF]
                )
            )
    return bytes(data)


FUZZ = settings(
    max_examples=300,
    deadline=2000,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@FUZZ
@given(mutated(PACKETS), st.sampled_from(CODECS))
def test_decode_packet_only_raises_decode_error(data: bytes, codec: WireCodec) -> None:
    try:
        msgs, drops = codec.decode_packet(data)
    except DecodeError as e:
        assert e.reason
        return
    assert isinstance(msgs, list) and all(isinstance(r, str) for r in drops)


@FUZZ
@given(mutated(PACKETS + STREAMS), st.booleans())
def test_decode_only_raises_decode_error(data: bytes, stream: bool) -> None:
    try:
        decode(data, stream=stream)
    except DecodeError:
        pass


@FUZZ
@given(mutated(STREAMS), st.sampled_from(CODECS), st.booleans(), st.integers(1, 64))
def test_framer_and_decode_stream_only_raise_decode_error(
    data: bytes, codec: WireCodec, from_dialer: bool, chunk: int
) -> None:
    fr = StreamFramer(expect_label=from_dialer, max_size=1 << 16)
    framed = None
    try:
        for i in range(0, len(data), chunk):
            framed = fr.feed(data[i : i + chunk])
            if framed is not None:
                break
    except DecodeError:
        framed = None
    for raw in (framed, data):
        if raw is None:
            continue
        try:
            codec.decode_stream(raw, from_dialer=from_dialer)
        except DecodeError:
            pass
