"""The datacenter API end to end (issue 17): two `registry` processes, dc1 and dc2, joined over the WAN
pool (fast profile), services registered over HTTP (TTL entries) in each. Through every surface a person
or a program uses: dc1 answers Match for dc2 as dc2 itself does (1,000 keys over gRPC with the blocking
client and over HTTP; a sample of keys and `members` through the `registry` command), Match with
failover answers from dc2 while dc1 has no service of the group and from dc1 again once it has one, an
unknown datacenter is NOT_FOUND with the known ones named, and a default answer carries no datacenter.

Issue 17's churn, kills and WAN cuts are tests/federation/test_wan_e2e.py's."""

from __future__ import annotations

import http.client
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import grpc
import pytest

from registry.client import NotFound, RpcClient, Unavailable
from registry.v1 import registry_pb2 as pb
from tests.e2e.helpers import Proc, Registry, env, procs, registry_cmd, wait_for
from tests.wan.procs import wan_registry

KEYS = [f"user-{i}" for i in range(1000)]


@dataclass
class Dc:
    registry: Registry
    http: str


def _request(addr: str, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    conn = http.client.HTTPConnection(addr, timeout=10)
    try:
        conn.request(method, path, body=None if body is None else json.dumps(body))
        r = conn.getresponse()
        return r.status, json.loads(r.read() or b"null")
    finally:
        conn.close()


def put(dc: Dc, group: str, ident: str, addr: str) -> None:
    status, answer = _request(dc.http, "PUT", f"/v1/services/{group}/{ident}", {"addr": addr, "ttl": "300s"})
    assert status == 200, answer


def delete(dc: Dc, group: str, ident: str) -> None:
    status, answer = _request(dc.http, "DELETE", f"/v1/services/{group}/{ident}")
    assert status == 200, answer


@pytest.fixture
def two(tmp_path: Path) -> Iterator[tuple[Dc, Dc, list[Proc]]]:
    with procs() as ps:
        r1, line1 = wan_registry(ps, tmp_path, "a", "dc1", "-http-addr", "127.0.0.1:0")
        r2, _ = wan_registry(ps, tmp_path, "a", "dc2", "-http-addr", "127.0.0.1:0", "-wan-join", line1["wan"])
        dc1, dc2 = Dc(r1.wait_ready(), r1.http), Dc(r2.wait_ready(), r2.http)
        for i in range(3):
            put(dc1, "web", f"web-1-{i}", f"10.1.0.{i}:80")
        for i in range(12):
            put(dc2, "web", f"web-2-{i}", f"10.2.0.{i}:80")
        put(dc2, "pay", "pay-2-0", "10.2.1.0:80")
        put(dc2, "pay", "pay-2-1", "10.2.1.1:80")
        yield dc1, dc2, ps


def synced(c: RpcClient, dc: str, want: dict[str, int]) -> bool:
    """dc1 holds dc2's groups with `want` services each (NOT_FOUND until dc2 is known to dc1,
    UNAVAILABLE until its mirror is whole, fewer services until every change arrived)."""
    try:
        return all(len(c.members(g, datacenter=dc)) == n for g, n in want.items())
    except (NotFound, Unavailable):
        return False


def test_dc1_answers_for_dc2_through_grpc_http_and_the_cli(two: tuple[Dc, Dc, list[Proc]]) -> None:
    dc1, dc2, _ = two
    with RpcClient(dc1.registry.rpc, timeout=10) as c1, RpcClient(dc2.registry.rpc, timeout=10) as c2:
        wait_for(lambda: synced(c1, "dc2", {"web": 12, "pay": 2}), 60, what="dc1's mirror of dc2 synced")
        want = [c2.match("web", k).id for k in KEYS]
        got = [c1.match("web", k, datacenter="dc2") for k in KEYS]
        assert [s.id for s in got] == want
        assert {(s.datacenter, s.stale_seconds) for s in got} == {("dc2", 0.0)}
        assert [s.id for s in c1.match_batch("web", KEYS, datacenter="dc2")] == want
        # the local answer is dc1's own, and a default answer names no datacenter
        assert c1.match("web", "user-1").id.startswith("web-1-")
        assert c1.match("web", "user-1").datacenter == ""
        assert c1.match("web", "user-1", datacenter="dc1").datacenter == "dc1"
        with pytest.raises(NotFound, match=r"unknown datacenter 'dc9' \(known: dc1, dc2\)"):
            c1.match("web", "user-1", datacenter="dc9")
        assert [d.name for d in c1.datacenters()] == ["dc1", "dc2"]

        # HTTP: the same 1,000 answers, on one kept-alive connection
        conn = http.client.HTTPConnection(dc1.http, timeout=10)
        try:
            for key, owner in zip(KEYS, want):
                conn.request("GET", f"/v1/match/web/{quote(key)}?dc=dc2")
                r = conn.getresponse()
                body = json.loads(r.read())
                assert r.status == 200, body
                assert (body["services"][0]["id"], body["datacenter"]) == (owner, "dc2"), key
        finally:
            conn.close()

        # the registry command: a sample of keys, and members -dc
        for key in KEYS[:5]:
            out = subprocess.run(registry_cmd("match", "-rpc", dc1.registry.rpc, "-dc", "dc2", "web", key),
                                 capture_output=True, text=True, env=env(), timeout=60)
            assert out.returncode == 0, out.stderr
            assert out.stdout.split()[0] == want[KEYS.index(key)]
        out = subprocess.run(registry_cmd("members", "-rpc", dc1.registry.rpc, "-dc", "dc2", "-group", "web"),
                             capture_output=True, text=True, env=env(), timeout=60)
        assert out.returncode == 0, out.stderr
        assert [line.split()[0] for line in out.stdout.splitlines()] == sorted(f"web-2-{i}" for i in range(12))
        out = subprocess.run(registry_cmd("members", "-rpc", dc1.registry.rpc, "-dc", "DC 2"),
                             capture_output=True, text=True, env=env(), timeout=60)
        assert out.returncode == 2 and "-dc" in out.stderr, out.stderr
        out = subprocess.run(registry_cmd("members", "-rpc", dc1.registry.rpc, "-dc", "dc9"),
                             capture_output=True, text=True, env=env(), timeout=60)
        assert out.returncode == 1 and "unknown datacenter 'dc9'" in out.stderr, out.stderr


def test_failover_answers_from_dc2_while_dc1_has_no_service_and_back(two: tuple[Dc, Dc, list[Proc]]) -> None:
    dc1, dc2, _ = two
    with RpcClient(dc1.registry.rpc, timeout=10) as c1, RpcClient(dc2.registry.rpc, timeout=10) as c2:
        wait_for(lambda: synced(c1, "dc2", {"web": 12, "pay": 2}), 60, what="dc1's mirror of dc2 synced")
        with pytest.raises(NotFound):
            c1.match("pay", "order-1")
        found = c1.match("pay", "order-1", failover=True)
        assert (found.id, found.datacenter) == (c2.match("pay", "order-1").id, "dc2")
        status, body = _request(dc1.http, "GET", "/v1/match/pay/order-1?failover=1")
        assert (status, body["datacenter"]) == (200, "dc2"), body
        put(dc1, "pay", "pay-1-0", "10.1.1.0:80")  # a local service of the group returns
        wait_for(lambda: c1.match("pay", "order-1", failover=True).datacenter == "dc1", 30,
                 what="failover back to dc1")
        assert c1.match("pay", "order-1", failover=True).id == "pay-1-0"
        delete(dc1, "pay", "pay-1-0")
        wait_for(lambda: c1.match("pay", "order-1", failover=True).datacenter == "dc2", 30,
                 what="failover to dc2 again")
        out = subprocess.run(registry_cmd("match", "-rpc", dc1.registry.rpc, "-failover", "pay", "order-1"),
                             capture_output=True, text=True, env=env(), timeout=60)
        assert out.returncode == 0, out.stderr
        assert "answered by datacenter dc2" in out.stderr


def top_fields(raw: bytes) -> list[int]:
    """The field numbers of a serialized message's top-level fields, in order (a map's entries may
    serialize in any order, so bytes are compared by their fields, not re-serialized)."""
    out: list[int] = []
    i = 0

    def varint() -> int:
        nonlocal i
        shift = value = 0
        while True:
            b = raw[i]
            i += 1
            value |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                return value

    while i < len(raw):
        key = varint()
        out.append(key >> 3)
        wire = key & 7
        if wire == 0:
            varint()
        elif wire == 1:
            i += 8
        elif wire == 2:
            length = varint()  # not `i += varint()`: that reads i before varint() moves it
            i += length
        elif wire == 5:
            i += 4
        else:
            raise AssertionError(f"wire type {wire} at byte {i}")
    return out


def test_default_answers_carry_no_datacenter_fields(two: tuple[Dc, Dc, list[Proc]]) -> None:
    """On a registry with a WAN pool, a default Match, MatchBatch and Members answer holds exactly the
    fields it held before datacenters (services; Members its version): no datacenter, no stale_seconds;
    one naming a datacenter holds them."""
    dc1, _, _ = two
    with grpc.insecure_channel(dc1.registry.rpc) as ch:
        for method, request, fields in (
                ("Match", pb.MatchRequest(group="web", key="k", n=2), {1}),
                ("MatchBatch", pb.MatchBatchRequest(group="web", keys=KEYS[:20]), {1}),
                ("Members", pb.MembersRequest(group="web"), {1, 2}),
                ("Match", pb.MatchRequest(group="web", key="k", datacenter="dc1"), {1, 2}),
                ("Members", pb.MembersRequest(group="web", datacenter="dc1"), {1, 2, 3})):
            call = ch.unary_unary(f"/registry.v1.Registry/{method}", request_serializer=type(request).SerializeToString,
                                  response_deserializer=None)
            raw: bytes = call(request, timeout=10)
            assert set(top_fields(raw)) == fields, (method, request)
