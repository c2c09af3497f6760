"""How checks run in a real service: off the gossip thread, thresholds, TTL, deregistration, asyncio.

A registry process on loopback at the LAN profile (no false suspicion on a loaded machine) and
services in this process.  "Not suspected" is read three ways while a check or the app hangs: the
registry lists the service alive, the service never had to refute a suspicion (memberlist's
``refute`` counter), and its own probes of the registry keep succeeding (``probe.ok`` grows), which
they could not if the check ran on the gossip thread.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from registry.register import (
    AsyncRegister,
    CallableCheck,
    Health,
    HttpCheck,
    Register,
    RegisterError,
    TcpCheck,
    TtlCheck,
)
from tests.e2e.helpers import TOLERANT, Registry, env, procs, wait_for
from tests.logcheck import bugs_in

from .checks_support import HttpTarget, Pool, TcpTarget


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    with procs() as ps:
        p = Pool(Registry(ps, tmp_path_factory.mktemp("checks"), "reg-runtime", profile=TOLERANT).wait_ready())
        try:
            yield p
        finally:
            p.close()


def _register(pool: Pool, ident: str, *checks: object, **kw: object) -> Register:
    return Register(ident, "127.0.0.1:0", "", pool.registry.gossip, ident, "127.0.0.1:8001",
                    profile=TOLERANT, checks=list(checks), **kw)  # type: ignore[arg-type]


def _gossip_runs_on(reg: Register, pool: Pool, probes: int = 2) -> None:
    """Wait until the service's own probes of the registry succeeded `probes` more times, then check
    nobody suspected it: no refutation, listed alive."""
    assert reg.agent is not None
    before = reg.agent.stats["probe.ok"]
    wait_for(lambda: reg.agent is not None and reg.agent.stats["probe.ok"] >= before + probes, 15,
             what="the service's gossip probing on")
    assert reg.agent.stats["refute"] == 0, reg.agent.stats
    row = pool.published(reg.group, reg.id)
    assert row is not None and row[2] == "alive", row


def test_a_hung_check_counts_as_failed_at_its_timeout_never_overlaps_and_gossip_runs_on(pool: Pool) -> None:
    release = threading.Event()
    release.set()
    calls: list[float] = []

    def db() -> bool:
        calls.append(time.monotonic())
        release.wait()
        return True

    reg = _register(pool, "chk-hang", CallableCheck(db, name="db", interval=0.05, timeout=0.2,
                                                    failures_before_critical=2))
    try:
        reg.start()
        pool.wait_health("chk-hang", "chk-hang", "passing")
        release.clear()
        row = pool.wait_health("chk-hang", "chk-hang", "critical", "db: ")
        assert "timed out" in row[1] or "still running" in row[1], row
        hung_calls = len(calls)
        _gossip_runs_on(reg, pool)
        assert len(calls) == hung_calls, "a hung check was called again while its call was still running"
        assert reg.checks()[0].last_output.startswith("previous run still running"), reg.checks()
        release.set()
        pool.wait_health("chk-hang", "chk-hang", "passing")
        assert len(calls) > hung_calls
    finally:
        release.set()
        reg.stop()


def test_ttl_lapses_while_the_app_thread_is_blocked_and_the_service_stays_in_the_pool(pool: Pool) -> None:
    running, stop = threading.Event(), threading.Event()
    running.set()
    reg = _register(pool, "chk-ttl", TtlCheck(0.5, name="app"))

    def app() -> None:  # the application's own loop: heartbeats while it works
        while not stop.is_set():
            running.wait()
            reg.heartbeat("serving")
            stop.wait(0.05)

    worker = threading.Thread(target=app, daemon=True)
    anchor = pool.anchor("chk-ttl")
    try:
        reg.start()
        worker.start()
        pool.wait_health("chk-ttl", "chk-ttl", "passing")
        _routed(pool, "chk-ttl", "chk-ttl", True)
        running.clear()  # the app hangs; gossip does not
        pool.wait_health("chk-ttl", "chk-ttl", "critical", "app: TTL expired")
        assert reg.health[0] is Health.CRITICAL
        _routed(pool, "chk-ttl", "chk-ttl", False)  # out of Match: its keys go to the anchor
        _gossip_runs_on(reg, pool, probes=1)
        running.set()
        pool.wait_health("chk-ttl", "chk-ttl", "passing")
        _routed(pool, "chk-ttl", "chk-ttl", True)
        stop.set()
        worker.join(5)  # its heartbeats would set passing again
        reg.set_status("warning", "queue 90% full", check="app")
        pool.wait_health("chk-ttl", "chk-ttl", "warning", "app: queue 90% full")
    finally:
        stop.set()
        running.set()
        worker.join(5)
        reg.stop()
        anchor.stop()


def _routed(pool: Pool, group: str, ident: str, want_in: bool) -> None:
    """Wait until Match sends some of the test keys to `ident` (or none)."""
    wait_for(lambda: (ident in pool.routed(group)) == want_in, 20,
             what=f"{ident} {'back in' if want_in else 'out of'} Match")


def _published_changes(caplog: pytest.LogCaptureFixture, ident: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"health of {ident}: ")]


def test_one_failure_below_the_threshold_and_flapping_publish_nothing(pool: Pool, caplog: pytest.LogCaptureFixture) -> None:
    """The real runner and publisher: a single failure (threshold 3) and a check alternating every run
    (thresholds 2) leave the published health as it was: no tag update is gossiped for them."""
    caplog.set_level(logging.INFO, logger="registry.register")
    runs = {"once": 0, "flap": 0}

    def once() -> bool:
        runs["once"] += 1
        return runs["once"] != 5  # the 5th run fails

    def flap() -> bool:
        runs["flap"] += 1
        return runs["flap"] % 2 == 1  # pass, fail, pass, fail, ...

    reg = _register(pool, "chk-flap", CallableCheck(once, name="once", interval=0.02, failures_before_critical=3),
                    CallableCheck(flap, name="flap", interval=0.02, success_before_passing=2,
                                  failures_before_critical=2))
    try:
        reg.start()
        pool.wait_health("chk-flap", "chk-flap", "passing")
        wait_for(lambda: runs["once"] >= 12 and runs["flap"] >= 30, 20, what="30 flapping runs")
        assert reg.health == (Health.PASSING, "")
        assert pool.published("chk-flap", "chk-flap") == ("passing", "", "alive")
        changes = _published_changes(caplog, "chk-flap")
        assert changes.count("health of chk-flap: passing") == 1, changes
        assert changes[-1] == "health of chk-flap: passing", changes  # nothing published since
    finally:
        reg.stop()


def test_deregister_critical_after_leaves_the_pool_and_says_why(pool: Pool, caplog: pytest.LogCaptureFixture) -> None:
    target = TcpTarget()
    target.close()  # nothing listens: critical from the first run
    reg = _register(pool, "chk-dereg", TcpCheck(f"127.0.0.1:{target.port}", interval=0.05),
                    deregister_critical_after=0.5)
    reg.start()
    try:
        wait_for(lambda: pool.published("chk-dereg", "chk-dereg") in (None, ("critical", "tcp: Connection refused", "left")),
                 20, what="chk-dereg left the pool")
        wait_for(lambda: reg.agent is None, 10, what="the register stopped")
        assert reg.deregistered is not None and reg.deregistered.startswith("critical for"), reg.deregistered
        assert any("deregisters itself" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
        with pytest.raises(RegisterError, match="no TtlCheck"):
            reg.heartbeat()
    finally:
        reg.stop()


async def test_async_register_runs_coroutine_blocking_and_ttl_checks_on_its_loop(pool: Pool) -> None:
    target = HttpTarget()
    hang = asyncio.Event()
    hang.set()

    async def cache() -> str:
        await hang.wait()
        return "passing"

    reg = AsyncRegister("chk-async", "127.0.0.1:0", "", pool.registry.gossip, "chk-async", "127.0.0.1:8001",
                        profile=TOLERANT, checks=[
                            HttpCheck(target.url, name="web", interval=0.05, timeout=2.0),
                            CallableCheck(cache, name="cache", interval=0.05, timeout=0.2),
                            TtlCheck(5.0, name="app")])
    wait = asyncio.to_thread
    try:
        await reg.start()
        await wait(pool.wait_health, "chk-async", "chk-async", "critical", "app: not yet run")
        await asyncio.to_thread(reg.heartbeat)  # from another thread: handed to the loop
        await wait(pool.wait_health, "chk-async", "chk-async", "passing")
        target.code = 503
        await wait(pool.wait_health, "chk-async", "chk-async", "critical", "web: HTTP 503")
        target.code = 200
        await wait(pool.wait_health, "chk-async", "chk-async", "passing")
        hang.clear()  # the coroutine now hangs: cancelled at its timeout, each run
        await wait(pool.wait_health, "chk-async", "chk-async", "critical", "cache: timed out")
        hang.set()
        await wait(pool.wait_health, "chk-async", "chk-async", "passing")
        assert [s.name for s in reg.checks()] == ["web", "cache", "app"] and reg.health == (Health.PASSING, "")
    finally:
        await reg.stop()
        target.close()


def test_a_sync_service_with_an_http_check_still_loads_no_grpc_asyncio_or_ssl(pool: Pool) -> None:
    target = HttpTarget()
    code = f"""
import sys, time
from registry.register import Register, HttpCheck, TcpCheck, Health
r = Register("chk-light", "127.0.0.1:0", "", "{pool.registry.gossip}", "chk-light", "127.0.0.1:9", profile="lan",
             checks=[HttpCheck("{target.url}", interval=0.05), TcpCheck("127.0.0.1:{target.server.server_address[1]}", interval=0.05)])
r.start()
deadline = time.monotonic() + 30
while r.health[0] is not Health.PASSING and time.monotonic() < deadline:
    time.sleep(0.01)
heavy = ("grpc", "asyncio", "ssl", "_ssl", "cryptography", "http")
loaded = sorted(m for m in sys.modules if m.split(".")[0] in heavy)
r.stop()
print(r.health[0].word, "HEAVY" if loaded else "CLEAN", loaded)
"""
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env(), timeout=120)
    finally:
        target.close()
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("passing CLEAN"), out.stdout
    assert not bugs_in(out.stderr), out.stderr


def test_bad_check_arguments_are_one_clear_line_before_anything_starts(pool: Pool) -> None:
    seeds = pool.registry.gossip

    def make(**kw: object) -> Register:
        return Register("s", "127.0.0.1:0", "", seeds, "g", "127.0.0.1:1", **kw)  # type: ignore[arg-type]

    with pytest.raises(RegisterError, match="checks must be a list"):
        make(checks=TcpCheck("127.0.0.1:1"))
    with pytest.raises(RegisterError, match="is not a check"):
        make(checks=["http://x/"])
    with pytest.raises(RegisterError, match="unique"):
        make(checks=[TcpCheck("127.0.0.1:1", name="a"), TcpCheck("127.0.0.1:2", name="a")])
    with pytest.raises(RegisterError, match="deregister_critical_after needs checks"):
        make(deregister_critical_after=5)
    with pytest.raises(RegisterError, match="deregister_critical_after must be"):
        make(checks=[TtlCheck(1)], deregister_critical_after=0)
    with pytest.raises(RegisterError, match="belong to the checks"):
        make(checks=[TtlCheck(1)], tags={"health": "passing"})
    with pytest.raises(RegisterError, match="checks' health tags"):
        make(checks=[TtlCheck(1)], tags={"big": "x" * 400})
    make(tags={"big": "x" * 400})  # fits without checks: their room is kept only when there are some
    reg = make(checks=[TtlCheck(1, name="app"), TcpCheck("127.0.0.1:1")])
    with pytest.raises(RegisterError, match="no TtlCheck named 'tcp'"):
        reg.heartbeat(check="tcp")
    with pytest.raises(RegisterError, match="passing, warning or critical"):
        reg.set_status("degraded")
    with pytest.raises(RegisterError, match="belong to the checks"):
        reg.set_tags({"health_note": "x"})
    assert reg.health == (Health.CRITICAL, "tcp: not yet run")  # before start: the initial statuses
    with pytest.raises(RegisterError, match="no TtlCheck"):
        make(checks=[TcpCheck("127.0.0.1:1")]).heartbeat()
