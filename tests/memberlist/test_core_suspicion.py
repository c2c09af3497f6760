"""Lifeguard suspicion maths and awareness."""

from __future__ import annotations

import pytest

from registry.memberlist.awareness import Awareness
from registry.memberlist.config import Config, suspicion_timeout
from registry.memberlist.suspicion import Suspicion, suspicion_deadline


@pytest.mark.parametrize(
    "n,lo,hi,k",
    [(2, 4.0, 24.0, 0), (3, 4.0, 24.0, 0), (10, 4.0, 24.0, 2), (100, 8.0, 48.0, 2), (1000, 12.0, 72.0, 2)],
)
def test_lan_timeouts(n: int, lo: float, hi: float, k: int) -> None:
    assert suspicion_timeout(Config.lan(), n) == pytest.approx((lo, hi, k))


def test_timer_starts_at_max_and_shrinks_with_confirmations() -> None:
    s = Suspicion("a", k=2, lo=4.0, hi=24.0, start=100.0)
    assert s.deadline == 124.0
    assert not s.confirm("a")  # the accuser itself is not a confirmation
    assert s.confirm("b")
    # max - ln(2)/ln(3) * (max-min) = 24 - 0.6309*20 = 11.381 (floored to ms)
    assert s.deadline == pytest.approx(100 + 11.381)
    assert not s.confirm("b")
    assert s.confirm("c")
    assert s.deadline == pytest.approx(104.0)
    assert not s.confirm("d")  # at most k confirmations
    assert s.deadline == pytest.approx(104.0)


def test_no_expected_confirmations_uses_min() -> None:
    s = Suspicion("a", k=0, lo=4.0, hi=24.0, start=0.0)
    assert s.deadline == 4.0
    assert not s.confirm("b")
    assert suspicion_deadline(0.0, 0, 0, 4.0, 24.0) == 4.0


def test_awareness_bounds_and_scale() -> None:
    a = Awareness(8)
    a.apply_delta(-1)
    assert a.score == 0
    assert a.scale(1.0) == 1.0
    a.apply_delta(3)
    assert a.scale(0.5) == 2.0
    a.apply_delta(100)
    assert a.score == 7
