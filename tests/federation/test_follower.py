"""`Follower` against real registries on loopback, playing a remote datacenter: two `registry` processes
in one LAN pool (fast profile), gossiping services (in-process `Register`s and one webservice process)
and TTL services (HTTP PUTs). `sources` is a list the test controls (the WAN pool's order, later).

Match on the mirror must equal gRPC MatchBatch on the followed registry for 10,000 keys in every group,
through joins, leaves, a failure, a health change, TTL writes and deletes; when the followed registry is
stopped (SIGSTOP: silent, its sockets open) or killed, the follower moves to the other one, and the
mirror is correct again (the times are printed); with no source left the mirror keeps its catalog and
grows stale; a source back, it resyncs.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

from registry.federation import Mirror
from registry.federation.follower import Follower
from registry.register import Register, TtlCheck
from tests.e2e.helpers import Registry, Service, procs
from tests.federation.helpers import differences, poll
from tests.ttl_e2e.helpers import http_call

KEYS = [f"user-{i}" for i in range(10_000)]
TTL_GROUP = "ttl-svc"




async def converge(mirror: Mirror, addr: str, timeout: float, what: str) -> float:
    """Seconds until the mirror answers every key of every group as the registry at `addr` does."""
    start = time.monotonic()
    last: list[str] = []
    while True:
        if mirror.synced:
            last = await differences(lambda: mirror.catalog, addr, KEYS)
            if not last:
                return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what}: the mirror still differs after {timeout}s: {last}")
        await asyncio.sleep(0.05)


def register(ident: str, group: str, seeds: list[str], **kw: object) -> Register:
    return Register(ident, "127.0.0.1:0", "", seeds, group, f"10.9.0.1:{8000 + sum(map(ord, ident))}",
                    profile="fast", **kw)  # type: ignore[arg-type]


async def test_follower_follows_switches_goes_stale_and_resyncs(tmp_path: Path) -> None:
    with procs() as ps:
        r1 = Registry(ps, tmp_path, "r1", (), "-http-addr", "127.0.0.1:0").wait_ready()
        r2 = Registry(ps, tmp_path, "r2", [r1.gossip], "-http-addr", "127.0.0.1:0").wait_ready()
        seeds = [r1.gossip, r2.gossip]
        services = [register("web-a", "web", seeds, replicas=64),
                    register("web-b", "web", seeds, replicas=64, weight=2),
                    register("api-a", "api", seeds, replicas=32,
                             checks=[TtlCheck(600, initial_status="passing")])]
        proc = Service(ps, tmp_path, "web-proc", seeds, group="web")
        mirror = Mirror("dc2")
        sources = [r1.rpc, r2.rpc]
        follower = Follower(mirror, lambda: list(sources), retry=0.1, max_retry=0.5, check=0.1, probe=1.0,
                            timeout=3.0)
        task: asyncio.Task[None] | None = None
        try:
            for s in services:
                await asyncio.to_thread(s.start)
            await asyncio.to_thread(proc.wait_registered)
            for i in range(5):
                status, _ = http_call("http://" + r1.http, "PUT", f"/v1/services/{TTL_GROUP}/t{i}",
                                      {"addr": f"10.8.0.{i}:80", "ttl": "300s", "weight": 1 + i % 2})
                assert status == 200
            task = asyncio.create_task(follower.run())
            took = await converge(mirror, r1.rpc, 30, "first snapshot")
            assert follower.source == r1.rpc and mirror.catalog.groups() == ["api", "ttl-svc", "web"]
            print(f"first snapshot and equal: {took:.2f}s")

            # changes in the remote datacenter: a join, a leave, a failure, a health change, TTL writes
            joined = register("web-c", "web", seeds, replicas=64)
            await asyncio.to_thread(joined.start)
            services.append(joined)
            await converge(mirror, r1.rpc, 30, "after a join")
            await asyncio.to_thread(services[0].stop)
            await converge(mirror, r1.rpc, 30, "after a leave")
            proc.proc.signal(signal.SIGKILL)
            await poll(lambda: "web-proc" not in {s.id for s in mirror.catalog.members("web")}, 30, "failure seen")
            await converge(mirror, r1.rpc, 30, "after a failure")
            services[2].set_status("critical", "down for the test")
            await poll(lambda: [s.health.word for s in mirror.catalog.members("api")] == ["critical"], 30,
                       "the health change mirrored")
            await converge(mirror, r1.rpc, 30, "after a health change")  # api has no routed member on either
            http_call("http://" + r1.http, "DELETE", f"/v1/services/{TTL_GROUP}/t0")
            http_call("http://" + r1.http, "PUT", f"/v1/services/{TTL_GROUP}/t9", {"addr": "10.8.0.9:80", "ttl": "300s"})
            await converge(mirror, r1.rpc, 30, "after TTL writes")
            assert not mirror.dropped
            # (the follower stays on r1 unless a probe missed its deadline: the machine may be loaded)
            followed, other = (r1, r2) if follower.source == r1.rpc else (r2, r1)

            # the followed registry goes silent (stopped, its sockets open): the probe finds it
            switches = follower.switches
            followed.proc.signal(signal.SIGSTOP)
            stopped = time.monotonic()
            try:
                await poll(lambda: follower.source == other.rpc and mirror.synced and mirror.stale_for(0) is None,
                           30, "the switch to the other registry")
                silent_switch = time.monotonic() - stopped
                await converge(mirror, other.rpc, 30, "after the switch")
            finally:
                followed.proc.signal(signal.SIGCONT)
            print(f"switch after SIGSTOP of the source (probe {follower.probe} s): {silent_switch:.2f}s")
            assert follower.switches > switches

            # the one followed now is killed: back to the first
            followed, other = other, followed
            switches = follower.switches
            killed = time.monotonic()
            followed.proc.signal(signal.SIGKILL)
            await poll(lambda: follower.source == other.rpc and mirror.synced and mirror.stale_for(0) is None,
                       30, "the switch back")
            kill_switch = time.monotonic() - killed
            await converge(mirror, other.rpc, 30, "after the switch back")
            print(f"switch after SIGKILL of the source: {kill_switch:.2f}s")
            assert follower.switches > switches
            alive, dead = other, followed

            # no source answers: the catalog is kept and grows stale
            groups = mirror.catalog.groups()
            before = [s.id for s in mirror.catalog.match_batch("web", KEYS)]
            sources[:] = [dead.rpc]
            await poll(lambda: mirror.stale_for(time.monotonic()) is not None, 10, "the mirror marked stale")
            await poll(lambda: (mirror.stale_for(time.monotonic()) or 0) > 1.0, 10, "staleness growing")
            assert mirror.catalog.groups() == groups and [s.id for s in mirror.catalog.match_batch("web", KEYS)] == before
            status, _ = http_call("http://" + alive.http, "PUT", f"/v1/services/{TTL_GROUP}/t-late",
                                  {"addr": "10.8.1.1:80", "ttl": "300s"})
            assert status == 200
            # a source back: resync, correct again (the write made meanwhile included)
            sources[:] = [alive.rpc]
            back = await poll(lambda: mirror.stale_for(time.monotonic()) is None, 30, "the resync")
            await converge(mirror, alive.rpc, 30, "after the resync")
            assert "t-late" in {s.id for s in mirror.catalog.members(TTL_GROUP)}
            print(f"resync after the source came back: {back:.2f}s")
            assert not mirror.dropped, mirror.dropped
        finally:
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            for s in services:
                await asyncio.to_thread(s.stop)
