"""TTL registrations over HTTP: the /v1 form, hera's form, and the write token.

- `PUT /v1/services/<group>/<id>` with `{"addr": "host:port", "ttl": "30s", "tags": {...}, "replicas": 3,
  "weight": 2}` (only `addr` required; `ttl` a Go duration or seconds, `-ttl-default` when absent) registers
  or refreshes; `DELETE` removes (404 when no such live registration); `GET /v1/services/<group>` lists the
  group's live TTL registrations. Unknown fields are refused (a typo must not silently drop a setting).
- hera's form: `PUT /<service>/<id>` with any JSON object (any content type: curl's default form type
  too), the address from `addr` or `host` + `port`, liveness from `ttl` if present else `-ttl-default`,
  the object stored whole (the entry's `doc`); `GET /<service>` answers hera's map id -> object as PUT,
  gossiping members of that group as `{"addr", "tags", "kind": "gossip"}`, services an adapter imported
  as `{"addr", "tags", "kind": "external", "origin": "<adapter>"}`; `DELETE /<service>/<id>`.
  First segments the API uses (`RESERVED`) are not services.

The token (`-http-token`/`-http-token-file`), when set, guards every write (PUT, DELETE): `Authorization:
Bearer <token>` or `X-Registry-Token: <token>`, compared in constant time; missing is 401, wrong is 403, and
either is decided before a byte of the body is read. Reads stay open.

Bodies: at most `MAX_BODY` (16 KiB); a longer declared Content-Length is 413 before reading, a longer
chunked body is 413 as soon as the bytes read pass the bound (never buffered whole).
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Callable, Mapping
from http import HTTPStatus
from typing import Any, Protocol

from aiohttp import web

from registry.addresses import format_hostport
from registry.catalog import ServiceKind
from registry.grpcwire import Status
from registry.http.answers import ApiError, dumps, entry_json, json_response
from registry.http.blocking import Changes, blocking_params
from registry.http.durations import parse_duration_ms
from registry.ttl.entry import Entry, Limits

__all__ = ["MAX_BODY", "RESERVED", "TtlWriter", "Writes"]

MAX_BODY = 16 * 1024
#: First path segments that are the API's, never a hera service name ("" is the root).
RESERVED = frozenset({"", "v1", "healthz", "ui", "metrics"})
_V1_FIELDS = frozenset({"addr", "ttl", "tags", "replicas", "weight"})
#: A hera service name as a route pattern: one path segment, not a reserved one.
_SERVICE = "(?!(?:" + "|".join(sorted(r for r in RESERVED if r)) + ")(?:/|$))[^/]+"


class TtlWriter(Protocol):
    """What the front needs of the registry's TTL driver (`registry.ttl.driver.TtlDriver`)."""

    limits: Limits

    def write(self, group: str, id: str, *, addr: str, ttl_ms: int, tags: Mapping[str, str] | None = None,
              replicas: int | None = None, weight: int | None = None, doc: bytes = b"") -> Entry: ...

    def delete(self, group: str, id: str) -> bool: ...

    def entries(self, group: str) -> list[Entry]: ...

    def entry(self, group: str, id: str) -> Entry | None: ...


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _invalid(message: str) -> ApiError:
    return ApiError(HTTPStatus.BAD_REQUEST, Status.INVALID_ARGUMENT, message)


def _ttl_ms(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise _invalid("ttl must be a duration (\"30s\") or a number of seconds")
    try:
        return parse_duration_ms(value if isinstance(value, str) else repr(value))
    except ValueError as exc:
        raise _invalid(f"ttl: {exc}") from None


def _optional_int(body: Mapping[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid(f"{name} must be an integer")
    return value


async def read_json_object(request: web.BaseRequest, limit: int = MAX_BODY) -> tuple[dict[str, Any], bytes]:
    """The body as a JSON object and as bytes; 413 past `limit` (before reading when declared), 400 otherwise."""
    too_large = ApiError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, Status.RESOURCE_EXHAUSTED,
                         f"the body is larger than {limit} bytes")
    declared = request.content_length
    if declared is not None and declared > limit:
        raise too_large
    body = bytearray()
    while True:
        chunk = await request.content.readany()
        if not chunk:
            break
        body += chunk
        if len(body) > limit:
            raise too_large
    try:
        value = json.loads(bytes(body).decode("utf-8"))
    except UnicodeDecodeError:
        raise _invalid("the body is not UTF-8 text") from None
    except (ValueError, RecursionError) as exc:
        raise _invalid(f"the body is not JSON: {str(exc).splitlines()[0] if str(exc) else 'nested too deep'}") from None
    if not isinstance(value, dict):
        raise _invalid("the body is not a JSON object")
    return value, bytes(body)


class Writes:
    """The write routes, hera's reads, and the token check."""

    def __init__(self, ttl: Callable[[], TtlWriter | None], changes: Changes, *, token: str = "",
                 ttl_default_ms: int = 300_000) -> None:
        self._ttl = ttl
        self.changes = changes
        self._token = token.encode("utf-8")
        self.ttl_default_ms = ttl_default_ms
        self.denied = 0  # writes refused for a missing or wrong token

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/v1/services/{group}", self.list_v1),
            web.put("/v1/services/{group}/{id:.*}", self.put_v1),
            web.delete("/v1/services/{group}/{id:.*}", self.delete_v1),
            # hera's form: a first segment that is not reserved (so /v1/<typo> is 404, not hera's PUT/DELETE's 405)
            web.get(f"/{{service:{_SERVICE}}}", self.get_hera),
            web.put(f"/{{service:{_SERVICE}}}/{{id:.*}}", self.put_hera),
            web.delete(f"/{{service:{_SERVICE}}}/{{id:.*}}", self.delete_hera),
        ]

    def driver(self) -> TtlWriter:
        ttl = self._ttl()
        if ttl is None:
            raise ApiError(HTTPStatus.SERVICE_UNAVAILABLE, Status.UNAVAILABLE,
                           "TTL registrations are not available on this registry yet (starting or stopping)")
        return ttl

    def authorize(self, request: web.BaseRequest) -> None:
        """401 without a token, 403 with a wrong one (when the registry has a token)."""
        if not self._token:
            return
        given: str | None = request.headers.get("X-Registry-Token")
        if given is None:
            auth = request.headers.get("Authorization", "")
            scheme, _, value = auth.partition(" ")
            if scheme.lower() == "bearer" and value.strip():
                given = value.strip()
        if given is None:
            self.denied += 1
            raise ApiError(HTTPStatus.UNAUTHORIZED, Status.UNAUTHENTICATED,
                           "writes need the registry's token: Authorization: Bearer <token> or X-Registry-Token",
                           headers={"WWW-Authenticate": 'Bearer realm="registry"'})
        if not hmac.compare_digest(given.encode("utf-8", "surrogateescape"), self._token):
            self.denied += 1
            raise ApiError(HTTPStatus.FORBIDDEN, Status.PERMISSION_DENIED, "wrong token")

    # -- /v1 -----------------------------------------------------------------------------

    async def put_v1(self, request: web.Request) -> web.Response:
        self.authorize(request)
        group, ident = request.match_info["group"], request.match_info["id"]
        body, _ = await read_json_object(request)
        ttl = self.driver()
        unknown = sorted(set(body) - _V1_FIELDS)
        if unknown:
            raise _invalid(f"unknown field {unknown[0]!r} (fields: {', '.join(sorted(_V1_FIELDS))})")
        addr = body.get("addr")
        if not isinstance(addr, str):
            raise _invalid("addr is required: \"host:port\"")
        tags = body.get("tags")
        if tags is not None and not isinstance(tags, dict):
            raise _invalid("tags must be an object of strings")
        ttl_ms = _ttl_ms(body["ttl"]) if "ttl" in body else self.ttl_default_ms
        entry = ttl.write(group, ident, addr=addr, ttl_ms=ttl_ms, tags=tags,
                          replicas=_optional_int(body, "replicas"), weight=_optional_int(body, "weight"))
        return json_response(dumps(entry_json(entry, _now_ms())))

    async def delete_v1(self, request: web.Request) -> web.Response:
        self.authorize(request)
        group, ident = request.match_info["group"], request.match_info["id"]
        if not self.driver().delete(group, ident):
            raise ApiError(HTTPStatus.NOT_FOUND, Status.NOT_FOUND, f"no TTL service {ident!r} in group {group!r}")
        return json_response(dumps({"group": group, "id": ident, "deleted": True}))

    async def list_v1(self, request: web.Request) -> web.Response:
        group = request.match_info["group"]
        block = blocking_params(request.query)
        if block is not None:
            await self.changes.wait(group, *block)
        index = self.changes.index(group)
        now = _now_ms()
        entries = [entry_json(e, now) for e in self.driver().entries(group)]
        return json_response(dumps({"group": group, "services": entries}), index=index)

    # -- hera ----------------------------------------------------------------------------

    @staticmethod
    def _service(request: web.Request) -> str:
        return request.match_info["service"]  # never a reserved name: the route's pattern excludes them

    async def put_hera(self, request: web.Request) -> web.Response:
        service = self._service(request)
        self.authorize(request)
        ident = request.match_info["id"]
        body, _ = await read_json_object(request)
        ttl = self.driver()
        addr = body.get("addr")
        if not isinstance(addr, str):
            host, port = body.get("host"), body.get("port")
            if isinstance(port, str) and port.strip().isdigit():
                port = int(port)
            if not isinstance(host, str) or not host or isinstance(port, bool) or not isinstance(port, int) \
                    or not 0 < port < 65536:
                raise _invalid("the object needs \"addr\" (\"host:port\"), or \"host\" and \"port\" (1..65535)")
            addr = format_hostport(host, port)
        ttl_ms = _ttl_ms(body["ttl"]) if "ttl" in body else self.ttl_default_ms
        doc = dumps(body)
        ttl.write(service, ident, addr=addr, ttl_ms=ttl_ms, doc=doc)
        return json_response(doc)

    async def delete_hera(self, request: web.Request) -> web.Response:
        service = self._service(request)
        self.authorize(request)
        ident = request.match_info["id"]
        if not self.driver().delete(service, ident):
            raise ApiError(HTTPStatus.NOT_FOUND, Status.NOT_FOUND, f"no TTL service {ident!r} in {service!r}")
        return json_response(b"{}")

    async def get_hera(self, request: web.Request) -> web.Response:
        """hera's map id -> the object as PUT; gossiping members of the group too, marked as such."""
        service = self._service(request)
        answer: dict[str, Any] = {}
        for s in self.changes.catalog.members(service):
            if s.kind == ServiceKind.GOSSIP:
                answer[s.id] = {"addr": s.addr, "tags": dict(s.tags), "kind": str(ServiceKind.GOSSIP)}
            elif s.kind == ServiceKind.EXTERNAL:  # imported by an adapter (issue 18): which one
                answer[s.id] = {"addr": s.addr, "tags": dict(s.tags), "kind": str(s.kind), "origin": s.origin}
        ttl = self._ttl()  # without a driver (starting, stopping), the gossiping members alone
        for e in ttl.entries(service) if ttl is not None else ():
            if e.doc:
                try:
                    answer[e.id] = json.loads(e.doc)
                    continue
                except ValueError:
                    pass
            answer[e.id] = {"addr": e.addr, "tags": dict(e.tags), "kind": str(ServiceKind.TTL)}
        return json_response(dumps(answer), index=self.changes.index(service))
