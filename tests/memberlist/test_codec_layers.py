"""The codec's parts on their own: single layers, envelope sizes, shared message layouts, profiles."""

from __future__ import annotations

import pytest

from registry.memberlist import codec
from registry.memberlist.config import PROFILES, Config
from registry.memberlist.crypto import EnvelopeVersion, Keyring, envelope_size
from registry.memberlist.encoders import packb
from registry.memberlist.layers import (
    CompressionAlgo,
    add_crc,
    compress_msg,
    decompress_msg,
    label_header,
    strip_crc,
    strip_label,
)
from registry.memberlist.messages import Dead, MessageType, Ping, Suspect
from tests.memberlist.wire_vectors import KEY


@pytest.mark.parametrize("version", list(EnvelopeVersion))
def test_envelope_size_is_what_encrypt_writes(version: EnvelopeVersion) -> None:
    kr = Keyring([KEY])
    for n in range(40):
        assert len(kr.encrypt(bytes(n), b"", version)) == envelope_size(n, version), n
    # the per-packet overhead the packer budgets for is the envelope of nothing
    overhead = codec.WireCodec(keyring=kr, protocol_version=1 if version == EnvelopeVersion.PADDED else 2).overhead
    assert overhead == envelope_size(0, version) == (45 if version == EnvelopeVersion.PADDED else 29)


def test_crc_layer() -> None:
    msg = codec.encode(Ping(1, "a"))
    wrapped = add_crc(msg)
    assert wrapped[0] == MessageType.HAS_CRC and strip_crc(wrapped) == msg
    assert strip_crc(msg) == msg  # no header: unchanged
    bad = bytearray(wrapped)
    bad[-1] ^= 1
    with pytest.raises(codec.DecodeError) as ei:
        strip_crc(bytes(bad))
    assert ei.value.reason == "bad_crc"


def test_label_layer() -> None:
    assert label_header(b"") == b""
    hdr = label_header(b"blue")
    assert hdr == bytes((MessageType.HAS_LABEL, 4)) + b"blue"
    assert strip_label(hdr + b"rest") == (b"blue", b"rest")
    assert strip_label(b"\x00rest") == (b"", b"\x00rest")
    for bad, reason in [(hdr[:3], "truncated"), (bytes((MessageType.HAS_LABEL, 0)) + b"x", "label")]:
        with pytest.raises(codec.DecodeError) as ei:
            strip_label(bad)
        assert ei.value.reason == reason


def test_compression_layer_knows_only_lzw() -> None:
    msg = codec.encode(Ping(7, "node")) * 3
    wrapped = compress_msg(msg)
    assert wrapped[0] == MessageType.COMPRESS
    assert decompress_msg(wrapped[1:], 1000) == msg
    other = packb({b"Algo": CompressionAlgo.LZW + 1, b"Buf": b""})
    with pytest.raises(codec.DecodeError) as ei:
        decompress_msg(other, 1000)
    assert ei.value.reason == "decompress"


def test_suspect_and_dead_share_a_layout_not_an_identity() -> None:
    s, d = Suspect(3, "n1", "n2"), Dead(3, "n1", "n2")
    as_object: object = s
    assert as_object != d
    es, ed = codec.encode(s), codec.encode(d)
    assert (es[0], ed[0]) == (MessageType.SUSPECT, MessageType.DEAD) and es[1:] == ed[1:]
    assert codec.decode(es) == s and codec.decode(ed) == d
    assert type(codec.decode(ed)) is Dead


def test_profiles() -> None:
    assert PROFILES == ("lan", "wan", "local", "fast")
    for name in PROFILES:
        assert Config.profile(name) == getattr(Config, name)()
        assert Config.profile(name, probe_interval=9.0).probe_interval == 9.0
    assert Config.lan() == Config()
    assert Config.wan().probe_interval == 5.0 and Config.local().probe_timeout == 0.2
    with pytest.raises(ValueError, match="unknown profile 'x': choose one of lan, wan, local, fast"):
        Config.profile("x")
