"""Running a service's checks on threads, for the sync `Register` (no asyncio here).

One daemon thread per check, never the gossip thread: a check that hangs cannot delay a ping, so a
service is not suspected while its check hangs (it only turns critical).  A run never overlaps the
previous run of the same check.  HTTP, TCP and gRPC probes bound their own time and run on the check's
thread; a callable runs on a `Call` thread of its own, because a function cannot be interrupted: past
its timeout it counts as failed and is abandoned, and while it is still running each due run counts as
failed again without calling it a second time (so a callable that hangs for good reaches critical
whatever its thresholds, and the next call waits until the hung one has returned).

What to publish comes from the `Board` under one lock; `publish` is called with that lock held, in the
order the changes happened, and must not block (`Register` queues the tag update on the gossip thread).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from registry.healthtags import Health

from .board import Board, Published
from .machine import CheckState
from .probes import Outcome, _error, _short, interpret, probe
from .spec import CallableCheck, Check, TtlCheck

__all__ = ["Call", "CheckThreads", "late", "run_coroutine"]

log = logging.getLogger(__name__)


class Call:
    """`fn()` on a daemon thread of its own; `done` is set when it returned or raised.  `on_done`
    (optional) is called on that thread afterwards (the async runner wakes its loop with it)."""

    def __init__(self, fn: Callable[[], Any], name: str, on_done: Callable[[], None] | None = None) -> None:
        self.started = time.monotonic()
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None
        self._fn, self._on_done = fn, on_done
        threading.Thread(target=self._run, name=name, daemon=True).start()

    def _run(self) -> None:
        try:
            self.value = self._fn()
        except BaseException as exc:  # noqa: BLE001 - whatever it raised is the check's result
            self.error = exc
        finally:
            self.done.set()
            if self._on_done is not None:
                self._on_done()

    def outcome(self) -> Outcome:
        if self.error is not None:
            return Health.CRITICAL, _short(_error(self.error))
        return interpret(self.value)


def run_coroutine(fn: Callable[[], Any], timeout: float) -> Any:
    """A coroutine function called from a thread with no loop: its own loop, cancelled at `timeout`."""
    import asyncio

    async def bounded() -> Any:
        return await asyncio.wait_for(fn(), timeout)

    return asyncio.run(bounded())


def late(check: Check, elapsed: float) -> Outcome:
    return Health.CRITICAL, f"timed out after {elapsed:.3g}s (timeout {check.timeout:g}s)"


def still_running(check: Check, call: Call) -> Outcome:
    return Health.CRITICAL, (f"previous run still running after {time.monotonic() - call.started:.3g}s "
                             f"(timeout {check.timeout:g}s)")


class CheckThreads:
    """The threads of one service's checks (see the module docstring).

    publish: called with each new aggregate to put in the tags (lock held; must not block).
    deregister_after / deregister: when the aggregate has been critical that long, `deregister` is
    called once, on a thread of its own, with the reason (the runner has stopped its checks then).
    """

    def __init__(self, board: Board, publish: Callable[[Published], None], *,
                 deregister_after: float | None = None, deregister: Callable[[str], None] | None = None,
                 label: str = "") -> None:
        self.board = board
        self._publish = publish
        self._deregister_after = deregister_after
        self._deregister = deregister
        self._label = label
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._pending: dict[int, Call] = {}

    # -- reading (any thread) -------------------------------------------------------------------

    @property
    def health(self) -> Published:
        with self._cond:
            return self.board.health

    def states(self) -> list[CheckState]:
        with self._cond:
            return self.board.states()

    # -- life ------------------------------------------------------------------------------------

    def start(self) -> None:
        for i, check in enumerate(self.board.checks):
            target = self._ttl_loop if isinstance(check, TtlCheck) else self._probe_loop
            self._spawn(functools.partial(target, i), f"check-{self._label}-{self.board.names[i]}")
        if self._deregister_after is not None and self._deregister is not None:
            self._spawn(self._deregister_loop, f"check-{self._label}-deregister")

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)
        self._threads.append(t)
        t.start()

    def stop(self, timeout: float = 0.2) -> None:
        """Stop every check; waits up to `timeout` in all for their threads: those between runs end at
        once, a probe still running is abandoned (its thread ends when it returns, its result dropped),
        so a slow check never delays the service's stop by more than that."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(max(0.0, deadline - time.monotonic()))

    # -- TTL (application threads) ----------------------------------------------------------------

    def force(self, indexes: list[int], status: Health, note: str) -> None:
        """heartbeat/set_status on TTL checks `indexes`: the status at once, new deadlines."""
        with self._cond:
            now = time.monotonic()
            for i in indexes:
                self._apply(self.board.force(i, status, _short(note), now))
            self._cond.notify_all()

    # -- the threads --------------------------------------------------------------------------------

    def _apply(self, pub: Published | None) -> None:
        """(lock held) publish a change unless stopped."""
        if pub is not None and not self._stop.is_set():
            self._publish(pub)

    def _record(self, i: int, outcome: Outcome) -> None:
        with self._cond:
            if self._stop.is_set():
                return
            self._apply(self.board.record(i, outcome[0], outcome[1], time.monotonic()))
            self._cond.notify_all()

    def _probe_loop(self, i: int) -> None:
        check = self.board.checks[i]
        next_at = time.monotonic()
        while not self._stop.wait(max(0.0, next_at - time.monotonic())):
            started = time.monotonic()
            next_at = started + check.interval
            try:
                outcome = self._run(i, check)
            except Exception as exc:  # a bug in a probe: the check fails (logged), the thread lives on
                log.exception("check %s raised", self.board.names[i])
                outcome = Health.CRITICAL, _short(_error(exc))
            self._record(i, outcome)

    def _run(self, i: int, check: Check) -> Outcome:
        if isinstance(check, CallableCheck):
            return self._run_callable(i, check)
        started = time.monotonic()
        outcome = probe(check)
        elapsed = time.monotonic() - started
        return late(check, elapsed) if elapsed > check.timeout and outcome[0] is not Health.CRITICAL else outcome

    def _run_callable(self, i: int, check: CallableCheck) -> Outcome:
        pending = self._pending.get(i)
        if pending is not None and not pending.done.is_set():
            return still_running(check, pending)
        fn: Callable[[], Any] = check.fn
        if check.is_coroutine:
            fn = functools.partial(run_coroutine, check.fn, check.timeout)
        call = Call(fn, f"check-{self._label}-{self.board.names[i]}-call")
        self._pending[i] = call
        if not call.done.wait(check.timeout):
            return late(check, time.monotonic() - call.started)
        return call.outcome()

    def _ttl_loop(self, i: int) -> None:
        with self._cond:
            while not self._stop.is_set():
                deadline = self.board.next_deadline(i)
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    self._apply(self.board.expire_due(i, now))
                    self._cond.notify_all()
                    continue
                self._cond.wait(None if deadline is None else deadline - now)

    def _deregister_loop(self) -> None:
        assert self._deregister_after is not None and self._deregister is not None
        with self._cond:
            while not self._stop.is_set():
                since = self.board.critical_since
                now = time.monotonic()
                if since is not None and now - since >= self._deregister_after:
                    reason = f"critical for {now - since:.1f}s ({self.board.health[1]})"
                    break
                self._cond.wait(None if since is None else since + self._deregister_after - now)
            else:
                return
        self.stop()
        self._deregister(reason)
