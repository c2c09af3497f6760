"""Lifeguard's local health score ("LHA-Probe").

A node that misses nacks or gets accused is probably itself slow, so it
stretches its probe interval instead of falsely accusing others.
"""

from __future__ import annotations

__all__ = ["Awareness"]


class Awareness:
    def __init__(self, max_multiplier: int) -> None:
        self.max = max(1, max_multiplier)
        self.score = 0

    def apply_delta(self, delta: int) -> None:
        self.score = min(self.max - 1, max(0, self.score + delta))

    def scale(self, timeout: float) -> float:
        return timeout * (self.score + 1)
