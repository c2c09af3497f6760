"""The pool as the web page's overview shows it: every gossip member, its status, and the RTT to it.

Why a Protocol the front is given and not the Serf agent itself: the front also runs without gossip (a
catalog behind it only, as tests/http's `front`), and the page needs four things of the pool, not the
agent's whole surface: this registry's name, the member table (any status), a Vivaldi RTT estimate to a
member, and a counter of member events to block on. `SerfPool` is that view over a `SerfAgent`; the server
builds it (only with `-http-addr`) and bumps it from its member-event handler.

No aiohttp here: the server imports this module only when it starts the HTTP front anyway.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["PoolMember", "PoolView", "SerfPool"]


@dataclass(frozen=True)
class PoolMember:
    """One row of the member table: what `/v1/pool` lists of a member."""

    name: str
    addr: str
    port: int
    status: str  # alive, leaving, left, failed (Serf's words)
    tags: Mapping[str, str]
    protocol: int


class PoolView(Protocol):
    """What `/v1/pool` reads of the gossip pool."""

    @property
    def local_name(self) -> str: ...

    @property
    def events(self) -> int:
        """Member events seen (join, leave, fail, update, reap): bumps on each, never goes back."""

    def members(self) -> list[PoolMember]: ...

    def rtt_ms(self, name: str) -> float | None:
        """Vivaldi's estimate of the round trip to `name` in ms; None when unknown (or `name` is us)."""

    def on_event(self, callback: Callable[[], None]) -> None:
        """Have `callback()` called after each bump, on the loop."""


class SerfPool:
    """`PoolView` over a `registry.serf.agent.SerfAgent`, bumped by the server on every member event."""

    def __init__(self, agent: Any) -> None:
        self.agent = agent
        self._events = 0
        self._listeners: list[Callable[[], None]] = []

    @property
    def local_name(self) -> str:
        return str(self.agent.core.name)

    @property
    def events(self) -> int:
        return self._events

    def bump(self) -> None:
        """A member event happened (the server's event handler, on the loop)."""
        self._events += 1
        for callback in self._listeners:
            callback()

    def on_event(self, callback: Callable[[], None]) -> None:
        self._listeners.append(callback)

    def members(self) -> list[PoolMember]:
        return [PoolMember(m.name, m.addr, m.port, str(m.status), dict(m.tags), m.protocol_cur)
                for m in self.agent.members()]

    def rtt_ms(self, name: str) -> float | None:
        core = self.agent.core
        if name == core.name:
            return None
        other = core.coord_cache.get(name)
        if other is None:
            return None
        mine = core.get_coordinate()
        if not mine.compatible(other):
            return None
        return float(mine.distance(other)) * 1000.0
