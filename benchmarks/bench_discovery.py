#!/usr/bin/env python3
"""Service discovery end to end, real processes: two `registry` servers (registry.cli,
LAN profile; R2 joined to R1) and a service process embedding `register.Register`
(joined through R1).  The harness polls `Match(group, key)` on both registries with
`client.RpcClient` (no cache), one thread per registry, every 5 ms.

  * start -> Match:  from just before `Register.start()` (time stamp printed by the
    service, CLOCK_MONOTONIC is system-wide) to the first Match answering the service,
    on R1 (the registry it joined) and on R2 (another one);
  * SIGKILL -> gone: from the kill to the first Match no longer answering it, on both;
  * graceful stop -> gone: from just before `Register.stop()` to the same (--stops services per
    round, one after the other, after the killed one; each start is a start -> Match sample too).
Each round starts a fresh pair of registries: members that died earlier stay in memberlist's
table (as in Go, until reaped), raise Lifeguard's expected confirmations k, and with only one
other registry to confirm, a second SIGKILL in the same pool takes ~12 s instead of ~6 s.
Reference (the project owners, Go registry): start -> Match 28 ms on the joined registry,
194 ms on another; SIGKILL -> gone 5.9 s.

Side by side, in the same rounds (beside the registry pool of each round, on a thread, so both
see the same machine load): 3 Debian `serf agent`s on 127.0.0.1 (`-profile lan`, the second and third
joined to the first), the third SIGKILLed 1 s after all list all; the time until each other
agent logs `EventMemberFailed` for it.  The registry's SIGKILL figures carry their ratio to
serf's (the same 3-member pool shape: R1, R2 and the service).  Failure detection time is
random (probe order, suspicion timer), so every figure is a median over rounds.
"""

from __future__ import annotations

import random
import re
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

common.setup_path()
GROUP = "bench-svc"
# kill_phase_note: Debian's serf agent (Go 1.19) never seeds math/rand, so every agent draws the same
# probe-ticker stagger and list shuffles: killed at a fixed delay after start, serf's detection time
# came out quantised to whole probe intervals (5.80, 5.79, 5.80, 6.81, 5.81 s). A uniformly random
# extra delay before each kill (both implementations alike) samples the probe phase instead of
# measuring one fixed phase.
REFS = {"start_r1": "Go 28 ms (owners)", "start_r2": "Go 194 ms (owners)", "kill_r1": "Go 5.9 s (owners)",
        "kill_r2": "Go 5.9 s (owners)", "kill_both": "Go 5.9 s (owners)", "serf_kill_each": "serf 5.8 s (owners)",
        "serf_kill_all": "serf 5.8 s (owners)"}
SERF_EVENT = re.compile(r"serf: EventMember(Join|Failed|Leave): (\S+)")


class Poller:
    """Polls Match on one registry until `want(answer)` holds; answer is the service id or None."""

    def __init__(self, rpc_addr: str) -> None:
        from registry.client import RpcClient

        self.client = RpcClient(rpc_addr, cache=False, timeout=2.0)

    def answer(self) -> str | None:
        from registry.client import RegistryError

        try:
            svc = self.client.match(GROUP, "user-42")
            return str(svc.id)
        except RegistryError:
            return None

    def wait(self, want: Callable[[str | None], bool], timeout: float) -> float:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if want(self.answer()):
                return time.monotonic()
            time.sleep(0.005)
        raise TimeoutError("Match did not change in time")

    def close(self) -> None:
        self.client.close()


def both(pollers: list[Poller], want: Callable[[str | None], bool], timeout: float) -> list[float]:
    """Wait on all pollers in parallel; the monotonic time each one first saw `want`."""
    results: list[Any] = [None] * len(pollers)

    def run(i: int) -> None:
        try:
            results[i] = pollers[i].wait(want, timeout)
        except Exception as e:  # noqa: BLE001
            results[i] = e

    ts = [threading.Thread(target=run, args=(i,)) for i in range(len(pollers))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    for r in results:
        if isinstance(r, Exception):
            raise TimeoutError(str(r))
    return [float(r) for r in results]


def answers(sid: str, present: bool) -> Callable[[str | None], bool]:
    """Predicate on a Match answer: it is `sid` (present=True) or it is not."""
    return lambda a: (a == sid) == present


def line_value(proc: common.Proc, prefix: str, timeout: float) -> str:
    def find() -> str | None:
        for _, line in list(proc.lines):
            if line.startswith(prefix):
                return line
        return None

    common.wait_for(lambda: find() is not None or not proc.alive(), timeout, 0.005, f"{proc.name}: {prefix}")
    found = find()
    if found is None:
        raise RuntimeError(f"{proc.name} exited before '{prefix}':\n{proc.tail()}")
    return found


class Pool:
    """R1 and R2 (joined to R1), fresh processes, and one Match poller on each."""

    def __init__(self, group: common.ProcGroup, env: dict[str, str], profile: str, rnd: int) -> None:
        self.error = ""
        self.pollers: list[Poller] = []
        self.g1, r1, g2, r2 = common.free_ports(4)
        self.procs = [group.add(common.Proc(f"R1-{rnd}", common.registry_argv(f"bench-r1-{rnd}", self.g1, r1,
                                                                               profile=profile), env=env))]
        try:
            common.wait_server(self.procs[0], "127.0.0.1", r1, 30)
        except (TimeoutError, RuntimeError):
            self.error = f"R1 did not serve gRPC:\n{self.procs[0].tail()}"
            return
        self.procs.append(group.add(common.Proc(f"R2-{rnd}", common.registry_argv(
            f"bench-r2-{rnd}", g2, r2, join=f"127.0.0.1:{self.g1}", profile=profile), env=env)))
        common.wait_server(self.procs[1], "127.0.0.1", r2, 30)
        self.pollers = [Poller(f"127.0.0.1:{r1}"), Poller(f"127.0.0.1:{r2}")]
        try:
            from registry.client import RpcClient

            with RpcClient(f"127.0.0.1:{r2}") as c:
                common.wait_for(lambda: len(c.members("registry-group")) >= 2, 60, 0.05, "R2 to list both registries")
        except Exception as e:  # noqa: BLE001 - still measure; say what failed
            print(f"   note: could not confirm R1/R2 saw each other: {e}")

    def close(self) -> None:
        for pl in self.pollers:
            pl.close()
        for pr in self.procs:
            pr.stop(timeout=10)


class SerfTrio:
    """Three `serf agent`s on loopback (`b` and `c` joined to `a`); membership read from their logs."""

    NAMES = ("a", "b", "c")

    def __init__(self, group: common.ProcGroup, profile: str, rnd: int) -> None:
        self.lock = threading.Lock()
        self.alive: dict[str, set[str]] = {n: set() for n in self.NAMES}
        self.failed_at: dict[str, dict[str, float]] = {n: {} for n in self.NAMES}
        ports = common.free_ports(6)
        self.procs: dict[str, common.Proc] = {}
        seed = f"127.0.0.1:{ports[0]}"
        for i, name in enumerate(self.NAMES):
            argv = ["serf", "agent", "-node", f"{name}{rnd}", "-bind", f"127.0.0.1:{ports[2 * i]}",
                    "-rpc-addr", f"127.0.0.1:{ports[2 * i + 1]}", "-profile", profile, "-log-level", "info"]
            if i:
                argv += ["-join", seed]
            self.procs[name] = group.add(common.Proc(f"serf-{name}{rnd}", argv,
                                                    on_line=lambda p, t, line, n=name: self._on_line(n, t, line)))
            if not i:
                common.wait_for(lambda: bool(self.alive["a"]) or not self.procs["a"].alive(), 30, 0.01, "serf a up")
        self.rnd = rnd

    def _on_line(self, node: str, t: float, line: str) -> None:
        m = SERF_EVENT.search(line)
        if m is None:
            return
        kind, who = m.group(1), m.group(2)
        with self.lock:
            if kind == "Join":
                self.alive[node].add(who)
            else:
                self.alive[node].discard(who)
                if kind == "Failed":
                    self.failed_at[node].setdefault(who, t)

    def kill_one(self) -> list[float]:
        """SIGKILL `c` once all three list all; seconds until `a` and `b` each declared it failed."""
        everyone = {f"{n}{self.rnd}" for n in self.NAMES}

        def formed() -> bool:
            for n, p in self.procs.items():
                if not p.alive():
                    raise RuntimeError(f"serf agent {n} exited:\n{p.tail()}")
            with self.lock:
                return all(self.alive[n] >= everyone for n in self.NAMES)

        common.wait_for(formed, 60, 0.01, "3 serf agents to list each other")
        time.sleep(1.0 + random.random())  # random kill phase: see kill_phase_note
        victim = f"c{self.rnd}"
        t0 = time.monotonic()
        self.procs["c"].kill()

        def declared() -> bool:
            with self.lock:
                return all(victim in self.failed_at[n] for n in ("a", "b"))

        common.wait_for(declared, 120, 0.01, "serf agents to declare the killed one failed")
        with self.lock:
            return [self.failed_at[n][victim] - t0 for n in ("a", "b")]

    def close(self) -> None:
        for p in self.procs.values():
            p.stop(timeout=5, sig=signal.SIGKILL)


def serf_round(group: common.ProcGroup, profile: str, rnd: int, figures: dict[str, list[float]]) -> None:
    trio = SerfTrio(group, profile, rnd)
    try:
        each = trio.kill_one()
    finally:
        trio.close()
    figures["serf_kill_each"].extend(each)
    figures["serf_kill_all"].append(max(each))
    print(f"   round {rnd} serf: kill->failed a {each[0]:.2f} s, b {each[1]:.2f} s", flush=True)


class BackgroundSerf:
    """`serf_round` on a thread; `finish()` waits for it and re-raises what it raised."""

    def __init__(self, group: common.ProcGroup, profile: str, rnd: int, figures: dict[str, list[float]]) -> None:
        self.error: BaseException | None = None

        def run() -> None:
            try:
                serf_round(group, profile, rnd, figures)
            except BaseException as e:  # noqa: BLE001 - handed to finish()
                self.error = e

        self.thread = threading.Thread(target=run, name=f"serf-round-{rnd}", daemon=True)
        self.thread.start()

    def finish(self) -> None:
        self.thread.join(180)
        if self.error is not None:
            raise RuntimeError(f"serf round: {self.error}") from self.error


def one_service(group: common.ProcGroup, env: dict[str, str], profile: str, pool: Pool, rnd: int, mode: str,
                figures: dict[str, list[float]], nth: int = 0) -> None:
    """Start a service, time it into Match on both registries, then kill or stop it and time it out."""
    sid = f"svc-{rnd}-{mode}{nth}"
    svc = group.add(common.Proc(sid, common.service_argv(
        sid, f"127.0.0.1:{common.free_port()}", f"127.0.0.1:{pool.g1}", GROUP, "127.0.0.1:8080", profile),
        env=env, stdin=True))
    t_start = float(line_value(svc, "T_START", 60).split()[1])
    seen = both(pool.pollers, answers(sid, True), 60)
    figures["start_r1"].append(seen[0] - t_start)
    figures["start_r2"].append(seen[1] - t_start)
    t_started = float(line_value(svc, "STARTED", 60).split()[1])
    figures["start_call"].append(t_started - t_start)
    figures["after_r1"].append(seen[0] - t_started)
    figures["after_r2"].append(seen[1] - t_started)
    time.sleep(1.0 + (random.random() if mode == "kill" else 0.0))  # random kill phase: see kill_phase_note
    if mode == "kill":
        t0 = time.monotonic()
        svc.kill()
    else:
        svc.send("stop")
        t0 = float(line_value(svc, "STOPPING", 30).split()[1])
    gone = both(pool.pollers, answers(sid, False), 120)
    figures[f"{mode}_r1"].append(gone[0] - t0)
    figures[f"{mode}_r2"].append(gone[1] - t0)
    if mode == "kill":
        figures["kill_both"].append(max(gone) - t0)
    svc.stop(10)
    print(f"   round {rnd} {mode}: start() {figures['start_call'][-1] * 1000:.0f} ms; "
          f"start->Match R1 {figures['start_r1'][-1] * 1000:.0f} ms, R2 {figures['start_r2'][-1] * 1000:.0f} ms; "
          f"{mode}->gone R1 {gone[0] - t0:.2f} s, R2 {gone[1] - t0:.2f} s", flush=True)


def main() -> int:
    p = common.base_parser(__doc__ or "")
    p.add_argument("--rounds", type=int, default=0,
                   help="rounds, each a fresh registry pair (start/kill/stop) and a fresh serf trio (default 10; quick 6)")
    p.add_argument("--profile", default="lan")
    p.add_argument("--no-serf", action="store_true", help="skip the serf agents (SIGKILL figures get no ratio)")
    p.add_argument("--stops", type=int, default=0,
                   help="services started and stopped gracefully per round, after the killed one (default 3; quick 2)")
    args = p.parse_args()
    for mod in ("registry.cli", "registry.server", "registry.register", "registry.client"):
        common.require_import(mod, args)
    rounds = args.rounds or (6 if args.quick else 10)
    stops = args.stops or (2 if args.quick else 3)
    common.print_header("discovery: registry processes + a Register service, Match latency", args.quick)
    with_serf = not args.no_serf and shutil.which("serf") is not None
    if not with_serf and not args.no_serf:
        print("   serf binary not found: no serf side (apt-get install serf)")
    env = common.repo_env()
    figures: dict[str, list[float]] = {k: [] for k in (
        "start_r1", "start_r2", "start_call", "after_r1", "after_r2", "kill_r1", "kill_r2", "kill_both", "stop_r1",
        "stop_r2", "serf_kill_each", "serf_kill_all")}
    with common.ProcGroup() as group:
        try:
            for rnd in range(rounds):
                # the serf trio of this round runs beside the registry pool (same load, no extra time)
                serf = BackgroundSerf(group, args.profile, rnd, figures) if with_serf else None
                # a fresh pool each round: dead members still in the registries' tables raise the
                # Lifeguard confirmation count k, which stretches the next failure's suspicion
                pool = Pool(group, env, args.profile, rnd)
                try:
                    if pool.error:
                        print(f"   {pool.error}")
                        common.missing("the registry server did not start (see its output above)", args)
                    one_service(group, env, args.profile, pool, rnd, "kill", figures)
                    for nth in range(stops):
                        one_service(group, env, args.profile, pool, rnd, "stop", figures, nth)
                finally:
                    pool.close()
                    if serf is not None:
                        serf.finish()
        except (TimeoutError, RuntimeError) as e:
            print(f"   FAILED: {e}")
            for pr in group.procs:
                print(f"   --- {pr.name} output:\n{pr.tail(8)}")

    labels = {
        "start_r1": ("Register.start -> Match answers it, on the joined registry", "ms", 1000.0),
        "start_r2": ("Register.start -> Match answers it, on another registry", "ms", 1000.0),
        "start_call": ("Register.start() call duration (bind + join, incl. lazy imports)", "ms", 1000.0),
        "after_r1": ("start() returned -> Match answers it, joined registry (may be < 0)", "ms", 1000.0),
        "after_r2": ("start() returned -> Match answers it, other registry (may be < 0)", "ms", 1000.0),
        "kill_r1": ("SIGKILL service -> gone from Match, joined registry", "s", 1.0),
        "kill_r2": ("SIGKILL service -> gone from Match, other registry", "s", 1.0),
        "kill_both": ("SIGKILL service -> gone from Match on both registries (the later one)", "s", 1.0),
        "serf_kill_each": ("serf agents: SIGKILL -> EventMemberFailed, each other agent", "s", 1.0),
        "serf_kill_all": ("serf agents: SIGKILL -> EventMemberFailed on both others (the later one)", "s", 1.0),
        "stop_r1": ("graceful Register.stop -> gone from Match, joined registry", "s", 1.0),
        "stop_r2": ("graceful Register.stop -> gone from Match, other registry", "s", 1.0),
    }
    # the registry figure per survivor is compared with serf's per survivor, "both" with "both"
    serf_of = {"kill_r1": "serf_kill_each", "kill_r2": "serf_kill_each", "kill_both": "serf_kill_all"}
    records = []
    for key, vals in figures.items():
        if not vals:
            continue
        label, unit, scale = labels[key]
        value = common.percentile(vals, 50)
        if key.startswith("serf_"):
            how = (f"median of {len(vals)} value(s) (all: {', '.join(f'{v:.3g}' for v in vals)}); per round 3 fresh "
                   f"`serf agent -profile {args.profile}` on 127.0.0.1, the third SIGKILLed 1 s after all listed all, "
                   f"time to the EventMemberFailed log line (time-stamped on arrival) of the others")
        else:
            how = (f"median of {len(vals)} value(s) (all: {', '.join(f'{v * scale:.3g}' for v in vals)}); 2 fresh registry "
                   f"processes per round (profile {args.profile}), a killed service first, then {stops} stopped one(s), "
                   f"one after the other; Match polled every 5 ms per registry by RpcClient")
        extra: dict[str, Any] = {"reference": REFS.get(key, "")}
        serf_vals = figures.get(serf_of.get(key, ""), [])
        if serf_vals:
            theirs = common.percentile(serf_vals, 50)
            extra["serf_ratio"] = round(value / theirs, 2)
            extra["reference"] = f"x{value / theirs:.2f} of serf here ({theirs:.2f} s); {extra['reference']}"
        records.append(common.record(f"discovery: {label}", value * scale, unit, how, **extra))
    if figures["start_r1"]:
        med = {k: common.percentile(v, 50) for k, v in figures.items() if v}
        print(f"   medians over {rounds} round(s): start->Match R1 {med['start_r1'] * 1000:.0f} ms, "
              f"R2 {med['start_r2'] * 1000:.0f} ms (start() {med['start_call'] * 1000:.0f} ms, then R2 "
              f"{med['after_r2'] * 1000:.0f} ms); stop->gone R1 {med.get('stop_r1', 0) * 1000:.0f} ms, "
              f"R2 {med.get('stop_r2', 0) * 1000:.0f} ms; kill->gone both {med.get('kill_both', 0):.2f} s"
              + (f" vs serf {med['serf_kill_all']:.2f} s" if "serf_kill_all" in med else ""), flush=True)
    common.emit(records, args)
    return 0 if records else 1


if __name__ == "__main__":
    sys.exit(main())
