#!/usr/bin/env python3
"""Two datacenters over the WAN pool, real `registry` processes on loopback (issue 17's benchmarks).

dc1 and dc2, two registries each (-profile fast unless --profile lan: the WAN pool then runs WAN
timings), with every registry's WAN gossip port and gRPC port behind a counting proxy
(tests/federation/proxy.py, no fault injected): `-wan-advertise` and `-advertise` name the proxies, so
every byte one datacenter sends the other (WAN gossip over UDP and TCP, and the followers' Watch
streams) crosses exactly one proxy, and is counted once.  The benchmark queries registries directly.

* propagation: a TTL service written into dc2 (HTTP PUT on a dc2 registry) -> listed by Members(group,
  datacenter=dc2) on both dc1 registries (polled every 2 ms on each, gRPC); p50/p99 of N writes, each
  a new id, a random pause before each;
* WAN bytes/s per registry: the proxies' byte counters over a window, divided by the 4 registries,
  split into gossip (the WAN pool) and follow (Watch streams), idle and while dc2 takes 100 changes/s
  (`--rate`): two writer processes, one per dc2 registry, each over 4 keep-alive HTTP connections,
  PUT new tags on a pool of 100 pre-registered TTL services (default ring parameters) in turn.  A tag
  update is what most changes of a live pool are (a deploy's version, a health note, an address): one
  Watch event carrying the one service, the same bytes on the follow stream as a join, but no ring
  work, so the registry can take 100/s on this machine (a weight change re-places 4096 ring points on
  every registry and mirror: the first version of this bench drove those and reached only ~20/s);
* the rate dc1 really took and the propagation under that load: a watcher process holds
  Watch(group, datacenter=dc2) on a.dc1 (answered from a.dc1's mirror of dc2) and counts the changed
  services it is told of inside the window; each write carries its send time (wall clock, one host)
  in a tag, so every change gives a propagation sample PUT sent -> heard from dc1's mirror.  If the
  achieved rate is below 95 % of the target, the bench says so on stderr and in the figures' names;
  nothing is extrapolated.  The same at 5 changes/s first, the baseline nothing queues behind;
* Match req/s on one dc1 registry from one client thread (sync gRPC stub, one channel): the group
  local (datacenter="") and the same group in dc2 (datacenter="dc2", answered from dc1's mirror),
  interleaved in 1 s slices so load drift hits both alike.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import random
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

common.setup_path()


def http_put(base: str, path: str, body: dict[str, Any]) -> int:
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="PUT",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        resp.read()
        return int(resp.status)


class Node:
    def __init__(self, g: common.ProcGroup, ident: str, dc: str, profile: str, key: str, lan: str = "",
                 wan_join: str = "") -> None:
        from tests.federation.proxy import Proxy

        self.ident, self.dc = ident, dc
        self.gossip, self.rpc_port, wan_port, self.http_port = common.free_ports(4)
        self.wan = Proxy(("127.0.0.1", wan_port)).start()
        self.grpc = Proxy(("127.0.0.1", self.rpc_port)).start()
        argv = [sys.executable, "-m", "registry.cli", "-id", ident, "-bind", f"127.0.0.1:{self.gossip}",
                "-addr", f"127.0.0.1:{self.rpc_port}", "-profile", profile, "-log-level", "warning",
                "-datacenter", dc, "-wan-bind", f"127.0.0.1:{wan_port}", "-wan-advertise", self.wan.address,
                "-advertise", self.grpc.address, "-wan-encrypt", key, "-http-addr", f"127.0.0.1:{self.http_port}"]
        if lan:
            argv += ["-registries", lan]
        if wan_join:
            argv += ["-wan-join", wan_join]
        self.proc = g.add(common.Proc(f"{ident}.{dc}", argv, env=common.repo_env()))
        self.rpc = f"127.0.0.1:{self.rpc_port}"
        self.http = f"http://127.0.0.1:{self.http_port}"

    def close(self) -> None:
        self.wan.stop()
        self.grpc.stop()


class Stubs:
    def __init__(self) -> None:
        self.channels: dict[str, Any] = {}

    def __call__(self, addr: str) -> Any:
        import grpc

        from registry.v1.registry_pb2_grpc import RegistryStub

        if addr not in self.channels:
            ch = grpc.insecure_channel(addr)
            self.channels[addr] = (ch, RegistryStub(ch))  # type: ignore[no-untyped-call]
        return self.channels[addr][1]

    def close(self) -> None:
        for ch, _ in self.channels.values():
            ch.close()


def ids(stubs: Stubs, node: Node, group: str, dc: str = "") -> set[str]:
    import grpc

    from registry.v1 import registry_pb2 as pb

    try:
        got = stubs(node.rpc).Members(pb.MembersRequest(group=group, datacenter=dc), timeout=5)
    except grpc.RpcError:
        return set()
    return {s.id for s in got.services}


def wan_bytes(nodes: list[Node]) -> tuple[int, int]:
    """(WAN gossip bytes, follow-stream bytes) through every proxy so far."""
    gossip = sum(v for n in nodes for k, v in n.wan.stats.items() if "_bytes_" in k)
    follow = sum(v for n in nodes for k, v in n.grpc.stats.items() if "_bytes_" in k)
    return gossip, follow


#: The writer child: PUTs new tags on the TTL services `ids` (comma-separated) of `group` at `rate`/s
#: for `seconds` into the HTTP API at `port`, over `lanes` keep-alive connections, ids in turn; tag `t`
#: is the send time (time.time()), so each PUT is a real change (a PUT equal to the entry is a refresh,
#: not a change) and the watcher can time it.  Prints "ok failed in_window" (in_window: the PUTs answered
#: 200 whose send time is inside [w0, w1], wall clock).  A process of its own: in the benchmark's process
#: the proxies' threads hold the GIL.
WRITER_SRC = r"""
import http.client, json, sys, threading, time
port, group, ids = int(sys.argv[1]), sys.argv[2], sys.argv[3].split(",")
rate, seconds, lanes, w0, w1 = float(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6]), float(sys.argv[7]), float(sys.argv[8])
counts = [0, 0, 0]
lock = threading.Lock()
def lane(k):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    start, i = time.monotonic(), 0
    while time.monotonic() - start < seconds:
        n = k + i * lanes  # the n-th PUT of this writer, due at start + n / rate: the lanes take turns
        delay = start + n / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        sid = ids[n % len(ids)]
        sent = time.time()
        # bytes: headers and body in one segment (a str body went in a second one: Nagle vs delayed ACK)
        body = json.dumps({"addr": "10.7.%d.%d:80" % (n % 200, int(sid[1:]) % 250), "ttl": "300s",
                           "tags": {"t": "%.6f" % sent}}).encode()
        try:
            conn.request("PUT", "/v1/services/%s/%s" % (group, sid), body, {"Content-Type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            ok = resp.status == 200
        except Exception:
            ok = False
            conn.close()
        with lock:
            counts[0 if ok else 1] += 1
            if ok and w0 <= sent <= w1:
                counts[2] += 1
        i += 1
threads = [threading.Thread(target=lane, args=(k,)) for k in range(lanes)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(*counts, flush=True)
"""

#: The watcher child: Watch(group, datacenter) on the registry at `addr` until wall time `until`; counts
#: the changed services (added + updated + removed) of the change events heard inside [w0, w1] and the
#: whole snapshots sent again (a watcher that fell behind), and for each added/updated service with a
#: `t` tag the delay from that send time to now.  Prints "ready" once the first snapshot is in, then
#: "changes events resnapshots p50_ms p99_ms max_ms samples".
WATCHER_SRC = r"""
import sys, time, grpc
from registry.v1 import registry_pb2 as pb
from registry.v1.registry_pb2_grpc import RegistryStub
addr, group, dc, w0, w1, until = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6])
ch = grpc.insecure_channel(addr)
stream = RegistryStub(ch).Watch(pb.WatchRequest(group=group, datacenter=dc), timeout=until - time.time())
changes = events = resnap = 0
lat = []
first = True
try:
    for ev in stream:
        now = time.time()
        if ev.snapshot:
            if first:
                print("ready", flush=True)
                first = False
            elif w0 <= now <= w1:
                resnap += 1
            continue
        if not (w0 <= now <= w1):
            if now > w1:
                break
            continue
        events += 1
        changes += len(ev.added) + len(ev.updated) + len(ev.removed)
        for s in list(ev.added) + list(ev.updated):
            if "t" in s.tags:
                lat.append(now - float(s.tags["t"]))
except grpc.RpcError as exc:
    if exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
        print("watch failed:", exc.code(), exc.details(), flush=True)
stream.cancel()
ch.close()
lat.sort()
def pct(p):
    return lat[min(len(lat) - 1, int(round(p / 100 * (len(lat) - 1))))] * 1000 if lat else -1.0
print(changes, events, resnap, "%.2f" % pct(50), "%.2f" % pct(99), "%.2f" % pct(100), len(lat), flush=True)
"""

#: TTL services updated by the writers, pre-registered (default ring parameters) before the windows.
POOL = 100
#: The light rate measured like the load, so the load's propagation has a like-for-like baseline.
LIGHT = 5.0


def main() -> int:
    p = common.base_parser(__doc__ or "")
    p.add_argument("--profile", default="fast", choices=["fast", "lan"])
    p.add_argument("--rate", type=float, default=100.0, help="changes/s the writers ask of dc2 (default 100)")
    args = p.parse_args()
    common.require_import("registry.federation.federation", args)
    common.require_import("tests.federation.proxy", args)
    import grpc

    from registry.v1 import registry_pb2 as pb

    common.print_header("WAN federation: 2 datacenters x 2 registries", args.quick)
    samples = 20 if args.quick else 100
    window = 10.0 if args.quick else 30.0
    slices = 3 if args.quick else 10
    key = base64.b64encode(os.urandom(32)).decode()
    recs: list[common.Record] = []
    nodes: list[Node] = []
    stubs = Stubs()
    with common.ProcGroup() as g:
        try:
            a1 = Node(g, "a", "dc1", args.profile, key)
            nodes.append(a1)
            b1 = Node(g, "b", "dc1", args.profile, key, lan=f"127.0.0.1:{a1.gossip}", wan_join=a1.wan.address)
            a2 = Node(g, "a", "dc2", args.profile, key, wan_join=a1.wan.address)
            b2 = Node(g, "b", "dc2", args.profile, key, lan=f"127.0.0.1:{a2.gossip}", wan_join=a1.wan.address)
            nodes += [b1, a2, b2]
            dc1 = [a1, b1]
            def joined(n: Node) -> bool:
                return ids(stubs, n, "registry-group") >= {n.ident}

            for n in nodes:
                common.wait_for(functools.partial(joined, n), 60, 0.1, f"{n.ident}.{n.dc}")
            for n in dc1:  # a service in each datacenter
                http_put(n.http, "/v1/services/web/w-" + n.ident, {"addr": f"10.1.0.{len(n.ident)}:80", "ttl": "3600s"})
            http_put(a2.http, "/v1/services/web/w-dc2", {"addr": "10.2.0.1:80", "ttl": "3600s"})
            t = common.wait_for(lambda: all("w-dc2" in ids(stubs, n, "web", "dc2") for n in dc1), 120, 0.05,
                                "dc1 mirroring dc2")
            print(f"dc1's mirrors of dc2 in sync {t:.1f}s after the write")

            # -- propagation ----------------------------------------------------------------
            delays: list[float] = []
            puts: list[float] = []
            for i in range(samples):
                time.sleep(random.uniform(0.05, 0.25))
                sid = f"p{i}"
                seen: dict[str, float] = {}
                t0 = time.monotonic()
                http_put(a2.http, f"/v1/services/prop/{sid}", {"addr": f"10.3.0.{i % 250}:80", "ttl": "3600s"})
                puts.append(time.monotonic() - t0)
                while len(seen) < len(dc1) and time.monotonic() - t0 < 30:
                    for n in dc1:
                        if n.ident not in seen and sid in ids(stubs, n, "prop", "dc2"):
                            seen[n.ident] = time.monotonic() - t0
                    time.sleep(0.002)
                delays += list(seen.values())
            how = (f"{samples} TTL writes into a.dc2 (HTTP PUT, a new id each) -> listed by Members(datacenter=dc2) "
                   f"on a.dc1 and b.dc1 (polled every ~2 ms each); includes dc2's own replication to b.dc2 "
                   f"when b.dc2 is the source dc1 follows; profile {args.profile}")
            recs.append(common.record("propagation dc2 -> dc1 mirror p50", common.percentile(delays, 50) * 1000, "ms", how))
            recs.append(common.record("propagation dc2 -> dc1 mirror p99", common.percentile(delays, 99) * 1000, "ms", how))
            recs.append(common.record("PUT answered by a.dc2, p50", common.percentile(puts, 50) * 1000, "ms",
                                      "the same writes: urllib PUT until its answer (the propagation clock starts before it)"))
            recs.append(common.record("propagation samples seen / expected", f"{len(delays)}/{2 * samples}", "", how))

            # -- WAN bytes, idle and at --rate changes/s ----------------------------------------
            writers = [a2, b2]  # one writer process per dc2 registry, each on its own ids (no LWW races)
            pool = [f"c{i}" for i in range(POOL)]
            for i, sid in enumerate(pool):
                http_put(writers[i % 2].http, f"/v1/services/churn/{sid}", {"addr": f"10.7.0.{i}:80", "ttl": "3600s"})
            t = common.wait_for(lambda: all(len(ids(stubs, n, "churn", "dc2")) == POOL for n in dc1), 120, 0.1,
                                "dc1 mirroring dc2's churn pool")
            print(f"{POOL} churn services registered in dc2, in dc1's mirrors {t:.1f}s later")
            idle_follow: list[float] = []
            lead, tail = 2.0, 1.0

            def window_bytes(w0: float) -> tuple[int, int, float]:
                time.sleep(max(0.0, w0 - time.time()))
                g0, f0 = wan_bytes(nodes)
                t0 = time.monotonic()
                time.sleep(window)
                g1, f1 = wan_bytes(nodes)
                return g1 - g0, f1 - f0, time.monotonic() - t0

            def measure(label: str, load: float) -> None:
                w0 = time.time() + lead + (3.0 if load else 0.0)
                w1 = w0 + window
                procs: list[common.Proc] = []
                if load:
                    watcher = g.add(common.Proc("watcher", [sys.executable, "-c", WATCHER_SRC, a1.rpc, "churn", "dc2",
                                                            str(w0), str(w1), str(w1 + 15.0)], env=common.repo_env()))
                    common.wait_for(lambda: any(line == "ready" for _, line in watcher.lines), 30, 0.05, "watcher ready")
                    seconds = w1 + tail - time.time()
                    for k, n in enumerate(writers):
                        mine = ",".join(pool[k::2])
                        procs.append(g.add(common.Proc(f"writer{k}", [
                            sys.executable, "-c", WRITER_SRC, str(n.http_port), "churn", mine, str(load / len(writers)),
                            str(seconds), "4", str(w0), str(w1)], env=common.repo_env())))
                gossip, follow, dt = window_bytes(w0)
                how = (f"bytes through the 8 proxies (WAN gossip UDP+TCP, follow streams) over {dt:.1f}s / 4 "
                       "registries; each byte counted once")
                if not load:
                    recs.append(common.record(f"WAN gossip bytes/s per registry, {label}", gossip / dt / 4, "B/s", how))
                    recs.append(common.record(f"follow-stream bytes/s per registry, {label}", follow / dt / 4, "B/s", how))
                    idle_follow.append(follow / dt)
                    return
                puts = failed = 0
                for w in procs:
                    assert w.popen is not None
                    w.popen.wait(60)
                    _ok, bad, inside = (int(x) for x in w.lines[-1][1].split())
                    puts, failed = puts + inside, failed + bad
                assert watcher.popen is not None
                watcher.popen.wait(60)
                fields = watcher.lines[-1][1].split()
                if len(fields) != 7:
                    common.missing(f"watcher: {watcher.tail()}", args)
                changes, events, resnap = (int(x) for x in fields[:3])
                p50, p99, worst = (float(x) for x in fields[3:6])
                got = changes / window
                short = got < 0.95 * load
                tag = f"{got:.0f} changes/s achieved of {load:.0f} asked" + (" (TARGET NOT REACHED)" if short else "")
                if short:
                    print(f"\n!!! {label}: dc1's mirror took only {got:.1f} changes/s of the {load:.0f}/s asked "
                          f"({puts / window:.1f} PUT/s answered in the window, {failed} failed): the figures below are "
                          f"at {got:.0f}/s, NOT at {load:.0f}/s !!!\n", file=sys.stderr, flush=True)
                how += (f"; two writer processes (one per dc2 registry, 4 connections each) PUT new tags on {POOL} TTL "
                        f"services: {puts / window:.1f} PUT/s answered 200 in the window ({failed} failed in all), "
                        f"{got:.1f} changed services/s heard by a Watch of dc1's mirror ({events / window:.1f} events/s, "
                        f"{resnap} resnapshots)")
                recs.append(common.record(f"changes/s taken by dc1's mirror, {label}", got, "/s", how,
                                          reference=f"target {load:.0f}/s" + (", NOT REACHED" if short else "")))
                recs.append(common.record(f"WAN gossip bytes/s per registry, {tag}", gossip / dt / 4, "B/s", how))
                recs.append(common.record(f"follow-stream bytes/s per registry, {tag}", follow / dt / 4, "B/s", how))
                if got:
                    recs.append(common.record(
                        f"follow-stream bytes per change, all followers, {tag}", (follow / dt - idle_follow[0]) / got, "B",
                        "(follow bytes/s under load - idle) / changes/s heard; dc1's two registries each follow dc2"))
                phow = (f"every tag update heard in the window ({fields[6]} samples): its PUT's send time (in the tag) -> "
                        "the Watch on a.dc1 of datacenter dc2 tells it (from a.dc1's mirror); includes dc2's replication "
                        f"when dc1 follows the other dc2 registry; max {worst:.0f} ms")
                recs.append(common.record(f"propagation dc2 -> dc1 mirror p50, {tag}", p50, "ms", phow))
                recs.append(common.record(f"propagation dc2 -> dc1 mirror p99, {tag}", p99, "ms", phow))

            measure("idle", 0)
            measure("light", LIGHT)  # the same propagation clock at a rate nothing queues behind
            measure("load", args.rate)

            # -- Match req/s local vs remote ------------------------------------------------
            stub = stubs(a1.rpc)
            counts = {"": 0, "dc2": 0}
            spent = {"": 0.0, "dc2": 0.0}
            for _ in range(slices):
                for dc in ("", "dc2"):
                    t0 = time.monotonic()
                    calls = 0
                    while time.monotonic() - t0 < 1.0:
                        try:
                            stub.Match(pb.MatchRequest(group="web", key=f"k{calls}", datacenter=dc), timeout=5)
                        except grpc.RpcError as exc:
                            common.missing(f"Match(datacenter={dc!r}) failed: {exc.details()}", args)
                        calls += 1
                    counts[dc] += calls
                    spent[dc] += time.monotonic() - t0
            how = (f"one client thread, sync grpcio stub, one channel to a.dc1; {slices} x 1 s slices each, "
                   "interleaved; group web: 2 local services, 1 in dc2")
            local, remote = counts[""] / spent[""], counts["dc2"] / spent["dc2"]
            recs.append(common.record("Match req/s, datacenter local", local, "req/s", how))
            recs.append(common.record("Match req/s, datacenter=dc2 (mirror)", remote, "req/s", how,
                                      reference=f"remote/local {remote / local:.2f}"))
        finally:
            stubs.close()
            for n in nodes:
                n.close()
    common.emit(recs, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
