"""Two datacenters of two registries each, joined over the WAN pool (real sockets on loopback, fast profile).

One registry of each datacenter runs in-process, so its `WanPool.peers()` (what a follower of the
other datacenter reads) is checked directly; the other two are `registry` processes started with
the WAN flags, which the in-process ones reach only through -wan-join.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

from registry.catalog import REGISTRY_GROUP
from registry.register import AsyncRegister
from registry.serf.member import MemberStatus
from registry.server import RegistryServer
from registry.wan import WanPeer
from tests.e2e.helpers import procs

from .procs import server_config, started, until, wan_registry

KEY = base64.b64encode(os.urandom(32)).decode()
OTHER_KEY = base64.b64encode(os.urandom(16)).decode()


def _remote(server: RegistryServer, dc: str) -> list[WanPeer]:
    assert server.wan is not None
    return server.wan.peers().get(dc, [])


def _alive(server: RegistryServer, dc: str) -> dict[str, str]:
    """name -> rpc address of `dc`'s alive registries in `server`'s WAN pool, once each has an RTT estimate."""
    rows = _remote(server, dc)
    if any(p.status is MemberStatus.ALIVE and p.rtt_ms is None for p in rows):
        return {}
    return {p.name: p.rpc_addr for p in rows if p.status is MemberStatus.ALIVE}


async def test_two_datacenters_see_each_other_and_a_killed_registry_fails(tmp_path: Path) -> None:
    with procs() as ps:
        b1, b1_line = wan_registry(ps, tmp_path, "b", "dc1", "-wan-encrypt", KEY)
        b2, b2_line = wan_registry(ps, tmp_path, "b", "dc2", "-wan-encrypt", KEY)
        a1 = await started(server_config("a", "dc1", lan=[b1.gossip], wan_join=[b1_line["wan"], b2_line["wan"]],
                                         key=KEY))
        a2 = await started(server_config("a", "dc2", lan=[b2.gossip], wan_join=[b2_line["wan"]], key=KEY))
        web = AsyncRegister("web-2", "127.0.0.1:0", "", a2.gossip_address, "web", "127.0.0.1:8080",
                            profile="fast", datacenter="dc2")
        try:
            dc2 = {"a.dc2": a2.grpc_address, "b.dc2": b2_line["grpc"]}
            dc1 = {"a.dc1": a1.grpc_address, "b.dc1": b1_line["grpc"]}
            await until(lambda: _alive(a1, "dc2") == dc2, 30, "dc1 seeing dc2's two registries, with RTTs")
            await until(lambda: _alive(a2, "dc1") == dc1, 30, "dc2 seeing dc1's two registries, with RTTs")
            for proc, names in ((b1.proc, ("a.dc2", "b.dc2")), (b2.proc, ("a.dc1", "b.dc1"))):  # the processes too
                await until(lambda: all(f"{n}=alive" in proc.output() for n in names), 30,  # noqa: B023
                            f"{proc.log_path.name} logging {names} alive in the wan pool")
            assert set(a1.wan.peers() if a1.wan else {}) == {"dc2"}  # its own datacenter is not a remote one
            # the LAN pools stay apart: each catalog holds its own datacenter's registries only
            assert {s.id: s.tags["dc"] for s in a1.catalog.members(REGISTRY_GROUP)} == {"a": "dc1", "b": "dc1"}
            assert {s.id: s.tags["dc"] for s in a2.catalog.members(REGISTRY_GROUP)} == {"a": "dc2", "b": "dc2"}
            await web.start()
            await until(lambda: [s.tags["dc"] for s in a2.catalog.members("web")] == ["dc2"], 30, "web-2 in dc2")
            assert "web" not in a1.catalog.groups(), "dc2's service reached dc1's LAN catalog"

            wan_members = next(m for m in a1._collect() if m.name == "registry_wan_members")  # on /metrics
            assert sorted((labels["datacenter"], labels["status"], n) for labels, n in wan_members.samples) == [
                ("dc1", "alive", 2.0), ("dc2", "alive", 2.0)]

            assert a1.wan is not None
            calls: list[int] = []
            unsubscribe = a1.wan.subscribe(lambda: calls.append(1))
            gone: list[int] = []
            a1.wan.subscribe(lambda: gone.append(1))()  # unsubscribed at once: never called
            b2.proc.p.kill()  # no leave: dc1 must find it failed by itself
            await until(lambda: [(p.name, p.status) for p in _remote(a1, "dc2")]
                        == [("a.dc2", MemberStatus.ALIVE), ("b.dc2", MemberStatus.FAILED)], 30,
                        "b.dc2 failed in dc1's view, a.dc2 first")
            assert calls and not gone, (calls, gone)  # the subscriber heard of the failure
            unsubscribe()
        finally:
            await web.stop()
            await a2.stop()
            await a1.stop()


async def test_a_datacenter_with_another_wan_key_cannot_join(tmp_path: Path) -> None:
    a1 = await started(server_config("a", "dc1", key=KEY))
    try:
        assert a1.wan is not None
        with procs() as ps:
            c3, _ = wan_registry(ps, tmp_path, "c", "dc3", "-wan-encrypt", OTHER_KEY, "-wan-join", a1.wan.address)
            # it says why, naming the WAN key (memberlist's message names the LAN's -encrypt), and retries
            await until(lambda: c3.proc.output().count('"wan join failed; will retry"') >= 2, 30, "two failed joins")
            line = next(x for x in c3.proc.output().splitlines() if '"wan join failed' in x)
            assert "same -wan-encrypt key" in line, line
            assert a1.wan.peers() == {}
            assert [m.name for m in a1.wan.agent.members()] == ["a.dc1"]
    finally:
        await a1.stop()
