"""-bind-advertise / -advertise: a registry bound on every interface but advertising loopback is
joinable, peers see the advertised gossip address, and its `addr` tag is the -advertise value."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from .helpers import TOLERANT, Proc, Registry, env, free_port, procs, registry_cmd, wait_for


@pytest.mark.parametrize("bind_form, adv_form", [("0.0.0.0:{p}", "127.0.0.1:{p}"), (":{p}", "127.0.0.1")])
def test_bind_all_advertise_loopback(tmp_path: Path, bind_form: str, adv_form: str) -> None:
    from registry.client import RpcClient
    from registry.register import Register

    gossip, rpc = free_port(), free_port()
    advertised_rpc = f"localhost:{rpc}"  # differs from what -addr alone would derive (127.0.0.1:port)
    with procs() as ps:
        a = Proc(registry_cmd("-id", "reg-adv", "-bind", bind_form.format(p=gossip),
                              "-bind-advertise", adv_form.format(p=gossip), "-addr", f":{rpc}",
                              "-advertise", advertised_rpc, "-profile", TOLERANT, "-log-format", "json"),
                 tmp_path / "adv.log")
        ps.append(a)

        def a_serving() -> bool:
            a.check_running()
            with RpcClient(f"127.0.0.1:{rpc}", timeout=10) as c:
                return any(s.id == "reg-adv" for s in c.members("registry-group"))

        wait_for(a_serving, 60, interval=0.1, what="reg-adv serving")
        b = Registry(ps, tmp_path, "reg-b", [f"127.0.0.1:{gossip}"], profile=TOLERANT).wait_ready()
        both = {"reg-adv", "reg-b"}

        def a_ids(group: str) -> set[str]:
            with RpcClient(f"127.0.0.1:{rpc}", timeout=10) as c:
                return {s.id for s in c.members(group)}

        wait_for(lambda: b.ids("registry-group") == both and a_ids("registry-group") == both, 60, what="reg-b joined reg-adv")

        # a member that only knows reg-b learns reg-adv's gossip address through gossip: the advertised one
        with Register("svc-adv", "127.0.0.1:0", "", [b.gossip], "adv-test", "127.0.0.1:1", profile=TOLERANT) as reg:
            def seen() -> tuple[str, int] | None:
                for m in reg.members():
                    if m.name == "reg-adv" and int(m.status) == 1:
                        return (m.addr, m.port)
                return None

            assert wait_for(seen, 60, what="reg-adv in svc-adv's member table") == ("127.0.0.1", gossip)
            wait_for(lambda: "svc-adv" in a_ids("adv-test"), 60,
                     what="svc-adv (joined via reg-b) reached reg-adv's catalog")

        # the addr tag (what clients dial) is the -advertise value, seen by both registries
        for where in (f"127.0.0.1:{rpc}", b.rpc):
            with RpcClient(where, timeout=10) as c:
                addrs = {s.id: s.addr for s in c.members("registry-group")}
            assert addrs["reg-adv"] == advertised_rpc, (where, addrs)
            assert addrs["reg-b"] == b.rpc
        m = subprocess.run(registry_cmd("members", "-rpc", b.rpc, "-group", "registry-group"),
                           capture_output=True, text=True, env=env(), timeout=120)
        assert m.returncode == 0, m
        rows = {ln.split()[0]: ln.split() for ln in m.stdout.splitlines()}
        assert rows["reg-adv"][2] == advertised_rpc, m.stdout
        assert f"addr={advertised_rpc}" in m.stdout
        assert a.alive() and "Traceback" not in a.output()


@pytest.mark.serf
def test_go_serf_members_shows_advertised_addresses(tmp_path: Path) -> None:
    """Go's `serf members` (the Serf-level member list) shows the advertised gossip address
    and the -advertise value in the addr tag of a registry bound on every interface."""
    from tests.serfagent import SerfAgent

    gossip, rpc = free_port(), free_port()
    with procs() as ps:
        a = Proc(registry_cmd("-id", "reg-adv-go", "-bind", f"0.0.0.0:{gossip}", "-bind-advertise", "127.0.0.1",
                              "-addr", f":{rpc}", "-advertise", f"localhost:{rpc}", "-profile", TOLERANT,
                              "-log-format", "json"), tmp_path / "adv-go.log")
        ps.append(a)
        wait_for(lambda: a.logged('"registry started"'), 60, what="reg-adv-go started")
        go = SerfAgent("go-watch", log_level="info")
        try:
            go.start()
            go.run("join", f"127.0.0.1:{gossip}")
            row = go.wait_member("reg-adv-go", "alive", timeout=60)
            assert str(row["addr"]).split(":")[0] == "127.0.0.1", row
            assert int(str(row["addr"]).rsplit(":", 1)[1]) == gossip, row
            assert row["tags"]["addr"] == f"localhost:{rpc}" and row["tags"]["group"] == "registry-group", row
            text = go.run("members")
            line = next(ln for ln in text.splitlines() if ln.startswith("reg-adv-go"))
            assert f"127.0.0.1:{gossip}" in line and "alive" in line and f"addr=localhost:{rpc}" in line, text
        finally:
            go.close()
        assert a.alive(), a.output()
