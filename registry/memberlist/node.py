"""`MemberlistNode`: the asyncio face of a memberlist node (sockets + the SWIM core).

It owns a `MachineRunner` around a `Memberlist` core; every API call feeds the core with
the runner's clock and then kicks the runner so what the core queued leaves at once.
`join_pool` (also `SerfAgent`'s) is a join on asyncio: targets resolved off the loop, each
target's outcome tallied by `joining.JoinTally`.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import Counter
from collections.abc import Callable, Iterable

from registry.addresses import is_ip

from .config import Config
from .core import Memberlist
from .delegate import Delegate
from .driver import local_advertise
from .joining import JoinError, JoinTally, needs_lookup, parse_address, resolve_now, resolve_targets_now
from .runner import MachineRunner
from .types import META_MAX_SIZE, Address, Node

__all__ = ["JoinError", "MemberlistNode", "join_pool", "parse_address", "resolve", "resolve_targets"]

log = logging.getLogger(__name__)


async def resolve(addr: Address) -> list[Address]:
    """All A/AAAA records of a DNS name (an IP literal stands for itself), in resolver order,
    looked up off the loop."""
    if is_ip(addr.host):
        return [addr]
    return await asyncio.get_running_loop().run_in_executor(None, resolve_now, addr)


async def resolve_targets(texts: Iterable[str], default_port: int) -> tuple[list[tuple[str, Address]], dict[str, str]]:
    """`joining.resolve_targets_now`, with any DNS lookup off the loop."""
    items = list(texts)
    if not needs_lookup(items, default_port):
        return resolve_targets_now(items, default_port)
    return await asyncio.get_running_loop().run_in_executor(None, resolve_targets_now, items, default_port)


async def join_pool(
    runner: MachineRunner,
    texts: Iterable[str],
    default_port: int,
    start: Callable[[Address, float], list[int]],
    shut: Callable[[], bool],
) -> int:
    """Push/pull with every target in `texts` through `start(address, now)` (the machine's
    join, returning its stream ids); how many answered with a state that merged.  JoinError,
    naming each address and why, when none did or the node is shut down (`shut()`)."""
    items = list(texts)
    targets, failures = await resolve_targets(items, default_port)
    if shut():
        raise JoinError({t: "node is shut down" for t in items})
    settled = asyncio.Event()
    tally = JoinTally(failures, settled.set)
    now = runner.now()
    tally.begin(targets, lambda a: start(a, now), runner.watch)
    runner.kick()
    await settled.wait()
    runner.kick()  # whatever the outcomes made the machine queue
    return tally.result()


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
            a = local_advertise(config, bound)
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
        core = self._core
        return await join_pool(
            self._runner, addresses, self.config.bind_port, lambda a, now: core.join([a], now), lambda: self._shut
        )

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
