#!/usr/bin/env python3
"""SWIM at scale on the virtual clock: registry.memberlist.core.Memberlist machines on
registry.memberlist.simnet.SimNetwork (1 ms one-way delay), LAN profile.

For 1000 and 2000 nodes (--quick: 200):
  * formation: every node joins one random earlier node (50 ms of virtual time apart),
    then the clock runs until every node lists all of them alive;
  * join:  one more node joins a random member; virtual time until every node lists it
    alive and it lists all (from each node's notify_join time);
  * failure: one node is silenced (`SimNetwork.stop`); virtual time until every other
    node has declared it dead (notify_leave times);
  * false failures: the network then drops 5% of packets (each way, uniformly) for a
    while; count alive nodes declared dead by anyone.
Cost: every node receives every alive message ~retransmit-limit times, so forming the
cluster costs O(n^2) message decodes: 200 nodes ~15 CPU s, 1000 nodes several minutes,
2000 nodes tens of minutes (full mode; run_all's full limit is 3600 s per script).
Real CPU seconds (time.process_time of this single process) are reported per phase:
the simulation runs every node in one Python process, so that is the protocol's total
CPU cost for the cluster, not one node's.
"""

from __future__ import annotations

import random
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

common.setup_path()


def build(n: int, seed: int, profile: str) -> Any:
    from registry.memberlist.config import Config
    from registry.memberlist.core import Memberlist
    from registry.memberlist.delegate import Delegate
    from registry.memberlist.simnet import SimNetwork
    from registry.memberlist.types import Address, Node, NodeState

    class Timeline(Delegate):
        """When this node saw each other node join / die (virtual time)."""

        def __init__(self, net: Any) -> None:
            self.net = net
            self.joined: dict[str, float] = {}
            self.dead: dict[str, float] = {}

        def notify_join(self, node: Node) -> None:
            self.joined[node.name] = self.net.now

        def notify_leave(self, node: Node) -> None:
            if node.state == NodeState.DEAD:
                self.dead[node.name] = self.net.now

    class Sim:
        def __init__(self) -> None:
            self.net = SimNetwork(seed=seed, delay=0.001)
            self.cfg = Config.profile(profile)
            self.rng = random.Random(seed)
            self.nodes: list[Any] = []
            self.timelines: list[Timeline] = []
            self.addrs: list[Any] = []
            self.silenced: set[int] = set()

        def add(self, join: bool = True) -> int:
            i = len(self.nodes)
            addr = Address(f"10.{i // 62500}.{(i // 250) % 250}.{i % 250 + 1}", 7946)
            tl = Timeline(self.net)
            m = Memberlist(self.cfg.replace(name=f"n{i}"), addr, tl, rng=random.Random(seed * 1000003 + i),
                           now=self.net.now)
            self.nodes.append(m)
            self.timelines.append(tl)
            self.addrs.append(addr)
            self.net.add(m, addr)
            if join and i > 0:
                target = self.rng.randrange(i)
                while target in self.silenced:
                    target = self.rng.randrange(i)
                m.join([self.addrs[target]], self.net.now)
                self.net.kick(addr)
            return i

        def live(self) -> list[int]:
            return [i for i in range(len(self.nodes)) if i not in self.silenced]

        def all_declared_dead(self, name: str) -> Callable[[], bool]:
            return lambda: all(name in self.timelines[i].dead for i in self.live())

        def converged(self) -> bool:
            k = len(self.nodes) - len(self.silenced)
            return all(self.nodes[i].num_members() == k for i in self.live())

    _ = NodeState
    return Sim()


def run(n: int, profile: str, loss_window: float, rounds: int, seed: int = 7) -> dict[str, float]:
    out: dict[str, float] = {}
    sim = build(n, seed, profile)
    net = sim.net
    c0 = time.process_time()
    for k in range(n - 1):
        sim.add()
        net.run_for(0.05)
        if n >= 500 and k % (n // 10) == 0:
            print(f"   ... n={n}: {k + 1} joined, {time.process_time() - c0:.0f} CPU s", flush=True)
    t_formed = net.now
    if not net.run_until_true(sim.converged, timeout=600.0, step=0.5):
        raise TimeoutError(f"{n} nodes did not converge in 600 virtual seconds")
    out["formation_s"] = net.now - 0.0
    out["formation_settle_s"] = net.now - t_formed
    out["formation_cpu_s"] = time.process_time() - c0
    net.run_for(5.0)

    # joins: `rounds` new nodes, one after another, each into a settled cluster
    c0 = time.process_time()
    v0 = net.now
    jmax: list[float] = []
    jp50: list[float] = []
    for _ in range(rounds):
        t0 = net.now
        new = sim.add()
        name = f"n{new}"
        if not net.run_until_true(sim.converged, timeout=300.0, step=0.05):
            raise TimeoutError("join did not converge in 300 virtual seconds")
        seen = [sim.timelines[i].joined.get(name, net.now) for i in sim.live() if i != new]
        seen_by_new = list(sim.timelines[new].joined.values())
        jmax.append(max(seen + seen_by_new) - t0)
        jp50.append(common.percentile([s - t0 for s in seen], 50))
        net.run_for(5.0)
    out["join_s"] = common.percentile(jmax, 50)
    out["join_worst_s"] = max(jmax)
    out["join_p50_s"] = common.percentile(jp50, 50)
    out["join_cpu_s"] = time.process_time() - c0
    out["join_cpu_per_virtual_s"] = out["join_cpu_s"] / max(net.now - v0, 1e-9)

    # failures: `rounds` nodes silenced one after another (no goodbye)
    c0 = time.process_time()
    v0 = net.now
    fmax: list[float] = []
    fp50: list[float] = []
    for victim in range(1, rounds + 1):
        vname = f"n{victim}"
        t0 = net.now
        net.stop(sim.addrs[victim])
        sim.silenced.add(victim)

        if not net.run_until_true(sim.all_declared_dead(vname), timeout=600.0, step=0.25):
            raise TimeoutError("failure not declared by all within 600 virtual seconds")
        gone = [sim.timelines[i].dead[vname] - t0 for i in sim.live()]
        fmax.append(max(gone))
        fp50.append(common.percentile(gone, 50))
        net.run_for(2.0)
    out["fail_s"] = common.percentile(fmax, 50)
    out["fail_worst_s"] = max(fmax)
    out["fail_p50_s"] = common.percentile(fp50, 50)
    out["fail_cpu_s"] = time.process_time() - c0
    out["cpu_per_virtual_s"] = out["fail_cpu_s"] / max(net.now - v0, 1e-9)

    # false failures under loss
    c0 = time.process_time()
    before = {i: dict(sim.timelines[i].dead) for i in sim.live()}
    net.loss = 0.05
    sent0, dropped0 = net.packets_sent, net.packets_dropped
    net.run_for(loss_window)
    live_names = {f"n{i}" for i in sim.live()}
    false_pairs = 0
    victims: set[str] = set()
    for i in sim.live():
        for who in sim.timelines[i].dead:
            if who in live_names and sim.timelines[i].dead[who] > before[i].get(who, -1.0):
                false_pairs += 1
                victims.add(who)
    out["false_dead_nodes"] = float(len(victims))
    out["false_dead_pairs"] = float(false_pairs)
    out["loss_window_s"] = loss_window
    out["loss_cpu_s"] = time.process_time() - c0
    out["loss_observed"] = (net.packets_dropped - dropped0) / max(1, net.packets_sent - sent0)
    drops: dict[str, int] = {}
    for m in sim.nodes:
        for k, v in m.stats.items():
            if k.startswith("drop."):
                drops[k] = drops.get(k, 0) + v
    out["decode_drops"] = float(sum(drops.values()))
    if drops:
        print(f"   n={n}: packets/messages the nodes dropped: {drops}", flush=True)
    return out


def main() -> int:
    p = common.base_parser(__doc__ or "")
    p.add_argument("--sizes", default="", help="comma-separated node counts (default 1000,2000; quick 200)")
    p.add_argument("--loss-window", type=float, default=0.0, help="virtual seconds at 5%% loss (default 120; quick 30)")
    p.add_argument("--profile", default="lan")
    p.add_argument("--rounds", type=int, default=3, help="joins and failures measured per size (default 3)")
    args = p.parse_args()
    for mod in ("registry.memberlist.simnet", "registry.memberlist.core"):
        common.require_import(mod, args)
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else ([200] if args.quick else [1000, 2000])
    window = args.loss_window or (30.0 if args.quick else 120.0)
    common.print_header("SWIM on the virtual clock (simnet)", args.quick)
    print(f"   profile={args.profile} sizes={sizes} loss window={window} virtual s, one-way delay 1 ms", flush=True)
    records: list[common.Record] = []
    for n in sizes:
        t0 = time.monotonic()
        cpu0 = time.process_time()
        try:
            r = run(n, args.profile, window, args.rounds)
        except TimeoutError as e:
            print(f"   n={n} FAILED: {e}", flush=True)
            continue
        print(f"   n={n} done in {time.monotonic() - t0:.1f} s wall: "
              + ", ".join(f"{k}={common.fmt_value(v)}" for k, v in r.items()), flush=True)
        cpu_total = time.process_time() - cpu0
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
        how = f"{n} simulated nodes, profile {args.profile}, virtual clock"
        records += [
            common.record(f"sim n={n}: formation until all list all", r["formation_s"], "virtual s",
                          f"{how}; nodes join one random earlier node 50 ms apart, then run until converged "
                          f"({r['formation_settle_s']:.1f} s after the last join)"),
            common.record(f"sim n={n}: formation real CPU", r["formation_cpu_s"], "CPU s", f"{how}; process_time of the whole simulation"),
            common.record(f"sim n={n}: join seen by all (max over nodes, median of rounds)", r["join_s"], "virtual s",
                          f"{how}; from join() of a new node to the last notify_join of it (and its own of all); "
                          f"{args.rounds} joins, worst {r['join_worst_s']:.2f} s"),
            common.record(f"sim n={n}: join seen (p50 over nodes)", r["join_p50_s"], "virtual s", f"{how}; median of rounds"),
            common.record(f"sim n={n}: failure declared dead by all (max over nodes, median of rounds)", r["fail_s"],
                          "virtual s", f"{how}; node silenced (no goodbye) -> last notify_leave(DEAD) among the others; "
                          f"{args.rounds} failures one after another, worst {r['fail_worst_s']:.2f} s"),
            common.record(f"sim n={n}: failure declared dead (p50 over nodes)", r["fail_p50_s"], "virtual s", f"{how}; median of rounds"),
            common.record(f"sim n={n}: real CPU per virtual second (whole cluster)", r["cpu_per_virtual_s"], "CPU s / virtual s",
                          f"{how}; process_time / virtual time during the failure phase; all {n} nodes in one process"),
            common.record(f"sim n={n}: false failures at 5% loss", r["false_dead_nodes"], "nodes",
                          f"{how}; alive nodes declared dead by anyone during {r['loss_window_s']:.0f} virtual s at 5% packet "
                          f"loss (observed {r['loss_observed'] * 100:.1f}%; {int(r['false_dead_pairs'])} observer/victim pairs; "
                          f"{r['loss_cpu_s']:.1f} CPU s; {int(r['decode_drops'])} packets dropped by the nodes (stats drop.*) in the whole run)"),
            common.record(f"sim n={n}: real CPU, whole run of this size", cpu_total, "CPU s",
                          f"{how}; process_time from building the cluster to the end of the loss window"),
            common.record(f"sim n={n}: peak RSS of the simulation process", peak / 2**20, "MiB",
                          f"{how}; getrusage ru_maxrss after this size (a peak over the whole process: "
                          f"earlier sizes in the same invocation count too)"),
        ]
    common.emit(records, args)
    return 0 if records else 1


if __name__ == "__main__":
    sys.exit(main())
