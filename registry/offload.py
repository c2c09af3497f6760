"""`Offload`: one worker thread for the web page's expensive views of a ring, coalescing and bounded.

Why a thread and not the loop: a ring's exact shares and the share of keys a change moved are a Python
step per entry or per changed point; on a 2,000-member ring of 4096 points each that is hundreds of
milliseconds, during which the loop would answer no Match, no gossip ping. Rings are immutable snapshots
(`registry.ring`), so a thread reads them without a lock.

Why one thread, keyed jobs: work for a group is only worth doing for its newest version. A job submitted
under a key that still has one pending (not started) supersedes it: the pending job never runs and its
future is cancelled, so a burst of changes costs one computation, and the callers waiting on the old one
start again from the newest state. At most `max_pending` keys wait; beyond that `submit` raises `Busy`
(the caller answers 429 or records "not computed"), never queueing unbounded work.

Nothing starts until the first `submit` (a registry without the HTTP front never creates one); `close`
ends the thread after the job it is running, cancelling the pending ones.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from typing import Any, TypeVar

__all__ = ["MAX_PENDING", "Busy", "Offload"]

MAX_PENDING = 1024
T = TypeVar("T")


class Busy(RuntimeError):
    """`max_pending` jobs already wait."""


class Offload:
    """One daemon thread running keyed jobs, oldest key first; see the module docstring."""

    def __init__(self, name: str = "registry-offload", max_pending: int = MAX_PENDING) -> None:
        self.name = name
        self.max_pending = max_pending
        #: Jobs run, jobs superseded before they ran, submits refused (Busy).
        self.ran = 0
        self.superseded = 0
        self.refused = 0
        self._jobs: OrderedDict[Hashable, tuple[Callable[[], Any], Future[Any]]] = OrderedDict()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    @property
    def pending(self) -> int:
        return len(self._jobs)

    def submit(self, key: Hashable, fn: Callable[[], T]) -> Future[T]:
        """Run `fn()` on the worker; a pending job of `key` is superseded (its future cancelled).

        `Busy` when `max_pending` other keys wait; `RuntimeError` once closed."""
        future: Future[T] = Future()
        with self._cond:
            if self._closed:
                raise RuntimeError("offload worker closed")
            old = self._jobs.pop(key, None)
            if old is not None:
                self.superseded += 1
                old[1].cancel()
            elif len(self._jobs) >= self.max_pending:
                self.refused += 1
                raise Busy(f"{len(self._jobs)} ring computations wait, at most {self.max_pending}")
            self._jobs[key] = (fn, future)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
            self._cond.notify()
        return future

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._jobs and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                _, (fn, future) = self._jobs.popitem(last=False)
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn()
            except BaseException as exc:  # noqa: BLE001 - handed to the waiter, the worker goes on
                self.ran += 1
                future.set_exception(exc)
            else:
                self.ran += 1  # before the waiter hears of it
                future.set_result(result)

    def close(self, timeout: float = 5.0) -> None:
        """Cancel the pending jobs and end the thread (after the job it runs, waited up to `timeout`)."""
        with self._cond:
            self._closed = True
            jobs, self._jobs = list(self._jobs.values()), OrderedDict()
            self._cond.notify_all()
            thread = self._thread
        for _, future in jobs:
            future.cancel()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
