"""What guards the HTTP front: the write token (401/403, reads open), the body bound (413 before the body is
read whole), bodies that are not JSON objects (400), HTTPS with the registry's TLS files (client certificates
with a CA), and the connection caps (refused at accept, counted in /metrics)."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from registry.http.front import HttpLimits
from registry.tls import TlsFiles
from tests.e2e.certs import Pki, write_pki
from tests.http.conftest import GROUP, Front, client_context, close_front, make_front

TOKEN = "s3cret-token"
WRITES = [("PUT", "/v1/services/web/t1", b'{"addr": "10.0.0.9:1"}'), ("DELETE", "/v1/services/web/t1", b""),
          ("PUT", "/storage/t1", b'{"host": "10.0.0.9", "port": 1}'), ("DELETE", "/storage/t1", b"")]


@pytest.fixture
async def guarded() -> AsyncIterator[Front]:
    f = await make_front(token=TOKEN)
    yield f
    await close_front(f)


@pytest.mark.parametrize(("method", "path", "body"), WRITES)
async def test_writes_need_the_token(guarded: Front, client: aiohttp.ClientSession, method: str, path: str,
                                     body: bytes) -> None:
    async with client.request(method, guarded.base + path, data=body) as r:
        assert r.status == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
        assert (await r.json())["code"] == "UNAUTHENTICATED"
    for headers in ({"Authorization": "Bearer wrong"}, {"X-Registry-Token": TOKEN + "x"}):
        async with client.request(method, guarded.base + path, data=body, headers=headers) as r:
            assert r.status == 403
            assert await r.json() == {"error": "wrong token", "code": "PERMISSION_DENIED"}
    for headers in ({"Authorization": f"Bearer {TOKEN}"}, {"X-Registry-Token": TOKEN}):
        async with client.request(method, guarded.base + path, data=body, headers=headers) as r:
            # past the token: this front has no TTL driver, so 503 (the registry's tests write for real)
            assert r.status == 503, await r.text()
    assert guarded.http.writes.denied == 3


async def test_reads_stay_open(guarded: Front, client: aiohttp.ClientSession) -> None:
    for path in (f"/v1/members/{GROUP}", f"/v1/match/{GROUP}/k", "/v1/groups", "/healthz", f"/{GROUP}"):
        async with client.get(guarded.base + path) as r:
            assert r.status == 200, (path, await r.text())


async def test_body_over_16k_is_413_before_it_is_read(front: Front, client: aiohttp.ClientSession) -> None:
    big = b'{"addr": "' + b"x" * (17 * 1024) + b'"}'
    async with client.put(front.base + "/v1/services/web/big", data=big) as r:
        assert r.status == 413
        assert (await r.json())["code"] == "RESOURCE_EXHAUSTED"

    # chunked (no Content-Length), and endless: refused once 16 KiB are in, not read to the end
    sent = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal sent
        yield b'{"addr": "'
        while sent < 64 << 20:
            sent += 4096
            yield b"x" * 4096

    async with client.put(front.base + "/storage/big", data=endless()) as r:
        assert r.status == 413
    assert sent < 16 << 20, f"{sent} bytes sent before the 413"


@pytest.mark.parametrize(("body", "words"), [
    (b"[1, 2]", "not a JSON object"), (b"{nope", "not JSON"), (b"\xff\xfe", "not UTF-8"),
    # nested deeper than the parser's recursion (3.10-3.12: not JSON; 3.13 parses it: then not an object)
    (b"[" * 5000 + b"]" * 5000, "JSON"), (b"", "not JSON"),
], ids=["array", "broken", "not-utf8", "deep", "empty"])
async def test_bodies_that_are_not_json_objects(front: Front, client: aiohttp.ClientSession, body: bytes,
                                                words: str) -> None:
    for path in ("/v1/services/web/x", "/storage/x"):
        async with client.put(front.base + path, data=body) as r:
            assert r.status == 400
            answer = await r.json()
            assert answer["code"] == "INVALID_ARGUMENT" and words in answer["error"], answer


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return write_pki(Path(tmp_path_factory.mktemp("pki")))


async def test_https_with_the_registry_tls_files(pki: Pki) -> None:
    front = await make_front(tls=TlsFiles(str(pki.server_cert), str(pki.server_key)))
    try:
        ctx = client_context(pki)
        async with aiohttp.ClientSession() as c:
            async with c.get(f"https://127.0.0.1:{front.http.port}/v1/members/{GROUP}", ssl=ctx) as r:
                assert r.status == 200 and (await r.json())["group"] == GROUP
            with pytest.raises(aiohttp.ClientError):  # plaintext to a TLS port
                async with c.get(f"http://127.0.0.1:{front.http.port}/healthz") as r:
                    await r.read()
    finally:
        await close_front(front)


async def test_https_client_certificates_with_a_ca(pki: Pki) -> None:
    front = await make_front(tls=TlsFiles(str(pki.server_cert), str(pki.server_key), str(pki.ca)))
    url = f"https://127.0.0.1:{front.http.port}/healthz"
    try:
        async with aiohttp.ClientSession() as c:
            ctx = client_context(pki)
            ctx.load_cert_chain(str(pki.client_cert), str(pki.client_key))
            async with c.get(url, ssl=ctx) as r:
                assert r.status == 200
            for cert, key in ((None, None), (pki.rogue_cert, pki.rogue_key)):
                bad = client_context(pki)
                if cert is not None and key is not None:
                    bad.load_cert_chain(str(cert), str(key))
                with pytest.raises((aiohttp.ClientError, ssl.SSLError, ConnectionError)):
                    async with c.get(url, ssl=bad) as r:
                        await r.read()
    finally:
        await close_front(front)


def _connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.settimeout(10)
    return s


def _refused(s: socket.socket) -> bool:
    """The server closed the connection without answering (EOF or reset on read)."""
    try:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        return s.recv(4096) == b""
    except ConnectionError:
        return True


async def test_connection_caps_per_source_and_per_process() -> None:
    front = await make_front(HttpLimits(max_connections=4, max_connections_per_source=2))
    port = front.http.port
    held: list[socket.socket] = []
    try:
        loop = asyncio.get_running_loop()
        held += [await loop.run_in_executor(None, _connect, port) for _ in range(2)]
        deadline = time.monotonic() + 30
        while front.http.stats.connections < 2:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.005)
        third = await loop.run_in_executor(None, _connect, port)
        held.append(third)
        assert await loop.run_in_executor(None, _refused, third), "a third connection from one address was served"
        assert front.http.stats.connections_refused == 1
        # the held ones are served; closing one makes room again
        held[0].close()
        while front.http.stats.connections_refused == 1 and len(held) < 50:
            fresh = await loop.run_in_executor(None, _connect, port)
            held.append(fresh)
            if not await loop.run_in_executor(None, _refused, fresh):
                break
            await asyncio.sleep(0.01)
        rows = {s[0]["reason"]: s[1] for m in front.http.metrics() if m.name == "registry_http_refusals_total"
                for s in m.samples}
        assert rows["connection_cap"] >= 1
    finally:
        for s in held:
            s.close()
        await close_front(front)
