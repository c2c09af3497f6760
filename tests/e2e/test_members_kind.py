"""`registry members` says each service's kind (issue 15): KIND gossip or ttl, and `-kind` filters.

A real registry process with its HTTP front, a gossiping service (examples/webservice.py) and two TTL
services PUT over HTTP (one in the same group, one with the service's id in another group): the CLI
lists all of them with their kind, and Match routes to both kinds.
"""

from __future__ import annotations

import json
import subprocess
import urllib.request
from pathlib import Path

from .helpers import Registry, Service, env, procs, registry_cmd, wait_for

GROUP = "web"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(registry_cmd(*args), check=False, capture_output=True, text=True, env=env(), timeout=60)


def _put(http: str, group: str, id_: str, body: dict[str, object]) -> int:
    req = urllib.request.Request(f"http://{http}/v1/services/{group}/{id_}", data=json.dumps(body).encode(),
                                 method="PUT", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return int(resp.status)


def _rows(stdout: str) -> dict[tuple[str, str], list[str]]:
    """`registry members` lines by (group, id): [ID, GROUP, ADDR, STATUS, HEALTH, KIND, TAGS]."""
    return {(cols[1], cols[0]): cols for cols in (ln.split() for ln in stdout.splitlines())}


def test_members_prints_the_kind_and_filters_by_it(tmp_path: Path) -> None:
    with procs() as ps:
        r1 = Registry(ps, tmp_path, "r1", (), "-http-addr", "127.0.0.1:0")
        r1.wait_ready()
        svc = Service(ps, tmp_path, "svc", [r1.gossip], group=GROUP).wait_registered()
        assert _put(r1.http, GROUP, "t1", {"addr": "10.0.0.9:80", "ttl": "60s", "tags": {"zone": "a"}}) == 200
        assert _put(r1.http, "api", "svc", {"addr": "10.0.0.8:80", "ttl": "60s"}) == 200  # svc's name, another group
        wait_for(lambda: r1.ids(GROUP) == {"svc", "t1"}, 30, what="both kinds in the group")

        m = _cli("members", "-rpc", r1.rpc)
        assert m.returncode == 0 and m.stderr == "", m
        rows = _rows(m.stdout)
        assert {k: v[3:6] for k, v in rows.items()} == {
            ("registry-group", "r1"): ["alive", "passing", "gossip"],
            (GROUP, "svc"): ["alive", "passing", "gossip"],
            (GROUP, "t1"): ["alive", "passing", "ttl"],
            ("api", "svc"): ["alive", "passing", "ttl"]}, m.stdout
        assert rows[(GROUP, "t1")][2] == "10.0.0.9:80" and "zone=a" in rows[(GROUP, "t1")][6], m.stdout
        assert rows[(GROUP, "svc")][2] == svc.addr, m.stdout

        ttl_only = _cli("members", "-rpc", r1.rpc, "-kind", "ttl")
        assert ttl_only.returncode == 0 and set(_rows(ttl_only.stdout)) == {(GROUP, "t1"), ("api", "svc")}, ttl_only
        gossip_web = _cli("members", "-rpc", r1.rpc, "-kind", "gossip", "-group", GROUP)
        assert gossip_web.returncode == 0 and set(_rows(gossip_web.stdout)) == {(GROUP, "svc")}, gossip_web
        bad = _cli("members", "-rpc", r1.rpc, "-kind", "http")
        assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "-kind" in bad.stderr, bad

        # both kinds are routed, and the answers say which each is
        with r1.client() as c:
            owners = {(s.id, s.kind) for s in c.match_batch(GROUP, [f"user-{i}" for i in range(100)])}
        assert owners == {("svc", "gossip"), ("t1", "ttl")}, owners
