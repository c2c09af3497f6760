"""Floods against a real native server process on loopback (issue 11 items 4 and 8): each is
bounded in time and count, and measures the server from outside (CPU time, RSS)."""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hyperframe.frame import GoAwayFrame, SettingsFrame

from tests.h2.wirepeer import CHECK, DEADLINE, EMPTY_MESSAGE, GET, Peer, ServerProcess

ENHANCE_YOUR_CALM = 0xB


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    s = ServerProcess(tmp_path / "native.log")
    yield s
    s.stop()


def settings_flood_cpu(server: ServerProcess, held_streams: int, frames: int = 20_000) -> float:
    """Server CPU seconds per SETTINGS frame while `held_streams` calls wait behind a zero window."""
    p = Peer(server.port)
    p.send(SettingsFrame(0, settings={SettingsFrame.INITIAL_WINDOW_SIZE: 0}))
    for i in range(held_streams):
        sid = 1 + 2 * i
        p.send(p.headers(sid, CHECK, end_stream=False), p.data(sid, EMPTY_MESSAGE))
    p.expect_alive()  # every call answered as far as the window allows: output queued on each
    batch = SettingsFrame(0, settings={SettingsFrame.INITIAL_WINDOW_SIZE: 0}).serialize() * 500
    cpu0, got = server.cpu_seconds(), 0
    p.sock.settimeout(DEADLINE)
    for k in range(frames // 500):
        p.sock.sendall(batch)
        while got < 9 * 500 * (k + 1):  # read the ACKs as they come: the server never waits on us
            chunk = p.sock.recv(1 << 20)
            assert chunk, "connection closed"
            got += len(chunk)
    cost = (server.cpu_seconds() - cpu0) / frames
    p.close()
    return cost


def test_settings_flood_cost_does_not_grow_with_open_streams(server: ServerProcess) -> None:
    """Issue 11 item 4 on a real process: on d96d263 each SETTINGS frame walked every stream
    (here ~2,000 us of server CPU per frame with 4,000 held calls, against ~15 us with 10)."""
    few = settings_flood_cpu(server, 10)
    many = settings_flood_cpu(server, 4000)
    assert many < 3 * few + 20e-6, f"{many * 1e6:.1f} us per frame with 4,000 streams, {few * 1e6:.1f} us with 10"


def test_endless_continuation_frames_end_the_connection(server: ServerProcess) -> None:
    """Issue 11 item 8: zero-length CONTINUATION frames cost CPU only, and were never cut off."""
    p = Peer(server.port)
    p.send(p.headers(1, GET, end_headers=False))
    empty = p.continuation(1, b"", end_headers=False).serialize()
    deadline = time.monotonic() + DEADLINE
    sent = 0
    try:
        while sent < 100_000 and time.monotonic() < deadline:
            p.sock.sendall(empty * 1000)
            sent += 1000
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server closed the connection under us: what we want, checked below
    f = p.wait(lambda f: isinstance(f, GoAwayFrame), goaway_ok=True)
    assert isinstance(f, GoAwayFrame) and f.error_code == ENHANCE_YOUR_CALM and b"CONTINUATION" in f.additional_data, f
    p.close()


@pytest.mark.parametrize("kind", ["ping", "settings"])
def test_floods_of_frames_that_want_an_answer_are_bounded_by_an_unread_socket(server: ServerProcess, kind: str) -> None:
    """PING and SETTINGS each ask for an ACK: a client that floods them and never reads must not
    make the server queue the answers (it stops reading instead). 40 MB of frames, server RSS checked."""
    p = Peer(server.port)
    p.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    one = (bytes.fromhex("000008060000000000") + bytes(8)) if kind == "ping" else bytes.fromhex("000000040000000000")
    chunk = one * (65536 // len(one))
    rss0 = server.rss_mb()
    p.sock.setblocking(False)
    sent, deadline, outcome = 0, time.monotonic() + DEADLINE, "all sent"
    while sent < 40 << 20 and time.monotonic() < deadline:
        if not select.select([], [p.sock], [], 2.0)[1]:
            outcome = "server stopped reading"  # what a bounded server does with an unread socket
            break
        try:
            sent += p.sock.send(chunk)
        except (BrokenPipeError, ConnectionResetError):
            outcome = "server closed the connection"
            break
    grown = server.rss_mb() - rss0
    p.close()
    assert grown < 16, f"server RSS grew {grown:.0f} MB after {sent >> 20} MB of {kind} frames ({outcome})"


def test_hpack_caches_of_many_connections_stay_small(server: ServerProcess) -> None:
    """Per-connection HPACK caches (Huffman strings, whole blocks) filled with distinct strings from
    200 connections: before, each could hold ~185 kB (512 strings of 128 bytes); here the server's
    RSS grew 18.6 MB before the caches were cut, 0.5 MB after."""
    import os

    peers = [Peer(server.port) for _ in range(200)]
    rss0 = server.rss_mb()
    for p in peers:
        for sid in (1, 3, 5):  # 3 requests of 120 distinct never-indexed Huffman values each
            fields = [(f"x-{i}", os.urandom(30).hex()) for i in range(120)]
            p.send(p.headers(sid, p.encoder.encode([*GET, *((n, v, True) for n, v in fields)])))
    for p in peers:
        p.expect_alive()  # everything sent was decoded
    grown = server.rss_mb() - rss0
    for p in peers:
        p.close()
    assert grown < 8, f"server RSS grew {grown:.1f} MB"
