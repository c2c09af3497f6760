"""TimerHeap alone: one-shot timers with lazy cancellation (timers.py), which every part of
the memberlist core schedules on."""

from __future__ import annotations

from registry.memberlist.timers import TimerHeap


def test_due_timers_run_in_time_order_and_cancelled_ones_never() -> None:
    heap = TimerHeap()
    ran: list[tuple[str, float]] = []
    heap.schedule(2.0, lambda t: ran.append(("b", t)))
    first = heap.schedule(1.0, lambda t: ran.append(("a", t)))
    cancelled = heap.schedule(0.5, lambda t: ran.append(("x", t)))
    heap.schedule(2.0, lambda t: ran.append(("c", t)))  # same time: in scheduling order
    heap.cancel(cancelled)
    heap.cancel(None)  # "no timer" is accepted
    assert heap.next_deadline() == 1.0  # the cancelled head is skipped
    heap.run_due(0.9)
    assert ran == []
    heap.run_due(2.0)
    assert ran == [("a", 2.0), ("b", 2.0), ("c", 2.0)] and heap.next_deadline() is None
    heap.cancel(first)  # cancelling a timer that already ran is harmless
    assert heap.next_deadline() is None


def test_a_timer_may_schedule_another_that_is_already_due() -> None:
    heap = TimerHeap()
    ran: list[float] = []

    def again(now: float) -> None:
        ran.append(now)
        if len(ran) < 3:
            heap.schedule(now, again)  # a periodic timer rescheduling itself at once

    heap.schedule(1.0, again)
    heap.run_due(1.0)
    assert ran == [1.0, 1.0, 1.0] and heap.next_deadline() is None


def test_clear_forgets_everything() -> None:
    heap = TimerHeap()
    ran: list[float] = []
    heap.schedule(1.0, ran.append)
    heap.clear()
    heap.run_due(5.0)
    assert ran == [] and heap.next_deadline() is None
