"""Not a test: measures the WAN pool's join time and idle WAN bytes/s per registry (issue 17, session 9's figures).

    python -m tests.wan.measure_wan [PROFILE] [IDLE_SECONDS]     # e.g. fast 20, lan 30 (the WAN pool on WAN timings)

Four in-process registries on loopback, dc1 and dc2 x 2, each joining the WAN pool through the first;
bytes are the WAN agent's own counters (udp/tcp out and in). The next session's benchmarks/bench_wan.py
supersedes it (propagation, bytes at 100 changes/s)."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Sequence

from registry.serf.member import MemberStatus
from registry.server import RegistryServer, ServerConfig
from registry.server_config import Profile
from registry.wan import WanPool


def _config(ident: str, dc: str, profile: Profile, lan: Sequence[str] = (), wan: Sequence[str] = ()) -> ServerConfig:
    return ServerConfig(id=ident, bind=("127.0.0.1", 0), addr=("127.0.0.1", 0), registries=list(lan), profile=profile,
                        datacenter=dc, wan_bind=("127.0.0.1", 0), wan_join=list(wan))


def _pool(s: RegistryServer) -> WanPool:
    assert s.wan is not None
    return s.wan


def _converged(servers: list[RegistryServer]) -> bool:
    for s in servers:
        other = "dc2" if s.config.datacenter == "dc1" else "dc1"
        alive = sorted(p.name for p in _pool(s).peers().get(other, []) if p.status is MemberStatus.ALIVE)
        if alive != [f"a.{other}", f"b.{other}"]:
            return False
    return True


def _bytes(s: RegistryServer) -> tuple[int, int]:
    st = _pool(s).agent.stats
    return st["udp.out.bytes"] + st["tcp.out.bytes"], st["udp.in.bytes"] + st["tcp.in.bytes"]


async def main(profile: Profile, idle: float) -> None:
    a1 = RegistryServer(_config("a", "dc1", profile))
    await a1.start()
    seed = _pool(a1).address
    t0 = time.monotonic()
    servers = [a1]
    a2 = RegistryServer(_config("a", "dc2", profile, wan=[seed]))
    await a2.start()
    b1 = RegistryServer(_config("b", "dc1", profile, lan=[a1.gossip_address], wan=[seed]))
    await b1.start()
    b2 = RegistryServer(_config("b", "dc2", profile, lan=[a2.gossip_address], wan=[seed]))
    await b2.start()
    servers += [a2, b1, b2]
    try:
        while not _converged(servers):
            await asyncio.sleep(0.005)
        joined = time.monotonic() - t0
        while any(p.rtt_ms is None for s in servers for rows in _pool(s).peers().values() for p in rows):
            await asyncio.sleep(0.01)
        print(f"profile={profile} (WAN pool: {_pool(a1).profile}): every registry sees the other datacenter's two "
              f"alive {joined * 1000:.0f} ms after the second registry started; RTT estimates for all after "
              f"{time.monotonic() - t0:.2f} s")
        await asyncio.sleep(2.0)
        before = [_bytes(s) for s in servers]
        t1 = time.monotonic()
        await asyncio.sleep(idle)
        dt = time.monotonic() - t1
        for s, b, a in zip(servers, before, [_bytes(s) for s in servers]):
            print(f"  {_pool(s).name}: out {(a[0] - b[0]) / dt:.0f} B/s, in {(a[1] - b[1]) / dt:.0f} B/s over {dt:.0f} s idle")
    finally:
        for s in servers:
            await s.stop()


if __name__ == "__main__":
    import logging

    logging.disable(logging.INFO)
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    prof: Profile = "fast" if len(sys.argv) < 2 else sys.argv[1]  # type: ignore[assignment]
    asyncio.run(main(prof, float(sys.argv[2]) if len(sys.argv) > 2 else 20.0))
