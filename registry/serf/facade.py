"""What the two faces of a Serf node share: `SerfAgent` (asyncio, `agent.py`) and `ThreadedSerf`
(a background thread, `threaded.py`) drive the same sans-I/O `Serf` machine and differ only
in how callers wait.

Here, once: building the machine for the address the driver bound (a port-0 bind advertises
the port it got), the started/not-started rules, the counters a node reports (machine,
memberlist, transport and its own), the default leave timeout, the event handlers and how a
failing one is reported, and the decision to stop when another node won our name.  No
asyncio here: the threaded node imports this without paying for asyncio and ssl.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from typing import Generic, TypeVar

from registry.memberlist.driver import DriverBase, local_advertise, started
from registry.memberlist.types import Address

from .config import SerfConfig
from .core import Serf
from .events import Event

__all__ = ["Handler", "SerfFacade"]

log = logging.getLogger(__name__)

#: an event callback (the asyncio agent runs an awaitable result as a task)
Handler = Callable[[Event], object]

R = TypeVar("R", bound=DriverBase)


class SerfFacade(Generic[R]):
    """A Serf node's state outside the machine; subclasses add the driver's way of waiting."""

    def __init__(self, config: SerfConfig) -> None:
        self.config = config
        self._runner: R | None = None
        self._core: Serf | None = None
        self.address: Address | None = None
        self._handlers: list[Handler] = []
        #: the node's own counters (`handler.errors`, `events.dropped`), beside the machine's
        self._node_stats: Counter[str] = Counter()
        self._shut = False

    # -- starting ----------------------------------------------------------------------------

    @property
    def _bind_address(self) -> Address:
        ml = self.config.memberlist
        return Address(ml.bind_addr, ml.bind_port)

    def _machine_factory(self, runner: R, made: list[Serf], wakeup: Callable[[], None]) -> Callable[[Address], Serf]:
        """What `runner.start` calls with the bound address: the machine, advertising what peers
        should dial, with `wakeup` set before it can queue an event."""
        ml = self.config.memberlist

        def factory(bound: Address) -> Serf:
            cfg = self.config.replace(memberlist=ml.replace(bind_port=bound.port))
            core = Serf(cfg, local_advertise(ml, bound), now=runner.now())
            core.wakeup = wakeup
            made.append(core)
            return core

        return factory

    def _adopt(self, runner: R, core: Serf) -> Address:
        """The driver started `core`: keep both; returns the advertised address."""
        self._runner = runner
        self._core = core
        self.address = core.memberlist.advertise
        runner.config = core.memberlist.config
        return self.address

    # -- views -------------------------------------------------------------------------------

    @property
    def core(self) -> Serf:
        """The machine: read and change it only on its driver's turn (for `ThreadedSerf`, inside
        `runner.call`: the gossip thread owns it)."""
        return started(self._core, "the node is not started")

    @property
    def runner(self) -> R:
        return started(self._runner, "the node is not started")

    @property
    def is_shutdown(self) -> bool:
        return self._shut

    def _gather_stats(self) -> Counter[str]:
        """Machine, memberlist, transport and node counters in one (read on the machine's turn)."""
        core, runner = self.core, self.runner
        total: Counter[str] = Counter(core.stats)
        total.update(core.memberlist.stats)
        total.update(runner.stats)
        total.update(self._node_stats)
        return total

    def _leave_timeout(self, timeout: float | None) -> float:
        """The default wait for a graceful leave: the intent's broadcast, memberlist's leave and
        LeavePropagateDelay, with a second to spare."""
        if timeout is not None:
            return timeout
        cfg = self.config
        return 2 * cfg.broadcast_timeout + cfg.leave_propagate_delay + 1.0

    # -- events ------------------------------------------------------------------------------

    def add_handler(self, cb: Handler) -> Callable[[], None]:
        """Call `cb(event)` for every event; returns a remover."""
        self._handlers.append(cb)

        def remove() -> None:
            if cb in self._handlers:
                self._handlers.remove(cb)

        return remove

    def _deliver(self, ev: Event, result: Callable[[object], None] | None = None) -> None:
        """Hand one event to every handler, in order; a handler that raises is counted and
        logged with its traceback, and the others still run."""
        for cb in list(self._handlers):
            try:
                res = cb(ev)
                if result is not None:
                    result(res)
            except Exception:
                self._node_stats["handler.errors"] += 1
                log.exception("serf event handler failed")

    def _name_lost(self, core: Serf) -> bool:
        """Whether to stop now: another node holds our name and the cluster sided with it (Go's
        Serf shuts down then too)."""
        if not core.conflict_lost or self._shut:
            return False
        log.error("serf: name %r is taken by another node; shutting down", core.name)
        return True
