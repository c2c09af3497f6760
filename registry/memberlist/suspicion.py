"""Lifeguard's suspicion timer ("LHA-Suspicion").

The timer starts at `max` and shrinks towards `min` as independent accusers
confirm the suspicion: many witnesses -> declare dead sooner; one lone (maybe
slow) accuser -> give the node time to refute.
"""

from __future__ import annotations

import math

__all__ = ["Suspicion", "suspicion_deadline"]


def suspicion_deadline(start: float, n: int, k: int, lo: float, hi: float) -> float:
    """When the timer fires after n confirmations out of k expected (Go's remainingSuspicionTime)."""
    if k < 1:
        return start + lo
    frac = math.log(n + 1.0) / math.log(k + 1.0)
    raw = hi - frac * (hi - lo)
    timeout = math.floor(1000.0 * raw) / 1000.0
    return start + max(lo, timeout)


class Suspicion:
    """One running suspicion about one node; the owner re-arms its timer at `deadline`."""

    def __init__(self, sender: str, k: int, lo: float, hi: float, start: float) -> None:
        self.k = k
        self.lo = lo
        self.hi = hi
        self.start = start
        self.n = 0
        self.confirmers: set[str] = {sender}
        self.deadline = start + (hi if k >= 1 else lo)

    def confirm(self, sender: str) -> bool:
        """Count a new independent accuser; True when it was new (and the deadline moved)."""
        if self.n >= self.k or sender in self.confirmers:
            return False
        self.confirmers.add(sender)
        self.n += 1
        self.deadline = suspicion_deadline(self.start, self.n, self.k, self.lo, self.hi)
        return True
