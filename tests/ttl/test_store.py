"""TtlStore: last-writer-wins, tombstones, expiry, skew, bounds, digests, the refresh stamping rule."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from registry.ttl.entry import Entry, Limits, Refused, RefusedReason
from registry.ttl.store import BUCKETS, Change, TtlStore, bucket_of

T0 = 1_700_000_000_000


def rec(id: str = "a", *, ms: int = T0, writer: str = "r1", addr: str = "10.0.0.1:80", ttl_ms: int = 30_000,
        deleted: bool = False, group: str = "g") -> Entry:
    return Entry(group=group, id=id, addr="" if deleted else addr, ttl_ms=ttl_ms, written_ms=ms, writer=writer,
                 deleted=deleted)


def test_lww_both_orders() -> None:
    old, new = rec(ms=T0, addr="old:1"), rec(ms=T0 + 5, addr="new:1")
    for order in ([old, new], [new, old]):
        s = TtlStore("me")
        for e in order:
            s.merge([e], now_ms=T0 + 10)
        assert s.get("g", "a") == new
        assert s.live("g", now_ms=T0 + 10) == [new]
    s = TtlStore("me")
    assert s.merge([new], now_ms=T0 + 10) == [Change("g", "a", new)]
    assert s.merge([old], now_ms=T0 + 10) == []
    assert s.merge([new], now_ms=T0 + 10) == []  # idempotent
    assert s.stats["merge.stale"] == 2


def test_tie_on_ms_broken_by_writer() -> None:
    a, b = rec(writer="alpha", addr="a:1"), rec(writer="beta", addr="b:1")
    for order in ([a, b], [b, a]):
        s = TtlStore("me")
        s.merge(order, now_ms=T0)
        assert s.get("g", "a") == b


def test_tombstone_beats_older_write_arriving_later() -> None:
    s = TtlStore("me")
    tomb = rec(ms=T0 + 100, deleted=True)
    assert s.merge([tomb], now_ms=T0 + 100) == []  # kept for a key not held, no Change
    assert s.get("g", "a") == tomb
    assert s.merge([rec(ms=T0)], now_ms=T0 + 200) == []
    assert s.live("g", now_ms=T0 + 200) == []
    # a newer write beats the tombstone
    newer = rec(ms=T0 + 101)
    assert s.merge([newer], now_ms=T0 + 200) == [Change("g", "a", newer)]


def test_delete_makes_a_tombstone_that_wins_over_the_write() -> None:
    s = TtlStore("me")
    e, ch = s.write("g", "a", addr="x:1", ttl_ms=10_000, now_ms=T0)
    assert ch == [Change("g", "a", e)]
    tomb, ch = s.delete("g", "a", now_ms=T0)  # same ms: still newer
    assert tomb is not None and tomb.deleted and tomb.stamp == (T0 + 1, "me")
    assert ch == [Change("g", "a", None)]
    assert s.delete("g", "a", now_ms=T0 + 2) == (None, [])
    other = TtlStore("peer")
    other.merge([tomb, e], now_ms=T0 + 5)
    assert other.live("g", now_ms=T0 + 5) == [] and other.get("g", "a") == tomb


def test_tombstone_forgotten_after_its_time() -> None:
    limits = Limits()
    s = TtlStore("me", limits)
    s.write("g", "a", addr="x:1", ttl_ms=10_000, now_ms=T0)
    tomb, _ = s.delete("g", "a", now_ms=T0 + 1000)
    assert tomb is not None
    gone = tomb.tombstone_expires_ms(limits)
    assert s.next_expiry() == gone
    assert s.expire(now_ms=gone - 1) == [] and len(s) == 1
    assert s.expire(now_ms=gone) == [] and len(s) == 0
    assert s.get("g", "a") is None and s.digest() == {} and s.next_expiry() is None
    # a tombstone already past its time on arrival is dropped
    assert s.merge([tomb], now_ms=gone) == [] and s.stats["drop.expired"] == 1 and len(s) == 0


def test_expiry_exactly_at_written_plus_ttl() -> None:
    s = TtlStore("me")
    e, _ = s.write("g", "a", addr="x:1", ttl_ms=5_000, now_ms=T0)
    assert s.next_expiry() == T0 + 5_000
    assert s.expire(now_ms=T0 + 4_999) == []
    assert s.live("g", now_ms=T0 + 4_999) == [e]
    assert s.live("g", now_ms=T0 + 5_000) == []
    assert s.expire(now_ms=T0 + 5_000) == [Change("g", "a", None)]
    # kept as a tombstone of the same stamp: an older write with a longer TTL still loses
    held = s.get("g", "a")
    assert held is not None and held.deleted and held.stamp == e.stamp
    assert s.merge([rec(ms=T0 - 10, writer="peer", ttl_ms=60_000)], now_ms=T0 + 5_001) == []
    assert s.groups() == []


def test_record_expired_on_arrival_is_its_tombstone() -> None:
    s = TtlStore("me")
    long_old = rec(ms=T0, ttl_ms=60_000)
    s.merge([long_old], now_ms=T0 + 1)
    short_new = rec(ms=T0 + 10, ttl_ms=1_000, writer="r2")
    assert s.merge([short_new], now_ms=T0 + 2_000) == [Change("g", "a", None)]
    held = s.get("g", "a")
    assert held is not None and held.deleted and held.stamp == short_new.stamp


def test_future_skew_refused() -> None:
    limits = Limits(max_skew_ms=5_000)
    s = TtlStore("me", limits)
    assert s.merge([rec(ms=T0 + 5_001)], now_ms=T0) == []
    assert s.stats["drop.future"] == 1 and len(s) == 0
    assert s.merge([rec(ms=T0 + 5_000)], now_ms=T0) != []


def test_invalid_records_dropped_and_counted() -> None:
    s = TtlStore("me")
    bad = [rec(id=""), rec(writer=""), rec(ttl_ms=1), Entry(group="g/x", id="a", addr="x", written_ms=T0, writer="w")]
    assert s.merge(bad, now_ms=T0) == []
    assert s.stats["drop.invalid"] == 4 and len(s) == 0
    with pytest.raises(Refused) as info:
        s.write("g", "a", addr="x:1", ttl_ms=1, now_ms=T0)
    assert info.value.reason is RefusedReason.INVALID and len(s) == 0


def test_bounds() -> None:
    s = TtlStore("me", Limits(max_per_group=2, max_entries=3))
    s.write("g", "a", addr="x:1", ttl_ms=10_000, now_ms=T0)
    s.write("g", "b", addr="x:1", ttl_ms=10_000, now_ms=T0)
    with pytest.raises(Refused) as info:
        s.write("g", "c", addr="x:1", ttl_ms=10_000, now_ms=T0)
    assert info.value.reason is RefusedReason.GROUP_FULL
    s.delete("g", "b", now_ms=T0)  # the tombstone still counts
    with pytest.raises(Refused):
        s.write("g", "c", addr="x:1", ttl_ms=10_000, now_ms=T0)
    s.write("g", "b", addr="y:1", ttl_ms=10_000, now_ms=T0)  # a key held is always updated
    s.write("h", "a", addr="x:1", ttl_ms=10_000, now_ms=T0)
    with pytest.raises(Refused) as info:
        s.write("i", "a", addr="x:1", ttl_ms=10_000, now_ms=T0)
    assert info.value.reason is RefusedReason.STORE_FULL
    assert len(s) == 3
    assert s.merge([rec("c", ms=T0 + 1)], now_ms=T0 + 1) == []
    assert s.merge([rec("z", ms=T0 + 1, group="j")], now_ms=T0 + 1) == []
    assert s.stats["drop.group_full"] == 1 and s.stats["drop.store_full"] == 1
    newer = rec("a", ms=T0 + 50, addr="z:9")
    assert s.merge([newer], now_ms=T0 + 50) == [Change("g", "a", newer)]  # held: updated when full
    assert len(s) == 3


def test_refresh_stamping_rule() -> None:
    s = TtlStore("me")
    ahead = rec(ms=T0 + 3_000, writer="zz-peer")  # a peer whose clock runs ahead (and sorts after us)
    s.merge([ahead], now_ms=T0)
    e, ch = s.write("g", "a", addr=ahead.addr, ttl_ms=30_000, now_ms=T0)
    assert e.stamp == (T0 + 3_001, "me") and e.stamp > ahead.stamp
    assert ch == []  # same service: only the stamp moved, nothing for the catalog
    e2, _ = s.write("g", "a", addr=ahead.addr, ttl_ms=30_000, now_ms=T0 + 10_000)
    assert e2.written_ms == T0 + 10_000
    e3, ch = s.write("g", "a", addr="other:1", ttl_ms=30_000, now_ms=T0 + 10_000, tags={"v": "2"})
    assert e3.written_ms == T0 + 10_001 and ch == [Change("g", "a", e3)]


def test_digest_equal_for_same_records_any_order_and_differs_otherwise() -> None:
    rng = random.Random(7)
    recs = [rec(f"id{i}", ms=T0 + rng.randrange(1000), writer=rng.choice("abc"), group=rng.choice(["g", "h"]))
            for i in range(200)]
    a, b = TtlStore("a"), TtlStore("b")
    a.merge(recs, now_ms=T0 + 1000)
    shuffled = recs[:]
    rng.shuffle(shuffled)
    for i in range(0, 200, 7):  # different batches, older versions first in b
        b.merge([rec(e.id, ms=e.written_ms - 1, writer=e.writer, group=e.group) for e in shuffled[i:i + 7]],
                now_ms=T0 + 1000)
        b.merge(shuffled[i:i + 7], now_ms=T0 + 1000)
    assert a.digest() == b.digest() and set(a.digest()) == {"g", "h"}
    assert all(len(d) == 8 for d in a.digest().values())
    one = recs[0]
    b.merge([rec(one.id, ms=one.written_ms + 1, writer=one.writer, group=one.group)], now_ms=T0 + 1000)
    assert a.digest()[one.group] != b.digest()[one.group]
    other = "h" if one.group == "g" else "g"
    assert a.digest()[other] == b.digest()[other]
    # deleted flag alone changes it
    c, d = TtlStore("c"), TtlStore("d")
    c.merge([rec(ms=T0)], now_ms=T0)
    d.merge([Entry(group="g", id="a", addr="", ttl_ms=30_000, written_ms=T0, writer="r1", deleted=True)], now_ms=T0)
    assert c.digest() != d.digest()


def test_expire_is_proportional_to_what_expires_and_heap_stays_bounded() -> None:
    s = TtlStore("me")
    for i in range(2_000):
        s.write("g", f"id{i}", addr="x:1", ttl_ms=10_000 + i, now_ms=T0)
    for round_ in range(1, 20):  # refreshes leave stale heap items behind: the heap is rebuilt
        for i in range(2_000):
            s.write("g", f"id{i}", addr="x:1", ttl_ms=10_000 + i, now_ms=T0 + round_)
    assert len(s._heap) <= 2 * len(s) + 64
    assert s.next_expiry() == T0 + 19 + 10_000
    assert s.expire(now_ms=T0 + 19 + 10_004) == [Change("g", f"id{i}", None) for i in range(5)]
    assert len(s.live("g", now_ms=T0 + 19 + 10_004)) == 1_995 and s.groups() == ["g"]


def test_records_and_groups() -> None:
    s = TtlStore("me")
    s.write("b", "x", addr="x:1", ttl_ms=10_000, now_ms=T0)
    s.write("a", "y", addr="x:1", ttl_ms=10_000, now_ms=T0)
    s.delete("b", "x", now_ms=T0)
    assert s.groups() == ["a"]
    assert [e.deleted for e in s.records("b")] == [True]
    assert s.records("nope") == [] and len(s) == 2


def test_bucket_sums_kept_as_records_change_equal_computed_ones() -> None:
    rng = random.Random(3)
    big = TtlStore("me", bucketed_from=64)
    small = TtlStore("me", bucketed_from=10**9)  # never keeps them: computes when asked
    now = T0
    for _ in range(3_000):
        now += rng.randrange(3)
        id, delete, ttl_ms = f"s{rng.randrange(200)}", rng.random() < 0.2, rng.choice([1_000, 50_000])
        for s in (big, small):
            if delete:
                s.delete("g", id, now_ms=now)
            else:
                s.write("g", id, addr="x:1", ttl_ms=ttl_ms, now_ms=now)
            s.expire(now_ms=now)
    assert big._groups["g"].buckets is not None and small._groups["g"].buckets is None
    assert big.bucket_sums("g") == small.bucket_sums("g") == TtlStore._bucket_sums(big.records("g"))
    assert len(big.bucket_sums("g")) == BUCKETS and big.bucket_sums("nope") == [0] * BUCKETS
    some = {bucket_of(f"s{i}") for i in range(5)}
    assert {e.id for e in big.records_in("g", some)} == {e.id for e in big.records("g") if bucket_of(e.id) in some}
    # the bucket of one id moves with a change of that id only
    before = big.bucket_sums("g")
    e = big.records("g")[0]
    big.write("g", e.id, addr="y:1", ttl_ms=50_000, now_ms=now + 1)
    after = big.bucket_sums("g")
    assert [i for i in range(BUCKETS) if before[i] != after[i]] == [bucket_of(e.id)]


def test_entry_past_its_ttl_not_yet_expired_then_replaced_by_a_tombstone_leaves_the_catalog() -> None:
    """The catalog holds an entry until the store says otherwise: a tombstone (or a record expired on
    arrival) replacing an entry whose TTL ran out before `expire` ran must still remove it, since the
    entry's own expiry will no longer fire."""
    for late in (rec(ms=T0 + 1_500, writer="peer", deleted=True), rec(ms=T0 + 500, writer="peer", ttl_ms=1_000)):
        s = TtlStore("me")
        e, ch = s.write("g", "a", addr="x:1", ttl_ms=1_000, now_ms=T0)
        assert ch == [Change("g", "a", e)]
        assert s.merge([late], now_ms=T0 + 2_000) == [Change("g", "a", None)]
        assert s.expire(now_ms=T0 + 2_000) == []
    # and a refresh of such an entry is no Change (the catalog still holds it)
    s = TtlStore("me")
    s.write("g", "a", addr="x:1", ttl_ms=1_000, now_ms=T0)
    assert s.write("g", "a", addr="x:1", ttl_ms=1_000, now_ms=T0 + 2_000)[1] == []
    assert s.expire(now_ms=T0 + 2_000) == []


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 3_000), st.sampled_from(["r1", "r2"]),
                          st.booleans(), st.sampled_from([1_000, 2_000, 30_000])), min_size=1, max_size=40),
       st.randoms(use_true_random=False), st.integers(0, 4_000))
def test_merge_is_commutative_and_idempotent(specs: list[tuple[str, int, str, bool, int]], rnd: random.Random,
                                             late: int) -> None:
    """The same records in any order, batching and repetition leave two stores with the same records,
    digests and live sets (records expired on arrival included)."""
    # One record per stamp and id, as writers make them (a writer stamps each write of an id later than
    # the last it held); the one exception, an entry and the tombstone its expiry turns it into, is the
    # expired-on-arrival case, which the `late` instant covers.
    unique = {(id, ms, w): (d, ttl) for id, ms, w, d, ttl in reversed(specs)}
    recs = [rec(id, ms=T0 + ms, writer=w, deleted=d, ttl_ms=ttl) for (id, ms, w), (d, ttl) in unique.items()]
    now = T0 + late
    a, b = TtlStore("x"), TtlStore("y")
    a.merge(recs, now_ms=now)
    shuffled = recs + rnd.sample(recs, len(recs) // 2)
    rnd.shuffle(shuffled)
    i = 0
    while i < len(shuffled):
        n = rnd.randint(1, 5)
        b.merge(shuffled[i:i + n], now_ms=now)
        i += n
    assert sorted(a.records("g"), key=lambda e: e.id) == sorted(b.records("g"), key=lambda e: e.id)
    assert a.digest() == b.digest() and a.live("g", now_ms=now) == b.live("g", now_ms=now)
    for e in a.records("g"):  # each held record is the newest stamp sent for its id
        assert e.stamp == max(r.stamp for r in recs if r.id == e.id)
