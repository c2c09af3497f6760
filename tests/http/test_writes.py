"""TTL registrations through a whole in-process registry (its TTL driver, catalog and both fronts on
loopback): the /v1 form's answers and every refusal, and hera's form with its README's example, sent by
aiohttp's client and by curl as written."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from registry.http.writes import TtlWriter
from registry.server import RegistryServer, StartError
from registry.v1 import registry_pb2 as pb
from tests.agentproc import free_port
from tests.e2e.certs import write_pki
from tests.http.conftest import client_context, registry_config

HERA_ID = "1f11bbbb-df7a-47c5-8ba7-662f70261673"
HERA_BODY = '{"host":"10.1.1.1", "port": 12345, "updated_at": "2012-12-18T13:27:01Z"}'
HAS_KIND = "kind" in pb.Service.DESCRIPTOR.fields_by_name


@pytest.fixture
async def server() -> AsyncIterator[RegistryServer]:
    s = RegistryServer(registry_config("http-w", ttl_default_ms=120_000))
    await s.start()
    yield s
    await s.stop()


def base(server: RegistryServer) -> str:
    return f"http://{server.http_address}"


async def call(client: aiohttp.ClientSession, method: str, url: str, body: Any = None,
               **kw: Any) -> tuple[int, Any]:
    data = body if isinstance(body, (str, bytes)) or body is None else json.dumps(body)
    async with client.request(method, url, data=data, **kw) as r:
        return r.status, await r.json()


async def test_put_match_list_delete(server: RegistryServer, client: aiohttp.ClientSession) -> None:
    writer: TtlWriter = server.ttl  # mypy: the registry's driver is what the front codes against
    assert writer.entries("web") == []
    url = base(server)
    status, entry = await call(client, "PUT", f"{url}/v1/services/web/api-1",
                               {"addr": "10.0.0.1:80", "ttl": "30s", "tags": {"zone": "a"}, "replicas": 64,
                                "weight": 2})
    assert status == 200, entry
    assert {k: entry[k] for k in ("group", "id", "addr", "tags", "replicas", "weight", "ttl_ms", "writer")} == {
        "group": "web", "id": "api-1", "addr": "10.0.0.1:80", "tags": {"zone": "a"}, "replicas": 64, "weight": 2,
        "ttl_ms": 30_000, "writer": "http-w"}
    assert 29 < entry["expires_in"] <= 30

    status, match = await call(client, "GET", f"{url}/v1/match/web/some-key")
    assert status == 200 and [s["id"] for s in match["services"]] == ["api-1"]
    service = match["services"][0]
    assert (service["addr"], service["replicas"], service["weight"], service["tags"]["zone"]) == \
        ("10.0.0.1:80", 64, 2, "a")
    if HAS_KIND:
        assert service["kind"] in ("ttl", "TTL")

    status, listed = await call(client, "GET", f"{url}/v1/services/web")
    assert status == 200 and [e["id"] for e in listed["services"]] == ["api-1"]

    status, gone = await call(client, "DELETE", f"{url}/v1/services/web/api-1")
    assert status == 200 and gone == {"group": "web", "id": "api-1", "deleted": True}
    status, again = await call(client, "DELETE", f"{url}/v1/services/web/api-1")
    assert status == 404 and again["code"] == "NOT_FOUND"
    status, after = await call(client, "GET", f"{url}/v1/match/web/some-key")
    assert status == 404, after


async def test_ttl_default_and_refresh(server: RegistryServer, client: aiohttp.ClientSession) -> None:
    url = f"{base(server)}/v1/services/jobs/cron-1"
    status, first = await call(client, "PUT", url, {"addr": "10.0.0.2:1"})
    assert status == 200 and first["ttl_ms"] == 120_000  # -ttl-default
    status, second = await call(client, "PUT", url, {"addr": "10.0.0.2:1", "ttl": 90})
    assert status == 200 and second["ttl_ms"] == 90_000 and second["written_ms"] > first["written_ms"]


@pytest.mark.parametrize(("body", "status", "code", "words"), [
    ({"addr": "10.0.0.1:80", "colour": "red"}, 400, "INVALID_ARGUMENT", "unknown field 'colour'"),
    ({"ttl": "30s"}, 400, "INVALID_ARGUMENT", "addr is required"),
    ({"addr": ""}, 400, "INVALID_ARGUMENT", "addr is empty"),
    ({"addr": "10.0.0.1:80", "ttl": "0.5s"}, 400, "INVALID_ARGUMENT", "ttl 0.5s out of range"),
    ({"addr": "10.0.0.1:80", "ttl": "soon"}, 400, "INVALID_ARGUMENT", "ttl: duration 'soon'"),
    ({"addr": "10.0.0.1:80", "ttl": True}, 400, "INVALID_ARGUMENT", "ttl must be"),
    ({"addr": "10.0.0.1:80", "tags": ["a"]}, 400, "INVALID_ARGUMENT", "tags must be an object"),
    ({"addr": "10.0.0.1:80", "tags": {"group": "x"}}, 400, "INVALID_ARGUMENT", "tag 'group' is set by"),
    ({"addr": "10.0.0.1:80", "tags": {"n": 1}}, 400, "INVALID_ARGUMENT", "tags must map strings"),
    ({"addr": "10.0.0.1:80", "tags": {"big": "x" * 600}}, 413, "RESOURCE_EXHAUSTED", "tags take"),
    ({"addr": "10.0.0.1:80", "replicas": True}, 400, "INVALID_ARGUMENT", "replicas must be an integer"),
    ({"addr": "10.0.0.1:80", "weight": 65}, 400, "INVALID_ARGUMENT", "weight 65 out of range"),
], ids=["unknown", "no-addr", "empty-addr", "short-ttl", "bad-ttl", "bool-ttl", "tags-list", "reserved-tag",
        "tag-number", "tags-large", "bool-replicas", "weight"])
async def test_refused_writes(server: RegistryServer, client: aiohttp.ClientSession, body: Any, status: int,
                              code: str, words: str) -> None:
    got, answer = await call(client, "PUT", f"{base(server)}/v1/services/web/x", body)
    assert (got, answer["code"]) == (status, code), answer
    assert words in answer["error"], answer
    assert (await call(client, "GET", f"{base(server)}/v1/services/web"))[1]["services"] == []  # nothing kept


async def test_id_of_a_gossiping_member_is_taken(server: RegistryServer, client: aiohttp.ClientSession) -> None:
    status, answer = await call(client, "PUT", f"{base(server)}/v1/services/registry-group/http-w",
                                {"addr": "10.0.0.1:1"})
    assert (status, answer["code"]) == (409, "ALREADY_EXISTS"), answer


async def test_hera_form(server: RegistryServer, client: aiohttp.ClientSession) -> None:
    url = base(server)
    # curl's default content type for -d (form), the body a JSON object: accepted as is
    async with client.put(f"{url}/storage/{HERA_ID}", data=HERA_BODY,
                          headers={"Content-Type": "application/x-www-form-urlencoded"}) as r:
        assert r.status == 200, await r.text()
    status, services = await call(client, "GET", f"{url}/storage")
    assert status == 200 and services == {HERA_ID: json.loads(HERA_BODY)}
    status, match = await call(client, "GET", f"{url}/v1/match/storage/any")
    assert status == 200 and match["services"][0]["addr"] == "10.1.1.1:12345"
    # addr instead of host + port, and a ttl field
    status, _ = await call(client, "PUT", f"{url}/storage/two", {"addr": "10.1.1.2:1", "ttl": "60s", "x": [1]})
    assert status == 200
    status, listed = await call(client, "GET", f"{url}/v1/services/storage")
    assert {e["id"]: e["ttl_ms"] for e in listed["services"]} == {HERA_ID: 120_000, "two": 60_000}
    # gossiping members of a group are in hera's map too, marked as such
    status, registries = await call(client, "GET", f"{url}/registry-group")
    assert status == 200 and registries["http-w"]["kind"] == "gossip"
    assert registries["http-w"]["addr"] == server.grpc_address
    for body, words in (({"host": "10.1.1.1"}, "needs \"addr\""), ({"host": "h", "port": 70000}, "needs")):
        status, answer = await call(client, "PUT", f"{url}/storage/bad", body)
        assert status == 400 and words in answer["error"], answer
    status, answer = await call(client, "PUT", f"{url}/storage/big", {"addr": "10.1.1.3:1", "notes": "x" * 5000})
    assert (status, answer["code"]) == (413, "RESOURCE_EXHAUSTED") and "4096" in answer["error"], answer
    status, _ = await call(client, "DELETE", f"{url}/storage/two")
    assert status == 200
    status, answer = await call(client, "PUT", f"{url}/v1/x", {"host": "10.1.1.1", "port": 1})
    assert status == 404  # a reserved first segment is not a service


@pytest.mark.curl
async def test_hera_readme_example_with_curl(server: RegistryServer) -> None:
    port = server.http_address.rsplit(":", 1)[1]
    async def curl(*args: str) -> str:
        p = await asyncio.create_subprocess_exec("curl", "-sS", "--fail-with-body", *args,
                                                 stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(p.communicate(), 60)
        assert p.returncode == 0, (out, err)
        return out.decode()

    # hera's README, as written, but for the port
    await curl("-XPUT", "-d", HERA_BODY, f"http://localhost:{port}/storage/{HERA_ID}")
    assert json.loads(await curl(f"http://localhost:{port}/storage")) == {HERA_ID: json.loads(HERA_BODY)}


async def test_a_registry_with_tls_serves_https_and_counts_in_metrics(tmp_path: Path) -> None:
    """-tls-cert/-tls-key make the HTTP front HTTPS too; its requests are in the registry's /metrics."""
    pki = write_pki(tmp_path)
    metrics_port = free_port()
    s = RegistryServer(registry_config("http-tls", tls_cert=str(pki.server_cert), tls_key=str(pki.server_key),
                                       metrics_addr=("127.0.0.1", metrics_port)))
    await s.start()
    try:
        ctx = client_context(pki)
        async with aiohttp.ClientSession() as c:
            status, answer = await call(c, "PUT", f"https://{s.http_address}/v1/services/web/tls-1",
                                        {"addr": "10.0.0.1:1"}, ssl=ctx)
            assert status == 200, answer
            status, answer = await call(c, "GET", f"https://{s.http_address}/healthz", ssl=ctx)
            assert (status, answer) == (200, {"status": "serving"})
            async with c.get(f"http://127.0.0.1:{metrics_port}/metrics") as r:
                text = await r.text()
        assert 'registry_http_requests_total{code="200",route="/healthz"} 1' in text, text
        assert 'registry_http_requests_total{code="200",route="/v1/services/{group}/{id}"} 1' in text, text
        assert "registry_http_connections_total 1" in text, text
    finally:
        await s.stop()


async def test_a_taken_http_port_is_a_one_line_start_error() -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    s = RegistryServer(registry_config("http-taken", http_addr=("127.0.0.1", taken.getsockname()[1])))
    try:
        with pytest.raises(StartError, match=r"^cannot listen for HTTP on 127\.0\.0\.1:\d+: .*in use"):
            await s.start()
    finally:
        await s.close()
        taken.close()
