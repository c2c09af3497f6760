"""`WanPool`: the registries of every datacenter in one second gossip pool (issue 17).

Consul's design: the servers of each datacenter also join a WAN pool, with WAN timings (slower
probes, longer suspicion: a lost packet across an ocean is not a dead node) and their own key,
and find the other datacenters through it.  Services never join it; only registries do, so it
stays small (datacenters x registries) whatever the fleet.

A WAN pool is a second `SerfAgent` on the registry's loop, apart from the LAN one in everything
(port, key, member table, timings): a datacenter that cannot reach the others keeps its LAN
pool and its catalog unaffected.  Its member name is "<id>.<dc>" (ids are unique within a
datacenter only), its tags say which datacenter it is in ("dc"), where its gRPC API answers
("rpc") and that it is a registry ("role").  Serf's Vivaldi coordinates, carried in the WAN
probes' acks, estimate the round trip to each remote registry: `peers()` lists each remote
datacenter's registries alive first, nearest first, which is the order a follower of that
datacenter tries them in and, later, the order a failover picks datacenters in.

Only `registry.server` imports this module, and only when -wan-bind is given: a registry
without it pays nothing (no second agent, no import).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import structlog

from registry.addresses import format_hostport, ip_literal
from registry.datacenter import TAG_DATACENTER, datacenter_problem
from registry.memberlist.config import Config, Profile
from registry.metrics import Metric, counters_by_key
from registry.serf.agent import SerfAgent
from registry.serf.config import SerfConfig
from registry.serf.events import Event, MemberEvent
from registry.serf.member import Member, MemberStatus

__all__ = ["ROLE_REGISTRY", "TAG_ROLE", "TAG_RPC", "WanPeer", "WanPool", "wan_member_name"]

log = structlog.get_logger("registry.wan")

#: The WAN member's gRPC address and kind (a registry: the only kind that joins).
TAG_RPC = "rpc"
TAG_ROLE = "role"
ROLE_REGISTRY = "registry"


def wan_member_name(ident: str, datacenter: str) -> str:
    """The WAN pool member name of registry `ident` of `datacenter` ("<id>.<dc>", as Consul)."""
    return f"{ident}.{datacenter}"


@dataclass(frozen=True)
class WanPeer:
    """A registry of another datacenter as this registry's WAN pool sees it."""

    #: WAN member name "<id>.<dc>"
    name: str
    datacenter: str
    #: the peer registry's advertised gRPC address (its "rpc" tag)
    rpc_addr: str
    status: MemberStatus
    #: Vivaldi estimate of the round trip from this registry, in ms; None until a probe measured it
    rtt_ms: float | None


def _order(peer: WanPeer) -> tuple[int, int, float, str]:
    """Alive first, then by estimated RTT (unknown last), then by name (a stable order)."""
    return (peer.status != MemberStatus.ALIVE, peer.rtt_ms is None, peer.rtt_ms or 0.0, peer.name)


def _wan_profile(profile: Profile) -> Profile:
    """The WAN pool's timings: WAN's, or the fast profile's when the registry runs fast (tests)."""
    return "fast" if profile == "fast" else "wan"


class WanPool:
    """A registry's membership in the WAN pool (a second `SerfAgent`); see the module docstring.

    `start()` binds; `join(addrs)` joins once (JoinError when none answered), `join_in_background`
    retries until one does; `leave()` then `shutdown()` when the registry stops.  `peers()` and
    `subscribe()` are what a follower of remote datacenters (registry.federation) reads.
    """

    def __init__(self, *, ident: str, datacenter: str, rpc_addr: str, bind: tuple[str, int],
                 advertise: tuple[str, int] | None = None, encrypt_key: str | None = None,
                 profile: Profile = "wan", retry: float = 0.0) -> None:
        why = datacenter_problem(datacenter)
        if why is not None:
            raise ValueError(f"datacenter {why}")
        self.datacenter = datacenter
        self.name = wan_member_name(ident, datacenter)
        self.rpc_addr = rpc_addr
        self.profile = _wan_profile(profile)
        #: seconds between join attempts in `join_in_background` (0: 1 s fast, 5 s otherwise, as -registries)
        self.retry = retry if retry > 0 else (1.0 if self.profile == "fast" else 5.0)
        overrides: dict[str, Any] = {"name": self.name, "bind_addr": ip_literal(bind[0]), "bind_port": bind[1]}
        if advertise is not None:
            if advertise[0]:
                overrides["advertise_addr"] = ip_literal(advertise[0])
            overrides["advertise_port"] = advertise[1]
        cfg = SerfConfig(name=self.name, tags=self.tags(), memberlist=Config.profile(self.profile).replace(**overrides),
                         encrypt_key=encrypt_key, leaving_events=True)
        if self.profile == "fast":
            cfg = cfg.replace(reap_interval=1.0, reconnect_interval=2.0, leave_propagate_delay=0.2)
        self.agent = SerfAgent(cfg)
        self.agent.add_handler(self._on_event)
        self._callbacks: list[Callable[[], None]] = []
        self._join_task: asyncio.Task[None] | None = None
        #: True once a join answered (or none was asked for)
        self.joined = False
        #: the WAN gossip address the other datacenters dial (after start)
        self.address = ""

    def tags(self) -> dict[str, str]:
        return {TAG_DATACENTER: self.datacenter, TAG_RPC: self.rpc_addr, TAG_ROLE: ROLE_REGISTRY}

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind the WAN gossip ports and start gossiping (OSError: the port is taken)."""
        addr = await self.agent.start()
        self.address = format_hostport(addr.host, addr.port)
        log.info("wan pool started", name=self.name, wan=self.address, datacenter=self.datacenter)

    async def join(self, addrs: list[str]) -> int:
        """Join the WAN pool through `addrs` (WAN gossip addresses); how many answered.
        JoinError (naming each address and why: a wrong -wan-encrypt key says so) if none did."""
        timeout = 2 * self.agent.config.memberlist.tcp_timeout + 5.0
        n = await asyncio.wait_for(self.agent.join(list(addrs)), timeout)
        if n > 0:
            self.joined = True
        return n

    def join_in_background(self, addrs: list[str]) -> None:
        """Try `join(addrs)` now and every `retry` seconds until one answers (as -registries is)."""
        if addrs and self._join_task is None:
            self._join_task = asyncio.ensure_future(self._join_loop(list(addrs)))

    async def _join_loop(self, addrs: list[str]) -> None:
        while not self.agent.is_shutdown:
            try:
                n = await self.join(addrs)
            except Exception as exc:  # noqa: BLE001 - a failed join is retried, whatever the cause
                why = (str(exc) or type(exc).__name__).replace("-encrypt", "-wan-encrypt")  # memberlist names the LAN flag
                log.warning("wan join failed; will retry", seeds=addrs, error=why, retry_s=self.retry)
            else:
                if n > 0:
                    log.info("joined the wan pool", contacted=n, members=len(self.agent.members()))
                    return
            await asyncio.sleep(self.retry)

    async def leave(self, timeout: float = 5.0) -> None:
        """Tell the WAN pool we go (the other datacenters then stop following us at once); never
        raises: a registry stopping goes on to shut down whatever the leave met (logged)."""
        await self._stop_joining()
        if self.agent.is_shutdown:
            return
        try:
            await asyncio.wait_for(self.agent.leave(timeout), timeout + 1.0)
        except Exception as exc:  # noqa: BLE001 - see the docstring
            log.warning("wan leave did not finish cleanly", error=str(exc) or type(exc).__name__)

    async def shutdown(self) -> None:
        """Stop at once (no leave: the others will see us fail)."""
        await self._stop_joining()
        await asyncio.wait_for(self.agent.shutdown(), 5.0)

    async def _stop_joining(self) -> None:
        task, self._join_task = self._join_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task

    # -- what the pool knows ---------------------------------------------------------------

    def rtt_ms(self, name: str) -> float | None:
        """Vivaldi's estimate of the round trip to WAN member `name`, in ms (None: not measured yet)."""
        core = self.agent.core
        theirs = core.coord_cache.get(name)
        if theirs is None:
            return None
        ours = core.get_coordinate()
        if not (theirs.is_valid() and ours.compatible(theirs)):
            return None
        return ours.distance(theirs) * 1000.0

    def peers(self) -> dict[str, list[WanPeer]]:
        """Every OTHER datacenter -> its registries (any status), alive first, then nearest first.

        A member whose tags do not make it a registry of a well-named datacenter with an
        address is left out (the pool is keyed, but a bad tag must not reach a follower)."""
        out: dict[str, list[WanPeer]] = {}
        for m in self.agent.members():
            peer = self._peer(m)
            if peer is not None and peer.datacenter != self.datacenter:
                out.setdefault(peer.datacenter, []).append(peer)
        for rows in out.values():
            rows.sort(key=_order)
        return out

    def _peer(self, m: Member) -> WanPeer | None:
        dc = m.tags.get(TAG_DATACENTER, "")
        rpc = m.tags.get(TAG_RPC, "")
        if m.name == self.name or m.tags.get(TAG_ROLE) != ROLE_REGISTRY or not rpc or datacenter_problem(dc):
            return None
        return WanPeer(m.name, dc, rpc, m.status, self.rtt_ms(m.name))

    def metrics(self) -> Iterator[Metric]:
        """The WAN pool on the registry's /metrics: members by datacenter and status (this registry
        included), and the WAN agent's own gossip counters (bytes and packets in and out, drops)."""
        counts: Counter[tuple[str, str]] = Counter()
        for m in self.agent.members():
            dc = m.tags.get(TAG_DATACENTER, "")
            counts[(dc if datacenter_problem(dc) is None else "invalid", str(m.status))] += 1
        yield Metric("registry_wan_members", "WAN pool members by datacenter and Serf status (this registry included).",
                     "gauge", [({"datacenter": dc, "status": st}, float(n)) for (dc, st), n in sorted(counts.items())])
        gossip = counters_by_key("registry_wan_gossip_events_total",
                                 "WAN gossip counters (bytes, packets, drops per reason, ...).", self.agent.stats)
        if gossip is not None:
            yield gossip

    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Have `callback()` called (on the loop) after every WAN member event; returns the unsubscribe.
        It should re-read `peers()`: one call may stand for several changes."""
        self._callbacks.append(callback)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._callbacks.remove(callback)

        return unsubscribe

    def _on_event(self, event: Event) -> None:
        if not isinstance(event, MemberEvent):
            return
        log.info("wan membership", kind=event.type.value,
                 members=[f"{m.name}={m.status}" for m in event.members])
        for cb in list(self._callbacks):
            try:
                cb()
            except Exception:  # one subscriber's bug must not starve the others
                log.exception("wan subscriber failed")
