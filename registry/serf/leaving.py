"""The local node's graceful leave, in stages (docs/wire.md §9.3, §12.2; serf.go's Leave).

Peers must learn *leaving* before they see the node die, or they report a failure: so the
leave intent is gossiped first (until sent its full retransmit count, or `broadcast_timeout`),
then memberlist's own dead{me} (until sent, or `broadcast_timeout`), then the node waits
`leave_propagate_delay` for gossip to carry both before it calls itself left.  Unlike Go, the
first copies of each go out at once instead of at the next gossip tick.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

from registry.memberlist.broadcast import TransmitLimitedQueue
from registry.memberlist.core import Memberlist
from registry.memberlist.timers import TimerHeap

from .broadcasts import SerfBroadcasts
from .config import SerfConfig

__all__ = ["LeaveSequence", "LeaveStage"]


class LeaveStage(enum.IntEnum):
    NONE = 0
    #: our leave intent is queued; memberlist's leave waits until it was sent
    INTENT_QUEUED = 1
    #: memberlist's dead{me} is being gossiped
    MEMBERLIST_LEAVE = 2
    #: both sent: waiting `leave_propagate_delay` before calling ourselves left
    PROPAGATING = 3


class LeaveSequence:
    """Drives the stages above on the core's timers (see module docstring)."""

    def __init__(
        self,
        config: SerfConfig,
        memberlist: Memberlist,
        *,
        timers: TimerHeap,
        outbox: SerfBroadcasts,
        leaving: Callable[[], bool],
        on_left: Callable[[], None],
    ) -> None:
        """`leaving` says whether the node still is (a shutdown ends the sequence);
        `on_left` runs once at the end."""
        self.config = config
        self._memberlist = memberlist
        self._timers = timers
        self._outbox = outbox
        self._leaving = leaving
        self._on_left = on_left
        self.stage = LeaveStage.NONE
        self._deadline = 0.0

    def begin(self, intent: bytes, has_peers: bool) -> None:
        """Start with our encoded leave intent; alone in the pool, nobody needs to hear it."""
        now = self._memberlist.now
        self.stage = LeaveStage.INTENT_QUEUED
        self._deadline = now + self.config.broadcast_timeout
        if has_peers:
            q: TransmitLimitedQueue = self._outbox.intents
            self._outbox.queue(q, intent, self._intent_sent)
            self._timers.schedule(self._deadline, self._step)
            self._memberlist.gossip_now(now)
        else:
            self._timers.schedule(now, self._step)

    def _intent_sent(self) -> None:
        self._timers.schedule(self._memberlist.now, self._step)

    def _step(self, now: float) -> None:
        if not self._leaving():
            return
        if self.stage == LeaveStage.INTENT_QUEUED:
            self.stage = LeaveStage.MEMBERLIST_LEAVE
            self._memberlist.leave(now)
            self._deadline = now + self.config.broadcast_timeout
            self._timers.schedule(now, self._step)
        elif self.stage == LeaveStage.MEMBERLIST_LEAVE:
            if self._memberlist.leave_done() or now >= self._deadline:
                self.stage = LeaveStage.PROPAGATING
                self._timers.schedule(now + self.config.leave_propagate_delay, self._step)
            else:
                self._timers.schedule(now + self._memberlist.config.gossip_interval, self._step)
        elif self.stage == LeaveStage.PROPAGATING:
            self._on_left()
