"""Tags in node meta (§11) and Lamport clocks (§13.1)."""

from __future__ import annotations

import pytest

from registry.serf.clock import LamportClock
from registry.serf.tags import TagsTooLarge, check_tags, decode_tags, encode_tags


def test_tags_golden_and_decode_rules() -> None:
    assert encode_tags({"role": "web"}).hex() == "ff81a4726f6c65a3776562"
    assert decode_tags(bytes.fromhex("ff81a4726f6c65a3776562")) == {"role": "web"}
    assert encode_tags({"role": "web", "x": "y"}, protocol=2) == b"web"
    assert decode_tags(b"web") == {"role": "web"}
    assert decode_tags(b"") == {"role": ""}
    assert decode_tags(None) == {"role": ""}
    assert decode_tags(b"\xff\xc1") == {}


def test_tags_over_512_bytes_refused_with_size() -> None:
    tags = {f"k{i}": "v" * 20 for i in range(30)}
    size = len(encode_tags(tags))
    assert size > 512
    with pytest.raises(TagsTooLarge, match=f"{size} bytes"):
        check_tags(tags)
    ok = {"a": "b" * 500}
    assert len(check_tags(ok)) <= 512


def test_lamport_clock() -> None:
    c = LamportClock()
    assert c.time() == 0
    assert c.increment() == 1
    c.witness(0)
    assert c.time() == 1
    c.witness(1)
    assert c.time() == 2
    c.witness(10)
    assert c.time() == 11
    c.witness(5)
    assert c.time() == 11


def test_lamport_clock_wraps_like_go_uint64() -> None:
    c = LamportClock()
    c.witness(2**64 - 1)
    assert c.time() == 0
    c.witness(2**64 - 2)
    assert c.time() == 2**64 - 1
    assert c.increment() == 0
