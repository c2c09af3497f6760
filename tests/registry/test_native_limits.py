"""Attacks on the native gRPC front's resources, each against a real server (a process of its own
where the test measures it from outside: open files, RSS, log size), with python-hyper's `h2`
as the hostile client (tests/registry/h2client.py) and grpcio as the legitimate one.

Issue 11, items 3 (memory), 5 (idle connections, descriptors), 8a (length prefix), 9b (watchers)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import select
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import h2.exceptions
import pytest

from registry.catalog import Catalog
from registry.native import start_native
from registry.native_limits import Limits
from registry.v1 import registry_pb2 as pb
from registry.v1 import registry_pb2_grpc as pb_grpc
from tests.logcheck import check_outputs
from tests.registry.h2client import H2Client, frame, rss_mb
from tests.registry.rpc_fixtures import ENGINES, GROUP, async_wait_for, populate, start_server

ROOT = Path(__file__).resolve().parents[2]
PROC = Path(__file__).resolve().parent / "native_server_proc.py"
MATCH = "/registry.v1.Registry/Match"
WATCH = "/registry.v1.Registry/Watch"
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # + empty SETTINGS


def _env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT) + os.pathsep + e.get("PYTHONPATH", "")
    return e


def _nofile(soft: int, hard: int, cmd: list[str]) -> list[str]:
    """`cmd` run with RLIMIT_NOFILE set to (soft, hard) by a Python shim that then execs it
    (not preexec_fn: grpcio's threads live in this process)."""
    shim = "import os, resource, sys; resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]), int(sys.argv[2]))); " \
        "os.execv(sys.argv[3], sys.argv[3:])"
    return [sys.executable, "-c", shim, str(soft), str(hard), *cmd]


def _wait(pred: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


class ServerProc:
    """tests/registry/native_server_proc.py as a child: port, counters on demand, stderr in a file
    (read for bugs at the `server_proc` fixture's teardown: tests/logcheck.py)."""

    def __init__(self, tmp: Path, options: dict[str, Any] | None = None, nofile: tuple[int, int] | None = None) -> None:
        self.log = tmp / f"native-{time.monotonic_ns()}.log"
        self._log = open(self.log, "wb")  # noqa: SIM115 - the child writes to it until stop()
        cmd = [sys.executable, str(PROC), json.dumps(options or {})]
        self.p = subprocess.Popen(
            _nofile(*nofile, cmd) if nofile else cmd,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, env=_env(),
        )
        assert self.p.stdout is not None
        self.port = int(self._line(60).split()[1])

    def _line(self, timeout: float) -> str:
        assert self.p.stdout is not None
        ready, _, _ = select.select([self.p.stdout], [], [], timeout)
        line = self.p.stdout.readline().decode() if ready else ""
        if not line:
            raise AssertionError(f"server process said nothing: {self.log.read_text()[-2000:]}")
        return line

    def stats(self) -> dict[str, Any]:
        assert self.p.stdin is not None
        self.p.stdin.write(b"stats\n")
        self.p.stdin.flush()
        return dict(json.loads(self._line(30)))

    def rss(self) -> float:
        return rss_mb(self.p.pid)

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait(10)
        self._log.close()


@pytest.fixture
def server_proc(tmp_path: Path) -> Iterator[Callable[..., ServerProc]]:
    started: list[ServerProc] = []

    def start(options: dict[str, Any] | None = None, nofile: tuple[int, int] | None = None) -> ServerProc:
        started.append(ServerProc(tmp_path, options, nofile))
        return started[-1]

    yield start
    for s in started:
        s.stop()
    check_outputs({s.log.name: s.log.read_text(errors="replace") for s in started})


def _legit_match(port: int, timeout: float = 20.0) -> str:
    """One grpcio call, as a real client makes it (fresh channel, deadline)."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        stub = pb_grpc.RegistryStub(ch)  # type: ignore[no-untyped-call]
        resp = stub.Match(pb.MatchRequest(group=GROUP, key="user-1"), timeout=timeout, wait_for_ready=True)
    return str(resp.services[0].id)


def _idle_connections(port: int, n: int) -> list[socket.socket]:
    """`n` connections that send the HTTP/2 preface and an empty SETTINGS, then nothing."""
    out = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(PREFACE)
        out.append(s)
    return out


# -- item 5: idle connections, connection caps, descriptors -----------------------------------


def test_idle_connections_get_goaway_then_close_busy_ones_stay(server_proc: Callable[..., ServerProc]) -> None:
    srv = server_proc({"idle_timeout": 1.0})
    idle = [H2Client(srv.port) for _ in range(3)]
    busy = H2Client(srv.port)
    sid = busy.open(WATCH)
    busy.send(sid, frame(pb.WatchRequest(group=GROUP).SerializeToString()), end_stream=True)
    assert busy.wait(lambda c: c.headers_of(sid).get(":status") == "200", 10), "the Watch did not start"
    for c in idle:
        assert c.wait(lambda c: c.closed, 20), "an idle connection was not closed"
        assert c.goaway(), "closed without a GOAWAY first"
    assert srv.stats()["idle_timeouts"] == 3
    busy.conn.ping(b"stillopn")
    busy.flush()
    assert busy.wait(lambda c: any(type(e).__name__ == "PingAckReceived" for e in c.events), 10)
    assert not busy.closed and not busy.goaway(), "a connection with an open Watch was closed as idle"
    for c in [*idle, busy]:
        c.close()


@pytest.mark.slow
def test_idle_flood_under_1024_descriptors_starves_no_call_and_no_join(tmp_path: Path) -> None:
    """1,100 idle HTTP/2 connections against a `registry` whose open-file limit is 1,024 (soft and
    hard: it cannot raise it): a legitimate call and a join still succeed, the log stays small."""
    from registry.register import Register

    log = tmp_path / "registry.log"
    cmd = [sys.executable, str(ROOT / "cmd" / "registry" / "main.py"), "-id", "r1", "-bind", "127.0.0.1:0",
           "-addr", "127.0.0.1:0", "-profile", "lan", "-log-format", "json", "-log-level", "info"]
    with open(log, "wb") as out:
        p = subprocess.Popen(_nofile(1024, 1024, cmd), stdout=out, stderr=subprocess.STDOUT, env=_env())
    socks: list[socket.socket] = []
    try:
        def started() -> dict[str, Any] | None:
            assert p.poll() is None, log.read_text()
            for line in log.read_text().splitlines():
                if '"registry started"' in line:
                    return dict(json.loads(line))
            return None

        row = _wait(started, 60, "the registry to start")
        rpc_port = int(str(row["grpc"]).rsplit(":", 1)[1])
        gossip = str(row["gossip"])
        socks = _idle_connections(rpc_port, 1100)
        t0 = time.monotonic()
        with grpc.insecure_channel(f"127.0.0.1:{rpc_port}") as ch:
            stub = pb_grpc.RegistryStub(ch)  # type: ignore[no-untyped-call]
            resp = stub.Members(pb.MembersRequest(group="registry-group"), timeout=20, wait_for_ready=True)
            assert [s.id for s in resp.services] == ["r1"]
            call_time = time.monotonic() - t0
            with Register("svc-flood", "127.0.0.1:0", "", [gossip], "flood", "127.0.0.1:1", profile="lan"):
                _wait(lambda: _members(stub, "flood") == {"svc-flood"}, 30, "the service to join through the registry")
        size = log.stat().st_size
        assert size < 64_000, f"{size} bytes of log: {log.read_text()[:2000]}"
        assert p.poll() is None
        print(f"legit call after 1,100 idle connections: {call_time:.2f} s; log {size} bytes")
    finally:
        for s in socks:
            s.close()
        p.terminate()
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)
    check_outputs({log.name: log.read_text(errors="replace")})


def _members(stub: Any, group: str) -> set[str]:
    try:
        return {s.id for s in stub.Members(pb.MembersRequest(group=group), timeout=10).services}
    except grpc.RpcError:
        return set()


def test_accept_without_descriptors_is_counted_and_sheds_idle(server_proc: Callable[..., ServerProc]) -> None:
    """With a connection cap above what the descriptors allow, accept() hits EMFILE: counted, idle
    connections shed, one warning (asyncio logged a traceback per retry, ~140 MB in 25 s)."""
    srv = server_proc({"max_connections": 100_000}, nofile=(200, 200))
    socks = _idle_connections(srv.port, 400)
    try:
        _legit_match(srv.port)
        stats = srv.stats()
        assert stats["accept_errors"] >= 1 and stats["connections_shed"] >= 16, stats
        text = srv.log.read_text()
        assert len(text) < 8_000, text[:2000]
        assert 1 <= text.count("accept() failed") <= 3, text
        assert "Traceback" not in text
    finally:
        for s in socks:
            s.close()


def test_per_source_cap_sheds_that_sources_oldest_idle(server_proc: Callable[..., ServerProc]) -> None:
    srv = server_proc({"max_connections_per_source": 20})
    socks = _idle_connections(srv.port, 50)
    try:
        _legit_match(srv.port)
        stats = srv.stats()
        assert stats["connections_shed"] >= 30, json.dumps(stats)
        assert stats["connections_refused"] == 0, stats
        # the first ones were shed: the server closed them (after a GOAWAY if it had got that far)
        first = socks[0]
        first.settimeout(10)
        with contextlib.suppress(ConnectionResetError):
            while first.recv(65536):
                pass
    finally:
        for s in socks:
            s.close()


def test_cli_raises_the_soft_descriptor_limit(tmp_path: Path) -> None:
    log = tmp_path / "registry.log"
    cmd = [sys.executable, str(ROOT / "cmd" / "registry" / "main.py"), "-id", "r1", "-bind", "127.0.0.1:0",
           "-addr", "127.0.0.1:0", "-log-format", "json"]
    with open(log, "wb") as out:
        p = subprocess.Popen(_nofile(512, 4096, cmd), stdout=out, stderr=subprocess.STDOUT, env=_env())
    try:
        _wait(lambda: '"registry started"' in log.read_text() or p.poll() is not None, 60, "the registry to start")
        assert p.poll() is None, log.read_text()
        assert resource.prlimit(p.pid, resource.RLIMIT_NOFILE) == (4096, 4096)
        lines = [json.loads(x) for x in log.read_text().splitlines() if "open-file limit" in x]
        assert len(lines) == 1 and lines[0]["soft"] == 512 and lines[0]["now"] == 4096, lines
    finally:
        p.terminate()
        p.wait(15)
    check_outputs({log.name: log.read_text(errors="replace")})


# -- item 8a: a length prefix over the maximum --------------------------------------------------


def test_huge_length_prefix_is_refused_at_the_prefix(server_proc: Callable[..., ServerProc]) -> None:
    srv = server_proc()
    c = H2Client(srv.port)
    sid = c.open(MATCH)
    c.send(sid, b"\x00" + (100 << 20).to_bytes(4, "big") + b"k" * 1024)  # 100 MB announced, 1 KB sent
    sent = c.sent
    assert c.wait(lambda c: "grpc-status" in c.headers_of(sid), 10), "no answer before the whole message"
    assert c.headers_of(sid)["grpc-status"] == str(grpc.StatusCode.RESOURCE_EXHAUSTED.value[0])
    assert c.wait(lambda c: c.reset_on(sid), 10), "the server did not tell the client to stop sending"
    assert sent < 4096 and c.sent < 4096, f"{c.sent} bytes sent before the answer"
    print(f"100 MB prefix: RESOURCE_EXHAUSTED after the client sent {c.sent} bytes in all")
    # the connection serves on
    ok = c.open(MATCH)
    c.send(ok, frame(pb.MatchRequest(group=GROUP, key="k").SerializeToString()), end_stream=True)
    assert c.wait(lambda c: "grpc-status" in c.headers_of(ok), 10)
    assert c.headers_of(ok)["grpc-status"] == "0"
    c.close()


# -- item 9b: watchers ---------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
async def test_watchers_beyond_the_server_cap_are_refused(engine: str) -> None:
    catalog = Catalog()
    populate(catalog)
    srv = await start_server(catalog, engine)
    srv.core.max_watchers = 6
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{srv.port}") for _ in range(4)]
    try:
        watches = []
        for i in range(6):
            w = pb_grpc.RegistryStub(channels[i % 3]).Watch(pb.WatchRequest(group=GROUP))  # type: ignore[no-untyped-call]
            assert (await w.read()).snapshot
            watches.append(w)
        over = pb_grpc.RegistryStub(channels[3]).Watch(pb.WatchRequest(group=GROUP))  # type: ignore[no-untyped-call]
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await over.read()
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert srv.core.watchers_refused == 1 and srv.core.watcher_count() == 6
        watches.pop().cancel()
        await async_wait_for(lambda: srv.core.watcher_count() == 5, 10, "the cancelled watcher to leave")
        again = pb_grpc.RegistryStub(channels[3]).Watch(pb.WatchRequest(group=GROUP))  # type: ignore[no-untyped-call]
        assert (await again.read()).snapshot
        again.cancel()
        for w in watches:
            w.cancel()
    finally:
        for ch in channels:
            await ch.close()
        await srv.stop(None)


async def test_watches_beyond_the_connection_cap_are_refused() -> None:
    catalog = Catalog()
    populate(catalog)
    srv = await start_native(catalog, "127.0.0.1:0", limits=Limits(max_watches_per_connection=3))
    try:
        own = [("grpc.use_local_subchannel_pool", 1)]  # two channels, two connections
        async with grpc.aio.insecure_channel(f"127.0.0.1:{srv.port}", options=own) as ch, \
                grpc.aio.insecure_channel(f"127.0.0.1:{srv.port}", options=own) as other:
            stub = pb_grpc.RegistryStub(ch)  # type: ignore[no-untyped-call]
            watches = [stub.Watch(pb.WatchRequest(group=GROUP)) for _ in range(3)]
            for w in watches:
                assert (await w.read()).snapshot
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Watch(pb.WatchRequest(group=GROUP)).read()
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert srv.stats.watches_refused == 1
            w2 = pb_grpc.RegistryStub(other).Watch(pb.WatchRequest(group=GROUP))  # type: ignore[no-untyped-call]
            assert (await w2.read()).snapshot  # another connection has its own allowance
            for w in [*watches, w2]:
                w.cancel()
    finally:
        await srv.stop(None)


# -- item 3: memory --------------------------------------------------------------------------------


def _push(clients: list[tuple[H2Client, dict[int, int]]], srv: ServerProc, *, stall: float = 2.0,
          deadline: float = 120.0) -> tuple[int, float]:
    """Send each stream's remaining bytes as fast as the server's windows allow, until every
    stream is done or nothing moved for `stall` s; returns (bytes sent, peak server RSS in MB)."""
    chunk = b"x" * 16384
    sent, peak = 0, srv.rss()
    last_move = time.monotonic()
    end = last_move + deadline
    while time.monotonic() < end and time.monotonic() - last_move < stall:
        moved = False
        for c, left in clients:
            for sid, n in left.items():
                room = min(c.room(sid), n)
                while room > 0:
                    try:
                        c.conn.send_data(sid, chunk[:room] if room < len(chunk) else chunk)
                    except h2.exceptions.StreamClosedError:  # refused by the server: stop sending it
                        left[sid] = 0
                        break
                    step = min(room, len(chunk))
                    left[sid] -= step
                    sent += step
                    room = min(c.room(sid), left[sid])
                    moved = True
                c.flush()
            c.pump(0 if moved else 0.02)
        if moved:
            last_move = time.monotonic()
        peak = max(peak, srv.rss())
        if not any(n for _, left in clients for n in left.values()):
            break
    return sent, peak


def test_never_ended_request_streams_stay_within_the_memory_budget(server_proc: Callable[..., ServerProc]) -> None:
    """20 request streams that announce 15 MB messages and never end (4 connections): the server
    stops crediting at its budget (32 MiB) instead of buffering 300 MB; a legit call still works."""
    srv = server_proc()
    _legit_match(srv.port)
    base = srv.rss()
    clients = []
    for _ in range(4):
        c = H2Client(srv.port)
        streams = {}
        for _ in range(5):
            sid = c.open(MATCH)
            c.send(sid, b"\x00" + (15 << 20).to_bytes(4, "big"))
            streams[sid] = 15 << 20
        clients.append((c, streams))
    sent, peak = _push(clients, srv)
    _legit_match(srv.port)
    stats = srv.stats()
    print(f"request flood: {sent / 2**20:.0f} MB taken, RSS {base:.0f} -> peak {peak:.0f} MB, stats {stats}")
    assert peak - base < 32 + 24, f"RSS grew {peak - base:.0f} MB (budget 32 MiB)"
    assert sent < 100 << 20
    for c, _ in clients:
        c.close()
    _wait(lambda: srv.stats()["budget_used"] == 0, 10, "closed connections to give their bytes back")


def test_bidi_answers_behind_a_closed_window_are_bounded(server_proc: Callable[..., ServerProc]) -> None:
    """Reflection requests from a client whose receive window is 0: answers cannot leave, so the
    server stops reading that stream's requests (10 MB of requests once queued ~580 MB)."""
    from grpc_reflection.v1alpha import reflection_pb2

    srv = server_proc()
    _legit_match(srv.port)
    base = srv.rss()
    c = H2Client(srv.port, window=0)
    sid = c.open("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")
    one = frame(reflection_pb2.ServerReflectionRequest(file_containing_symbol="registry.v1.Registry").SerializeToString())
    budget = 10 << 20
    chunk = one * (16384 // len(one))
    sent, peak = 0, base
    last_move = time.monotonic()
    while sent < budget and time.monotonic() - last_move < 2.0:
        room = c.room(sid)
        if room >= len(chunk):
            c.send(sid, chunk)
            sent += len(chunk)
            last_move = time.monotonic()
        else:
            c.pump(0.02)
        peak = max(peak, srv.rss())
    _legit_match(srv.port)
    stats = srv.stats()
    print(f"reflection flood: {sent / 2**20:.1f} MB of requests taken, RSS {base:.0f} -> peak {peak:.0f} MB, {stats}")
    assert peak - base < 32, f"RSS grew {peak - base:.0f} MB"
    assert sent < 4 << 20 and stats["bidi_paused"] >= 1
    c.close()
    _wait(lambda: srv.stats()["budget_used"] == 0, 10, "the closed connection to give its bytes back")
    assert srv.rss() - base < 32


def test_answers_behind_closed_windows_are_budgeted_across_connections(server_proc: Callable[..., ServerProc]) -> None:
    """Clients with a zero receive window ask for ~3 MB MatchBatch answers on 8 connections: each
    connection stays under its own 16 MiB bound, but together they stop at the process's 32 MiB
    of queued answers (new calls REFUSED_STREAM, retryable) instead of holding 8 x 16 MiB."""
    srv = server_proc()
    _legit_match(srv.port)
    base = srv.rss()
    keys = [f"user-{i:06d}" for i in range(40_000)]
    request = frame(pb.MatchBatchRequest(group=GROUP, keys=keys).SerializeToString())
    clients = [H2Client(srv.port, window=0) for _ in range(8)]
    peak, refused = base, 0
    for c in clients:
        for _ in range(12):
            sid = c.open("/registry.v1.Registry/MatchBatch")
            sent = 0
            while sent < len(request):
                room = c.room(sid)
                if room <= 0:
                    c.pump(0.05)
                    if c.reset_on(sid) or c.closed:
                        break
                    continue
                step = min(room, len(request) - sent)
                c.send(sid, request[sent : sent + step], end_stream=sent + step == len(request))
                sent += step
            c.wait(lambda c, sid=sid: "grpc-status" in c.headers_of(sid) or c.reset_on(sid) or ":status" in c.headers_of(sid), 10)
            peak = max(peak, srv.rss())
            if c.reset_on(sid):
                refused += 1
    _legit_match(srv.port)
    stats = srv.stats()
    print(f"answers behind closed windows: RSS {base:.0f} -> peak {peak:.0f} MB, {refused} calls refused, {stats}")
    assert stats["output_refused"] >= 1, stats
    assert peak - base < 32 + 48, f"RSS grew {peak - base:.0f} MB"
    for c in clients:
        c.close()


async def test_a_grpc_client_whose_idle_connection_was_closed_calls_on() -> None:
    """The idle timeout's GOAWAY is one grpcio understands: its next call reconnects and succeeds."""
    catalog = Catalog()
    populate(catalog)
    srv = await start_native(catalog, "127.0.0.1:0", limits=Limits(idle_timeout=0.5))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{srv.port}") as ch:
            stub = pb_grpc.RegistryStub(ch)  # type: ignore[no-untyped-call]
            first = await stub.Match(pb.MatchRequest(group=GROUP, key="k"), timeout=10)
            await async_wait_for(lambda: srv.stats.idle_timeouts == 1, 20, "the idle connection to be closed")
            again = await stub.Match(pb.MatchRequest(group=GROUP, key="k"), timeout=10)
        assert again.services[0].id == first.services[0].id
        assert srv.stats.connections == 2
    finally:
        await srv.stop(None)


async def test_a_connection_making_calls_is_not_idle() -> None:
    """Calls that open and finish within one read each (sequential unary calls) are activity: the
    connection's idle time restarts with every call, so a client calling more often than the idle
    timeout never gets its GOAWAY (and is never the "oldest idle" one shed for a newcomer)."""
    catalog = Catalog()
    populate(catalog)
    srv = await start_native(catalog, "127.0.0.1:0", limits=Limits(idle_timeout=1.0))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{srv.port}") as ch:
            stub = pb_grpc.RegistryStub(ch)  # type: ignore[no-untyped-call]
            loop = asyncio.get_running_loop()
            end = loop.time() + 3.5
            calls = 0
            while loop.time() < end:
                await stub.Match(pb.MatchRequest(group=GROUP, key=f"k{calls}"), timeout=10)
                calls += 1
                await asyncio.sleep(0.1)  # the pace of a client, not a wait for a condition
        assert calls > 10
        assert srv.stats.idle_timeouts == 0 and srv.stats.connections == 1, srv.stats
    finally:
        await srv.stop(None)


def test_a_request_never_ended_is_refused_after_the_request_timeout(server_proc: Callable[..., ServerProc]) -> None:
    """A stream that announces a 1 MB message, sends 1 KB and then nothing: refused once the
    request timeout is over, its buffer given back to the budget; whole requests are not affected."""
    srv = server_proc({"request_timeout": 1.0})
    c = H2Client(srv.port)
    sid = c.open(MATCH)
    c.send(sid, b"\x00" + (1 << 20).to_bytes(4, "big") + b"k" * 1024)
    _wait(lambda: srv.stats()["budget_used"] > 0 or c.headers_of(sid), 10, "the server to buffer the request")
    assert c.wait(lambda c: "grpc-status" in c.headers_of(sid), 10), "an unfinished request was held for ever"
    assert c.headers_of(sid)["grpc-status"] == str(grpc.StatusCode.RESOURCE_EXHAUSTED.value[0])
    stats = srv.stats()
    assert stats["request_timeouts"] == 1 and stats["budget_used"] == 0, stats
    assert _legit_match(srv.port)
    c.close()
