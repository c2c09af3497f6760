"""What a connection of the native gRPC front uses of its server, as a Protocol.

Why: `native_conn.Connection` and `native_calls.Calls` are made by `native.NativeServer` and read its
tables, limits and counters. Naming that surface here (instead of importing `NativeServer` for its type)
keeps the import graph one-way (native -> native_conn -> native_calls -> native_host), and says in one
place what a connection may touch of the shared state: every other field of the server is its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from registry.api import StreamMethod, UnaryMethod
    from registry.native_call import CallKind
    from registry.native_limits import Budget, Limits
    from registry.native_listen import ConnectionTable
    from registry.native_stats import Stats

__all__ = ["ServerSide"]


class ServerSide(Protocol):
    """The server state every connection of one native front shares."""

    #: Limits of the front (streams, budgets, timeouts).
    limits: Limits
    #: Counters reported as metrics.
    stats: Stats
    #: Open connections by source, idle or busy (the per-source and per-process caps).
    table: ConnectionTable
    #: Request bytes buffered by all connections together.
    budget: Budget
    #: Answer bytes waiting behind clients' flow-control windows, all connections together.
    queued: int
    #: Seconds a new connection has to send the HTTP/2 preface.
    preface_timeout: float
    unary: dict[str, UnaryMethod]
    streams: dict[str, StreamMethod]
    bidi: dict[str, Callable[[bytes], bytes]]

    #: The live connections (a connection adds and removes itself; typed loosely so this module needs
    #: no import of the connection class).
    connections: set[Any]

    def framed(self, message: bytes) -> bytes: ...

    def kind_of(self, path: str) -> CallKind | None: ...
