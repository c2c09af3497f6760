"""`register`: a service joins the pool, shows up in the registry, leaves; no grpc loaded."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from registry.register import AsyncRegister, Register, RegisterError
from tests.logcheck import bugs_in

from .helpers import Registry, env, free_port, procs, wait_for


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with procs() as ps:
        yield Registry(ps, tmp_path_factory.mktemp("reg"), "reg-register").wait_ready()


def test_bad_arguments_raise_clearly() -> None:
    with pytest.raises(RegisterError, match="id"):
        Register("", ":0", "", "127.0.0.1:7370", "g", "127.0.0.1:1")
    with pytest.raises(RegisterError, match="bind"):
        Register("s", "nohost:x", "", "127.0.0.1:7370", "g", "127.0.0.1:1")
    with pytest.raises(RegisterError, match="registries"):
        Register("s", ":0", "", "", "g", "127.0.0.1:1")
    with pytest.raises(RegisterError, match="profile"):
        Register("s", ":0", "", "127.0.0.1:7370", "g", "127.0.0.1:1", profile="moon")  # type: ignore[arg-type]  # a bad value at run time


def test_start_raises_when_no_registry_answers() -> None:
    dead = free_port()
    reg = Register("lonely", "127.0.0.1:0", "", f"127.0.0.1:{dead}", "g", "127.0.0.1:1", profile="fast")
    t0 = time.monotonic()
    with pytest.raises(RegisterError, match="no registry answered"):
        reg.start()
    assert time.monotonic() - t0 < 30
    reg.stop()  # harmless after a failed start


def test_register_is_matched_then_leaves(registry: Registry) -> None:
    events: list[tuple[str, str]] = []

    class H:
        def on_member_join(self, m: Any) -> None:
            events.append(("join", m.name))

        def on_member_leave(self, m: Any) -> None:
            events.append(("leave", m.name))

    with Register("svc-a", "127.0.0.1:0", "", registry.gossip, "reg-test", "127.0.0.1:8001",
                  profile="fast", handler=H(), weight=2) as reg:
        assert reg.address.startswith("127.0.0.1:")
        wait_for(lambda: "svc-a" in registry.ids("reg-test"), 10, what="svc-a in Members")
        from registry.client import RpcClient

        with RpcClient(registry.rpc) as c:
            svc = c.match("reg-test", "user-1")
            assert (svc.id, svc.addr) == ("svc-a", "127.0.0.1:8001")
            assert svc.tags.get("replicas") == "10000" and svc.tags.get("weight") == "2"
        wait_for(lambda: ("join", "reg-register") in events, 10, what="handler saw the registry join")
        reg.set_tags({"addr": "127.0.0.1:8002", "zone": "z1"})

        def moved() -> bool:
            with RpcClient(registry.rpc) as c:
                s = c.members("reg-test")[0]
                return s.addr == "127.0.0.1:8002" and s.tags.get("zone") == "z1"

        wait_for(moved, 10, what="tag update seen by the registry")
        t0 = time.monotonic()
    wait_for(lambda: "svc-a" not in registry.ids("reg-test"), 10, interval=0.02, what="svc-a gone")
    assert time.monotonic() - t0 < 1.0 + reg.leave_timeout


async def test_async_register(registry: Registry) -> None:
    async with AsyncRegister("svc-async", "127.0.0.1:0", "", [registry.gossip], "reg-async", "127.0.0.1:8100",
                             profile="fast") as reg:
        assert reg.members()
        await asyncio.to_thread(wait_for, lambda: "svc-async" in registry.ids("reg-async"), 10)
    await asyncio.to_thread(wait_for, lambda: "svc-async" not in registry.ids("reg-async"), 10)


def test_register_does_not_import_grpc_asyncio_or_ssl(registry: Registry) -> None:
    """A sync service pays for gossip only: no grpc, and no asyncio (which drags in ssl/OpenSSL)."""
    code = f"""
import sys
from registry.register import Register
r = Register("svc-nogrpc", "127.0.0.1:0", "", "{registry.gossip}", "reg-nogrpc", "127.0.0.1:9", profile="fast")
r.start()
heavy = ("grpc", "asyncio", "ssl", "_ssl", "cryptography")
loaded = sorted(m for m in sys.modules if m.split(".")[0] in heavy)
r.stop()
print("HEAVY" if loaded else "CLEAN", loaded)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env(), timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("CLEAN"), out.stdout
    assert not bugs_in(out.stderr), out.stderr


def test_one_dead_seed_is_tolerated(registry: Registry) -> None:
    dead = f"127.0.0.1:{free_port()}"
    reg = Register("svc-seeds", "127.0.0.1:0", "", f"{dead},{registry.gossip}", "reg-seeds", "127.0.0.1:8200",
                   profile="fast", replicas=None)
    assert reg.start() == 1
    try:
        assert "replicas" not in reg.tags
        wait_for(lambda: "svc-seeds" in registry.ids("reg-seeds"), 10)
    finally:
        reg.stop()
    assert reg.members() == []  # stopped: no gossip thread left
    assert not [t for t in threading.enumerate() if t.name.startswith("serf-svc-seeds")]


async def test_async_handlers_run_to_the_end_and_their_failures_are_logged(
        registry: Registry, caplog: pytest.LogCaptureFixture) -> None:
    """An async handler's coroutine is kept until it ends (the loop holds tasks only weakly), and its
    exception is logged like a sync handler's (before: asyncio's "Task exception was never retrieved",
    if ever, at garbage collection)."""
    seen: list[str] = []

    class Handler:
        async def on_member_join(self, m: Any) -> None:
            await asyncio.sleep(0)
            seen.append(m.name)
            raise RuntimeError(f"boom on {m.name}")

        def on_member_leave(self, m: Any) -> None:
            pass

        def on_member_update(self, m: Any) -> None:
            pass

    async with AsyncRegister("svc-async-h", "127.0.0.1:0", "", [registry.gossip], "reg-async-h", "127.0.0.1:8101",
                             profile="fast", handler=Handler()) as reg:
        deadline = time.monotonic() + 10
        def failed() -> list[logging.LogRecord]:
            return [r for r in caplog.records if r.getMessage().startswith("handler on_member_join failed")]

        # each join's task ends, is logged and is let go (its done callback runs a loop turn after it ends)
        while len(failed()) < len(seen) or not seen or reg._handler_tasks:
            assert time.monotonic() < deadline, (seen, reg._handler_tasks, [r.getMessage() for r in caplog.records])
            await asyncio.sleep(0.01)
        assert all(r.exc_info is not None and "boom on" in str(r.exc_info[1]) for r in failed())
