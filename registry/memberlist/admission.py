"""Admission of inbound gossip TCP streams: who may hold a slot, how many bytes, whom to shed.

Before a peer has sent one complete message it is unauthenticated (with `-encrypt` nothing
is verified until the whole frame has arrived), so an inbound stream is only a claim on our
resources.  Refusing newcomers when the slots are full would let anyone holding idle
connections lock every legitimate joiner out; instead, when a newcomer arrives at a full
table, we shed the oldest connection that has not completed a message from the source
holding the most slots (so a busy source cannot push out a quiet one).  A peer that completed
its message is past the pre-auth stage and is not shed while we answer it; but a peer that
leaves our reply unread for `GRACE` after its message (a legitimate one reads it at once, and
the kernel's buffers take a small reply whole) is stalled, and is shed first, oldest first,
so peers that complete a push/pull and then stop reading cannot lock joiners out either.  The
newcomer is refused only when every slot is held by a stream we answered less than `GRACE` ago.

A newcomer from a source at its own cap sheds that source's oldest incomplete stream, but
only one older than `GRACE`: a peer writes its message as soon as it is connected, so a
younger one is most likely just not read yet, and a burst of legitimate connects from one
address (services behind one NAT starting together) must not shed each other.  Over the cap
with only young streams, the newcomer is admitted if the table has room; the global rule,
which ignores age, then takes from that (heaviest) source first, so the soft cap cannot be
used to lock anyone out.

Bytes buffered for incomplete messages share one per-process budget: before a chunk is
buffered it is charged, and when the budget would overflow the incomplete stream holding the
most bytes is shed (possibly the one charging), so a few announced 19 MB messages cannot grow
the process by hundreds of megabytes while small legitimate messages still fit.

Pure bookkeeping with no I/O: both drivers (asyncio `inbound` and `threaded_streams`) keep
one of these inside a `gate.Gate`, which counts and logs its decisions and closes whatever it
names.  Every table is bounded by `max_streams`, and every
decision costs O(max_streams).
"""

from __future__ import annotations

import enum
import errno
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from .config import Config

__all__ = [
    "ACCEPT_BATCH",
    "GRACE",
    "NO_FD_BACKOFF",
    "NO_FD_ERRNOS",
    "Admission",
    "Shed",
    "first_message_timeout",
    "make_admission",
]

K = TypeVar("K", bound=Hashable)

#: Seconds during which an incomplete stream is spared by the per-source and out-of-descriptor
#: rules (not by the global one): it has most likely just not been read yet.
GRACE = 1.0
#: accept() failures that mean "no descriptor or memory for one more connection".
NO_FD_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
#: Connections accepted per readiness event before other work gets a turn (the backlog).
ACCEPT_BATCH = 128
#: How long accepting pauses when out of descriptors and nothing may be shed.
NO_FD_BACKOFF = 0.1


def first_message_timeout(config: Config) -> float:
    """Seconds from accept for the first complete message: the pre-auth deadline."""
    return min(config.inbound_message_timeout, config.tcp_timeout)


def make_admission(config: Config) -> Admission[Any]:
    """The admission table a driver keeps for its inbound streams, from the node's config."""
    return Admission(
        max_streams=config.max_concurrent_push_pulls,
        max_per_source=config.max_inbound_streams_per_source,
        max_buffered=config.max_inbound_buffered,
    )


class Shed(enum.Enum):
    """Why a stream was closed by admission (the suffix of its `tcp.in.shed.*` counter)."""

    SOURCE = "source"  # its source reached max_per_source and a newcomer from it arrived
    GLOBAL = "global"  # the table was full and a newcomer arrived
    BUDGET = "budget"  # the bytes buffered across all streams would exceed the budget
    NO_FD = "no_fd"  # the process ran out of file descriptors while a newcomer waited


@dataclass(slots=True)
class _Entry:
    source: str
    since: float
    buffered: int = 0
    complete: bool = False
    completed_at: float = 0.0


class Admission(Generic[K]):
    """Slots and buffered bytes of the inbound streams of one node, keyed by the driver's
    connection object.  Streams named in a returned shed list are already forgotten here;
    the caller closes them (a later `release` of them is a no-op)."""

    def __init__(self, *, max_streams: int, max_per_source: int, max_buffered: int, grace: float = GRACE) -> None:
        if max_streams < 1 or max_per_source < 1 or max_buffered < 1:
            raise ValueError("inbound stream limits must be at least 1")
        self.max_streams = max_streams
        self.max_per_source = min(max_per_source, max_streams)
        self.max_buffered = max_buffered
        self.grace = grace
        self._entries: dict[K, _Entry] = {}  # insertion order = age, oldest first
        self._by_source: dict[str, dict[K, None]] = {}
        self._buffered = 0

    # -- views ----------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    @property
    def buffered(self) -> int:
        """Bytes currently charged to incomplete messages, across all streams."""
        return self._buffered

    def from_source(self, source: str) -> int:
        return len(self._by_source.get(source, ()))

    # -- decisions ------------------------------------------------------------------------

    def admit(self, key: K, source: str, now: float = 0.0) -> tuple[bool, list[tuple[K, Shed]]]:
        """Take a slot for a new stream from `source` (an IP), accepted at `now`.  Returns
        (admitted, shed): the streams shed to make room; not admitted when the table is full
        and every stream has completed its message, or when its source is at its cap with
        only completed streams."""
        if key in self._entries:
            raise ValueError("stream admitted twice")
        shed: list[tuple[K, Shed]] = []
        if self.from_source(source) >= self.max_per_source:
            keys = self._by_source[source]
            victim = self._oldest_stalled(keys, now) or self._oldest_incomplete(keys)
            if victim is None:
                return False, shed
            if now - self._entries[victim].since >= self.grace:
                self._forget(victim)
                shed.append((victim, Shed.SOURCE))
        if len(self._entries) >= self.max_streams:
            victim = self._oldest_stalled(self._entries, now) or self._global_victim()
            if victim is None:
                return False, shed
            self._forget(victim)
            shed.append((victim, Shed.GLOBAL))
        self._entries[key] = _Entry(source, now)
        self._by_source.setdefault(source, {})[key] = None
        return True, shed

    def charge(self, key: K, nbytes: int) -> list[tuple[K, Shed]]:
        """Account `nbytes` more buffered by `key` (call before buffering them).  Returns the
        streams shed to stay within the budget; if `key` is among them, do not buffer."""
        entry = self._entries.get(key)
        if entry is None or entry.complete:
            return []
        shed: list[tuple[K, Shed]] = []
        while self._buffered + nbytes > self.max_buffered:
            victim = self._largest_incomplete(key, nbytes)
            if victim is None:  # pragma: no cover - `key` itself is always a candidate
                break
            self._forget(victim)
            shed.append((victim, Shed.BUDGET))
            if victim == key:
                return shed
        entry.buffered += nbytes
        self._buffered += nbytes
        return shed

    def complete(self, key: K, now: float = 0.0) -> None:
        """`key` delivered its message at `now`: its bytes leave the budget (the driver hands
        them to the machine at once) and it is shed only once it has left our reply unread
        for `grace`."""
        entry = self._entries.get(key)
        if entry is None or entry.complete:
            return
        self._buffered -= entry.buffered
        entry.buffered = 0
        entry.complete = True
        entry.completed_at = now

    def release(self, key: K) -> None:
        """The stream closed (for whatever reason)."""
        if key in self._entries:
            self._forget(key)

    def shed_for_fd(self, now: float) -> K | None:
        """Out of file descriptors with a newcomer waiting: the stream to close so it can be
        accepted (the global victim), or None when nothing may be shed.  Streams younger than
        the grace are spared: one accepted a moment ago has likely not been read yet, and
        shedding it for the next newcomer would churn a burst of legitimate connects."""
        victim = self._global_victim()
        if victim is not None and now - self._entries[victim].since >= self.grace:
            self._forget(victim)
            return victim
        return None

    # -- internals ------------------------------------------------------------------------

    def _oldest_incomplete(self, keys: dict[K, None] | dict[K, _Entry]) -> K | None:
        for k in keys:
            if not self._entries[k].complete:
                return k
        return None

    def _oldest_stalled(self, keys: dict[K, None] | dict[K, _Entry], now: float) -> K | None:
        """The oldest completed stream whose reply has waited unread for `grace` or more."""
        for k in keys:
            e = self._entries[k]
            if e.complete and now - e.completed_at >= self.grace:
                return k
        return None

    def _global_victim(self) -> K | None:
        """The oldest incomplete stream of the source holding the most slots (so one busy
        source cannot push out a quiet one); else the oldest incomplete stream anywhere."""
        heaviest = max(self._by_source.values(), key=len, default=None)
        if heaviest is not None:
            victim = self._oldest_incomplete(heaviest)
            if victim is not None:
                return victim
        return self._oldest_incomplete(self._entries)

    def _largest_incomplete(self, key: K, nbytes: int) -> K | None:
        best: K | None = None
        most = -1
        for k, e in self._entries.items():
            if e.complete:
                continue
            held = e.buffered + (nbytes if k == key else 0)
            if held > most:
                best, most = k, held
        return best

    def _forget(self, key: K) -> None:
        entry = self._entries.pop(key)
        self._buffered -= entry.buffered
        keys = self._by_source[entry.source]
        del keys[key]
        if not keys:
            del self._by_source[entry.source]
