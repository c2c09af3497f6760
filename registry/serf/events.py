"""What the Serf layer tells the application: member changes, user events, queries, and the
bounded queue they wait in."""

from __future__ import annotations

import collections
import enum
from collections.abc import Callable
from dataclasses import dataclass, field

from .member import Member

__all__ = ["Event", "EventQueue", "EventType", "MemberEvent", "QueryEvent", "UserEvent"]


class EventType(enum.Enum):
    MEMBER_JOIN = "member-join"
    MEMBER_LEAVE = "member-leave"
    MEMBER_FAILED = "member-failed"
    MEMBER_UPDATE = "member-update"
    MEMBER_REAP = "member-reap"
    #: Not in Go's Serf, only with `SerfConfig.leaving_events`: a member announced its graceful
    #: departure (leave intent; status leaving).  Its MEMBER_LEAVE follows once memberlist sees
    #: it go; a member that refutes the intent comes back with a MEMBER_UPDATE (status alive).
    MEMBER_LEAVING = "member-leaving"
    USER = "user"
    QUERY = "query"


@dataclass(frozen=True)
class MemberEvent:
    type: EventType
    members: list[Member]


@dataclass(frozen=True)
class UserEvent:
    ltime: int
    name: str
    payload: bytes
    coalesce: bool
    type: EventType = EventType.USER


@dataclass
class QueryEvent:
    """A query to answer.  `respond` may be called once, before `deadline` (core clock);
    it returns False (and sends nothing) when the deadline passed, a response was already
    sent, or the response is too large."""

    ltime: int
    id: int
    name: str
    payload: bytes
    source_node: str
    deadline: float
    _respond: Callable[[bytes], bool] = field(repr=False, compare=False)
    type: EventType = EventType.QUERY

    def respond(self, payload: bytes) -> bool:
        return self._respond(payload)


Event = MemberEvent | UserEvent | QueryEvent


class EventQueue:
    """Events waiting for the application (`Serf.drain_events`).

    Bounded: when full the oldest event is dropped and counted (`events.dropped`), so a slow
    consumer never stalls gossip.  `wake` tells the driver there is something to hand out."""

    def __init__(
        self, limit: int, stats: collections.Counter[str], wake: Callable[[], None]
    ) -> None:
        self._limit = limit
        self._stats = stats
        self._wake = wake
        self._events: collections.deque[Event] = collections.deque()

    def emit(self, event: Event) -> None:
        if len(self._events) >= self._limit:
            self._events.popleft()
            self._stats["events.dropped"] += 1
        self._events.append(event)
        self._wake()

    def drain(self) -> list[Event]:
        out = list(self._events)
        self._events.clear()
        return out
