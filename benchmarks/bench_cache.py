#!/usr/bin/env python3
"""Cached client: keys/s one client process resolves with cache=True (sync and asyncio).

Processes: one real `registry` server (`python -m registry.cli`, common.registry_argv) and
N service processes embedding `register.Register` (common.service_argv, default ring
parameters: 4096 points each) that join it by gossip, so the group reaches the client the
real way (gossip -> catalog -> Watch stream -> client ring). This process then opens
`RpcClient(addr, cache=True)` (and later `AsyncRpcClient(addr, cache=True)` in asyncio.run),
waits until its cache lists all N services, and resolves precomputed distinct keys
("user-<i>"):
  * match(): one call per key;
  * match_batch(): batches of 100 and of 1000 keys (answered by Ring.get_many).
Each figure is keys / CPU seconds of the calling thread (time.thread_time: the machine is
shared, so wall time there measures the neighbours), best of 3 passes over all keys; the
wall-clock keys/s of the same pass is given beside it. The Watch stream is idle meanwhile
(no membership change), so the figure is the lookup path: argument checks, the view's
lock, hashing, ring search, Service lookup. Target (issue 5): >= 1,000,000 keys/s.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

common.setup_path()
GROUP = "bench-cache"
TARGET = "target >= 1,000,000 keys/s"


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(thread CPU s, wall s) of one call."""
    c0, w0 = time.thread_time(), time.perf_counter()
    fn()
    return time.thread_time() - c0, time.perf_counter() - w0


def best(fn: Callable[[], object], passes: int) -> tuple[float, float]:
    runs = [timed(fn) for _ in range(passes)]
    return min(c for c, _ in runs), min(w for _, w in runs)


def measure_sync(addr: str, keys: list[str], n: int, passes: int) -> dict[str, tuple[float, float]]:
    from registry.client import RpcClient

    out: dict[str, tuple[float, float]] = {}
    with RpcClient(addr, timeout=30, cache=True) as c:
        probe = keys[:4000]
        common.wait_for(lambda: len({s.id for s in c.match_batch(GROUP, probe)}) >= n, 60, 0.1,
                        f"the sync cache to hold {n} services")
        match, batch = c.match, c.match_batch

        def singles() -> None:
            for k in keys:
                match(GROUP, k)

        out["match()"] = best(singles, passes)
        for size in (100, 1000):
            chunks = [keys[i:i + size] for i in range(0, len(keys), size)]

            def batches(chunks: list[list[str]] = chunks) -> None:
                for ch in chunks:
                    batch(GROUP, ch)

            out[f"match_batch({size})"] = best(batches, passes)
    return out


def measure_aio(addr: str, keys: list[str], n: int, passes: int) -> dict[str, tuple[float, float]]:
    from registry.client import AsyncRpcClient

    async def run() -> dict[str, tuple[float, float]]:
        out: dict[str, tuple[float, float]] = {}
        async with AsyncRpcClient(addr, timeout=30, cache=True) as c:
            probe = keys[:4000]
            deadline = time.monotonic() + 60
            while len({s.id for s in await c.match_batch(GROUP, probe)}) < n:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the asyncio cache did not reach {n} services")
                await asyncio.sleep(0.1)

            async def singles() -> None:
                for k in keys:
                    await c.match(GROUP, k)

            async def batches(size: int) -> None:
                for i in range(0, len(keys), size):
                    await c.match_batch(GROUP, keys[i:i + size])

            async def best_of(make: Callable[[], Any]) -> tuple[float, float]:
                runs = []
                for _ in range(passes):
                    c0, w0 = time.thread_time(), time.perf_counter()
                    await make()
                    runs.append((time.thread_time() - c0, time.perf_counter() - w0))
                return min(x for x, _ in runs), min(w for _, w in runs)

            out["match()"] = await best_of(singles)
            for size in (100, 1000):
                out[f"match_batch({size})"] = await best_of(lambda size=size: batches(size))
        return out

    return asyncio.run(run())


def main() -> int:
    p = common.base_parser(__doc__ or "")
    p.add_argument("--services", type=int, default=0, help="services in the group (default 3 quick, 10 full)")
    args = p.parse_args()
    common.require_import("registry.client", args)
    common.require_import("registry.cli", args)
    common.require_import("registry.register", args)
    n = args.services or (3 if args.quick else 10)
    nkeys = 50_000 if args.quick else 200_000
    passes = 3
    keys = [f"user-{i}" for i in range(nkeys)]
    common.print_header(f"cached client, {n} services", args.quick)
    env = common.repo_env()
    recs: list[common.Record] = []
    with common.ProcGroup() as group:
        gport, rport = common.free_ports(2)
        reg = group.add(common.Proc("registry", common.registry_argv("bench-cache-r1", gport, rport), env=env))
        common.wait_server(reg, "127.0.0.1", rport, 30)
        for i in range(n):
            group.add(common.Proc(f"svc-{i}", common.service_argv(
                f"cache-svc-{i}", f"127.0.0.1:{common.free_port()}", f"127.0.0.1:{gport}", GROUP,
                f"127.0.0.1:{9000 + i}"), env=env, stdin=True))
        addr = f"127.0.0.1:{rport}"
        from registry.client import RpcClient
        from registry.client.errors import NotFound

        def listed(c: Any) -> int:
            try:
                return len(c.members(GROUP))
            except NotFound:  # no service has joined yet
                return 0

        with RpcClient(addr, timeout=30) as plain:
            common.wait_for(lambda: listed(plain) >= n, 90, 0.1, f"{n} services in Members")
        print(f"   {n} services registered through gossip; {nkeys} distinct keys, best of {passes} passes")
        for flavour, fn in (("sync RpcClient", measure_sync), ("asyncio AsyncRpcClient", measure_aio)):
            for what, (cpu, wall) in fn(addr, keys, n, passes).items():
                how = (f"{flavour}(cache=True), {what} over {nkeys} distinct keys, group of {n} real services "
                       f"(registry process + Register processes on loopback); keys per thread-CPU second, best of "
                       f"{passes}; wall-clock {nkeys / wall:,.0f} keys/s in the same pass")
                recs.append(common.record(f"cached client {flavour.split()[0]} {what}", nkeys / cpu, "keys/s", how,
                                          reference=TARGET, wall_keys_per_s=nkeys / wall, services=n))
        for proc in group.procs[1:]:
            if proc.alive():
                proc.send("stop")
    common.emit(recs, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
