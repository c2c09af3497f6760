"""Running a service's checks as tasks on the app's loop, for `AsyncRegister`.

The loop is also the gossip loop, so nothing blocking runs on it: HTTP, TCP and gRPC probes and plain
functions run on a `threads.Call` thread each run, awaited up to the check's timeout; a coroutine
function is awaited with `asyncio.wait_for` (cancelled at its timeout).  As with threads, a run never
overlaps the previous one of its check: a function still running past its timeout is abandoned, and
each due run counts as failed until it returns.  (A coroutine that blocks the loop blocks gossip too:
no runner can help that; a TtlCheck fed from another thread at least reports it.)
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from typing import Any

from registry.healthtags import Health

from .board import Board, Published
from .machine import CheckState
from .probes import Outcome, _error, _short, interpret, probe
from .spec import CallableCheck, Check, TtlCheck
from .threads import Call, late, still_running

__all__ = ["CheckTasks"]

log = logging.getLogger(__name__)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class CheckTasks:
    """The tasks of one service's checks; arguments as `threads.CheckThreads` (`publish` is called on
    the loop; `deregister` is a coroutine function, run as a task of its own)."""

    def __init__(self, board: Board, publish: Callable[[Published], None], *,
                 deregister_after: float | None = None,
                 deregister: Callable[[str], Any] | None = None, label: str = "") -> None:
        self.board = board
        self._publish = publish
        self._deregister_after = deregister_after
        self._deregister = deregister
        self._label = label
        self._tasks: list[asyncio.Task[None]] = []
        self._pending: dict[int, tuple[Call, asyncio.Future[None]]] = {}
        self._changed = asyncio.Event()
        self._kicks = {i: asyncio.Event() for i in board.ttl_indexes()}
        self._stopped = False
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def health(self) -> Published:
        return self.board.health

    def states(self) -> list[CheckState]:
        return self.board.states()

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        for i, check in enumerate(self.board.checks):
            coro = self._ttl_loop(i) if isinstance(check, TtlCheck) else self._probe_loop(i)
            self._tasks.append(asyncio.ensure_future(coro))
        if self._deregister_after is not None and self._deregister is not None:
            self._tasks.append(asyncio.ensure_future(self._deregister_loop()))

    async def stop(self) -> None:
        """Cancel every check's task (a probe running on a thread is abandoned, its result dropped).

        The loops also end on `_stopped`: before Python 3.12, `asyncio.wait_for` loses a cancel that
        arrives as its inner awaitable completes (CPython gh-86296), so a check task cancelled while
        its coroutine check returned ran on, and this gather waited for ever (seen: a test hung in
        `AsyncRegister.stop` on 3.11 under load)."""
        self._stopped = True
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def force(self, indexes: list[int], status: Health, note: str) -> None:
        """heartbeat/set_status: applied on the loop (from another thread, handed to it)."""
        loop = self._loop
        if loop is not None and _running_loop() is not loop:
            loop.call_soon_threadsafe(self._force, indexes, status, note)
            return
        self._force(indexes, status, note)

    def _force(self, indexes: list[int], status: Health, note: str) -> None:
        now = time.monotonic()
        for i in indexes:
            self._apply(self.board.force(i, status, _short(note), now))
            self._kicks[i].set()
        self._changed.set()

    def _apply(self, pub: Published | None) -> None:
        if pub is not None and not self._stopped:
            self._publish(pub)

    def _record(self, i: int, outcome: Outcome) -> None:
        if self._stopped:
            return
        self._apply(self.board.record(i, outcome[0], outcome[1], time.monotonic()))
        self._changed.set()

    async def _probe_loop(self, i: int) -> None:
        check = self.board.checks[i]
        loop = asyncio.get_running_loop()
        while not self._stopped:  # not only cancel(): see `stop`
            started = loop.time()
            try:
                outcome = await self._run(i, check)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug in a probe: the check fails (logged), the task lives on
                log.exception("check %s raised", self.board.names[i])
                outcome = Health.CRITICAL, _short(_error(exc))
            self._record(i, outcome)
            await asyncio.sleep(max(0.0, started + check.interval - loop.time()))

    async def _run(self, i: int, check: Check) -> Outcome:
        if isinstance(check, CallableCheck) and check.is_coroutine:
            try:
                return interpret(await asyncio.wait_for(check.fn(), check.timeout))
            except asyncio.TimeoutError:
                return late(check, check.timeout)
            except Exception as exc:  # noqa: BLE001 - raising is the check's critical result
                return Health.CRITICAL, _short(_error(exc))
        pending = self._pending.get(i)
        if pending is not None and not pending[0].done.is_set():
            return still_running(check, pending[0])
        loop = asyncio.get_running_loop()
        woken: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not woken.done():
                woken.set_result(None)

        def on_done() -> None:
            loop.call_soon_threadsafe(wake)

        fn: Callable[[], Any] = check.fn if isinstance(check, CallableCheck) else functools.partial(probe, check)
        call = Call(fn, f"check-{self._label}-{self.board.names[i]}-call",
                    on_done=on_done)
        self._pending[i] = (call, woken)
        try:
            await asyncio.wait_for(asyncio.shield(woken), check.timeout)
        except asyncio.TimeoutError:
            return late(check, time.monotonic() - call.started)
        if isinstance(check, CallableCheck):
            return call.outcome()
        if call.error is not None:
            return Health.CRITICAL, _short(_error(call.error))
        outcome: Outcome = call.value
        elapsed = time.monotonic() - call.started
        return late(check, elapsed) if elapsed > check.timeout and outcome[0] is not Health.CRITICAL else outcome

    async def _ttl_loop(self, i: int) -> None:
        kick = self._kicks[i]
        while not self._stopped:
            deadline = self.board.next_deadline(i)
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                self._apply(self.board.expire_due(i, now))
                self._changed.set()
                continue
            kick.clear()
            try:
                await asyncio.wait_for(kick.wait(), None if deadline is None else deadline - now)
            except asyncio.TimeoutError:
                pass

    async def _deregister_loop(self) -> None:
        assert self._deregister_after is not None and self._deregister is not None
        while not self._stopped:
            since = self.board.critical_since
            now = time.monotonic()
            if since is not None and now - since >= self._deregister_after:
                break
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), None if since is None else since + self._deregister_after - now)
            except asyncio.TimeoutError:
                pass
        else:
            return  # stopped
        reason = f"critical for {now - since:.1f}s ({self.board.health[1]})"
        await self.stop()
        await self._deregister(reason)
