"""A registry server: a Serf member, a Catalog fed by its membership events, and the
gRPC API answering from that Catalog, all on one asyncio loop.

The server is itself a member of group "registry-group" (tags group, addr = the gRPC
address clients should dial, id), so clients and other registries can discover every
registry through any one of them.  Membership events update the catalog as they arrive;
a periodic reconcile against the member table repairs anything an event queue overflow
could have dropped, so the catalog never drifts for long.

Health (grpc.health.v1, `self.health`, served by either gRPC front) follows the server's life:
NOT_SERVING from the moment gRPC listens until the catalog is loaded from a pool, i.e. a seed
of `registries` answered the join and the member table it brought was reconciled into the
catalog; without `registries` the server forms a pool of one, and its (empty) catalog is loaded
once started, so it serves at once.  While no seed answers, the server keeps retrying and stays
NOT_SERVING (its catalog would show only itself).  NOT_SERVING again from the first moment of
`stop()` (SIGTERM), before the leave, so health checkers stop routing to it while it drains.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import structlog

from registry.addresses import UsageError, ip_literal, probe_tcp_port
from registry.addresses import format_hostport as _fmt
from registry.addresses import is_wildcard as _is_wildcard
from registry.memberlist.config import Config
from registry.metrics import Metric, MetricsServer
from registry.server_config import RPC_ENGINES, RpcEngine, ServerConfig
from registry.server_metrics import collect
from registry.tls import TlsFiles

if TYPE_CHECKING:
    from registry.adapters.host import AdapterHost
    from registry.federation.federation import Federation
    from registry.ttl.driver import TtlDriver
    from registry.wan import WanPool

__all__ = ["REGISTRY_GROUP", "RegistryServer", "ServerConfig", "StartError"]

REGISTRY_GROUP = "registry-group"

log = structlog.get_logger("registry.server")


class StartError(RuntimeError):
    """The server could not start (port taken, bad TLS files, ...); the message is one line for the operator."""


def _literal(host: str) -> str:
    """The IP literal for `host` (the gossip layer takes literal IPs only), or StartError."""
    try:
        return ip_literal(host)
    except UsageError as exc:
        raise StartError(str(exc)) from None


def _check_tcp_free(host: str, port: int, what: str) -> int:
    """Fail early, with a readable message, if host:port is taken; returns the port (picked if 0).

    A listener on the port (another registry, any process) makes this a clear start error
    rather than a port shared or a traceback from the front (`addresses.probe_tcp_port` says
    why the probe is set up as it is).
    """
    try:
        return probe_tcp_port(host, port)
    except OSError as exc:
        raise StartError(f"cannot listen for {what} on {_fmt(host, port)}: {exc.strerror or exc}") from None


class RegistryServer:
    """Owns the gossip agent, the catalog, the gRPC server and the optional metrics listener."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        from registry.catalog import Catalog
        from registry.health import Health

        self.catalog = Catalog(algorithm=config.hash, only_passing=config.only_passing)
        #: What grpc.health.v1 answers: see the module docstring (NOT_SERVING until ready).
        self.health = Health(serving=False)
        self.agent: Any = None
        self._grpc: Any = None
        self._metrics: MetricsServer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._grpc_port = config.addr[1]
        self._joined = not config.registries
        self._stopping = False
        #: Set when the server cannot go on (its -id is held by another live node, found by a join
        #: after start): the embedding program (the CLI) stops it and exits non-zero.
        self.failed = asyncio.Event()
        self.failure = ""
        self.started_at = 0.0
        self.gossip_address = ""
        self.grpc_address = ""
        #: The HTTP/JSON API (registry.http), with -http-addr; its address as the start log names it.
        self._http: Any = None
        self._pool: Any = None  # registry.http.pool.SerfPool, with -http-addr
        self.http_address = ""
        #: TTL services (registry/ttl): set in start() once gossip runs, before the join, on every
        #: registry (with or without the HTTP front): each holds and replicates the pool's entries.
        self.ttl: TtlDriver
        #: The WAN pool (registry.wan, issue 17), with -wan-bind only; its gossip address once started.
        self.wan: WanPool | None = None
        self.wan_address = ""
        #: The mirrors of the other datacenters (registry.federation, issue 17), with -wan-bind only.
        self.federation: Federation | None = None
        #: The adapters' host (registry.adapters, issue 18), with -adapter only.
        self.adapters: AdapterHost | None = None

    # -- lifecycle -----------------------------------------------------------------------

    def _memberlist_config(self) -> Config:
        c = self.config
        overrides: dict[str, Any] = {
            "name": c.id,
            "bind_addr": _literal(c.bind[0]),
            "bind_port": c.bind[1],
        }
        if c.bind_advertise is not None:
            if c.bind_advertise[0]:
                overrides["advertise_addr"] = _literal(c.bind_advertise[0])
            overrides["advertise_port"] = c.bind_advertise[1]
        try:
            return Config.profile(c.profile).replace(**overrides)
        except ValueError as exc:
            raise StartError(str(exc)) from None

    def _advertised_rpc(self, gossip_host: str) -> str:
        c = self.config
        if c.advertise:
            return c.advertise
        host = c.addr[0]
        if _is_wildcard(host):
            host = gossip_host
        return _fmt(host, self._grpc_port)

    def _tags(self, rpc_addr: str) -> dict[str, str]:
        tags = dict(self.config.tags)
        # repl=1: this registry holds and replicates TTL services (registry/ttl/driver.py)
        tags.update({"group": REGISTRY_GROUP, "addr": rpc_addr, "id": self.config.id, "repl": "1",
                     "dc": self.config.datacenter})
        return tags

    async def start(self) -> None:
        """Bind gRPC and gossip, join the seeds (retrying in the background), serve metrics."""
        c = self.config
        from registry.serf.agent import SerfAgent
        from registry.serf.config import SerfConfig

        if c.addr[1]:  # a port asked for: refuse a taken one before anything starts
            self._grpc_port = _check_tcp_free(c.addr[0], c.addr[1], "gRPC")
        guess_host = c.bind_advertise[0] if c.bind_advertise and c.bind_advertise[0] else c.bind[0]
        serf_cfg = SerfConfig(
            name=c.id,
            tags=self._tags(self._advertised_rpc(guess_host or "127.0.0.1")),
            memberlist=self._memberlist_config(),
            encrypt_key=c.encrypt_key,
            # a member that announced its departure must get no new keys: drop it from its
            # ring on the leave intent, not one or two gossip rounds later at memberlist's leave
            leaving_events=True,
        )
        if c.profile == "fast":
            # tests: reap departed members quickly too, so a restarted service comes back at once
            serf_cfg = serf_cfg.replace(reap_interval=1.0, reconnect_interval=2.0, leave_propagate_delay=0.2)
        self.agent = SerfAgent(serf_cfg)
        self.agent.add_handler(self._on_event)
        try:
            await self.agent.start()
        except OSError as exc:
            raise StartError(
                f"cannot bind gossip on {_fmt(c.bind[0], c.bind[1])}: {exc.strerror or exc}"
            ) from None
        except ValueError as exc:
            raise StartError(f"gossip: {exc}") from None
        from registry.ttl.driver import TtlDriver, repl_config

        # before the join: the registries it brings are new peers, each sent a digest at once
        self.ttl = TtlDriver(c.id, self.catalog, self.agent, group=REGISTRY_GROUP, config=repl_config(c.profile))
        # The front binds before the tags name its address: with port 0 the port is the one the
        # listener took, never a probe's (a port probed free could be taken by another process,
        # the machine being shared, before the front bound it: seen in CI with -addr :0).
        bind_rpc = _fmt(c.addr[0] or ("0.0.0.0"), self._grpc_port)
        try:
            if self.rpc_engine == "native":
                from registry.native import start_native

                self._grpc = await start_native(self.catalog, bind_rpc, tls=self._tls(), health=self.health)
            else:
                from registry.rpc import start_rpc

                self._grpc = await start_rpc(self.catalog, bind_rpc, tls=self._tls(), health=self.health)
        except StartError:
            raise
        except ValueError as exc:  # unusable TLS files, named by registry.tls
            raise StartError(str(exc)) from None
        except OSError as exc:
            raise StartError(str(exc)) from None
        except Exception as exc:  # noqa: BLE001 - whatever the gRPC front raises while binding is a start error
            raise StartError(f"cannot listen for gRPC on {bind_rpc}: {exc}") from None
        self._grpc_port = int(self._grpc.port)
        local = self.agent.local_member()
        self.gossip_address = _fmt(local.addr, local.port)
        rpc_addr = self._advertised_rpc(local.addr)
        if local.tags.get("addr") != rpc_addr:
            await self.agent.set_tags(self._tags(rpc_addr))
        self._reconcile()
        self.grpc_address = rpc_addr
        self._grpc.core.member_table = self._member_rows  # Members(all=true): every status, not just the rings
        self._grpc.core.datacenter = c.datacenter  # what a request's datacenter "" means (issue 17)
        self._grpc.core.export_groups = c.wan_export  # what a Watch(export=true) of another datacenter gets

        if c.metrics_addr is not None:
            self._metrics = MetricsServer(self._collect)
            try:
                await self._metrics.start(c.metrics_addr[0], c.metrics_addr[1])
            except OSError as exc:
                raise StartError(
                    f"cannot listen for metrics on {_fmt(*c.metrics_addr)}: {exc.strerror or exc}"
                ) from None

        if c.http_addr is not None:
            await self._start_http(c.http_addr, local.addr)
        if c.wan_bind is not None:
            await self._start_wan(c.wan_bind, rpc_addr)
        if c.adapters:
            from registry.adapters.host import AdapterHost  # only with -adapter

            self.adapters = AdapterHost(self.catalog, c.adapters, datacenter=c.datacenter, registry_id=c.id)
            self.adapters.start()
        self.started_at = time.monotonic()
        if c.registries:
            await self._try_join()  # StartError: our -id is taken
            if not self._joined:
                self._tasks.append(asyncio.create_task(self._rejoin_loop()))
        else:
            self.ttl.synced_now()  # no peer: nothing to wait for
            self._serve()  # a pool of one, its catalog reconciled above
        self._tasks.append(asyncio.create_task(self._reconcile_loop()))

    @property
    def rpc_engine(self) -> RpcEngine:
        """The gRPC front this server runs ("native" or "grpcio"); an embedder's config is checked here."""
        engine = self.config.rpc_engine
        if engine not in RPC_ENGINES:
            raise StartError(f"rpc engine {engine!r}: use native or grpcio")
        return engine

    async def _start_http(self, addr: tuple[str, int], gossip_host: str) -> None:
        """The HTTP front on the gRPC front's core (the same answers), aiohttp imported only now."""
        from registry.http.front import HttpFront
        from registry.http.pool import SerfPool

        c = self.config
        self._pool = SerfPool(self.agent)  # the web page's /v1/pool: bumped by _on_event
        self._http = HttpFront(self._grpc.core, self.health, ttl=lambda: getattr(self, "ttl", None),
                               token=c.http_token, ttl_default_ms=c.ttl_default_ms, tls=self._tls(),
                               pool=self._pool)
        try:
            port = await self._http.start(addr[0], addr[1])
        except ValueError as exc:  # unusable TLS files, named by registry.tls
            raise StartError(str(exc)) from None
        except OSError as exc:
            raise StartError(f"cannot listen for HTTP on {_fmt(*addr)}: {exc.strerror or exc}") from None
        self.http_address = _fmt(gossip_host if _is_wildcard(addr[0]) else addr[0], port)

    async def _start_wan(self, bind: tuple[str, int], rpc_addr: str) -> None:
        """The WAN pool (registry.wan imported only now), after the LAN agent; -wan-join retried in the background."""
        from registry.wan import WanPool

        c = self.config
        try:
            self.wan = WanPool(ident=c.id, datacenter=c.datacenter, rpc_addr=rpc_addr, bind=bind,
                               advertise=c.wan_advertise, encrypt_key=c.wan_encrypt_key, profile=c.profile,
                               retry=c.rejoin_interval)
            await self.wan.start()
        except OSError as exc:
            raise StartError(f"cannot bind WAN gossip on {_fmt(*bind)}: {exc.strerror or exc}") from None
        except ValueError as exc:  # a bad key or address of an embedder's config (the CLI checks them)
            raise StartError(f"wan: {exc}") from None
        self.wan_address = self.wan.address
        self.wan.join_in_background(list(c.wan_join))
        # The mirrors of the other datacenters (registry.federation imported only now, grpcio with it),
        # handed to the API's core, which the HTTP front shares.
        from registry.federation.federation import server_federation

        self.federation = server_federation(self.wan, c, self.catalog)
        self._grpc.core.federation = self.federation

    def _tls(self) -> TlsFiles | None:
        c = self.config
        if not c.tls_cert:
            return None
        return TlsFiles(cert=c.tls_cert, key=c.tls_key, ca=c.tls_ca or None)

    async def _try_join(self) -> None:
        try:
            timeout = 2 * self.agent.config.memberlist.tcp_timeout + 5.0
            n = await asyncio.wait_for(self.agent.join(list(self.config.registries)), timeout)
        except Exception as exc:  # noqa: BLE001 - a failed join is retried, whatever the cause
            log.warning("join failed; will retry", seeds=self.config.registries, error=str(exc) or type(exc).__name__)
            return
        if n and n > 0:
            holder = self.agent.core.name_taken_by
            if holder is not None:
                # The seeds kept a live node of our name and refused our alive: serving under a name
                # the pool gives to another node would answer for it.  No leave (it would be read as
                # the holder leaving): the caller closes us.
                raise StartError(f"-id {self.config.id!r} is taken by {_fmt(holder.addr, holder.port)} "
                                 "(alive in the pool); pick another -id or stop that registry")
            self._joined = True
            log.info("joined the pool", contacted=n)
            self._reconcile()  # the member table the seeds sent, into the catalog now
            # TTL services come from the peers by replication, not with the member table: SERVING once
            # they are here (at once without a peer speaking it; bounded by the driver)
            if self.ttl.synced_now():
                self._serve()
            else:
                self._tasks.append(asyncio.create_task(self._serve_when_synced()))
        else:
            log.warning("no seed answered; will retry", seeds=self.config.registries)

    async def _serve_when_synced(self) -> None:
        """SERVING once the TTL services of the peers are here (`TtlDriver.wait_synced`, bounded)."""
        await self.ttl.wait_synced()
        self._serve()

    def _serve(self) -> None:
        """Health says SERVING: the catalog is loaded (never once stopping: shutdown latched it)."""
        if not self._stopping and not self.health.serving:
            self.health.set_serving(True)
            ttl = self.ttl
            now = ttl.now_ms()
            log.info("health: serving", services=sum(len(self.catalog.members(g)) for g in self.catalog.groups()),
                     ttl_services=sum(len(ttl.store.live(g, now_ms=now)) for g in ttl.store.groups()))

    def _interval(self, configured: float, default_lan: float) -> float:
        if configured > 0:
            return configured
        return 1.0 if self.config.profile == "fast" else default_lan

    async def _rejoin_loop(self) -> None:
        delay = self._interval(self.config.rejoin_interval, 5.0)
        while not self._joined and not self._stopping:
            await asyncio.sleep(delay)
            if self._stopping:
                return
            try:
                await self._try_join()
            except StartError as exc:
                log.error(str(exc))
                self.failure = str(exc)
                self.failed.set()
                return

    async def _reconcile_loop(self) -> None:
        delay = self._interval(self.config.reconcile_interval, 5.0)
        while not self._stopping:
            await asyncio.sleep(delay)
            try:
                self._reconcile()
                self.ttl.refresh_peers()  # repairs a dropped member event for replication too
            except Exception:  # never let a bookkeeping bug stop the server
                log.exception("reconcile failed")

    async def stop(self) -> None:
        """Leave the pool gracefully (bounded by leave_timeout), then shut everything down.

        Health says NOT_SERVING first: Watch streams are told while the leave runs, before the
        front closes their connections."""
        self._stopping = True
        self.health.shutdown()
        for t in self._tasks:
            t.cancel()
        await self._stop_federation()  # before the WAN pool leaves: no follower dials a leaving pool's peers
        # the WAN leave beside the LAN's (it never raises)
        wan_leave = asyncio.ensure_future(self.wan.leave(self.config.leave_timeout)) if self.wan is not None else None
        if self.agent is not None:
            try:
                await asyncio.wait_for(self.agent.leave(self.config.leave_timeout), self.config.leave_timeout + 1.0)
            except Exception as exc:  # noqa: BLE001 - shutdown goes on whatever leave() raises
                log.warning("leave did not finish cleanly", error=str(exc) or type(exc).__name__)
        if wan_leave is not None:
            await wan_leave
        await self.close()

    async def close(self) -> None:
        """Shut down without leaving (also used to clean up after a failed start)."""
        self._stopping = True
        self.health.shutdown()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(BaseException):
                await t
        self._tasks.clear()
        await self._stop_federation()
        host, self.adapters = self.adapters, None
        if host is not None:
            host.stop()
        if self._http is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._http.stop(), 5.0)
            self._http = None
        if self._grpc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._grpc.stop(0.5), 5.0)
            self._grpc = None
        if self._metrics is not None:
            with contextlib.suppress(Exception):
                await self._metrics.close()
            self._metrics = None
        ttl: TtlDriver | None = getattr(self, "ttl", None)
        if ttl is not None:
            ttl.close()
        if self.agent is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.agent.shutdown(), 5.0)
            self.agent = None
        if self.wan is not None:
            with contextlib.suppress(Exception):
                await self.wan.shutdown()
            self.wan = None

    async def _stop_federation(self) -> None:
        fed, self.federation = self.federation, None
        if fed is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(fed.close(), 5.0)

    # -- membership -> catalog ------------------------------------------------------------

    def _on_event(self, event: Any) -> None:
        from registry.serf.events import EventType, MemberEvent
        from registry.serf.member import MemberStatus

        if not isinstance(event, MemberEvent):
            return
        present = event.type in (EventType.MEMBER_JOIN, EventType.MEMBER_UPDATE)
        # One batch per event: a group's ring is updated once however many members the
        # event carries (a registry learning a whole cluster at start-up gets one bulk build).
        # Only `alive` members serve: one that is leaving (its intent came first; MEMBER_LEAVING,
        # or a join/update seen while leaving) is out of the ring until it refutes the intent.
        updates = [
            (m.name, dict(m.tags) if present and m.status == MemberStatus.ALIVE else None) for m in event.members
        ]
        try:
            self.catalog.apply_many(updates)
        except Exception:
            log.exception("catalog rejected a membership batch", members=[name for name, _ in updates])
        log.debug("membership", kind=event.type.value, members=[m.name for m in event.members])
        if self._pool is not None:
            self._pool.bump()
        ttl: TtlDriver | None = getattr(self, "ttl", None)
        if ttl is not None:
            try:
                ttl.members_changed(event.members)
            except Exception:
                log.exception("ttl peers not updated")

    def _member_rows(self) -> list[tuple[str, Mapping[str, str], str]]:
        """Every member of the pool in any status, with its status word (registry.api.MemberTable)."""
        agent = self.agent
        return [] if agent is None else [(m.name, m.tags, str(m.status)) for m in agent.members()]

    def _reconcile(self) -> None:
        """Make the catalog agree with the member table (repairs dropped events)."""
        from registry.catalog import ServiceKind
        from registry.serf.member import MemberStatus

        if self.agent is None:
            return
        alive = {m.name: dict(m.tags) for m in self.agent.members() if m.status == MemberStatus.ALIVE}
        known: dict[str, Mapping[str, str]] = {}
        for g in self.catalog.groups():
            for s in self.catalog.members(g):
                if s.kind is ServiceKind.GOSSIP:  # TTL services are the TTL driver's, not Serf's
                    known[s.id] = s.tags
        for name in known.keys() - alive.keys():
            self.catalog.apply(name, None)
        for name, tags in alive.items():
            if "group" in tags and dict(known.get(name, {})) != tags:
                self.catalog.apply(name, tags)

    # -- metrics --------------------------------------------------------------------------

    def _collect(self) -> Iterable[Metric]:
        """One /metrics scrape (`registry.server_metrics`), read off what this server runs now."""
        return collect(catalog=self.catalog, agent=self.agent, ttl=getattr(self, "ttl", None), wan=self.wan,
                       federation=self.federation, http=self._http, grpc=self._grpc, started_at=self.started_at,
                       joined=self._joined, adapters=self.adapters)
