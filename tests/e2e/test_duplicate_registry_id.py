"""A registry started with an -id that a live registry holds refuses to run (exit 1, one line naming
the holder) and the holder keeps serving and gossiping.  Before: both started; within a conflict
query's time the newcomer *and* the holder shut their gossip down ("name 'r1' is taken by another
node") and went on answering gRPC from a frozen catalog until stopped.

Every process runs the LAN profile (helpers.TOLERANT): the fast profile's 0.6 s suspicion can declare a
CPU-starved holder dead on a loaded machine, and a dead holder's name is free to take (seen once with four
suites at once on 2 cores: the newcomer took it and never exited)."""

from __future__ import annotations

from pathlib import Path

from .helpers import TOLERANT, Proc, Registry, Service, free_port, procs, wait_for

TAKEN = "is taken by another node"  # what a gossip layer that shut itself down logs


def _holder_is_healthy(r1: Registry, ps: list[Proc], tmp: Path) -> None:
    """The holder still gossips: a service joins through it and is matched; its gossip never shut down."""
    svc = Service(ps, tmp, "svc-after", [r1.gossip], profile=TOLERANT).wait_registered()
    wait_for(lambda: "svc-after" in r1.ids("webservice"), 30, what="the service listed by the holder")
    assert r1.proc.alive() and TAKEN not in r1.proc.output(), r1.proc.output()[-2000:]
    assert r1.ids("registry-group") >= {"r1"}
    svc.proc.stop()


def test_a_second_registry_with_a_taken_id_exits_at_start_and_the_holder_keeps_serving(tmp_path: Path) -> None:
    with procs() as ps:
        r1 = Registry(ps, tmp_path, "r1", profile=TOLERANT).wait_ready()
        dup = Registry(ps, tmp_path, "r1", [r1.gossip], profile=TOLERANT)
        assert dup.proc.wait(30) == 1, dup.proc.output()
        last = dup.proc.output().strip().splitlines()[-1]
        assert last == (f"registry: -id 'r1' is taken by 127.0.0.1:{r1.gossip_port} (alive in the pool); "
                        "pick another -id or stop that registry"), last
        _holder_is_healthy(r1, ps, tmp_path)


def test_a_taken_id_found_by_a_later_join_stops_the_registry(tmp_path: Path) -> None:
    """The seed is not up when the newcomer starts (it serves, retrying); once the seed is up and
    in the holder's pool, the newcomer's next join shows the holder and it exits 1."""
    with procs() as ps:
        r1 = Registry(ps, tmp_path, "r1", profile=TOLERANT).wait_ready()
        seed_port = free_port()
        dup = Registry(ps, tmp_path, "r1", [f"127.0.0.1:{seed_port}"], profile=TOLERANT)
        wait_for(lambda: "no seed answered" in dup.proc.output() or "join failed" in dup.proc.output(), 30,
                 what="the newcomer retrying its seed")
        Registry(ps, tmp_path, "seed", [r1.gossip], gossip=seed_port, profile=TOLERANT).wait_ready()
        assert dup.proc.wait(60) == 1, dup.proc.output()
        assert f"-id 'r1' is taken by 127.0.0.1:{r1.gossip_port}" in dup.proc.output().strip().splitlines()[-1]
        _holder_is_healthy(r1, ps, tmp_path)
