"""Plain values the client hands out and takes in (no protobuf types leak to callers)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import grpc

from registry.client.errors import InvalidArgument

__all__ = ["Datacenter", "Service", "TlsConfig"]


@dataclass(frozen=True)
class Service:
    """One service. Hashable on (id, group, addr); equality also compares the other fields.

    `status` is the member's Serf status ("alive", "leaving", "left", "failed") in what
    `members(group, all=True)` returns, and "" everywhere else: Match, Members without `all`
    and the cache hand out live services only, and their answers carry no status.

    `health` is what its checks say: "passing", "warning" or "critical" (a registry older than
    health routing says nothing: "passing"), and `health_note` why when not passing. Match
    never returns a critical service (nor a warning one from a registry run with
    -only-passing); members() lists it.

    `kind` is how it is in the pool: "gossip" (it gossips: a `Register`, a Go service) or "ttl"
    (registered over HTTP and held by the registries while refreshed); the values of
    `registry.catalog.ServiceKind`, which compares equal to them. "" from a registry older than
    TTL services. Both kinds are routed alike.

    `datacenter` is the datacenter whose registry (or mirror of it) answered, set when the call named
    one (`datacenter=`) or asked for `failover`; "" otherwise (the registry's own). `stale_seconds`:
    how long that registry has been without news of it (0.0: fresh; issue 17). Neither is part of the
    service's identity: they are not compared, so a service answered by dc1's mirror of dc2 equals
    the one dc2 answers itself."""

    id: str
    group: str
    addr: str
    tags: Mapping[str, str] = field(default_factory=dict, hash=False)
    status: str = field(default="", hash=False)
    health: str = field(default="passing", hash=False)
    health_note: str = field(default="", hash=False)
    kind: str = field(default="", hash=False)
    datacenter: str = field(default="", hash=False, compare=False)
    stale_seconds: float = field(default=0.0, hash=False, compare=False)
    #: The adapter that imported it (kind "external", issue 18: "file", "etcd", ...); "" for the pool's own.
    origin: str = field(default="", hash=False)


@dataclass(frozen=True)
class Datacenter:
    """A datacenter a registry knows over its WAN pool (`datacenters()`): its own (`local`) first.

    `stale_seconds`: since the registry lost every source of its copy (0.0: following it);
    `rtt_ms`: the lowest round-trip estimate to one of its registries (0.0: unknown, or local);
    `registries`: how many of its registries are alive in the WAN pool."""

    name: str
    local: bool
    stale_seconds: float
    rtt_ms: float
    registries: int


@dataclass(frozen=True)
class TlsConfig:
    """PEM file paths. `ca` verifies the server (system roots when None); cert+key for mutual TLS."""

    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    server_name: str | None = None  # override the name checked against the server certificate

    def __post_init__(self) -> None:
        if bool(self.cert) != bool(self.key):
            raise InvalidArgument("TLS client certificate and key go together (give both cert= and key=)")

    def credentials(self) -> grpc.ChannelCredentials:
        def read(path: str | None) -> bytes | None:
            if not path:
                return None
            with open(path, "rb") as f:
                return f.read()

        return grpc.ssl_channel_credentials(
            root_certificates=read(self.ca), private_key=read(self.key), certificate_chain=read(self.cert)
        )
