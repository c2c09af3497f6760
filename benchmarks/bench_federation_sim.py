#!/usr/bin/env python3
"""A federation on the virtual clock: 10 datacenters x 5 registries x 1000 services (--quick: 4 x 3 x 200).

Two parts, each with the real code where the figure depends on it:

* **WAN pool** (`registry.serf.core.Serf` machines with memberlist's WAN profile on
  `registry.memberlist.simnet.SimNetwork`, every registry of every datacenter): datacenters are points
  on a 2-D map (seeded), a datagram between two registries takes half their datacenters' round trip
  (RTT 2-160 ms, 0.5 ms within one); streams (push/pull) take the mean. Figures: formation (every
  registry sees every other alive), Vivaldi after the warm-up (for each registry, is the datacenter with
  the lowest estimated RTT the truly nearest one? how far are the estimates?), a registry killed silently
  (how long until every registry of the other datacenters sees it failed: what drops it from their
  followers' `sources()`), a whole datacenter cut off (until every other registry sees all of it failed:
  when its mirrors go stale and Match(failover) stops picking it).
* **Catalogs and mirrors** (a real `Catalog` + `RegistryCore.watch_all()` stream per datacenter, a real
  `Mirror` per datacenter fed by it): random changes (a service joins, leaves, changes weight) in random
  datacenters; each change is applied at its virtual instant, its Watch events pulled and applied to the
  mirror (real CPU time measured), and it is visible in a remote datacenter at
  instant + LAN dissemination (--lan-ms, an input: bench_health measured ~100 ms for a tag update on
  two registries) + one way of the WAN (the map) + the mirror's apply time.  Every viewing datacenter
  receives the same stream from a source, so one mirror per source stands for all its viewers (their
  arrival times differ by the map only): 10 mirrors of 1000 services, not 90.  At the end each mirror
  must answer Match for 1,000 keys in every group as its source does.  A source switch costs detection
  (a killed process: the stream fails at once; a silent host: the follower's probe, <= 2 x 5 s, or the WAN
  pool's failure detection above, whichever first) + a round trip + applying a whole snapshot (measured).
"""

from __future__ import annotations

import asyncio
import functools
import math
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

common.setup_path()


def world(dcs: int, seed: int) -> list[list[float]]:
    """One-way delay (s) between datacenters: points on a 4000 x 4000 km map, 80 km per ms of RTT
    (fibre with routing), at least 2 ms RTT apart; 0.5 ms one way within one."""
    rng = random.Random(seed)
    pts = [(rng.uniform(0, 4000), rng.uniform(0, 4000)) for _ in range(dcs)]
    out = [[0.0] * dcs for _ in range(dcs)]
    for i in range(dcs):
        for j in range(dcs):
            rtt_ms = 0.0 if i == j else max(2.0, math.dist(pts[i], pts[j]) / 80.0)
            out[i][j] = 0.0005 if i == j else rtt_ms / 2000.0
    return out


def vivaldi(nodes: dict[Any, Any], names: dict[Any, str], dc_of: dict[Any, int], delays: list[list[float]],
            dcs: int, after: float) -> list[common.Record]:
    """How well Serf's Vivaldi coordinates rank and estimate the datacenters, `after` s of probes."""
    right = 0
    errors = []
    for a, s in nodes.items():
        me = dc_of[a]
        ours = s.get_coordinate()
        best: dict[int, float] = {}
        for b, name in names.items():
            if dc_of[b] == me:
                continue
            theirs = s.coord_cache.get(name)
            if theirs is None or not ours.compatible(theirs):
                continue
            est = ours.distance(theirs)
            best[dc_of[b]] = min(best.get(dc_of[b], math.inf), est)
            errors.append(abs(est - 2 * delays[me][dc_of[b]]) / (2 * delays[me][dc_of[b]]))
        truth = min((d for d in range(dcs) if d != me), key=lambda d: delays[me][d])
        if best and min(best, key=lambda d: best[d]) == truth:
            right += 1
    return [common.record(f"Vivaldi after {after:.0f} s: nearest datacenter picked right", 100.0 * right / len(nodes), "%",
                          f"virtual s of WAN probes after formation; per registry, the datacenter with the lowest "
                          f"estimated RTT to one of its registries vs the map's nearest ({right}/{len(nodes)})"),
            common.record(f"Vivaldi after {after:.0f} s: RTT estimate error p50", 100 * common.percentile(errors, 50), "%",
                          "|estimate - true RTT| / true RTT over every pair of registries in different datacenters")]


def wan_pool(dcs: int, per_dc: int, delays: list[list[float]], seed: int, warmup: float) -> list[common.Record]:
    from registry.memberlist.config import Config
    from registry.memberlist.simnet import SimNetwork
    from registry.memberlist.types import Address, SendPacket
    from registry.serf.config import SerfConfig
    from registry.serf.core import Serf
    from registry.serf.member import MemberStatus

    def address(d: int, r: int) -> Address:
        return Address(f"10.{d}.0.{r + 1}", 7372)

    dc_of = {address(d, r): d for d in range(dcs) for r in range(per_dc)}

    class WanNet(SimNetwork):
        """A datagram takes its two datacenters' one-way delay (SimNetwork has one delay for all)."""

        def _send_packet(self, src: Address, out: SendPacket) -> None:
            self.packets_sent += 1
            self._push(self.now + delays[dc_of[src]][dc_of[out.addr]], functools.partial(self._deliver, src, out))

    mean = sum(map(sum, delays)) / dcs / dcs
    net = WanNet(seed=seed, delay=mean)
    nodes: dict[Address, Serf] = {}
    names = {}
    for d in range(dcs):
        for r in range(per_dc):
            a = address(d, r)
            name = f"r{r}.dc{d}"
            cfg = SerfConfig(name=name, tags={"dc": f"dc{d}", "role": "registry"},
                             memberlist=Config.profile("wan").replace(name=name))
            nodes[a] = Serf(cfg, a, rng=random.Random(seed * 1000 + d * 50 + r), now=net.now)
            names[a] = name
            net.add(nodes[a], a)
    first = address(0, 0)
    for a, s in nodes.items():
        if a != first:
            s.join([first], net.now)
            net.kick(a)
    everyone = set(names.values())
    t0 = net.now

    def alive(s: Serf) -> set[str]:
        return {m.name for m in s.members() if m.status == MemberStatus.ALIVE}

    ok = net.run_until_true(lambda: all(alive(s) == everyone for s in nodes.values()), 600, step=0.5)
    formed = net.now - t0 if ok else float("nan")
    recs: list[common.Record] = [common.record("WAN pool formation: all see all alive", formed, "virtual s",
                          f"{len(nodes)} registries join r0.dc0 at once; WAN profile")]

    for checkpoint in (60.0, warmup):
        net.run_until(t0 + formed + checkpoint)
        recs += vivaldi(nodes, names, dc_of, delays, dcs, checkpoint)

    # a registry dies silently: when does each other datacenter's registry see it failed?
    victim = address(1 % dcs, 0)
    net.kill(victim)
    killed = net.now
    seen: dict[Address, float] = {}
    others = [a for a in nodes if dc_of[a] != dc_of[victim]]

    def all_failed() -> bool:
        for a in others:
            if a not in seen:
                m = nodes[a].member(names[victim])
                if m is not None and m.status == MemberStatus.FAILED:
                    seen[a] = net.now - killed
        return len(seen) == len(others)

    net.run_until_true(all_failed, 300, step=0.1)
    times = list(seen.values())
    how = (f"{names[victim]} stopped (no leave); over the {len(others)} registries of other datacenters; "
           "0.1 virtual s resolution")
    recs.append(common.record("registry killed -> failed in other dcs, p50", common.percentile(times, 50), "virtual s", how))
    recs.append(common.record("registry killed -> failed in other dcs, max", max(times, default=math.nan),
                              "virtual s", how))

    # a whole datacenter cut off: when is all of it failed everywhere else?
    cut = dcs - 1
    inside = [a for a in nodes if dc_of[a] == cut]
    net.partition(inside, [a for a in nodes if dc_of[a] != cut])
    start = net.now
    lost: dict[Address, float] = {}
    outside = [a for a in others if dc_of[a] != cut]

    def dc_failed() -> bool:
        for a in outside:
            if a not in lost and all((m := nodes[a].member(names[b])) is not None and m.status == MemberStatus.FAILED
                                     for b in inside):
                lost[a] = net.now - start
        return len(lost) == len(outside)

    net.run_until_true(dc_failed, 300, step=0.1)
    times = list(lost.values())
    how = f"dc{cut}'s {len(inside)} registries partitioned from the rest; over the {len(outside)} registries outside"
    recs.append(common.record("datacenter cut off -> all failed elsewhere, p50", common.percentile(times, 50),
                              "virtual s", how))
    recs.append(common.record("datacenter cut off -> all failed elsewhere, max", max(times, default=math.nan),
                              "virtual s", how))
    return recs


async def catalogs(dcs: int, services: int, changes: int, delays: list[list[float]], lan: float,
                   seed: int) -> list[common.Record]:
    from registry.api import RegistryCore
    from registry.catalog import Catalog, UnknownGroup
    from registry.federation import Mirror

    rng = random.Random(seed)
    groups = [f"g{i}" for i in range(10)]
    cats = [Catalog() for _ in range(dcs)]
    cores = [RegistryCore(c) for c in cats]
    streams = [core.watch_all() for core in cores]
    mirrors = [Mirror(f"dc{d}") for d in range(dcs)]
    apply_cpu: list[float] = []

    async def catch_up(d: int, group: str, now: float) -> float:
        """Pull dc d's events into its mirror until it holds `group` at the source's version; CPU spent."""
        spent = 0.0
        want = cats[d].version(group)
        while mirrors[d].version(group) != want:
            ev = await asyncio.wait_for(streams[d].__anext__(), 30)
            t = time.process_time()
            mirrors[d].apply(ev, now=now)
            spent += time.process_time() - t
        return spent

    members: list[dict[str, str]] = []
    for d in range(dcs):
        batch = {f"s{i}.dc{d}": groups[i % len(groups)] for i in range(services)}
        cats[d].apply_many([(n, {"group": g, "addr": f"10.{d}.{i // 250}.{i % 250}:80"})
                            for i, (n, g) in enumerate(batch.items())])
        members.append(batch)
    snapshot = []
    for d in range(dcs):  # the first snapshot: what a follower pays on every (re)sync
        t = time.process_time()
        for g in groups:
            await catch_up(d, g, 0.0)
        snapshot.append(time.process_time() - t)
        assert mirrors[d].synced, f"dc{d}'s mirror not synced"

    prop: list[float] = []
    now = 0.0
    for k in range(changes):
        now += rng.expovariate(100.0)  # 100 changes/s across the federation
        d = rng.randrange(dcs)
        kind = rng.choice(("join", "leave", "weight"))
        if kind == "join" or not members[d]:
            name, group = f"n{k}.dc{d}", rng.choice(groups)
            members[d][name] = group
            cats[d].apply_many([(name, {"group": group, "addr": f"10.{d}.9.{k % 250}:{1000 + k}"})])
        elif kind == "leave":
            name = rng.choice(sorted(members[d]))
            group = members[d].pop(name)
            cats[d].apply_many([(name, None)])
        else:
            name = rng.choice(sorted(members[d]))
            group = members[d][name]
            cats[d].apply_many([(name, {"group": group, "addr": f"w{k}", "weight": str(rng.randint(1, 4))})])
        cpu = await catch_up(d, group, now)
        apply_cpu.append(cpu)
        prop += [lan + delays[d][v] + cpu for v in range(dcs) if v != d]

    keys = [f"key-{i}" for i in range(1000)]
    wrong = 0
    for d in range(dcs):
        for g in groups:
            try:
                want = [s.id for s in cats[d].match_batch(g, keys)]
            except UnknownGroup:
                want = []
            try:
                got = [s.id for s in mirrors[d].catalog.match_batch(g, keys)]
            except LookupError:
                got = []
            wrong += sum(a != b for a, b in zip(got, want)) + abs(len(got) - len(want))
    for s in streams:
        await s.aclose()  # type: ignore[attr-defined]
    for core in cores:
        core.close()
    assert wrong == 0, f"{wrong} keys answered otherwise by a mirror than by its source"
    dropped = sum(sum(m.dropped.values()) for m in mirrors)
    how = (f"{changes} changes (join/leave/weight, Poisson 100/s) in random datacenters of {dcs} x {services} services; "
           f"each seen by the {dcs - 1} others at LAN {lan * 1000:.0f} ms + the map's one way + the mirror's "
           f"measured apply CPU; mirrors equal their sources for 1,000 keys x 10 groups at the end (0 keys differ, "
           f"{dropped} events dropped)")
    recs = [common.record("propagation change -> remote mirror, p50", common.percentile(prop, 50) * 1000, "ms", how),
            common.record("propagation change -> remote mirror, p99", common.percentile(prop, 99) * 1000, "ms", how),
            common.record("mirror apply CPU per change, p50", common.percentile(apply_cpu, 50) * 1e6, "µs",
                          "real process time of Mirror.apply for the events of one change"),
            common.record("mirror resync (a whole snapshot) CPU", common.percentile(snapshot, 50) * 1000, "ms",
                          f"real process time to apply {services} services' snapshot + marker, median of {dcs}; a source "
                          "switch costs detection + a round trip + this")]
    return recs


def main() -> int:
    p = common.base_parser(__doc__ or "")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--lan-ms", type=float, default=100.0, help="LAN dissemination of a change to the followed registry")
    args = p.parse_args()
    common.require_import("registry.federation", args)
    common.print_header("federation simulation (virtual clock)", args.quick)
    dcs, per_dc, services, changes = (4, 3, 200, 200) if args.quick else (10, 5, 1000, 1000)
    warmup = 300.0  # virtual s of WAN probes (5 s apart in the WAN profile) before Vivaldi is read
    delays = world(dcs, args.seed)
    rtts = sorted(2000 * delays[i][j] for i in range(dcs) for j in range(i + 1, dcs))
    print(f"inputs: {dcs} datacenters x {per_dc} registries x {services} services, {changes} changes, seed {args.seed}, "
          f"LAN {args.lan_ms:.0f} ms, inter-dc RTT {rtts[0]:.1f}-{rtts[-1]:.1f} ms (median {common.percentile(rtts, 50):.1f})")
    cpu = time.process_time()
    recs: list[Any] = wan_pool(dcs, per_dc, delays, args.seed, warmup)
    recs += asyncio.run(catalogs(dcs, services, changes, delays, args.lan_ms / 1000.0, args.seed))
    recs.append(common.record("real CPU of the whole simulation", time.process_time() - cpu, "s",
                              "time.process_time of this process"))
    common.emit(recs, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
