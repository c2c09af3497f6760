"""`-hash chash` end to end: two registries give the Go original's answers for its own example."""

from __future__ import annotations

from pathlib import Path

from .helpers import TOLERANT, Registry, procs, wait_for

GROUP = "webservice"
# What the Go werbenhu/registry example prints for these keys with webservice-1..3 (replicas 10000).
GO_ANSWERS = {
    "user-id-0": "webservice-2",
    "user-id-1": "webservice-3",
    "user-id-2": "webservice-3",
    "user-id-3": "webservice-1",
    "user-id-4": "webservice-1",
}


def test_chash_matches_go_original(tmp_path: Path) -> None:
    from registry.client import RpcClient
    from registry.register import Register

    with procs() as ps:
        # no timing under test: a tolerant profile, so no live member is declared dead under load
        r1 = Registry(ps, tmp_path, "registry-c1", (), "-hash", "chash", profile=TOLERANT).wait_ready()
        r2 = Registry(ps, tmp_path, "registry-c2", [r1.gossip], "-hash", "chash", profile=TOLERANT).wait_ready()
        both = {"registry-c1", "registry-c2"}
        wait_for(lambda: r1.ids("registry-group") == r2.ids("registry-group") == both, 60, what="registries joined")
        regs: list[Register] = []
        try:
            want: set[str] = set()
            for i in (1, 2, 3):
                reg = Register(f"webservice-{i}", "127.0.0.1:0", "", [r1.gossip, r2.gossip], GROUP,
                               f"127.0.0.1:{8080 + i}", replicas=10000, profile=TOLERANT)
                reg.start()
                regs.append(reg)
                want.add(reg.id)
                wait_for(lambda: r1.ids(GROUP) == r2.ids(GROUP) == want, 60, what=f"{reg.id} on both registries")
            for r in (r1, r2):
                with RpcClient(r.rpc, timeout=10) as c:
                    got = {k: c.match(GROUP, k).id for k in GO_ANSWERS}
                    batch = {k: s.id for k, s in zip(GO_ANSWERS, c.match_batch(GROUP, list(GO_ANSWERS)))}
                assert got == GO_ANSWERS, (r.id, got)
                assert batch == GO_ANSWERS, (r.id, batch)
            with RpcClient([r1.rpc, r2.rpc], timeout=10, cache=True) as c:
                cached = {k: c.match(GROUP, k).id for k in GO_ANSWERS}
                assert cached == GO_ANSWERS
                svc = c.match(GROUP, "user-id-0")
                assert svc.addr == "127.0.0.1:8082"
        finally:
            for reg in reversed(regs):
                reg.stop()
        wait_for(lambda: not r1.ids(GROUP) and not r2.ids(GROUP), 60, what="services left")
