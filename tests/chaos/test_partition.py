"""A 2|3 partition of 5 registries (and 3 services), made with iptables DROP, then healed.

Fast gossip profile (failure detection in about a second), so the partition is seen quickly;
a CPU-starved process may be suspected for a moment on this loaded machine, which is why every
check polls until it holds, with a deadline, rather than looking once.
"""

from __future__ import annotations

import time

import pytest

from .conftest import PoolFactory
from .pool import GROUP, REGISTRY_GROUP

pytestmark = [pytest.mark.chaos, pytest.mark.slow, pytest.mark.timeout(240)]

SIDE_A = ["r0", "r1", "s0"]
SIDE_B = ["r2", "r3", "r4", "s1", "s2"]
DETECT_DEADLINE = 60.0  # fast profile: ~2 s measured; the rest is margin for a loaded machine
HEAL_DEADLINE = 60.0


def test_partition_2_3_then_heal(make_pool: PoolFactory) -> None:
    pool = make_pool(registries=5, services=3, profile="fast")
    pool.wait_converged(90, "the whole pool before the partition")
    lab = pool.lab

    t0 = time.monotonic()
    lab.partition(SIDE_A, SIDE_B)
    for side in (SIDE_A, SIDE_B):
        regs = [pool.reg(n) for n in side if n.startswith("r")]
        want_r = {n for n in side if n.startswith("r")}
        want_s = {n for n in side if n.startswith("s")}
        pool.wait_converged(DETECT_DEADLINE, f"side {side} alone", registries=regs,
                            want_registries=want_r, want_services=want_s)
    detected = time.monotonic() - t0
    # Each side really dropped the other's packets (the rules bit, not a quiet network).
    assert all(lab.drops(n) > 0 for n in SIDE_A + SIDE_B)
    # And each side's registries logged the other side's members as failed (not left).
    for r in pool.registries:
        mine = SIDE_A if r.id in SIDE_A else SIDE_B
        failed = {name for _, name in r.failed_events()}
        other = set(SIDE_A + SIDE_B) - set(mine)
        assert other <= failed, f"{r.id} logged failed {sorted(failed)}, want at least {sorted(other)}"

    t1 = time.monotonic()
    lab.heal()
    pool.wait_converged(HEAL_DEADLINE, "the whole pool after heal")
    converged = time.monotonic() - t1
    for r in pool.registries:
        assert r.ids(REGISTRY_GROUP) == pool.registry_ids and r.ids(GROUP) == pool.service_ids
    print(f"\npartition seen by both sides in {detected:.1f}s; converged {converged:.1f}s after heal")
