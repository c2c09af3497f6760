"""What a person's mistake looks like through the client: typed errors (InvalidAddress,
InvalidArgument: both ValueErrors) raised before any call, naming the bad value, and
connection failures that say when the cause is a TLS setting that does not match the
registry's. Against real servers on loopback (both gRPC fronts) where a server is involved."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from registry import api
from registry.client import (
    AsyncRpcClient,
    InvalidAddress,
    InvalidArgument,
    RegistryError,
    RpcClient,
    TlsConfig,
    Unavailable,
    common,
)
from registry.tls import TlsFiles
from registry.v1 import registry_pb2 as pb
from registry.v1 import registry_pb2_grpc as pb_grpc
from tests.registry.rpc_fixtures import ENGINES, GROUP, ServerThread, make_certs, populated_server

BAD_ADDRESSES = ["garbage", ":9800", "host:0", "::1:9800", "bad host:1", "host:99999", "", " , "]
Factory = Callable[..., Any]
CLIENTS: dict[str, Factory] = {
    "sync": RpcClient,
    "cached": lambda *a, **kw: RpcClient(*a, cache=True, **kw),
    "async": AsyncRpcClient,
}


@pytest.fixture(scope="module", params=ENGINES)
def server(request: pytest.FixtureRequest) -> Iterator[ServerThread]:
    yield from populated_server(request.param)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.mark.parametrize("kind", CLIENTS)
@pytest.mark.parametrize("bad", BAD_ADDRESSES)
def test_bad_address_is_invalid_address_naming_it(kind: str, bad: str) -> None:
    with pytest.raises(InvalidAddress) as info:
        CLIENTS[kind](bad)
    err = info.value
    assert isinstance(err, ValueError) and isinstance(err, RegistryError) and isinstance(err, InvalidArgument)
    text = str(err)
    assert "host:port" in text, text  # the expected form
    if bad.strip(" ,"):
        assert repr(bad) in text, text  # the culprit, quoted


def test_address_of_the_wrong_type_is_invalid_address() -> None:
    for bad in (9800, [b"h:1"], None):
        with pytest.raises(InvalidAddress):
            RpcClient(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", CLIENTS)
def test_timeout_must_be_positive_and_finite(kind: str) -> None:
    for bad in (0, -1, float("nan"), float("inf"), "5"):
        with pytest.raises(InvalidArgument, match="timeout must be a positive number of seconds"):
            CLIENTS[kind]("127.0.0.1:9800", timeout=bad)


def test_per_call_timeout_checked_before_calling(server: ServerThread) -> None:
    with RpcClient(server.addr) as c:
        with pytest.raises(InvalidArgument, match="timeout"):
            c.members(GROUP, timeout=0)
        assert len(c.members(GROUP, timeout=10)) == 5


def _raw_match(addr: str, n: int) -> tuple[grpc.StatusCode, int]:
    """What the server itself answers for a MatchRequest with this n (no client-side checks)."""
    with grpc.insecure_channel(addr) as ch:
        stub = pb_grpc.RegistryStub(ch)  # type: ignore[no-untyped-call]
        try:
            resp = stub.Match(pb.MatchRequest(group=GROUP, key="k", n=n), timeout=10)
        except grpc.RpcError as err:
            return err.code(), 0
        return grpc.StatusCode.OK, len(resp.services)


def test_match_n_out_of_range_refused_as_the_server_does(server: ServerThread) -> None:
    """n < 1 or n > 1000 is InvalidArgument, cached or not, sync or async, as the server
    says INVALID_ARGUMENT for n = -1 and n = 1001 (n = 0 on the wire is proto3's "not set",
    which the server reads as 1; the Python API says "not set" with n=None)."""
    assert _raw_match(server.addr, -1) == (grpc.StatusCode.INVALID_ARGUMENT, 0)
    assert _raw_match(server.addr, api.MAX_MATCH_N + 1) == (grpc.StatusCode.INVALID_ARGUMENT, 0)
    assert _raw_match(server.addr, 0) == (grpc.StatusCode.OK, 1)
    for cache in (False, True):
        with RpcClient(server.addr, timeout=10, cache=cache) as c:
            for n in (0, -1, api.MAX_MATCH_N + 1):
                with pytest.raises(InvalidArgument, match=rf"n={n} out of range 1\.\.1000"):
                    c.match(GROUP, "k", n)
            assert len(c.match(GROUP, "k", 2)) == 2

    async def run() -> None:
        async with AsyncRpcClient(server.addr, timeout=10) as c:
            with pytest.raises(InvalidArgument, match="n=0 out of range"):
                await c.match(GROUP, "k", 0)
            assert len(await c.match(GROUP, "k", 2)) == 2

    asyncio.run(run())


def test_client_limits_are_the_servers() -> None:
    assert common.MAX_MATCH_N == api.MAX_MATCH_N and common.MAX_BATCH_KEYS == api.MAX_BATCH_KEYS


@pytest.mark.parametrize("cache", [False, True])
def test_match_batch_invalid_input_refused(server: ServerThread, cache: bool) -> None:
    with RpcClient(server.addr, timeout=10, cache=cache) as c:
        with pytest.raises(InvalidArgument, match="not one string"):
            c.match_batch(GROUP, "user-1")  # would have matched "u", "s", "e", ... one by one
        with pytest.raises(InvalidArgument, match="group is empty"):
            c.match_batch("", ["a"])
        with pytest.raises(InvalidArgument, match="key #1 is empty"):
            c.match_batch(GROUP, ["a", "", "b"])
        with pytest.raises(InvalidArgument, match="at most 100000 per batch"):
            c.match_batch(GROUP, ["k"] * (api.MAX_BATCH_KEYS + 1))
        assert len(c.match_batch(GROUP, ["a", "b"])) == 2


def test_tls_files_checked_when_the_client_is_made(tmp_path: Path, certs: dict[str, str]) -> None:
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello\n")
    missing = str(tmp_path / "missing.pem")
    for kw in ({"tls_ca": missing}, {"tls": TlsConfig(ca=str(not_pem))},
               {"tls_ca": certs["ca"], "tls_cert": missing, "tls_key": certs["client_key"]}):
        for make in CLIENTS.values():
            with pytest.raises(InvalidArgument) as info:
                make("127.0.0.1:9800", **kw)
            assert ("missing.pem" in str(info.value) and "No such file" in str(info.value)) or (
                "not.pem" in str(info.value) and "not a PEM file" in str(info.value)), info.value
    with pytest.raises(InvalidArgument, match="go together"):
        TlsConfig(ca=certs["ca"], cert=certs["client_cert"])
    with pytest.raises(InvalidArgument, match="not both"):
        RpcClient("127.0.0.1:9800", tls=TlsConfig(ca=certs["ca"]), tls_ca=certs["ca"])


def _failure(addr: str, **kw: Any) -> tuple[str, str]:
    """The Unavailable messages of a sync and an async call with these client settings."""
    with RpcClient(addr, timeout=10, **kw) as c, pytest.raises(Unavailable) as sync_info:
        c.groups()

    async def run() -> str:
        async with AsyncRpcClient(addr, timeout=10, **kw) as ac:
            with pytest.raises(Unavailable) as info:
                await ac.groups()
        return str(info.value)

    return str(sync_info.value), asyncio.run(run())


@pytest.mark.parametrize("engine", ENGINES)
def test_tls_mismatch_says_so(engine: str, certs: dict[str, str]) -> None:
    """Plaintext client, TLS registry: grpcio says only "Socket closed"; TLS client, plaintext
    registry: a handshake failure with WRONG_VERSION_NUMBER; mutual-TLS registry, client without
    a certificate: "Socket closed" again. Each now says which setting to change."""
    tls = ServerThread(tls=TlsFiles(cert=certs["server_cert"], key=certs["server_key"]), engine=engine)
    plain = ServerThread(engine=engine)
    mutual = ServerThread(tls=TlsFiles(cert=certs["server_cert"], key=certs["server_key"], ca=certs["ca"]),
                          engine=engine)
    try:
        for text in _failure(tls.addr):
            assert tls.addr in text and "may be serving TLS" in text and "TlsConfig(ca=" in text, text
            assert "-tls-ca" in text, text
        for text in _failure(plain.addr, tls_ca=certs["ca"]):
            assert plain.addr in text and "not serving TLS" in text and "without tls" in text, text
        for text in _failure(mutual.addr, tls_ca=certs["ca"]):
            assert "may require a client certificate" in text and "TlsConfig(cert=" in text, text
        # and with matching settings the same registries answer
        with RpcClient(tls.addr, timeout=10, tls_ca=certs["ca"]) as c:
            c.groups()
        with RpcClient(mutual.addr, timeout=10, tls=TlsConfig(ca=certs["ca"], cert=certs["client_cert"],
                                                              key=certs["client_key"])) as c:
            c.groups()
    finally:
        for s in (tls, plain, mutual):
            s.stop()


def test_no_tls_hint_for_an_ordinary_refusal() -> None:
    """A port nobody listens on is not a TLS problem: no hint is added."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        addr = f"127.0.0.1:{s.getsockname()[1]}"
    for text in _failure(addr):
        assert "TLS" not in text and "tls" not in text, text
