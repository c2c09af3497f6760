"""Fixtures of the HTTP/2 tests: a native gRPC server in a thread of its own, and clients on it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.h2.wirepeer import Peer, native_server_thread


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    with native_server_thread() as p:
        yield p


@pytest.fixture
def peer(port: int) -> Iterator[Peer]:
    p = Peer(port)
    yield p
    p.close()
