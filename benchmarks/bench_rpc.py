#!/usr/bin/env python3
"""gRPC load: Match and Members throughput and latency, MatchBatch keys/s.

Processes: one registry gRPC server (a real Catalog with 10 services of 160 replicas in
one group, `registry.rpc.start_rpc` on 127.0.0.1) and, for each measurement, one load
process (this script with `--load`), so the generator and the server each get a core.
Each load process opens ONE channel (one HTTP/2 connection) and keeps `c` calls in
flight (c asyncio tasks for the asyncio client, c threads for the blocking RpcClient),
runs a warm-up, then counts calls finished in a fixed window and records every call's
latency; p50/p99 are over all calls in the window. MatchBatch sends batches of 100 keys.
Reference measured in the same run: a bare grpc.aio server (same server options) whose
Match handler returns fixed pre-serialized bytes without looking at the request, loaded
by the same client: the ratio registry/bare is the honest figure on a noisy machine. A second
reference, the same fixed answer from a blocking grpc.server (thread pool), shows at c=1 what
grpc.aio's hand-offs between its poller thread and the asyncio loop cost.
The load process's own CPU per call is reported too (it shares the 2 cores), and the server's
main-thread share (asyncio loop + handlers; the rest is gRPC's poller and event-engine threads).
"handler alone" lines time the v1 handlers in-process without gRPC: against the server CPU
per call they show how little of a call is registry code. "aio-cache" lines are the caching
client (ring fed by one Watch stream): what to use when one connection's gRPC calls are not enough.
Targets (brief): Match c=64 >= 5000 req/s, c=1 p50 <= 400 us, MatchBatch >= 100k keys/s.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

common.setup_path()
GROUP = "bench"
TARGETS = {"Match c=64": "target >= 5000 req/s", "Match c=1 p50": "target <= 400 us",
           "MatchBatch": "target >= 100000 keys/s"}


def _catalog() -> Any:
    from registry.catalog import Catalog

    catalog = Catalog()
    for i in range(10):
        catalog.apply(f"svc-{i}", {"group": GROUP, "addr": f"10.0.0.{i}:80", "replicas": "160"})
    return catalog


def serve(port: int) -> None:
    from registry.rpc import start_rpc

    async def main() -> None:
        rpc = await start_rpc(_catalog(), f"127.0.0.1:{port}")
        print(f"READY {rpc.port}", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


def serve_bare(port: int) -> None:
    """Reference: the cheapest grpc.aio server answering Match (fixed bytes, request unread)."""
    import grpc

    from registry.rpc import _SERVER_OPTIONS, V1_SERVICE, RegistryCore

    async def main() -> None:
        core = RegistryCore(_catalog())
        answer = core.encoded(core.match(GROUP, "some-key", 1)[0]).v1  # a real-sized response

        async def match(request: bytes, context: Any) -> bytes:
            return answer

        server = grpc.aio.server(options=list(_SERVER_OPTIONS))
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            V1_SERVICE, {"Match": grpc.unary_unary_rpc_method_handler(match)}),))
        bound = server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        print(f"READY {bound}", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


def serve_bare_sync(port: int) -> None:
    """Reference: the same fixed-bytes Match on a blocking grpc.server (thread pool of 4): what
    the aio server's loop hand-offs cost at c=1 (the product cannot use it: every Watch
    stream would hold a pool thread for its whole life)."""
    from concurrent import futures

    import grpc

    from registry.rpc import _SERVER_OPTIONS, V1_SERVICE, RegistryCore

    async def answer_bytes() -> bytes:
        core = RegistryCore(_catalog())
        return core.encoded(core.match(GROUP, "some-key", 1)[0]).v1

    answer = asyncio.run(answer_bytes())

    def match(request: bytes, context: Any) -> bytes:
        return answer

    server = grpc.server(futures.ThreadPoolExecutor(4), options=list(_SERVER_OPTIONS))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        V1_SERVICE, {"Match": grpc.unary_unary_rpc_method_handler(match)}),))
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print(f"READY {bound}", flush=True)
    server.wait_for_termination()


async def _aio_load(addr: str, method: str, conc: int, seconds: float, warmup: float,
                    cache: bool = False) -> dict[str, Any]:
    from client import AsyncRpcClient

    lat: list[float] = []
    calls = 0
    keys_per_call = 100 if method == "MatchBatch" else 1
    async with AsyncRpcClient(addr, timeout=30, cache=cache) as c:
        stop_at = time.perf_counter() + warmup + seconds
        start_at = time.perf_counter() + warmup

        async def worker(w: int) -> None:
            nonlocal calls
            i = 0
            while True:
                batch = [f"user-{w}-{i + j}" for j in range(keys_per_call)]
                t0 = time.perf_counter()
                if t0 >= stop_at:
                    return
                if method == "Match":
                    await c.match(GROUP, batch[0])
                elif method == "Members":
                    await c.members(GROUP)
                else:
                    await c.match_batch(GROUP, batch)
                t1 = time.perf_counter()
                if t0 >= start_at and t1 <= stop_at:
                    lat.append(t1 - t0)
                    calls += 1
                i += keys_per_call

        await asyncio.gather(*(worker(w) for w in range(conc)))
    return {"calls": calls, "lat": lat, "keys_per_call": keys_per_call}


def _sync_load(addr: str, method: str, conc: int, seconds: float, warmup: float) -> dict[str, Any]:
    from client import RpcClient

    lat: list[float] = []
    lock = threading.Lock()
    keys_per_call = 100 if method == "MatchBatch" else 1
    with RpcClient(addr, timeout=30) as c:
        start_at = time.perf_counter() + warmup
        stop_at = start_at + seconds

        def worker(w: int) -> None:
            mine: list[float] = []
            i = 0
            while True:
                batch = [f"user-{w}-{i + j}" for j in range(keys_per_call)]
                t0 = time.perf_counter()
                if t0 >= stop_at:
                    break
                if method == "Match":
                    c.match(GROUP, batch[0])
                elif method == "Members":
                    c.members(GROUP)
                else:
                    c.match_batch(GROUP, batch)
                t1 = time.perf_counter()
                if t0 >= start_at and t1 <= stop_at:
                    mine.append(t1 - t0)
                i += keys_per_call
            with lock:
                lat.extend(mine)

        threads = [threading.Thread(target=worker, args=(w,)) for w in range(conc)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return {"calls": len(lat), "lat": lat, "keys_per_call": keys_per_call}


def handler_costs() -> dict[str, float]:
    """CPU per call of the v1 Match/MatchBatch handlers alone (request bytes in, response
    bytes out, no gRPC): how much of the per-call server CPU is ours at all."""
    from registry.rpc import RegistryCore, _v1_handlers
    from registry.v1 import registry_pb2 as pb

    class Details:  # the two attributes a generic handler looks at
        def __init__(self, method: str) -> None:
            self.method, self.invocation_metadata = method, ()

    async def main() -> dict[str, float]:
        core = RegistryCore(_catalog())
        handlers = _v1_handlers(core)
        reqs = {
            "Match": [pb.MatchRequest(group=GROUP, key=f"user-{i}").SerializeToString() for i in range(1000)],
            "MatchBatch": [pb.MatchBatchRequest(group=GROUP, keys=[f"user-{i}-{j}" for j in range(100)])
                           .SerializeToString() for i in range(50)],
        }
        out: dict[str, float] = {}
        for method, raw in reqs.items():
            h = handlers.service(Details(f"/registry.v1.Registry/{method}"))
            assert h is not None and h.unary_unary is not None
            des, fn, n = h.request_deserializer or (lambda b: b), h.unary_unary, 20 * len(raw)
            best = float("inf")
            for _ in range(7):  # CPU time, best of 7: the least disturbed by other jobs
                t0 = time.process_time()
                for i in range(n):
                    coro = fn(des(raw[i % len(raw)]), None)
                    try:
                        coro.send(None)
                    except StopIteration:
                        pass
                best = min(best, (time.process_time() - t0) / n)
            out[method] = best
        core.close()
        return out

    return asyncio.run(main())


def _loop_thread_cpu(pid: int) -> float:
    """utime+stime of a process's main thread (where the asyncio loop and every handler run);
    the rest of its CPU is gRPC's own threads (completion-queue poller, event engine)."""
    raw = Path(f"/proc/{pid}/task/{pid}/stat").read_text()
    rest = raw[raw.rindex(")") + 2:].split()
    return (int(rest[11]) + int(rest[12])) / common.CLK_TCK


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def load(addr: str, kind: str, method: str, conc: int, seconds: float, warmup: float) -> None:
    cpu0 = _cpu()
    if kind in ("aio", "aio-cache"):
        out = asyncio.run(_aio_load(addr, method, conc, seconds, warmup, cache=kind == "aio-cache"))
    else:
        out = _sync_load(addr, method, conc, seconds, warmup)
    cpu = _cpu() - cpu0  # includes connect and warm-up: scaled like the server's figure below
    lat = out["lat"]
    print(json.dumps({"calls": out["calls"], "cpu": cpu, "seconds": seconds, "keys_per_call": out["keys_per_call"],
                      "p50": common.percentile(lat, 50), "p99": common.percentile(lat, 99)}), flush=True)


def run_load(addr: str, kind: str, method: str, conc: int, seconds: float, warmup: float) -> dict[str, Any]:
    argv = [sys.executable, __file__, "--load", addr, kind, method, str(conc), str(seconds), str(warmup)]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + warmup + 120)
    if res.returncode != 0:
        raise RuntimeError(f"load process failed: {res.stderr[-2000:]}")
    return dict(json.loads(res.stdout.strip().splitlines()[-1]))


def main() -> None:
    p = common.base_parser(__doc__ or "")
    args = p.parse_args()
    common.require_import("registry.rpc", args)
    common.require_import("client", args)
    common.print_header("gRPC API load (bench_rpc)", args.quick)
    seconds, warmup = (2.0, 0.5) if args.quick else (5.0, 1.0)
    records: list[common.Record] = []
    port, bare_port, sync_port = common.free_ports(3)
    with common.ProcGroup() as procs:
        srv = procs.add(common.Proc("server", [sys.executable, __file__, "--serve", str(port)]))
        bare = procs.add(common.Proc("bare", [sys.executable, __file__, "--serve-bare", str(bare_port)]))
        bare_sync = procs.add(common.Proc("bare-sync", [sys.executable, __file__, "--serve-bare-sync", str(sync_port)]))
        for proc in (srv, bare, bare_sync):
            common.wait_for(lambda: any(line.startswith("READY") for _, line in proc.lines), 60,
                            what=f"{proc.name} ready")
        addr = f"127.0.0.1:{port}"
        refs = {"bare": (bare, f"127.0.0.1:{bare_port}"), "bare-sync": (bare_sync, f"127.0.0.1:{sync_port}")}
        # Each bare-server line right after the registry line it is the reference for.
        plan = [("aio", "Match", 1), ("bare", "Match", 1), ("bare-sync", "Match", 1), ("sync", "Match", 1),
                ("aio", "Match", 8), ("aio", "Match", 64),
                ("bare", "Match", 64), ("sync", "Match", 8)]
        plan += [("aio", "Members", c) for c in (1, 8, 64)]
        plan += [("aio", "MatchBatch", c) for c in (1, 8)] + [("sync", "MatchBatch", 1)]
        # What a client gets when it needs more than one connection's worth of gRPC calls:
        # its own ring kept current by one Watch stream (no RPC per Match).
        plan += [("aio-cache", "Match", 64), ("aio-cache", "MatchBatch", 1)]
        seen: dict[tuple[str, str, int], tuple[float, float, float]] = {}
        for kind, method, conc in plan:
            target, target_addr = refs.get(kind, (srv, addr))
            cpu0, loop0 = common.cpu_seconds(target.pid), _loop_thread_cpu(target.pid)
            r = run_load(target_addr, "aio" if kind in refs else kind, method, conc, seconds, warmup)
            # Server CPU per call (warm-up calls included in both counts' span: an estimate of
            # what one dedicated core could serve, less sensitive to other load on the machine).
            scale = seconds / (seconds + warmup) / max(r["calls"], 1)
            cpu_per_call = (common.cpu_seconds(target.pid) - cpu0) * scale
            loop_per_call = (_loop_thread_cpu(target.pid) - loop0) * scale
            client_per_call = r["cpu"] * scale
            how = (f"{kind} client, one connection, c={conc} in flight, {seconds}s window after {warmup}s "
                   f"warm-up, server and load generator in separate processes; 10 services x 160 replicas")
            if kind == "aio-cache":
                how = (f"AsyncRpcClient(cache=True): answered from a local ring fed by one Watch stream, no RPC "
                       f"per call; c={conc} in flight, {seconds}s window after {warmup}s warm-up")
            if kind == "bare":
                how = ("REFERENCE: bare grpc.aio server (same options, fixed 88-byte answer, request unread), "
                       f"aio client, one connection, c={conc} in flight, {seconds}s window after {warmup}s warm-up")
            if kind == "bare-sync":
                how = ("REFERENCE: bare blocking grpc.server, thread pool of 4 (same options, fixed 88-byte answer), "
                       f"aio client, one connection, c={conc} in flight, {seconds}s window after {warmup}s warm-up; "
                       "its 'loop thread' figure is its idle main thread")
            name = f"{method} {kind} c={conc}"
            if method == "MatchBatch":
                records.append(common.record(f"{name} keys/s (batch 100)", r["calls"] * 100 / seconds, "keys/s",
                                             how, reference=TARGETS["MatchBatch"] if kind == "aio" else ""))
            else:
                ref = TARGETS["Match c=64"] if (method, kind, conc) == ("Match", "aio", 64) else ""
                records.append(common.record(f"{name} throughput", r["calls"] / seconds, "req/s", how,
                                             reference=ref))
            ref50 = TARGETS["Match c=1 p50"] if (method, kind, conc) == ("Match", "aio", 1) else ""
            records.append(common.record(f"{name} p50", r["p50"] * 1e6, "us", how, reference=ref50))
            records.append(common.record(f"{name} p99", r["p99"] * 1e6, "us", how))
            records.append(common.record(f"{name} server CPU per call", cpu_per_call * 1e6, "us",
                                         how + "; server utime+stime over the run / calls in the window,"
                                         " scaled by window/(window+warm-up)"))
            records.append(common.record(f"{name} server loop thread CPU per call", loop_per_call * 1e6, "us",
                                         how + "; the server's main thread only (asyncio loop + handlers), "
                                         "scaled the same way"))
            records.append(common.record(f"{name} load generator CPU per call", client_per_call * 1e6, "us",
                                         how + "; the load process's own utime+stime, scaled the same way"))
            print(f"  {name}: {r['calls'] / seconds:,.0f} calls/s p50={r['p50'] * 1e6:.0f}us "
                  f"p99={r['p99'] * 1e6:.0f}us server-cpu/call={cpu_per_call * 1e6:.0f}us "
                  f"(loop thread {loop_per_call * 1e6:.0f}us) "
                  f"client-cpu/call={client_per_call * 1e6:.0f}us load1m={os.getloadavg()[0]:.1f}", flush=True)
            seen[(kind, method, conc)] = (r["calls"] / seconds, r["p50"], cpu_per_call)
            if kind == "bare" and ("aio", method, conc) in seen:
                ours, theirs = seen[("aio", method, conc)], seen[("bare", method, conc)]
                how_ratio = f"registry Match aio c={conc} / bare grpc.aio reference, measured one after the other"
                records.append(common.record(f"Match c={conc} throughput registry/bare", ours[0] / theirs[0], "x",
                                             how_ratio))
                records.append(common.record(f"Match c={conc} server CPU per call registry/bare", ours[2] / theirs[2],
                                             "x", how_ratio))
    costs = handler_costs()
    for method, cost in costs.items():
        what = "one MatchRequest" if method == "Match" else "one 100-key MatchBatchRequest"
        records.append(common.record(
            f"{method} handler alone CPU per call", cost * 1e6, "us",
            f"the v1 {method} handler called in-process on {what} (protobuf parse, checks, ring lookup, "
            "answer bytes), no gRPC; process CPU time, best of 7 rounds; compare with server CPU per call"))
        print(f"  {method} handler alone (no gRPC): {cost * 1e6:.1f} us CPU per call", flush=True)
    common.emit(records, args)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--serve":
        serve(int(sys.argv[2]))
    elif len(sys.argv) > 2 and sys.argv[1] == "--serve-bare":
        serve_bare(int(sys.argv[2]))
    elif len(sys.argv) > 2 and sys.argv[1] == "--serve-bare-sync":
        serve_bare_sync(int(sys.argv[2]))
    elif len(sys.argv) > 2 and sys.argv[1] == "--load":
        a = sys.argv[2:]
        load(a[0], a[1], a[2], int(a[3]), float(a[4]), float(a[5]))
    else:
        main()
