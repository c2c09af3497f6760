"""What an adapter can make a registry hold is bounded (issue 18, the house rule on remote input): the real
`AdapterHost` on this loop, a real `Catalog`, and a tiny adapter on the host's own thread that floods it.

Per adapter: services in all and per group, the sizes of group, id, addr and tags (the TTL services'
numbers, `registry.limits`), checked before anything is buffered; a refused service is not half-applied,
it is counted by reason (`registry_adapter_rejected_total{adapter,reason}`) and a burst of refusals
logs one warning. A resync over the bounds keeps the same services whatever order it lists them in.
The pending calls stay bounded while the registry's loop does not flush (blocked here on purpose).
Small bounds keep the test fast; the defaults are checked to be the shared numbers."""

from __future__ import annotations

import asyncio
import logging
import queue
import random
from collections.abc import AsyncIterator, Callable

import pytest

from registry import limits
from registry.adapters.base import ExternalService, Imports
from registry.adapters.host import AdapterHost, ImportLimits, Rejected
from registry.adapters.imports import BURST_QUIET, AdapterImports
from registry.catalog import Catalog
from registry.metrics import render
from registry.ttl.entry import Limits

LIMITS = ImportLimits(max_services=50, max_per_group=20)

Job = Callable[[Imports], None]


class Flood:
    """A tiny adapter: runs each job the test hands it, on the adapter's own thread, in order."""

    def __init__(self) -> None:
        self.name = "flood"
        self.jobs: queue.Queue[Job] = queue.Queue()
        self.done: queue.Queue[None] = queue.Queue()

    async def run(self, ctx: object) -> None:
        imports: Imports = ctx.imports  # type: ignore[attr-defined]
        while True:
            try:
                job = self.jobs.get_nowait()
            except queue.Empty:
                await asyncio.sleep(0.005)
                continue
            job(imports)
            self.done.put(None)


@pytest.fixture
async def flooded(caplog: pytest.LogCaptureFixture) -> AsyncIterator[tuple[Catalog, AdapterHost, Flood]]:
    caplog.set_level(logging.WARNING, logger="registry.adapters")
    catalog = Catalog()
    flood = Flood()
    host = AdapterHost(catalog, [flood], datacenter="dc1", registry_id="r1", limits=LIMITS)
    host.start()
    yield catalog, host, flood
    host.stop()


async def run(flood: Flood, job: Job) -> None:
    flood.jobs.put(job)
    await asyncio.to_thread(flood.done.get, timeout=30)


async def until(pred: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not pred():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


def svc(group: str, id_: str, addr: str = "10.0.0.1:80", **tags: str) -> ExternalService:
    return ExternalService(group, id_, addr, tags=tags)


def ids(catalog: Catalog, group: str) -> list[str]:
    return [s.id for s in catalog.members(group)]


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "registry.adapters.flood"
            and r.levelno == logging.WARNING]


def imports_of(host: AdapterHost) -> AdapterImports:
    return host.runners[0].imports


def test_defaults_are_the_shared_numbers() -> None:
    d, ttl = ImportLimits(), Limits()
    assert (d.max_services, d.max_per_group) == (limits.MAX_SERVICES, limits.MAX_PER_GROUP) == (100_000, 10_000)
    assert (d.max_name_bytes, d.max_addr_bytes, d.max_tags_bytes) == (
        ttl.max_name_bytes, ttl.max_addr_bytes, ttl.max_tags_bytes) == (128, 256, 512)
    assert (ttl.max_entries, ttl.max_per_group) == (d.max_services, d.max_per_group)


async def test_a_flood_is_bounded_refused_whole_counted_and_logged_once_per_burst(
        flooded: tuple[Catalog, AdapterHost, Flood], caplog: pytest.LogCaptureFixture) -> None:
    catalog, host, flood = flooded
    imports = imports_of(host)
    now = [1000.0]
    imports.clock = lambda: now[0]

    def group_flood(im: Imports) -> None:
        for i in range(100):
            im.upsert(svc("g", f"s{i:03}", f"10.0.0.{i}:80"))

    await run(flood, group_flood)
    await until(lambda: len(ids(catalog, "g")) == 20)
    assert ids(catalog, "g") == [f"s{i:03}" for i in range(20)]  # arrival order: the first 20
    assert imports.rejected == {Rejected.GROUP_FULL: 80}

    def spread(im: Imports) -> None:  # 30 more fit in all (50), in groups h0.. of 5 each
        for g in range(10):
            for i in range(5):
                im.upsert(svc(f"h{g}", f"x{i}"))

    await run(flood, spread)
    await until(lambda: sum(len(ids(catalog, g)) for g in catalog.groups()) == 50)
    assert catalog.groups() == ["g", "h0", "h1", "h2", "h3", "h4", "h5"]
    assert imports.rejected[Rejected.ADAPTER_FULL] == 20
    lines = warnings(caplog)
    assert len(lines) == 1 and "refused g/s020 (group_full" in lines[0], lines  # one burst, one line

    # full, yet a service it holds may change, and one gone makes room for one more
    def change_and_swap(im: Imports) -> None:
        im.upsert(svc("g", "s000", "10.9.9.9:80"))
        im.delete("g", "s001")
        im.upsert(svc("g", "late"))

    await run(flood, change_and_swap)
    await until(lambda: "late" in ids(catalog, "g"))
    assert {s.id: s.addr for s in catalog.members("g")}["s000"] == "10.9.9.9:80" and "s001" not in ids(catalog, "g")

    # sizes (the TTL services' bounds): each over by one byte refused, the rest of the call applied
    def sizes(im: Imports) -> None:
        im.delete("h5", "x0")
        im.delete("h5", "x1")
        im.delete("h5", "x2")
        im.upsert(svc("h5", "i" * 129))
        im.upsert(svc("h5", "big-addr", "a" * 257))
        im.upsert(svc("h5", "big-tags", k="v" * 512))
        im.upsert(svc("g" * 129, "x"))
        im.upsert(svc("h5", "i" * 128, "a" * 256, k="v" * 511))  # every size at its bound: held

    now[0] += BURST_QUIET  # a new burst: one more line
    await run(flood, sizes)
    await until(lambda: "i" * 128 in ids(catalog, "h5"))
    assert ids(catalog, "h5") == ["i" * 128, "x3", "x4"]
    assert imports.rejected == {Rejected.GROUP_FULL: 80, Rejected.ADAPTER_FULL: 20, Rejected.NAME: 2,
                                Rejected.ADDR: 1, Rejected.TAGS: 1}
    lines = warnings(caplog)
    assert len(lines) == 2 and "refused h5/" + "i" * 129 + " (name" in lines[1], lines
    text = render(host.metrics())
    for reason, n in (("group_full", 80), ("adapter_full", 20), ("name", 2), ("addr", 1), ("tags", 1)):
        assert f'registry_adapter_rejected_total{{adapter="flood",reason="{reason}"}} {n}' in text, text


async def test_a_resync_over_the_bounds_keeps_the_same_services_whatever_their_order(
        flooded: tuple[Catalog, AdapterHost, Flood], caplog: pytest.LogCaptureFixture) -> None:
    catalog, _host, flood = flooded
    given = [svc(g, f"s{i:02}") for g in ("a", "b", "c", "d") for i in range(30)]  # 120: 4 groups of 30
    given.append(svc("b", "x" * 200))  # refused for its size, not counted against the bounds
    want = {"a": [f"s{i:02}" for i in range(20)], "b": [f"s{i:02}" for i in range(20)],
            "c": [f"s{i:02}" for i in range(10)]}  # per group the first 20 by id, then the first 50 in all
    for seed in (1, 2):
        order = list(given)
        random.Random(seed).shuffle(order)
        await run(flood, lambda im, order=order: im.replace_all(order))  # type: ignore[misc]
        await until(lambda: {g: ids(catalog, g) for g in catalog.groups()} == want)
    lines = warnings(caplog)
    assert len(lines) == 1, lines  # the second resync is the same burst
    assert "a resync of 121 services is over its bounds: kept 50" in lines[0], lines
    assert "refused 71 (adapter_full 50, group_full 20, name 1; the first: b/" in lines[0], lines


async def test_pending_calls_stay_bounded_while_the_registry_loop_does_not_flush(
        flooded: tuple[Catalog, AdapterHost, Flood]) -> None:
    catalog, host, flood = flooded
    imports = imports_of(host)
    def keep(im: Imports) -> None:
        for i in range(10):
            im.upsert(svc("g", f"keep{i}"))

    await run(flood, keep)
    await until(lambda: len(ids(catalog, "g")) == 10)

    def churn(im: Imports) -> None:
        for i in range(5000):  # fresh ids, each added and removed: nothing the catalog has
            im.upsert(svc("g", f"c{i}"))
            im.delete("g", f"c{i}")
        for i in range(5000):  # deletes of ids never held
            im.delete("g", f"never{i}")
        for i in range(5000):  # 40 more fit; the rest refused before buffering
            im.upsert(svc(f"x{i % 7}", f"n{i}"))
        for i in range(10):  # and the ones the catalog holds, changed and deleted back and forth
            im.upsert(svc("g", f"keep{i}", "10.1.1.1:1"))
            im.delete("g", f"keep{i}")

    flood.jobs.put(churn)
    flood.done.get(timeout=30)  # synchronously: the registry's loop (this one) cannot flush meanwhile
    assert imports.pending() <= 2 * LIMITS.max_services, imports.pending()
    assert imports.pending() == 40 + 10, imports.pending()  # the 40 new ones and the 10 deletes
    assert imports.held() == 40
    await until(lambda: ids(catalog, "g") == [] and sum(len(ids(catalog, g)) for g in catalog.groups()) == 40)
