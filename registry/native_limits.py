"""The native gRPC front's limits: what one client, one source address and the whole process
may make the server hold, in one place so the README's Security section can quote it.

Why these numbers (measured on a 2-core loopback machine, see tests/registry/test_native_limits.py):
- `idle_timeout` 300 s: grpc's own servers never close an idle connection by default
  (grpc-go `MaxConnectionIdle` and grpc-core `grpc.max_connection_idle_ms` are infinite), and
  a client that calls once a minute should keep its connection. Five minutes frees abandoned
  and hostile connections without making well-behaved clients reconnect often; under pressure
  idle connections are shed at once anyway (oldest first), so the timeout is not the defence
  against a flood, the caps are.
- `max_connections`: the soft RLIMIT_NOFILE minus a reserve (gossip streams, metrics,
  logs: 256 descriptors, or 1/8 of the limit when that is more), and at most 16,384. An idle
  connection costs about 5 KiB of RSS here; a connection beyond the cap first sheds the oldest
  idle one, so a flood of idle connections can never lock a legitimate client out.
- `max_connections_per_source` 1,024: one address (a NAT may hide many clients) cannot
  take every slot; past it, that address's own oldest idle connection is shed.
- `memory_budget` 32 MiB: request bytes buffered across every connection (see `Budget`):
  past 3/4 of it no flow-control credit is returned (clients stall, nothing grows), past it
  the calls still receiving are refused. One call holds at most a maximal message (16 MiB
  and its prefix). Answers queued behind clients' closed windows have a budget of their own,
  `output_budget` 32 MiB, past which new calls of clients that leave answers unread are
  refused (REFUSED_STREAM, retryable; clients that read are still served), and past twice
  which a connection that grows its unread queue beyond 1 MiB is closed (GOAWAY
  ENHANCE_YOUR_CALM). One connection alone stops at 16 MiB (REFUSED_STREAM), as before.
- `request_timeout` 60 s: a unary or Watch request must be whole this long after its stream
  opened (a LAN sends 16 MiB in well under a second); a never-ended one is refused
  (RESOURCE_EXHAUSTED) and gives its budget back. Checked every half of it.
- `max_watches_per_connection` 100: a client watches a few groups per channel;
  `max_watchers` 10,000 for the whole server (registry.api.MAX_WATCHERS, both fronts).
"""

from __future__ import annotations

import asyncio
import resource
from dataclasses import dataclass
from typing import Protocol

from registry.api import MAX_WATCHERS

__all__ = ["IDLE_TIMEOUT", "MAX_CONNECTIONS", "MAX_PER_SOURCE", "MEMORY_BUDGET", "Budget", "Limits", "fd_connection_cap"]

IDLE_TIMEOUT = 300.0
MAX_CONNECTIONS = 16_384
MAX_PER_SOURCE = 1_024
MEMORY_BUDGET = 32 << 20
REQUEST_TIMEOUT = 60.0
MAX_WATCHES_PER_CONNECTION = 100


def fd_connection_cap(ceiling: int = MAX_CONNECTIONS) -> int:
    """Connections the open-file limit leaves room for, keeping a reserve for everything else."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return ceiling
    reserve = max(256, soft // 8)
    return max(16, min(ceiling, soft - reserve))


@dataclass(frozen=True)
class Limits:
    """Bounds of the native front; `max_connections=0` means "from the open-file limit" (at start)."""

    idle_timeout: float = IDLE_TIMEOUT
    max_connections: int = 0
    max_connections_per_source: int = MAX_PER_SOURCE
    memory_budget: int = MEMORY_BUDGET
    output_budget: int = MEMORY_BUDGET
    max_watches_per_connection: int = MAX_WATCHES_PER_CONNECTION
    request_timeout: float = REQUEST_TIMEOUT
    max_watchers: int = MAX_WATCHERS  # Watch streams of every connection together (registry.api)

    def connection_cap(self) -> int:
        return self.max_connections if self.max_connections > 0 else fd_connection_cap()


class Waiter(Protocol):
    def budget_freed(self) -> None:
        """Room in the budget again: credit what was held back."""


class Budget:
    """Request bytes buffered by every connection of one server, against `limit`.

    Below 3/4 of the limit, a call's received bytes are credited back to its client as they are
    buffered (up to one maximal message per call); above it, credit is held back (the client
    stalls on its flow-control windows, nothing grows) and the connection waits to be told
    `budget_freed`. Bytes already in flight (the windows granted earlier) may still arrive:
    past the limit itself, the call they belong to is refused (RESOURCE_EXHAUSTED) and its
    buffer dropped, so buffered request bytes never exceed `limit` for long, however many
    connections send them. A request that arrives whole in one read is consumed before it is
    counted: small calls never wait for the budget.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.credit_below = limit * 3 // 4
        self.used = 0
        self.peak = 0
        self._waiting: dict[Waiter, None] = {}
        self._wake: asyncio.Handle | None = None

    def add(self, delta: int) -> None:
        self.used += delta
        self.peak = max(self.peak, self.used)
        if delta < 0 and self._waiting and self._wake is None and self.used < self.credit_below:
            self._wake = asyncio.get_running_loop().call_soon(self._resume)

    @property
    def may_credit(self) -> bool:
        return self.used < self.credit_below

    @property
    def over(self) -> bool:
        return self.used > self.limit

    def wait(self, waiter: Waiter) -> None:
        self._waiting[waiter] = None

    def forget(self, waiter: Waiter) -> None:
        self._waiting.pop(waiter, None)

    def _resume(self) -> None:
        self._wake = None
        while self._waiting and self.may_credit:
            waiter = next(iter(self._waiting))
            del self._waiting[waiter]
            waiter.budget_freed()
