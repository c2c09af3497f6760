"""Three registry processes (LAN gossip profile) sharing TTL services: expiry at the same instant
everywhere, last-writer-wins on concurrent writes, and a restarted registry made whole again.

One pool for the module (starting three registries is most of the cost); each test uses groups of
its own, so they do not depend on each other's entries or order.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.helpers import Proc, check_logs, wait_for

from .helpers import TtlRegistry, Written, start_pool, wall_ms

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

#: The LAN profile's anti-entropy interval (registry/ttl/driver.py): a restarted registry must be whole
#: within one round after its join (it sends every peer a digest at once, so it takes a round trip).
ANTI_ENTROPY_S = 10.0


class Pool:
    def __init__(self, ps: list[Proc], tmp: Path) -> None:
        self.ps = ps
        self.tmp = tmp
        self.regs = start_pool(ps, tmp, 3, profile="lan")


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    ps: list[Proc] = []
    p: Pool | None = None
    try:
        p = Pool(ps, tmp_path_factory.mktemp("ttl-pool"))
        yield p
    finally:
        if p is not None:
            for r in p.regs:
                r.close()
        for proc in reversed(ps):
            proc.stop()
        check_logs(ps)


def test_expiry_at_the_ttl_on_every_registry(pool: Pool) -> None:
    """An entry nobody refreshes leaves every registry's group within TTL + 1 s, and not before its
    TTL (one host: no clock skew between the registries, so 'TTL - skew' is the TTL itself)."""
    regs = pool.regs
    w = regs[1].put("short", "10.8.0.1:80", "2s", group="ttl-expiry")
    wait_for(lambda: all("short" in r.members("ttl-expiry") for r in regs), 10, what="replicated")
    gone_at: dict[str, int] = {}
    while len(gone_at) < len(regs):
        for r in regs:
            if r.id in gone_at:
                continue
            present = "short" in r.members("ttl-expiry")
            answered = wall_ms()  # the answer came before this instant
            if not present:
                gone_at[r.id] = answered
                assert answered >= w.expires_ms, f"{r.id} dropped it {w.expires_ms - answered} ms before its TTL"
        assert wall_ms() <= w.expires_ms + 5000, f"still there 5 s past its TTL on {set(r.id for r in regs) - set(gone_at)}"
        time.sleep(0.01)
    late = {rid: at - w.expires_ms for rid, at in gone_at.items()}
    print(f"\nleft each registry at most this many ms after its TTL: {late}")
    assert max(late.values()) <= 1000, f"left only {late} ms after its TTL"


def test_concurrent_writes_converge_to_the_greater_stamp(pool: Pool) -> None:
    """The same ids PUT at the same moment, with different addrs, to two registries: every registry
    ends up with the write of the greater stamp (written_ms, then the writer's name) for each."""
    regs = pool.regs
    a, b = regs[0], regs[2]
    ids = [f"dup-{i}" for i in range(8)]
    answers: dict[str, list[Written]] = {i: [] for i in ids}
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def writer(reg: TtlRegistry, addr_prefix: str) -> None:
        try:
            for i in ids:
                barrier.wait(10)
                answers[i].append(reg.put(i, f"{addr_prefix}:{i[4:]}", "120s", group="ttl-lww"))
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=writer, args=(a, "10.7.0.1")), threading.Thread(target=writer, args=(b, "10.7.0.2"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    want = {i: max(ws, key=lambda w: w.stamp).addr for i, ws in answers.items()}
    assert all(len(ws) == 2 and ws[0].writer != ws[1].writer for ws in answers.values()), answers
    last: dict[str, dict[str, str]] = {}

    def converged() -> bool:
        for r in regs:
            last[r.id] = r.members("ttl-lww")
        return all(got == want for got in last.values())

    try:
        wait_for(converged, 20, what="every registry holding the greater stamp's addr")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; want {want}, got {last}") from None
    for r in regs:  # and Match answers the same on all (the ring, not only the member list)
        owners = [r.owner(f"key-{k}", "ttl-lww") for k in range(50)]
        assert owners == [regs[0].owner(f"key-{k}", "ttl-lww") for k in range(50)]


def test_restarted_registry_gets_every_entry_back_within_one_round(pool: Pool) -> None:
    """A registry stopped and started again (empty: nothing persists) holds every entry of the pool
    within one anti-entropy round of its join: it sends each peer a digest as soon as it sees it."""
    regs = pool.regs
    want: dict[str, dict[str, str]] = {}
    for g in range(4):
        group = f"ttl-restart-{g}"
        want[group] = {}
        for i in range(25):
            sid = f"s{i}"
            regs[i % 3].put(sid, f"10.6.{g}.{i}:80", "120s", group=group)
            want[group][sid] = f"10.6.{g}.{i}:80"
    victim = regs[2]
    wait_for(lambda: all(victim.members(g) == m for g, m in want.items()), 20, what="written everywhere")
    gossip, rpc = victim.reg.gossip_port, victim.reg.rpc_port
    victim.close()
    victim.proc.stop()  # SIGTERM: a graceful leave
    again = TtlRegistry(pool.ps, pool.tmp, victim.id, (regs[0].reg.gossip,), profile="lan", gossip=gossip, rpc=rpc)
    regs[2] = again
    wait_for(lambda: again.proc.logged('"joined the pool"'), 60, what="the restarted registry joining")
    joined = time.monotonic()
    last: dict[str, dict[str, str]] = {}

    def whole() -> bool:
        for g in want:
            last[g] = again.members(g)
        return last == want

    wait_for(whole, 60, interval=0.02, what="the restarted registry holding every entry")
    took = time.monotonic() - joined
    print(f"\nrestarted registry whole {took * 1000:.0f} ms after its join")
    assert took <= ANTI_ENTROPY_S, f"whole only {took:.1f}s after its join (one round is {ANTI_ENTROPY_S}s)"
