#!/usr/bin/env python3
"""HTTP/JSON API load (issue 15): Match req/s and latency over HTTP/1.1 beside gRPC Match on the same
registry in the same run, and the PUT refreshes/s one registry sustains.

Processes: one `registry` server (LAN profile, `-http-addr`), its group "bench" holding 10 TTL services of
160 replicas registered through the HTTP API (the shape bench_rpc.py's catalog has), and the load
generators. Match is loaded by h2load (nghttp2's C load generator, a few us of CPU per request, so the
figures are the server's): over HTTP/1.1 (`h2load --h1`) with c keep-alive connections, one request in flight
on each (no pipelining), and over gRPC (HTTP/2, ONE connection, c streams: `bench_rpc.h2load_run`, as
bench_rpc.py's h2load lines), one after the other against the same process, the same group and key;
and, as aiohttp's own floor, a bare aiohttp application answering the same bytes on the same route.
Every answer is checked: HTTP 200 and the exact byte count of the valid answer per request. p50 is over
the requests of the window after a warm-up. PUT refreshes: a separate load process (aiohttp's client,
64 connections, 64 refreshes in flight) PUTs /v1/services/bench-put/<id> over 1,000 ids again and again;
refreshes/s in the window, the server's CPU per refresh, and the load process's CPU share (a Python client:
when it saturates its core the figure is the client's bound, said in the line). Without h2load the Match
lines are skipped with a note.
"""

from __future__ import annotations

import asyncio
import json
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

common.setup_path()
GROUP = "bench"  # bench_rpc.h2load_requests() asks this group for key "user-42"
KEY = "user-42"
PUT_GROUP = "bench-put"
PUT_IDS = 200
PUT_CONC = 64


def _json(method: str, url: str, body: dict[str, Any] | None = None) -> tuple[int, bytes]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.status, r.read()


def start_registry(procs: common.ProcGroup) -> tuple[common.Proc, str, str]:
    """A registry with the HTTP front; (process, gRPC address, HTTP address) from its start line."""
    argv = [sys.executable, "-m", "registry.cli", "-id", "bench-http", "-bind", "127.0.0.1:0", "-addr",
            "127.0.0.1:0", "-http-addr", "127.0.0.1:0", "-profile", "lan", "-log-format", "json",
            "-log-level", "info"]
    proc = procs.add(common.Proc("registry", argv, env=common.repo_env()))

    def started() -> dict[str, Any] | None:
        for _, line in list(proc.lines):
            if '"registry started"' in line:
                return dict(json.loads(line))
        if not proc.alive():
            raise RuntimeError("registry exited: " + proc.tail())
        return None

    common.wait_for(started, 60, what="registry started")
    row = started()
    assert row is not None
    return proc, str(row["grpc"]), str(row["http"])


def h1_run(h2load: str, url: str, conc: int, seconds: float, warmup: float, expect_len: int, log: Path,
           server_pid: int) -> dict[str, Any]:
    """h2load over HTTP/1.1: `conc` keep-alive connections, one request in flight each, warmup+seconds."""
    log.unlink(missing_ok=True)
    argv = [h2load, "--h1", "-D", f"{round((seconds + warmup) * 1000)}ms", "-c", str(conc), "-m", "1", "-t", "1",
            f"--log-file={log}", url]
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu0 = common.cpu_seconds(server_pid)
    t0 = time.perf_counter()
    res = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + warmup + 60)
    wall = time.perf_counter() - t0
    server_cpu = common.cpu_seconds(server_pid) - cpu0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    gen_cpu = ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime
    counts = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded", res.stdout)
    traffic = re.search(r"traffic: .*\((\d+)\) data", res.stdout)
    if res.returncode != 0 or counts is None or traffic is None:
        raise RuntimeError(f"h2load failed ({res.returncode}): {res.stdout[-1500:]} {res.stderr[-1500:]}")
    done, succeeded, data = int(counts.group(3)), int(counts.group(4)), int(traffic.group(1))
    rows = [line.split("\t") for line in log.read_text().splitlines() if line]
    bad = sum(1 for r in rows if r[1] != "200")
    if not done or succeeded != done or bad:
        raise RuntimeError(f"h2load --h1 c={conc}: {done} done, {succeeded} succeeded, {bad} not HTTP 200")
    started = int(counts.group(2))  # a request cut by the end of the run may have its answer counted
    if data % expect_len or not done <= data // expect_len <= started:
        raise RuntimeError(f"h2load --h1 c={conc}: {data} body bytes for {done} requests, expected {done} x "
                           f"{expect_len}: some answers were not the valid one")
    start = [int(r[0]) for r in rows]
    dur = [int(r[2]) for r in rows]
    cut = min(start) + warmup * 1e6
    last = max(s + d for s, d in zip(start, dur))
    finished = sum(1 for s, d in zip(start, dur) if s + d > cut)
    lat = [float(d) for s, d in zip(start, dur) if s >= cut]
    return {"rate": finished / ((last - cut) / 1e6), "p50": common.percentile(lat, 50),
            "p99": common.percentile(lat, 99), "server_cpu": server_cpu / done, "gen_share": gen_cpu / wall}


def serve_bare(answer_file: str) -> None:
    """REFERENCE: aiohttp's own floor: a bare web.Application whose one route returns the registry's Match
    answer (fixed bytes, read from `answer_file`), through AppRunner and TCPSite, access log off."""
    from aiohttp import web

    answer = Path(answer_file).read_bytes()

    async def match(request: web.Request) -> web.Response:
        return web.Response(body=answer, content_type="application/json", charset="utf-8")

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/v1/match/{group}/{key:.*}", match)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        print(f"READY {port}", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


def grpc_match_answer(grpc_addr: str) -> bytes:
    import bench_rpc
    import grpc

    with grpc.insecure_channel(grpc_addr) as ch:
        call = ch.unary_unary(f"{bench_rpc.V1_PATH}/Match")
        answer: bytes = call(bench_rpc.h2load_requests()["Match"], timeout=10)
    return answer


def put_load(base: str, seconds: float, warmup: float) -> None:
    """The PUT load process: prints one JSON line {calls, errors, cpu}."""
    import aiohttp

    async def main() -> dict[str, Any]:
        count = {"calls": 0, "errors": 0}
        connector = aiohttp.TCPConnector(limit=PUT_CONC)
        async with aiohttp.ClientSession(connector=connector) as s:
            async def put(i: int) -> int:
                body = {"addr": f"10.1.{i % 250}.{i % 200}:80", "ttl": "60s"}
                async with s.put(f"{base}/v1/services/{PUT_GROUP}/id-{i % PUT_IDS}", json=body) as r:
                    await r.read()
                    return r.status

            # every id registered first (a first write puts the service on its group's ring): then refreshes only
            for first in range(0, PUT_IDS, PUT_CONC):
                statuses = await asyncio.gather(*(put(i) for i in range(first, min(first + PUT_CONC, PUT_IDS))))
                if set(statuses) != {200}:
                    raise RuntimeError(f"registering: statuses {sorted(set(statuses))}")
            print("REGISTERED", flush=True)
            stop_at = time.monotonic() + warmup + seconds
            window_from = time.monotonic() + warmup

            async def worker(w: int) -> None:
                i = w
                while time.monotonic() < stop_at:
                    status = await put(i)
                    if time.monotonic() >= window_from:
                        count["calls" if status == 200 else "errors"] += 1
                    i += PUT_CONC

            cpu0 = time.process_time()
            await asyncio.gather(*(worker(w) for w in range(PUT_CONC)))
            return {**count, "cpu": time.process_time() - cpu0}

    print(json.dumps(asyncio.run(main())), flush=True)


def main() -> int:
    p = common.base_parser(__doc__ or "")
    args = p.parse_args()
    common.require_import("aiohttp", args)
    common.require_import("registry.http.front", args)
    common.print_header("HTTP API load (bench_http)", args.quick)
    seconds, warmup = (2.0, 0.5) if args.quick else (5.0, 1.0)
    records: list[common.Record] = []
    with common.ProcGroup() as procs:
        srv, grpc_addr, http_addr = start_registry(procs)
        base = f"http://{http_addr}"
        for i in range(10):
            _json("PUT", f"{base}/v1/services/{GROUP}/svc-{i}",
                  {"addr": f"10.0.0.{i}:80", "replicas": 160, "ttl": "1h"})
        match_url = f"{base}/v1/match/{GROUP}/{KEY}"
        common.wait_for(lambda: _json("GET", match_url)[0] == 200, 30, what="the TTL services matched")
        http_len = len(_json("GET", match_url)[1])
        h2load = shutil.which("h2load")
        if h2load is None:
            print("  note: h2load not on PATH: the Match lines are skipped (apt-get install nghttp2-client)")
        else:
            import bench_rpc

            grpc_port = int(grpc_addr.rsplit(":", 1)[1])
            grpc_len = 5 + len(grpc_match_answer(grpc_addr))
            with tempfile.TemporaryDirectory(prefix="bench_http_") as tmp:
                answer_file = Path(tmp) / "answer.json"
                answer_file.write_bytes(_json("GET", match_url)[1])
                bare = procs.add(common.Proc("bare-aiohttp", [sys.executable, __file__, "--serve-bare",
                                                              str(answer_file)]))
                common.wait_for(lambda: any(line.startswith("READY") for _, line in bare.lines), 60,
                                what="bare aiohttp ready")
                bare_port = int(next(line for _, line in bare.lines if line.startswith("READY")).split()[1])
                bare_url = f"http://127.0.0.1:{bare_port}/v1/match/{GROUP}/{KEY}"
                body = Path(tmp) / "match.bin"
                raw = bench_rpc.h2load_requests()["Match"]
                body.write_bytes(b"\x00" + len(raw).to_bytes(4, "big") + raw)
                log = Path(tmp) / "log.tsv"
                for conc in (1, 64):
                    h = h1_run(h2load, match_url, conc, seconds, warmup, http_len, log, srv.pid)
                    b = h1_run(h2load, bare_url, conc, seconds, warmup, http_len, log, bare.pid)
                    g = bench_rpc.h2load_run(h2load, grpc_port, "Match", body, conc, seconds, warmup, grpc_len, log,
                                             srv.pid)
                    how_h = (f"h2load --h1, {conc} keep-alive connection(s), one request in flight each, "
                             f"{seconds}s window after {warmup}s warm-up; GET /v1/match/{GROUP}/{KEY} "
                             f"({http_len}-byte JSON answer); 10 TTL services x 160 replicas")
                    how_g = (f"REFERENCE in the same run, same process and group: gRPC Match by h2load, ONE HTTP/2 "
                             f"connection, {conc} stream(s) in flight (bench_rpc.h2load_run), {seconds}s window")
                    how_b = (f"REFERENCE in the same run: a bare aiohttp application (AppRunner, TCPSite, access log "
                             f"off) answering the same {http_len} bytes on the same route, h2load --h1 as above")
                    for name, r, how in ((f"HTTP Match c={conc}", h, how_h), (f"bare aiohttp c={conc}", b, how_b),
                                         (f"gRPC Match c={conc}", g, how_g)):
                        records.append(common.record(f"{name} throughput", r["rate"], "req/s", how))
                        records.append(common.record(f"{name} p50", r["p50"], "us", how))
                        records.append(common.record(f"{name} p99", r["p99"], "us", how))
                        records.append(common.record(f"{name} server CPU per request", r["server_cpu"] * 1e6, "us",
                                                     how + "; server utime+stime / requests"))
                        print(f"  {name}: {r['rate']:,.0f} req/s p50={r['p50']:.0f}us p99={r['p99']:.0f}us "
                              f"server-cpu/req={r['server_cpu'] * 1e6:.0f}us", flush=True)
                    records.append(common.record(f"Match c={conc} throughput HTTP/gRPC", h["rate"] / g["rate"], "x",
                                                 "the HTTP and gRPC lines above, measured one after the other"))
                    records.append(common.record(f"Match c={conc} server CPU per request HTTP/bare aiohttp",
                                                 h["server_cpu"] / b["server_cpu"], "x",
                                                 "what the registry's HTTP front costs over aiohttp's own floor"))
        loader = subprocess.Popen([sys.executable, __file__, "--put-load", base, str(seconds), str(warmup)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert loader.stdout is not None
            ready = loader.stdout.readline()  # "REGISTERED": every id is on the ring, refreshes from now on
            if not ready.startswith("REGISTERED"):
                raise RuntimeError(f"PUT load failed: {ready} {loader.communicate(timeout=60)[1][-2000:]}")
            cpu0 = common.cpu_seconds(srv.pid)
            out, err = loader.communicate(timeout=seconds + warmup + 120)
            server_cpu = common.cpu_seconds(srv.pid) - cpu0
        finally:
            if loader.poll() is None:
                loader.kill()
        if loader.returncode != 0:
            raise RuntimeError(f"PUT load failed: {err[-2000:]}")
        put = json.loads(out.strip().splitlines()[-1])
        how = (f"aiohttp client in its own process, {PUT_CONC} connections, {PUT_CONC} PUTs in flight over "
               f"{PUT_IDS} ids registered before (so every PUT is a refresh), {seconds}s window after {warmup}s warm-up; "
               f"load process CPU {put['cpu'] / (seconds + warmup) * 100:.0f}% of a core (near 100%: the client "
               f"is the bound)")
        rate = put["calls"] / seconds
        records.append(common.record("PUT refreshes/s", rate, "req/s", how, errors=put["errors"]))
        records.append(common.record("PUT server CPU per refresh", server_cpu / max(put["calls"], 1) * 1e6
                                     * seconds / (seconds + warmup), "us",
                                     how + "; server utime+stime over the run / refreshes in the window, scaled"))
        print(f"  PUT: {rate:,.0f} refreshes/s, {put['errors']} errors", flush=True)
    common.emit(records, args)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 3 and sys.argv[1] == "--put-load":
        put_load(sys.argv[2], float(sys.argv[3]), float(sys.argv[4]))
    elif len(sys.argv) > 2 and sys.argv[1] == "--serve-bare":
        serve_bare(sys.argv[2])
    else:
        sys.exit(main())
