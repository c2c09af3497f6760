"""The HTTP front's connection caps, applied when a connection is accepted, before a byte of it is read.

Why the native gRPC front's `Listener` (accept() is ours, `registry.native_listen`) and not aiohttp's
`TCPSite`/`SockSite` with a wrapped protocol factory: a factory learns the peer only in `connection_made`,
after the TLS handshake with HTTPS, so a flood of handshakes would hold descriptors and CPU uncounted; and
asyncio's own accept loop logs and retries badly when descriptors run out (see `native_listen`). Here each
accepted socket is counted against a per-process and a per-source-address cap and, beyond either, closed at
once and counted (`connections_refused`): HTTP clients reconnect, and unlike gRPC's streams an HTTP/1.1
connection cannot be told to go away politely, so nothing is shed to make room. Idle keep-alive connections
are closed by aiohttp's keep-alive timeout (`Limits.keepalive_timeout`), not by the table.

`Connection` is aiohttp's `RequestHandler` (the HTTP/1.1 protocol) that also frees its slot when it ends.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from registry.native_limits import Limits as NativeLimits
from registry.native_limits import fd_connection_cap
from registry.native_listen import ConnectionTable

__all__ = ["Connection", "GateStats", "HttpTable", "connection_cap"]

#: Open HTTP connections per process at most (further bounded by the open-file limit, as gRPC's).
MAX_CONNECTIONS = 4_096
#: Per source address: a NAT may hide many clients, but one address cannot take every slot.
MAX_PER_SOURCE = 512


def connection_cap(configured: int = 0) -> int:
    return configured if configured > 0 else fd_connection_cap(MAX_CONNECTIONS)


@dataclass
class GateStats:
    """Counters of the listener (the names `native_listen.Counters` reads) and of the front."""

    connections: int = 0  # accepted and admitted
    connections_refused: int = 0  # closed at accept: a cap was reached
    accept_errors: int = 0
    idle_timeouts: int = 0  # unused here (aiohttp's keep-alive timeout closes idle ones)
    connections_shed: int = 0  # unused here (nothing is shed)


class HttpTable(ConnectionTable):
    """A ConnectionTable that refuses beyond its caps instead of shedding idle connections."""

    def __init__(self, max_connections: int, max_per_source: int, stats: GateStats) -> None:
        super().__init__(NativeLimits(max_connections=max_connections, max_connections_per_source=max_per_source),
                         stats)
        self.stats = stats
        self._sources: dict[str, int] = {}

    def admit(self, source: str) -> bool:
        if self.total >= self.cap or self._sources.get(source, 0) >= self.per_source:
            return False
        self.stats.connections += 1
        return True

    def add(self, peer: Any) -> None:
        before = self.total
        super().add(peer)
        if self.total != before:
            self._sources[peer.source] = self._sources.get(peer.source, 0) + 1

    def remove(self, peer: Any) -> None:
        before = self.total
        super().remove(peer)
        if self.total != before:
            left = self._sources[peer.source] - 1
            if left:
                self._sources[peer.source] = left
            else:
                del self._sources[peer.source]

    def set_idle(self, peer: Any) -> None:
        """No idle tracking: aiohttp's keep-alive timeout closes idle connections."""

    def shed_idle(self, n: int) -> int:
        return 0


class Connection(web.RequestHandler):
    """aiohttp's HTTP/1.1 protocol for one accepted socket, holding a slot of the table until it ends."""

    def __init__(self, manager: web.Server, table: HttpTable, source: str, **kwargs: Any) -> None:
        super().__init__(manager, loop=asyncio.get_running_loop(), **kwargs)
        self.table = table
        self.source = source

    def shed(self) -> None:
        """Close at once (the table's Peer interface; called only on the front's stop)."""
        self.force_close()
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: BaseException | None) -> None:
        self.table.remove(self)
        super().connection_lost(exc)
