#!/usr/bin/env python3
"""Health checks (issue 14), real processes on loopback, LAN profile: how fast a service's published
health moves its keys, against a plain Serf tag update measured in the same run, and what 100 HTTP
checks cost the service process.

Two `registry` servers (R2 joined to R1), an anchor service without checks (common.SERVICE_SRC) and a
checked service (SERVICE_SRC below: `Register` with an `HttpCheck` on its own /health, 0.13 s interval,
Consul's thresholds 0; 0.13 and not 0.1 s, so that the probes, and with them the moments the service
publishes, fall at ten different phases of its 200 ms gossip tick instead of two), both joined through R1.  The checked service prints `PUBLISH <monotonic>
<status>` from a logging handler on Register's "health of ..." record, i.e. the moment its checks'
aggregate changed and the tag update is handed to gossip (CLOCK_MONOTONIC is system-wide).  One
Match poller per registry (a thread each, `RpcClient` without cache, every ~2 ms) on a key the
checked service owns.  Each round:

  * failover: `break` on the service's stdin (its /health answers 500 from then on); from PUBLISH
    critical to the first Match on R1 (the registry it joined) / on R2 (another) no longer answering it;
  * failback: `mend`; from PUBLISH passing to the first Match answering it again;
  * reference, a plain tag update: `tag N` (the service calls `Register.set_tags({"round": N})`, an
    unrelated tag, stamping T_TAG just before); from T_TAG to the first Members on R1 / R2 listing it.
Medians (and max) over the rounds; "both" is per round the later of R1 and R2.

CPU: one service process with 100 `HttpCheck`s at 1 s interval against a separate HTTP server
process (stdlib, answering 200), and, in the same run and pool, the same service without checks;
utime+stime from /proc over the same window after a warm-up.
"""

from __future__ import annotations

import functools
import random
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

common.setup_path()
GROUP = "bench-health"

#: A service: argv = id, gossip bind, registries, group, n_checks, interval, target ("self" = its own
#: /health, which stdin's `break`/`mend` flip).  Prints `PUBLISH <mono> <word>` when its health is
#: published, `READY <mono> addr=<http addr>` once registered; stdin: break, mend, tag N, stop.
SERVICE_SRC = r'''
import logging, os, sys, threading, time
sys.path.insert(0, os.environ.get("REGISTRY_REPO", "."))
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from registry.register import HttpCheck, Register
sid, bind, registries, group, n, interval, target = sys.argv[1:8]
broken = threading.Event()
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        code = 500 if broken.is_set() else 200
        self.send_response(code); self.send_header("Content-Length", "2"); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *a): pass
httpd = ThreadingHTTPServer(("127.0.0.1", 0), H); httpd.daemon_threads = True
threading.Thread(target=httpd.serve_forever, daemon=True).start()
addr = "127.0.0.1:%d" % httpd.server_address[1]
url = "http://%s/health" % addr if target == "self" else target
class Pub(logging.Handler):
    def emit(self, record):
        msg = record.getMessage()
        if msg.startswith("health of "):
            print("PUBLISH %.6f %s" % (time.monotonic(), msg.split(": ", 1)[1].split(" ", 1)[0]), flush=True)
log = logging.getLogger("registry.register.register"); log.setLevel(logging.INFO); log.addHandler(Pub())
checks = [HttpCheck(url, interval=float(interval), timeout=1.0) for _ in range(int(n))]
reg = Register(sid, bind, "", registries, group, addr, profile="lan", checks=checks)
reg.start()
print("READY %.6f addr=%s" % (time.monotonic(), addr), flush=True)
for line in sys.stdin:
    cmd = line.split()
    if not cmd:
        continue
    if cmd[0] == "break":
        print("BROKE %.6f" % time.monotonic(), flush=True); broken.set()
    elif cmd[0] == "mend":
        print("MENDED %.6f" % time.monotonic(), flush=True); broken.clear()
    elif cmd[0] == "tag":
        print("T_TAG %.6f" % time.monotonic(), flush=True); reg.set_tags({"round": cmd[1]})
    elif cmd[0] == "stop":
        reg.stop(); break
'''

#: An HTTP server answering 200 to every GET (the target of the 100 checks); prints `PORT <n>`.
TARGET_SRC = r'''
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *a): pass
s = ThreadingHTTPServer(("127.0.0.1", 0), H); s.daemon_threads = True
print("PORT %d" % s.server_address[1], flush=True)
s.serve_forever()
'''


class Events:
    """Lines `<KIND> <monotonic> ...` a service printed, in order, waited on by kind."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.items: list[tuple[str, float, list[str]]] = []

    def on_line(self, proc: common.Proc, t: float, line: str) -> None:
        parts = line.split()
        if len(parts) >= 2 and parts[0].isupper():
            try:
                stamp = float(parts[1])
            except ValueError:
                return
            with self.cond:
                self.items.append((parts[0], stamp, parts[2:]))
                self.cond.notify_all()

    def mark(self) -> int:
        with self.cond:
            return len(self.items)

    def wait(self, kind: str, since: int, timeout: float, proc: common.Proc, arg: str | None = None) -> float:
        """The time stamp of the first `kind` line (with first argument `arg`) after index `since`."""
        end = time.monotonic() + timeout
        with self.cond:
            while True:
                for k, stamp, rest in self.items[since:]:
                    if k == kind and (arg is None or (rest and rest[0] == arg)):
                        return stamp
                left = end - time.monotonic()
                if left <= 0 or not proc.alive():
                    raise TimeoutError(f"{proc.name} printed no {kind} {arg or ''} within {timeout:.0f}s:\n{proc.tail()}")
                self.cond.wait(min(left, 0.2))


class Poller:
    """One registry's view, through its own `RpcClient` (no cache)."""

    def __init__(self, rpc: str) -> None:
        from registry.client import RpcClient

        self.client = RpcClient(rpc, cache=False, timeout=2.0)

    def owner(self, key: str) -> str | None:
        from registry.client import RegistryError

        try:
            return str(self.client.match(GROUP, key).id)
        except RegistryError:
            return None

    def tag(self, ident: str, name: str) -> str | None:
        from registry.client import RegistryError

        try:
            found = [s for s in self.client.members(GROUP) if s.id == ident]
        except RegistryError:
            return None
        return found[0].tags.get(name) if found else None

    def close(self) -> None:
        self.client.close()


def race(pollers: list[Poller], holds: Callable[[Poller], bool], act: Callable[[], None], timeout: float) -> list[float]:
    """Start polling every registry (a thread each), then `act()`; the monotonic time at which each
    first saw `holds` (taken when the answer arrived)."""
    results: list[Any] = [None] * len(pollers)
    started = threading.Barrier(len(pollers) + 1)

    def run(i: int) -> None:
        end = time.monotonic() + timeout
        started.wait()
        while time.monotonic() < end:
            if holds(pollers[i]):
                results[i] = time.monotonic()
                return
            time.sleep(0.002)
        results[i] = TimeoutError(f"registry {i + 1}: no change within {timeout:.0f}s")

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(pollers))]
    for t in threads:
        t.start()
    started.wait()
    act()
    for t in threads:
        t.join()
    for r in results:
        if isinstance(r, Exception):
            raise r
    return [float(r) for r in results]


def _tagged(p: Poller, want: str) -> bool:
    return p.tag("checked", "round") == want


def phase() -> None:
    """A random pause before each action.  Each round's change is seen at a gossip tick of the service
    (every 200 ms at the LAN profile) and the next action would follow it by a fixed few ms, so every
    sample would measure the same tick phase (the first trial: tag updates 196-198 ms in 4 of 5 rounds);
    a uniformly random pause over two intervals samples the phase instead."""
    time.sleep(random.uniform(0.0, 0.4))


def ms(values: list[float]) -> float:
    return round(statistics.median(values) * 1000, 2)


def measure_failover(group: common.ProcGroup, rounds: int, env: dict[str, str]) -> list[common.Record]:
    from registry.client import RpcClient

    g1, r1, g2, r2 = common.free_ports(4)
    procs = [group.add(common.Proc("R1", common.registry_argv("health-r1", g1, r1), env=env))]
    common.wait_server(procs[0], "127.0.0.1", r1, 30)
    procs.append(group.add(common.Proc("R2", common.registry_argv("health-r2", g2, r2, join=f"127.0.0.1:{g1}"), env=env)))
    common.wait_server(procs[1], "127.0.0.1", r2, 30)
    seeds = f"127.0.0.1:{g1}"
    group.add(common.Proc("anchor", common.service_argv("anchor", f"127.0.0.1:{common.free_port()}", seeds, GROUP,
                                                         "127.0.0.1:9"), env=env, stdin=True))
    events = Events()
    svc = group.add(common.Proc("checked", [sys.executable, "-c", SERVICE_SRC, "checked",
                                            f"127.0.0.1:{common.free_port()}", seeds, GROUP, "1", "0.13", "self"],
                                env=env, stdin=True, on_line=events.on_line))
    events.wait("READY", 0, 60, svc)
    pollers = [Poller(f"127.0.0.1:{r1}"), Poller(f"127.0.0.1:{r2}")]
    try:
        with RpcClient(f"127.0.0.1:{r1}", timeout=5.0) as c:
            def owned_key() -> str | None:
                for i in range(500):
                    key = f"user-{i}"
                    if all(p.owner(key) == "checked" for p in pollers):
                        return key
                return None

            common.wait_for(lambda: {s.id for s in c.members(GROUP)} == {"anchor", "checked"}, 30, 0.05, "both services")
        key = None
        end = time.monotonic() + 30
        while key is None and time.monotonic() < end:
            key = owned_key()
        if key is None:
            raise RuntimeError("no key owned by the checked service on both registries")
        out: dict[str, list[list[float]]] = {"failover": [], "failback": [], "tag": [], "break": []}
        for rnd in range(rounds):
            phase()
            mark = events.mark()
            seen = race(pollers, lambda p: p.owner(key) != "checked", lambda: svc.send("break"), 20)
            broke = events.wait("BROKE", mark, 10, svc)
            pub = events.wait("PUBLISH", mark, 10, svc, "critical")
            out["failover"].append([t - pub for t in seen])
            out["break"].append([pub - broke])
            phase()
            mark = events.mark()
            seen = race(pollers, lambda p: p.owner(key) == "checked", lambda: svc.send("mend"), 20)
            pub = events.wait("PUBLISH", mark, 10, svc, "passing")
            out["failback"].append([t - pub for t in seen])
            phase()
            mark = events.mark()
            seen = race(pollers, functools.partial(_tagged, want=str(rnd)), functools.partial(svc.send, f"tag {rnd}"), 20)
            t_tag = events.wait("T_TAG", mark, 10, svc)
            out["tag"].append([t - t_tag for t in seen])
            print(f"   round {rnd + 1}: failover R1/R2 {out['failover'][-1][0] * 1000:.1f}/{out['failover'][-1][1] * 1000:.1f} ms, "
                  f"failback {out['failback'][-1][0] * 1000:.1f}/{out['failback'][-1][1] * 1000:.1f} ms, "
                  f"tag update {out['tag'][-1][0] * 1000:.1f}/{out['tag'][-1][1] * 1000:.1f} ms", flush=True)
    finally:
        for p in pollers:
            p.close()
    return failover_records(out, rounds)


def failover_records(out: dict[str, list[list[float]]], rounds: int) -> list[common.Record]:
    def col(kind: str, i: int) -> list[float]:
        return [r[i] for r in out[kind]]

    def both(kind: str) -> list[float]:
        return [max(r) for r in out[kind]]

    tag_ref = {"R1": ms(col("tag", 0)), "R2": ms(col("tag", 1)), "both": ms(both("tag"))}
    how = {
        "failover": "service's PUBLISH critical (its check's failing threshold reached, logged as the tag update is "
                    "handed to gossip) -> first Match on that registry no longer answering the service",
        "failback": "service's PUBLISH passing -> first Match answering it again",
        "tag": "just before Register.set_tags({'round': N}) (an unrelated tag) -> first Members listing it",
    }
    recs: list[common.Record] = []
    for kind in ("failover", "failback", "tag"):
        for i, where in enumerate(("R1", "R2")):
            label = "joined registry" if where == "R1" else "other registry"
            recs.append(common.record(
                f"{kind}: {label} ({where}), median", ms(col(kind, i)), "ms",
                f"{how[kind]} on {where}; median of {rounds} rounds (max {max(col(kind, i)) * 1000:.1f} ms); "
                f"Match/Members polled every ~2 ms", reference="" if kind == "tag" else f"tag update {tag_ref[where]} ms (same run)"))
        recs.append(common.record(
            f"{kind}: seen by both registries, median", ms(both(kind)), "ms",
            f"{how[kind]}, the later of R1 and R2 per round; median of {rounds} (max {max(both(kind)) * 1000:.1f} ms)",
            reference="" if kind == "tag" else f"tag update {tag_ref['both']} ms (x{ms(both(kind)) / max(tag_ref['both'], 1e-9):.2f})"))
    recs.append(common.record(
        "break -> published critical, median", ms([r[0] for r in out["break"]]), "ms",
        "the service's /health starts answering 500 -> its PUBLISH critical: waiting for the next probe of a "
        "0.13 s HttpCheck with Consul's thresholds 0 (interval-bound, not a routing figure)"))
    return recs


def measure_cpu(group: common.ProcGroup, window: float, env: dict[str, str], n_checks: int) -> list[common.Record]:
    from registry.client import NotFound, RpcClient

    g1, r1 = common.free_ports(2)
    reg = group.add(common.Proc("R-cpu", common.registry_argv("health-cpu", g1, r1), env=env))
    common.wait_server(reg, "127.0.0.1", r1, 30)
    target = group.add(common.Proc("target", [sys.executable, "-c", TARGET_SRC], env=env))
    common.wait_for(lambda: any(line.startswith("PORT ") for _, line in target.lines) or not target.alive(), 30, 0.02,
                    "the HTTP target")
    port = next(line.split()[1] for _, line in target.lines if line.startswith("PORT "))
    url = f"http://127.0.0.1:{port}/health"
    seeds = f"127.0.0.1:{g1}"
    svcs: dict[str, common.Proc] = {}
    ev: dict[str, Events] = {}
    for name, n in (("with-checks", n_checks), ("no-checks", 0)):
        ev[name] = Events()
        svcs[name] = group.add(common.Proc(name, [sys.executable, "-c", SERVICE_SRC, name, f"127.0.0.1:{common.free_port()}",
                                                  seeds, GROUP + "-cpu", str(n), "1.0", url],
                                           env=env, stdin=True, on_line=ev[name].on_line))
    for name, p in svcs.items():
        ev[name].wait("READY", 0, 60, p)
    with RpcClient(f"127.0.0.1:{r1}", timeout=5.0) as c:
        def routed() -> bool:
            try:
                return {s.id for s in c.members(GROUP + "-cpu")} == set(svcs)
            except NotFound:
                return False

        common.wait_for(routed, 30, 0.05, "both services listed")
    if n_checks:  # every check has passed once (Members lists critical services too)
        ev["with-checks"].wait("PUBLISH", 0, 30, svcs["with-checks"], "passing")
    time.sleep(3.0)  # warm-up: the first round of probes, thread start-up, imports
    before = {name: common.cpu_seconds(p.pid) for name, p in svcs.items()}
    t_cpu = common.cpu_seconds(target.pid)
    t0 = time.monotonic()
    time.sleep(window)
    wall = time.monotonic() - t0
    used = {name: common.cpu_seconds(p.pid) - before[name] for name, p in svcs.items()}
    target_used = common.cpu_seconds(target.pid) - t_cpu
    threads = {name: _threads(p.pid) for name, p in svcs.items()}
    rss = {name: common.rss_bytes(p.pid) / 2**20 for name, p in svcs.items()}
    pct = {name: 100 * u / wall for name, u in used.items()}
    extra = used["with-checks"] - used["no-checks"]
    probes = n_checks * wall  # 1 s interval
    how = (f"utime+stime from /proc/<pid>/stat over {wall:.1f} s, after joining and a 3 s warm-up; one service process "
           f"running {n_checks} HttpChecks (interval 1 s, timeout 1 s) against a separate stdlib HTTP server process")
    ref = f"same service without checks, same run: {pct['no-checks']:.2f} % ({used['no-checks'] * 60 / wall:.2f} CPU s/min)"
    return [
        common.record(f"CPU of a service with {n_checks} HTTP checks at 1 s", round(pct["with-checks"], 2), "% of a core",
                      how, reference=ref),
        common.record(f"CPU of a service with {n_checks} HTTP checks at 1 s, per minute",
                      round(used["with-checks"] * 60 / wall, 2), "CPU s/min", how, reference=ref),
        common.record("CPU per HTTP probe (checks minus no checks)", round(1e6 * extra / probes, 1), "us",
                      f"(CPU with checks - CPU without) / ({n_checks} checks x {wall:.1f} s); the target server used "
                      f"{100 * target_used / wall:.2f} % of a core answering them (not counted)"),
        common.record(f"threads / RSS of the service with {n_checks} checks", f"{threads['with-checks']} / "
                      f"{rss['with-checks']:.1f} MiB", "", "/proc/<pid>/status Threads and VmRSS at the end of the window",
                      reference=f"without checks {threads['no-checks']} / {rss['no-checks']:.1f} MiB"),
    ]


def _threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0


def main() -> int:
    p = common.base_parser(__doc__ or "")
    p.add_argument("--rounds", type=int, default=0, help="break/mend/tag rounds (default 20; quick 8)")
    p.add_argument("--cpu-window", type=float, default=0.0, help="seconds of CPU measurement (default 60; quick 15)")
    p.add_argument("--checks", type=int, default=100, help="HTTP checks in the CPU service (default 100)")
    p.add_argument("--only", choices=("failover", "cpu"), help="run one part")
    args = p.parse_args()
    if args.checks < 1 or args.rounds < 0 or args.cpu_window < 0:
        p.error("--checks must be >= 1, --rounds and --cpu-window >= 0 (0: the default)")
    for mod in ("registry.cli", "registry.client", "registry.checks"):
        common.require_import(mod, args)
    rounds = args.rounds or (8 if args.quick else 20)
    window = args.cpu_window or (15.0 if args.quick else 60.0)
    common.print_header("health checks: failover/failback vs a tag update, CPU of 100 HTTP checks", args.quick)
    env = common.repo_env()
    records: list[common.Record] = []
    with common.ProcGroup() as group:
        if args.only in (None, "failover"):
            records += measure_failover(group, rounds, env)
        if args.only in (None, "cpu"):
            records += measure_cpu(group, window, env, args.checks)
    common.emit(records, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
