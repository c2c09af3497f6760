#!/usr/bin/env python3
"""Idle cost of Python memberlist nodes: N MemberlistNodes (default 100) on real loopback
UDP+TCP sockets in ONE process and one asyncio loop, LAN profile (Go's default timings).

    python benchmarks/bench_gossip_loopback.py --quick        # 100 nodes, 10 s idle window
    python benchmarks/bench_gossip_loopback.py --nodes 50 --window 60

Runs the LAN profile twice by default: with compression (Go's default; every UDP packet is
LZW-compressed when that makes it smaller) and without.  Method: start the nodes, have each
join node 0 in batches of 10 (the next batch once the nodes so far all agree, at most 30 s;
`--storm` joins back to back), wait until every node lists all N alive (convergence), then take time.process_time() (user+system CPU of this whole process) and
the transport byte counters at the start and end of an idle window of wall time W.
CPU per node = delta CPU / W / N (reported in ms of CPU per second of wall time); bytes per
node = delta(UDP+TCP bytes sent by all nodes) / W / N.  Everything (all N nodes, the loop,
the kernel loopback path charged to this process) is in the one process, so the figure is
an upper bound for a node running alone.

Caveat seen on a shared 2-core machine (load average 3-7 from other jobs): with compression
on, 100 nodes in one loop sometimes miss the 500 ms probe timeout during the join burst,
raise false suspicions, and the extra gossip keeps the loop saturated (LZW-compressing one
1400-byte gossip packet costs ~0.45 ms in pure Python), so the cluster does not heal within
the window; with compression off the same runs stay clean.  At load ~3 both configurations
converge and idle at ~1 ms CPU/s per node.  "non_alive_entries_at_end" shows which case a
run was.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

common.setup_path()


def out_bytes(nodes: list[Any]) -> int:
    return sum(n.runner.stats["udp.out.bytes"] + n.runner.stats["tcp.out.bytes"] for n in nodes)


def out_packets(nodes: list[Any]) -> int:
    return sum(n.runner.stats["udp.out.packets"] for n in nodes)


async def run(args: Any, compression: bool) -> list[common.Record]:
    from registry.memberlist.config import Config
    from registry.memberlist.node import MemberlistNode
    from registry.memberlist.types import NodeState

    n = args.nodes
    nodes: list[Any] = []
    t0 = time.monotonic()
    try:
        for i in range(n):
            cfg = Config.lan(name=f"bench-{i:03d}", bind_addr="127.0.0.1", bind_port=0, enable_compression=True, compress_packets=compression)
            nodes.append(await MemberlistNode.create(cfg))
        seed = str(nodes[0].address)
        for k, batch in enumerate(common.chunks(nodes[1:], args.batch)):
            await asyncio.gather(*(node.join([seed]) for node in batch))
            if args.gentle:
                # Wait until the nodes up so far agree before the next batch, so join storms
                # do not pile up and starve the single event loop.
                up = nodes[: 1 + (k + 1) * args.batch]
                settle = time.monotonic() + 30
                while time.monotonic() < settle and not all(
                    sum(1 for m in x.core.all_nodes() if m.state == NodeState.ALIVE) == len(up) for x in up
                ):
                    await asyncio.sleep(0.05)
        joined = time.monotonic()

        def converged() -> bool:
            return all(sum(1 for m in node.core.all_nodes() if m.state == NodeState.ALIVE) == n for node in nodes)

        deadline = time.monotonic() + args.converge_timeout
        conv: float | None = None
        while True:
            if converged():
                conv = time.monotonic()
                break
            if time.monotonic() > deadline:
                counts = sorted(node.core.num_members() for node in nodes)
                print(
                    f"   WARNING: not every node saw all {n} alive within {args.converge_timeout:.0f}s "
                    f"(members incl. suspect: min {counts[0]}, max {counts[-1]}); measuring anyway"
                )
                break
            await asyncio.sleep(0.05)
        took = None if conv is None else conv - joined
        print(
            f"   [compression {'on' if compression else 'off'}] {n} nodes joined in {joined - t0:.1f}s; "
            f"all list all {n} alive after {'-' if took is None else f'{took:.1f}s'} more"
        )

        cpu0, wall0, bytes0, pk0 = time.process_time(), time.monotonic(), out_bytes(nodes), out_packets(nodes)
        await asyncio.sleep(args.window)  # the measured idle window (the nodes run meanwhile)
        cpu1, wall1, bytes1, pk1 = time.process_time(), time.monotonic(), out_bytes(nodes), out_packets(nodes)
        wall = wall1 - wall0
        not_alive = sum(1 for node in nodes for m in node.core.all_nodes() if m.state != NodeState.ALIVE)
        exceptions = sum(v for node in nodes for k, v in node.stats.items() if k.startswith("runner.exception"))
    finally:
        for node in nodes:
            await node.shutdown()

    mode = "compress_on" if compression else "compress_off"
    setup = (
        f"{n} MemberlistNodes (LAN profile, UDP compression {'on' if compression else 'off'}, streams compressed) on 127.0.0.1 UDP+TCP, "
        f"joined in batches of {args.batch}{'' if args.gentle else ' back to back'}, "
        "in one Python process/asyncio loop, measured after convergence"
    )
    how = f"{setup}; time.process_time() delta over a {wall:.1f}s idle window, divided by window and node count"
    how_b = (
        f"{setup}; sum of the transport's UDP+TCP bytes-sent counters of all nodes over the same {wall:.1f}s "
        "window, divided by window and node count (payload bytes, no IP/UDP headers)"
    )
    how_p = f"{setup}; UDP datagrams sent by all nodes over the {wall:.1f}s window / window / node count"
    return [
        common.record(f"gossip_loopback.{mode}.cpu_per_node", (cpu1 - cpu0) / wall / n * 1000.0, "ms CPU/s", how),
        common.record(f"gossip_loopback.{mode}.cpu_process", (cpu1 - cpu0) / wall * 100.0, "% of one core", how),
        common.record(f"gossip_loopback.{mode}.bytes_out_per_node", (bytes1 - bytes0) / wall / n, "B/s", how_b),
        common.record(f"gossip_loopback.{mode}.packets_out_per_node", (pk1 - pk0) / wall / n, "packets/s", how_p),
        common.record(
            f"gossip_loopback.{mode}.convergence",
            None if conv is None else round(conv - joined, 2),
            "s",
            f"{setup}; from the last join() returning until every node lists all {n} as alive "
            f"(None = not within {args.converge_timeout:.0f}s)",
        ),
        common.record(
            f"gossip_loopback.{mode}.non_alive_entries_at_end",
            not_alive,
            "entries",
            f"{setup}; suspect/dead entries summed over all {n} views at the end of the window "
            "(all nodes stay up, so these are false alarms; 0 is healthy)",
        ),
        common.record(
            f"gossip_loopback.{mode}.exceptions", exceptions, "count", f"{setup}; runner.exception.* counters"
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    p = common.base_parser(__doc__ or "")
    p.add_argument("--nodes", type=int, default=100)
    p.add_argument("--window", type=float, default=0.0, help="idle window in seconds (default 10 quick, 60 full)")
    p.add_argument("--converge-timeout", type=float, default=0.0, help="default 60 quick, 180 full")
    p.add_argument("--batch", type=int, default=10, help="nodes joining node 0 at once")
    p.add_argument(
        "--storm",
        dest="gentle",
        action="store_false",
        help="join batches back to back (default: wait until the nodes so far agree)",
    )
    p.add_argument(
        "--compression",
        choices=["on", "off", "both"],
        default="both",
        help="LAN default is on; 'both' runs the two configurations one after the other",
    )
    args = p.parse_args(argv)
    if not args.converge_timeout:
        args.converge_timeout = 60.0 if args.quick else 180.0
    if not args.window:
        args.window = 10.0 if args.quick else 60.0
    common.require_import("registry.memberlist.node", args)
    logging.basicConfig(level=logging.ERROR)
    common.print_header(f"gossip loopback: {args.nodes} Python memberlist nodes in one process", args.quick)
    records: list[common.Record] = []
    for mode in ["on", "off"] if args.compression == "both" else [args.compression]:
        records += asyncio.run(run(args, mode == "on"))
    common.emit(records, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
