"""Bytes per entry a TtlStore holds for 100,000 typical entries (an addr and 3 short tags, 10 groups):
local writes, and the same records merged from peers' decoded messages. Not a test (takes ~10 s):
``python -m tests.ttl.measure_memory``; the figures are in registry/ttl/store.py's docstring."""

from __future__ import annotations

import gc
import tracemalloc

from registry.ttl import wire
from registry.ttl.entry import Limits
from registry.ttl.store import TtlStore

N = 100_000
T0 = 1_700_000_000_000


def main() -> None:
    limits = Limits(max_entries=N, max_per_group=N)
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    local = TtlStore("registry-1", limits)
    for i in range(N):
        local.write(f"group-{i % 10}", f"service-{i:06d}", addr=f"10.1.{i // 256 % 256}.{i % 256}:8080",
                    ttl_ms=30_000, now_ms=T0 + i % 1000,
                    tags={"version": f"1.{i % 7}", "zone": f"eu-{i % 3}", "team": "payments"})
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - base
    print(f"local writes: {used / N:.0f} bytes per entry ({used / 2**20:.1f} MiB for {N})")
    messages = [m for g in local.digest() for m in wire.chunk_records("registry-1", g, local.records(g),
                                                                      want_back=False, max_bytes=512 * 1024)]
    tracemalloc.stop()
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    merged = TtlStore("registry-2", limits)
    for data in messages:
        msg = wire.decode(data, limits)
        assert isinstance(msg, wire.Records)
        merged.merge(msg.entries, now_ms=T0 + 1000)
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - base
    print(f"merged from {len(messages)} messages: {used / N:.0f} bytes per entry ({used / 2**20:.1f} MiB)")
    assert len(merged) == N


if __name__ == "__main__":
    main()
