"""A heap of one-shot timers with lazy cancellation, for sans-I/O cores."""

from __future__ import annotations

import heapq
from collections.abc import Callable

__all__ = ["Clock", "TimerHeap"]


class TimerHeap:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callable[[float], None]]] = []
        self._live: set[int] = set()
        self._seq = 0

    def schedule(self, at: float, fn: Callable[[float], None]) -> int:
        self._seq += 1
        heapq.heappush(self._heap, (at, self._seq, fn))
        self._live.add(self._seq)
        return self._seq

    def cancel(self, handle: int | None) -> None:
        if handle is not None:
            self._live.discard(handle)

    def clear(self) -> None:
        self._heap.clear()
        self._live.clear()

    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap and heap[0][1] not in self._live:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def run_due(self, now: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, ident, fn = heapq.heappop(heap)
            if ident in self._live:
                self._live.discard(ident)
                fn(now)


class Clock:
    """The core's current time, one object its parts share.

    Time only enters a sans-I/O core with its inputs; the core sets `now` once per input and
    every part reads the same value, instead of each keeping its own copy or a reference to
    the whole core."""

    __slots__ = ("now",)

    def __init__(self, now: float = 0.0) -> None:
        self.now = now
