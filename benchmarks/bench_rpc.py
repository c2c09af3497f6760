#!/usr/bin/env python3
"""gRPC load: Match and Members throughput and latency, MatchBatch keys/s.

Processes: one registry gRPC server (a real Catalog with 10 services of 160 replicas in
one group, served by the registry's default front, `registry.native.start_native`, on
127.0.0.1; the h2load lines also load the grpcio front, `registry.rpc.start_rpc`) and, for each measurement, one load
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
"h2load" lines: the same two servers (registry and bare grpc.aio) loaded by h2load (nghttp2's C load
generator, when it is on PATH) over ONE HTTP/2 connection with c streams in flight: its CPU per call is a
few us, so these figures are the server's own capacity, which the Python-client lines understate (their
client spends about as much CPU per call as the server). Every h2load call sends the same gRPC-framed
request bytes; every answer is checked (see `h2load_run`).
Targets (brief): Match c=64 >= 5000 req/s, c=1 p50 <= 400 us, MatchBatch >= 100k keys/s.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

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


def serve(port: int, engine: str = "native") -> None:
    async def main() -> None:
        if engine == "native":
            from registry.native import start_native

            rpc: Any = await start_native(_catalog(), f"127.0.0.1:{port}")
        else:
            from registry.rpc import start_rpc

            rpc = await start_rpc(_catalog(), f"127.0.0.1:{port}")
        print(f"READY {rpc.port}", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


def h2load_requests() -> dict[str, bytes]:
    """The request message (unframed) each h2load run sends, every call the same bytes."""
    from registry.v1 import registry_pb2 as pb

    return {"Match": pb.MatchRequest(group=GROUP, key="user-42").SerializeToString(),
            "Members": pb.MembersRequest(group=GROUP).SerializeToString(),
            "MatchBatch": pb.MatchBatchRequest(group=GROUP, keys=[f"user-42-{j}" for j in range(100)])
            .SerializeToString()}


def serve_bare(port: int) -> None:
    """Reference: the cheapest grpc.aio server answering Match, Members and MatchBatch (fixed bytes,
    request unread): the registry's own answer bytes to the h2load requests, computed once at start."""
    import grpc

    from registry.rpc import _SERVER_OPTIONS, V1_SERVICE, RegistryCore

    async def main() -> None:
        core = RegistryCore(_catalog())
        methods = core.unary_methods()
        answers = {m: methods[f"/{V1_SERVICE}/{m}"](raw) for m, raw in h2load_requests().items()}

        def fixed(answer: bytes) -> Any:
            async def handler(request: bytes, context: Any) -> bytes:
                return answer

            return grpc.unary_unary_rpc_method_handler(handler)

        server = grpc.aio.server(options=list(_SERVER_OPTIONS))
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            V1_SERVICE, {m: fixed(a) for m, a in answers.items()}),))
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
    from registry.client import AsyncRpcClient

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
    from registry.client import RpcClient

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
    from registry.api import V1_SERVICE, RegistryCore
    from registry.v1 import registry_pb2 as pb

    async def main() -> dict[str, float]:
        core = RegistryCore(_catalog())
        methods = core.unary_methods()
        reqs = {
            "Match": [pb.MatchRequest(group=GROUP, key=f"user-{i}").SerializeToString() for i in range(1000)],
            "MatchBatch": [pb.MatchBatchRequest(group=GROUP, keys=[f"user-{i}-{j}" for j in range(100)])
                           .SerializeToString() for i in range(50)],
        }
        out: dict[str, float] = {}
        for method, raw in reqs.items():
            fn, n = methods[f"/{V1_SERVICE}/{method}"], 20 * len(raw)
            best = float("inf")
            for _ in range(7):  # CPU time, best of 7: the least disturbed by other jobs
                t0 = time.process_time()
                for i in range(n):
                    fn(raw[i % len(raw)])
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


V1_PATH = "/registry.v1.Registry"
_SUFFIX = {"registry": "", "grpcio": " grpcio-front", "bare": " bare"}
H2LOAD_PLAN = [("Match", 1), ("Match", 8), ("Match", 64), ("Members", 64), ("MatchBatch", 1), ("MatchBatch", 8)]
_H2LOAD_DESC = {"Match": "MatchRequest(group='bench', key='user-42')", "Members": "MembersRequest(group='bench')",
                "MatchBatch": "MatchBatchRequest(group='bench', keys=user-42-0..user-42-99)"}
_H2LOAD_SERVICES = {"Match": 1, "Members": 10, "MatchBatch": 100}  # Services a valid answer holds
_H2LOAD_SAME = {  # what sending the same request bytes every call leaves out
    "Match": "the same key every call only skips the variation of the key's hash: the whole Match handler "
             "(parse, ring lookup, answer) is ~2.5 us in a hot loop, see 'Match handler alone CPU per call', and "
             "was ~11 us timed inside the server under this load (cold caches), of a ~250 us call",
    "Members": "Members has no key: every call does the same work anyway",
    "MatchBatch": "the same 100 keys every call only skip the variation of the keys' hashes, see 'MatchBatch "
                  "handler alone CPU per call'"}


def probe(addrs: list[str]) -> None:
    """Child process (--probe): send each h2load request once through a real gRPC channel (bytes in,
    bytes out) to each address; prints {addr: {method: answer hex, or "ERROR <code> <details>"}}."""
    import grpc

    out: dict[str, dict[str, str]] = {}
    for addr in addrs:
        got: dict[str, str] = {}
        with grpc.insecure_channel(addr) as ch:
            for method, raw in h2load_requests().items():
                call = ch.unary_unary(f"{V1_PATH}/{method}")  # no (de)serializers: raw bytes
                try:
                    got[method] = bytes(call(raw, timeout=10)).hex()
                except grpc.RpcError as e:
                    got[method] = f"ERROR {e.code()} {e.details()}"
        out[addr] = got
    print(json.dumps(out), flush=True)


def _decode(method: str, body: bytes) -> Any:
    from registry.v1 import registry_pb2 as pb

    cls: Any = {"Match": pb.MatchResponse, "Members": pb.MembersResponse, "MatchBatch": pb.MatchBatchResponse}[method]
    return cls.FromString(body)


def _check_answer(what: str, method: str, answer: str) -> bytes:
    """The probe's answer must be a real one: decodes to the expected number of this group's Services."""
    if answer.startswith("ERROR"):
        raise RuntimeError(f"{what} {method}: the gRPC probe failed: {answer}")
    body = bytes.fromhex(answer)
    services = _decode(method, body).services
    if len(services) != _H2LOAD_SERVICES[method] or any(
            s.group != GROUP or not s.id.startswith("svc-") or not s.addr for s in services):
        raise RuntimeError(f"{what} {method}: the probe's answer is not {_H2LOAD_SERVICES[method]} Service(s) "
                           f"of group {GROUP!r}: {services!r:.300}")
    return body


def h2load_run(h2load: str, port: int, method: str, body_file: Path, conc: int, seconds: float, warmup: float,
               expect_len: int, log: Path, server_pid: int) -> dict[str, Any]:
    """One h2load run: ONE connection (-c 1), `conc` streams in flight (-m), one thread, for warmup+seconds
    (-D). h2load sees HTTP statuses only, and a gRPC error is an HTTP 200 with grpc-status in the trailers
    and an empty body, so success is checked by bytes: the response DATA h2load counted must be exactly
    calls x `expect_len` (the framed length of the valid answer the probe got). The log file (one row per
    call: start us since epoch, HTTP status, us to the end of the response) gives the window and latencies."""
    log.unlink(missing_ok=True)  # h2load appends to an existing log file
    argv = [h2load, "-D", f"{round((seconds + warmup) * 1000)}ms", "-c", "1", "-m", str(conc), "-t", "1",
            "-H", "content-type: application/grpc", "-H", "te: trailers", "-d", str(body_file),
            f"--log-file={log}", f"http://127.0.0.1:{port}{V1_PATH}/{method}"]
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu0, loop0 = common.cpu_seconds(server_pid), _loop_thread_cpu(server_pid)
    t0 = time.perf_counter()
    res = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + warmup + 60)
    wall = time.perf_counter() - t0
    server_cpu = common.cpu_seconds(server_pid) - cpu0
    loop_cpu = _loop_thread_cpu(server_pid) - loop0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    gen_cpu = ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime
    counts = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                       r"(\d+) errored, (\d+) timeout", res.stdout)
    traffic = re.search(r"traffic: .*\((\d+)\) data", res.stdout)
    if res.returncode != 0 or counts is None or traffic is None:
        raise RuntimeError(f"h2load failed ({res.returncode}): {res.stdout[-1500:]} {res.stderr[-1500:]}")
    done, succeeded, data = int(counts.group(3)), int(counts.group(4)), int(traffic.group(1))
    rows = [line.split("\t") for line in log.read_text().splitlines() if line]
    bad = sum(1 for r in rows if r[1] != "200")
    if not done or succeeded != done or len(rows) != done or bad:
        raise RuntimeError(f"h2load {method} c={conc}: {done} done, {succeeded} succeeded, {len(rows)} log rows, "
                           f"{bad} not HTTP 200")
    if data != done * expect_len:
        raise RuntimeError(f"h2load {method} c={conc}: {data} response data bytes for {done} calls, expected "
                           f"{done} x {expect_len}: some answers were not the valid one (gRPC error?)")
    start = [int(r[0]) for r in rows]
    dur = [int(r[2]) for r in rows]
    cut = min(start) + warmup * 1e6  # the first `warmup` s (from the first call) are the warm-up
    last = max(s + d for s, d in zip(start, dur))
    finished = sum(1 for s, d in zip(start, dur) if s + d > cut)
    lat = [float(d) for s, d in zip(start, dur) if s >= cut]
    return {"rate": finished / ((last - cut) / 1e6), "p50": common.percentile(lat, 50),
            "p99": common.percentile(lat, 99), "calls": done, "window_calls": len(lat),
            "server_cpu": server_cpu / done, "loop_cpu": loop_cpu / done, "gen_cpu": gen_cpu / done,
            "gen_share": gen_cpu / wall, "server_share": server_cpu / wall}


def h2load_section(h2load: str, ports: dict[str, int], pids: dict[str, int], seconds: float,
                   warmup: float) -> list[common.Record]:
    """Registry and bare servers under h2load, each configuration registry then bare (interleaved)."""
    version = subprocess.run([h2load, "--version"], capture_output=True, text=True).stdout.strip() or "h2load"
    addrs = {t: f"127.0.0.1:{port}" for t, port in ports.items()}
    res = subprocess.run([sys.executable, __file__, "--probe", *addrs.values()], capture_output=True, text=True,
                         timeout=120)
    if res.returncode != 0:
        raise RuntimeError(f"gRPC probe failed: {res.stderr[-2000:]}")
    answers = json.loads(res.stdout.strip().splitlines()[-1])
    bodies = {t: {m: _check_answer(t, m, answers[addrs[t]][m]) for m in _H2LOAD_SERVICES} for t in addrs}
    for m in _H2LOAD_SERVICES:  # equal messages (a map's byte order may differ between processes)
        if _decode(m, bodies["bare"][m]) != _decode(m, bodies["registry"][m]):
            print(f"  note: the bare server's {m} answer is not the registry's ({len(bodies['bare'][m])} vs "
                  f"{len(bodies['registry'][m])} bytes)", flush=True)
    records: list[common.Record] = []
    with tempfile.TemporaryDirectory(prefix="bench_rpc_h2load_") as tmp:
        files = {}
        for m, raw in h2load_requests().items():
            files[m] = Path(tmp) / f"{m}.bin"
            files[m].write_bytes(b"\x00" + len(raw).to_bytes(4, "big") + raw)  # gRPC frame: uncompressed
        log = Path(tmp) / "log.tsv"
        for method, conc in H2LOAD_PLAN:
            got: dict[str, dict[str, Any]] = {}
            for target in ports:
                expect_len = 5 + len(bodies[target][method])
                r = got[target] = h2load_run(h2load, ports[target], method, files[method], conc, seconds, warmup,
                                             expect_len, log, pids[target])
                name = f"{method} h2load{_SUFFIX[target]} c={conc}"
                how = (f"{version} -c 1 -m {conc} -t 1 -D {seconds + warmup:g}s: ONE HTTP/2 connection with c={conc} "
                       "stream(s) in flight, one h2load thread, h2load and the server in separate processes; every "
                       f"call POSTs the same gRPC-framed {_H2LOAD_DESC[method]} ({files[method].stat().st_size} "
                       f"bytes; {_H2LOAD_SAME[method]}); throughput = calls finished after "
                       f"the first {warmup:g}s / time to the last answer, p50/p99 over the calls started after the "
                       f"first {warmup:g}s, both from h2load's --log-file; every answer checked: HTTP 200 and "
                       f"h2load's response data bytes == calls x {expect_len} (5-byte frame + the answer a real gRPC "
                       f"call of the same bytes got, {_H2LOAD_SERVICES[method]} Service(s); a gRPC error answer has "
                       "an empty body); 10 services x 160 replicas")
                if target == "grpcio":
                    how = ("the registry's grpcio front (registry.rpc, grpc.aio; used when TLS is configured), "
                           "same catalog; " + how)
                if target == "bare":
                    how = ("REFERENCE: bare grpc.aio server (same options; fixed answer = the registry's answer "
                           "bytes to this request, request unread); " + how)
                ref_rate = ref50 = ""
                if target == "registry":
                    ref_rate = TARGETS["MatchBatch"] if method == "MatchBatch" else (
                        TARGETS["Match c=64"] if (method, conc) == ("Match", 64) else "")
                    ref50 = TARGETS["Match c=1 p50"] if (method, conc) == ("Match", 1) else ""
                if method == "MatchBatch":
                    records.append(common.record(f"{name} keys/s (batch 100)", r["rate"] * 100, "keys/s", how,
                                                 reference=ref_rate))
                else:
                    records.append(common.record(f"{name} throughput", r["rate"], "req/s", how, reference=ref_rate))
                records.append(common.record(f"{name} p50", r["p50"], "us", how, reference=ref50))
                records.append(common.record(f"{name} p99", r["p99"], "us", how))
                records.append(common.record(
                    f"{name} server CPU per call", r["server_cpu"] * 1e6, "us",
                    how + "; server utime+stime (/proc) over the whole h2load run, warm-up included / every call "
                    f"h2load finished ({r['server_share']:.2f} of a core)"))
                records.append(common.record(
                    f"{name} server loop thread CPU per call", r["loop_cpu"] * 1e6, "us",
                    how + "; the server's main thread only (asyncio loop + handlers), same span"))
                records.append(common.record(
                    f"{name} h2load CPU per call", r["gen_cpu"] * 1e6, "us",
                    how + "; h2load's own utime+stime (getrusage RUSAGE_CHILDREN around the run) / every call "
                    f"it finished: {r['gen_share']:.2f} of a core, i.e. the generator is not the bottleneck",
                    core_share=round(r["gen_share"], 3)))
                keys = f" ({r['rate'] * 100:,.0f} keys/s)" if method == "MatchBatch" else ""
                print(f"  {name}: {r['rate']:,.0f} calls/s{keys}"
                      f" p50={r['p50']:.0f}us p99={r['p99']:.0f}us server-cpu/call={r['server_cpu'] * 1e6:.0f}us "
                      f"(loop thread {r['loop_cpu'] * 1e6:.0f}us, {r['server_share']:.2f} core) "
                      f"h2load-cpu/call={r['gen_cpu'] * 1e6:.1f}us ({r['gen_share']:.2f} core) "
                      f"load1m={os.getloadavg()[0]:.1f}", flush=True)
            ours = got["registry"]
            for ref in ("grpcio", "bare"):
                if ref not in got:
                    continue
                theirs = got[ref]
                how_ratio = (f"registry (native front) / {_SUFFIX[ref].strip()}, both under h2load -c 1 -m {conc}, "
                             "measured one right after the other")
                records.append(common.record(f"{method} h2load c={conc} throughput registry/{ref}",
                                             ours["rate"] / theirs["rate"], "x", how_ratio))
                records.append(common.record(f"{method} h2load c={conc} server CPU per call registry/{ref}",
                                             ours["server_cpu"] / theirs["server_cpu"], "x", how_ratio))
    return records


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
    common.require_import("registry.client", args)
    common.print_header("gRPC API load (bench_rpc)", args.quick)
    seconds, warmup = (2.0, 0.5) if args.quick else (5.0, 1.0)
    records: list[common.Record] = []
    port, grpcio_port, bare_port, sync_port = common.free_ports(4)
    with common.ProcGroup() as procs:
        srv = procs.add(common.Proc("server", [sys.executable, __file__, "--serve", str(port)]))
        srv_grpcio = procs.add(common.Proc("server-grpcio", [sys.executable, __file__, "--serve-grpcio",
                                                             str(grpcio_port)]))
        bare = procs.add(common.Proc("bare", [sys.executable, __file__, "--serve-bare", str(bare_port)]))
        bare_sync = procs.add(common.Proc("bare-sync", [sys.executable, __file__, "--serve-bare-sync", str(sync_port)]))
        for proc in (srv, srv_grpcio, bare, bare_sync):
            common.wait_for(lambda: any(line.startswith("READY") for _, line in proc.lines), 60,  # noqa: B023 - called at once, inside the iteration
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
        h2load = shutil.which("h2load")
        if h2load:
            # h2load's window is shorter in --quick: even 1.5 s holds thousands of calls at c=1.
            records += h2load_section(h2load, {"registry": port, "grpcio": grpcio_port, "bare": bare_port},
                                      {"registry": srv.pid, "grpcio": srv_grpcio.pid, "bare": bare.pid},
                                      1.5 if args.quick else seconds, warmup)
        else:
            print("  h2load figures skipped: h2load is not on PATH (Debian: apt-get install nghttp2-client); the "
                  "figures above are from Python clients, whose own CPU per call is about the server's", flush=True)
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
    elif len(sys.argv) > 2 and sys.argv[1] == "--serve-grpcio":
        serve(int(sys.argv[2]), "grpcio")
    elif len(sys.argv) > 2 and sys.argv[1] == "--serve-bare":
        serve_bare(int(sys.argv[2]))
    elif len(sys.argv) > 2 and sys.argv[1] == "--serve-bare-sync":
        serve_bare_sync(int(sys.argv[2]))
    elif len(sys.argv) > 2 and sys.argv[1] == "--probe":
        probe(sys.argv[2:])
    elif len(sys.argv) > 2 and sys.argv[1] == "--load":
        a = sys.argv[2:]
        load(a[0], a[1], a[2], int(a[3]), float(a[4]), float(a[5]))
    else:
        main()
