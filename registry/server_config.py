"""`ServerConfig`: what a registry server runs with.

Apart from `registry.server` (asyncio, structlog, the catalog, the gRPC fronts) so that the
`registry` command can build the server's configuration while it parses its flags, before it
decides how asyncio is imported (`cli._import_asyncio_without_ssl`), and report every mistake
as a usage error without loading any of that.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, get_args

from registry.memberlist.config import PROFILES, Profile  # gossip timing profiles, defined with their tables
from registry.ring.base import ALGORITHMS, Algorithm

if TYPE_CHECKING:
    from registry.adapters.base import Adapter

__all__ = ["HASHES", "PROFILES", "RPC_ENGINES", "Algorithm", "Profile", "RpcEngine", "ServerConfig"]

#: The gRPC fronts: "native" (registry.native: no grpcio in the process, several times faster
#: per call) or "grpcio" (registry.rpc on grpc.aio).
RpcEngine = Literal["native", "grpcio"]

# The flags' choices, from the types above (and the ring's own Algorithm): one list each.
RPC_ENGINES: tuple[RpcEngine, ...] = get_args(RpcEngine)
HASHES: tuple[str, ...] = ALGORITHMS


@dataclass
class ServerConfig:
    """What a `RegistryServer` runs with; the `registry` command builds one from its flags."""

    id: str
    bind: tuple[str, int] = ("", 7370)
    bind_advertise: tuple[str, int] | None = None
    addr: tuple[str, int] = ("", 9800)
    advertise: str = ""
    registries: list[str] = field(default_factory=list)
    hash: Algorithm = "consistent"
    encrypt_key: str | None = None
    metrics_addr: tuple[str, int] | None = None
    tls_cert: str = ""
    tls_key: str = ""
    tls_ca: str = ""
    rpc_engine: RpcEngine = "native"
    profile: Profile = "lan"
    leave_timeout: float = 5.0
    #: Extra tags for this server's member (group/addr/id always win).
    tags: dict[str, str] = field(default_factory=dict)
    #: Seconds between retries when no seed answered the join (0 = derive from the profile).
    rejoin_interval: float = 0.0
    #: Seconds between catalog/member-table reconciles (0 = derive from the profile).
    reconcile_interval: float = 0.0
    #: Warning services are out of the rings too, not only critical ones (the -only-passing flag).
    only_passing: bool = False
    #: The HTTP/JSON API's listen address (the -http-addr flag; None: no HTTP front, aiohttp never imported).
    http_addr: tuple[str, int] | None = None
    #: The token writes (PUT, DELETE) must carry (-http-token, or read from -http-token-file); "" = none.
    http_token: str = ""
    #: The liveness of a TTL registration that names none (-ttl-default; hera's 300 s), in ms.
    ttl_default_ms: int = 300_000
    #: This registry's datacenter (-datacenter): its `dc` tag, and its side of the WAN pool.
    datacenter: str = "dc1"
    #: The WAN pool's gossip bind address (-wan-bind; None: no WAN pool, registry.wan never imported).
    wan_bind: tuple[str, int] | None = None
    #: The WAN gossip address told to the other datacenters (-wan-advertise; None: derived from wan_bind).
    wan_advertise: tuple[str, int] | None = None
    #: WAN gossip addresses of registries of other datacenters (-wan-join), retried until one answers.
    wan_join: list[str] = field(default_factory=list)
    #: The WAN pool's own key (-wan-encrypt; base64 like encrypt_key, never the LAN one).
    wan_encrypt_key: str | None = None
    #: Seconds a remote datacenter's mirror is kept once none of its registries is alive and its follower
    #: has had no source (-wan-mirror-ttl; Serf's reconnect timeout, 72 h), then dropped.
    wan_mirror_ttl: float = 72 * 3600.0
    #: The groups other datacenters may follow (-wan-export; None: every group). registry-group never.
    wan_export: frozenset[str] | None = None
    #: Adapters (issue 18, registry.adapters), each run on its own thread (-adapter; `loader.load_all`
    #: builds them). Empty: registry.adapters is never imported.
    adapters: list[Adapter] = field(default_factory=list)
