"""Readiness (issue 15): a registry (re)started into a pool says SERVING only once it holds the pool's TTL
services, so a Match the moment it is SERVING cannot miss one every other registry routes to; and a peer
that never answers holds it NOT_SERVING only until the driver's bound."""

from __future__ import annotations

import http.client
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from registry.server import RegistryServer, ServerConfig
from tests.e2e.helpers import Proc, procs, wait_for
from tests.waiting import aeventually

from .helpers import TtlRegistry, clients, start_pool

GROUP = "ttl-ready"


def _config(ident: str, seeds: list[str] | None = None) -> ServerConfig:
    return ServerConfig(id=ident, bind=("127.0.0.1", 0), addr=("127.0.0.1", 0), profile="fast",
                        registries=seeds or [])


def _serving(target: str) -> bool:
    """Whether grpc.health.v1 Check on `target` answers SERVING now (False: NOT_SERVING or not listening)."""
    with grpc.insecure_channel(target) as ch:
        try:
            resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=2.0)
        except grpc.RpcError:
            return False
    return bool(resp.status == health_pb2.HealthCheckResponse.SERVING)


def _put_all(regs: Sequence[TtlRegistry], groups: dict[str, dict[str, str]], ttl: str) -> None:
    """PUT every service, round robin over the registries, on one keep-alive connection each (a
    connection per request, as `TtlRegistry.put` makes), 64 points each on the rings (the default 4096
    made each PUT cost ~20 ms of the three registries' CPU: 13 s for the 600)."""
    conns = [http.client.HTTPConnection(r.http.removeprefix("http://"), timeout=10.0) for r in regs]
    try:
        n = 0
        for group, services in groups.items():
            for sid, addr in services.items():
                conn = conns[n % len(conns)]
                conn.request("PUT", f"/v1/services/{group}/{sid}", json.dumps({"addr": addr, "ttl": ttl, "replicas": 64}),
                             {"Content-Type": "application/json"})
                resp = conn.getresponse()
                body = resp.read()
                assert resp.status == 200, (group, sid, resp.status, body)
                n += 1
    finally:
        for conn in conns:
            conn.close()


async def test_a_peer_that_never_answers_holds_serving_back_only_until_the_bound(
        caplog: pytest.LogCaptureFixture) -> None:
    """ra gossips but does not answer replication (its app handler removed): rb, joining it, stays
    NOT_SERVING through anti-entropy rounds; the driver's bound ends the wait with a warning naming ra."""
    a = RegistryServer(_config("ra"))
    b = RegistryServer(_config("rb"))
    try:
        await a.start()
        a.ttl.write(GROUP, "svc", addr="127.0.0.1:8001", ttl_ms=60_000)
        a.agent.set_app_handler(None)  # alive in gossip, silent in replication
        b.config.registries.append(a.gossip_address)
        await b.start()
        assert b.ttl.peers == {"ra"} and b.ttl.replicator.syncing() == {"ra"}
        # a second of rounds (fast profile: anti-entropy every 1 s) and still waiting
        await aeventually(lambda: b.ttl.replicator.stats["ae.rounds"] >= 1, 30, "rb's first periodic round")
        assert not b.health.serving and not b.ttl.synced
        with caplog.at_level(logging.WARNING, logger="registry.ttl"):
            assert await b.ttl.wait_synced(0.2) is False  # the bound (5 s by default here), made short
        assert b.ttl.synced and b.ttl.counters()["driver.sync.timeouts"] == 1
        assert any("did not answer" in r.getMessage() and "ra" in r.getMessage() for r in caplog.records)
        await aeventually(lambda: b.health.serving, 10, "rb serving after the bound")
    finally:
        await b.close()
        await a.close()


async def test_a_pool_of_one_and_a_silent_pool_serve_at_once() -> None:
    """No peer speaking the replication: synced (and SERVING) as soon as started."""
    a = RegistryServer(_config("r-one"))
    try:
        await a.start()
        assert a.health.serving and a.ttl.synced and await a.ttl.wait_synced() is True
    finally:
        await a.close()


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_restarted_registry_serving_only_with_every_ttl_entry(tmp_path: Path) -> None:
    """Three registries (LAN profile), 600 TTL services in 4 groups written through all three; one is
    stopped (SIGTERM) and started again on new ports: the first instant its gRPC health says SERVING,
    its Members hold every TTL service and its Match answers what a registry that never left answers.
    Failed before the change: SERVING came with the join, before the peers' answers (0 of 600 held)."""
    groups = {f"{GROUP}-{g}": {f"s{i:03d}": f"10.7.{g}.{i % 250}:{8000 + i}" for i in range(150)} for g in range(4)}
    ps: list[Proc]
    with procs() as ps:
        regs = start_pool(ps, tmp_path, 3, profile="lan", prefix="ready")
        with clients(regs):
            _put_all(regs, groups, "300s")
            victim = regs[2]
            wait_for(lambda: all(victim.members(g) == m for g, m in groups.items()), 30, what="written everywhere")
            keys = [f"key-{k}" for k in range(40)]
            want_owners = {g: [regs[0].owner(k, g) for k in keys] for g in groups}
            victim.close()
            victim.proc.stop()  # SIGTERM: a graceful leave
            again = TtlRegistry(ps, tmp_path, victim.id, (regs[0].reg.gossip,), profile="lan")
            regs[2] = again
            target = again.reg.rpc  # new ports, read from its "registry started" line
            started = time.monotonic()
            wait_for(lambda: _serving(target), 60, interval=0.005, what="the restarted registry serving")
            # the first instant it says SERVING: everything is already there
            held = {g: again.members(g) for g in groups}
            owners = {g: [again.owner(k, g) for k in keys] for g in groups}
            print(f"\nrestarted registry SERVING {time.monotonic() - started:.2f}s after its start line")
            missing = {g: len(set(m) - set(held[g])) for g, m in groups.items()}
            assert held == groups, f"SERVING while missing TTL services: {missing}"
            assert owners == want_owners
            serving = [json.loads(line) for line in again.proc.output().splitlines() if '"health: serving"' in line]
            assert serving and serving[0]["ttl_services"] == 600, serving

