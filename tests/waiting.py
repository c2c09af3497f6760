"""Waiting on a condition with a deadline, the suite's one polling loop (tests never sleep a fixed
time: the machine may be slow, and a fixed sleep is either too short there or wasted here).

The poll starts at 1 ms and doubles to 10 ms: a condition that is already close answers at once,
a long wait costs ~100 cheap checks a second.  tests/e2e/helpers.py's `wait_for` is the tolerant
variant for processes that are still coming up (it retries through exceptions)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

__all__ = ["aeventually", "eventually"]

_FIRST_POLL = 0.001
_MAX_POLL = 0.01


def _timed_out(what: str, timeout: float) -> AssertionError:
    return AssertionError(f"{what} not reached within {timeout:.1f}s")


def eventually(pred: Callable[[], object], timeout: float = 30.0, what: str = "condition") -> float:
    """Poll `pred` until it is true; the seconds that took.  AssertionError naming `what` after
    `timeout` seconds; an exception from `pred` is the test's failure (not retried)."""
    start = time.monotonic()
    delay = _FIRST_POLL
    while not pred():
        if time.monotonic() - start > timeout:
            raise _timed_out(what, timeout)
        time.sleep(delay)
        delay = min(delay * 2, _MAX_POLL)
    return time.monotonic() - start


async def aeventually(pred: Callable[[], object], timeout: float = 30.0, what: str = "condition") -> float:
    """`eventually` on the running loop: the loop keeps serving while it waits."""
    start = time.monotonic()
    delay = _FIRST_POLL
    while not pred():
        if time.monotonic() - start > timeout:
            raise _timed_out(what, timeout)
        await asyncio.sleep(delay)
        delay = min(delay * 2, _MAX_POLL)
    return time.monotonic() - start
