"""``isolate=process`` (registry/adapters/process.py, child.py, pipe.py): an adapter in a child process of a
real registry process gets the catalog's views and its imports come back; its log lines reach the
registry's log; a stray print does not corrupt the pipe; a killed child is started again with its imports;
the child ends with the registry. The frame codec refuses what it must (too long, wrong shape)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest

from registry.adapters.pipe import MAX_FRAME, FrameError, Kind, decode_service, encode, read_frame
from registry.client import RpcClient
from registry.register import Register
from tests.e2e.helpers import wait_for
from tests.footprint import modules_child

BASE = ["-bind", "127.0.0.1:0", "-addr", "127.0.0.1:0"]
PID = re.compile(r"echo adapter running in pid (\d+)")


@pytest.fixture
def echo_entry_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A real entry point for tests.adapters.echo_adapter, seen by the registry child and its own child."""
    dist = tmp_path / "echo_adapter-0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: echo-adapter\nVersion: 0\n")
    (dist / "entry_points.txt").write_text("[registry.adapters]\necho = tests.adapters.echo_adapter:EchoAdapter\n"
                                           "hang = tests.adapters.hang_adapter:HangAdapter\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    yield


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_adapter_in_a_child_process_round_trip_restart_and_end(echo_entry_point: None) -> None:
    with modules_child("-id", "r1", *BASE, "-adapter", "echo") as child:  # not ours: a child by default
        client = RpcClient(child.started["grpc"], timeout=10.0)
        reg = Register("svc-1", "127.0.0.1:0", "", child.started["gossip"], "web", "127.0.0.1:8081", profile="fast")
        try:
            reg.start()
            # the view (with web/svc-1) went to the child, its import came back as echo/web.svc-1
            wait_for(lambda: "web.svc-1" in {s.id for s in client.members("echo")}, 30, what="the echo import")
            assert {s.origin for s in client.members("echo")} == {"echo"}
            assert "registry.adapters.child" not in child.modules()  # the child's code is not in the registry
            first = int(wait_for(lambda: PID.findall(child.text()), 10, what="the child's log line")[0])
            assert first != child.proc.pid and _alive(first)
            assert "junk on stdout" in child.text()  # went to stderr, the registry's log stream, not the pipe
            reg.stop()
            wait_for(lambda: "web.svc-1" not in {s.id for s in client.members("echo")}, 30, what="a new view")
            os.kill(first, signal.SIGKILL)  # a crash: the host starts it again, its imports come back
            pids = wait_for(lambda: [p for p in PID.findall(child.text()) if int(p) != first], 30,
                            what="a second child")
            assert "exited with status -9" in child.text(), child.text()[-2000:]
            second = int(pids[0])
            assert _alive(second)
        finally:
            reg.stop()
            client.close()
    wait_for(lambda: not _alive(second), 10, what="the child gone with the registry")


def test_frames_are_checked_before_they_are_used() -> None:
    async def read(data: bytes) -> object:
        r = asyncio.StreamReader()
        r.feed_data(data)
        r.feed_eof()
        return await read_frame(r)

    ok = encode(Kind.DELETE, "g", "i")
    assert asyncio.run(read(ok)) == (Kind.DELETE, ["g", "i"])
    assert asyncio.run(read(b"")) is None
    with pytest.raises(FrameError, match="over the"):  # refused from the header, before any body is read
        asyncio.run(read((MAX_FRAME + 1).to_bytes(4, "big")))
    with pytest.raises(FrameError, match="inside a frame"):
        asyncio.run(read(ok[:-1]))
    with pytest.raises(FrameError, match="not a frame"):
        body = msgpack.packb([99, "x"])
        asyncio.run(read(len(body).to_bytes(4, "big") + body))
    with pytest.raises(FrameError):
        decode_service(["g", "i", 5, {}, None, None])
    with pytest.raises(FrameError):
        decode_service(["g", "i", "a", {"k": 1}, None, None])


def test_isolation_by_default_ours_on_a_thread_others_in_a_child(echo_entry_point: None) -> None:
    import sys

    from registry.adapters.base import AdapterError
    from registry.adapters.file import FileAdapter
    from registry.adapters.loader import load
    from registry.adapters.process import ProcessAdapter

    sys.path.insert(0, os.environ["PYTHONPATH"])  # the dist-info, for this process's entry points too
    try:
        assert isinstance(load("file:path=/nonexistent.json"), FileAdapter)
        assert isinstance(load("file:path=/nonexistent.json,isolate=process"), ProcessAdapter)
        echo = load("echo")
        assert isinstance(echo, ProcessAdapter) and echo.name == "echo" and echo.options == {}
        assert type(load("echo:isolate=thread")).__name__ == "EchoAdapter"
        with pytest.raises(AdapterError, match="isolate='fork' must be thread or process"):
            load("echo:isolate=fork")
    finally:
        sys.path.remove(os.environ["PYTHONPATH"])


def _children(pid: int) -> list[int]:
    """The pids whose parent is ``pid``."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            raw = stat.read_text()
        except OSError:
            continue
        if int(raw[raw.rindex(")") + 2:].split()[1]) == pid:
            out.append(int(stat.parent.name))
    return out


@pytest.mark.parametrize(("mode", "how"), [("busy", signal.SIGKILL), ("sleep", signal.SIGTERM), ("busy", signal.SIGTERM)])
def test_a_child_whose_adapter_never_yields_ends_with_its_registry(echo_entry_point: None, mode: str,
                                                                     how: signal.Signals) -> None:
    """An adapter that spins (or sleeps in C) never sees a cancel: its child must end all the same when
    the registry stops or is killed (its stdin closes), within the child's grace. Before, such children ran
    on after their registries, each eating a core."""
    with modules_child("-id", "r1", *BASE, "-adapter", f"hang:mode={mode}") as child:
        client = RpcClient(child.started["grpc"], timeout=10.0)
        try:
            wait_for(lambda: client.members("hang"), 30, what="the adapter's import")
        finally:
            client.close()
        kids = wait_for(lambda: _children(child.proc.pid), 10, what="the adapter's child process")
        child.proc.send_signal(how)
        child.proc.wait(30)
    wait_for(lambda: not any(_alive(k) for k in kids), 10, what=f"the {mode} child gone after {how.name}")
