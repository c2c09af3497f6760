"""What only the native gRPC front has to prove (the answers themselves are tested on both fronts
in test_rpc.py and test_client.py): real HTTP/2 clients other than grpcio, compression, flow
control with large answers, hostile bytes, shutdown."""

from __future__ import annotations

import asyncio
import re
import subprocess

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from registry.catalog import Catalog
from registry.native import NativeServer, start_native
from registry.v1 import registry_pb2 as pb
from registry.v1 import registry_pb2_grpc as pb_grpc
from tests.registry.rpc_fixtures import GROUP, async_wait_for, tags


def stub_for(ch: grpc.aio.Channel) -> pb_grpc.RegistryStub:
    return pb_grpc.RegistryStub(ch)  # type: ignore[no-untyped-call]


async def test_gzip_request_is_accepted(native_server: NativeServer, catalog: Catalog) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{native_server.port}", compression=grpc.Compression.Gzip) as ch:
        resp = await stub_for(ch).MatchBatch(pb.MatchBatchRequest(group=GROUP, keys=[f"k{i}" for i in range(500)]))
    assert [s.id for s in resp.services] == [s.id for s in catalog.match_batch(GROUP, [f"k{i}" for i in range(500)])]
    assert native_server.stats.compressed_requests == 1  # grpcio did compress it


async def test_unknown_method_is_unimplemented_naming_it(native_server: NativeServer) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{native_server.port}") as ch:
        call = ch.unary_unary("/registry.v1.Registry/Nope")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call(b"")
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED and "/registry.v1.Registry/Nope" in str(err.value.details())
    # Counted under the plain number: the metrics label is str(key), a Status's name on Python 3.10.
    assert 12 in native_server.stats.errors and all(type(k) is int for k in native_server.stats.errors)


async def test_request_that_is_not_protobuf_is_invalid_argument(native_server: NativeServer) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{native_server.port}") as ch:
        call = ch.unary_unary("/registry.v1.Registry/Match")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call(b"\xff\xff\xff")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "registry.v1.MatchRequest" in str(err.value.details())


async def test_error_message_with_non_ascii_group_round_trips(native_server: NativeServer) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{native_server.port}") as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub_for(ch).Members(pb.MembersRequest(group="gruppe-ü%20"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND and "gruppe-ü%20" in str(err.value.details())


async def test_large_answers_cross_flow_control_windows(catalog: Catalog) -> None:
    for i in range(1500):  # ~90 kB Members answer: larger than a default 64 KiB window and a 16 KiB frame
        catalog.apply(f"big-{i:04d}", tags("big", f"10.1.{i // 250}.{i % 250}:80", 8))
    s = await start_native(catalog, "127.0.0.1:0")
    try:
        opts = [("grpc.http2.bdp_probe", 0), ("grpc.max_receive_message_length", 64 << 20)]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{s.port}", options=opts) as ch:
            stub = stub_for(ch)
            answers = await asyncio.gather(*(stub.Members(pb.MembersRequest(group="big")) for _ in range(20)))
            keys = [f"u{i}" for i in range(20_000)]
            batch = await stub.MatchBatch(pb.MatchBatchRequest(group="big", keys=keys))  # ~1.2 MB answer
        assert all(len(a.services) == 1500 for a in answers)
        assert sorted(x.id for x in answers[0].services) == [f"big-{i:04d}" for i in range(1500)]
        assert [x.id for x in batch.services] == [x.id for x in catalog.match_batch("big", keys)]
    finally:
        await s.stop(None)


async def test_concurrent_calls_on_one_connection(native_server: NativeServer, catalog: Catalog) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{native_server.port}") as ch:
        stub = stub_for(ch)
        keys = [f"user-{i}" for i in range(400)]
        answers = await asyncio.gather(*(stub.Match(pb.MatchRequest(group=GROUP, key=k)) for k in keys))
    assert [a.services[0].id for a in answers] == [catalog.match(GROUP, k, 1)[0].id for k in keys]


async def _raw(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(65536), 10)
    finally:
        writer.close()


@pytest.mark.parametrize(
    "garbage",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x04\x08\x00\x00\x00\x00\x00\x00\x00\x00\x00",  # zero WINDOW_UPDATE
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\xff" * 64,
    ],
)
async def test_hostile_bytes_cost_one_connection_only(native_server: NativeServer, catalog: Catalog, garbage: bytes) -> None:
    before = native_server.stats.protocol_errors
    await _raw(native_server.port, garbage)
    await async_wait_for(lambda: native_server.stats.protocol_errors == before + 1, what="protocol error counted")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{native_server.port}") as ch:
        resp = await stub_for(ch).Match(pb.MatchRequest(group=GROUP, key="k"))
    assert resp.services[0].id == catalog.match(GROUP, "k", 1)[0].id


async def test_stop_ends_watches_unavailable_and_health_not_serving(catalog: Catalog) -> None:
    s = await start_native(catalog, "127.0.0.1:0")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{s.port}") as ch:
        watch = stub_for(ch).Watch(pb.WatchRequest(group=GROUP))
        first = await watch.read()
        assert first.snapshot and len(first.services) == 5
        health = health_pb2_grpc.HealthStub(ch).Watch(health_pb2.HealthCheckRequest(service=""))
        assert (await health.read()).status == health_pb2.HealthCheckResponse.SERVING
        await s.stop(1.0)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await watch.read()
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        got = []
        with pytest.raises(grpc.aio.AioRpcError):
            while True:
                got.append((await health.read()).status)
        assert health_pb2.HealthCheckResponse.NOT_SERVING in got
    assert s.core.watcher_count(GROUP) == 0


async def test_health_unknown_service_is_not_found(native_server: NativeServer) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{native_server.port}") as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service="nope"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def _grpc_request(message: bytes) -> bytes:
    return b"\x00" + len(message).to_bytes(4, "big") + message


@pytest.mark.nghttp2
async def test_nghttp2_client_gets_correct_answers(native_server: NativeServer, catalog: Catalog, tmp_path: object) -> None:
    """h2load (nghttp2's HPACK, framing and flow control, not grpcio's) sends 2,000 Match calls."""
    import pathlib

    req = pb.MatchRequest(group=GROUP, key="user-7").SerializeToString()
    body = pathlib.Path(str(tmp_path)) / "req.bin"
    body.write_bytes(_grpc_request(req))
    answer = await asyncio.to_thread(
        subprocess.run,
        ["h2load", "-n", "2000", "-c", "2", "-m", "32", "-d", str(body),
         "-H", "content-type: application/grpc", "-H", "te: trailers",
         f"http://127.0.0.1:{native_server.port}/registry.v1.Registry/Match"],
        capture_output=True, text=True, timeout=120,
    )
    assert "2000 succeeded" in answer.stdout, answer.stdout + answer.stderr
    # every response: the cached Service bytes framed once (h2load counts DATA bytes)
    want = len(_grpc_request(native_server.core.wire_match(req)))
    data = re.search(r"\((\d+)\) data", answer.stdout)
    assert data is not None and int(data.group(1)) == 2000 * want, answer.stdout


@pytest.mark.nghttp2
async def test_nghttp_client_sees_grpc_trailers(native_server: NativeServer, tmp_path: object) -> None:
    import pathlib

    body = pathlib.Path(str(tmp_path)) / "req.bin"
    body.write_bytes(_grpc_request(pb.MembersRequest(group="nope").SerializeToString()))
    out = await asyncio.to_thread(
        subprocess.run,
        ["nghttp", "-v", "-d", str(body), "-H", "content-type: application/grpc",
         f"http://127.0.0.1:{native_server.port}/registry.v1.Registry/Members"],
        capture_output=True, text=True, timeout=60,
    )
    assert "grpc-status: 5" in out.stdout and "grpc-message: group 'nope' not found" in out.stdout, out.stdout


def _h2_frame(ftype: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    return len(payload).to_bytes(3, "big") + bytes((ftype, flags)) + sid.to_bytes(4, "big") + payload


def _h2_call(sid: int, path: str, message: bytes) -> bytes:
    """HEADERS + DATA(END_STREAM) of one gRPC call, headers as plain literals (no HPACK state)."""
    from registry.h2.hpack import encode_literal

    block = b"".join(encode_literal(n, v) for n, v in (
        (b":method", b"POST"), (b":scheme", b"http"), (b":path", path.encode()), (b":authority", b"t"),
        (b"content-type", b"application/grpc"), (b"te", b"trailers")))
    return _h2_frame(1, 0x4, sid, block) + _h2_frame(0, 0x1, sid, _grpc_request(message))


_OPEN_WIDE = (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + _h2_frame(4, 0, 0, (4).to_bytes(2, "big") + (2**31 - 1).to_bytes(4, "big"))
              + _h2_frame(8, 0, 0, (2**31 - 1 - 65535).to_bytes(4, "big")))  # windows wide open: only TCP can push back


def _frames(data: bytes) -> list[tuple[int, int, int]]:
    out, pos = [], 0
    while pos + 9 <= len(data):
        n = int.from_bytes(data[pos:pos + 3], "big")
        if pos + 9 + n > len(data):
            break
        out.append((data[pos + 3], data[pos + 4], int.from_bytes(data[pos + 5:pos + 9], "big")))
        pos += 9 + n
    return out


async def test_client_that_does_not_read_is_paused_then_served_whole(native_server: NativeServer) -> None:
    n = 40_000
    req = pb.MatchRequest(group=GROUP, key="user-1").SerializeToString()
    reader, writer = await asyncio.open_connection("127.0.0.1", native_server.port)
    writer.transport.set_write_buffer_limits(high=64 << 20)

    async def send() -> None:
        writer.write(_OPEN_WIDE)
        for i in range(n):
            writer.write(_h2_call(2 * i + 1, "/registry.v1.Registry/Match", req))
        await writer.drain()

    sender = asyncio.ensure_future(send())
    try:
        conns = native_server.connections
        # the server stops reading a client whose answers pile up unread, instead of buffering them all
        await async_wait_for(lambda: any(c.transport is not None and not c.transport.is_reading() for c in conns),
                             timeout=60, what="server paused reading")
        data = bytearray()
        ended = 0
        while ended < n:
            chunk = await asyncio.wait_for(reader.read(1 << 20), 60)
            assert chunk, "connection closed early"
            data += chunk
            frames = _frames(bytes(data))
            ended = sum(1 for t, f, _ in frames if t == 1 and f & 0x1)  # trailers: one per call
        assert {sid for t, f, sid in frames if t == 1 and f & 0x1} == {2 * i + 1 for i in range(n)}
        await sender
    finally:
        sender.cancel()
        writer.close()


async def test_keepalive_closes_a_peer_that_stops_answering_pings(catalog: Catalog) -> None:
    s = await start_native(catalog, "127.0.0.1:0", keepalive=0.2)
    try:
        # grpcio answers PINGs: its Watch survives many keepalive rounds
        async with grpc.aio.insecure_channel(f"127.0.0.1:{s.port}") as ch:
            watch = stub_for(ch).Watch(pb.WatchRequest(group=GROUP))
            assert (await watch.read()).snapshot
            conn = next(iter(s.connections))
            await async_wait_for(lambda: conn.h2.pings_acked >= 3, what="3 keepalive PINGs answered")
            catalog.apply("late", tags(GROUP, "10.9.9.9:1"))
            change = await asyncio.wait_for(watch.read(), 30)
            assert [x.id for x in change.added] == ["late"]
            # a raw peer with an open Watch that never answers PINGs is closed
            reader, writer = await asyncio.open_connection("127.0.0.1", s.port)
            writer.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + _h2_frame(4, 0, 0)
                         + _h2_call(1, "/registry.v1.Registry/Watch", pb.WatchRequest(group=GROUP).SerializeToString()))
            got = bytearray()
            while chunk := await asyncio.wait_for(reader.read(65536), 30):
                got += chunk
            assert any(t == 6 and not f & 1 for t, f, _ in _frames(bytes(got))), "no PING was sent"
            writer.close()
            assert conn in s.connections  # the grpcio one is still there
            watch.cancel()
    finally:
        await s.stop(None)


@pytest.mark.nghttp2
async def test_plain_http_requests_get_http_errors_not_grpc(native_server: NativeServer) -> None:
    """A GET (curl, a browser, a health prober on the wrong port) and a non-gRPC POST: 405 and 415."""
    for args, want in ((["-H", "content-type: application/grpc"], ":status: 405"),  # GET
                       (["-d", "/dev/null", "-H", "content-type: application/json"], ":status: 415")):
        out = await asyncio.to_thread(
            subprocess.run, ["nghttp", "-v", *args, f"http://127.0.0.1:{native_server.port}/registry.v1.Registry/Match"],
            capture_output=True, text=True, timeout=60)
        assert want in out.stdout, out.stdout
    async with grpc.aio.insecure_channel(f"127.0.0.1:{native_server.port}") as ch:  # the server is fine after both
        await stub_for(ch).Members(pb.MembersRequest(group=GROUP))


async def test_a_failing_handler_is_internal_and_a_failing_front_costs_one_connection(native_server: NativeServer) -> None:
    """Fault injection: a handler that raises answers INTERNAL naming the method; a bug in the front
    itself closes that connection only (counted), and the next connection is served."""
    def broken(data: bytes) -> bytes:
        raise RuntimeError("boom")

    native_server.unary["/registry.v1.Registry/Groups"] = broken
    async with grpc.aio.insecure_channel(f"127.0.0.1:{native_server.port}") as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub_for(ch).Groups(pb.GroupsRequest())
    assert err.value.code() == grpc.StatusCode.INTERNAL and "/registry.v1.Registry/Groups" in str(err.value.details())

    real_kind_of = native_server.kind_of
    native_server.kind_of = lambda path: 1 // 0  # type: ignore[method-assign, assignment, return-value]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{native_server.port}") as ch:
        with pytest.raises(grpc.aio.AioRpcError):
            await stub_for(ch).Members(pb.MembersRequest(group=GROUP), timeout=10)
    assert native_server.stats.internal_errors >= 1
    native_server.kind_of = real_kind_of  # type: ignore[method-assign]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{native_server.port}") as ch:
        assert len((await stub_for(ch).Members(pb.MembersRequest(group=GROUP))).services) == 5


@pytest.mark.nghttp2
async def test_client_with_a_zero_header_table_is_served(native_server: NativeServer, tmp_path: object) -> None:
    """nghttp -c 0 lowers SETTINGS_HEADER_TABLE_SIZE to 0 and fails the connection unless our next
    header block acknowledges it (RFC 7541 section 4.2)."""
    import pathlib

    body = pathlib.Path(str(tmp_path)) / "req.bin"
    body.write_bytes(_grpc_request(pb.MembersRequest(group=GROUP).SerializeToString()))
    out = await asyncio.to_thread(
        subprocess.run,
        ["nghttp", "-v", "-c", "0", "-d", str(body), "-H", "content-type: application/grpc",
         f"http://127.0.0.1:{native_server.port}/registry.v1.Registry/Members"],
        capture_output=True, text=True, errors="replace", timeout=60,
    )
    assert "grpc-status: 0" in out.stdout and "COMPRESSION_ERROR" not in out.stdout, out.stdout[-3000:]


async def test_client_that_opens_calls_but_never_opens_windows_is_refused_new_ones(catalog: Catalog) -> None:
    """A peer with stream windows of 0 gets no answer bytes; once ~16 MiB of answers wait for it,
    new calls are refused with RST_STREAM(REFUSED_STREAM) instead of being buffered without end."""
    for i in range(1500):  # ~90 kB per Members answer
        catalog.apply(f"big-{i:04d}", tags("big", f"10.1.{i // 250}.{i % 250}:80", 8))
    s = await start_native(catalog, "127.0.0.1:0")
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", s.port)
        closed_windows = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + _h2_frame(4, 0, 0, (4).to_bytes(2, "big") + bytes(4))
        req = pb.MembersRequest(group="big").SerializeToString()
        writer.write(closed_windows + b"".join(_h2_call(2 * i + 1, "/registry.v1.Registry/Members", req)
                                               for i in range(300)))
        got = bytearray()
        refused: set[int] = set()
        while len(refused) < 50:
            chunk = await asyncio.wait_for(reader.read(65536), 30)
            assert chunk, "connection closed"
            got += chunk
            refused = {sid for t, _, sid in _frames(bytes(got)) if t == 3}
        assert s.stats.refused_streams >= len(refused) and min(refused) > 150  # the first ~180 were accepted
        writer.close()
    finally:
        await s.stop(None)


async def test_connection_that_never_starts_http2_is_closed(catalog: Catalog) -> None:
    s = await start_native(catalog, "127.0.0.1:0", preface_timeout=0.3)
    try:
        good_r, good_w = await asyncio.open_connection("127.0.0.1", s.port)  # opened first: its timer fires first
        good_w.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + _h2_frame(4, 0, 0))
        silent_r, silent_w = await asyncio.open_connection("127.0.0.1", s.port)
        await asyncio.wait_for(silent_r.read(), 30)  # read() returns at EOF: the server closed it
        assert silent_r.at_eof()
        assert s.stats.preface_timeouts == 1
        good_w.write(_h2_frame(6, 0, 0, b"stillhere"[:8]))  # the client that spoke HTTP/2 is still served
        got = bytearray()
        while not any(t == 6 and f & 1 for t, f, _ in _frames(bytes(got))):
            chunk = await asyncio.wait_for(good_r.read(65536), 30)
            assert chunk, "the HTTP/2 client was closed too"
            got += chunk
        good_w.close()
        silent_w.close()
    finally:
        await s.stop(None)
