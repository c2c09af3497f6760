"""Fixtures of the HTTP front's tests: a real catalog behind the native gRPC front and the HTTP front on
127.0.0.1:0 (`front`), or a whole in-process `RegistryServer` with -http-addr (`registry`: TTL writes need
its driver); aiohttp's client as the HTTP client."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest

from registry.catalog import Catalog
from registry.health import Health
from registry.http.front import HttpFront, HttpLimits
from registry.native import NativeServer, start_native
from registry.server import RegistryServer, ServerConfig
from tests.e2e.certs import Pki

GROUP = "web"


def client_context(pki: Pki) -> ssl.SSLContext:
    """A client context trusting the test CA, as a user makes one (3.13's default is X509_STRICT: the test
    certificates carry the key identifiers it requires, tests/e2e/certs.py)."""
    return ssl.create_default_context(cafile=str(pki.ca))


def populate(catalog: Catalog, group: str = GROUP, count: int = 5) -> list[str]:
    names = [f"{group}-{i}" for i in range(count)]
    for i, name in enumerate(names):
        catalog.apply(name, {"group": group, "addr": f"10.0.0.{i + 1}:8080", "replicas": "40"})
    return names


@dataclass
class Front:
    catalog: Catalog
    grpc: NativeServer
    http: HttpFront
    health: Health

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http.port}"

    @property
    def grpc_addr(self) -> str:
        return f"127.0.0.1:{self.grpc.port}"


async def make_front(limits: HttpLimits | None = None, **kw: object) -> Front:
    catalog = Catalog()
    populate(catalog)
    health = Health()
    grpc = await start_native(catalog, "127.0.0.1:0", health=health)
    http = HttpFront(grpc.core, health, ttl=lambda: None, limits=limits or HttpLimits(), **kw)  # type: ignore[arg-type]
    await http.start("127.0.0.1", 0)
    return Front(catalog, grpc, http, health)


async def close_front(f: Front) -> None:
    await f.http.stop()
    await f.grpc.stop(None)


@pytest.fixture
async def front() -> AsyncIterator[Front]:
    f = await make_front()
    yield f
    await close_front(f)


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def registry_config(ident: str = "http-1", **kw: object) -> ServerConfig:
    kw.setdefault("http_addr", ("127.0.0.1", 0))
    return ServerConfig(id=ident, bind=("127.0.0.1", 0), addr=("127.0.0.1", 0), profile="fast",
                        **kw)  # type: ignore[arg-type]


@pytest.fixture
async def registry() -> AsyncIterator[RegistryServer]:
    server = RegistryServer(registry_config())
    await server.start()
    yield server
    await server.stop()
