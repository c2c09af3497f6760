"""`ThreadedSerf`: a Serf node driven by a background thread, for synchronous programs.

Same sans-I/O `Serf` machine as `SerfAgent`, but on `ThreadedRunner` (selectors, no
asyncio), so embedding it costs a process neither asyncio nor ssl.  Every method may be
called from any thread; it runs on the gossip thread and blocks until done.  Event
handlers run on the gossip thread: keep them short, they hold up gossip.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterable

from registry.memberlist.joining import JoinError, JoinTally, resolve_targets_now
from registry.memberlist.threaded import RunnerClosed, ThreadedRunner
from registry.memberlist.types import Address

from .config import SerfConfig
from .core import Serf
from .facade import SerfFacade
from .member import Member, MemberStatus

__all__ = ["Chooser", "SerfJoinError", "ThreadedSerf"]

log = logging.getLogger(__name__)

#: picks, from the alive members, the peers asked to acknowledge a leave
Chooser = Callable[[list[Member]], list[Member]]


#: The join error of every driver (`memberlist.joining.JoinError`), under the name this module
#: has always exported.
SerfJoinError = JoinError


class ThreadedSerf(SerfFacade[ThreadedRunner]):
    """A running Serf node on its own thread: `ThreadedSerf(config).start()`, then `join()`.
    Event handlers run on the gossip thread."""

    def __init__(self, config: SerfConfig) -> None:
        super().__init__(config)
        self._dispatch_due = False

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Address:
        """Bind UDP+TCP (port 0 = any free one) and start the gossip thread; returns the
        advertised address."""
        ml = self.config.memberlist
        runner = ThreadedRunner(None, ml, name=f"serf-{self.config.name or ml.name}")
        made: list[Serf] = []
        runner.on_pump = self._dispatch
        runner.start(self._bind_address, self._machine_factory(runner, made, self._wakeup))
        address = self._adopt(runner, made[0])
        log.info("serf node %s advertising %s (threaded)", made[0].name, address)
        return address

    def join(self, addrs: Iterable[str | Address], timeout: float, ignore_old: bool = True) -> int:
        """Push/pull with every address ("host:port" or Address; names are resolved);
        returns how many answered with a state that merged, as soon as all have.
        SerfJoinError when none did (within `timeout`)."""
        targets, failures = resolve_targets_now(addrs, 7946)
        done = threading.Event()
        tally = JoinTally(failures, done.set)
        if targets:
            core, runner = self.core, self.runner

            def begin() -> None:
                tally.begin(targets, lambda a: core.join([a], runner.now(), ignore_old=ignore_old), runner.watch)

            try:
                runner.call(begin, timeout)
            except RunnerClosed:
                raise SerfJoinError({label: "node is shut down" for label, _ in targets}) from None
            done.wait(timeout)
        return tally.result(unanswered=f"no answer within {timeout:g}s")

    def leave(self, timeout: float | None = None, confirm_with: Chooser | None = None) -> bool:
        """Graceful leave; True once done (False on timeout or when shut down).

        Without `confirm_with`, Go's sequence: the intent is gossiped its full retransmit count,
        then memberlist's leave, then LeavePropagateDelay (about 2 s at the LAN profile).  With
        it, for a node about to exit: `confirm_with(alive members)` picks peers, `Serf.leave_now`
        sends the news at once and pushes our state to them, and the leave is done as soon as
        one of them has accepted it (or, if none does, when the full sequence ends)."""
        if self._shut or self._runner is None:
            return False
        timeout = self._leave_timeout(timeout)
        core = self.core
        runner = self.runner
        acked: list[bool] = []

        def begin() -> None:
            if confirm_with is None:
                core.leave(runner.now())
                return
            alive = [m for m in core.members() if m.status == MemberStatus.ALIVE and m.name != core.name]
            peers = [Address(m.addr, m.port) for m in confirm_with(alive)]
            for sid in core.leave_now(runner.now(), peers):
                runner.watch_stream(sid, lambda ok, _why: acked.append(True) if ok else None)
            if not alive:
                acked.append(True)  # nobody left to tell (Serf would still wait LeavePropagateDelay)

        try:
            runner.call(begin, timeout)
        except (RunnerClosed, TimeoutError):
            return False
        return runner.wait_until(lambda: bool(acked) or core.left, timeout)

    @property
    def name_taken_by(self) -> Member | None:
        """The member holding our name alive at another address, if a join's reply showed one
        (that join failed: the pool keeps the holder and refused us)."""
        core, runner = self.core, self.runner

        def read() -> Member | None:
            n = core.name_taken_by
            return None if n is None else Member(n.name, n.addr, n.port, {}, MemberStatus.ALIVE, n.vsn)

        try:
            return runner.call(read, 5.0)
        except (RunnerClosed, TimeoutError):
            return read()

    def shutdown(self, timeout: float = 5.0) -> None:
        """Stop at once (no leave: peers will see us fail) and join the gossip thread."""
        if self._shut:
            return
        self._shut = True
        runner, core = self._runner, self._core
        if runner is None or core is None:
            return
        try:
            runner.call(core.shutdown, timeout)
        except (RunnerClosed, TimeoutError):
            pass
        runner.close(timeout)

    # -- views and tags ------------------------------------------------------------------------

    def members(self) -> list[Member]:
        core = self.core
        return self.runner.call(core.members)

    def local_member(self) -> Member:
        core = self.core
        return self.runner.call(core.local_member)

    def set_tags(self, tags: dict[str, str]) -> None:
        """Replace our tags and gossip them (ValueError if they do not fit)."""
        core, runner = self.core, self.runner
        new = dict(tags)
        runner.call(lambda: core.set_tags(new, runner.now()))

    @property
    def stats(self) -> Counter[str]:
        try:
            return self.runner.call(self._gather_stats)
        except RunnerClosed:
            return self._gather_stats()

    # -- events -------------------------------------------------------------------------------

    def _wakeup(self) -> None:
        self._dispatch_due = True

    def _dispatch(self) -> None:
        """After each drain of the machine (gossip thread): hand queued events to handlers."""
        if not self._dispatch_due or self._core is None:
            return
        self._dispatch_due = False
        core = self._core
        for ev in core.drain_events():
            self._deliver(ev)
        if self._name_lost(core):
            self._shut = True
            core.shutdown()
            if self._runner is not None:
                self._runner.close()
