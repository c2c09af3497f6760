"""Pieces shared by the sync and asyncio clients: addresses, conversions, local checks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc

from registry.client.errors import InvalidArgument, RegistryError, Unavailable
from registry.client.types import Service, TlsConfig
from registry.v1 import registry_pb2 as pb

__all__ = [
    "CHANNEL_OPTIONS",
    "DEFAULT_TIMEOUT",
    "FAILOVER_CODES",
    "check_match",
    "parse_addresses",
    "tls_from",
    "to_service",
    "unavailable",
]

DEFAULT_TIMEOUT = 5.0
MAX_MATCH_N = 1000  # same limit as the server (registry.rpc.MAX_MATCH_N)
FAILOVER_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})

CHANNEL_OPTIONS: Sequence[tuple[str, Any]] = (
    ("grpc.use_local_subchannel_pool", 1),  # own connection per client: failover is per client
    ("grpc.enable_retries", 0),  # we fail over ourselves, to another registry
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),  # keep pinging idle Watch streams
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 5_000),
)


def parse_addresses(addrs: str | Sequence[str]) -> list[str]:
    """'h:p', 'h1:p1,h2:p2' or a list of those -> ['h:p', ...]; raises ValueError if none."""
    items = [addrs] if isinstance(addrs, str) else list(addrs)
    out = [part.strip() for item in items for part in item.split(",") if part.strip()]
    if not out:
        raise ValueError("no registry address given")
    for a in out:
        host, sep, port = a.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"registry address {a!r} is not host:port")
        if not host:
            raise ValueError(f"registry address {a!r} has no host")
    return out


def tls_from(tls: TlsConfig | None, tls_cert: str | None, tls_key: str | None,
             tls_ca: str | None) -> TlsConfig | None:
    if tls is not None:
        if tls_cert or tls_key or tls_ca:
            raise ValueError("give either tls= or tls_cert/tls_key/tls_ca, not both")
        return tls
    if tls_cert or tls_key or tls_ca:
        return TlsConfig(ca=tls_ca, cert=tls_cert, key=tls_key)
    return None


def channel_options(tls: TlsConfig | None) -> list[tuple[str, Any]]:
    opts = list(CHANNEL_OPTIONS)
    if tls is not None and tls.server_name:
        opts.append(("grpc.ssl_target_name_override", tls.server_name))
    return opts


def to_service(s: pb.Service) -> Service:
    return Service(s.id, s.group, s.addr, dict(s.tags))


def check_match(group: str, key: str, n: int) -> None:
    """The server's argument checks, done locally when the answer comes from the cache."""
    if not group:
        raise InvalidArgument("Match: group is empty", group=group)
    if not key:
        raise InvalidArgument(f"Match (group {group!r}): key is empty", group=group)
    if n < 1 or n > MAX_MATCH_N:
        raise InvalidArgument(f"Match (group {group!r}): n={n} out of range 1..{MAX_MATCH_N}", group=group)


def unavailable(method: str, group: str, tried: list[tuple[str, str]]) -> RegistryError:
    where = f" (group {group!r})" if group else ""
    detail = "; ".join(f"{addr}: {why}" for addr, why in tried)
    return Unavailable(f"{method}{where}: no registry answered ({detail})", group=group,
                       addresses=[a for a, _ in tried])


def describe(err: grpc.RpcError) -> str:
    code = err.code()
    details = err.details()
    return f"{code.name} {details}" if details else str(code.name)
