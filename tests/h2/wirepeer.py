"""A hostile HTTP/2 client for conformance tests, built on python-hyper's libraries (independent of
ours): `h2` writes the connection preface and SETTINGS and owns the HPACK encoder, `hyperframe`
builds every other frame (including the ones `h2` refuses to send) and parses the server's
answers, `hpack` decodes them. Blocking sockets with deadlines; no sleeps.

Also: a native gRPC server on 127.0.0.1 in a thread of its own (its own event loop), so tests that
block on a socket do not block the server.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
from hpack import Decoder as HpackDecoder
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
)

from registry.catalog import Catalog
from registry.native import start_native
from tests.logcheck import check_outputs

DEADLINE = 15.0  # seconds any one expected answer may take on a loaded 2-core machine

GET = [(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "127.0.0.1")]
POST = [(":method", "POST"), *GET[1:]]
_GRPC = [("content-type", "application/grpc"), ("te", "trailers")]
CHECK = [(":method", "POST"), (":scheme", "http"), (":path", "/grpc.health.v1.Health/Check"),
         (":authority", "127.0.0.1"), *_GRPC]
WATCH = [*CHECK[:2], (":path", "/grpc.health.v1.Health/Watch"), *CHECK[3:]]
EMPTY_MESSAGE = bytes(5)  # a gRPC frame holding an empty protobuf message (HealthCheckRequest())


@contextmanager
def native_server_thread() -> Iterator[int]:
    """A NativeServer (empty catalog) on 127.0.0.1:0 served by a loop in a daemon thread; yields its port."""
    ready = threading.Event()
    box: dict[str, Any] = {}

    def run() -> None:
        loop = asyncio.new_event_loop()
        box["loop"] = loop

        async def main() -> None:
            server = await start_native(Catalog(), "127.0.0.1:0")
            box["server"] = server
            box["stop"] = asyncio.Event()
            ready.set()
            await box["stop"].wait()
            await server.stop(None)

        try:
            loop.run_until_complete(main())
        except Exception as exc:  # noqa: BLE001 -- surfaced to the test through `box`
            box["error"] = exc
            ready.set()
        finally:
            loop.close()

    thread = threading.Thread(target=run, name="native-server", daemon=True)
    thread.start()
    assert ready.wait(DEADLINE), "server did not start"
    if "error" in box:
        raise box["error"]
    try:
        yield box["server"].port
    finally:
        box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join(DEADLINE)


class Peer:
    """One client connection. `send` takes hyperframe frames or raw bytes; `wait`/`expect_*` read
    the server's frames until a condition holds, failing at DEADLINE."""

    def __init__(self, port: int, *, handshake: bool = True) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
        config = h2.config.H2Configuration(
            client_side=True,
            header_encoding="utf-8",
            validate_outbound_headers=False,  # we send malformed requests on purpose
            normalize_outbound_headers=False,
            split_outbound_cookies=False,
        )
        self.h2 = h2.connection.H2Connection(config=config)
        self.encoder = self.h2.encoder  # one HPACK encoder for everything we send: tables stay in step
        self.decoder = HpackDecoder()
        self.buf = bytearray()
        self.received: list[Frame] = []
        # Each header block's fields, by the frame that ended it (None: it did not end there).
        self.decoded: dict[Frame, list[tuple[str | bytes, str | bytes]] | None] = {}
        self.closed = False
        self.server_settings: dict[int, int] = {}
        if handshake:
            self.handshake()

    def close(self) -> None:
        self.sock.close()

    # -- sending -------------------------------------------------------------------------

    def send(self, *items: Frame | bytes) -> None:
        for item in items:
            self.sock.sendall(item if isinstance(item, bytes) else item.serialize())

    def handshake(self) -> None:
        """Preface and SETTINGS by h2; our ACK of the server's SETTINGS; the server's ACK of ours."""
        self.h2.initiate_connection()
        self.send(self.h2.data_to_send())
        first = self.wait(lambda f: isinstance(f, SettingsFrame) and "ACK" not in f.flags)
        assert isinstance(first, SettingsFrame)
        self.server_settings = dict(first.settings)
        self.send(SettingsFrame(0, flags=["ACK"]))
        self.wait(lambda f: isinstance(f, SettingsFrame) and "ACK" in f.flags)

    def block(self, headers: list[tuple[str, str]], huffman: bool = True) -> bytes:
        return bytes(self.encoder.encode(headers, huffman=huffman))

    def headers(
        self,
        sid: int,
        headers: list[tuple[str, str]] | bytes,
        *,
        end_stream: bool = True,
        end_headers: bool = True,
        pad: int = 0,
        depends_on: int | None = None,
    ) -> HeadersFrame:
        f = HeadersFrame(sid, self.block(headers) if isinstance(headers, list) else headers)
        if end_stream:
            f.flags.add("END_STREAM")
        if end_headers:
            f.flags.add("END_HEADERS")
        if pad:
            f.flags.add("PADDED")
            f.pad_length = pad
        if depends_on is not None:
            f.flags.add("PRIORITY")
            f.depends_on, f.stream_weight, f.exclusive = depends_on, 255, False
        return f

    def data(self, sid: int, payload: bytes, *, end_stream: bool = True, pad: int = 0) -> DataFrame:
        f = DataFrame(sid, payload)
        if end_stream:
            f.flags.add("END_STREAM")
        if pad:
            f.flags.add("PADDED")
            f.pad_length = pad
        return f

    def continuation(self, sid: int, block: bytes, *, end_headers: bool = True) -> ContinuationFrame:
        f = ContinuationFrame(sid, block)
        if end_headers:
            f.flags.add("END_HEADERS")
        return f

    def unary(self, sid: int, headers: list[tuple[str, str]] = CHECK) -> None:
        """A whole gRPC request: HEADERS, then one empty message with END_STREAM."""
        self.send(self.headers(sid, headers, end_stream=False), self.data(sid, EMPTY_MESSAGE))

    # -- receiving -----------------------------------------------------------------------

    def _read_frame(self, deadline: float) -> Frame | None:
        """The next frame, or None once the server closed the connection."""
        while True:
            if len(self.buf) >= 9:
                f, length = Frame.parse_frame_header(memoryview(bytes(self.buf[:9])))
                if len(self.buf) >= 9 + length:
                    f.parse_body(memoryview(bytes(self.buf[9 : 9 + length])))
                    del self.buf[: 9 + length]
                    if isinstance(f, HeadersFrame | ContinuationFrame):
                        self.decoded[f] = list(self.decoder.decode(bytes(f.data))) if "END_HEADERS" in f.flags else None
                    self.received.append(f)
                    return f
            if self.closed:
                return None
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no answer in {DEADLINE} s; last received {self.received[-8:]}"
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                chunk = b""
            except TimeoutError:
                continue
            if not chunk:
                self.closed = True
            self.buf += chunk

    def wait(self, match: Callable[[Frame], bool], *, goaway_ok: bool = False) -> Frame:
        """Read until a frame matches; a GOAWAY or a close before it fails (unless `goaway_ok`)."""
        deadline = time.monotonic() + DEADLINE
        while True:
            f = self._read_frame(deadline)
            assert f is not None, f"connection closed; last received {self.received[-8:]}"
            if match(f):
                return f
            assert goaway_ok or not isinstance(f, GoAwayFrame), f"unexpected {f}"

    def expect_goaway(self, code: int) -> GoAwayFrame:
        """A connection error: GOAWAY with exactly `code`, then the server closes the connection."""
        f = self.wait(lambda f: isinstance(f, GoAwayFrame), goaway_ok=True)
        assert isinstance(f, GoAwayFrame)
        assert f.error_code == code, f"GOAWAY {f.error_code} ({f.additional_data!r}), wanted {code}"
        self.expect_closed()
        return f

    def expect_closed(self) -> None:
        deadline = time.monotonic() + DEADLINE
        while self._read_frame(deadline) is not None:
            pass

    def expect_rst(self, sid: int, code: int) -> None:
        """A stream error: RST_STREAM on `sid` with exactly `code`, and the connection lives on."""
        f = self.wait(lambda f: isinstance(f, RstStreamFrame) and f.stream_id == sid)
        assert isinstance(f, RstStreamFrame) and f.error_code == code, f"{f}, wanted code {code}"
        self.expect_alive()

    def expect_alive(self) -> None:
        """A PING gets its ACK (and no GOAWAY came first)."""
        payload = os.urandom(8)
        self.send(PingFrame(0, payload))
        self.wait(lambda f: isinstance(f, PingFrame) and "ACK" in f.flags and f.opaque_data == payload)

    def expect_response(self, sid: int) -> list[tuple[str, str]]:
        """The response HEADERS on `sid`, decoded."""
        f = self.wait(lambda f: isinstance(f, HeadersFrame) and f.stream_id == sid)
        fields = self.decoded.get(f)
        assert fields is not None, "response header block in CONTINUATION frames"
        return [(n.decode() if isinstance(n, bytes) else n, v.decode() if isinstance(v, bytes) else v)
                for n, v in fields]

    def expect_data(self, sid: int) -> DataFrame:
        f = self.wait(lambda f: isinstance(f, DataFrame) and f.stream_id == sid)
        assert isinstance(f, DataFrame)
        return f

    def expect_stream_end(self, sid: int) -> None:
        self.wait(lambda f: isinstance(f, DataFrame | HeadersFrame) and f.stream_id == sid and "END_STREAM" in f.flags)


_SERVER = """
import asyncio
from registry.catalog import Catalog
from registry.native import start_native

async def main():
    server = await start_native(Catalog(), "127.0.0.1:0")
    print("PORT", server.port, flush=True)
    await asyncio.Future()

asyncio.run(main())
"""


class ServerProcess:
    """A native server in a process of its own (this checkout), for figures measured from outside:
    its CPU time and resident memory.  Its stderr goes to `log`, read at stop() for bugs
    (tests/logcheck.py): a handler error or an unhandled exception fails the test."""

    def __init__(self, log: Path) -> None:
        root = Path(__file__).resolve().parents[2]
        self.log = log
        self._log = open(log, "wb")  # noqa: SIM115 - the child writes to it until stop()
        self.proc = subprocess.Popen([sys.executable, "-c", _SERVER], cwd=root, stdout=subprocess.PIPE,
                                     stderr=self._log, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # blocks until it serves (or dies: then the assert fails)
        assert line.startswith("PORT "), f"server did not start: {line!r} {log.read_text(errors='replace')[-2000:]}"
        self.port = int(line.split()[1])

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_mb(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")

    def stop(self) -> None:
        """Kill it, then fail if its output reports a bug."""
        self.proc.kill()
        self.proc.wait(DEADLINE)
        self._log.close()
        check_outputs({self.log.name: self.log.read_text(errors="replace")})
