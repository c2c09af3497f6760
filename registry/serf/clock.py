"""Lamport clocks (docs/wire.md §12.1): Serf orders intents, events and queries by them, not by wall time; and the
ring of recent Lamport times that lets a gossiped message be handled once per node."""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

__all__ = ["LamportClock", "LamportRing"]

_MASK = (1 << 64) - 1


class LamportClock:
    """A 64-bit Lamport clock (Serf's `LamportClock`); like Go's uint64 it wraps at 2**64, so a
    hostile LTime of 2**64-1 cannot make our own messages unencodable."""

    __slots__ = ("_value",)

    def __init__(self, value: int = 0) -> None:
        self._value = value

    def time(self) -> int:
        return self._value

    def increment(self) -> int:
        """Advance by one and return the new value."""
        self._value = (self._value + 1) & _MASK  # uint64 wraps as in Go
        return self._value

    def witness(self, value: int) -> None:
        """Move past a time seen from another node (no change if we are already ahead)."""
        if value >= self._value:
            self._value = (value + 1) & _MASK

    def __repr__(self) -> str:
        return f"LamportClock({self._value})"


class _Slot(Protocol):
    ltime: int


S = TypeVar("S", bound=_Slot)
T = TypeVar("T")


class LamportRing(Generic[S, T]):
    """What was seen at each of the last `size` Lamport times of `clock` (Go's eventBuffer
    and queryBuffer): user events and queries are gossiped to every node and must be acted on
    once, so each node remembers them by time, in `size` slots reused modulo `size`.  Older
    ones cannot be told apart from new ones any more: they are refused and counted
    (`stats[too_old]`), as is anything before `min_time`."""

    def __init__(
        self,
        size: int,
        make_slot: Callable[[int], S],
        items: Callable[[S], list[T]],
        stats: collections.Counter[str],
        too_old: str,
    ) -> None:
        """`make_slot(ltime)` makes an empty slot; `items(slot)` is the list it keeps."""
        self.clock = LamportClock(1)
        self.slots: list[S | None] = [None] * size
        #: anything older is ignored (raised by a join that asked to skip old events)
        self.min_time = 0
        self._make_slot = make_slot
        self._items = items
        self._stats = stats
        self._too_old = too_old

    def record(self, ltime: int, item: T) -> bool:
        """Witness `ltime`; True (and `item` kept) when `item` is new at that time."""
        self.clock.witness(ltime)
        if ltime < self.min_time:
            return False
        size = len(self.slots)
        cur = self.clock.time()
        if cur > size and ltime < cur - size:
            self._stats[self._too_old] += 1
            return False
        idx = ltime % size
        slot = self.slots[idx]
        if slot is not None and slot.ltime == ltime:
            if item in self._items(slot):
                return False
        else:
            slot = self._make_slot(ltime)
            self.slots[idx] = slot
        self._items(slot).append(item)
        return True
