"""Fixtures for the chaos suite: a stale-namespace sweep, then one NetLab + processes per test.

Every test here is marked `chaos` (tests/conftest.py skips it without `ip`, `iptables` or root,
and fails it instead when CI=true).  Teardown runs pass or fail: processes stopped, namespaces
deleted, and the test fails if anything of its lab is left behind.
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.helpers import Proc, check_logs

from .netlab import NetLab, sweep_stale
from .pool import Pool


@pytest.fixture(scope="session", autouse=True)
def _swept() -> list[str]:
    """Leftovers of an earlier chaos run that crashed (its pid is gone), deleted once per session."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return []
    return sweep_stale()


PoolFactory = Callable[..., Pool]


@pytest.fixture
def make_pool(_swept: list[str], tmp_path: Path) -> Iterator[PoolFactory]:
    """make_pool(registries, services, profile) -> a running Pool in a fresh NetLab.

    One lab per test.  On the way out, pass or fail: stopped processes resumed, every process
    killed (no graceful leave needed: the pool goes away whole), every namespace deleted and
    checked gone.  Logs stay in tmp_path for a failed run."""
    ps: list[Proc] = []
    made: list[tuple[NetLab, Pool | None]] = []

    def make(registries: int, services: int, profile: str = "fast") -> Pool:
        lab = NetLab()
        made.append((lab, None))
        lab.start()
        pool = Pool(lab, ps, tmp_path, registries, services, profile)
        made[-1] = (lab, pool)
        return pool

    try:
        yield make
    finally:
        for _, pool in made:
            if pool is not None:
                pool.close()
        for p in ps:
            p.signal(signal.SIGCONT)
            p.signal(signal.SIGKILL)
        for p in ps:
            p.stop()  # reaps it and closes its log
        for lab, _ in made:
            lab.close()
    left = [x for lab, _ in made for x in lab.leftovers()]
    assert not left, f"left behind: {left}"
    check_logs(ps)
