"""Real Go traffic: every UDP packet and TCP stream message in the four loopback captures.

The captures (tests/data/captures, made by tests/data/capture.py from Debian's `serf agent`,
package 0.9.4, binary 0.8.2-dev; how each was made is in their README): serf_plain with
compression off, serf_default and registry_service with compression on (UDP compress wrappers,
compressed push/pulls), serf_encrypted with a published test key.  In registry_service one node
is our registry (port 18501) and two are real agents.  Decoding must succeed without any drop,
and re-encoding must reproduce Go's bytes, including the LZW output, the Serf messages inside
user messages and push/pulls, and the Vivaldi coordinates in acks.  docs/wire.md §18 lists what
the captures cover.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from registry.memberlist import lzw
from registry.memberlist.codec import (
    DecodeError,
    WireCodec,
    decode,
    encode,
    split_compound,
)
from registry.memberlist.crypto import Keyring, decode_key
from registry.memberlist.messages import Ack, PushPull, UserMsg
from registry.memberlist.stream import StreamFramer
from registry.serf import messages as serf_messages
from registry.serf.coordinate import decode_ack_payload, encode_ack_payload
from tests.memberlist.pcap import (
    Capture,
    read_pcap,
)

# Made by tests/data/capture.py from real `serf agent` processes (see tests/data/captures/README.md).
CAPTURES = Path(__file__).resolve().parents[1] / "data" / "captures"
NAMES = ["serf_plain", "serf_default", "registry_service"]
# Gossip ports of the real serf agents in each capture (the others are our registry's).
GO_PORTS = {"serf_plain": {18401, 18402}, "serf_default": {18401, 18402}, "registry_service": {18502, 18503}}


def _load(name: str) -> Capture:
    return read_pcap(CAPTURES / f"{name}.pcap")


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


# Exact for these files; a re-made capture changes them (timers), see the captures' README.
EXPECTED_UDP = {
    "serf_plain": {"UserMsg": 34, "Alive": 16, "Ping": 13, "Ack": 13, "Dead": 5},
    "serf_default": {"UserMsg": 34, "Alive": 16, "Ping": 12, "Ack": 12, "Dead": 6},
    "registry_service": {
        "Alive": 24,
        "Dead": 20,
        "Ping": 18,
        "UserMsg": 16,
        "Suspect": 12,
        "Ack": 6,
        "IndirectPing": 6,
        "Nack": 6,
    },
}
# What each scenario is made to make a real agent send (a failure found by indirect probes in
# registry_service, a query and its response in the two-agent ones).
GO_SENDS = {
    "serf_plain": {"Alive", "Ping", "Ack", "Dead", "UserMsg"},
    "serf_default": {"Alive", "Ping", "Ack", "Dead", "UserMsg"},
    "registry_service": {"Alive", "Ping", "Ack", "Dead", "UserMsg", "Suspect", "IndirectPing", "Nack"},
}
GO_SERF_SENDS = {
    "serf_plain": {"Join", "Leave", "UserEventMsg", "QueryMsg", "QueryResponseMsg"},
    "serf_default": {"Join", "Leave", "UserEventMsg", "QueryMsg", "QueryResponseMsg"},
    "registry_service": {"Join", "Leave"},
}


@pytest.mark.parametrize("name", NAMES)
def test_every_udp_packet_decodes_and_reencodes(name: str) -> None:
    cap = _load(name)
    codec = WireCodec(compress=name != "serf_plain")
    kinds: Counter[str] = Counter()
    go_kinds: set[str] = set()
    wrappers: Counter[int] = Counter()
    for dgram in cap.udp:
        msgs, drops = codec.decode_packet(dgram.payload)
        assert drops == [], dgram
        leaves = _leaves(dgram.payload)
        assert len(leaves) == len(msgs)
        for raw, msg in zip(leaves, msgs):
            kinds[type(msg).__name__] += 1
            if dgram.src[1] in GO_PORTS[name]:
                go_kinds.add(type(msg).__name__)
            assert decode(raw) == msg
            assert encode(msg) == raw, (type(msg).__name__, raw.hex())
        crc = dgram.payload[0] == 12
        inner = dgram.payload[5:] if crc else dgram.payload
        wrappers[inner[0]] += 1
        wrappers[12] += crc
        if dgram.src[1] not in GO_PORTS[name]:
            continue  # our registry's packets: it sends UDP uncompressed (compress_packets off)
        if inner[0] == 9:
            # Go compresses UDP only when it helps; re-wrapping reproduces its bytes exactly.
            assert (
                codec.encode_packet(_unwrap_compress(inner), crc=crc) == dgram.payload
            )
        else:
            assert codec.encode_packet(inner, crc=crc) == dgram.payload
    assert dict(kinds) == EXPECTED_UDP[name]
    assert go_kinds == GO_SENDS[name]
    if name == "serf_plain":
        assert 9 not in wrappers
    else:
        assert wrappers[9] > 0
    assert wrappers[12] > 0  # Go puts CRC on gossip to peers advertising PMax 5
    assert wrappers[7] > 0  # and packs gossip in compound messages


def _unwrap_compress(buf: bytes) -> bytes:
    import msgpack

    body: dict[bytes, bytes] = msgpack.unpackb(buf[1:], raw=True)
    return lzw.decompress(body[b"Buf"], 1 << 26)


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


@pytest.mark.parametrize("name", NAMES)
def test_serf_messages_and_coordinates_decode_and_reencode(name: str) -> None:
    """Serf's own layer inside memberlist: user messages, push/pull user state, ack payloads."""
    cap = _load(name)
    codec = WireCodec(compress=name != "serf_plain")
    go_serf: set[str] = set()
    acks = 0
    for dgram in cap.udp:
        for msg in codec.decode_packet(dgram.payload)[0]:
            if isinstance(msg, UserMsg):
                serf = serf_messages.decode(msg.payload)
                assert serf_messages.encode(serf) == msg.payload, msg.payload.hex()
                if dgram.src[1] in GO_PORTS[name]:
                    go_serf.add(type(serf).__name__)
            elif isinstance(msg, Ack) and dgram.src[1] in GO_PORTS[name]:
                assert msg.payload is not None
                coord = decode_ack_payload(msg.payload)
                assert coord is not None and coord.is_valid()
                assert encode_ack_payload(coord) == msg.payload
                acks += 1
    assert go_serf == GO_SERF_SENDS[name]
    assert acks > 0
    for st in cap.tcp:
        push = codec.decode_stream(st.data, from_dialer=st.from_dialer)
        assert isinstance(push, PushPull)
        state = serf_messages.decode(push.user_state)
        assert isinstance(state, serf_messages.PushPullState)
        assert serf_messages.encode(state) == push.user_state


# serf_encrypted: the two-agent scenario with `serf agent -encrypt=<this key>` (bytes 0..15).
ENCRYPT_KEY = "AAECAwQFBgcICQoLDA0ODw=="


def test_encrypted_capture_decrypts_and_reencodes_inside() -> None:
    """Go's AES-GCM envelopes: version 1 (protocol 2+), no AAD on packets, the 5-byte stream
    header as AAD on streams; what they hold re-encodes to Go's plaintext (CRC, LZW, compound).
    Any other key, or none, refuses every packet (nothing is taken as plaintext)."""
    cap = _load("serf_encrypted")
    ring = Keyring([decode_key(ENCRYPT_KEY)])
    codec = WireCodec(keyring=ring)
    kinds: Counter[str] = Counter()
    for dgram in cap.udp:
        assert dgram.payload[0] == 1  # envelope version 1
        msgs, drops = codec.decode_packet(dgram.payload)
        assert drops == [] and msgs
        kinds.update(type(m).__name__ for m in msgs)
        plain = ring.decrypt(dgram.payload, b"")
        crc = plain[0] == 12
        inner = plain[5:] if crc else plain
        if inner[0] == 9:
            inner = _unwrap_compress(inner)
        assert WireCodec(compress=True).encode_packet(inner, crc=crc) == plain
        for wrong in (WireCodec(keyring=Keyring([bytes(16)])), WireCodec()):
            with pytest.raises(DecodeError):
                wrong.decode_packet(dgram.payload)
    assert {"Alive", "Ping", "Ack", "Dead", "UserMsg"} <= set(kinds)
    assert len(cap.tcp) == 2
    for st in cap.tcp:
        assert st.data[0] == 10 and st.data[5] == 1  # encrypt header, length, envelope version 1
        msg = codec.decode_stream(st.data, from_dialer=st.from_dialer)
        assert isinstance(msg, PushPull) and msg.join
        plain = ring.decrypt(st.data[5:], st.data[:5])
        assert plain[0] == 9  # compressed inside the envelope
        assert WireCodec(compress=True).encode_stream(encode(msg), dialer=st.from_dialer) == plain
        with pytest.raises(DecodeError):
            WireCodec().decode_stream(st.data, from_dialer=st.from_dialer)
