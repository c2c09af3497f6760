"""10% random packet loss on every namespace's INPUT for 60 s: no false failures, Match answers.

LAN profile (the default a deployment runs): its probe timeout, indirect probes and TCP
fallback are what is supposed to ride out lossy links.  Every packet a node receives, gossip
and gRPC alike, is dropped with probability 0.1 (so a UDP ping and its ack are lost ~19% of the
time).  A false failure is any member-failed event in any registry's debug log during the
minute (logs see even a failure refuted between two polls), or a member missing from any
registry's member list at any poll.
"""

from __future__ import annotations

import time

import pytest

from .conftest import PoolFactory
from .pool import GROUP, KEYS, REGISTRY_GROUP

pytestmark = [pytest.mark.chaos, pytest.mark.slow, pytest.mark.timeout(300)]

LOSS = 0.1
DURATION = 60.0


def test_ten_percent_loss_for_a_minute_no_false_failures(make_pool: PoolFactory) -> None:
    pool = make_pool(registries=5, services=3, profile="lan")
    pool.wait_converged(120, "the whole pool before the loss")
    lab = pool.lab
    failed_before = {r.id: len(r.failed_events()) for r in pool.registries}

    lab.loss(LOSS)
    polls = matches = 0
    missing: list[str] = []
    errors: list[str] = []
    start = time.monotonic()
    while time.monotonic() - start < DURATION:
        for r in pool.registries:
            try:
                got_r, got_s = r.ids(REGISTRY_GROUP, timeout=10), r.ids(GROUP, timeout=10)
                polls += 1
                if got_r != pool.registry_ids or got_s != pool.service_ids:
                    missing.append(f"{time.monotonic() - start:.1f}s {r.id}: "
                                   f"{sorted(pool.registry_ids - got_r)} {sorted(pool.service_ids - got_s)}")
                key = KEYS[matches % len(KEYS)]
                r.client().match(GROUP, key, timeout=10)
                matches += 1
            except Exception as exc:  # noqa: BLE001  # any failure counts against "Match keeps answering"
                errors.append(f"{time.monotonic() - start:.1f}s {r.id}: {type(exc).__name__}: {exc}")
    elapsed = time.monotonic() - start
    dropped = sum(lab.drops(n) for n in lab.nodes)
    lab.heal()

    false_failures = {
        r.id: r.failed_events()[failed_before[r.id]:] for r in pool.registries
        if len(r.failed_events()) > failed_before[r.id]
    }
    print(f"\n{LOSS:.0%} loss for {elapsed:.0f}s: {dropped} packets dropped, {polls} member polls, "
          f"{matches} Match calls, {len(errors)} failed calls, false failures {false_failures or 0}")
    assert not false_failures, f"members declared failed under {LOSS:.0%} loss: {false_failures}"
    assert not missing, f"members missing from a list under loss: {missing[:10]}"
    assert not errors, f"calls failed under loss: {errors[:10]}"
    assert dropped > 0, "the loss rules dropped nothing"
    assert polls >= 5 * 10 and matches >= 5 * 10, f"too few checks to mean anything: {polls} polls, {matches} matches"
    pool.wait_converged(60, "the whole pool after the loss")
