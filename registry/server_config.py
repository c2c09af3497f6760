"""`ServerConfig`: what a registry server runs with.

Apart from `registry.server` (asyncio, structlog, the catalog, the gRPC fronts) so that the
`registry` command can build the server's configuration while it parses its flags, before it
decides how asyncio is imported (`cli._import_asyncio_without_ssl`), and report every mistake
as a usage error without loading any of that.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["ServerConfig"]


@dataclass
class ServerConfig:
    """What a `RegistryServer` runs with; the `registry` command builds one from its flags."""

    id: str
    bind: tuple[str, int] = ("", 7370)
    bind_advertise: tuple[str, int] | None = None
    addr: tuple[str, int] = ("", 9800)
    advertise: str = ""
    registries: list[str] = field(default_factory=list)
    hash: str = "consistent"
    encrypt_key: str | None = None
    metrics_addr: tuple[str, int] | None = None
    tls_cert: str = ""
    tls_key: str = ""
    tls_ca: str = ""
    #: "native" (registry.native: no grpcio in the process, several times faster per call)
    #: or "grpcio" (registry.rpc on grpc.aio).
    rpc_engine: str = "native"
    profile: str = "lan"
    leave_timeout: float = 5.0
    #: Extra tags for this server's member (group/addr/id always win).
    tags: dict[str, str] = field(default_factory=dict)
    #: Seconds between retries when no seed answered the join (0 = derive from the profile).
    rejoin_interval: float = 0.0
    #: Seconds between catalog/member-table reconciles (0 = derive from the profile).
    reconcile_interval: float = 0.0
