"""Fixtures of the native gRPC front's tests: a catalog of 5 services and a server on 127.0.0.1:0.
(Modules that test both fronts define their own `catalog`, which takes precedence there.)"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from registry.catalog import Catalog
from registry.native import NativeServer, start_native
from tests.registry.rpc_fixtures import populate


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
