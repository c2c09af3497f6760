"""wire: round trips, chunking under the size bound, and hostile bytes giving WireError and nothing else."""

from __future__ import annotations

import itertools

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from registry.ttl import wire
from registry.ttl.entry import Entry, Limits
from registry.ttl.store import BUCKETS
from registry.ttl.wire import Buckets, Digest, Push, Records, WireError

T0 = 1_700_000_000_000
LIMITS = Limits()


def entry(i: int = 0, *, group: str = "g", deleted: bool = False, doc: bytes = b"") -> Entry:
    return Entry(group=group, id=f"id-{i:05d}", addr="" if deleted else f"10.0.0.{i % 250}:80",
                 tags={} if deleted else {"zone": "a", "v": str(i)}, replicas=None if i % 2 else 3,
                 weight=None if i % 3 else 2, ttl_ms=30_000, written_ms=T0 + i, writer="reg-1", deleted=deleted,
                 doc=doc)


def test_round_trips() -> None:
    es = [entry(i) for i in range(5)] + [entry(9, deleted=True), entry(7, doc=b'{"host": "h", "port": 1}')]
    for msg in (Push("a", es), Push("a", []), Digest("b", {"g": b"\x01" * 8, "h": b"\x02" * 8}, True),
                Digest("b", {}, False), Digest("b", {"g": b"x"}, True, "a", "h"), Records("c", "g", es, True, None, None),
                Records("c", "g", [], False, "id-1", "id-9"), Records("c", "g", es[:2], True, None, "x", (0, 5, 1023)),
                Buckets("d", "g", tuple(range(BUCKETS - 1)) + (2**64 - 1,))):
        assert wire.decode(wire.encode(msg), LIMITS) == msg


def test_chunk_push_splits_under_the_bound_and_keeps_everything() -> None:
    es = [entry(i, doc=b"x" * 1000) for i in range(300)]
    msgs = wire.chunk_push("a", es, 20_000)
    assert len(msgs) > 10 and all(len(m) <= 20_000 for m in msgs)
    got = []
    for m in msgs:
        msg = wire.decode(m, LIMITS)
        assert isinstance(msg, Push) and msg.sender == "a"
        got.extend(msg.entries)
    assert got == es
    assert wire.chunk_push("a", [], 20_000) == []
    one = wire.chunk_push("a", [entry(1, doc=b"y" * 4000)], 100)  # a record over the bound goes alone
    assert len(one) == 1


def test_chunk_records_ranges_cover_all_ids() -> None:
    es = [entry(i, doc=b"x" * 500) for i in range(200)][::-1]
    msgs = [wire.decode(m, LIMITS) for m in wire.chunk_records("a", "g", es, want_back=True, max_bytes=10_000)]
    assert len(msgs) > 5
    assert all(isinstance(m, Records) and m.want_back and m.group == "g" for m in msgs)
    recs = [m for m in msgs if isinstance(m, Records)]
    assert recs[0].lo is None and recs[-1].hi is None
    for prev, nxt in itertools.pairwise(recs):
        assert prev.hi is not None and prev.hi == nxt.lo == prev.entries[-1].id
    for m in recs:
        assert all((m.lo is None or e.id > m.lo) and (m.hi is None or e.id <= m.hi) for e in m.entries)
    assert [e for m in recs for e in m.entries] == sorted(es, key=lambda e: e.id)
    ask = wire.chunk_records("a", "g", [], want_back=True, max_bytes=10_000)
    assert [wire.decode(m, LIMITS) for m in ask] == [Records("a", "g", [], True, None, None)]


def test_chunk_digest_ranges_cover_all_groups() -> None:
    digests = {f"group-{i:04d}": i.to_bytes(8, "big") for i in range(500)}
    msgs = [wire.decode(m, LIMITS) for m in wire.chunk_digest("a", digests, reply=True, max_bytes=2_000)]
    assert len(msgs) > 5 and all(isinstance(m, Digest) and m.reply for m in msgs)
    ds = [m for m in msgs if isinstance(m, Digest)]
    assert ds[0].lo is None and ds[-1].hi is None
    for prev, nxt in itertools.pairwise(ds):
        assert prev.hi is not None and prev.hi == nxt.lo == max(prev.digests)
    assert {g: d for m in ds for g, d in m.digests.items()} == digests
    assert [wire.decode(m, LIMITS) for m in wire.chunk_digest("a", {}, reply=True, max_bytes=100)] == [
        Digest("a", {}, True)]
    assert all(len(m) <= 2_000 for m in wire.chunk_digest("a", digests, reply=True, max_bytes=2_000))


def _bad(data: bytes, reason: str = "") -> None:
    with pytest.raises(WireError) as info:
        wire.decode(data, LIMITS)
    assert reason in info.value.reason


def test_hostile_inputs() -> None:
    good = wire.encode(Push("a", [entry(1)]))
    for n in range(len(good)):
        _bad(good[:n])  # truncated anywhere
    _bad(good + b"\x00", "not msgpack")  # trailing bytes
    _bad(b"", "not msgpack")
    _bad(msgpack.packb({"a": 1}), "not an array")
    _bad(msgpack.packb([2, 1, "a", []]), "version")
    _bad(msgpack.packb([True, 1, "a", []]), "version")
    _bad(msgpack.packb([1, 99, "a", []]), "unknown message type")
    _bad(msgpack.packb([1, "1", "a", []]), "type")
    _bad(msgpack.packb([1, 1, 5, []]), "sender")
    _bad(msgpack.packb([1, 1, "a"]), "fewer")
    _bad(msgpack.packb([1, 1, "a", [[1] * 11]]), "a record's")
    rec = wire._record(entry(1))
    for i, bad in ((3, {"k": 1}), (3, [1]), (4, "3"), (5, 1.5), (6, True), (7, None), (8, b"w"), (9, 1), (10, "doc")):
        r = list(rec)
        r[i] = bad
        _bad(msgpack.packb([1, 1, "a", [r]], use_bin_type=True))
    _bad(msgpack.packb([1, 1, "a", [rec[:10]]], use_bin_type=True), "fewer")
    _bad(msgpack.packb([1, 2, "a", {"g": "notbin"}, True], use_bin_type=True), "digests")
    _bad(msgpack.packb([1, 2, "a", {1: b"x"}, True], use_bin_type=True), "not msgpack")  # strict_map_key
    _bad(msgpack.packb([1, 3, "a", "other", [rec], True, None, None], use_bin_type=True), "group is not")
    _bad(msgpack.packb([1, 3, "a", "g", [rec], 1, None, None], use_bin_type=True), "want_back")
    # announced lengths far beyond the data or the limits, before anything is built
    _bad(b"\x94\x01\x01\xa1a\xdd\xff\xff\xff\xff", "not msgpack")
    _bad(b"\x94\x01\x01\xdb\x7f\xff\xff\xff", "not msgpack")
    _bad(b"\x94\x01\x01\xa1a\x91\x9b\xa1g\xa1i\xa1a\xdf\x7f\xff\xff\xff", "not msgpack")
    _bad(msgpack.packb([1, 1, "x" * 10_000, []]), "max_str_len")
    _bad(msgpack.packb([1, 1, "a", [[*rec[:10], b"d" * 9_000]]], use_bin_type=True), "max_bin_len")
    _bad(b"\x91" * 100_000 + b"\xc0", "not msgpack")  # deep nesting
    _bad(msgpack.packb([1, 1, "a", [msgpack.ExtType(1, b"xx")]]), "not msgpack")
    _bad(b"\xc1", "not msgpack")
    _bad(msgpack.packb([1, 4, "a", "g", b"\0" * 8 * (BUCKETS - 1)], use_bin_type=True), "bucket sums")
    _bad(msgpack.packb([1, 4, "a", "g"], use_bin_type=True), "fewer")
    for bad_buckets in ([BUCKETS], [-1], [True], ["1"], list(range(BUCKETS)) + [0], 5):
        _bad(msgpack.packb([1, 3, "a", "g", [], True, None, None, bad_buckets], use_bin_type=True), "buckets")
    _bad(b"\x00" * (wire.MAX_DATA_BYTES + 1), "more than")


def _valid_messages() -> list[bytes]:
    es = [entry(i) for i in range(3)] + [entry(5, deleted=True, doc=b"{}")]
    return [wire.encode(Push("a", es)), wire.encode(Digest("b", {"g": b"\x00" * 8}, True)),
            wire.encode(Records("c", "g", es, True, "a", None, (1, 2))),
            wire.encode(Buckets("d", "g", (7,) * BUCKETS))]


def _decode_only_wire_errors(data: bytes) -> None:
    try:
        msg = wire.decode(data, LIMITS)
    except WireError:
        return
    assert isinstance(msg, (Push, Digest, Records, Buckets))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_fuzz_random_bytes(data: bytes) -> None:
    _decode_only_wire_errors(data)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(_valid_messages()), st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)),
                                                    min_size=1, max_size=6),
       st.integers(0, 10_000), st.binary(max_size=20))
def test_fuzz_mutated_messages(msg: bytes, flips: list[tuple[int, int]], cut: int, tail: bytes) -> None:
    data = bytearray(msg)
    for pos, byte in flips:
        data[pos % len(data)] = byte
    _decode_only_wire_errors(bytes(data))
    _decode_only_wire_errors(bytes(data[: cut % (len(data) + 1)]) + tail)


@settings(max_examples=60, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=5) | st.binary(max_size=5),
                    lambda kids: st.lists(kids, max_size=12) | st.dictionaries(st.text(max_size=3), kids,
                                                                                 max_size=4), max_leaves=40))
def test_fuzz_structured_garbage(obj: object) -> None:
    for head in ([], [1], [1, 1, "a"], [1, 2, "a"], [1, 3, "a", "g"], [1, 4, "a"], [1, 3, "a", "g", [], True, None, None]):
        _decode_only_wire_errors(msgpack.packb([*head, obj], use_bin_type=True))


def test_a_peer_with_larger_bounds_is_read() -> None:
    """A message with more records than this registry's max_entries still decodes (the store drops what
    does not fit, and takes the updates of what it holds)."""
    small = Limits(max_entries=10, max_per_group=10)
    msg = Push("a", [entry(i) for i in range(50)])
    assert wire.decode(wire.encode(msg), small) == msg
