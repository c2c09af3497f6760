"""`HttpFront`: the HTTP/JSON API's aiohttp application on the registry's loop, its listener and metrics.

aiohttp's `web.Application` routes (`reads`, `watch`, `ui`, `writes`) and its `AppRunner` owns the application's
life; the listening sockets are `gate`'s (caps at accept), each accepted socket served by aiohttp's own
HTTP/1.1 protocol (`gate.Connection`). One middleware turns every error (the API's, and aiohttp's own 404 and
405) into the one JSON error body and counts requests by route and status for `/metrics`.

HTTPS with the registry's TLS files (`-tls-cert`, `-tls-key`, `-tls-ca` for client certificates), the
context offering HTTP/1.1 by ALPN (the gRPC front's offers only h2).

Stop: listeners close, parked blocking queries and SSE streams are woken to end, then aiohttp shuts the
connections down (requests in progress get `shutdown_timeout`).

Access log: off (aiohttp's default access logger costs ~20% per request) unless the "aiohttp.access" logger
is enabled for DEBUG (the command's `-log-level debug`): then aiohttp logs each request there, which
`registry.logs` renders as every other line (structlog in front of stdlib logging).
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from aiohttp import web

from registry.api import RegistryCore
from registry.grpcwire import Status
from registry.health import Health
from registry.http.answers import ApiError, error_response, from_exception
from registry.http.blocking import MAX_PARKED, Changes
from registry.http.gate import MAX_PER_SOURCE, Connection, GateStats, HttpTable, connection_cap
from registry.http.pool import PoolView
from registry.http.reads import Reads
from registry.http.ui import Ui
from registry.http.watch import HEARTBEAT, Watches
from registry.http.writes import MAX_BODY, RESERVED, TtlWriter, Writes
from registry.metrics import Metric
from registry.native_listen import Listener
from registry.offload import Offload
from registry.timeline import Timeline
from registry.tls import TlsFiles

__all__ = ["HttpFront", "HttpLimits"]

log = logging.getLogger(__name__)

_GRPC_OF_HTTP = {
    HTTPStatus.BAD_REQUEST: Status.INVALID_ARGUMENT,
    HTTPStatus.NOT_FOUND: Status.NOT_FOUND,
    HTTPStatus.METHOD_NOT_ALLOWED: Status.UNIMPLEMENTED,
    HTTPStatus.REQUEST_ENTITY_TOO_LARGE: Status.RESOURCE_EXHAUSTED,
}
_UNMATCHED = "unmatched"


def _no_route(request: web.Request, headers: dict[str, str] | None) -> str:
    if headers is not None:
        return f"{request.method} is not allowed on {request.path} (allowed: {headers['Allow']})"
    first = request.path.lstrip("/").partition("/")[0]
    if first == "metrics":
        return f"no route {request.method} {request.path} (metrics are served on -metrics-addr)"
    if first in RESERVED and first != "v1":
        return (f"no route {request.method} {request.path} ({first!r} is not a service name: "
                f"{', '.join(repr(r) for r in sorted(RESERVED))} are reserved)")
    return f"no route {request.method} {request.path}"


@dataclass(frozen=True)
class HttpLimits:
    """Bounds of the HTTP front (defaults: see the module docstrings of `gate`, `blocking`, `writes`)."""

    max_body: int = MAX_BODY
    max_connections: int = 0  # 0: from the open-file limit, at most gate.MAX_CONNECTIONS
    max_connections_per_source: int = MAX_PER_SOURCE
    keepalive_timeout: float = 75.0  # an idle keep-alive connection is closed after this (nginx's default)
    max_parked: int = MAX_PARKED
    heartbeat: float = HEARTBEAT
    shutdown_timeout: float = 1.0


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class HttpFront:
    """The HTTP API of one registry: start it on the serving loop, stop it before the catalog goes."""

    def __init__(self, core: RegistryCore, health: Health, *, ttl: Callable[[], TtlWriter | None],
                 token: str = "", ttl_default_ms: int = 300_000, tls: TlsFiles | None = None,
                 limits: HttpLimits = HttpLimits(), access_log: bool | None = None,
                 pool: PoolView | None = None) -> None:
        self.core = core
        self.limits = limits
        self.tls = tls
        #: None: on when the "aiohttp.access" logger is enabled for DEBUG (the command's -log-level debug).
        self.access_log = (logging.getLogger("aiohttp.access").isEnabledFor(logging.DEBUG)
                           if access_log is None else access_log)
        self.stats = GateStats()
        #: Requests answered, by (route pattern, HTTP status).
        self.requests: Counter[tuple[str, int]] = Counter()
        self.changes = Changes(core.catalog, max_parked=limits.max_parked)
        self.watches = Watches(core, heartbeat=limits.heartbeat)
        self.writes = Writes(ttl, self.changes, token=token, ttl_default_ms=ttl_default_ms)
        self.reads = Reads(core, self.changes, health)
        #: The web page (`ui`): its worker thread starts only when a big ring is drawn.
        self.offload = Offload()
        self.timeline = Timeline(core.catalog, self.offload)
        self.ui = Ui(core, self.changes, pool, self.offload, self.timeline)
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._listener: Listener | None = None

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=self.limits.max_body)
        app.add_routes(self.reads.routes())
        app.add_routes(self.watches.routes())
        app.add_routes(self.ui.routes())
        app.add_routes(self.writes.routes())  # hera's catch-all /{service} routes last
        return app

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as exc:  # aiohttp's own: no route (404), wrong method (405), ...
            if exc.status < 400:
                raise
            status = HTTPStatus(exc.status)
            headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
            what = _no_route(request, headers)
            response = error_response(ApiError(status, _GRPC_OF_HTTP.get(status, Status.UNKNOWN), what, headers))
        except Exception as exc:
            err = from_exception(exc)
            if err is None:
                log.exception("HTTP %s %s failed", request.method, request.path)
                err = ApiError(HTTPStatus.INTERNAL_SERVER_ERROR, Status.INTERNAL, f"internal error: {type(exc).__name__}")
            response = error_response(err)
        route = request.match_info.route.resource
        self.requests[(route.canonical if route is not None else _UNMATCHED, response.status)] += 1
        return response

    async def start(self, host: str, port: int) -> int:
        """Listen on host:port (port 0: any); returns the port. OSError when it cannot listen, ValueError
        for unusable TLS files."""
        ssl = None
        if self.tls is not None:
            ssl = self.tls.ssl_context()
            ssl.set_alpn_protocols(["http/1.1"])
        access: dict[str, Any] = {} if self.access_log else {"access_log": None}
        runner = web.AppRunner(self._app(), handle_signals=False,
                               shutdown_timeout=self.limits.shutdown_timeout, **access)
        await runner.setup()
        self._runner = runner
        server = runner.server
        assert server is not None
        table = HttpTable(connection_cap(self.limits.max_connections), self.limits.max_connections_per_source,
                          self.stats)
        kwargs: dict[str, Any] = {"keepalive_timeout": self.limits.keepalive_timeout, **access}

        def factory(source: str, _sock: Any) -> Connection:
            return Connection(server, table, source, **kwargs)

        self._listener = Listener(factory, table, ssl=ssl, name="HTTP")
        try:
            self.port = await self._listener.start(host, port)
        except BaseException:
            await self.stop()
            raise
        return self.port

    async def stop(self) -> None:
        """Stop accepting, end parked queries and SSE streams, close every connection."""
        if self._listener is not None:
            self._listener.close()
            with contextlib.suppress(Exception):
                await self._listener.wait_closed()
            self._listener = None
        self.changes.close()
        self.watches.close()
        self.timeline.close()
        self.offload.close(timeout=0)  # not waited for on the loop: it ends after the job it runs
        if self._runner is not None:
            with contextlib.suppress(Exception):
                await self._runner.cleanup()
            self._runner = None

    def metrics(self) -> Iterable[Metric]:
        yield Metric("registry_http_requests_total", "HTTP API requests answered, by route and status.", "counter",
                     [({"route": r, "code": str(c)}, float(n)) for (r, c), n in sorted(self.requests.items())])
        yield Metric("registry_http_connections_total", "HTTP connections accepted.", "counter",
                     [({}, float(self.stats.connections))])
        yield Metric("registry_http_refusals_total", "HTTP connections or requests refused to protect the server, "
                     "by reason.", "counter",
                     [({"reason": "connection_cap"}, float(self.stats.connections_refused)),
                      ({"reason": "accept_error"}, float(self.stats.accept_errors)),
                      ({"reason": "blocking_queries"}, float(self.changes.parked_refused)),
                      ({"reason": "token"}, float(self.writes.denied))])
        yield Metric("registry_http_blocking_queries", "Blocking queries parked now.", "gauge",
                     [({}, float(self.changes.parked))])
        off = self.offload
        yield Metric("registry_http_ui_jobs_total", "Ring drawings and moved shares of the web page computed on its "
                     "worker thread, by outcome (superseded: a newer version came first; refused: the queue was "
                     "full).", "counter", [({"outcome": "ran"}, float(off.ran)),
                                            ({"outcome": "superseded"}, float(off.superseded)),
                                            ({"outcome": "refused"}, float(off.refused))])
