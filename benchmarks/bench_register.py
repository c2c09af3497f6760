#!/usr/bin/env python3
"""Register lifecycle latency, in process, against one `registry` server process on loopback:

  * start -> listed: from the `Register.start()` call to the registry's Members listing the
    service (polled over one gRPC connection as fast as it answers);
  * stop(): how long `Register.stop()` blocks (leave, acknowledged by the registry, then the
    gossip thread joined and the sockets closed);
  * stop -> gone: from the `stop()` call to the first Members answer without the service.

Both `Register` (threaded driver) and `AsyncRegister` (asyncio driver); medians over --rounds
services, each started and stopped once (a fresh id and group each round).
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

common.setup_path()


def _poll(pred: Callable[[], bool], timeout: float = 15.0) -> None:
    common.wait_for(pred, timeout, 0.0005, "the registry's Members")


def main() -> int:
    p = common.base_parser(__doc__ or "")
    p.add_argument("--rounds", type=int, default=0, help="services started and stopped per driver (default 10; quick 5)")
    p.add_argument("--profile", default="lan")
    args = p.parse_args()
    for mod in ("registry.cli", "registry.register", "registry.client"):
        common.require_import(mod, args)
    from registry.client import NotFound, RpcClient
    from registry.register import AsyncRegister, Register

    rounds = args.rounds or (5 if args.quick else 10)
    common.print_header(f"register: start/stop latency against a registry process (profile {args.profile})", args.quick)
    records: list[common.Record] = []
    with common.ProcGroup() as group:
        g1, r1 = common.free_ports(2)
        reg = group.add(common.Proc("R1", common.registry_argv("breg-r1", g1, r1, profile=args.profile), env=common.repo_env()))
        try:
            common.wait_server(reg, "127.0.0.1", r1, 30)
        except (TimeoutError, RuntimeError):
            print(f"   registry did not serve gRPC:\n{reg.tail()}")
            common.missing("the registry server did not start (see its output above)", args)
        client = RpcClient(f"127.0.0.1:{r1}", timeout=10.0)

        def ids(g: str) -> set[str]:
            try:
                return {s.id for s in client.members(g)}
            except NotFound:
                return set()

        def one_sync(sid: str, g: str) -> tuple[float, float, float]:
            r = Register(sid, "127.0.0.1:0", "", f"127.0.0.1:{g1}", g, "127.0.0.1:9000", profile=args.profile)
            t0 = time.monotonic()
            r.start()
            _poll(lambda: sid in ids(g))
            start = time.monotonic() - t0
            t0 = time.monotonic()
            r.stop()
            stop = time.monotonic() - t0
            _poll(lambda: sid not in ids(g))
            return start, stop, time.monotonic() - t0

        async def one_async(sid: str, g: str) -> tuple[float, float, float]:
            r = AsyncRegister(sid, "127.0.0.1:0", "", f"127.0.0.1:{g1}", g, "127.0.0.1:9000", profile=args.profile)
            t0 = time.monotonic()
            await r.start()
            await asyncio.to_thread(_poll, lambda: sid in ids(g))
            start = time.monotonic() - t0
            t0 = time.monotonic()
            await r.stop()
            stop = time.monotonic() - t0
            await asyncio.to_thread(_poll, lambda: sid not in ids(g))
            return start, stop, time.monotonic() - t0

        for kind in ("Register", "AsyncRegister"):
            figures: dict[str, list[float]] = {"start": [], "stop": [], "gone": []}
            for i in range(rounds):
                sid = f"breg-{kind}-{i}"
                got = one_sync(sid, sid) if kind == "Register" else asyncio.run(one_async(sid, sid))
                for key, value in zip(("start", "stop", "gone"), got):
                    figures[key].append(value)
            how = {
                "start": f"median of {rounds}: from the start() call to Members listing it (one gRPC connection, polled)",
                "stop": f"median of {rounds}: stop() call duration (leave acknowledged, thread joined, sockets closed)",
                "gone": f"median of {rounds}: from the stop() call to the first Members answer without it",
            }
            names = {"start": "start() -> listed", "stop": "stop() blocks", "gone": "stop() -> gone from Members"}
            for key, values in figures.items():
                records.append(common.record(f"register: {kind} {names[key]}", statistics.median(values) * 1000, "ms",
                                             how[key], min_ms=min(values) * 1000, max_ms=max(values) * 1000))
            print(f"   {kind}: " + ", ".join(f"{names[k]} {statistics.median(v) * 1000:.1f} ms" for k, v in figures.items()),
                  flush=True)
        client.close()
    common.emit(records, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
