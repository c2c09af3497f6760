"""What a registry server's /metrics says: one scrape's lines, read off the parts the server owns.

Kept apart from `registry.server` so the server module is the lifecycle (start, join, membership into
the catalog, stop) and this one the reading of it; nothing here holds state between scrapes or starts
anything.  The optional parts (WAN pool, federation, HTTP front) arrive as objects or None: this module
imports none of them, so a registry without -wan-bind or -http-addr still never loads them.  The order
of the lines is the order a scrape has always shown (dashboards diff it).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from registry import healthtags
from registry.metrics import Metric, counters_by_key

if TYPE_CHECKING:
    from registry.catalog import Catalog
    from registry.federation.federation import Federation
    from registry.ttl.driver import TtlDriver
    from registry.wan import WanPool

__all__ = ["collect"]


def collect(*, catalog: Catalog, agent: Any, ttl: TtlDriver | None, wan: WanPool | None,
            federation: Federation | None, http: Any, grpc: Any, started_at: float,
            joined: bool, adapters: Any = None) -> Iterable[Metric]:
    """Every metric of one scrape.

    `agent` is the Serf agent (None before start or after close), `http` the HTTP front (None without
    -http-addr), `adapters` the AdapterHost (None without -adapter), `grpc` the gRPC front (its `stats` only the native one has; grpc.aio counts nothing),
    `started_at` the monotonic time start() finished (0 before), `joined` whether a seed answered.
    """
    yield from _catalog_metrics(catalog, agent)
    yield from _ttl_metrics(ttl)
    if wan is not None:
        yield from wan.metrics()
    if federation is not None:
        yield from federation.metrics()
    if http is not None:
        yield from http.metrics()
    if adapters is not None:
        yield from adapters.metrics()
    yield from _grpc_metrics(grpc)
    yield Metric(
        "registry_uptime_seconds",
        "Seconds since the server finished starting.",
        "gauge",
        [({}, time.monotonic() - started_at if started_at else 0.0)],
    )
    yield Metric("registry_joined", "1 once a seed answered (or none was given).", "gauge", [({}, float(joined))])


def _health_counts(catalog: Catalog, group: str) -> list[tuple[healthtags.Health, int]]:
    """(health, services) of `group`, every health listed (0 too: a gauge that vanishes is unplottable)."""
    counts = dict.fromkeys(healthtags.Health, 0)
    for s in catalog.members(group):
        counts[s.health] += 1
    return list(counts.items())


def _catalog_metrics(catalog: Catalog, agent: Any) -> Iterable[Metric]:
    """The catalog's groups, services and versions, and the LAN gossip pool that feeds it."""
    groups = catalog.groups()
    yield Metric(
        "registry_members",
        "Live services per group in this registry's catalog.",
        "gauge",
        [({"group": g}, float(len(catalog.members(g)))) for g in groups],
    )
    yield Metric("registry_groups", "Groups with at least one live service.", "gauge", [({}, float(len(groups)))])
    yield Metric("registry_services", "Live services per group by health (critical ones are in no ring).", "gauge",
                 [({"group": g, "health": h.word}, float(n)) for g in groups for h, n in _health_counts(catalog, g)])
    yield Metric("registry_health_changes_total", "Health changes of services, by the health changed to.",
                 "counter", [({"health": h.word}, float(catalog.health_changes[h.word])) for h in healthtags.Health])
    yield Metric(
        "registry_group_version",
        "Ring version per group (bumps on every membership change).",
        "counter",
        [({"group": g}, float(catalog.version(g))) for g in groups],
    )
    if agent is not None:
        by_status: dict[str, int] = {}
        for m in agent.members():
            by_status[str(m.status)] = by_status.get(str(m.status), 0) + 1
        yield Metric(
            "registry_gossip_members",
            "Gossip pool members by Serf status.",
            "gauge",
            [({"status": k}, float(v)) for k, v in sorted(by_status.items())],
        )
        gossip = counters_by_key("registry_gossip_events_total",
                                 "Gossip layer counters (drops per reason, messages, ...).",
                                 getattr(agent, "stats", None))
        if gossip is not None:
            yield gossip
    events = counters_by_key("registry_catalog_events_total",
                             "Catalog counters (tags ignored or rejected, listener errors, ...).",
                             getattr(catalog, "stats", None))
    if events is not None:
        yield events


def _ttl_metrics(ttl: TtlDriver | None) -> Iterable[Metric]:
    if ttl is None:
        return
    now = ttl.now_ms()
    yield Metric("registry_ttl_entries", "Live TTL services per group held by this registry.", "gauge",
                 [({"group": g}, float(len(ttl.store.live(g, now_ms=now)))) for g in ttl.store.groups()])
    events = counters_by_key("registry_ttl_events_total",
                             "TTL replication counters (store, replicator and driver: drops by reason, "
                             "merges, pushes, messages, ...).", ttl.counters())
    if events is not None:
        yield events


def _grpc_metrics(grpc: Any) -> Iterable[Metric]:
    """The native front's counters (`registry.native_stats.Stats`); nothing for grpc.aio or before start."""
    rpc_stats = getattr(grpc, "stats", None)
    if rpc_stats is None:
        return
    yield Metric("registry_grpc_connections_total", "gRPC connections accepted.", "counter",
                 [({}, float(rpc_stats.connections))])
    yield Metric("registry_grpc_calls_total", "gRPC calls received.", "counter", [({}, float(rpc_stats.calls))])
    yield Metric("registry_grpc_errors_total", "gRPC calls that ended with an error, by status code.",
                 "counter", [({"code": str(k)}, float(v)) for k, v in sorted(rpc_stats.errors.items())])
    yield Metric("registry_grpc_protocol_errors_total",
                 "Connections closed for an HTTP/2 protocol violation of the client.", "counter",
                 [({}, float(rpc_stats.protocol_errors))])
    yield Metric("registry_grpc_refusals_total",
                 "Connections closed or calls refused to protect the server, by reason.", "counter",
                 [({"reason": "preface_timeout"}, float(rpc_stats.preface_timeouts)),
                  ({"reason": "output_queue_full"}, float(rpc_stats.refused_streams)),
                  ({"reason": "internal_error"}, float(rpc_stats.internal_errors)),
                  ({"reason": "idle_timeout"}, float(rpc_stats.idle_timeouts)),
                  ({"reason": "connection_shed"}, float(rpc_stats.connections_shed)),
                  ({"reason": "connection_refused"}, float(rpc_stats.connections_refused)),
                  ({"reason": "accept_error"}, float(rpc_stats.accept_errors)),
                  ({"reason": "request_memory_budget"}, float(rpc_stats.over_budget)),
                  ({"reason": "request_timeout"}, float(rpc_stats.request_timeouts)),
                  ({"reason": "output_budget"}, float(rpc_stats.output_refused)),
                  ({"reason": "output_budget_shed"}, float(rpc_stats.output_shed)),
                  ({"reason": "watches_per_connection"}, float(rpc_stats.watches_refused)),
                  ({"reason": "watchers_per_server"}, float(grpc.core.watchers_refused))])
