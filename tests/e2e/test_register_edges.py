"""`Register` / `AsyncRegister` at their edges, against a real registry subprocess on loopback:
an id already alive in the pool, a restart of the same id on the same address after a crash,
arguments refused at construction, and how long `stop()` takes."""

from __future__ import annotations

import asyncio
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from registry.client import NotFound, RpcClient
from registry.register import AsyncRegister, Register, RegisterError

from .helpers import Registry, free_port, procs, wait_for

GROUP = "edges"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    # LAN profile, as services run it (and a loaded machine cannot make it declare anyone dead)
    with procs() as ps:
        yield Registry(ps, tmp_path_factory.mktemp("edges"), "reg-edges", profile="lan").wait_ready()


def _listed(registry: Registry, group: str) -> dict[str, str]:
    """id -> addr of the group's services on the registry."""
    with RpcClient(registry.rpc, timeout=10.0) as c:
        try:
            return {s.id: s.addr for s in c.members(group)}
        except NotFound:
            return {}


def _matched(registry: Registry, group: str) -> tuple[str, str] | None:
    with RpcClient(registry.rpc, timeout=10.0) as c:
        try:
            s = c.match(group, "user-1")
        except NotFound:
            return None
        return s.id, s.addr


def _matches(registry: Registry, group: str, want: tuple[str, str]) -> Callable[[], bool]:
    return lambda: _matched(registry, group) == want


def _port_free(port: int) -> bool:
    """Both gossip sockets of `port` are closed: we can bind TCP and UDP there again."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            t.bind(("127.0.0.1", port))
            u.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _on_free_port(make: Callable[[int], Any], attempt: Callable[[Any], Any]) -> tuple[int, BaseException]:
    """Run `attempt(make(port))` on a free port; it must raise.  A port taken by another process
    between the probe and the bind ("cannot start gossip") is retried on another."""
    for _ in range(5):
        port = free_port()
        with pytest.raises(RegisterError) as info:
            attempt(make(port))
        if "cannot start gossip" not in str(info.value):
            return port, info.value
    raise AssertionError("no free port could be bound in 5 attempts")


def _holder_unaffected(registry: Registry, holder: Any, group: str, addr: str, set_tags: Callable[[dict[str, str]], Any]) -> None:
    assert _matched(registry, group) == (holder.id, addr)
    set_tags({"probe": "after-duplicate"})  # the holder still gossips: its update reaches the registry

    def updated() -> bool:
        with RpcClient(registry.rpc, timeout=10.0) as c:
            s = c.match(group, "user-1")
            return (s.id, s.addr, s.tags.get("probe")) == (holder.id, addr, "after-duplicate")

    wait_for(updated, 15, what="the holder's tag update at the registry")
    assert _listed(registry, group) == {holder.id: addr}


def test_duplicate_id_fails_start_naming_the_holder(registry: Registry) -> None:
    group = GROUP + "-dup"
    holder = Register("dup-1", "127.0.0.1:0", "", registry.gossip, group, "127.0.0.1:8301")
    holder.start()
    try:
        wait_for(lambda: _listed(registry, group) == {"dup-1": "127.0.0.1:8301"}, 15, what="holder listed")
        seconds: list[Register] = []

        def make(port: int) -> Register:
            seconds.append(Register("dup-1", f"127.0.0.1:{port}", "", registry.gossip, group, "127.0.0.1:8302"))
            return seconds[-1]

        t0 = time.monotonic()
        port, err = _on_free_port(make, lambda r: r.start())
        took = time.monotonic() - t0
        assert str(err) == (f"id 'dup-1' is taken by {holder.address} (alive in the pool); "
                            "pick another id or stop that one")
        assert took < 5.0, took  # known from the join's reply, not after a conflict query
        second = seconds[-1]
        assert second.agent is None and second.members() == []
        assert _port_free(port), "the refused register's gossip sockets are still open"
        assert not [t for t in threading.enumerate() if t.name == f"serf-dup-1-{port}"]
        second.stop()  # harmless: nothing to leave
        _holder_unaffected(registry, holder, group, "127.0.0.1:8301", holder.set_tags)
    finally:
        holder.stop()


async def test_duplicate_id_fails_async_start_naming_the_holder(registry: Registry) -> None:
    group = GROUP + "-adup"
    holder = AsyncRegister("adup-1", "127.0.0.1:0", "", [registry.gossip], group, "127.0.0.1:8401")
    await holder.start()
    try:
        await asyncio.to_thread(wait_for, lambda: _listed(registry, group) == {"adup-1": "127.0.0.1:8401"}, 15)
        for _ in range(5):
            port = free_port()
            second = AsyncRegister("adup-1", f"127.0.0.1:{port}", "", [registry.gossip], group, "127.0.0.1:8402")
            with pytest.raises(RegisterError) as info:
                await second.start()
            if "cannot start gossip" not in str(info.value):
                break
        assert str(info.value) == (f"id 'adup-1' is taken by {holder.address} (alive in the pool); "
                                   "pick another id or stop that one")
        assert second.agent is None and second.members() == []
        assert _port_free(port), "the refused register's gossip sockets are still open"
        await second.stop()

        def set_tags(tags: dict[str, str]) -> None:
            asyncio.run_coroutine_threadsafe(holder.set_tags(tags), loop).result(10)

        loop = asyncio.get_running_loop()
        await asyncio.to_thread(_holder_unaffected, registry, holder, group, "127.0.0.1:8401", set_tags)
    finally:
        await holder.stop()


def test_restart_after_a_crash_on_the_same_address_is_no_conflict(registry: Registry) -> None:
    """The old incarnation is still alive (or suspect) in the pool at our own address: it is us."""
    group = GROUP + "-crash"
    first = Register("crash-1", "127.0.0.1:0", "", registry.gossip, group, "127.0.0.1:8501")
    first.start()
    bind = first.address
    wait_for(lambda: _listed(registry, group) == {"crash-1": "127.0.0.1:8501"}, 15, what="first listed")
    agent, first.agent = first.agent, None
    assert agent is not None
    agent.shutdown()  # a crash: no leave
    again = Register("crash-1", bind, "", registry.gossip, group, "127.0.0.1:8502")
    again.start()
    try:
        wait_for(lambda: _listed(registry, group) == {"crash-1": "127.0.0.1:8502"}, 15, what="restart listed")
    finally:
        again.stop()


BAD: list[tuple[dict[str, Any], str]] = [
    ({"addr": ""}, r"^addr: empty address$"),
    ({"addr": "127.0.0.1"}, r"^addr: bad address '127.0.0.1': missing port"),
    ({"addr": ":8080"}, r"^addr: ':8080' has no host"),
    ({"addr": "127.0.0.1:0"}, r"^addr: '127.0.0.1:0': port 0 cannot be dialled"),
    ({"addr": "127.0.0.1:70000"}, r"^addr: .*out of range"),
    ({"addr": 8080}, r"^addr must be a string such as '10.0.0.5:8080', not int 8080$"),
    ({"bind": 7380}, r"^bind must be a string such as ':7380', not int 7380$"),
    ({"advertise": 7380}, r"^advertise must be a string"),
    ({"registries": 7370}, r"^registries must be 'host:port,host:port' or a list of such strings, not int$"),
    ({"registries": [7370]}, r"^registries: each address must be a string"),
    ({"registries": b"127.0.0.1:7370"}, r"^registries must be"),
    ({"registries": "127.0.0.1:0"}, r"^registries: '127.0.0.1:0': port 0"),
    ({"group": ""}, r"^group must not be empty$"),
    ({"group": None}, r"^group must be a string"),
    ({"id": ""}, r"^id must not be empty$"),
    ({"id": 7}, r"^id must be a string"),
    ({"replicas": 0}, r"^replicas must be a positive int, not 0$"),
    ({"replicas": "10"}, r"^replicas must be a positive int"),
    ({"weight": True}, r"^weight must be a positive int"),
    ({"tags": {"zone": 1}}, r"^tags must map str to str"),
    ({"tags": {"weight": "-1"}}, r"^tag 'weight' must be a positive integer"),
    ({"tags": {"blob": "x" * 600}}, r"^tags are \d+ bytes encoded, over the 512-byte limit of gossip metadata"),
    ({"encrypt": "not a key"}, r"^encrypt: the key must be standard base64 of 16, 24 or 32 bytes"),
    ({"leave_timeout": 0}, r"^leave_timeout must be a positive number"),
]


@pytest.mark.parametrize("cls", [Register, AsyncRegister])
@pytest.mark.parametrize(("change", "message"), BAD, ids=[next(iter(c)) + "=" + repr(next(iter(c.values())))[:20] for c, _ in BAD])
def test_bad_arguments_are_refused_at_construction(cls: type, change: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {"id": "svc", "bind": ":0", "advertise": "", "registries": "127.0.0.1:7370",
                            "group": "g", "addr": "127.0.0.1:8080"}
    args.update({k: v for k, v in change.items() if k in args})
    kw = {k: v for k, v in change.items() if k not in args}
    with pytest.raises(RegisterError, match=message):
        cls(**args, **kw)


def test_good_arguments_still_pass() -> None:
    r = Register("svc", ":0", "", ["127.0.0.1:7370", "reg.example:7371"], "g", "svc.example:8080",
                 tags={"zone": "z"}, replicas=5, weight=2, encrypt="ivD4T3l/HRPFJ8JLR/KEEA==", leave_timeout=0.5)
    assert r.tags == {"zone": "z", "group": "g", "addr": "svc.example:8080", "replicas": "5", "weight": "2",
                      "dc": "dc1"}  # the datacenter= option's default (issue 17)
    assert Register("svc", "[::1]:0", "", "127.0.0.1", "g", "[::1]:8080").addr == "[::1]:8080"


def test_set_tags_refuses_oversized_tags_and_keeps_the_old_ones(registry: Registry) -> None:
    group = GROUP + "-tags"
    with Register("tags-1", "127.0.0.1:0", "", registry.gossip, group, "127.0.0.1:8601") as reg:
        before = reg.tags
        with pytest.raises(RegisterError, match=r"^tags are \d+ bytes encoded, over the 512-byte limit"):
            reg.set_tags({"blob": "x" * 600})
        with pytest.raises(RegisterError, match=r"^addr: empty address$"):
            reg.set_tags({"addr": ""})
        assert reg.tags == before and reg.addr == "127.0.0.1:8601"
        reg.set_tags({"addr": "127.0.0.1:8602"})  # still usable after a refusal
        wait_for(lambda: _listed(registry, group) == {"tags-1": "127.0.0.1:8602"}, 15, what="new addr listed")


def test_stop_returns_once_the_registry_dropped_the_service(registry: Registry) -> None:
    group = GROUP + "-stop"
    took: list[float] = []
    for i in range(3):
        reg = Register(f"stop-{i}", "127.0.0.1:0", "", registry.gossip, group, "127.0.0.1:8701")
        reg.start()
        wait_for(_matches(registry, group, (f"stop-{i}", "127.0.0.1:8701")), 15, what="listed")
        t0 = time.monotonic()
        reg.stop()
        took.append(time.monotonic() - t0)
        assert _matched(registry, group) is None  # dropped by the time stop() returned
        assert reg.agent is None and not [t for t in threading.enumerate() if t.name.startswith(f"serf-stop-{i}-")]
    assert sorted(took)[1] < 0.5, took  # median; was 1.7-2.0 s at the LAN profile (the full Serf leave sequence)


async def test_async_stop_returns_once_the_registry_dropped_the_service(registry: Registry) -> None:
    group = GROUP + "-astop"
    took: list[float] = []
    for i in range(3):
        reg = AsyncRegister(f"astop-{i}", "127.0.0.1:0", "", [registry.gossip], group, "127.0.0.1:8801")
        await reg.start()
        await asyncio.to_thread(wait_for, _matches(registry, group, (f"astop-{i}", "127.0.0.1:8801")), 15)
        t0 = time.monotonic()
        await reg.stop()
        took.append(time.monotonic() - t0)
        assert await asyncio.to_thread(_matched, registry, group) is None
        assert reg.agent is None
    assert sorted(took)[1] < 0.5, took


async def _timed_stops(sync: Register, aio: AsyncRegister) -> tuple[float, float]:
    """Seconds each stop() blocked: the sync one on a thread (its gossip thread answers meanwhile), then
    the async one on this loop."""
    t0 = time.monotonic()
    await asyncio.to_thread(sync.stop)
    took_sync = time.monotonic() - t0
    t0 = time.monotonic()
    await aio.stop()
    return took_sync, time.monotonic() - t0


async def test_stop_is_bounded_by_leave_timeout_when_no_registry_answers(tmp_path: Path) -> None:
    """A registry that takes our push/pull and never answers (SIGSTOP: the kernel still accepts)
    holds stop() no longer than leave_timeout, for both drivers."""
    with procs() as ps:
        frozen = Registry(ps, tmp_path, "reg-frozen", profile="lan").wait_ready()
        sync = Register("frozen-1", "127.0.0.1:0", "", frozen.gossip, GROUP + "-frozen", "127.0.0.1:8901",
                        leave_timeout=1.0)
        sync.start()
        aio = AsyncRegister("frozen-2", "127.0.0.1:0", "", frozen.gossip, GROUP + "-frozen", "127.0.0.1:8902",
                            leave_timeout=1.0)
        await aio.start()
        frozen.proc.signal(signal.SIGSTOP)
        try:
            took_sync, took_async = await _timed_stops(sync, aio)
        finally:
            frozen.proc.signal(signal.SIGKILL)  # no graceful leave to wait for at the end
        assert 0.9 < took_sync < 3.0 and 0.9 < took_async < 3.0, (took_sync, took_async)
        assert sync.agent is None and aio.agent is None


async def test_stop_returns_at_once_when_nobody_is_left_to_tell(tmp_path: Path) -> None:
    """The registry left the pool first: there is no one to acknowledge our leave, nor to gossip
    it to (before: Serf's LeavePropagateDelay, 1 s at the LAN profile, was still waited).  One
    pool per driver, so that the two registers are not each other's audience."""
    with procs() as ps:
        ra = Registry(ps, tmp_path, "reg-gone-a", profile="lan")
        rb = Registry(ps, tmp_path, "reg-gone-b", profile="lan")
        ra.wait_ready()
        rb.wait_ready()
        sync = Register("alone-1", "127.0.0.1:0", "", ra.gossip, GROUP + "-alone", "127.0.0.1:9101")
        sync.start()
        aio = AsyncRegister("alone-2", "127.0.0.1:0", "", rb.gossip, GROUP + "-alone", "127.0.0.1:9102")
        await aio.start()

        def nobody_alive(reg: Register | AsyncRegister) -> bool:
            return all(m.status.name != "ALIVE" for m in reg.members() if m.name != reg.id)

        for r in (ra, rb):
            r.proc.signal(signal.SIGTERM)  # a graceful leave: its intent reaches us at once
        await asyncio.to_thread(wait_for, lambda: nobody_alive(sync), 30)
        deadline = time.monotonic() + 30
        while not nobody_alive(aio):  # the async register's gossip runs on this loop: no thread
            assert time.monotonic() < deadline, "the async register never saw its registry leave"
            await asyncio.sleep(0.01)
        took_sync, took_async = await _timed_stops(sync, aio)
        assert took_sync < 0.5 and took_async < 0.5, (took_sync, took_async)
