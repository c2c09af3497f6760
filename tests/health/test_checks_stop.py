"""`CheckTasks.stop()` ends even when its cancel reaches a check's `wait_for` in the loop turn in
which the check's coroutine completes: before Python 3.12 `asyncio.wait_for` then returns the
result and loses the cancel (CPython gh-86296), and a check loop that relied on the cancel alone ran
on, so `AsyncRegister.stop()` never returned (a test hung on 3.11 under load)."""

from __future__ import annotations

import asyncio
import time

from registry.checks.board import Board
from registry.checks.spec import CallableCheck, Check, name_checks
from registry.checks.tasks import CheckTasks


async def test_stop_ends_when_the_cancel_meets_a_completing_coroutine_check() -> None:
    gates: list[asyncio.Future[str]] = []

    async def check() -> str:
        gate: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        gates.append(gate)
        return await gate

    checks: list[Check] = [CallableCheck(check, name="c", interval=0.01, timeout=5.0)]
    tasks = CheckTasks(Board(checks, name_checks(checks), time.monotonic()), lambda pub: None)
    tasks.start()
    while not gates:  # the first run is waiting on its gate
        await asyncio.sleep(0)
    gates[0].set_result("passing")  # the check's coroutine completes in this turn ...
    await asyncio.wait_for(tasks.stop(), 5)  # ... and the cancel arrives in the same one
