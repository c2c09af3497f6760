"""The read routes against a real catalog: every answer and error, and the same answers and errors as the
gRPC API for the same inputs (both on one RegistryCore, asked through grpcio's client and aiohttp's)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import aiohttp
import grpc
import pytest
from yarl import URL

from registry.http.answers import message_json
from registry.v1 import registry_pb2 as pb
from registry.v1 import registry_pb2_grpc as pb_grpc
from tests.http.conftest import GROUP, Front


async def get(client: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, Any], str | None]:
    async with client.get(URL(url, encoded=True)) as r:
        assert r.content_type == "application/json"
        return r.status, await r.json(), r.headers.get("X-Registry-Index")


async def test_match_members_groups_answers(front: Front, client: aiohttp.ClientSession) -> None:
    version = front.catalog.version(GROUP)
    status, body, index = await get(client, f"{front.base}/v1/match/{GROUP}/some-key?n=3")
    assert status == 200 and index == str(version)
    assert body["group"] == GROUP and body["key"] == "some-key"
    assert [s["id"] for s in body["services"]] == [s.id for s in front.catalog.match(GROUP, "some-key", 3)]
    first = body["services"][0]
    assert set(first) == {"id", "group", "addr", "tags", "replicas", "weight", "status", "health", "health_note"} \
        | ({"kind"} if "kind" in pb.Service.DESCRIPTOR.fields_by_name else set()) \
        | ({"origin"} if "origin" in pb.Service.DESCRIPTOR.fields_by_name else set())
    assert first["replicas"] == 40 and first.get("origin", "") == "" and first["health"] == "passing"

    status, body, index = await get(client, f"{front.base}/v1/members/{GROUP}")
    assert status == 200 and index == str(version) and body["version"] == version
    assert [s["id"] for s in body["services"]] == [f"{GROUP}-{i}" for i in range(5)]
    status, body, _ = await get(client, f"{front.base}/v1/members/{GROUP}?all=1")
    assert status == 200 and {s["status"] for s in body["services"]} == {"alive"}

    status, body, index = await get(client, f"{front.base}/v1/groups")
    assert status == 200 and index is not None and int(index) >= 1
    assert body == {"groups": [GROUP], "ring": {"algorithm": "consistent", "default_replicas": 4096,
                                                "only_passing": False}}


async def test_key_and_group_with_slash_percent_encoded(front: Front, client: aiohttp.ClientSession) -> None:
    front.catalog.apply("odd-1", {"group": "a/b", "addr": "10.1.0.1:1"})
    key = "users/42/avatar é"
    status, body, _ = await get(client, f"{front.base}/v1/match/{quote('a/b', safe='')}/{quote(key, safe='')}")
    assert status == 200, body
    assert body["group"] == "a/b" and body["key"] == key and body["services"][0]["id"] == "odd-1"
    # the key's owner is the one the catalog gives for the decoded key
    status, body, _ = await get(client, f"{front.base}/v1/match/{GROUP}/{quote(key, safe='')}")
    assert body["services"][0]["id"] == front.catalog.match(GROUP, key)[0].id


async def test_healthz_follows_health(front: Front, client: aiohttp.ClientSession) -> None:
    assert (await get(client, f"{front.base}/healthz"))[:2] == (200, {"status": "serving"})
    front.health.set_serving(False)
    assert (await get(client, f"{front.base}/healthz"))[:2] == (503, {"status": "not_serving"})


@pytest.mark.parametrize(("path", "status", "code", "words"), [
    ("/v1/match/nope/k", 404, "NOT_FOUND", "group 'nope' not found"),
    ("/v1/members/nope", 404, "NOT_FOUND", "group 'nope' not found"),
    (f"/v1/match/{GROUP}/k?n=0x", 400, "INVALID_ARGUMENT", "n='0x' is not an integer"),
    (f"/v1/match/{GROUP}/k?n=1001", 400, "INVALID_ARGUMENT", "n=1001 out of range 1..1000"),
    (f"/v1/match/{GROUP}/k?n=-1", 400, "INVALID_ARGUMENT", "n=-1 out of range"),
    (f"/v1/match/{GROUP}/", 400, "INVALID_ARGUMENT", "key is empty"),
    (f"/v1/members/{GROUP}?all=maybe", 400, "INVALID_ARGUMENT", "all='maybe'"),
    (f"/v1/members/{GROUP}?index=x", 400, "INVALID_ARGUMENT", "index='x'"),
    (f"/v1/members/{GROUP}?index=1&wait=soon", 400, "INVALID_ARGUMENT", "wait: duration 'soon'"),
    ("/v1/nothing", 404, "NOT_FOUND", "no route GET /v1/nothing"),
    ("/metrics", 404, "NOT_FOUND", "-metrics-addr"),
    ("/ui", 404, "NOT_FOUND", "reserved"),  # "/" is the web page (registry.http.ui)
])
async def test_errors_are_one_json_line(front: Front, client: aiohttp.ClientSession, path: str, status: int,
                                        code: str, words: str) -> None:
    got, body, _ = await get(client, front.base + path)
    assert (got, body["code"]) == (status, code), body
    assert words in body["error"] and "\n" not in body["error"], body
    assert set(body) == {"error", "code"}


async def test_wrong_method_is_405_with_allow(front: Front, client: aiohttp.ClientSession) -> None:
    async with client.post(f"{front.base}/v1/groups") as r:
        assert r.status == 405 and "GET" in r.headers["Allow"]
        assert (await r.json())["code"] == "UNIMPLEMENTED"


# The same inputs through gRPC (the native front on the same core) and HTTP: the same services, or the
# same error status and text.
CASES = [("match", GROUP, "k1", 1), ("match", GROUP, "k2", 3), ("match", GROUP, "k", 1001), ("match", "nope", "k", 1),
         ("match", GROUP, "k", -2), ("members", GROUP, "", 0), ("members", "nope", "", 0),
         ("members_all", GROUP, "", 0), ("members_all", "nope", "", 0)]


@pytest.mark.parametrize(("kind", "group", "key", "n"), CASES)
async def test_http_and_grpc_agree(front: Front, client: aiohttp.ClientSession, kind: str, group: str, key: str,
                                   n: int) -> None:
    async with grpc.aio.insecure_channel(front.grpc_addr) as ch:
        stub = pb_grpc.RegistryStub(ch)  # type: ignore[no-untyped-call]
        try:
            if kind == "match":
                resp: Any = await stub.Match(pb.MatchRequest(group=group, key=key, n=n), timeout=10)
            else:
                resp = await stub.Members(pb.MembersRequest(group=group, all=kind == "members_all"), timeout=10)
            grpc_answer: Any = [message_json(s) for s in resp.services]
        except grpc.aio.AioRpcError as exc:
            grpc_answer = (exc.code().name, exc.details())
    if kind == "match":
        url = f"{front.base}/v1/match/{group}/{key}?n={n}"
    else:
        url = f"{front.base}/v1/members/{group}" + ("?all=1" if kind == "members_all" else "")
    status, body, _ = await get(client, url)
    http_answer: Any = body["services"] if status == 200 else (body["code"], body["error"])
    assert http_answer == grpc_answer
