#!/usr/bin/env python3
"""What a misbehaving adapter costs the registry's answers, on a thread and in a child process (issue 18).

Registry processes on loopback, each alone (its own pool), answering Match over gRPC for the group of
its own registry member:

* ``none``: no adapter (the reference, measured in the same run);
* ``busy/thread`` and ``busy/process``: an adapter that spins in pure Python for ever (a bug), run on the
  registry's adapter thread (the default) and with ``isolate=process``;
* ``churn/thread`` and ``churn/process``: a heavy but correct importer: every 0.2 s it parses a JSON
  document of 1,000 services (already imported: the steady state of a resync, measured after the first) and hands them over with ``replace_all`` (a big prefix resynced often).

One client thread sends Match to each registry in turn (one call each, round robin: the machine's load
falls on all alike), for ``--seconds``; p50/p99 per registry and the ratio to ``none``.  RSS of each
registry (and of its adapter child) after the run.  The adapters are loaded by a real entry point (a
dist-info written to a temporary directory on PYTHONPATH), as a third party's would be.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

common.setup_path()

#: Services the churn adapter resyncs every 0.2 s.
CHURN = 1000

ADAPTER = '''
import json, time
CHURN = @CHURN@
from registry.adapters.base import ExternalService


class BenchAdapter:
    def __init__(self, mode: str) -> None:
        self.name = "bench"
        self.mode = mode

    async def run(self, ctx):
        import asyncio
        ctx.imports.upsert(ExternalService("bench", "started", "127.0.0.1:1"))
        if self.mode == "busy":
            n = 0
            while True:
                n += 1
        doc = json.dumps([{"id": f"s{i}", "addr": f"10.0.{i // 250}.{i % 250}:80", "tags": {"v": "1"}}
                          for i in range(CHURN)])
        while True:
            items = json.loads(doc)
            ctx.imports.replace_all([ExternalService("bench", d["id"], d["addr"], d["tags"]) for d in items])
            await asyncio.sleep(0.2)
'''.replace("@CHURN@", str(CHURN))

KINDS = ["none", "busy/thread", "busy/process", "churn/thread", "churn/process"]


def start(group: common.ProcGroup, kind: str, env: dict[str, str]) -> tuple[common.Proc, str]:
    argv = [sys.executable, "-m", "registry.cli", "-id", kind.replace("/", "-"), "-bind", "127.0.0.1:0",
            "-addr", "127.0.0.1:0", "-log-format", "json", "-profile", "fast"]
    if kind != "none":
        mode, isolate = kind.split("/")
        argv += ["-adapter", f"bench:mode={mode},isolate={isolate}"]
    p = group.add(common.Proc(kind, argv, env=env))
    def started() -> list[dict[str, object]]:
        return [json.loads(x) for _, x in list(p.lines) if '"registry started"' in x]

    common.wait_for(started, 60, what=f"{kind} started")
    return p, str(started()[0]["grpc"])


def imported(client: Any) -> int:
    """Services of group "bench" the registry lists (0 until the adapter's first import lands)."""
    from registry.client import NotFound

    try:
        return len(client.members("bench"))
    except NotFound:
        return 0


def children_rss(pid: int) -> int:
    """RSS of the direct children of ``pid`` (an isolated adapter's process)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            raw = stat.read_text()
        except OSError:
            continue
        rest = raw[raw.rindex(")") + 2:].split()
        if int(rest[1]) == pid:
            total += common.rss_bytes(int(stat.parent.name))
    return total


def main() -> int:
    p = common.base_parser(__doc__ or "")
    p.add_argument("--seconds", type=float, default=0.0, help="seconds of Match (default 30; quick 8)")
    args = p.parse_args()
    for mod in ("registry.cli", "registry.client", "registry.adapters.process"):
        common.require_import(mod, args)
    from registry.client import RpcClient

    seconds = args.seconds or (8.0 if args.quick else 30.0)
    common.print_header("adapters: Match latency next to a misbehaving adapter, thread vs process", args.quick)
    records: list[common.Record] = []
    with tempfile.TemporaryDirectory() as tmp, common.ProcGroup() as group:
        (Path(tmp) / "bench_adapter.py").write_text(ADAPTER)
        dist = Path(tmp) / "bench_adapter-0.dist-info"
        dist.mkdir()
        (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: bench-adapter\nVersion: 0\n")
        (dist / "entry_points.txt").write_text("[registry.adapters]\nbench = bench_adapter:BenchAdapter\n")
        env = common.repo_env()
        env["PYTHONPATH"] = tmp + ":" + env.get("PYTHONPATH", "")
        procs = {k: start(group, k, env) for k in KINDS}
        clients = {k: RpcClient(addr, timeout=10.0) for k, (_, addr) in procs.items()}
        for k, c in clients.items():
            common.wait_for(lambda c=c: c.members("registry-group"), 30, what=f"{k} serving")
            if k != "none":
                want = CHURN if k.startswith("churn") else 1
                common.wait_for(lambda c=c, n=want: imported(c) >= n, 300, what=f"{k}'s adapter's imports")
        times: dict[str, list[float]] = {k: [] for k in KINDS}
        end = time.monotonic() + seconds
        i = 0
        while time.monotonic() < end:
            for k, c in clients.items():
                t = time.perf_counter()
                c.match("registry-group", f"k{i}")
                times[k].append(time.perf_counter() - t)
            i += 1
        for c in clients.values():
            c.close()
        base99 = common.percentile(times["none"], 99)
        how = (f"one client thread, Match round robin over the {len(KINDS)} registries for {seconds:g} s "
               f"({i} calls each); each registry alone, -profile fast")
        for k in KINDS:
            p50, p99 = common.percentile(times[k], 50) * 1e3, common.percentile(times[k], 99) * 1e3
            ref = None if k == "none" else f"none {base99 * 1e3:.2f} ms; x{p99 / (base99 * 1e3):.1f}"
            records.append(common.record(f"Match p50 [{k}]", p50, "ms", how))
            records.append(common.record(f"Match p99 [{k}]", p99, "ms", how, reference=ref))
        for k, (proc, _) in procs.items():
            rss = common.rss_bytes(proc.pid) / 2**20
            child = children_rss(proc.pid) / 2**20
            records.append(common.record(f"RSS [{k}]", rss, "MiB", "VmRSS of the registry after the run",
                                         reference=f"+ adapter child {child:.0f} MiB" if child else None))
    common.emit(records, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
