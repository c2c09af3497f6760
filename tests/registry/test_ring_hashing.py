"""XXH3-64 in C (registry._ringaccel.xxh3_64 / xxh3_points) against the xxhash package.

A ``"consistent"`` member's points are ``xxh3_64(f"{id}-{i}")``; with the accelerator they are
hashed in C straight into an ``array("Q")`` (registry/ring/hashing.py ``xxh3_point_array``).
Every point must be the xxhash package's, bit for bit, or rings built with and without the
accelerator (and uhashring, the oracle of placement) would disagree: every length XXH3's short
paths cover (0..240 bytes), any byte values, ids of any length and alphabet, lone surrogates
included (``encode`` keeps them), and the switch to the Python hashing past 240 bytes.
"""

from __future__ import annotations

import random
from array import array

import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

from registry.ring import ConsistentRing, RingNode, hashing
from registry.ring.hashing import encode, xxh3_point_array, xxh3_points

ACCEL = ConsistentRing.accel
#: A stale build without xxh3_points fails here (AttributeError): rebuild with `python setup.py build_ext --inplace`.
pytestmark = pytest.mark.skipif(
    ACCEL is None,
    reason="registry._ringaccel was not compiled here (no C compiler at install): the pure-Python hashing is "
           "the only path; CI fails tests/registry/test_ring_accel.py::test_accelerator_is_built_under_ci instead")

ref = xxhash.xxh3_64_intdigest

#: Any code point, lone surrogates included (hypothesis' text() leaves them out).
ID_CHARS = st.one_of(st.characters(), st.integers(0xD800, 0xDFFF).map(chr))


def test_every_length_matches_xxhash() -> None:
    # Each length picks its code path (0, 1-3, 4-8, 9-16, 17-128 in four steps, 129-240 by 16-byte
    # rounds) and which secret bytes it reads; contents with high bits set, zero bytes, both.
    assert ACCEL is not None
    rnd = random.Random(240)
    for n in range(241):
        samples = [bytes(n), b"\xff" * n, bytes(range(256))[:n], bytes(range(255, -1, -1))[:n]]
        samples += [rnd.randbytes(n) for _ in range(20)]
        for data in samples:
            assert ACCEL.xxh3_64(data) == ref(data), (n, data.hex())
    # Any buffer, not only bytes.
    assert ACCEL.xxh3_64(bytearray(b"abc")) == ACCEL.xxh3_64(memoryview(b"abc")) == ref(b"abc")


@settings(max_examples=400, deadline=None)
@given(data=st.binary(max_size=240))
def test_property_any_bytes_match_xxhash(data: bytes) -> None:
    assert ACCEL is not None
    assert ACCEL.xxh3_64(data) == ref(data)


def test_longer_than_240_bytes_is_refused() -> None:
    assert ACCEL is not None
    with pytest.raises(ValueError, match="240"):
        ACCEL.xxh3_64(b"x" * 241)
    with pytest.raises(TypeError):
        ACCEL.xxh3_64("text")  # str has no buffer: callers encode first


def test_points_match_the_python_hashing() -> None:
    assert ACCEL is not None
    for node_id in ("service-1", "", "é", "日本-サービス", "\udcff", "a\udc80b", "x" * 200):
        prefix = encode(node_id) + b"-"
        for count in (0, 1, 9, 10, 11, 100, 4096, 10001):
            got = ACCEL.xxh3_points(prefix, count)
            assert isinstance(got, array) and got.typecode == "Q"
            assert got.tolist() == [ref(prefix + b"%d" % i) for i in range(count)] == xxh3_points(node_id, count)


@settings(max_examples=150, deadline=None)
@given(node_id=st.text(alphabet=ID_CHARS, max_size=80), count=st.integers(0, 300))
def test_property_ids_of_any_alphabet(node_id: str, count: int) -> None:
    assert ACCEL is not None
    expected = xxh3_points(node_id, count)
    assert ACCEL.xxh3_points(encode(node_id) + b"-", count).tolist() == expected
    assert xxh3_point_array(node_id, count, ACCEL).tolist() == expected
    assert xxh3_point_array(node_id, count, None).tolist() == expected


def test_past_240_bytes_the_python_hashing_takes_over() -> None:
    # prefix + decimal of count-1 must fit 240 bytes: exactly 240 is hashed in C, 241 is not
    # (None: the caller falls back), and xxh3_point_array gives the same numbers either way.
    assert ACCEL is not None
    for width, count in ((1, 10), (2, 100), (4, 4096), (5, 10001)):
        fits = b"p" * (240 - width)
        assert ACCEL.xxh3_points(fits, count) is not None
        assert ACCEL.xxh3_points(fits + b"p", count) is None
    assert ACCEL.xxh3_points(b"p" * 300, 0) == array("Q")  # no input at all: nothing too long
    for n in range(225, 250):  # ids around the limit, multi-byte characters straddling it
        for node_id in ("i" * n, "é" * (n // 2), "\udcff" * (n // 3)):
            for count in (1, 12, 4096):
                assert xxh3_point_array(node_id, count, ACCEL).tolist() == xxh3_points(node_id, count)


def test_bad_arguments() -> None:
    assert ACCEL is not None
    with pytest.raises(ValueError):
        ACCEL.xxh3_points(b"a-", -1)
    with pytest.raises(TypeError):
        ACCEL.xxh3_points("a-", 3)
    with pytest.raises(TypeError):
        ACCEL.xxh3_points(b"a-", 1.5)


def test_consistent_members_are_hashed_in_c(monkeypatch: pytest.MonkeyPatch) -> None:
    # With the accelerator, a member's points never go through the per-point Python hashing
    # (what made a bulk build cost ~3 ms a member); without it they all do.
    calls: list[str] = []
    real = hashing.xxh3_points

    def counting(node_id: str, count: int) -> list[int]:
        calls.append(node_id)
        return real(node_id, count)

    monkeypatch.setattr(hashing, "xxh3_points", counting)
    node = RingNode(4096)
    fast = ConsistentRing.replica_points("svc", node)
    assert calls == [] and isinstance(fast, array) and fast.typecode == "Q"
    monkeypatch.setattr(ConsistentRing, "accel", None)
    slow = ConsistentRing.replica_points("svc", node)
    assert calls == ["svc"] and slow == fast
