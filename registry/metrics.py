"""Prometheus text exposition (format 0.0.4) over a tiny asyncio HTTP server.

No client library: a registry exposes a handful of gauges and counters that are
computed on each scrape from live state (catalog, membership, drop counters), so
all we need is a renderer and a GET handler.  Scrapes are read with a size cap
and a timeout so a misbehaving client cannot pin the event loop.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["Metric", "MetricKind", "MetricsServer", "counters_by_key", "render"]

#: The Prometheus types this exposition writes (# TYPE lines).
MetricKind = Literal["gauge", "counter"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_MAX_REQUEST = 8192
_READ_TIMEOUT = 5.0


@dataclass(frozen=True)
class Metric:
    """One metric family: every sample shares the name, help text and type."""

    name: str
    help: str
    kind: MetricKind = "gauge"
    samples: Sequence[tuple[Mapping[str, str], float]] = field(default_factory=list)


def counters_by_key(name: str, help: str, stats: object) -> Metric | None:
    """A counter family of a component's `stats` mapping, one sample per numeric entry labelled
    `key`; None when there is nothing to show (no mapping, or an empty one)."""
    if not isinstance(stats, Mapping) or not stats:
        return None
    samples = [({"key": str(k)}, float(v)) for k, v in sorted(stats.items()) if isinstance(v, (int, float))]
    return Metric(name, help, "counter", samples)


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def render(metrics: Iterable[Metric]) -> str:
    """The text exposition of `metrics`, ending with a newline."""
    lines: list[str] = []
    for m in metrics:
        lines.append(f"# HELP {m.name} {_escape_help(m.help)}")
        lines.append(f"# TYPE {m.name} {m.kind}")
        for labels, value in m.samples:
            if labels:
                inner = ",".join(f'{k}="{_escape_label(v)}"' for k, v in sorted(labels.items()))
                lines.append(f"{m.name}{{{inner}}} {_number(value)}")
            else:
                lines.append(f"{m.name} {_number(value)}")
    return "\n".join(lines) + "\n"


class MetricsServer:
    """Serves `GET /metrics` with whatever `collect()` returns at scrape time."""

    def __init__(self, collect: Callable[[], Iterable[Metric]]) -> None:
        self._collect = collect
        self._server: asyncio.base_events.Server | None = None

    async def start(self, host: str, port: int) -> tuple[str, int]:
        """Listen on host:port (port 0 = pick one); returns the bound (host, port)."""
        self._server = await asyncio.start_server(self._handle, host or None, port)
        sock = self._server.sockets[0].getsockname()
        return str(sock[0]), int(sock[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _READ_TIMEOUT)
            status, body, ctype = self._respond(head)
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        payload = body.encode("utf-8")
        writer.write(
            f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(payload)}\r\n"
            "Connection: close\r\n\r\n".encode("ascii") + payload
        )
        try:
            await asyncio.wait_for(writer.drain(), _READ_TIMEOUT)
        except (asyncio.TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    def _respond(self, head: bytes) -> tuple[str, str, str]:
        if len(head) > _MAX_REQUEST:
            return "431 Request Header Fields Too Large", "too large\n", "text/plain"
        parts = head.split(b"\r\n", 1)[0].split()
        if len(parts) < 2 or parts[0] not in (b"GET", b"HEAD"):
            return "405 Method Not Allowed", "GET only\n", "text/plain"
        path = parts[1].split(b"?", 1)[0]
        if path in (b"/metrics", b"/"):
            try:
                return "200 OK", render(self._collect()), CONTENT_TYPE
            except Exception as exc:  # noqa: BLE001 - a collector bug must not kill the listener
                return "500 Internal Server Error", f"collect failed: {exc}\n", "text/plain"
        if path == b"/healthz":
            return "200 OK", "ok\n", "text/plain"
        return "404 Not Found", "not found\n", "text/plain"
