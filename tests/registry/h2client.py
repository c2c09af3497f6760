"""A blocking HTTP/2 client on python-hyper's `h2` (an implementation independent of ours) for
attacks grpcio's client will not make: never-ended request streams, huge length prefixes, a
zero receive window, idle connections. Counts every byte it sends."""

from __future__ import annotations

import select
import socket
import time
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings

GRPC_HEADERS = [("content-type", "application/grpc"), ("te", "trailers")]


class H2Client:
    def __init__(self, port: int, *, window: int | None = None, host: str = "127.0.0.1") -> None:
        self.sock = socket.create_connection((host, port), timeout=10)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.conn.initiate_connection()
        if window is not None:  # our receive window: 0 = the server may send us no DATA at all
            self.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
        self.sent = 0
        self.events: list[Any] = []
        self.closed = False
        self.flush()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)
            self.sent += len(data)

    def open(self, path: str, end_stream: bool = False) -> int:
        sid: int = self.conn.get_next_available_stream_id()
        headers = [(":method", "POST"), (":scheme", "http"), (":path", path), (":authority", "x"), *GRPC_HEADERS]
        self.conn.send_headers(sid, headers, end_stream=end_stream)
        self.flush()
        return sid

    def room(self, sid: int) -> int:
        """Bytes the server's windows let us send on `sid` now (0 once the stream is closed)."""
        try:
            return int(min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size))
        except Exception:  # noqa: BLE001 - stream closed or reset by the server
            return 0

    def send(self, sid: int, data: bytes, end_stream: bool = False) -> None:
        self.conn.send_data(sid, data, end_stream=end_stream)
        self.flush()

    def pump(self, timeout: float) -> list[Any]:
        """Read what arrives within `timeout` s (returns at the first read); acks and credits as needed."""
        if self.closed:
            return []
        ready, _, _ = select.select([self.sock], [], [], timeout)
        if not ready:
            return []
        try:
            data = self.sock.recv(1 << 20)
        except OSError:
            data = b""
        if not data:
            self.closed = True
            return []
        events = self.conn.receive_data(data)
        for ev in events:
            if isinstance(ev, h2.events.DataReceived):
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        try:
            self.flush()
        except OSError:
            self.closed = True
        self.events.extend(events)
        return list(events)

    def wait(self, pred: Any, timeout: float = 10.0) -> bool:
        """Pump until `pred(self)` holds or the connection ends; False at the deadline."""
        deadline = time.monotonic() + timeout
        while not pred(self):
            left = deadline - time.monotonic()
            if left <= 0 or self.closed:
                return bool(pred(self))
            self.pump(min(left, 0.2))
        return True

    def headers_of(self, sid: int) -> dict[str, str]:
        """Every response header and trailer received on `sid`, merged."""
        out: dict[str, str] = {}
        for ev in self.events:
            if isinstance(ev, (h2.events.ResponseReceived, h2.events.TrailersReceived)) and ev.stream_id == sid:
                out.update((_text(name), _text(value)) for name, value in ev.headers)
        return out

    def reset_on(self, sid: int) -> bool:
        return any(isinstance(ev, h2.events.StreamReset) and ev.stream_id == sid for ev in self.events)

    def goaway(self) -> bool:
        return any(isinstance(ev, h2.events.ConnectionTerminated) for ev in self.events)

    def close(self) -> None:
        self.sock.close()


def _text(value: str | bytes) -> str:
    """A header name or value as str: h2 types them as either (str here, with header_encoding set)."""
    return value.decode() if isinstance(value, bytes) else value


def frame(message: bytes) -> bytes:
    return b"\x00" + len(message).to_bytes(4, "big") + message


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")
