"""User events (docs/wire.md §13, serf.go's UserEvent/handleUserEvent, coalesce_user.go).

A user event is gossiped to every member at most once per node: each node keeps the events
of the last `event_buffer` Lamport times in a ring (`event_clock` orders them) and drops what
it has seen or what is too old for the ring.  The ring also travels in push/pull, so a node
that missed the gossip still gets recent events.  Events sent with `coalesce` can be held
back briefly and only the newest per name delivered (`Coalescer`).
"""

from __future__ import annotations

import collections
from collections.abc import Callable

from registry.memberlist.timers import TimerHeap

from . import messages as msgs
from .clock import LamportRing
from .config import SerfConfig
from .events import Event, UserEvent

__all__ = ["USER_EVENT_HARD_LIMIT", "Coalescer", "UserEvents"]

#: Go's hard cap on a user event's name + payload, whatever the configured limit
USER_EVENT_HARD_LIMIT = 9 * 1024


class Coalescer:
    """Holds coalescable user events: per event name only the newest LTime's events are
    delivered, when `period` ends or nothing new came for `quiet` (Go's coalesce loop).

    Serf's `agent` turns this on (3 s / 1 s) so a burst of deploy events runs one handler."""

    def __init__(
        self,
        period: float,
        quiet: float,
        *,
        timers: TimerHeap,
        now: Callable[[], float],
        stats: collections.Counter[str],
        emit: Callable[[Event], None],
    ) -> None:
        self._period = period
        self._quiet = quiet or period
        self._timers = timers
        self._now = now
        self._stats = stats
        self._emit = emit
        self._held: dict[str, list[UserEvent]] = {}
        self._period_end: int | None = None
        self._quiet_end: int | None = None

    def add(self, ev: UserEvent) -> None:
        held = self._held.get(ev.name)
        if held is None or ev.ltime > held[0].ltime:
            self._held[ev.name] = [ev]
        elif ev.ltime == held[0].ltime:
            held.append(ev)
        else:
            self._stats["events.coalesced"] += 1
            return
        if self._period_end is None:
            self._period_end = self._timers.schedule(self._now() + self._period, self._flush)
        self._timers.cancel(self._quiet_end)
        self._quiet_end = self._timers.schedule(self._now() + self._quiet, self._flush)

    def _flush(self, _now: float) -> None:
        self._timers.cancel(self._period_end)
        self._timers.cancel(self._quiet_end)
        self._period_end = self._quiet_end = None
        held, self._held = self._held, {}
        for events in held.values():
            for ev in events:
                self._emit(ev)


def _entries(slot: msgs.UserEventSlot) -> list[msgs.UserEventEntry]:
    return slot.events


class UserEvents:
    """The event clock, the ring of recent events, and sending (see module docstring)."""

    def __init__(
        self,
        config: SerfConfig,
        *,
        stats: collections.Counter[str],
        emit: Callable[[Event], None],
        coalescer: Coalescer | None,
        broadcast: Callable[[bytes], None],
    ) -> None:
        """`coalescer` None: every event is delivered at once; `broadcast` gossips a message."""
        self.config = config
        self._ring: LamportRing[msgs.UserEventSlot, msgs.UserEventEntry] = LamportRing(
            config.event_buffer, lambda ltime: msgs.UserEventSlot(ltime, []), _entries, stats, "events.too_old"
        )
        #: orders user events
        self.clock = self._ring.clock
        self._emit = emit
        self._coalescer = coalescer
        self._broadcast = broadcast

    def send(self, name: str, payload: bytes, coalesce: bool) -> None:
        """Send a user event (Serf's size checks raise ValueError)."""
        limit = self.config.user_event_size_limit
        size = len(name.encode()) + len(payload)
        if size > limit:
            raise ValueError(f"user event exceeds configured limit of {limit} bytes before encoding")
        if size > USER_EVENT_HARD_LIMIT:
            raise ValueError(f"user event exceeds sane limit of {USER_EVENT_HARD_LIMIT} bytes before encoding")
        msg = msgs.UserEventMsg(self.clock.time(), name, bytes(payload), coalesce)
        raw = msgs.encode(msg)
        if len(raw) > limit:
            raise ValueError(f"encoded user event exceeds configured limit of {limit} bytes after encoding")
        self.clock.increment()
        self.handle(msg)
        self._broadcast(raw)

    def handle(self, msg: msgs.UserEventMsg) -> bool:
        """Deliver an event not seen before; True when it is news (to be passed on)."""
        if not self._ring.record(msg.ltime, msgs.UserEventEntry(msg.name, msg.payload)):
            return False
        ev = UserEvent(msg.ltime, msg.name, msg.payload, msg.cc)
        if msg.cc and self._coalescer is not None:
            self._coalescer.add(ev)
        else:
            self._emit(ev)
        return True

    def slots(self) -> list[msgs.UserEventSlot | None]:
        """The ring, for our push/pull state."""
        return list(self._ring.slots)

    def merge(self, pp: msgs.PushPullState, ignore_old: bool) -> None:
        """A peer's recent events; with `ignore_old` (a join that asked for it) none older
        than the peer's event clock is delivered, then or later."""
        if ignore_old and pp.event_ltime > self._ring.min_time:
            self._ring.min_time = pp.event_ltime
        for slot in pp.events:
            if slot is None:
                continue
            for entry in slot.events:
                self.handle(msgs.UserEventMsg(slot.ltime, entry.name, entry.payload, False))
