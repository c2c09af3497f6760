"""Real Go traffic: every UDP packet and TCP stream message in the three loopback captures.

The captures are unencrypted (serf_plain: compression off; serf_default and
registry_service: compression on, so UDP compress wrappers and compressed
push/pulls appear).  Decoding must succeed without any drop, and re-encoding
must reproduce Go's bytes, including the LZW output.
"""

from __future__ import annotations

from collections import Counter
import os
from pathlib import Path

import pytest
from pcap import (  # tests/memberlist is on sys.path (rootdir import mode)
    Capture,
    read_pcap,
)

from registry.memberlist import lzw
from registry.memberlist.codec import WireCodec, decode, encode, split_compound
from registry.memberlist.messages import PushPull, UserMsg
from registry.memberlist.stream import StreamFramer

# shared/ sits beside the checkout (CI clones main next to it); /work/shared on the developers' machines.
CAPTURES = next(
    (p for p in (Path(__file__).resolve().parents[3] / "shared/protocol/captures", Path("/work/shared/protocol/captures")) if p.is_dir()),
    Path(__file__).resolve().parents[3] / "shared/protocol/captures",
)
NAMES = ["serf_plain", "serf_default", "registry_service"]


def _load(name: str) -> Capture:
    path = CAPTURES / f"{name}.pcap"
    if not path.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"capture {path} not present (shared/ must sit beside the checkout)")
        pytest.skip(f"capture {path} not present")
    return read_pcap(path)


def _leaves(buf: bytes) -> list[bytes]:
    """Raw single messages inside a packet (CRC, compound and compress unwrapped)."""
    if buf[0] == 12:
        return _leaves(buf[5:])
    if buf[0] == 7:
        parts, truncated = split_compound(buf)
        assert not truncated
        return [leaf for p in parts for leaf in _leaves(p)]
    if buf[0] == 9:
        import msgpack

        body = msgpack.unpackb(buf[1:], raw=True)
        return _leaves(lzw.decompress(body[b"Buf"], 1 << 26))
    return [buf]


EXPECTED_UDP = {
    "serf_plain": {"Alive": 24, "UserMsg": 16, "Ping": 8, "Ack": 8},
    "serf_default": {"Alive": 24, "UserMsg": 16, "Ping": 8, "Ack": 8},
    "registry_service": {
        "Alive": 16,
        "Ping": 10,
        "UserMsg": 8,
        "Dead": 8,
        "Ack": 7,
        "Suspect": 6,
    },
}


@pytest.mark.parametrize("name", NAMES)
def test_every_udp_packet_decodes_and_reencodes(name: str) -> None:
    cap = _load(name)
    codec = WireCodec(compress=name != "serf_plain")
    kinds: Counter[str] = Counter()
    wrappers: Counter[int] = Counter()
    for dgram in cap.udp:
        msgs, drops = codec.decode_packet(dgram.payload)
        assert drops == [], dgram
        leaves = _leaves(dgram.payload)
        assert len(leaves) == len(msgs)
        for raw, msg in zip(leaves, msgs):
            kinds[type(msg).__name__] += 1
            assert decode(raw) == msg
            assert encode(msg) == raw, (type(msg).__name__, raw.hex())
        crc = dgram.payload[0] == 12
        inner = dgram.payload[5:] if crc else dgram.payload
        wrappers[inner[0]] += 1
        wrappers[12] += crc
        if inner[0] == 9:
            # Go compresses UDP only when it helps; re-wrapping reproduces its bytes exactly.
            assert (
                codec.encode_packet(_unwrap_compress(inner), crc=crc) == dgram.payload
            )
        else:
            assert codec.encode_packet(inner, crc=crc) == dgram.payload
    assert dict(kinds) == EXPECTED_UDP[name]
    if name == "serf_plain":
        assert 9 not in wrappers
    else:
        assert wrappers[9] > 0
    assert wrappers[12] > 0  # Go sends CRC headers to peers advertising PMax 5


def _unwrap_compress(buf: bytes) -> bytes:
    import msgpack

    return lzw.decompress(msgpack.unpackb(buf[1:], raw=True)[b"Buf"], 1 << 26)


@pytest.mark.parametrize("name", NAMES)
def test_every_tcp_stream_message_decodes_and_reencodes(name: str) -> None:
    cap = _load(name)
    assert cap.tcp
    plain = name == "serf_plain"
    codec = WireCodec(compress=not plain)
    for st in cap.tcp:
        for step in (len(st.data), 1, 13):
            fr = StreamFramer(expect_label=st.from_dialer, max_size=1 << 20)
            framed = None
            for i in range(0, len(st.data), step):
                out = fr.feed(st.data[i : i + step])
                if out is not None:
                    framed = out
                    assert i + step >= len(st.data)
            assert framed == st.data
        msg = codec.decode_stream(st.data, from_dialer=st.from_dialer)
        assert isinstance(msg, PushPull)
        assert msg.join is True
        assert (
            msg.user_state[:1] == b"\x02" or msg.user_state == b""
        )  # Serf pushPull user state
        # Re-encode: same plaintext, same compressed wire bytes as Go.
        assert codec.encode_stream(encode(msg), dialer=st.from_dialer) == st.data
        if not plain:
            assert st.data[0] == 9


def test_serf_user_messages_carry_serf_payloads() -> None:
    cap = _load("serf_plain")
    codec = WireCodec()
    users = [
        m
        for d in cap.udp
        for m in codec.decode_packet(d.payload)[0]
        if isinstance(m, UserMsg)
    ]
    assert users and all(
        u.payload[:1] in (b"\x00", b"\x01", b"\x02", b"\x03") for u in users
    )
