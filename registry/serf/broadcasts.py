"""Serf's outgoing gossip: three retransmit-limited queues riding in memberlist's packets
(docs/wire.md §7, §10).

Serf keeps intents, queries and user events in separate queues (Go's broadcasts,
queryBroadcasts, eventBroadcasts) and fills memberlist's piggyback space in that order, so a
burst of events cannot delay a leave intent.  Each queue is bounded (`max_queue_depth`): the
oldest messages beyond it are pruned and counted (`broadcasts.pruned`) rather than let grow.
"""

from __future__ import annotations

import collections
from collections.abc import Callable

from registry.memberlist.broadcast import TransmitLimitedQueue

__all__ = ["SerfBroadcasts"]


class SerfBroadcasts:
    """The three queues and how they share a packet (see module docstring)."""

    def __init__(self, retransmit_mult: int, max_depth: int, stats: collections.Counter[str]) -> None:
        self.intents = TransmitLimitedQueue(retransmit_mult)
        self.events = TransmitLimitedQueue(retransmit_mult)
        self.queries = TransmitLimitedQueue(retransmit_mult)
        self._max_depth = max_depth
        self._stats = stats

    def queue(
        self, q: TransmitLimitedQueue, raw: bytes, on_done: Callable[[], None] | None = None
    ) -> None:
        """Queue `raw` on `q`; `on_done` runs once it was sent its full retransmit count."""
        q.queue(None, raw, on_done)
        if len(q) > self._max_depth:
            self._stats["broadcasts.pruned"] += len(q) - self._max_depth
            q.prune(self._max_depth)

    def get(self, overhead: int, limit: int, n_members: int) -> list[bytes]:
        """Messages for one packet: intents first, then queries, then events (memberlist's
        `get_broadcasts`; retransmits sized by memberlist's member count, as in Go)."""
        out: list[bytes] = []
        for q in (self.intents, self.queries, self.events):
            used = sum(len(m) + overhead for m in out)
            if limit - used <= overhead:
                break
            out.extend(q.get_broadcasts(overhead, limit - used, n_members))
        return out
