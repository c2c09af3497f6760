"""Codec on streams: framing (where a message ends, fed any way), round trips through every
layer combination, and every rejection of the framer and of ``decode_stream``."""

from __future__ import annotations

import struct

import pytest

from registry.memberlist.codec import DecodeError, WireCodec, encode, encode_user_stream
from registry.memberlist.crypto import Keyring
from registry.memberlist.messages import Ack, Alive, ErrResp, Message, Nack, Ping, PushPull, UserMsg
from registry.memberlist.stream import StreamFramer
from tests.memberlist.wire_vectors import IP1, KEY, NODE_A, VSN


def _frame(
    data: bytes, *, expect_label: bool, step: int = 0, max_size: int = 1 << 20
) -> bytes:
    fr = StreamFramer(expect_label=expect_label, max_size=max_size)
    if not step:
        out = fr.feed(data)
        assert out is not None
        return out
    got: bytes | None = None
    for i in range(0, len(data), step):
        res = fr.feed(data[i : i + step])
        if res is not None:
            assert got is None
            got = res
            assert i + step >= len(data), "completed before all bytes arrived"
    assert got is not None
    return got


STREAM_MSGS: list[Message] = [
    Ping(3, "node-b", IP1, 7946, "node-a"),
    Ack(3),
    Ack(3, b"\xffpayload" * 40),
    ErrResp("remote said no"),
    PushPull(True, [NODE_A] * 3, b"state" * 100),
    PushPull(False, [], b""),
    UserMsg(b"reliable" * 50),
]


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"compress": False},
        {"label": "prod"},
        {"keyring": Keyring([KEY])},
        {"keyring": Keyring([KEY]), "label": "prod"},
        {"keyring": Keyring([KEY]), "protocol_version": 1, "compress": False},
    ],
    ids=["default", "plain", "label", "encrypted", "enc+label", "enc-v0"],
)
def test_stream_round_trip_and_framing(kw: dict[str, object]) -> None:
    codec = WireCodec(**kw)  # type: ignore[arg-type]
    for msg in STREAM_MSGS:
        body = (
            encode_user_stream(msg.payload) if isinstance(msg, UserMsg) else encode(msg)
        )
        for dialer in (True, False):
            wire = codec.encode_stream(body, dialer=dialer)
            trailing = b"\x00garbage"
            for step in (0, 1, 7, 4096):
                framed = _frame(
                    wire + (trailing if step == 0 else b""),
                    expect_label=dialer,
                    step=step,
                )
                assert framed == wire
                assert codec.decode_stream(framed, from_dialer=dialer) == msg


def test_framer_never_completes_early() -> None:
    wire = WireCodec(compress=False).encode_stream(
        encode(PushPull(True, [NODE_A] * 2, b"abc")), dialer=True
    )
    fr = StreamFramer(expect_label=True, max_size=1 << 20)
    for i in range(len(wire) - 1):
        assert fr.feed(wire[i : i + 1]) is None
    assert fr.feed(wire[-1:]) == wire


def test_framer_leftover_starts_next_message() -> None:
    a = encode(Ack(1))
    b = encode(Ack(2))
    fr = StreamFramer(expect_label=True, max_size=1000)
    assert fr.feed(a + b) == a
    assert fr.feed(b"") == b


@pytest.mark.parametrize(
    ("raw", "reason", "expect_label"),
    [
        (b"\x05", "unknown_type", False),
        (b"\xf4\x04prod\x05", "unknown_type", True),
        (
            b"\xf4",
            "unknown_type",
            False,
        ),  # a label header from the accepting side is not expected
        (b"\xf4\x00", "label", True),
        (b"\x0a\x7f\xff\xff\xff", "too_large", False),
        (
            b"\x06\x83\xa4Join\xc3\xa5Nodes\xce\x7f\x00\x00\x00\xacUserStateLen\x00",
            "too_large",
            False,
        ),
        (
            b"\x06\x83\xa4Join\xc3\xa5Nodes\x00\xacUserStateLen\xce\x7f\x00\x00\x00",
            "too_large",
            False,
        ),
        (b"\x06\x83\xa4Join\xc3\xa5Nodes\xff\xacUserStateLen\x00", "malformed", False),
        (b"\x08\x81\xaaUserMsgLen\xce\x7f\x00\x00\x00", "too_large", False),
        (b"\x08\x05", "malformed", False),
        (b"\x00\xc1", "malformed", False),
        (b"\x00\xdb\x7f\x00\x00\x00", "too_large", False),
        (b"\x00\xdd\x7f\x00\x00\x00", "too_large", False),
        (b"\x00" + b"\x91" * 100, "malformed", False),
    ],
)
def test_framer_rejections(raw: bytes, reason: str, expect_label: bool) -> None:
    fr = StreamFramer(expect_label=expect_label, max_size=1 << 16)
    with pytest.raises(DecodeError) as ei:
        fr.feed(raw)
    assert ei.value.reason == reason


def test_framer_size_bound_byte_by_byte() -> None:
    fr = StreamFramer(expect_label=False, max_size=100)
    raw = b"\x00\x81\xa4Node\xda\x01\x00"
    for b in raw[:-1]:
        assert fr.feed(bytes((b,))) is None
    with pytest.raises(DecodeError) as ei:
        fr.feed(raw[-1:])
    assert ei.value.reason == "too_large"


def test_stream_policy_rejections() -> None:
    enc = WireCodec(keyring=Keyring([KEY]))
    plain = WireCodec()
    ack = encode(Ack(1))
    cases: list[tuple[WireCodec, bytes, bool, str]] = [
        (enc, plain.encode_stream(ack, dialer=True), True, "plaintext"),
        (plain, enc.encode_stream(ack, dialer=True), True, "decrypt"),
        (
            WireCodec(keyring=Keyring([bytes(16)])),
            enc.encode_stream(ack, dialer=True),
            True,
            "decrypt",
        ),
        (WireCodec(label="prod"), plain.encode_stream(ack, dialer=True), True, "label"),
        (plain, WireCodec(label="prod").encode_stream(ack, dialer=True), True, "label"),
        (
            plain,
            plain.encode_stream(encode(Nack(1)), dialer=True),
            True,
            "unknown_type",
        ),
        (
            plain,
            plain.encode_stream(encode(Alive(1, "a", IP1, 1, None, VSN)), dialer=True),
            True,
            "unknown_type",
        ),
        (plain, b"", True, "truncated"),
        (enc, b"\x0a\x00\x00", False, "truncated"),
        (
            WireCodec(keyring=Keyring([KEY]), max_stream=10),
            b"\x0a\x00\x00\x01\x00",
            False,
            "too_large",
        ),
        (plain, b"\x09\x82\xa4Algo\x00\xa3Buf\xa1\x00", True, "decompress"),
    ]
    for codec, raw, from_dialer, reason in cases:
        with pytest.raises(DecodeError) as ei:
            codec.decode_stream(raw, from_dialer=from_dialer)
        assert ei.value.reason == reason, (raw, reason)
    # the reply side uses the configured label as AAD without a header
    lab = WireCodec(keyring=Keyring([KEY]), label="prod")
    reply = lab.encode_stream(ack, dialer=False)
    assert reply[0] == 10
    assert lab.decode_stream(reply, from_dialer=False) == Ack(1)
    with pytest.raises(DecodeError):
        enc.decode_stream(reply, from_dialer=False)  # different AAD


def test_encrypted_stream_length_field() -> None:
    for ver in (1, 2):
        codec = WireCodec(keyring=Keyring([KEY]), protocol_version=ver, compress=False)
        for n in range(40):
            wire = codec.encode_stream(bytes([2]) + bytes(n), dialer=False)
            (ln,) = struct.unpack(">I", wire[1:5])
            assert ln == len(wire) - 5


@pytest.mark.timeout(60)
def test_framer_work_is_linear_when_fed_byte_by_byte() -> None:
    # A 30 000-element array inside a ping: re-scanning the buffer on every byte would take
    # ~450M steps; resuming where the walk stopped takes 30 000.
    body = b"\x81\xa1X\xdd" + (30_000).to_bytes(4, "big") + b"\xc0" * 30_000
    raw = b"\x00" + body
    fr = StreamFramer(expect_label=False, max_size=1 << 20)
    for i in range(len(raw) - 1):
        assert fr.feed(raw[i : i + 1]) is None
    assert fr.feed(raw[-1:]) == raw
    pp = encode(PushPull(False, [NODE_A] * 2000, b"s" * 1000))
    fr = StreamFramer(expect_label=False, max_size=1 << 20)
    out = [fr.feed(pp[i : i + 3]) for i in range(0, len(pp), 3)]
    assert out[-1] == pp and not any(out[:-1])
