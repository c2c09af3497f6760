"""The native gRPC front's counters: what a metrics scrape (registry.server) or a test reads,
including every refusal made to protect the server (see registry.native_limits)."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Stats"]


@dataclass
class Stats:
    """Counters a scrape or a test can read."""

    connections: int = 0
    calls: int = 0
    errors: dict[int, int] = field(default_factory=dict)  # grpc-status -> calls that ended with it
    protocol_errors: int = 0  # connections ended for an HTTP/2 violation
    compressed_requests: int = 0
    internal_errors: int = 0  # connections closed for a bug of ours (logged with a traceback)
    over_budget: int = 0  # calls refused because buffered requests reached the memory budget
    output_refused: int = 0  # calls refused because answers queued behind closed windows reached their budget
    output_shed: int = 0  # connections closed for queueing answers far past that budget without reading them
    refused_streams: int = 0  # calls refused while a connection had too much output queued
    preface_timeouts: int = 0  # connections closed for not starting HTTP/2 in time
    idle_timeouts: int = 0  # connections closed after the idle timeout with no open stream
    connections_shed: int = 0  # idle connections closed to make room for a new one
    connections_refused: int = 0  # connections closed at accept: a cap reached and nothing idle to shed
    accept_errors: int = 0  # accept() failures (EMFILE...): counted, not logged each time
    watches_refused: int = 0  # Watch calls refused by the per-connection cap
    request_timeouts: int = 0  # calls refused because their request was still not whole after request_timeout
    bidi_paused: int = 0  # times a bidi call stopped reading requests until its answers drained
