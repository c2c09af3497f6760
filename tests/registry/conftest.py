"""Fixtures of the gRPC tests: a catalog of 5 services, and a server on 127.0.0.1:0 serving it: the native
front (`native_server`), or each front in turn (`server`, parametrized over `ENGINES`).
(A module that wants other services defines its own `catalog`, which takes precedence there.)"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from registry.catalog import Catalog
from registry.native import NativeServer, start_native
from tests.registry.rpc_fixtures import ENGINES, AnyServer, populate, start_server


@pytest.fixture
async def catalog() -> Catalog:
    c = Catalog()
    populate(c)
    return c


@pytest.fixture
async def native_server(catalog: Catalog) -> AsyncIterator[NativeServer]:
    s = await start_native(catalog, "127.0.0.1:0")
    yield s
    await s.stop(None)


@pytest.fixture(params=ENGINES)
async def server(catalog: Catalog, request: pytest.FixtureRequest) -> AsyncIterator[AnyServer]:
    """`catalog` served by each gRPC front in turn: a test taking it runs against both."""
    s = await start_server(catalog, request.param)
    yield s
    await s.stop(None)
