"""`Federation`: a registry's mirrors of every other datacenter, kept by one follower each (issue 17).

The server builds one only with -wan-bind, after the WAN pool, and hands it to the API as
`core.federation`; this module is the wiring between the pool and the mirrors, the rules being
theirs (`registry.wan` finds the registries, `mirror.Mirror` holds a copy, `follower.Follower`
keeps it current):

- every datacenter `WanPool.peers()` lists gets a `Mirror` and a `Follower` task at once (on each
  WAN member event, `WanPool.subscribe`, and every `tick` seconds in case one was missed); the
  follower's sources are that datacenter's alive registries' gRPC addresses, nearest first, read
  afresh on every call (so a registry that fails or leaves the WAN pool stops being followed);
- a datacenter whose registries are all gone keeps its mirror, stale, while its follower keeps
  trying; once no registry of it has been alive and the mirror has had no source for `mirror_ttl`
  seconds (-wan-mirror-ttl, 72 h by default as Serf's reconnect timeout), the mirror is dropped
  and the datacenter is unknown again (a registry of it coming back starts afresh);
- `subscribe(dc, cb)` forwards the changes of that mirror's catalog to `cb` **on this loop**, in the
  order they were made: the mirror applies events on its follower's worker thread, and a consumer
  on the loop (a Watch) then needs no lock.  A resync replaces the mirror's catalog whole; that
  swap is forwarded as one `GroupChange` per group that differs (members added, removed, or changed;
  for "chash" every member kept is `updated` when the insert order changed, in the new order).
  Versions never go back for a group, swap included (the mirror numbers the new catalog after the
  old): a consumer that snapshots `catalog(dc)` and skips changes not newer stays exact.

A follower dials with the registry's own TLS files when it serves TLS (-tls-cert/-tls-key as its
client certificate, -tls-ca as the CA the remote's certificate must chain to; the system roots
without -tls-ca): one PKI for a federation, as Consul's `verify_outgoing`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from registry.api_errors import NotSynced, UnknownDatacenter
from registry.catalog import REGISTRY_GROUP, Catalog, GroupChange, Service
from registry.federation.follower import Follower
from registry.federation.mirror import Drop, Mirror, MirrorLimits
from registry.metrics import Metric
from registry.serf.member import MemberStatus

if TYPE_CHECKING:
    from registry.server_config import ServerConfig

__all__ = ["MIRROR_TTL", "DatacenterInfo", "Federation", "server_federation"]

log = logging.getLogger(__name__)

#: Default -wan-mirror-ttl: Serf's reconnect_timeout (a failed WAN member is reaped after 72 h).
MIRROR_TTL = 72 * 3600.0


class _Peer(Protocol):
    datacenter: str
    rpc_addr: str
    status: MemberStatus
    rtt_ms: float | None


class _Pool(Protocol):
    """What a Federation reads from `registry.wan.WanPool`."""

    def peers(self) -> Mapping[str, list[Any]]: ...
    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]: ...


@dataclass(frozen=True)
class DatacenterInfo:
    """One datacenter as Groups lists it (`registry.v1.Datacenter`)."""

    name: str
    local: bool
    #: seconds since its mirror lost every source; 0 while following (and for the local one)
    stale_seconds: float
    #: the lowest RTT estimate to one of its alive registries, ms; None when unknown (or local)
    rtt_ms: float | None
    #: its registries alive in the WAN pool (the local one: in its LAN catalog's registry-group)
    registries: int
    #: a whole snapshot has been applied at least once (answers can be served)
    synced: bool


class _Remote:
    """One remote datacenter: its mirror, its follower task, its subscribers."""

    def __init__(self, mirror: Mirror, follower: Follower, task: asyncio.Task[None]) -> None:
        self.mirror = mirror
        self.follower = follower
        self.task = task
        self.subscribers: list[Callable[[GroupChange], None]] = []
        self.unsubscribe_catalog: Callable[[], None] = lambda: None


def _alive(peers: list[Any]) -> list[Any]:
    return [p for p in peers if p.status is MemberStatus.ALIVE]


def _diff(group: str, old: Catalog, new: Catalog) -> GroupChange | None:
    """`group`'s change from `old` to `new` (None: the same members, the same order)."""
    before = old.members(group)
    after = new.members(group)
    was = {s.id: s for s in before}
    now = {s.id: s for s in after}
    added = [s for s in after if s.id not in was]
    removed = [s for s in before if s.id not in now]
    if new.algorithm == "chash" and [s.id for s in before if s.id in now] != [s.id for s in after if s.id in was]:
        updated = [s for s in after if s.id in was]  # re-inserted in the new order
    else:
        updated = [s for s in after if s.id in was and not _same(was[s.id], s)]
    if not (added or removed or updated):
        return None
    return GroupChange(group, new.version(group), added, removed, updated)


def _same(a: Service, b: Service) -> bool:
    return a == b


class Federation:
    """Mirrors of every other datacenter of the WAN pool; see the module docstring.

    Made and `start`ed on the registry's loop; `close()` before the WAN pool leaves.
    `client_opts` go to each follower's `AsyncRpcClient` (TLS files, timeout); `follower_opts` to each
    `Follower` (retry, probe, check)."""

    def __init__(self, pool: _Pool, *, local: str, local_catalog: Catalog | None = None,
                 mirror_ttl: float = MIRROR_TTL, tick: float = 1.0,
                 clock: Callable[[], float] = time.monotonic,
                 client_opts: Mapping[str, Any] | None = None,
                 follower_opts: Mapping[str, Any] | None = None,
                 mirror_limits: MirrorLimits | None = None) -> None:
        if not 0 < mirror_ttl < math.inf:
            raise ValueError(f"mirror_ttl must be a positive number of seconds, not {mirror_ttl!r}")
        if not tick > 0:
            raise ValueError(f"tick must be > 0, not {tick!r}")
        self.local = local
        self.pool = pool
        self.local_catalog = local_catalog
        self.mirror_ttl = mirror_ttl
        self.tick = min(tick, mirror_ttl / 4)
        self.clock = clock
        self._client_opts = dict(client_opts or {})
        self._follower_opts = dict(follower_opts or {})
        #: What each remote datacenter's stream may make this registry hold (`MirrorLimits`).
        self.mirror_limits = mirror_limits if mirror_limits is not None else MirrorLimits()
        self._remotes: dict[str, _Remote] = {}
        #: mirrors dropped after mirror_ttl (by datacenter), for /metrics
        self.dropped_mirrors: dict[str, int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._unsubscribe_pool: Callable[[], None] | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._closed = False

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Follow every datacenter the pool lists now, and every one it lists later."""
        self._loop = asyncio.get_running_loop()
        self._unsubscribe_pool = self.pool.subscribe(self.sync)
        self._ticker = asyncio.ensure_future(self._tick())
        self.sync()

    async def close(self) -> None:
        """Stop every follower (their mirrors go with them)."""
        self._closed = True
        if self._unsubscribe_pool is not None:
            self._unsubscribe_pool()
            self._unsubscribe_pool = None
        tasks = [r.task for r in self._remotes.values()]
        if self._ticker is not None:
            tasks.append(self._ticker)
            self._ticker = None
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(BaseException):
                await t
        for remote in self._remotes.values():
            remote.unsubscribe_catalog()
        self._remotes.clear()

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.tick)
            try:
                self.sync()
            except Exception:  # a bookkeeping bug must not end the federation
                log.exception("federation: sync failed")

    def sync(self) -> None:
        """Start following each datacenter the pool lists that has no mirror; drop the mirrors whose
        datacenter has had no alive registry, and no source, for `mirror_ttl` (on the loop)."""
        if self._closed:
            return
        peers = self.pool.peers()
        now = self.clock()
        for dc, rows in peers.items():
            if dc != self.local and dc not in self._remotes and _alive(rows):
                self._follow(dc)
        for dc, remote in list(self._remotes.items()):
            if remote.task.done() and not remote.task.cancelled():  # Follower.run ends only by a bug
                log.error("federation: the follower of %s ended (%r); restarting it", dc, remote.task.exception())
                remote.task = asyncio.ensure_future(remote.follower.run())
            if _alive(list(peers.get(dc, []))):
                continue
            stale = remote.mirror.stale_for(now)
            if stale is not None and stale >= self.mirror_ttl:
                self._drop(dc, stale)

    def _follow(self, dc: str) -> None:
        mirror = Mirror(dc, self.mirror_limits)
        follower = Follower(mirror, lambda: self._sources(dc), clock=self.clock, **self._follower_opts,
                            **self._client_opts)
        task = asyncio.ensure_future(follower.run())
        remote = _Remote(mirror, follower, task)
        self._remotes[dc] = remote
        remote.unsubscribe_catalog = mirror.catalog.subscribe(lambda change: self._forward(remote, change))
        mirror.on_publish = lambda old, new: self._published(remote, old, new)
        log.info("federation: following datacenter %s", dc)

    def _drop(self, dc: str, stale: float) -> None:
        remote = self._remotes.pop(dc)
        remote.task.cancel()
        remote.unsubscribe_catalog()
        self.dropped_mirrors[dc] = self.dropped_mirrors.get(dc, 0) + 1
        log.warning("federation: dropped the mirror of datacenter %s (no source for %.0f s, -wan-mirror-ttl %.0f s)",
                    dc, stale, self.mirror_ttl)
        # Its Watch subscribers: every group gone (a Watch of it then holds nothing, as the datacenter).
        catalog = remote.mirror.catalog
        for group in catalog.groups():
            members = catalog.members(group)
            change = GroupChange(group, catalog.version(group) + 1, [], members, [])
            for cb in list(remote.subscribers):
                self._call(cb, change)
        remote.subscribers.clear()

    def _sources(self, dc: str) -> list[str]:
        """`dc`'s alive registries' gRPC addresses, nearest first (the pool's order), read now."""
        return [p.rpc_addr for p in _alive(list(self.pool.peers().get(dc, [])))]

    # -- changes to subscribers ----------------------------------------------------------------

    def _forward(self, remote: _Remote, change: GroupChange) -> None:
        """A change of the mirror's catalog (on its applying thread), to the subscribers on the loop."""
        if remote.subscribers and self._loop is not None:
            self._loop.call_soon_threadsafe(self._deliver, remote, [change])

    def _published(self, remote: _Remote, old: Catalog, new: Catalog) -> None:
        """The mirror swapped its catalog (applying thread): follow the new one, tell the difference."""
        remote.unsubscribe_catalog()
        remote.unsubscribe_catalog = new.subscribe(lambda change: self._forward(remote, change))
        if not remote.subscribers or self._loop is None:
            return
        changes = [c for g in sorted(set(old.groups()) | set(new.groups())) if (c := _diff(g, old, new)) is not None]
        if changes:
            self._loop.call_soon_threadsafe(self._deliver, remote, changes)

    def _deliver(self, remote: _Remote, changes: list[GroupChange]) -> None:
        for change in changes:
            for cb in list(remote.subscribers):
                self._call(cb, change)

    @staticmethod
    def _call(cb: Callable[[GroupChange], None], change: GroupChange) -> None:
        try:
            cb(change)
        except Exception:  # one subscriber's bug must not starve the others
            log.exception("federation: subscriber failed")

    # -- the contract the API reads ------------------------------------------------------------

    def known(self) -> list[str]:
        """Every datacenter answers can be asked for: this one, then the others by name."""
        return [self.local, *sorted(self._remotes)]

    def _remote(self, dc: str) -> _Remote:
        remote = self._remotes.get(dc)
        if remote is None:
            raise UnknownDatacenter(f"unknown datacenter {dc!r} (known: {', '.join(self.known())})")
        return remote

    def catalog(self, dc: str) -> Catalog:
        """`dc`'s catalog: the local one for this datacenter (when given), else its mirror's.
        UnknownDatacenter (NOT_FOUND) when none is followed; NotSynced (UNAVAILABLE) before its
        first whole snapshot."""
        if dc == self.local and self.local_catalog is not None:
            return self.local_catalog
        mirror = self._remote(dc).mirror
        if mirror.sequences == 0:
            raise NotSynced(f"datacenter {dc!r} not synced yet")
        return mirror.catalog

    def stale_for(self, dc: str) -> float:
        """Seconds since `dc`'s mirror lost every source (0.0 while following, and for this datacenter)."""
        if dc == self.local:
            return 0.0
        stale = self._remote(dc).mirror.stale_for(self.clock())
        return 0.0 if stale is None else stale

    def _rtt(self, rows: list[Any]) -> float | None:
        known = [p.rtt_ms for p in _alive(rows) if p.rtt_ms is not None]
        return min(known) if known else None

    def nearest(self) -> list[str]:
        """The other datacenters with a synced mirror, nearest first by the lowest RTT estimate to one
        of their alive registries (unknown last), then by name."""
        peers = self.pool.peers()
        order: list[tuple[bool, float, str]] = []
        for dc, remote in self._remotes.items():
            if remote.mirror.sequences == 0:
                continue
            rtt = self._rtt(list(peers.get(dc, [])))
            order.append((rtt is None, rtt or 0.0, dc))
        return [dc for _, _, dc in sorted(order)]

    def datacenters(self) -> list[DatacenterInfo]:
        """This datacenter, then every followed one by name (what Groups lists)."""
        peers = self.pool.peers()
        local = len(self.local_catalog.members(REGISTRY_GROUP)) if self.local_catalog is not None else 0
        out = [DatacenterInfo(self.local, True, 0.0, None, local, True)]
        now = self.clock()
        for dc in sorted(self._remotes):
            mirror = self._remotes[dc].mirror
            rows = list(peers.get(dc, []))
            out.append(DatacenterInfo(dc, False, mirror.stale_for(now) or 0.0, self._rtt(rows), len(_alive(rows)),
                                      mirror.sequences > 0))
        return out

    def subscribe(self, dc: str, callback: Callable[[GroupChange], None]) -> Callable[[], None]:
        """`callback(change)` on the loop for every change of `dc`'s mirror (a resync's swap as
        per-group changes; a drop as every group removed); returns the unsubscribe.
        UnknownDatacenter when `dc` is not followed (this datacenter included: the core has its own)."""
        remote = self._remote(dc)
        remote.subscribers.append(callback)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                remote.subscribers.remove(callback)

        return unsubscribe

    def follower(self, dc: str) -> Follower:
        """`dc`'s follower (tests, operators: its source, switches, last error)."""
        return self._remote(dc).follower

    def mirror(self, dc: str) -> Mirror:
        return self._remote(dc).mirror

    # -- metrics --------------------------------------------------------------------------------

    def metrics(self) -> Iterator[Metric]:
        """Per datacenter followed: mirror size (and of a resync being built), staleness, synced, over
        its bounds, follower switches and streams, events dropped by reason; mirrors dropped after
        -wan-mirror-ttl."""
        now = self.clock()
        rows = sorted(self._remotes.items())
        yield Metric("registry_federation_mirror_services", "Services in the mirror of each other datacenter.",
                     "gauge", [({"datacenter": dc}, float(sum(len(r.mirror.catalog.members(g))
                                                               for g in r.mirror.catalog.groups())))
                               for dc, r in rows])
        yield Metric("registry_federation_mirror_synced",
                     "1 once the mirror of a datacenter holds a whole snapshot (answers can be served).", "gauge",
                     [({"datacenter": dc}, float(r.mirror.sequences > 0)) for dc, r in rows])
        yield Metric("registry_federation_mirror_building_services",
                     "Services in the catalog a resync of a datacenter builds aside (bounded as the served one).",
                     "gauge", [({"datacenter": dc}, float(r.mirror.building())) for dc, r in rows])
        yield Metric("registry_federation_mirror_over_limit",
                     "1 while a datacenter is over the mirror's bounds (its copy kept as it was, stale).", "gauge",
                     [({"datacenter": dc}, float(r.mirror.over_limit is not None)) for dc, r in rows])
        yield Metric("registry_federation_stale_seconds",
                     "Seconds since the mirror of a datacenter lost every source (0 while following).", "gauge",
                     [({"datacenter": dc}, r.mirror.stale_for(now) or 0.0) for dc, r in rows])
        yield Metric("registry_federation_follower_switches_total",
                     "Times the follower of a datacenter moved to another of its registries.", "counter",
                     [({"datacenter": dc}, float(r.follower.switches)) for dc, r in rows])
        yield Metric("registry_federation_follower_streams_total",
                     "Watch streams the follower of a datacenter opened.", "counter",
                     [({"datacenter": dc}, float(r.follower.streams)) for dc, r in rows])
        yield Metric("registry_federation_dropped_events_total",
                     "Watch events of a datacenter the mirror refused, by reason.", "counter",
                     [({"datacenter": dc, "reason": reason.value}, float(r.mirror.dropped[reason]))
                      for dc, r in rows for reason in Drop if r.mirror.dropped[reason]])
        yield Metric("registry_federation_mirrors_dropped_total",
                     "Mirrors dropped after -wan-mirror-ttl without a source.", "counter",
                     [({"datacenter": dc}, float(n)) for dc, n in sorted(self.dropped_mirrors.items())])


def server_federation(pool: _Pool, config: ServerConfig, catalog: Catalog) -> Federation:
    """The registry server's Federation, started: its datacenter and catalog, -wan-mirror-ttl, its TLS
    files for the followers (module docstring), and with `-profile fast` (tests) quick timings: a dead
    source found within ~1 s, a failed pass retried within 0.2-2 s."""
    c = config
    client: dict[str, Any] = {}
    if c.tls_cert:
        client = {"tls_cert": c.tls_cert, "tls_key": c.tls_key, "tls_ca": c.tls_ca or None}
    fast = c.profile == "fast"
    follower: dict[str, Any] = {"probe": 1.0, "retry": 0.2, "max_retry": 2.0, "check": 0.2} if fast else {}
    federation = Federation(pool, local=c.datacenter, local_catalog=catalog, mirror_ttl=c.wan_mirror_ttl,
                            tick=0.2 if fast else 1.0, client_opts=client, follower_opts=follower)
    federation.start()
    return federation
