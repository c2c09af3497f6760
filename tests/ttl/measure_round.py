"""CPU of one anti-entropy round over a 10,000-entry group in which one record differs, with the group
sent whole (bucketed_from above its size) and by buckets (the default). Not a test:
``python -m tests.ttl.measure_round``; the figures are in registry/ttl/replicator.py's docstring."""

from __future__ import annotations

import random
import time

from registry.ttl import wire
from registry.ttl.replicator import ReplConfig, Replicator
from registry.ttl.store import BUCKETED_FROM, TtlStore

N = 10_000
T0 = 1_700_000_000_000


def round_ms(bucketed_from: int) -> tuple[float, int]:
    a, b = TtlStore("reg-a", bucketed_from=bucketed_from), TtlStore("reg-b", bucketed_from=bucketed_from)
    for i in range(N):
        e, _ = a.write("web", f"service-{i:05d}", addr=f"10.0.{i // 256}.{i % 256}:8080", ttl_ms=30_000,
                       now_ms=T0, tags={"version": "1.2.3", "zone": "eu-1", "team": "x"})
        b.merge([e], now_ms=T0)
    ra, rb = Replicator(a, ReplConfig(), random.Random(1)), Replicator(b, ReplConfig(), random.Random(2))
    ra.set_peers(["reg-b"], now_ms=T0)
    rb.set_peers(["reg-a"], now_ms=T0)
    ra.drain()
    rb.drain()
    a.write("web", "service-00001", addr="10.9.9.9:8080", ttl_ms=30_000, now_ms=T0 + 5)
    sent = 0
    start = time.process_time()
    inbox = [("reg-b", m) for m in wire.chunk_digest("reg-a", a.digest(), reply=True, max_bytes=512 * 1024)]
    while inbox:  # deliver until nothing more is sent
        to, data = inbox.pop(0)
        sent += len(data)
        (rb if to == "reg-b" else ra).receive(data, now_ms=T0 + 10)
        inbox += ra.drain() + rb.drain()
    elapsed = (time.process_time() - start) * 1e3
    assert b.get("web", "service-00001") == a.get("web", "service-00001")
    return elapsed, sent


def main() -> None:
    for label, bucketed_from in (("whole group", N + 1), ("by buckets", BUCKETED_FROM)):
        ms, sent = round_ms(bucketed_from)
        print(f"{label}: {ms:.1f} ms of CPU (both registries), {sent} bytes")


if __name__ == "__main__":
    main()
