"""`MemberlistNode`: the asyncio face of a memberlist node (sockets + the SWIM core).

It owns a `MachineRunner` around a `Memberlist` core; every API call feeds the core with
the runner's clock and then kicks the runner so what the core queued leaves at once.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import Counter
from collections.abc import Callable, Iterable

from registry.addresses import (
    is_ip,
    loopback_if_wildcard,
    parse_join_address,
    unique_ips,
)

from .config import Config
from .core import Memberlist
from .delegate import Delegate
from .runner import MachineRunner
from .threaded import local_advertise
from .transport import StreamOutcome
from .types import META_MAX_SIZE, Address, Node

__all__ = ["JoinError", "MemberlistNode", "parse_address", "resolve", "resolve_targets"]

log = logging.getLogger(__name__)


class JoinError(ConnectionError):
    """No address answered a join; `failures` maps each address text to why."""

    def __init__(self, failures: dict[str, str]) -> None:
        self.failures = dict(failures)
        detail = "; ".join(f"{addr}: {why}" for addr, why in self.failures.items()) or "no addresses given"
        super().__init__(f"failed to join any node ({detail})")


def parse_address(text: str, default_port: int) -> Address:
    """A join target ("host:port", "name/host:port", "[v6]:port", "host", a bare IPv6 literal
    or ":port"); see `registry.addresses.parse_join_address`.  ValueError when malformed."""
    hp = parse_join_address(text, default_port)
    return Address(hp.host, hp.port)


async def resolve(addr: Address) -> list[Address]:
    """All A/AAAA records of a DNS name (an IP literal stands for itself), in resolver order."""
    if is_ip(addr.host):
        return [addr]
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(addr.host, addr.port, type=socket.SOCK_STREAM)
    return [Address(ip, addr.port) for ip in unique_ips(infos)]


async def resolve_targets(texts: Iterable[str], default_port: int) -> tuple[list[tuple[str, Address]], dict[str, str]]:
    """Join targets as IP addresses, each labelled with its text (and its IP when a name has
    several), and the texts that gave none, with why.  A wildcard host dials this machine."""
    failures: dict[str, str] = {}
    targets: list[tuple[str, Address]] = []
    for text in texts:
        try:
            parsed = parse_address(text, default_port)
            resolved = await resolve(Address(loopback_if_wildcard(parsed.host), parsed.port))
        except (ValueError, OSError) as exc:
            failures[text] = str(exc) or type(exc).__name__
            continue
        if not resolved:
            failures[text] = "no IP addresses found"
        targets.extend((text if len(resolved) == 1 else f"{text} ({a})", a) for a in resolved)
    return targets, failures


#: What peers should dial (one definition, shared with the threaded driver).
advertise_address = local_advertise


class MemberlistNode:
    """A running memberlist node: create with `await MemberlistNode.create(config, delegate)`."""

    def __init__(self, runner: MachineRunner, core: Memberlist, address: Address) -> None:
        self._runner = runner
        self._core = core
        self.address = address
        self._shut = False

    @classmethod
    async def create(cls, config: Config, delegate: Delegate | None = None) -> MemberlistNode:
        """Bind UDP+TCP on `config.bind_addr:bind_port` (0 = any free port) and start gossiping."""
        if not config.name:
            config = config.replace(name=socket.gethostname())
        bind_host = config.bind_addr or "0.0.0.0"
        if not is_ip(bind_host):  # a host name: bind (and by default advertise) its first IP
            found = await resolve(Address(bind_host, config.bind_port))
            if not found:
                raise OSError(f"bind address {bind_host!r} does not resolve")
            bind_host = found[0].host
        config = config.replace(bind_addr=bind_host)
        runner = MachineRunner(None, config)
        cores: list[Memberlist] = []
        adv: list[Address] = []

        def factory(bound: Address) -> Memberlist:
            a = advertise_address(config, bound)
            cfg = config.replace(bind_port=bound.port)
            core = Memberlist(cfg, a, delegate, now=runner.now())
            cores.append(core)
            adv.append(a)
            return core

        await runner.start(Address(config.bind_addr, config.bind_port), factory)
        runner.config = cores[0].config
        log.info("memberlist node %s bound %s, advertising %s", config.name, runner.bound, adv[0])
        return cls(runner, cores[0], adv[0])

    # -- views -------------------------------------------------------------------------------

    @property
    def core(self) -> Memberlist:
        """The sans-I/O state machine (read it; change it only through this class)."""
        return self._core

    @property
    def runner(self) -> MachineRunner:
        return self._runner

    @property
    def config(self) -> Config:
        return self._core.config

    @property
    def name(self) -> str:
        return self._core.name

    @property
    def local_node(self) -> Node:
        return self._core.local_node

    def members(self) -> list[Node]:
        """Alive and suspect nodes, this one included."""
        return self._core.members()

    def all_nodes(self) -> list[Node]:
        return self._core.all_nodes()

    def get(self, name: str) -> Node | None:
        return self._core.get(name)

    @property
    def stats(self) -> Counter[str]:
        """Core drop/protocol counters plus transport counters (bytes, timeouts, exceptions)."""
        total: Counter[str] = Counter(self._core.stats)
        total.update(self._runner.stats)
        return total

    @property
    def health_score(self) -> int:
        return self._core.health_score

    # -- actions -----------------------------------------------------------------------------

    async def join(self, addresses: list[str]) -> int:
        """Push/pull (join) with every address; returns how many answered with a state that
        merged.  Raises JoinError, naming each address and why, when none did."""
        targets, failures = await resolve_targets(addresses, self.config.bind_port)
        if self._shut:
            raise JoinError({t: "node is shut down" for t in addresses})
        futures: list[tuple[str, asyncio.Future[StreamOutcome]]] = []
        now = self._runner.now()
        for label, a in targets:
            for sid in self._core.join([a], now):
                futures.append((label, self._runner.watch_stream(sid)))
        self._runner.kick()
        ok = 0
        for label, fut in futures:
            outcome = await fut
            if outcome.accepted:
                ok += 1
            else:
                failures[label] = outcome.error or "refused"
        if ok == 0:
            raise JoinError(failures)
        for label, why in failures.items():
            log.info("join: %s failed: %s", label, why)
        return ok

    async def leave(self, timeout: float) -> bool:
        """Broadcast our departure and wait until it went out (True) or `timeout` passed (False).
        The node keeps running; call `shutdown()` afterwards."""
        if self._shut:
            return False
        self._core.leave(self._runner.now())
        self._runner.kick()
        return await self._runner.wait_until(self._core.leave_done, timeout)

    async def shutdown(self) -> None:
        """Stop at once, without leaving: peers will detect us as failed."""
        if self._shut:
            return
        self._shut = True
        self._core.shutdown()
        await self._runner.close()

    def update_meta(self, meta: bytes) -> None:
        """Change our metadata (<= 512 bytes) and gossip it with a new incarnation."""
        if len(meta) > META_MAX_SIZE:
            raise ValueError(f"node metadata is {len(meta)} bytes, more than the {META_MAX_SIZE}-byte limit")
        self._core.update_meta(self._runner.now(), meta)
        self._runner.kick()

    def _target(self, name_or_addr: str | Address) -> Address:
        if isinstance(name_or_addr, Address):
            return name_or_addr
        node = self._core.get(name_or_addr)
        if node is not None:
            return node.address
        addr = parse_address(name_or_addr, self.config.bind_port)
        if not is_ip(addr.host):
            raise ValueError(f"{name_or_addr!r} is neither a known node name nor an IP address")
        return addr

    def send_best_effort(self, name_or_addr: str | Address, payload: bytes) -> None:
        """One UDP user message (may be lost)."""
        self._core.send_best_effort(self._target(name_or_addr), payload, self._runner.now())
        self._runner.kick()

    async def send_reliable(self, name_or_addr: str | Address, payload: bytes) -> None:
        """A TCP user message; raises ConnectionError if it could not be delivered."""
        addr = self._target(name_or_addr)
        sid = self._core.send_reliable(addr, payload, self._runner.now())
        fut = self._runner.watch_stream(sid)
        self._runner.kick()
        outcome = await fut
        if not outcome.accepted:
            raise ConnectionError(f"reliable send to {addr} failed: {outcome.error or 'refused'}")

    async def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until `predicate()` holds (re-checked after every network input/timer)."""
        return await self._runner.wait_until(predicate, timeout)

    async def __aenter__(self) -> MemberlistNode:  # noqa: PYI034 - typing.Self is 3.11+; the class is not meant to be subclassed
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()
