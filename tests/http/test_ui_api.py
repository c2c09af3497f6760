"""The web page's JSON and files (issue 16) on a real HTTP front on loopback: /v1/pool, /v1/ring/<group>,
/v1/ring/<group>/key/<key> (equal to /v1/match and gRPC Match), the timeline's moved shares, blocking
queries waking on a change, the static files' headers and table; and a whole registry whose /v1/pool
shows a second registry alive with an RTT estimate, then failed once it is gone."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from yarl import URL

from registry.catalog import Catalog
from registry.health import Health
from registry.http.front import HttpFront
from registry.http.ui import SECURITY_HEADERS, colour
from registry.memberlist.config import Config
from registry.native import start_native
from registry.offload import Offload
from registry.ring.view import arcs, key_position, moved_share
from registry.serf.agent import SerfAgent
from registry.serf.config import SerfConfig
from registry.server import RegistryServer
from registry.timeline import Timeline
from registry.v1 import registry_pb2 as pb
from registry.v1 import registry_pb2_grpc as pb_grpc
from tests.http.conftest import GROUP, Front, registry_config

WAKE = 1.0  # the bound: the page updates within a second of a change


async def get(client: aiohttp.ClientSession, url: str | URL) -> tuple[int, Any, aiohttp.ClientResponse]:
    """(status, the JSON body or None for another type, the response)."""
    async with client.get(url) as r:
        body = await r.json() if r.content_type == "application/json" else None
        return r.status, body, r


async def wait_until(what: str, check: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = await check()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def test_pool_without_gossip_lists_the_groups(front: Front, client: aiohttp.ClientSession) -> None:
    front.catalog.apply("web-0", {"group": GROUP, "addr": "10.0.0.1:8080", "replicas": "40", "health": "critical"})
    front.catalog.apply_ttl([(GROUP, "t-1", {"addr": "10.1.1.1:1"}), ("api", "t-2", {"addr": "10.1.1.2:1"})])
    status, body, r = await get(client, f"{front.base}/v1/pool")
    assert status == 200 and int(r.headers["X-Registry-Index"]) == body["index"]
    assert body["self"] is None and body["members"] == []
    assert body["groups"] == [{"name": "api", "services": 1, "ttl": 1, "critical": 0},
                              {"name": GROUP, "services": 5, "ttl": 1, "critical": 1}]


async def test_ring_answer_shares_arcs_and_errors(front: Front, client: aiohttp.ClientSession) -> None:
    front.catalog.apply("web-4", {"group": GROUP, "addr": "10.0.0.5:8080", "replicas": "40", "health": "critical"})
    status, body, r = await get(client, f"{front.base}/v1/ring/{GROUP}")
    ring = front.catalog.ring(GROUP)
    version = front.catalog.version(GROUP)
    assert status == 200 and int(r.headers["X-Registry-Index"]) == version == body["version"] == body["index"]
    assert body["group"] == GROUP and body["algorithm"] == "consistent"
    services = body["services"]
    assert [s["id"] for s in services] == [f"web-{i}" for i in range(5)]  # every live one, sorted by id
    shares = ring.shares()
    for s in services:
        assert s["share"] == shares.get(s["id"], 0.0)  # exactly Ring.shares()
        assert s["points"] == (40 if s["id"] != "web-4" else 0) and s["color"] == colour(s["id"])
    critical = services[4]
    assert (critical["health"], critical["on_ring"], critical["share"]) == ("critical", False, 0.0)
    # the arcs: exact (200 entries), each run's length summed per owner is its share
    assert body["arcs"]["exact"] is True
    runs = body["arcs"]["runs"]
    assert [r for r in runs] == [[start, [s["id"] for s in services].index(arcs(ring).names[o])]
                                 for start, o in arcs(ring).runs]
    summed = [0.0] * len(services)
    for i, (start, owner) in enumerate(runs):
        end = runs[i + 1][0] if i + 1 < len(runs) else runs[0][0] + 1.0
        summed[owner] += end - start
    assert summed == pytest.approx([shares.get(s["id"], 0.0) for s in services], abs=1e-9)
    # a group with no live service: the Members 404, body and all
    _, members_404, _ = await get(client, f"{front.base}/v1/members/nope")
    status, body, _ = await get(client, f"{front.base}/v1/ring/nope")
    assert status == 404 and body == members_404
    for bad in ("1", "5000", "x", "-64"):
        status, body, _ = await get(client, f"{front.base}/v1/ring/{GROUP}?bins={bad}")
        assert status == 400 and body["code"] == "INVALID_ARGUMENT" and "bins" in body["error"], body


async def test_key_answers_equal_match_and_grpc_match(front: Front, client: aiohttp.ClientSession) -> None:
    async with grpc.aio.insecure_channel(front.grpc_addr) as ch:
        stub = pb_grpc.RegistryStub(ch)  # type: ignore[no-untyped-call]
        for i in range(200):
            key, n = f"user-{i}", 1 + i % 4
            status, ui, _ = await get(client, f"{front.base}/v1/ring/{GROUP}/key/{key}?n={n}")
            assert status == 200
            _, match, _ = await get(client, f"{front.base}/v1/match/{GROUP}/{key}?n={n}")
            reply = await stub.Match(pb.MatchRequest(group=GROUP, key=key, n=n), timeout=10)
            assert ui["services"] == match["services"]
            assert [s["id"] for s in ui["services"]] == [s.id for s in reply.services]
            assert ui["position"] == key_position("consistent", key) and ui["key"] == key
            start, end = ui["arc"]  # the owner's arc holds the key
            assert start <= ui["position"] < end or (end <= start and not end <= ui["position"] < start)
    status, body, _ = await get(client, f"{front.base}/v1/ring/{GROUP}/key/k?n=1001")
    _, match, _ = await get(client, f"{front.base}/v1/match/{GROUP}/k?n=1001")
    assert (status, body) == (400, match)


async def test_timeline_moved_shares(front: Front, client: aiohttp.ClientSession) -> None:
    before = front.catalog.ring(GROUP)
    front.catalog.apply("joiner", {"group": GROUP, "addr": "10.0.0.9:1", "replicas": "40"})
    after = front.catalog.ring(GROUP)
    front.catalog.apply("web-1", {"group": GROUP, "addr": "10.0.0.2:8080", "replicas": "40", "health": "critical"})
    off = front.catalog.ring(GROUP)
    front.catalog.apply("web-2", None)
    gone = front.catalog.ring(GROUP)
    _, body, _ = await get(client, f"{front.base}/v1/ring/{GROUP}")
    v = front.catalog.version(GROUP)
    entries = body["timeline"]
    assert [(e["version"], e["versions"], e["joined"], e["left"], e["updated"]) for e in entries] == [
        (v, [v, v], [], ["web-2"], []), (v - 1, [v - 1, v - 1], [], [], ["web-1"]),
        (v - 2, [v - 2, v - 2], ["joiner"], [], [])]
    assert entries[0]["moved"] == moved_share(off, gone) == pytest.approx(off.shares()["web-2"], abs=1e-15)
    assert entries[1]["moved"] == moved_share(after, off) == pytest.approx(after.shares()["web-1"], abs=1e-15)
    assert entries[2]["moved"] == moved_share(before, after) == pytest.approx(after.shares()["joiner"], abs=1e-15)
    assert all(e["at_ms"] > 1_600_000_000_000 for e in entries)
    for i in range(25):  # at most 20 entries, newest first
        front.catalog.apply(f"x-{i}", {"group": GROUP, "addr": "10.0.0.9:1", "replicas": "4"})
    _, body, _ = await get(client, f"{front.base}/v1/ring/{GROUP}")
    assert [e["joined"] for e in body["timeline"]] == [[f"x-{i}"] for i in range(24, 4, -1)]
    # every service gone: the timeline stays for when the group comes back
    front.catalog.apply_many([(s.id, None) for s in front.catalog.members(GROUP)])
    assert (await get(client, f"{front.base}/v1/ring/{GROUP}"))[0] == 404
    front.catalog.apply("back", {"group": GROUP, "addr": "10.0.0.9:1", "replicas": "4"})
    _, body, _ = await get(client, f"{front.base}/v1/ring/{GROUP}")
    entries = body["timeline"]
    assert [(e["joined"], len(e["left"]), e["moved"]) for e in entries[:2]] == [(["back"], 0, 1.0), ([], 30, 1.0)]
    assert entries[2]["joined"] == ["x-24"] and len(entries) == 20


def test_timeline_coalesces_changes_waiting_for_the_worker() -> None:
    """Big rings (here: every ring) go to the worker; changes arriving before it starts merge into one entry."""
    catalog = Catalog()
    for i in range(3):
        catalog.apply(f"s-{i}", {"group": "g", "replicas": "50"})
    offload = Offload()
    timeline = Timeline(catalog, offload, inline_points=0)
    try:
        release = threading.Event()
        offload.submit("blocker", lambda: release.wait(30))
        before = catalog.ring("g")
        first = catalog.version("g") + 1
        catalog.apply("a", {"group": "g", "replicas": "50"})
        catalog.apply("b", {"group": "g", "replicas": "50"})
        catalog.apply("a", None)  # joined and left inside the entry: in neither list
        catalog.apply("s-0", {"group": "g", "replicas": "50", "health": "warning"})
        head = catalog.ring("g")
        [entry] = timeline.entries("g")
        assert entry["moved"] is None and entry["versions"] == [first, first + 3]
        future = timeline.pending("g")
        assert future is not None
        release.set()
        future.result(30)
        [entry] = timeline.entries("g")
        assert (entry["joined"], entry["left"], entry["updated"]) == (["b"], [], ["s-0"])
        assert entry["moved"] == moved_share(before, head) == pytest.approx(head.shares()["b"], abs=1e-15)
        catalog.apply("b", None)  # the worker took the entry: a new one
        deadline = time.monotonic() + 30
        while timeline.entries("g")[0]["moved"] is None:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert [e["versions"] for e in timeline.entries("g")] == [[first + 4, first + 4], [first, first + 3]]
    finally:
        timeline.close()
        offload.close()


async def test_big_ring_is_drawn_on_the_worker(front: Front, client: aiohttp.ClientSession) -> None:
    """More than INLINE_POINTS entries: sampled arcs, shares still exact, computed on the worker thread."""
    front.catalog.apply_many([(f"big-{i}", {"group": "big", "addr": "10.2.0.1:1"}) for i in range(14)])
    ring = front.catalog.ring("big")
    assert ring.point_count > front.http.ui.inline_points
    pending = front.http.timeline.pending("big")  # the join's moved share: on the worker too
    if pending is not None:
        await asyncio.wrap_future(pending)
    ran = front.http.offload.ran
    status, body, _ = await get(client, f"{front.base}/v1/ring/big?bins=360")
    assert status == 200 and front.http.offload.ran == ran + 1
    assert body["arcs"]["exact"] is False and len(body["arcs"]["runs"]) <= 360
    assert {s["id"]: s["share"] for s in body["services"]} == ring.shares()
    await get(client, f"{front.base}/v1/ring/big?bins=360")
    assert front.http.offload.ran == ran + 1  # cached per (group, version, bins)
    [jobs] = [m for m in front.http.metrics() if m.name == "registry_http_ui_jobs_total"]
    assert ({"outcome": "ran"}, float(ran + 1)) in jobs.samples
    # several pages asking at once for a new version share one drawing
    front.catalog.apply("big-0", None)
    pending = front.http.timeline.pending("big")
    if pending is not None:
        await asyncio.wrap_future(pending)
    ran, superseded = front.http.offload.ran, front.http.offload.superseded
    answers = await asyncio.gather(*[get(client, f"{front.base}/v1/ring/big?bins=360") for _ in range(6)])
    assert [(a[0], len(a[1]["services"])) for a in answers] == [(200, 13)] * 6
    moved = moved_share(ring, front.catalog.ring("big"))  # computed on the worker too (a 4096-point leave)
    assert answers[0][1]["timeline"][0] == {**answers[0][1]["timeline"][0], "left": ["big-0"], "moved": moved}
    assert moved == pytest.approx(ring.shares()["big-0"], abs=1e-15)
    assert (front.http.offload.ran, front.http.offload.superseded) == (ran + 1, superseded)


async def blocked(client: aiohttp.ClientSession, url: str) -> tuple[int, float]:
    async with client.get(url) as r:
        await r.read()
        return int(r.headers["X-Registry-Index"]), time.monotonic()


async def test_blocking_ring_and_pool_wake_on_a_change(front: Front, client: aiohttp.ClientSession) -> None:
    for i, route in enumerate((f"/v1/ring/{GROUP}", "/v1/pool", f"/v1/ring/{GROUP}/key/k")):
        _, _, r = await get(client, f"{front.base}{route}")
        index = int(r.headers["X-Registry-Index"])
        parked = front.http.changes.parked
        query = asyncio.ensure_future(blocked(client, f"{front.base}{route}?index={index}&wait=30s"))

        async def is_parked(p: int = parked) -> bool:
            return front.http.changes.parked > p

        await wait_until("the query parked", is_parked)
        changed_at = time.monotonic()
        front.catalog.apply("late", None if i % 2 else {"group": GROUP, "addr": "10.9.9.9:1"})
        new_index, answered_at = await query
        assert new_index > index and answered_at - changed_at < WAKE, (route, answered_at - changed_at)
    # at the wait, the same index
    version = front.catalog.version(GROUP)
    _, _, r = await get(client, f"{front.base}/v1/ring/{GROUP}?index={version}&wait=100ms")
    assert int(r.headers["X-Registry-Index"]) == version


async def test_static_files_headers_and_table(front: Front, client: aiohttp.ClientSession,
                                              tmp_path: Path) -> None:
    static = tmp_path / "static"
    static.mkdir()
    (static / "index.html").write_text("<!doctype html><title>t</title>")
    (static / "app.js").write_text("'use strict';")
    (static / ".hidden.js").write_text("x")
    (static / "odd name.js").write_text("x")
    (static / "notes.exe").write_text("x")
    (tmp_path / "secret.js").write_text("SECRET")
    front.http.ui.static_dir = static
    status, _, r = await get(client, f"{front.base}/ui/app.js")
    assert status == 200 and r.headers["Content-Type"] == "text/javascript; charset=utf-8"
    for name, value in SECURITY_HEADERS.items():
        assert r.headers[name] == value
    assert r.headers["Content-Security-Policy"] == "default-src 'self'"
    # the table was read at the first request: the folder can go, the files are still served
    static.rename(tmp_path / "moved")
    async with client.get(f"{front.base}/") as r:
        assert r.status == 200 and await r.text() == "<!doctype html><title>t</title>"
        assert r.headers["Content-Type"] == "text/html; charset=utf-8" and r.headers["X-Content-Type-Options"] == "nosniff"
    for path in ("/ui/.hidden.js", "/ui/odd%20name.js", "/ui/notes.exe", "/ui/nope.js", "/ui/../secret.js",
                 "/ui/%2e%2e/secret.js", "/ui/%2e%2e%2fsecret.js", "/ui/..%2F..%2Fsecret.js", "/ui/%2E%2E%5Csecret.js",
                 "/ui/", "/ui/moved/app.js"):
        status, body, _ = await get(client, URL(f"{front.base}{path}", encoded=True))
        assert status == 404 and body["code"] == "NOT_FOUND" and "SECRET" not in str(body), (path, body)


async def test_the_package_page_is_served(front: Front, client: aiohttp.ClientSession) -> None:
    folder = Path(__file__).parents[2] / "registry" / "http" / "static"
    files = sorted(p.name for p in folder.iterdir() if p.is_file())
    assert "index.html" in files
    async with client.get(f"{front.base}/") as r:
        assert r.status == 200 and await r.read() == (folder / "index.html").read_bytes()
        assert r.headers["Content-Security-Policy"] == "default-src 'self'"
    for name in files:
        async with client.get(f"{front.base}/ui/{name}") as r:
            assert r.status == 200 and await r.read() == (folder / name).read_bytes(), name


async def test_pool_of_a_registry_shows_members_rtt_and_failure(client: aiohttp.ClientSession) -> None:
    """A registry with -http-addr and a second one joining it: both alive with an RTT estimate, then the
    second killed (no leave): a query blocked on the pool's index wakes, and it shows failed."""
    a = RegistryServer(registry_config("ui-a", tags={"zone": "z1"}))
    await a.start()
    b = RegistryServer(registry_config("ui-b", http_addr=None, registries=(a.gossip_address,)))
    plain = SerfAgent(SerfConfig(name="plain", tags={"role": "x"},
                                 memberlist=Config.fast(bind_addr="127.0.0.1", bind_port=0)))
    try:
        await b.start()
        base = f"http://{a.http_address}"

        async def both_with_rtt() -> dict[str, Any] | None:
            _, body, _ = await get(client, f"{base}/v1/pool")
            rows = {m["name"]: m for m in body["members"]}
            ok = set(rows) == {"ui-a", "ui-b"} and rows["ui-b"]["rtt_ms"] is not None
            return body if ok else None

        body = await wait_until("ui-b with an rtt estimate", both_with_rtt)
        assert body["self"] == "ui-a"
        rows = {m["name"]: m for m in body["members"]}
        for name, server in (("ui-a", a), ("ui-b", b)):
            row = rows[name]
            assert (row["status"], row["role"], row["group"], row["health"]) == ("alive", "registry",
                                                                                 "registry-group", "passing")
            assert row["addr"] == server.gossip_address and row["service_addr"] == server.grpc_address
            assert row["protocol"] >= 2 and row["tags"]["id"] == name
        assert rows["ui-a"]["rtt_ms"] is None and 0 < rows["ui-b"]["rtt_ms"] < 1000
        assert rows["ui-a"]["tags"]["zone"] == "z1"
        assert {"name": "registry-group", "services": 2, "ttl": 0, "critical": 0} in body["groups"]
        # a Serf member of no group changes no catalog: the member event alone wakes the pool's query
        catalog_changes, before = a._http.changes.changes, body["index"]
        query = asyncio.ensure_future(blocked(client, f"{base}/v1/pool?index={before}&wait=60s"))
        await plain.start()
        await plain.join([a.gossip_address])
        new_index, _ = await asyncio.wait_for(query, 30)
        assert new_index > before and a._http.changes.changes == catalog_changes
        _, body, _ = await get(client, f"{base}/v1/pool")
        row = next(m for m in body["members"] if m["name"] == "plain")
        assert (row["role"], row["group"], row["health"], row["tags"]) == ("service", None, None, {"role": "x"})
        index = body["index"]
        query = asyncio.ensure_future(blocked(client, f"{base}/v1/pool?index={index}&wait=60s"))
        await asyncio.sleep(0)
        await b.close()  # gone without a leave: failed
        new_index, _ = await query
        assert new_index > index

        async def failed() -> bool:
            _, body, _ = await get(client, f"{base}/v1/pool")
            return any(m["name"] == "ui-b" and m["status"] == "failed" for m in body["members"])

        await wait_until("ui-b failed", failed)
    finally:
        with contextlib.suppress(Exception):
            await plain.shutdown()
        await b.close()
        await a.stop()


async def test_chash_ring_answers(client: aiohttp.ClientSession) -> None:
    """A "chash" registry: the same routes, its algorithm named, keys equal to Match, shares exact."""
    catalog = Catalog(algorithm="chash")
    for i in range(4):
        catalog.apply(f"c-{i}", {"group": "g", "addr": f"10.3.0.{i}:1", "replicas": "20"})
    health = Health()
    grpc_front = await start_native(catalog, "127.0.0.1:0", health=health)
    http = HttpFront(grpc_front.core, health, ttl=lambda: None)
    await http.start("127.0.0.1", 0)
    try:
        base = f"http://127.0.0.1:{http.port}"
        status, body, _ = await get(client, f"{base}/v1/ring/g")
        ring = catalog.ring("g")
        assert status == 200 and body["algorithm"] == "chash" and body["arcs"]["exact"] is True
        assert {s["id"]: s["share"] for s in body["services"]} == ring.shares()
        for i in range(50):
            _, ui, _ = await get(client, f"{base}/v1/ring/g/key/k{i}?n=2")
            _, match, _ = await get(client, f"{base}/v1/match/g/k{i}?n=2")
            assert ui["services"] == match["services"] and ui["position"] == key_position("chash", f"k{i}")
        catalog.apply("c-9", {"group": "g", "addr": "10.3.0.9:1"})
        _, body, _ = await get(client, f"{base}/v1/ring/g")
        assert body["timeline"][0]["joined"] == ["c-9"]
        assert body["timeline"][0]["moved"] == moved_share(ring, catalog.ring("g"))
    finally:
        await http.stop()
        await grpc_front.stop(None)
