"""Our own joins in flight (serf.go's Join): which push/pulls belong to which join, and what
merging a join's reply may do.

A join is one push/pull per address; when they have all ended and at least one succeeded,
Serf gossips its join intent.  While a join's reply is being merged, two things differ from
a periodic push/pull: events older than the peer's event clock may be skipped (`ignore_old`),
and a conflict about our own name is known to come from the pool we are joining (`merging`).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PendingJoins"]


@dataclass
class _Join:
    pending: set[int]
    ignore_old: bool
    ok: int = 0


class PendingJoins:
    """Stream ids of our joins, and the flags that hold while one's reply merges."""

    def __init__(self) -> None:
        self._by_stream: dict[int, _Join] = {}
        #: every join push/pull's outcome, by stream id
        self.results: dict[int, bool] = {}
        #: a join's reply is being merged and asked to skip old events
        self.ignore_old = False
        #: a join's reply is being merged
        self.merging = False

    def add(self, stream_ids: list[int], ignore_old: bool) -> None:
        join = _Join(set(stream_ids), ignore_old)
        for sid in stream_ids:
            self._by_stream[sid] = join

    def begin(self, stream_id: int) -> _Join | None:
        """A push/pull ended: its join, if it was a join's, with the flags set until `end`."""
        join = self._by_stream.pop(stream_id, None)
        if join is not None:
            self.ignore_old = join.ignore_old
            self.merging = True
        return join

    def end(self) -> None:
        """The reply is merged (or refused)."""
        self.ignore_old = self.merging = False

    def record(self, join: _Join, stream_id: int, ok: bool) -> bool:
        """Record a join push/pull's outcome; True when it ended a join of which some
        push/pull succeeded (time to gossip our join intent)."""
        join.pending.discard(stream_id)
        if ok:
            join.ok += 1
        self.results[stream_id] = ok
        return not join.pending and join.ok > 0
