"""The adapter host keeps the registry safe from its adapters (issue 18): a registry process whose
adapter hangs (time.sleep forever; a busy loop) answers Match over gRPC with a p99 within a bound of a
registry without adapters, measured in one interleaved run; an adapter that raises is logged loudly
and run again. In-process: imports are folded and flushed on the registry's loop, exports coalesced."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pytest

from registry.adapters.base import AdapterContext, CatalogView, ExternalService
from registry.adapters.host import AdapterHost
from registry.catalog import Catalog
from registry.client import RpcClient
from registry.register import Register
from tests.e2e.helpers import wait_for
from tests.footprint import ModulesChild, modules_child

BASE = ["-bind", "127.0.0.1:0", "-addr", "127.0.0.1:0"]
ROWS = 700


@pytest.fixture
def hang_entry_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A real entry point for tests.adapters.hang_adapter, seen by the child (PYTHONPATH)."""
    dist = tmp_path / "hang_adapter-0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: hang-adapter\nVersion: 0\n")
    (dist / "entry_points.txt").write_text("[registry.adapters]\nhang = tests.adapters.hang_adapter:HangAdapter\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    yield


def p99(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=100)[98]


def services(child: ModulesChild, client: RpcClient) -> None:
    """The hang adapter's first import is there: it ran (and is now stuck)."""
    wait_for(lambda: client.members("hang"), 30, what="the adapter's import")


def pool_of_two(c: RpcClient) -> bool:
    return len(c.members("registry-group")) == 2


def gossip_delay(via: str, seen_by: RpcClient, ident: str) -> float:
    """Seconds from a service's join through gossip address ``via`` until ``seen_by`` lists it (its group
    is its id): how long the pool's gossip takes to carry a join from one registry to the other."""
    reg = Register(ident, "127.0.0.1:0", "", via, ident, "127.0.0.1:1", profile="fast")
    t = time.perf_counter()
    reg.start()
    try:
        wait_for(lambda: seen_by.members(ident), 30, interval=0.005, what=f"{ident} seen")
        return time.perf_counter() - t
    finally:
        reg.stop()


@pytest.mark.parametrize(("mode", "isolate"), [("sleep", "thread"), ("busy", "thread"), ("busy", "process")])
def test_hanging_adapter_leaves_match_p99_and_gossip_within_bound(mode: str, isolate: str,
                                                                   hang_entry_point: None) -> None:
    """Two registries in one pool, one with a hung adapter: Match p99 on each (interleaved), and a service's
    join carried by gossip each way (through the hung one to the plain one and back)."""
    with modules_child("-id", "plain", *BASE) as plain, \
            modules_child("-id", "hung", *BASE, "-registries", plain.started["gossip"],
                          "-adapter", f"hang:mode={mode},isolate={isolate}") as hung:
        a, b = RpcClient(plain.started["grpc"], timeout=10.0), RpcClient(hung.started["grpc"], timeout=10.0)
        try:
            services(hung, b)
            assert [s.origin for s in b.members("hang")] == ["hang"]
            for c in (a, b):  # both serve the pool's registry group of two: the same work per Match
                wait_for(partial(pool_of_two, c), 30, what="registry-group of two")
            times: dict[str, list[float]] = {"plain": [], "hung": []}
            for i in range(ROWS):  # interleaved: the machine's load falls on both alike
                for name, c in (("plain", a), ("hung", b)):
                    t = time.perf_counter()
                    c.match("registry-group", f"k{i}")
                    times[name].append(time.perf_counter() - t)
            base, hang = p99(times["plain"]), p99(times["hung"])
            print(f"Match p99 plain {base * 1e3:.2f} ms, with a {mode} adapter on a {isolate} {hang * 1e3:.2f} ms")
            # A sleeping thread costs nothing; a busy one takes the GIL for up to a switch interval (5 ms) at
            # each of the loop's few hand-overs per call: bounded, never a stall.
            # On a thread (a convoy on the GIL; 211 ms against 48 ms seen once at load 10) the bound is "no
            # stall"; in a child the registry's own threads are untouched, so the bound is tight.
            assert hang <= max(3 * base, base + (0.5 if isolate == "thread" else 0.05)), (base, hang)
            # gossip: a join through the hung registry reaches the plain one as fast as the other way round
            into_hung = [gossip_delay(plain.started["gossip"], b, f"via-plain-{i}") for i in range(3)]
            out_of_hung = [gossip_delay(hung.started["gossip"], a, f"via-hung-{i}") for i in range(3)]
            print(f"join seen by the other registry: via plain {[round(x * 1e3) for x in into_hung]} ms, "
                  f"via the {mode}-adapter one {[round(x * 1e3) for x in out_of_hung]} ms")
            assert min(out_of_hung) <= max(3 * min(into_hung), min(into_hung) + 0.5), (into_hung, out_of_hung)
            assert {s.id for s in a.members("registry-group")} == {"plain", "hung"}  # nobody marked failed
        finally:
            a.close()
            b.close()


def test_raising_adapter_is_logged_and_run_again(hang_entry_point: None) -> None:
    with modules_child("-id", "r", *BASE, "-adapter", "hang:mode=raise,isolate=thread") as child:
        client = RpcClient(child.started["grpc"], timeout=10.0)
        try:
            # runs at 0, 0.5, 1.5 s (backoff doubling): the third run's import shows two restarts
            wait_for(lambda: "raise-3" in {s.id for s in client.members("hang")}, 30, what="run 3")
            failed = [x for x in child.log if "adapter hang failed; running it again" in x]
            assert len(failed) >= 2 and "fails on purpose" in child.text(), child.text()
            assert client.match("hang", "k").origin == "hang"
        finally:
            client.close()


class Recorder:
    """An in-process adapter: imports what it is told, records the export views it gets."""

    def __init__(self) -> None:
        self.name = "rec"
        self.views: list[CatalogView] = []
        self.ctx: AdapterContext | None = None

    async def run(self, ctx: AdapterContext) -> None:
        self.ctx = ctx
        async for view in ctx.exports():
            self.views.append(view)
            await asyncio.sleep(0.3)  # a slow exporter: changes pile up meanwhile


async def test_imports_fold_and_exports_coalesce() -> None:
    catalog = Catalog()
    rec = Recorder()
    host = AdapterHost(catalog, [rec], datacenter="dc1", registry_id="r1")
    host.start()
    try:
        await asyncio.wait_for(_until(lambda: rec.ctx is not None and rec.views), 10)
        assert rec.ctx is not None
        imports = rec.ctx.imports
        for i in range(500):  # 500 calls from another thread: one or a few catalog batches
            await asyncio.to_thread(imports.upsert, ExternalService("g", f"s{i % 50}", f"10.0.0.{i % 50}:1"))
        await _until(lambda: len(catalog.members("g")) == 50)
        versions = catalog.version("g")
        assert versions < 500, versions
        imports.replace_all([ExternalService("g", "only", "10.9.9.9:1")])
        await _until(lambda: [s.id for s in catalog.members("g")] == ["only"])
        assert catalog.members("g")[0].origin == "rec"
        # a resync then a delete of one it holds, folded into one flush: the delete is not lost
        imports.replace_all([ExternalService("g", "only", "10.9.9.9:1"), ExternalService("g", "two", "10.9.9.8:1")])
        await _until(lambda: len(catalog.members("g")) == 2)
        # from the loop's thread, so both land in one flush (it runs on this loop, after this line)
        imports.replace_all([ExternalService("g", "only", "10.9.9.9:1"), ExternalService("g", "two", "10.9.9.8:1")])
        imports.delete("g", "only")
        await _until(lambda: [s.id for s in catalog.members("g")] == ["two"], 5)
        imports.replace_all([ExternalService("g", "only", "10.9.9.9:1")])
        await _until(lambda: [s.id for s in catalog.members("g")] == ["only"])
        await _until(lambda: any([s.id for s in v.services] == ["only"] for v in rec.views))
        # 500+ changes while the exporter slept 0.3 s per view: a few views, never one per change
        assert len(rec.views) < 30, len(rec.views)
        m = {x.name: list(x.samples) for x in host.metrics()}
        assert m["registry_external_services"] == [({"adapter": "rec", "group": "g"}, 1.0)], m
        assert m["registry_adapter_running"] == [({"adapter": "rec"}, 1.0)], m
        assert m["registry_adapter_restarts_total"] == [({"adapter": "rec"}, 0.0)], m
    finally:
        host.stop()
    assert catalog.members("g") == []  # a stopped adapter's imports go with it


async def _until(pred: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)
