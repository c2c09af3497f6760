"""What imports and exports cost the registry (issue 18's benchmark found them): a resync that changes
nothing is not re-applied, a big import is applied in chunks with the registry's loop answering between
them, and each export view rebuilds only the groups whose version moved. In-process, real host, catalog
and loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from registry.adapters.base import AdapterContext, ExternalService
from registry.adapters.host import AdapterHost, ViewCache
from registry.adapters.imports import CHUNK
from registry.catalog import Catalog


class Holder:
    """An adapter that only keeps its context: the test calls its imports from a thread."""

    def __init__(self) -> None:
        self.name = "bulk"
        self.ctx: AdapterContext | None = None

    async def run(self, ctx: AdapterContext) -> None:
        self.ctx = ctx
        await asyncio.Event().wait()


async def until(pred: Callable[[], object], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def services(n: int, version: str = "1") -> list[ExternalService]:
    return [ExternalService("bulk", f"s{i:05d}", f"10.0.{i // 250}.{i % 250}:80", {"v": version}, replicas=64)
            for i in range(n)]


async def test_big_import_in_chunks_and_an_unchanged_resync_costs_no_catalog_batch() -> None:
    n = 4 * CHUNK + 7
    catalog = Catalog()
    holder = Holder()
    host = AdapterHost(catalog, [holder], datacenter="dc1", registry_id="r1")
    host.start()
    try:
        await until(lambda: holder.ctx is not None)
        assert holder.ctx is not None
        imports = host.runners[0].imports
        seen: set[int] = set()
        done = asyncio.Event()

        async def ticker() -> None:  # another task on the registry's loop: which chunk counts it saw
            while not done.is_set():
                seen.add(imports.chunks)
                await asyncio.sleep(0)

        tick = asyncio.ensure_future(ticker())
        t0 = time.monotonic()
        await asyncio.to_thread(holder.ctx.imports.replace_all, services(n))
        await until(lambda: len(catalog.members("bulk")) == n)
        took = time.monotonic() - t0
        done.set()
        await tick
        print(f"{n} services imported in {took:.2f} s, {imports.chunks} catalog batches")
        assert imports.chunks == 5, imports.chunks  # ceil(n / CHUNK)
        assert {1, 2, 3, 4} <= seen, seen  # the loop ran another task between every two chunks
        version = catalog.version("bulk")
        # a resync that changes nothing (an etcd reconnect): no catalog batch at all
        await asyncio.to_thread(holder.ctx.imports.replace_all, services(n))
        await until(lambda: imports.pending() == 0 and imports.flushes == 2)
        await asyncio.sleep(0.05)
        assert imports.chunks == 5 and catalog.version("bulk") == version
        # a resync changing one service and dropping another: one batch, one version
        changed = services(n)
        changed[3] = ExternalService("bulk", "s00003", "10.9.9.9:80", {"v": "2"}, replicas=64)
        await asyncio.to_thread(holder.ctx.imports.replace_all, changed[:-1])
        await until(lambda: len(catalog.members("bulk")) == n - 1)
        assert imports.chunks == 6 and catalog.version("bulk") == version + 1
        assert {s.id: s.addr for s in catalog.members("bulk")}["s00003"] == "10.9.9.9:80"
        # a resync that supersedes a big one still queued: nothing of the first is applied after it
        await asyncio.to_thread(holder.ctx.imports.replace_all, services(3 * CHUNK, "3"))
        await asyncio.to_thread(holder.ctx.imports.replace_all, services(2, "4"))
        await until(lambda: [s.tags["v"] for s in catalog.members("bulk")] == ["4", "4"])
        await asyncio.sleep(0.1)
        assert [s.id for s in catalog.members("bulk")] == ["s00000", "s00001"]
    finally:
        host.stop()


def test_views_rebuild_only_the_groups_that_changed() -> None:
    catalog = Catalog()
    catalog.apply_external("x", [(g, f"{g}-{i}", {"addr": f"10.0.0.{i}:1"}) for g in ("a", "b") for i in range(3)])
    cache = ViewCache()
    first = cache.view(catalog, "dc1")
    catalog.apply_external("x", [("b", "b-9", {"addr": "10.0.0.9:1"})])
    second = cache.view(catalog, "dc1")
    a1 = [s for s in first.services if s.group == "a"]
    a2 = [s for s in second.services if s.group == "a"]
    assert all(x is y for x, y in zip(a1, a2, strict=True))  # group a did not move: the same records
    assert [s.id for s in second.services if s.group == "b"] == ["b-0", "b-1", "b-2", "b-9"]
    assert second == ViewCache().view(catalog, "dc1")  # equal to a view built from nothing
