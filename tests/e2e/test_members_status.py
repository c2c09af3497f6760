"""`registry members` lists every member with its Serf status, as `serf members` does (issue 12).

Real registries and services on loopback: a service SIGKILLed shows as "failed", one that stops
gracefully as "left", a running one as "alive", in `registry members` and in Members(all=True)
on both gRPC fronts; Members(group) and Match, which routing reads, return the live one only.
Before this, the registry's answers carried no status and listed live members only.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import Iterator
from functools import partial

import grpc
import pytest

from registry.client import AsyncRpcClient, InvalidArgument, NotFound, RpcClient
from registry.memberlist.config import Config
from registry.register import Register
from registry.serf.agent import SerfAgent
from registry.serf.config import SerfConfig
from registry.serf.events import EventType, MemberEvent
from registry.server import RegistryServer, ServerConfig
from registry.v1 import registry_pb2 as pb
from registry.v1 import registry_pb2_grpc as pb_grpc

from .helpers import Registry, Service, env, procs, registry_cmd, wait_for

GROUP = "web"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(registry_cmd(*args), check=False, capture_output=True, text=True, env=env(), timeout=60)


def _statuses(rpc: str, group: str = GROUP) -> dict[str, str]:
    with RpcClient(rpc, timeout=10) as c:
        return {s.id: s.status for s in c.members(group, all=True)}


def _listed(r: Registry, ids: set[str]) -> bool:
    return r.ids(GROUP) == ids


def _says(r: Registry, statuses: dict[str, str]) -> bool:
    return _statuses(r.rpc) == statuses


def _rows(stdout: str) -> dict[str, list[str]]:
    """`registry members` lines by id: [ID, GROUP, ADDR, STATUS, HEALTH, KIND, TAGS]."""
    return {ln.split()[0]: ln.split() for ln in stdout.splitlines()}


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Registry, Registry]]:
    """Two registries (native and grpcio fronts) and three services of GROUP: "up" keeps running,
    "stopped" left gracefully (Register.stop), "killed" (a process) got SIGKILL."""
    tmp = tmp_path_factory.mktemp("members-status")
    with procs() as ps:
        r1 = Registry(ps, tmp, "r1")
        r2 = Registry(ps, tmp, "r2", [r1.gossip], "-rpc-engine", "grpcio")
        killed = Service(ps, tmp, "killed", [r1.gossip], group=GROUP)
        up = Register("up", "127.0.0.1:0", "", r1.gossip, GROUP, "127.0.0.1:7001", profile="fast")
        stopped = Register("stopped", "127.0.0.1:0", "", r1.gossip, GROUP, "127.0.0.1:7002", profile="fast")
        up.start()
        try:
            stopped.start()
            killed.wait_registered()
            for r in (r1, r2):
                wait_for(partial(_listed, r, {"up", "stopped", "killed"}), 60, what=f"{r.id}: 3 services")
            stopped.stop()
            killed.proc.p.send_signal(signal.SIGKILL)
            killed.proc.wait(10)
            want = {"up": "alive", "stopped": "left", "killed": "failed"}
            for r in (r1, r2):
                wait_for(partial(_says, r, want), 60, interval=0.1, what=f"{r.id}: {want}")
            yield r1, r2
        finally:
            up.stop()


def test_members_all_says_each_status_and_routing_sees_the_live_one_only(pool: tuple[Registry, Registry]) -> None:
    for r in pool:  # native front, grpcio front
        with RpcClient(r.rpc, timeout=10) as c:
            every = c.members(GROUP, all=True)
            assert [(s.id, s.status) for s in every] == [("killed", "failed"), ("stopped", "left"), ("up", "alive")]
            assert {s.id: s.addr for s in every}["stopped"] == "127.0.0.1:7002" and every[0].tags["group"] == GROUP
            live = c.members(GROUP)
            assert [(s.id, s.status) for s in live] == [("up", "")]  # the routing answer: live, no status
            assert {s.id for s in c.match_batch(GROUP, [f"user-{i}" for i in range(200)])} == {"up"}
            assert [s.id for s in c.match(GROUP, "user-1", 3)] == ["up"]
            registries = c.members("", all=True)  # "" with all: every group
            assert {(s.group, s.id, s.status) for s in registries} >= {
                ("registry-group", "r1", "alive"), ("registry-group", "r2", "alive"), (GROUP, "killed", "failed")}
            assert [(s.group, s.id) for s in registries] == sorted((s.group, s.id) for s in registries)
            with pytest.raises(NotFound, match="'nosuch'"):
                c.members("nosuch", all=True)


def test_registry_members_prints_a_status_column_and_filters_by_it(pool: tuple[Registry, Registry]) -> None:
    r1, r2 = pool
    m = _cli("members", "-rpc", r1.rpc)
    assert m.returncode == 0 and m.stderr == "", m
    rows = _rows(m.stdout)
    assert {k: v[3] for k, v in rows.items()} == {
        "r1": "alive", "r2": "alive", "up": "alive", "stopped": "left", "killed": "failed"}, m.stdout
    assert rows["stopped"][1:3] == [GROUP, "127.0.0.1:7002"] and "group=web" in rows["stopped"][6], m.stdout
    assert {v[4] for v in rows.values()} == {"passing"}, m.stdout  # no checks: every one passing
    failed = _cli("members", "-rpc", r2.rpc, "-group", GROUP, "-status", "failed")  # grpcio front
    assert failed.returncode == 0 and list(_rows(failed.stdout)) == ["killed"], failed
    bad = _cli("members", "-rpc", r1.rpc, "-status", "dead")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "-status" in bad.stderr, bad


async def test_members_all_in_process_lists_services_only_with_their_ring_parameters() -> None:
    """One registry in this process, a service-tagged Serf agent and a plain one (no group tag):
    the plain one is in the pool but is no service and is not listed; a live member carries its
    ring's replicas and weight, one that vanished (shut down, no leave: failed) none."""
    fast = Config.fast(bind_addr="127.0.0.1", bind_port=0)
    server = RegistryServer(ServerConfig(id="r-in", bind=("127.0.0.1", 0), addr=("127.0.0.1", 0), profile="fast"))
    agents: list[SerfAgent] = []
    await server.start()
    try:
        for name, tags in (("plain", {}), ("svc", {"group": GROUP, "addr": "127.0.0.1:7100", "weight": "3"}),
                           ("gone", {"group": GROUP, "addr": "127.0.0.1:7101"})):
            agent = SerfAgent(SerfConfig(name=name, tags=tags, memberlist=fast))
            agents.append(agent)
            await agent.start()
            await agent.join([server.gossip_address])
        await agents[2].shutdown()
        async with AsyncRpcClient(server.grpc_address, timeout=10) as c:
            deadline = asyncio.get_running_loop().time() + 30
            while {s.id: s.status for s in await c.members(GROUP, all=True)} != {"svc": "alive", "gone": "failed"}:
                assert asyncio.get_running_loop().time() < deadline, await c.members(GROUP, all=True)
                await asyncio.sleep(0.05)
            svc = (await c.members(GROUP, all=True))[1]
            pool_names = {m.name for m in server.agent.members()}
            assert "plain" in pool_names  # in the pool, but no service: listed under no group
            assert "plain" not in {s.id for s in await c.members("", all=True)}
            assert (svc.id, svc.addr, svc.tags.get("weight")) == ("svc", "127.0.0.1:7100", "3")
            async with grpc.aio.insecure_channel(server.grpc_address) as ch:
                stub = pb_grpc.RegistryStub(ch)  # type: ignore[no-untyped-call]
                raw = await stub.Members(pb.MembersRequest(group=GROUP, all=True), timeout=10)
                by_id = {s.id: s for s in raw.services}
                assert (by_id["svc"].weight, by_id["svc"].replicas > 0) == (3, True)
                assert (by_id["gone"].weight, by_id["gone"].replicas, by_id["gone"].status) == (0, 0, "failed")
                default = await stub.Members(pb.MembersRequest(group=GROUP), timeout=10)
                assert [(s.id, s.status, s.weight) for s in default.services] == [("svc", "", 3)]
                assert default.version == raw.version > 0
            with pytest.raises(InvalidArgument, match="group is empty"):
                await c.members("")
            with pytest.raises(InvalidArgument, match="True or False"):
                await c.members(GROUP, "yes")  # type: ignore[arg-type]
    finally:
        for agent in agents:
            await agent.shutdown()
        await server.close()


async def test_a_member_is_listed_leaving_between_its_leave_intent_and_its_departure() -> None:
    """"leaving" lasts from a member's leave intent to its memberlist leave (a few gossip rounds),
    too short to catch over RPC on a loaded machine: the registry's own handler reads its
    Members(all=True) answer (registry.api, what both fronts serve) the moment it learns of the
    intent, on the loop that applies the events, before any later datagram is read."""
    server = RegistryServer(ServerConfig(id="r-leave", bind=("127.0.0.1", 0), addr=("127.0.0.1", 0),
                                         profile="fast"))
    await server.start()
    bye = SerfAgent(SerfConfig(name="bye", tags={"group": GROUP, "addr": "127.0.0.1:7200"}, leave_propagate_delay=0.1,
                               memberlist=Config.fast(bind_addr="127.0.0.1", bind_port=0)))
    seen: list[tuple[str, str]] = []

    def on_event(event: object) -> None:
        if isinstance(event, MemberEvent) and event.type == EventType.MEMBER_LEAVING and not seen:
            seen.extend((s.id, s.status) for s in server._grpc.core.members_all(GROUP))

    try:
        await bye.start()
        await bye.join([server.gossip_address])
        server.agent.add_handler(on_event)
        async with AsyncRpcClient(server.grpc_address, timeout=10) as c:
            deadline = asyncio.get_running_loop().time() + 30
            while [s.id for s in await c.members(GROUP)] != ["bye"]:
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.02)
            assert await bye.leave(10.0)
            assert seen == [("bye", "leaving")]
            while [(s.id, s.status) for s in await c.members(GROUP, all=True)] != [("bye", "left")]:
                assert asyncio.get_running_loop().time() < deadline + 30
                await asyncio.sleep(0.02)
    finally:
        await bye.shutdown()
        await server.close()
