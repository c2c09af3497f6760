#!/usr/bin/env python3
"""Gossip cluster of real processes: our Python nodes next to Debian's `serf` agents.

For each cluster size (5, 10, 30; --quick: 5) and each implementation, in this one run:
  * join:  a running node is told to join (Python: `join` on its stdin; serf: the agent's
           RPC `join`); time until every node lists it alive and it lists every node;
  * fail:  SIGKILL one node; time until every other node has declared it failed (one kill per
    fresh cluster, --kill-rounds of them, median reported: detection time depends on probe order);
  * idle:  CPU share per node (utime+stime from /proc/<pid>/stat over an idle window),
           RSS per node, and bytes/s sent per node (loopback byte counter of a private
           network namespace made with `unshare -rn`, divided by the node count; it counts
           frames incl. IP/UDP/TCP headers; skipped with a note without such a namespace).
Membership is observed from each node's own log lines (`serf: EventMemberJoin: x`, ...;
benchmarks/gossip_node.py prints the same words), time-stamped by the harness on arrival,
so nothing extra is sent to the nodes.  Every Python figure is printed with its serf ratio.
"""

from __future__ import annotations

import random
import re
import shutil
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

common.setup_path()

EVENT = re.compile(r"serf: EventMember(Join|Failed|Leave|Reap): (\S+)")
REFERENCE = {"join": "serf 0.16 s (owners)", "fail": "serf 5.8 s (owners, 3 and 5 nodes)", "rss": "serf 12 MB (owners)"}


# -- serf agent RPC (msgpack over TCP): only handshake + join -------------------------------


def serf_rpc_join(rpc_port: int, addr: str, timeout: float = 10.0) -> int:
    import msgpack

    with socket.create_connection(("127.0.0.1", rpc_port), timeout=timeout) as s:
        unpacker = msgpack.Unpacker(raw=False)

        def call(seq: int, command: str, body: dict[str, Any]) -> list[Any]:
            s.sendall(msgpack.packb({"Command": command, "Seq": seq}) + msgpack.packb(body))
            out: list[Any] = []
            want = 2 if command == "join" else 1
            while len(out) < want:
                data = s.recv(65536)
                if not data:
                    raise ConnectionError("serf RPC closed")
                unpacker.feed(data)
                out.extend(unpacker)
            if out[0].get("Error"):
                raise RuntimeError(f"serf RPC {command}: {out[0]['Error']}")
            return out

        call(0, "handshake", {"Version": 1})
        res = call(1, "join", {"Existing": [addr], "Replay": False})
        return int(res[1].get("Num", 0))


# -- one observed node ----------------------------------------------------------------------


@dataclass
class Node:
    name: str
    port: int
    proc: common.Proc | None = None
    rpc_port: int = 0
    alive: set[str] = field(default_factory=set)
    ready: bool = False
    joined_at: dict[str, float] = field(default_factory=dict)
    failed_at: dict[str, float] = field(default_factory=dict)

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"


class Cluster:
    def __init__(self, impl: str, profile: str, py_impl: str = "auto") -> None:
        self.impl = impl  # "python" or "serf"
        self.profile = profile
        self.py_impl_wanted = py_impl
        self.nodes: dict[str, Node] = {}
        self.lock = threading.Lock()
        self.group = common.ProcGroup()
        self.py_impl = ""
        self.killed: set[str] = set()
        self.ports: set[int] = set()

    def _port(self) -> int:
        """A free port not handed out before in this cluster: a port is only known free when
        asked, and an agent that has not bound its ports yet would otherwise share one."""
        while True:
            port = common.free_port()
            if port not in self.ports:
                self.ports.add(port)
                return port

    def _on_line(self, node: Node, t: float, line: str) -> None:
        with self.lock:
            if line.startswith("READY "):
                node.ready = True
                node.alive.add(node.name)
                parts = line.split()
                if len(parts) >= 4:
                    self.py_impl = parts[3]
                return
            if "Serf agent running" in line:
                node.ready = True
                node.alive.add(node.name)
                return
            m = EVENT.search(line)
            if not m:
                return
            kind, who = m.group(1), m.group(2)
            if kind == "Join":
                node.alive.add(who)
                node.joined_at[who] = t
            else:
                if who in node.alive and kind == "Failed":
                    node.failed_at[who] = t
                node.alive.discard(who)

    def start(self, name: str, join: str = "") -> Node:
        port = self._port()
        node = Node(name, port)
        if self.impl == "serf":
            node.rpc_port = self._port()
            argv = ["serf", "agent", "-node", name, "-bind", node.addr, "-rpc-addr", f"127.0.0.1:{node.rpc_port}",
                    "-profile", self.profile, "-log-level", "info"]
            if join:
                argv += ["-join", join]
            stdin = False
        else:
            argv = common.python_argv(common.BENCH_DIR / "gossip_node.py", "--name", name, "--bind", node.addr,
                                      "--profile", self.profile, "--impl", self.py_impl_wanted)
            if join:
                argv += ["--join", join]
            stdin = True
        node.proc = common.Proc(name, argv, on_line=lambda p, t, line: self._on_line(node, t, line), stdin=stdin)
        self.nodes[name] = node
        self.group.add(node.proc)
        return node

    def join(self, node: Node, seed: str) -> None:
        if self.impl == "serf":
            serf_rpc_join(node.rpc_port, seed)
        else:
            assert node.proc is not None
            node.proc.send(f"join {seed}")

    def remove_gracefully(self, node: Node) -> None:
        """Leave the pool and exit (serf agent: SIGINT = leave; Python node: `leave`, `quit`)."""
        assert node.proc is not None
        self.killed.add(node.name)
        if self.impl == "serf":
            node.proc.stop(timeout=15, sig=signal.SIGINT)
        else:
            node.proc.send("leave")
            node.proc.send("quit")
            common.wait_for(lambda: not node.proc.alive(), 15, 0.02, f"{node.name} to exit")  # type: ignore[union-attr]

    def nobody_lists(self, name: str) -> Callable[[], bool]:
        def check() -> bool:
            with self.lock:
                return all(name not in x.alive for x in self.live())

        return check

    def live(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.proc is not None and n.proc.alive()]

    def all_see_all(self) -> bool:
        live = self.live()
        names = {n.name for n in live}
        with self.lock:
            return all(n.ready and names <= n.alive for n in live)

    def check_alive(self, what: str) -> None:
        for n in self.nodes.values():
            if n.proc is not None and not n.proc.alive() and n.name not in self.killed:
                raise RuntimeError(f"{self.impl} node {n.name} exited during {what}:\n{n.proc.tail()}")

    def close(self) -> None:
        self.group.close()


def is_ready(node: Node) -> Callable[[], bool]:
    return lambda: node.ready


def wait(cluster: Cluster, pred: Any, timeout: float, what: str) -> float:
    def ok() -> bool:
        cluster.check_alive(what)
        return bool(pred())

    return common.wait_for(ok, timeout, 0.01, what)


def start_cluster(c: Cluster, impl: str, n: int) -> Node:
    """Start `n - 1` nodes of `impl` joined to the first (the n-th joins during the join rounds)."""
    seed = c.start(f"{impl}-0")
    wait(c, lambda: seed.ready, 30, f"{impl} seed to start")
    for i in range(1, n - 1):
        c.start(f"{impl}-{i}", join=seed.addr)
    wait(c, c.all_see_all, 60 + 3 * n, f"{n - 1} {impl} nodes to see each other")
    return seed


def kill_one(c: Cluster, impl: str) -> tuple[float, float]:
    """SIGKILL a non-seed member; (max, median) over the others of the time to declare it failed.

    The kill comes after a uniformly random extra delay: Debian's serf (Go 1.19) never seeds
    math/rand, so its agents share one probe-ticker phase and a kill at a fixed delay after start
    measured one phase (times quantised to whole probe intervals) instead of sampling it."""
    time.sleep(1.0 + random.random())
    victim = c.nodes[f"{impl}-1"]
    assert victim.proc is not None
    c.killed.add(victim.name)
    t_kill = time.monotonic()
    victim.proc.kill()
    others = [x for x in c.live() if x is not victim]

    def all_declared() -> bool:
        with c.lock:
            return all(victim.name not in x.alive for x in others)

    wait(c, all_declared, 120, f"{impl} failure of {victim.name} declared by all")
    with c.lock:
        gone = [x.failed_at.get(victim.name, time.monotonic()) - t_kill for x in others]
    return max(gone), common.percentile(gone, 50)


def run_one(impl: str, n: int, idle: float, profile: str, join_rounds: int, py_impl: str = "auto",
            kill_rounds: int = 1) -> dict[str, float | None]:
    """Figures of one cluster of `n` processes of `impl` (plus a fresh cluster per extra kill round)."""
    c = Cluster(impl, profile, py_impl)
    out: dict[str, float | None] = {}
    fails: list[tuple[float, float]] = []
    try:
        seed = start_cluster(c, impl, n)

        # idle: let startup churn settle, then measure CPU, RSS and loopback bytes
        time.sleep(min(2.0, idle / 4))
        pids = [x.proc.pid for x in c.live() if x.proc is not None]
        cpu0 = {p: common.cpu_seconds(p) for p in pids}
        lo0 = common.lo_bytes() if common.in_private_netns() else None
        t0 = time.monotonic()
        time.sleep(idle)
        dt = time.monotonic() - t0
        cpu1 = {p: common.cpu_seconds(p) for p in pids}
        lo1 = common.lo_bytes() if common.in_private_netns() else None
        out["cpu_pct"] = 100.0 * sum(cpu1[p] - cpu0[p] for p in pids) / len(pids) / dt
        out["rss_mb"] = sum(common.rss_bytes(p) for p in pids) / len(pids) / 2**20
        out["bytes_s"] = (lo1[1] - lo0[1]) / len(pids) / dt if lo0 and lo1 else None

        # join: a fresh node (already running, not yet joined) is told to join the seed;
        # repeated with a new node each round, the previous newcomer leaving gracefully first
        join_max: list[float] = []
        join_p50: list[float] = []
        for r in range(join_rounds):
            new = c.start(f"{impl}-{n - 1}-r{r}")
            wait(c, is_ready(new), 30, f"{impl} new node to start")
            time.sleep(0.2)
            t_join = time.monotonic()
            c.join(new, seed.addr)
            wait(c, c.all_see_all, 60, f"{impl} join seen by all")
            with c.lock:
                seen = [x.joined_at.get(new.name, 0.0) for x in c.live() if x is not new]
                seen_by_new = [new.joined_at.get(x.name, 0.0) for x in c.live() if x is not new]
            join_max.append(max(seen + seen_by_new) - t_join)
            others = [x.name for x in c.live() if x is not new]
            last = max(range(len(others)), key=lambda i: max(seen[i], seen_by_new[i]))
            print(f"   {impl} n={n} join round {r}: seen by all {join_max[-1]:.3f} s; last: {others[last]} "
                  f"(it listed the newcomer at {seen[last] - t_join:+.3f} s, was listed by it at "
                  f"{seen_by_new[last] - t_join:+.3f} s)", flush=True)
            join_p50.append(common.percentile([s - t_join for s in seen], 50))
            if r < join_rounds - 1:
                c.remove_gracefully(new)
                wait(c, c.nobody_lists(new.name), 60, f"{impl} graceful leave of {new.name}")
        out["join_s"] = common.percentile(join_max, 50)
        out["join_worst_s"] = max(join_max)
        out["join_p50_s"] = common.percentile(join_p50, 50)

        # failure: SIGKILL a non-seed member, wait until every other node declared it failed
        fails.append(kill_one(c, impl))
    finally:
        c.close()
    # Further kill rounds each on a fresh cluster: a dead member stays in the table until
    # reaped and raises Lifeguard's expected confirmations, so a second kill in the same
    # cluster would measure something else. Detection time is random (probe order), so
    # one round says little; the median of rounds is the figure.
    for _ in range(kill_rounds - 1):
        c = Cluster(impl, profile, py_impl)
        try:
            start_cluster(c, impl, n)
            fails.append(kill_one(c, impl))
        finally:
            c.close()
    out["fail_s"] = common.percentile([f[0] for f in fails], 50)
    out["fail_worst_s"] = max(f[0] for f in fails)
    out["fail_p50_s"] = common.percentile([f[1] for f in fails], 50)
    print(f"   {impl} n={n}: " + ", ".join(f"{k}={common.fmt_value(v)}" for k, v in out.items() if v is not None)
          + f" (kill rounds: {', '.join(f'{f[0]:.2f}' for f in fails)})", flush=True)
    if impl == "python":
        print(f"   (python nodes ran registry {c.py_impl or '?'} via benchmarks/gossip_node.py)", flush=True)
    return out


FIGURES = [
    ("join_s", "join seen by all (max over nodes, median of rounds)", "s", "join", ("time from the join command (Python: stdin line; serf: agent RPC join) "
     "to the last of: every node's EventMemberJoin for the newcomer and the newcomer's for every node")),
    ("join_worst_s", "join seen by all (worst round)", "s", "", "the slowest of the join rounds"),
    ("join_p50_s", "join seen by all (p50 over nodes)", "s", "", ("median over the old nodes of the time to list the newcomer, "
     "median of rounds")),
    ("fail_s", "SIGKILL -> failed by all (max over nodes, median of rounds)", "s", "fail",
     "time from SIGKILL of a member to the last EventMemberFailed among the others; one kill per fresh cluster, median of --kill-rounds"),
    ("fail_worst_s", "SIGKILL -> failed by all (worst round)", "s", "", "the slowest of the kill rounds"),
    ("fail_p50_s", "SIGKILL -> failed (p50 over nodes, median of rounds)", "s", "", "median over the other nodes of the time to declare it failed"),
    ("cpu_pct", "idle CPU per node", "% of a core", "", ("utime+stime from /proc/<pid>/stat over the idle window, mean per node "
     "(clock ticks of 10 ms: coarse for short windows)")),
    ("rss_mb", "RSS per node", "MiB", "rss", "VmRSS from /proc/<pid>/status after the idle window, mean per node"),
    ("bytes_s", "idle bytes sent per node", "B/s", "", ("tx bytes of lo in a private netns (unshare -rn) over the idle window / nodes; "
     "frames incl. headers, all protocols")),
]


def main() -> int:
    p = common.base_parser(__doc__ or "")
    p.add_argument("--sizes", default="", help="comma-separated cluster sizes (default 5,10,30; quick 5)")
    p.add_argument("--idle", type=float, default=0.0, help="idle window seconds (default 30; quick 8)")
    p.add_argument("--profile", default="lan")
    p.add_argument("--join-rounds", type=int, default=0, help="joins measured per cluster (default 10; quick 5)")
    p.add_argument("--kill-rounds", type=int, default=0,
                   help="SIGKILL rounds per size and implementation, each on a fresh cluster (default 5; quick 3)")
    p.add_argument("--py-impl", choices=["auto", "serf", "memberlist"], default="auto",
                   help="Python node: SerfAgent, plain MemberlistNode, or auto (SerfAgent when it imports)")
    p.add_argument("--no-netns", action="store_true", help="do not re-run in a private network namespace")
    p.add_argument("--only", choices=["python", "serf", "both"], default="both")
    args = p.parse_args()
    if not args.no_netns:
        common.reexec_in_private_netns(sys.argv)
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else ([5] if args.quick else [5, 10, 30])
    idle = args.idle or (8.0 if args.quick else 30.0)
    common.print_header("gossip: Python nodes vs serf agents, real processes on 127.0.0.1", args.quick)
    print(f"   profile={args.profile} sizes={sizes} idle window={idle}s "
          f"private netns={'yes' if common.in_private_netns() else 'no (bytes/s skipped)'}")

    impls = ["python", "serf"] if args.only == "both" else [args.only]
    if "serf" in impls and not shutil.which("serf"):
        print("   serf binary not found: serf side skipped (apt-get install serf)")
        impls.remove("serf")
    if "python" in impls:
        try:
            import registry.memberlist.node
        except Exception as e:  # noqa: BLE001
            try:
                import registry.serf.agent  # noqa: F401
            except Exception:  # noqa: BLE001
                print(f"   MISSING: registry.memberlist.node / registry.serf.agent ({e}); python side skipped")
                impls.remove("python")
    if not impls:
        common.missing("neither the serf binary nor registry's asyncio node is available", args)

    records: list[common.Record] = []
    failures = 0
    for n in sizes:
        results: dict[str, dict[str, float | None]] = {}
        for impl in impls:
            try:
                results[impl] = run_one(impl, n, idle, args.profile, args.join_rounds or (5 if args.quick else 10),
                                       args.py_impl, args.kill_rounds or (3 if args.quick else 5))
            except (TimeoutError, RuntimeError, OSError) as e:
                print(f"   {impl} n={n} FAILED: {e}", flush=True)
                failures += 1
        for key, label, unit, ref, how in FIGURES:
            for impl in impls:
                v = results.get(impl, {}).get(key)
                if v is None:
                    continue
                extra: dict[str, Any] = {"reference": REFERENCE.get(ref, "")}
                theirs = results.get("serf", {}).get(key)
                if impl == "python" and theirs:
                    extra["serf_ratio"] = round(v / theirs, 2)
                    extra["reference"] = "; ".join(x for x in (f"x{v / theirs:.2f} of serf here", extra["reference"]) if x)
                name = "serf agent" if impl == "serf" else "python node"
                records.append(common.record(f"gossip n={n} {name}: {label}", v, unit,
                                             f"{how}; {n} processes, profile {args.profile}", **extra))
    common.emit(records, args)
    return 0 if records and not failures else 1


if __name__ == "__main__":
    sys.exit(main())
