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
  split into gossip (the WAN pool) and follow (Watch streams), idle and while dc2 takes 100 TTL writes/s
  (updates of 50 entries in turn, alternating weight: each a catalog change dc1's mirrors must follow);
* Match req/s on one dc1 registry from one client thread (sync gRPC stub, one channel): the group
  local (datacenter="") and the same group in dc2 (datacenter="dc2", answered from dc1's mirror),
  interleaved in 1 s slices so load drift hits both alike.
"""

from __future__ import annotations

import base64
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


#: The writer child: `rate` TTL updates/s for `seconds` into the HTTP API at `port`, over `lanes` keep-alive
#: connections (entries c0..c49 in turn, weight alternating: each one a catalog change); prints "ok failed".
#: A process of its own: in the benchmark's process the proxies' threads held the GIL and it reached ~20/s.
WRITER_SRC = r"""
import http.client, json, sys, threading, time
port, rate, seconds, lanes = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
counts = [0, 0]
lock = threading.Lock()
def lane(k):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    start, i = time.monotonic(), 0
    while time.monotonic() - start < seconds:
        delay = start + i * lanes / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        n = k + i * lanes
        # bytes: headers and body in one segment (a str body went in a second one: Nagle vs delayed ACK)
        body = json.dumps({"addr": "10.7.0.%d:80" % (n % 50), "ttl": "300s", "weight": 1 + (n // 50) % 2}).encode()
        try:
            conn.request("PUT", "/v1/services/churn/c%d" % (n % 50), body, {"Content-Type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            ok = resp.status == 200
        except Exception:
            ok = False
            conn.close()
        with lock:
            counts[0 if ok else 1] += 1
        i += 1
threads = [threading.Thread(target=lane, args=(k,)) for k in range(lanes)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(counts[0], counts[1], flush=True)
"""


def main() -> int:
    p = common.base_parser(__doc__ or "")
    p.add_argument("--profile", default="fast", choices=["fast", "lan"])
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
            for n in nodes:
                common.wait_for(lambda n=n: ids(stubs, n, "registry-group") >= {n.ident}, 60, 0.1, f"{n.ident}.{n.dc}")
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

            # -- WAN bytes ------------------------------------------------------------------
            idle_follow: list[float] = []

            def rate(label: str, load: float) -> None:
                child = None
                ok = 0
                if load:
                    child = g.add(common.Proc("writer", [sys.executable, "-c", WRITER_SRC, str(a2.http_port), str(load),
                                                         str(window + 3.0), "4"], env=common.repo_env()))
                    time.sleep(2.0)  # the churn group exists everywhere before the window opens
                g0, f0 = wan_bytes(nodes)
                t0 = time.monotonic()
                time.sleep(window)
                g1, f1 = wan_bytes(nodes)
                dt = time.monotonic() - t0
                achieved = ""
                if child is not None:
                    assert child.popen is not None
                    child.popen.wait(60)
                    ok, failed = (int(x) for x in child.lines[-1][1].split())
                    achieved = f"; {ok / (window + 3.0):.0f} writes/s achieved into a.dc2 ({failed} failed)"
                how = (f"bytes through the 8 proxies (WAN gossip UDP+TCP, follow streams) over {dt:.1f}s / 4 "
                       f"registries; each byte counted once{achieved}")
                recs.append(common.record(f"WAN gossip bytes/s per registry, {label}", (g1 - g0) / dt / 4, "B/s", how))
                recs.append(common.record(f"follow-stream bytes/s per registry, {label}", (f1 - f0) / dt / 4, "B/s", how))
                idle_follow.append((f1 - f0) / dt)
                if child is not None and ok:
                    per_change = ((f1 - f0) / dt - idle_follow[0]) / (ok / (window + 3.0))
                    recs.append(common.record(
                        "follow-stream bytes per change, all followers", per_change, "B",
                        "(follow bytes/s under load - idle) / writes/s achieved; dc1's two registries each follow dc2: "
                        "x 100 = the follow bytes/s at 100 changes/s this machine could not drive (the registry took "
                        "~40 PUT/s here, load 5-7 on 2 cores)"))

            rate("idle", 0)
            rate("writer asking 100 changes/s of dc2", 100.0)

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
