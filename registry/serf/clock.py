"""Lamport clocks: Serf orders intents, events and queries by them, not by wall time."""

from __future__ import annotations

__all__ = ["LamportClock"]

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
