#!/usr/bin/env python3
"""The etcd adapter with a real etcd and a real registry process (issue 18's benchmarks).

One etcd 3.4 (Debian's etcd-server, data in a temporary directory, loopback) and one `registry` process
(-profile fast, -http-addr, `-adapter etcd:endpoint=...,lease_ttl=10`: it imports /services/ and is the
writer of /registry/dc1/).  The benchmark talks to etcd with etcd's generated v3 stubs (aetcd.rpc) on a
grpc.aio channel of its own and to the registry with its gRPC stubs; everything it times runs on one
asyncio loop, each arrival time-stamped (time.monotonic) as the loop reads it.

Before each size, N services are present: N TTL services registered over HTTP (100 per group, replicas
16; the pool's own, so all N are exported: every export view holds N services) and N keys imported from
/services/ (100 per group, replicas 16).  Sizes 1,000 then 10,000 (the second adds to the first).

* reference, etcd alone: put of a new key (client Put RPC) -> the event on an etcd Watch of its prefix
  (the same channel and loop as below): what any etcd watcher pays;
* import delay: put of /services/imp/<new id> (a plain client's Put) -> the registry's gRPC Watch of group
  "imp" reports it added (it is on the ring then: Watch events are sent after the catalog commits); the
  same put -> Watch path as the reference, plus our adapter's watch, the host's hand-over, the catalog;
* export delay: a new TTL service joins (HTTP PUT /v1/services/exp/<id>, sent from a thread) -> its key
  /registry/dc1/exp/<id> on an etcd Watch of /registry/dc1/;
* etcd writes per catalog change: etcd's revision (every write txn bumps it by one) before and after
  each phase: the sequential joins of the export phase (one change at a time, each awaited), the imports
  (the put itself should be the only write: an import is not exported), idle (no change for a window:
  should be 0), and churn: tag updates (HTTP PUT of new tags on the exp services, each a catalog change)
  as fast as 4 keep-alive connections go for a window, then until the prefix settles; keys written per
  change counted too (events on the etcd Watch of /registry/dc1/).

Samples are taken one at a time with a random 10-40 ms pause between them.  ``--no-export`` runs the
adapter with export=false (import phases only): the import delay without the exporter on the adapter's loop.
``--sizes 1000,10000`` picks the sizes (default 1,000 and 10,000; ``--quick``: 1,000, 30 samples).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

common.setup_path()

DC = "dc1"
EXPORT = f"/registry/{DC}/".encode()
GROUP_SIZE = 100
LANES = 4


def prefix_end(prefix: bytes) -> bytes:
    return prefix[:-1] + bytes([prefix[-1] + 1])


class Etcd:
    """etcd on two free loopback ports, its data in a temporary directory (removed on stop)."""

    def __init__(self, g: common.ProcGroup) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="bench-etcd-"))
        port, peer = common.free_ports(2)
        self.endpoint = f"127.0.0.1:{port}"
        url, purl = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{peer}"
        argv = ["etcd", "--name", "b", "--data-dir", str(self.dir / "data"), "--listen-client-urls", url,
                "--advertise-client-urls", url, "--listen-peer-urls", purl, "--initial-advertise-peer-urls", purl,
                "--initial-cluster", f"b={purl}", "--log-level", "warn"]
        self.proc = g.add(common.Proc("etcd", argv))

    def close(self) -> None:
        self.proc.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class Http:
    """Keep-alive HTTP connections to the registry's HTTP front, one per thread."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.local = threading.local()

    def put(self, path: str, body: dict[str, Any]) -> int:
        """PUT (idempotent): once again on a new connection if the kept one was closed while idle."""
        data = json.dumps(body).encode()
        for attempt in (0, 1):
            conn = getattr(self.local, "conn", None)
            if conn is None:
                conn = self.local.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            try:
                conn.request("PUT", path, data, {"Content-Type": "application/json"})
                resp = conn.getresponse()
                resp.read()
                return int(resp.status)
            except (OSError, http.client.HTTPException):
                conn.close()
                self.local.conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")


class Arrivals:
    """Keys (or ids) seen on a watch, each with the time the loop read it; waiters wake on their key."""

    def __init__(self) -> None:
        self.at: dict[bytes, float] = {}
        self.events = 0
        self.waiters: dict[bytes, asyncio.Future[float]] = {}

    def hit(self, key: bytes, t: float) -> None:
        self.events += 1
        self.at[key] = t
        f = self.waiters.pop(key, None)
        if f is not None and not f.done():
            f.set_result(t)

    async def wait(self, key: bytes, timeout: float = 30.0) -> float:
        if key in self.at:
            return self.at[key]
        f = self.waiters[key] = asyncio.get_running_loop().create_future()
        return await asyncio.wait_for(f, timeout)


async def etcd_watch(channel: Any, prefix: bytes, arrivals: Arrivals, ready: asyncio.Event) -> None:
    import grpc.aio
    from aetcd import rpc  # type: ignore[import-untyped]

    call = rpc.WatchStub(channel).Watch()
    await call.write(rpc.WatchRequest(create_request=rpc.WatchCreateRequest(key=prefix, range_end=prefix_end(prefix))))
    while True:
        wr = await call.read()
        t = time.monotonic()
        if wr is grpc.aio.EOF:
            return
        if wr.created:
            ready.set()
        for ev in wr.events:
            if ev.type == rpc.Event.PUT:
                arrivals.hit(ev.kv.key, t)


async def registry_watch(channel: Any, group: str, arrivals: Arrivals, ready: asyncio.Event) -> None:
    from registry.v1 import registry_pb2 as pb
    from registry.v1.registry_pb2_grpc import RegistryStub

    async for ev in RegistryStub(channel).Watch(pb.WatchRequest(group=group)):  # type: ignore[no-untyped-call]
        t = time.monotonic()
        if ev.snapshot:
            ready.set()
        for s in list(ev.added) + list(ev.updated):
            arrivals.hit(s.id.encode(), t)


class Churn:
    """Tag updates (HTTP PUT of new tags: each a catalog change) on ``ids`` in turn until ``stop_at``."""

    def __init__(self, web: Http, ids: list[str], stop_at: float) -> None:
        self.web, self.ids, self.stop_at = web, ids, stop_at
        self.done = 0
        self.lock = threading.Lock()

    def lane(self, lane: int) -> None:
        i = lane
        while time.monotonic() < self.stop_at:
            sid = self.ids[i % len(self.ids)]
            body = {"addr": f"10.7.0.{i % 250}:80", "ttl": "3600s", "replicas": 16, "tags": {"n": str(i)}}
            if self.web.put(f"/v1/services/exp/{sid}", body) == 200:
                with self.lock:
                    self.done += 1
            i += LANES


def pcts(name: str, values: list[float], how: str, ref: list[float] | None = None) -> list[common.Record]:
    out = []
    for p in (50, 99):
        v = common.percentile(values, p) * 1000
        extra: dict[str, Any] = {}
        if ref is not None:
            extra["reference"] = f"etcd put->watch p{p} {common.percentile(ref, p) * 1000:.2f} ms"
        out.append(common.record(f"{name} p{p}", v, "ms", how + f"; {len(values)} samples, max {max(values) * 1000:.1f} ms",
                                 **extra))
    return out


async def run(args: Any, etcd_ep: str, http_port: int, rpc_addr: str) -> list[common.Record]:
    import grpc.aio
    from aetcd import rpc

    recs: list[common.Record] = []
    ch = grpc.aio.insecure_channel(etcd_ep)
    rch = grpc.aio.insecure_channel(rpc_addr)
    kv = rpc.KVStub(ch)
    loop = asyncio.get_running_loop()
    pool = ThreadPoolExecutor(LANES)
    web = Http(http_port)
    tasks: list[asyncio.Task[None]] = []

    async def revision() -> int:
        return int((await kv.Range(rpc.RangeRequest(key=b"/bench/none"), timeout=10)).header.revision)

    async def count(prefix: bytes) -> int:
        r = await kv.Range(rpc.RangeRequest(key=prefix, range_end=prefix_end(prefix), count_only=True), timeout=30)
        return int(r.count)

    async def settle(quiet: float = 0.5) -> int:
        """etcd's revision once it has not moved for ``quiet`` seconds (the exporter caught up)."""
        last, since = await revision(), time.monotonic()
        while time.monotonic() - since < quiet:
            await asyncio.sleep(0.05)
            now = await revision()
            if now != last:
                last, since = now, time.monotonic()
        return last

    def register_many(group_of: list[tuple[str, str]], extra: dict[str, Any]) -> None:
        def one(chunk: list[tuple[str, str]]) -> None:
            for g, sid in chunk:
                st = web.put(f"/v1/services/{g}/{sid}", {"addr": f"10.{len(sid)}.{hash(sid) % 250}.1:80", **extra})
                if st != 200:
                    raise RuntimeError(f"PUT {g}/{sid}: {st}")

        list(pool.map(one, [group_of[i::LANES] for i in range(LANES)]))

    try:
        ref_arr, exp_arr, imp_arr = Arrivals(), Arrivals(), Arrivals()
        readies = [asyncio.Event() for _ in range(3)]
        # the import group exists before it is watched
        await kv.Put(rpc.PutRequest(key=b"/services/imp/seed", value=b'{"addr": "10.0.0.1:80", "replicas": 16}'))
        await common_wait(lambda: imp_members(rch, "imp"), 30, "the registry importing")
        tasks.append(asyncio.ensure_future(etcd_watch(ch, b"/bench/ref/", ref_arr, readies[0])))
        tasks.append(asyncio.ensure_future(etcd_watch(ch, EXPORT, exp_arr, readies[1])))
        tasks.append(asyncio.ensure_future(registry_watch(rch, "imp", imp_arr, readies[2])))
        for r in readies:
            await asyncio.wait_for(r.wait(), 30)

        sizes = [int(x) for x in args.sizes.split(",")] if args.sizes else [1000] if args.quick else [1000, 10000]
        samples = 30 if args.quick else 200
        have = 0
        for n in sizes:
            # -- N present: TTL services (exported) and imported keys ---------------------------------
            t0 = time.monotonic()
            ttl = [(f"bg-{i // GROUP_SIZE}", f"t{i}") for i in range(have, n)]
            await loop.run_in_executor(None, register_many, ttl, {"ttl": "3600s", "replicas": 16})
            reg_s = time.monotonic() - t0
            ops = [rpc.RequestOp(request_put=rpc.PutRequest(
                key=f"/services/bgi-{i // GROUP_SIZE}/x{i}".encode(),
                value=json.dumps({"addr": f"10.9.{i % 250}.{i // 250 % 250}:80", "replicas": 16}).encode()))
                for i in range(have, n)]
            for i in range(0, len(ops), 128):
                await kv.Txn(rpc.TxnRequest(success=ops[i:i + 128]), timeout=30)
            have = n
            deadline = time.monotonic() + 600
            last = f"bgi-{(n - 1) // GROUP_SIZE}"
            exported = n + 1 if args.export else 0  # + 1: the registry itself (registry-group)
            while await count(EXPORT) < exported or not await imp_members(rch, last, n - (n - 1) // GROUP_SIZE * GROUP_SIZE):
                if time.monotonic() > deadline:
                    common.missing(f"the {n} TTL services were not all exported (or imports not in) within 600 s", args)
                await asyncio.sleep(0.1)
            await settle()
            print(f"{n} services present: {n} TTL registered over HTTP in {reg_s:.1f}s, {n} keys imported; "
                  f"all exported {time.monotonic() - t0:.1f}s after the first PUT", flush=True)
            tag = f"{n:,} + {n:,} present" + ("" if args.export else ", export=false")

            # -- reference: etcd put -> etcd watch -------------------------------------------------
            ref: list[float] = []
            for k in range(samples):
                await asyncio.sleep(random.uniform(0.01, 0.04))
                key = f"/bench/ref/{n}-{k}".encode()
                t = time.monotonic()
                await kv.Put(rpc.PutRequest(key=key, value=b"x"))
                ref.append(await ref_arr.wait(key) - t)
            recs += pcts(f"etcd put -> etcd watch event (reference), {tag}", ref,
                         "Put RPC sent -> the PUT event read from a Watch of the prefix, same channel and loop")

            # -- import delay -------------------------------------------------------------------------
            imp: list[float] = []
            r0 = await revision()
            for k in range(samples):
                await asyncio.sleep(random.uniform(0.01, 0.04))
                sid = f"i{n}-{k}"
                t = time.monotonic()
                await kv.Put(rpc.PutRequest(key=f"/services/imp/{sid}".encode(),
                                            value=json.dumps({"addr": f"10.8.0.{k % 250}:80", "replicas": 16}).encode()))
                imp.append(await imp_arr.wait(sid.encode()) - t)
            r1 = await settle()
            recs += pcts(f"import delay: etcd put -> registry Watch says added, {tag}", imp,
                         "Put RPC of /services/imp/<new id> sent -> the registry's gRPC Watch(imp) event adding it",
                         ref)
            recs.append(common.record(f"etcd revisions per imported key put, {tag}", (r1 - r0) / samples, "",
                                      f"revision delta over the {samples} puts / {samples} (1 = the put itself: "
                                      "no write back)"))

            if not args.export:
                continue
            # -- export delay -------------------------------------------------------------------------
            exp: list[float] = []
            r0 = await revision()
            e0 = exp_arr.events
            for k in range(samples):
                await asyncio.sleep(random.uniform(0.01, 0.04))
                sid = f"e{n}-{k}"
                t = time.monotonic()
                fut = loop.run_in_executor(pool, web.put, f"/v1/services/exp/{sid}",
                                           {"addr": f"10.7.0.{k % 250}:80", "ttl": "3600s", "replicas": 16})
                exp.append(await exp_arr.wait(EXPORT + f"exp/{sid}".encode()) - t)
                if await fut != 200:
                    common.missing("a TTL PUT was refused", args)
            r1 = await settle()
            recs += pcts(f"export delay: service joins -> key in etcd, {tag}", exp,
                         "HTTP PUT /v1/services/exp/<new id> sent (a thread) -> the PUT of /registry/dc1/exp/<id> read "
                         "from an etcd Watch of /registry/dc1/", ref)
            recs.append(common.record(f"etcd revisions per catalog change, one at a time, {tag}",
                                      (r1 - r0) / samples, "",
                                      f"revision delta over {samples} joins, each awaited in etcd before the next; "
                                      f"keys written per change {(exp_arr.events - e0) / samples:.2f}"))

            # -- idle ----------------------------------------------------------------------------------
            window = 2.0 if args.quick else 5.0
            r0 = await revision()
            await asyncio.sleep(window)
            r1 = await revision()
            recs.append(common.record(f"etcd revisions per second, idle, {tag}", (r1 - r0) / window, "/s",
                                      f"revision delta over {window:.0f} s with nothing changing (lease keepalives "
                                      "are not writes)"))

            # -- churn: tag updates as fast as LANES connections go --------------------------------------
            ids = [f"e{n}-{k}" for k in range(samples)]
            churner = Churn(web, ids, time.monotonic() + window)
            r0, e0 = await revision(), exp_arr.events
            t0 = time.monotonic()
            await asyncio.gather(*(loop.run_in_executor(pool, churner.lane, k) for k in range(LANES)))
            took = time.monotonic() - t0
            r1 = await settle()
            changes = churner.done
            recs.append(common.record(f"etcd revisions per catalog change, churn, {tag}", (r1 - r0) / changes, "",
                                      f"{changes} tag updates ({changes / took:.0f}/s, {LANES} HTTP keep-alive "
                                      f"connections, as fast as answered, over {took:.1f} s) on {len(ids)} exported "
                                      f"services; revision delta until etcd settled; keys written per change "
                                      f"{(exp_arr.events - e0) / changes:.2f} (events on the export Watch)"))
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await ch.close()
        await rch.close()
        pool.shutdown(wait=False)
    return recs


async def imp_members(rch: Any, group: str, at_least: int = 1) -> bool:
    from registry.v1 import registry_pb2 as pb
    from registry.v1.registry_pb2_grpc import RegistryStub

    try:
        r = await RegistryStub(rch).Members(pb.MembersRequest(group=group), timeout=5)  # type: ignore[no-untyped-call]
    except Exception:  # noqa: BLE001 - not there yet
        return False
    return len(r.services) >= at_least


async def common_wait(pred: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await pred():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def main() -> int:
    p = common.base_parser(__doc__ or "")
    p.add_argument("--no-export", dest="export", action="store_false",
                   help="the adapter imports only (export=false): the import delay without the exporter beside it")
    p.add_argument("--sizes", default="", help="services present, comma-separated (default 1000,10000; --quick 1000)")
    args = p.parse_args()
    common.require_import("registry.adapters.etcd", args)
    if shutil.which("etcd") is None:
        common.missing("the etcd binary (apt-get install etcd-server)", args)
    common.print_header("etcd adapter: one registry process + one etcd", args.quick)
    with common.ProcGroup() as g:
        etcd = Etcd(g)
        try:
            host, port = etcd.endpoint.split(":")
            common.wait_port(host, int(port), 30)
            gossip, rpc_port, http_port = common.free_ports(3)
            argv = common.registry_argv("r1", gossip, rpc_port, profile="fast")
            argv += ["-http-addr", f"127.0.0.1:{http_port}", "-adapter",
                     f"etcd:endpoint={etcd.endpoint},lease_ttl=10,retry=0.2,export={str(args.export).lower()}"]
            reg = g.add(common.Proc("registry", argv, env=common.repo_env()))
            common.wait_server(reg, "127.0.0.1", http_port, 60)
            recs = asyncio.run(run(args, etcd.endpoint, http_port, f"127.0.0.1:{rpc_port}"))
            out = subprocess.run(["etcd", "--version"], capture_output=True, text=True).stdout.split("\n")[0]
            print(f"({out}; registry at {common.REPO_ROOT})")
        finally:
            etcd.close()
    common.emit(recs, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
