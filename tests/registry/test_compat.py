"""The Go-compatible service `R`: a client built from the compat proto alone (as a Go
client is) gets the same answers as RpcClient, and the bytes on the wire are the Go
original's (checked by hand-encoding requests and decoding answers)."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from registry.client import NotFound, RpcClient
from registry.compat import rpcserver_pb2 as compat_pb2
from registry.compat import rpcserver_pb2_grpc as compat_grpc
from tests.registry.rpc_fixtures import GROUP, ServerThread, populate

KEYS = [f"device-{i}" for i in range(200)]


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    s = ServerThread()
    s.call(populate, s.catalog, GROUP, 6)
    yield s
    s.stop()


@pytest.fixture
def raw(server: ServerThread) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.addr) as ch:
        yield ch


def test_compat_match_and_members_equal_rpc_client(server: ServerThread, raw: grpc.Channel) -> None:
    r = compat_grpc.RStub(raw)  # type: ignore[no-untyped-call]
    with RpcClient(server.addr) as c:
        for key in KEYS:
            got = r.Match(compat_pb2.MatchRequest(group=GROUP, key=key), timeout=10)
            want = c.match(GROUP, key)
            assert (got.id, got.group, got.addr) == (want.id, want.group, want.addr)
        members = r.Members(compat_pb2.MembersRequest(group=GROUP), timeout=10)
        assert sorted((s.id, s.group, s.addr) for s in members.services) == sorted(
            (s.id, s.group, s.addr) for s in c.members(GROUP))
        with pytest.raises(NotFound):
            c.match("nosuch", "k")
    with pytest.raises(grpc.RpcError) as info:
        r.Match(compat_pb2.MatchRequest(group="nosuch", key="k"), timeout=10)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND and "'nosuch'" in info.value.details()
    with pytest.raises(grpc.RpcError) as info:
        r.Members(compat_pb2.MembersRequest(group=""), timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def _string_field(number: int, value: str) -> bytes:
    data = value.encode()
    assert len(data) < 128
    return bytes([number << 3 | 2, len(data)]) + data


def _parse(data: bytes) -> list[tuple[int, bytes]]:
    """(field number, payload) of every length-delimited field (all the Go messages have)."""
    out, i = [], 0
    while i < len(data):
        tag = data[i]
        assert tag & 7 == 2, "only length-delimited fields expected"
        i += 1
        length, shift = 0, 0
        while True:
            b = data[i]
            i += 1
            length |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                break
        out.append((tag >> 3, data[i:i + length]))
        i += length
    return out


def test_wire_bytes_as_go_sends_them(server: ServerThread, raw: grpc.Channel) -> None:
    """Hand-encoded Go request bytes on the path Go uses: '/R/Match' (no proto package)."""
    match = raw.unary_unary("/R/Match")  # no (de)serializers: raw bytes both ways
    members = raw.unary_unary("/R/Members")
    with RpcClient(server.addr) as c:
        want = c.match(GROUP, "device-7")
        answer = match(_string_field(1, GROUP) + _string_field(2, "device-7"), timeout=10)
        assert dict(_parse(answer)) == {1: want.id.encode(), 2: GROUP.encode(), 3: want.addr.encode()}
        listed = members(_string_field(1, GROUP), timeout=10)
        entries = [dict(_parse(payload)) for number, payload in _parse(listed) if number == 1]
        assert sorted((e[1].decode(), e[3].decode()) for e in entries) == sorted(
            (s.id, s.addr) for s in c.members(GROUP))
