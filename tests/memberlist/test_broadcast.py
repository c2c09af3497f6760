"""TransmitLimitedQueue: ordering, fitting, invalidation, retransmit limits."""

from __future__ import annotations

from registry.memberlist.broadcast import TransmitLimitedQueue, retransmit_limit


def test_retransmit_limit_values() -> None:
    assert retransmit_limit(4, 1) == 4
    assert retransmit_limit(4, 9) == 4
    assert retransmit_limit(4, 10) == 8
    assert retransmit_limit(4, 99) == 8
    assert retransmit_limit(4, 100) == 12
    assert retransmit_limit(4, 0) == 0


def test_largest_first_within_tier_and_fit() -> None:
    q = TransmitLimitedQueue(4)
    q.queue("a", b"x" * 10)
    q.queue("b", b"y" * 50)
    q.queue("c", b"z" * 30)
    got = q.get_broadcasts(2, 85, 5)
    # 50+2 fits, then 30+2 fits (84), 10+2 would not
    assert got == [b"y" * 50, b"z" * 30]
    # next call: the untransmitted one comes first
    got = q.get_broadcasts(2, 13, 5)
    assert got == [b"x" * 10]


def test_lower_transmit_count_first() -> None:
    q = TransmitLimitedQueue(4)
    q.queue("old", b"o" * 40)
    assert q.get_broadcasts(2, 100, 5) == [b"o" * 40]
    q.queue("new", b"n" * 20)
    assert q.get_broadcasts(2, 30, 5) == [b"n" * 20]
    assert q.get_broadcasts(2, 45, 5) == [b"o" * 40]


def test_same_key_replaces_and_notifies() -> None:
    q = TransmitLimitedQueue(4)
    done: list[str] = []
    q.queue("node1", b"first", lambda: done.append("first"))
    q.queue("node1", b"second", lambda: done.append("second"))
    q.queue(None, b"u1")
    q.queue(None, b"u2")
    assert len(q) == 3
    assert done == ["first"]
    got = q.get_broadcasts(0, 1000, 1)
    assert b"first" not in got and b"second" in got and b"u1" in got and b"u2" in got


def test_dropped_after_limit_and_on_done() -> None:
    q = TransmitLimitedQueue(2)
    done: list[int] = []
    q.queue("k", b"m", lambda: done.append(1))
    n = 5  # limit = 2 * ceil(log10(6)) = 2
    assert q.get_broadcasts(0, 100, n) == [b"m"]
    assert done == [] and len(q) == 1
    assert q.get_broadcasts(0, 100, n) == [b"m"]
    assert done == [1] and len(q) == 0
    assert q.get_broadcasts(0, 100, n) == []


def test_newest_first_on_ties_and_prune() -> None:
    q = TransmitLimitedQueue(4)
    q.queue(None, b"aaa")
    q.queue(None, b"bbb")
    assert q.get_broadcasts(0, 3, 3) == [b"bbb"]
    q.prune(1)
    assert len(q) == 1
    assert q.get_broadcasts(0, 3, 3) == [b"aaa"]
