"""What the check tests share: a registry process to read published health from, a healthy anchor
service so that Match has somewhere to send keys, and the targets the checks probe (an HTTP server
whose answer a test sets, a TCP port it opens and closes, a gRPC health server it flips)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from registry.client import NotFound, RpcClient
from registry.register import Register
from tests.e2e.helpers import TOLERANT, Registry, wait_for

KEYS = [f"key-{i}" for i in range(64)]


class Pool:
    """One registry process (LAN profile: no false suspicion on a loaded machine) and a client."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.client = RpcClient(registry.rpc, timeout=10.0)

    def published(self, group: str, ident: str) -> tuple[str, str, str] | None:
        """(health tag, health_note tag, Serf status) of `ident` as the registry lists it."""
        try:
            found = [s for s in self.client.members(group, all=True) if s.id == ident]
        except NotFound:
            return None
        if not found:
            return None
        s = found[0]
        return s.tags.get("health", ""), s.tags.get("health_note", ""), s.status

    def routed(self, group: str) -> set[str]:
        """The services Match sends `KEYS` to."""
        try:
            return {s.id for s in self.client.match_batch(group, KEYS)}
        except NotFound:
            return set()

    def wait_health(self, group: str, ident: str, health: str, note: str = "", timeout: float = 20.0) -> tuple[str, str, str]:
        """Wait until the registry lists `ident` with `health` and a note containing `note`."""
        def seen() -> tuple[str, str, str] | None:
            row = self.published(group, ident)
            return row if row is not None and row[0] == health and note in row[1] else None

        return wait_for(seen, timeout, interval=0.02, what=f"{ident} published {health} {note!r} "
                        f"(last: {self.published(group, ident)})")

    def anchor(self, group: str) -> Register:
        """A started service without checks in `group` (the caller stops it)."""
        reg = Register(f"{group}-anchor", "127.0.0.1:0", "", self.registry.gossip, group, "127.0.0.1:9",
                       profile=TOLERANT)
        reg.start()
        wait_for(lambda: self.routed(group) == {f"{group}-anchor"}, 20, what=f"{group} anchor routed")
        return reg

    def close(self) -> None:
        self.client.close()


class HttpTarget:
    """An HTTP server on loopback whose /health answers `code` with `body` (set by the test)."""

    def __init__(self) -> None:
        self.code, self.body = 200, "ok"
        target = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = target.body.encode()
                self.send_response(target.code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/health"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class TcpTarget:
    """A listening TCP port on loopback that the test closes and opens again (same port)."""

    def __init__(self) -> None:
        self.sock: socket.socket | None = None
        self.port = 0
        self.open()

    def open(self) -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(64)
        self.port = s.getsockname()[1]
        self.sock = s

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


@contextmanager
def grpc_health_server() -> Iterator[tuple[str, Any]]:
    """A grpcio server on loopback with grpc_health's servicer: ("127.0.0.1:port", servicer)."""
    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    servicer = health.HealthServicer()
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", servicer
    finally:
        server.stop(0)
