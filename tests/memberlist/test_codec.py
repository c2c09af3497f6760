"""Codec: golden bytes from the wire reference (appendix 1), layering, and every rejection path of
messages and packets (streams: test_codec_streams.py)."""

from __future__ import annotations

import zlib

import msgpack
import pytest

from registry.memberlist.codec import (
    DecodeError,
    WireCodec,
    decode,
    encode,
    encode_user_stream,
    make_compound,
    split_compound,
)
from registry.memberlist.crypto import Keyring
from registry.memberlist.messages import (
    Ack,
    Alive,
    Dead,
    ErrResp,
    IndirectPing,
    Message,
    Nack,
    Ping,
    PushNodeState,
    PushPull,
    Suspect,
    UserMsg,
)
from tests.memberlist.wire_vectors import IP1, KEY, META, NODE_A, VSN, H

GOLDEN: list[tuple[str, Message, str]] = [
    (
        "ping full",
        Ping(7, "node-b", IP1, 7946, "node-a"),
        (
            "0085a44e6f6465a66e6f64652d62a55365714e6f07aa536f7572636541646472a40a000001aa536f757263654e6f6465"
            "a66e6f64652d61aa536f75726365506f7274cd1f0a"
        ),
    ),
    ("ping minimal", Ping(7, "node-b"), "0082a44e6f6465a66e6f64652d62a55365714e6f07"),
    ("ack nil", Ack(7), "0282a75061796c6f6164c0a55365714e6f07"),
    ("ack payload", Ack(7, H("0102")), "0282a75061796c6f6164a20102a55365714e6f07"),
    ("ack seq 300", Ack(300), "0282a75061796c6f6164c0a55365714e6fcd012c"),
    ("nack", Nack(7), "0b81a55365714e6f07"),
    (
        "indirect ping",
        IndirectPing(9, H("0a000003"), 7946, "node-c", True, IP1, 7946, "node-a"),
        (
            "0188a44e61636bc3a44e6f6465a66e6f64652d63a4506f7274cd1f0aa55365714e6f09aa536f7572636541646472"
            "a40a000001aa536f757263654e6f6465a66e6f64652d61aa536f75726365506f7274cd1f0aa6546172676574a40a000003"
        ),
    ),
    (
        "alive",
        Alive(1, "node-a", IP1, 7946, META, VSN),
        (
            "0486a441646472a40a000001ab496e6361726e6174696f6e01a44d657461abff81a4726f6c65a3776562a44e6f6465"
            "a66e6f64652d61a4506f7274cd1f0aa356736ea6010502020505"
        ),
    ),
    (
        "alive mapped v6, nil meta",
        Alive(1, "node-a", H("00000000000000000000ffff0a000001"), 7946, None, VSN),
        (
            "0486a441646472b000000000000000000000ffff0a000001ab496e6361726e6174696f6e01a44d657461c0a44e6f6465"
            "a66e6f64652d61a4506f7274cd1f0aa356736ea6010502020505"
        ),
    ),
    (
        "suspect",
        Suspect(3, "node-b", "node-a"),
        "0383a446726f6da66e6f64652d61ab496e6361726e6174696f6e03a44e6f6465a66e6f64652d62",
    ),
    (
        "dead",
        Dead(3, "node-b", "node-a"),
        "0583a446726f6da66e6f64652d61ab496e6361726e6174696f6e03a44e6f6465a66e6f64652d62",
    ),
    (
        "leave",
        Dead(3, "node-a", "node-a"),
        "0583a446726f6da66e6f64652d61ab496e6361726e6174696f6e03a44e6f6465a66e6f64652d61",
    ),
    ("errResp", ErrResp("boom"), "0d81a54572726f72a4626f6f6d"),
    ("user (UDP)", UserMsg(b"\x01abc"), "0801616263"),
]

PUSH_HEAD = "0683a44a6f696ec3a54e6f64657302ac5573657253746174654c656ecd012c"
PUSH_NODE = (
    "87a441646472a40a000001ab496e6361726e6174696f6e01a44d657461abff81a4726f6c65a3776562a44e616d65a66e6f64652d61"
    "a4506f7274cd1f0aa5537461746500a356736ea6010502020505"
)


@pytest.mark.parametrize(("name", "msg", "hexed"), GOLDEN, ids=[g[0] for g in GOLDEN])
def test_golden_encode_and_decode(name: str, msg: Message, hexed: str) -> None:
    assert encode(msg).hex() == hexed
    assert decode(H(hexed)) == msg


def test_serf_tags_meta_golden() -> None:
    # Serf protocol >= 3 meta: 0xff + msgpack map, written with raw strings like go-msgpack 0.5.x.
    assert b"\xff" + msgpack.packb({"role": "web"}, use_bin_type=False) == META


def test_push_pull_golden() -> None:
    pp = PushPull(True, [NODE_A, NODE_A], b"u" * 300)
    raw = encode(pp)
    assert raw.hex() == PUSH_HEAD + PUSH_NODE * 2 + ("75" * 300)
    assert decode(raw, stream=True) == pp
    big = "0683a44a6f696ec2a54e6f646573ccc8ac5573657253746174654c656ece00011170"
    head = msgpack.unpackb(H(big)[1:], raw=True)
    assert head == {b"Join": False, b"Nodes": 200, b"UserStateLen": 70000}
    assert encode(PushPull(False, [NODE_A] * 200, bytes(70000))).startswith(
        H(big) + H(PUSH_NODE)
    )


def test_v2_signed_integer_forms_are_accepted() -> None:
    v2 = (
        H("0683a44a6f696ec3a54e6f646573d10001ac5573657253746174654c656ed10003")
        + H(PUSH_NODE)
        + b"abc"
    )
    assert decode(v2) == PushPull(True, [NODE_A], b"abc")
    assert decode(
        H("0881aa557365724d73674c656ed10002") + b"hi", stream=True
    ) == UserMsg(b"hi")


def test_user_stream_form() -> None:
    raw = encode_user_stream(b"x" * 300)
    assert raw[:16].hex() == "0881aa557365724d73674c656ecd012c"
    assert decode(raw, stream=True) == UserMsg(b"x" * 300)
    assert decode(raw) == UserMsg(raw[1:])  # UDP form: everything after the type byte


def test_compound_golden_and_split() -> None:
    parts = [encode(Ping(1, "x")), encode(Ack(1))]
    raw = make_compound(parts)
    assert (
        raw.hex()
        == "0702001000120082a44e6f6465a178a55365714e6f010282a75061796c6f6164c0a55365714e6f01"
    )
    assert split_compound(raw) == (parts, False)
    assert split_compound(raw[:-1]) == (parts[:1], True)
    with pytest.raises(ValueError):
        make_compound([])
    with pytest.raises(ValueError):
        make_compound([b"\x00"] * 256)


def test_compress_wrapper_golden() -> None:
    codec = WireCodec()
    wrapped = codec.encode_stream(b"hello hello hello hello", dialer=True)
    assert (
        wrapped.hex()
        == "0982a4416c676f00a3427566b200d19461c3e60d0881040d222c787060c180"
    )


def test_crc_golden() -> None:
    codec = WireCodec(compress=False)
    ack = encode(Ack(7))
    assert (
        codec.encode_packet(ack, crc=True).hex()
        == "0ca8cb2def0282a75061796c6f6164c0a55365714e6f07"
    )
    assert codec.decode_packet(H("0ca8cb2def0282a75061796c6f6164c0a55365714e6f07")) == (
        [Ack(7)],
        [],
    )
    bad = bytearray(H("0ca8cb2def0282a75061796c6f6164c0a55365714e6f07"))
    bad[-1] ^= 1
    with pytest.raises(DecodeError) as ei:
        codec.decode_packet(bytes(bad))
    assert ei.value.reason == "bad_crc"


def test_encryption_vectors_through_codec() -> None:
    ping = H("0082a44e6f6465a66e6f64652d62a55365714e6f07")
    nonce = H("a0a1a2a3a4a5a6a7a8a9aaab")
    kr = Keyring([KEY])
    tcp = kr.encrypt(ping, H("0a00000032"), 1, nonce=nonce)
    assert (H("0a00000032") + tcp).hex() == (
        "0a0000003201a0a1a2a3a4a5a6a7a8a9aaabaa049cf511ed56ace417d1656b701533369f6d678405a5916eb748e60e29"
        "d4c034195dadf7"
    )
    codec = WireCodec(keyring=Keyring([KEY]), compress=False)
    assert codec.decode_stream(H("0a00000032") + tcp, from_dialer=True) == Ping(
        7, "node-b"
    )
    labeled = H(
        "f40470726f6401a0a1a2a3a4a5a6a7a8a9aaabaa049cf511ed56ace417d1656b701533369f6d678487092a8bcef65c1792"
        "9f65ae0074cfe2"
    )
    assert WireCodec(keyring=Keyring([KEY]), label="prod").decode_packet(labeled) == (
        [Ping(7, "node-b")],
        [],
    )
    with pytest.raises(DecodeError) as ei:
        WireCodec(keyring=Keyring([KEY]), label="test").decode_packet(labeled)
    assert ei.value.reason == "label"


def test_vsn_must_be_six_bytes() -> None:
    with pytest.raises(ValueError):
        encode(Alive(1, "a", IP1, 1, None, b"\x01\x05\x02"))
    with pytest.raises(ValueError):
        encode(PushPull(False, [PushNodeState("a", IP1, 1, None, 1, 0, b"")], b""))


def test_vsn_as_int_array_is_accepted() -> None:
    body = dict(msgpack.unpackb(encode(Alive(1, "a", IP1, 1, None, VSN))[1:], raw=True))
    body[b"Vsn"] = [1, 5, 2, 2, 5, 5]
    assert decode(b"\x04" + msgpack.packb(body, use_bin_type=True)) == Alive(
        1, "a", IP1, 1, None, VSN
    )


def test_bin_and_str8_are_accepted_and_missing_fields_are_zero() -> None:
    body = msgpack.packb(
        {"Node": "n" * 40, "SeqNo": 5, "SourceAddr": IP1}, use_bin_type=True
    )
    assert body[6] == 0xD9  # str8
    assert decode(b"\x00" + body) == Ping(5, "n" * 40, IP1)
    assert decode(b"\x00" + msgpack.packb({}, use_bin_type=False)) == Ping(0, "")
    assert decode(b"\x00\x81\xa3Foo\x01") == Ping(0, "")  # unknown keys ignored


def test_non_utf8_names_are_refused() -> None:
    """Names must be UTF-8 text: carrying other bytes once made every push/pull unencodable
    (issue 11); such a message is refused at decode (see test_hostile_gossip.py)."""
    raw = b"\x03" + msgpack.packb(
        {b"From": b"\xff\xfe", b"Incarnation": 1, b"Node": b"ok"}, use_bin_type=False
    )
    with pytest.raises(DecodeError) as e:
        decode(raw)
    assert e.value.reason == "bad_utf8"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "truncated"),
        (b"\x0e\x80", "unknown_type"),
        (b"\x07\x00", "unknown_type"),  # compound is not a single message
        (b"\x00", "truncated"),
        (b"\x00\x82\xa4Node", "truncated"),
        (b"\x00\x01", "malformed"),  # body is not a map
        (b"\x00\xc1", "malformed"),
        (b"\x00\x81\xa5SeqNo\xa1x", "malformed"),  # SeqNo as string
        (
            b"\x00\x81\xa5SeqNo\xcf\x00\x00\x00\x01\x00\x00\x00\x00",
            "malformed",
        ),  # > uint32
        (b"\x00\x81\xa5SeqNo\xff", "malformed"),  # negative
        (b"\x00\x81\xa4Node\x05", "malformed"),  # Node as int
        (b"\x01\x81\xa4Nack\x01", "malformed"),  # Nack as int
        (
            b"\x04\x81\xa3Vsn\x92\x01\xcd\x01\x00",
            "malformed",
        ),  # Vsn array element > 255
        (b"\x06\x83\xa4Join\xc3\xa5Nodes\x05\xacUserStateLen\x00", "truncated"),
        (
            b"\x06\x83\xa4Join\xc3\xa5Nodes\xce\x10\x00\x00\x00\xacUserStateLen\x00",
            "too_large",
        ),
        (b"\x06\x83\xa4Join\xc3\xa5Nodes\xff\xacUserStateLen\x00", "malformed"),
        (b"\x06\x83\xa4Join\xc3\xa5Nodes\x00\xacUserStateLen\x05ab", "truncated"),
        (
            b"\x06\x83\xa4Join\xc3\xa5Nodes\x01\xacUserStateLen\x00\x05",
            "malformed",
        ),  # node not a map
    ],
)
def test_decode_rejections(raw: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as ei:
        decode(raw)
    assert ei.value.reason == reason


def test_user_stream_rejections() -> None:
    for raw, reason in [
        (b"\x08\x81\xaaUserMsgLen\x05ab", "truncated"),
        (b"\x08\x81\xaaUserMsgLen\xd0\xff", "malformed"),
        (b"\x08\x05", "malformed"),
        (b"\x08", "truncated"),
    ]:
        with pytest.raises(DecodeError) as ei:
            decode(raw, stream=True)
        assert ei.value.reason == reason, raw


# ---------------------------------------------------------------- packets


def test_packet_round_trip_all_layers() -> None:
    msgs: list[Message] = [
        Alive(i, f"node-{i}", IP1, 7946, META, VSN) for i in range(10)
    ]
    compound = make_compound([encode(m) for m in msgs])
    for kw in [
        {},
        {"label": "prod"},
        {"keyring": Keyring([KEY])},
        {"keyring": Keyring([KEY]), "label": "prod", "protocol_version": 1},
        {"compress": False},
    ]:
        tx = WireCodec(**kw)  # type: ignore[arg-type]
        rx = WireCodec(**kw)  # type: ignore[arg-type]
        for crc in (False, True):
            pkt = tx.encode_packet(compound, crc=crc)
            assert rx.decode_packet(pkt) == (msgs, []), kw
    # compression only when it helps
    assert WireCodec().encode_packet(encode(Nack(1))) == encode(Nack(1))
    assert WireCodec().encode_packet(compound)[0] == 9


def test_overhead() -> None:
    assert WireCodec().overhead == 0
    assert WireCodec(label="prod").overhead == 6
    assert WireCodec(keyring=Keyring([KEY])).overhead == 29
    assert (
        WireCodec(keyring=Keyring([KEY]), protocol_version=1, label="x").overhead == 48
    )
    c = WireCodec(keyring=Keyring([KEY]), label="prod")
    pkt = c.encode_packet(encode(Nack(1)))
    assert len(pkt) == len(encode(Nack(1))) + c.overhead


def test_compound_with_bad_and_truncated_parts_keeps_good_ones() -> None:
    good = encode(Ping(1, "a"))
    raw = make_compound([good, b"\x0e\x01", b"\x00\x01", good])
    msgs, drops = WireCodec().decode_packet(raw)
    assert msgs == [Ping(1, "a"), Ping(1, "a")]
    assert drops == ["unknown_type", "malformed"]
    msgs, drops = WireCodec().decode_packet(raw[:-1])
    assert msgs == [Ping(1, "a")] and drops == [
        "unknown_type",
        "malformed",
        "truncated",
    ]


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "truncated"),
        (b"\x07", "truncated"),
        (b"\x07\x03\x00", "truncated"),
        (b"\x06" + H(PUSH_HEAD)[1:], "unknown_type"),  # push/pull is TCP only
        (b"\x0d\x80", "unknown_type"),
        (b"\x0a\x00\x00\x00\x00", "unknown_type"),
        (b"\xf4", "truncated"),
        (b"\xf4\x00\x00", "label"),
        (b"\xf4\x05ab", "truncated"),
        (b"\xf4\x01x\x00\x80", "label"),  # labelled packet, no label configured
        (b"\x09\x82\xa4Algo\x01\xa3Buf\xa0", "decompress"),
        (b"\x09\x82\xa4Algo\x00\xa3Buf\xa2\x00\x01", "decompress"),
        (b"\x09\x81\xa4Algo\x00", "decompress"),
    ],
)
def test_packet_rejections(raw: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as ei:
        WireCodec().decode_packet(raw)
    assert ei.value.reason == reason


def test_nesting_is_bounded() -> None:
    raw = encode(Nack(1))
    for _ in range(10):
        raw = make_compound([raw])
    msgs, drops = WireCodec().decode_packet(raw)
    assert msgs == [] and drops == ["nested"]  # a compound never holds a compound


def test_decompression_bomb_is_bounded() -> None:
    codec = WireCodec(max_decompressed=1000)
    bomb = WireCodec().encode_packet(encode(UserMsg(bytes(100_000))))
    assert bomb[0] == 9 and len(bomb) < 2000
    with pytest.raises(DecodeError) as ei:
        codec.decode_packet(bomb)
    assert ei.value.reason == "too_large"


def test_label_policy() -> None:
    plain = encode(Nack(1))
    labelled = WireCodec(label="prod").encode_packet(plain)
    assert labelled == b"\xf4\x04prod" + plain
    assert WireCodec(label="prod").decode_packet(labelled) == ([Nack(1)], [])
    for codec, pkt in [
        (WireCodec(label="prod"), plain),
        (WireCodec(), labelled),
        (WireCodec(label="other"), labelled),
        (WireCodec(label="prod", skip_inbound_label_check=True), labelled),
    ]:
        with pytest.raises(DecodeError) as ei:
            codec.decode_packet(pkt)
        assert ei.value.reason == "label"
    skip = WireCodec(label="prod", skip_inbound_label_check=True)
    assert skip.decode_packet(plain) == ([Nack(1)], [])


def test_encryption_policy() -> None:
    enc = WireCodec(keyring=Keyring([KEY]))
    plain = encode(Nack(1))
    with pytest.raises(DecodeError) as ei:
        enc.decode_packet(plain)
    assert ei.value.reason == "version"  # 0x0b is read as the envelope version
    lax = WireCodec(keyring=Keyring([KEY]), verify_incoming=False)
    assert lax.decode_packet(plain) == ([Nack(1)], [])
    assert lax.decode_packet(enc.encode_packet(plain)) == ([Nack(1)], [])
    no_out = WireCodec(keyring=Keyring([KEY]), verify_outgoing=False)
    assert no_out.encode_packet(plain) == plain
    other = WireCodec(keyring=Keyring([bytes(32)]))
    with pytest.raises(DecodeError) as ei:
        other.decode_packet(enc.encode_packet(plain))
    assert ei.value.reason == "decrypt"
    bad_version = b"\x02" + enc.encode_packet(plain)[1:]
    with pytest.raises(DecodeError) as ei:
        enc.decode_packet(bad_version)
    assert ei.value.reason == "version"
    # keyring is mutable at run time: a rotated-in key decrypts
    other.keyring = Keyring([bytes(32), KEY])
    assert other.decode_packet(enc.encode_packet(plain)) == ([Nack(1)], [])


def test_crc_of_compressed_payload() -> None:
    codec = WireCodec()
    compound = make_compound(
        [encode(Alive(i, "n", IP1, 1, META, VSN)) for i in range(5)]
    )
    pkt = codec.encode_packet(compound, crc=True)
    assert pkt[0] == 12 and pkt[5] == 9
    assert zlib.crc32(pkt[5:]) == int.from_bytes(pkt[1:5], "big")
