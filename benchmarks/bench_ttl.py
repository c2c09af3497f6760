#!/usr/bin/env python3
"""TTL services at scale (issue 15): a pool of 3 `registry` servers (LAN profile, real processes on
loopback, each with its HTTP front) holding N TTL services that are refreshed every P seconds through
HTTP PUTs spread evenly over the three registries and over time.

The load generator is this process: one aiohttp `ClientSession` per registry (keep-alive, at most 16
connections each), each service always through the same registry (as a service would), in 10 groups.
Measured over a window starting one period after the last service registered:

  * CPU% (utime+stime from /proc over the window / the window) and RSS (VmRSS at its end) of each
    registry; what each registry does: take ~N/(3P) PUTs/s and merge the ~2N/(3P) entries/s the two
    others push;
  * replication delay: once a second a marker entry is PUT on registry A with a new addr, and a thread
    polls registry C's gRPC Match (RpcClient, no cache, connected beforehand, ~every 2 ms) until it
    answers that addr; the delay is from just before the PUT is sent to that answer (so it includes the
    PUT's own round trip); the first marker (which creates its group) is not counted;
  * lost entries: after the window, the load stops and every registry must list every service in
    Members of its group (TTL 30 s, so none expired): the count missing, summed over registries (must be 0);
  * the PUT rate achieved and the PUTs refused or failed (must be 0);
  * after the window, the load still running: a 4th registry joins through A; the seconds from its
    spawn to its /metrics counting every service (what a restarted registry takes to be whole).

The services first register over a ramp (service i at i * ramp / N), then each is refreshed every P s
from its registration on: registering is the costly part (each new service joins its group's ring on
every registry, ~4-8 ms of CPU at the default 4096 points in a group of 1,000), and 10,000 of them at
once in 10 s (with a 30 s TTL) never settled on this 2-core machine: the loops fell behind, entries
lapsed before their refresh got through and joined their rings again.

Full: N=10,000, ramp 200 s, P=10 s, 60 s window. --quick: N=1,500, ramp 10 s, P=10 s, 15 s window.
"""

from __future__ import annotations

import asyncio
import heapq
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

common.setup_path()

GROUPS = [f"bench-ttl-{i}" for i in range(10)]
MARKER_GROUP = "bench-ttl-marker"
TTL = "30s"
CONNECTIONS = 16
_GOSSIP: list[str] = []  # the pool's gossip addresses, A's first


def _start_pool(group: common.ProcGroup, env: dict[str, str]) -> tuple[list[common.Proc], list[str], list[str]]:
    """Three registries, B and C joined to A; their HTTP bases and gRPC addresses."""
    procs: list[common.Proc] = []
    https: list[str] = []
    rpcs: list[str] = []
    seed = ""
    for i, name in enumerate("ABC"):
        g, r, h = common.free_ports(3)
        argv = common.registry_argv(f"ttl-{name}", g, r, join=seed, profile="lan") + ["-http-addr", f"127.0.0.1:{h}"]
        p = group.add(common.Proc(name, argv, env=env))
        common.wait_server(p, "127.0.0.1", h, 60)
        common.wait_server(p, "127.0.0.1", r, 60)
        if i == 0:
            seed = f"127.0.0.1:{g}"
        _GOSSIP.append(f"127.0.0.1:{g}")
        procs.append(p)
        https.append(f"http://127.0.0.1:{h}")
        rpcs.append(f"127.0.0.1:{r}")
    from registry.client import RpcClient

    for rpc in rpcs:
        with RpcClient(rpc, timeout=10.0) as c:
            common.wait_for(lambda c=c: len(c.members("registry-group")) == 3, 60, what=f"{rpc} seeing the pool")
    return procs, https, rpcs


class Load:
    """N services, registered over `ramp` seconds (service i at i * ramp / N), each then refreshed every
    `period` s, through PUTs spread over the registries; each service always through the same one."""

    def __init__(self, https: list[str], n: int, period: float, ramp: float, replicas: int = 0) -> None:
        self.https = https
        self.replicas = replicas
        self.n = n
        self.period = period
        self.ramp = ramp
        self.done = 0
        self.failed = 0
        self.issued = 0
        self.errors: dict[str, int] = {}
        self.first_cycle = asyncio.Event()
        self._stop = asyncio.Event()
        self._start = 0.0
        #: (due, service) of each service's next PUT, in seconds from the start
        self._schedule = [(i * ramp / n, i) for i in range(n)]

    def service(self, i: int) -> tuple[int, str, str]:
        """(registry index, group, id) of service i."""
        return i % len(self.https), GROUPS[i % len(GROUPS)], f"svc-{i}"

    def behind(self) -> float:
        """Seconds the oldest PUT not yet sent is overdue (0: the generator keeps up)."""
        if not self._start or not self._schedule:
            return 0.0
        return max(0.0, time.monotonic() - self._start - self._schedule[0][0])

    async def run(self) -> None:
        import aiohttp

        sessions = [aiohttp.ClientSession(base, connector=aiohttp.TCPConnector(limit=CONNECTIONS))
                    for base in self.https]
        sem = asyncio.Semaphore(CONNECTIONS * len(self.https))
        tasks: set[asyncio.Task[None]] = set()
        schedule = self._schedule
        registered = 0
        seen = bytearray(self.n)
        try:
            self._start = time.monotonic()
            while not self._stop.is_set():
                now = time.monotonic() - self._start
                while schedule and schedule[0][0] <= now and not self._stop.is_set():
                    await sem.acquire()
                    _, i = heapq.heapreplace(schedule, (schedule[0][0] + self.period, schedule[0][1]))
                    t = asyncio.create_task(self._put(sessions, i, sem))
                    tasks.add(t)
                    t.add_done_callback(tasks.discard)
                    self.issued += 1
                    if not seen[i]:  # its first PUT: the registration
                        seen[i] = 1
                        registered += 1
                        if registered == self.n:
                            t.add_done_callback(lambda _t: self.first_cycle.set())
                await asyncio.sleep(0.005)
            if tasks:
                await asyncio.wait(tasks)
        finally:
            for s in sessions:
                await s.close()

    async def _put(self, sessions: list[Any], i: int, sem: asyncio.Semaphore) -> None:
        reg, group, sid = self.service(i)
        try:
            body: dict[str, Any] = {"addr": f"10.{i // 65536}.{i // 256 % 256}.{i % 256}:80", "ttl": TTL}
            if self.replicas:
                body["replicas"] = self.replicas
            async with sessions[reg].put(f"/v1/services/{group}/{sid}", json=body) as resp:
                await resp.read()
                if resp.status == 200:
                    self.done += 1
                else:
                    self.failed += 1
                    self.errors[str(resp.status)] = self.errors.get(str(resp.status), 0) + 1
        except Exception as exc:  # noqa: BLE001 - counted and reported: a benchmark goes on
            self.failed += 1
            self.errors[type(exc).__name__] = self.errors.get(type(exc).__name__, 0) + 1
        finally:
            sem.release()

    def stop(self) -> None:
        self._stop.set()


def _marker_delays(http_a: str, rpc_c: str, rounds: int, stop: threading.Event) -> list[float]:
    """PUT a marker with a new addr on A once a second; the delay until C's Match answers it."""
    import json
    import urllib.request

    from registry.client import NotFound, RpcClient

    delays: list[float] = []
    with RpcClient(rpc_c, timeout=10.0) as c:
        c.groups()  # the channel is connected before the first timed round
        for k in range(rounds + 1):  # round 0 (the marker group's creation) is not counted
            if stop.is_set():
                break
            addr = f"10.255.{k // 256 % 256}.{k % 256}:{1000 + k}"
            req = urllib.request.Request(f"{http_a}/v1/services/{MARKER_GROUP}/marker", method="PUT",
                                         data=json.dumps({"addr": addr, "ttl": TTL}).encode(),
                                         headers={"Content-Type": "application/json"})
            t0 = time.monotonic()
            with urllib.request.urlopen(req, timeout=10) as resp:
                resp.read()
            deadline = t0 + 30
            while time.monotonic() < deadline:
                try:
                    if c.match(MARKER_GROUP, "k").addr == addr:
                        if k:
                            delays.append(time.monotonic() - t0)
                        break
                except NotFound:
                    pass
                time.sleep(0.002)
            next_at = t0 + 1.0
            while time.monotonic() < next_at and not stop.is_set():
                time.sleep(0.01)
    return delays


def _rejoin(group: common.ProcGroup, env: dict[str, str], https: list[str], n: int) -> float:
    """Seconds from spawning a 4th registry (joined through A) to its holding all n services."""
    import re
    import urllib.request

    seed = _GOSSIP[0]
    g, r, m = common.free_ports(3)
    argv = common.registry_argv("ttl-D", g, r, join=seed, profile="lan") + ["-metrics-addr", f"127.0.0.1:{m}"]
    t0 = time.monotonic()
    d = group.add(common.Proc("D", argv, env=env))
    sample = re.compile(r'^registry_ttl_entries\{group="bench-ttl-\d+"\} (\S+)$', re.M)

    def whole() -> bool:
        if not d.alive():
            raise RuntimeError(f"registry D exited:\n{d.tail()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{m}/metrics", timeout=5) as resp:
                text = resp.read().decode()
        except OSError:
            return False
        return sum(int(float(v)) for v in sample.findall(text)) == n

    common.wait_for(whole, 300, 0.01, "the 4th registry holding every service")
    took = time.monotonic() - t0
    d.stop()
    return took


def _missing(rpcs: list[str], load: Load) -> dict[str, int]:
    """Per registry, how many services it does not list (every one was written within the TTL)."""
    from registry.client import NotFound, RpcClient

    want: dict[str, set[str]] = {g: set() for g in GROUPS}
    for i in range(load.n):
        _, g, sid = load.service(i)
        want[g].add(sid)
    out: dict[str, int] = {}
    for name, rpc in zip("ABC", rpcs):
        with RpcClient(rpc, timeout=30.0) as c:
            missing = 0
            for g in GROUPS:
                try:
                    got = {s.id for s in c.members(g)}
                except NotFound:
                    got = set()
                missing += len(want[g] - got)
            out[name] = missing
    return out


async def _measure(group: common.ProcGroup, env: dict[str, str], procs: list[common.Proc], https: list[str],
                   rpcs: list[str], n: int, period: float, window: float, ramp: float,
                   replicas: int) -> list[common.Record]:
    idle_rss = [common.rss_bytes(p.popen.pid) / 2**20 for p in procs if p.popen is not None]
    load = Load(https, n, period, ramp, replicas)
    runner = asyncio.create_task(load.run())
    began = time.monotonic()
    # Registering is the costly part (each new service joins its group's ring: ~4-8 ms of CPU per
    # registry at 4096 points in a group of 1,000), so it gets time of its own.
    await asyncio.wait_for(load.first_cycle.wait(), ramp * 3 + period * 6 + 600)
    registered = time.monotonic() - began
    # Measure refreshes at their steady rate: one period after the last registration, once caught up.
    settle = time.monotonic()
    while load.behind() > 1.0 or time.monotonic() - settle < period:
        await asyncio.sleep(0.1)
    pids = [p.popen.pid for p in procs if p.popen is not None]
    cpu0 = [common.cpu_seconds(pid) for pid in pids]
    done0, t0 = load.done, time.monotonic()
    stop = threading.Event()
    delays_box: list[list[float]] = []
    marker = threading.Thread(target=lambda: delays_box.append(_marker_delays(https[0], rpcs[2], int(window), stop)))
    marker.start()
    await asyncio.sleep(window)
    elapsed = time.monotonic() - t0
    cpu = [(common.cpu_seconds(pid) - c0) / elapsed * 100 for pid, c0 in zip(pids, cpu0)]
    rss = [common.rss_bytes(pid) / 2**20 for pid in pids]
    rate = (load.done - done0) / elapsed
    stop.set()
    await asyncio.get_running_loop().run_in_executor(None, marker.join)
    rejoin = await asyncio.get_running_loop().run_in_executor(None, _rejoin, group, env, https, n)
    load.stop()
    await runner
    delays = delays_box[0] if delays_box else []
    missing = await asyncio.get_running_loop().run_in_executor(None, _missing, rpcs, load)
    points = f"replicas {replicas}" if replicas else "the default 4096 ring points each"
    how = (f"3 registries (LAN profile) on loopback, {n:,} TTL services (ttl {TTL}, {points}) registered over "
           f"{ramp:g} s, then each refreshed every {period:g} s "
           f"through HTTP PUT spread over the 3 (aiohttp, keep-alive, {CONNECTIONS} connections each) from this "
           f"process; /proc over a {window:g} s window, from one period after every service was registered")
    recs = [common.record(f"CPU of registry {name}", round(c, 1), "% of a core", how) for name, c in zip("ABC", cpu)]
    recs += [common.record(f"RSS of registry {name}", round(r, 1), "MiB", "VmRSS at the window's end",
                           reference=f"{r0:.1f} MiB before the load")
             for name, r, r0 in zip("ABC", rss, idle_rss)]
    recs.append(common.record("PUT refreshes served (all 3)", round(rate, 1), "PUT/s",
                              f"200 answers over the window; asked {n / period:g}/s"))
    recs.append(common.record("PUTs refused or failed", load.failed, "", f"whole run; by kind {load.errors}"))
    recs.append(common.record(f"{n:,} services registered", round(registered, 1), "s",
                              f"from the load's start to the last first PUT answered; asked over {ramp:g} s "
                              "(every new service joins its group's ring on every registry: the costly part)"))
    if delays:
        how_d = (f"{len(delays)} marker PUTs on A, once a second under the load: from just before the PUT to C's "
                 "gRPC Match answering the new addr (polled every ~2 ms)")
        recs.append(common.record("replication delay A->C p50", round(common.percentile(delays, 50) * 1000, 1),
                                  "ms", how_d))
        recs.append(common.record("replication delay A->C p99", round(common.percentile(delays, 99) * 1000, 1),
                                  "ms", how_d))
    recs.append(common.record(f"a 4th registry joining holds all {n:,}", round(rejoin, 2), "s",
                              "from its process's spawn (imports and start included) to its /metrics counting "
                              "every service in registry_ttl_entries, the load still running; it joins through A"))
    recs.append(common.record("lost entries (missing on a registry)", sum(missing.values()), "",
                              f"after the load: services not in Members of their group, per registry {missing}"))
    return recs


def main() -> int:
    p = common.base_parser(__doc__ or "")
    p.add_argument("--services", type=int, default=0, help="TTL services (default 10000; quick 1500)")
    p.add_argument("--period", type=float, default=10.0, help="seconds between refreshes of a service (default 10)")
    p.add_argument("--window", type=float, default=0.0, help="seconds measured (default 60; quick 15)")
    p.add_argument("--ramp", type=float, default=-1.0,
                   help="seconds over which the services first register (default 200; quick 10)")
    p.add_argument("--replicas", type=int, default=0,
                   help="ring points per service (the PUT's replicas; default: the registry's, 4096)")
    args = p.parse_args()
    if args.services < 0 or args.period <= 0 or args.window < 0 or args.replicas < 0:
        p.error("--services, --window and --replicas must be >= 0 (0: the default), --period > 0")
    for mod in ("registry.cli", "registry.client", "registry.ttl.driver", "aiohttp"):
        common.require_import(mod, args)
    n = args.services or (1_500 if args.quick else 10_000)
    window = args.window or (15.0 if args.quick else 60.0)
    ramp = args.ramp if args.ramp >= 0 else (10.0 if args.quick else 200.0)
    common.print_header(f"TTL services: {n:,} refreshed every {args.period:g} s over 3 registries", args.quick)
    env = common.repo_env()
    with common.ProcGroup() as group:
        procs, https, rpcs = _start_pool(group, env)
        records = asyncio.run(_measure(group, env, procs, https, rpcs, n, args.period, window, ramp, args.replicas))
    common.emit(records, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
