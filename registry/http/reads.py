"""The read routes: Match, Members, Groups on `registry.api.RegistryCore`, and /healthz.

Built on the core both gRPC fronts call, so an HTTP answer and a gRPC answer for the same input hold the
same services and fail with the same error text and status (`answers.from_exception`). Keys and groups are
path segments, percent-decoded by aiohttp after routing (a key holding "/" may be sent raw or as %2F; a
group holding "/" must be sent as %2F). Each route may block (`blocking`): the answer is computed after
the wait, with the index it reflects.

Datacenters (issue 17): `?dc=dc2` answers for another datacenter from this registry's mirror of it, as
gRPC's `datacenter` field, and `/v1/match`'s `?failover=1` as gRPC's `failover`; such an answer gains
`"datacenter"` and `"stale_seconds"` (a default answer is unchanged). Blocking (`?index=`) waits on this
registry's own changes, so it is refused with `?dc=` another datacenter rather than answered wrong.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from aiohttp import web

from registry import api_dc
from registry.api import Invalid, RegistryCore
from registry.api_dc import Remote
from registry.api_pb import ring_info, service_pb
from registry.catalog import Service
from registry.health import Health
from registry.http.answers import INDEX_HEADER, dumps, from_exception, json_response, message_json
from registry.http.blocking import Changes, blocking_params

__all__ = ["Reads", "int_param"]


def int_param(query: Mapping[str, str], name: str, default: int) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    text = raw.strip()
    if not text.lstrip("-").isdigit() or not text.isascii() or len(text) > 12:
        raise Invalid(f"{name}={raw!r} is not an integer")
    return int(text)


def _flag_param(query: Mapping[str, str], name: str) -> bool:
    raw = query.get(name)
    if raw is None:
        return False
    word = raw.strip().lower()
    if word in ("", "1", "true", "yes"):
        return True
    if word in ("0", "false", "no"):
        return False
    raise Invalid(f"{name}={raw!r}: use 1 or 0")


def _answered(core: RegistryCore, where: Remote | None) -> bytes:
    """`,"datacenter":...,"stale_seconds":...` of an answer for a named datacenter (or a failover)."""
    name, stale = (core.datacenter, 0.0) if where is None else (where.name, where.stale)
    return b',"datacenter":' + dumps(name) + b',"stale_seconds":' + dumps(stale)


class Reads:
    """Handlers of the read routes over one core."""

    def __init__(self, core: RegistryCore, changes: Changes, health: Health) -> None:
        self.core = core
        self.changes = changes
        self.health = health

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/v1/match/{group}/{key:.*}", self.match),
            web.get("/v1/members/{group}", self.members),
            web.get("/v1/groups", self.groups),
            web.get("/healthz", self.healthz),
        ]

    async def _answer(self, request: web.Request, group: str | None, build: Callable[[], bytes]) -> web.Response:
        """Block if asked, then `build()` the body; an error carries the index too."""
        block = blocking_params(request.query)
        if block is not None:
            await self.changes.wait(group, *block)
        index = self.changes.index(group)
        try:
            body = build()
        except Exception as exc:
            err = from_exception(exc)
            if err is None:
                raise
            err.headers[INDEX_HEADER] = str(index)
            raise err from None
        return json_response(body, index=index)

    def _dc(self, request: web.Request) -> str:
        """`?dc=`: "" for this registry's own datacenter; another one refuses a blocking query."""
        dc = request.query.get("dc", "").strip()
        if dc == self.core.datacenter:
            return ""
        if dc and "index" in request.query:
            raise Invalid(f"index= (a blocking query) waits on this registry's own datacenter "
                          f"({self.core.datacenter!r}), not on dc={dc!r}")
        return dc

    def _service(self, where: Remote | None, s: Service) -> bytes:
        if where is None:
            return self.changes.service_bytes(self.core, s)
        return dumps(message_json(service_pb(s, where.catalog.ring_node(s))))

    async def match(self, request: web.Request) -> web.Response:
        group, key = request.match_info["group"], request.match_info["key"]
        n = int_param(request.query, "n", 1)
        named = "dc" in request.query
        dc = self._dc(request)
        failover = _flag_param(request.query, "failover")

        def build() -> bytes:
            where: Remote | None = None
            if dc or failover:
                found, where = self.core.match_in(group, key, n, dc, failover)
            else:
                found = self.core.match(group, key, n)
            services = b",".join([self._service(where, s) for s in found])
            body = b'{"group":' + dumps(group) + b',"key":' + dumps(key) + b',"services":[' + services + b"]"
            return body + (_answered(self.core, where) if named or failover else b"") + b"}"

        return await self._answer(request, group, build)

    async def members(self, request: web.Request) -> web.Response:
        group = request.match_info["group"]
        everyone = _flag_param(request.query, "all")
        named = "dc" in request.query
        dc = self._dc(request)

        def build() -> bytes:
            where = self.core.where(dc)
            if everyone:
                services = b",".join([dumps(message_json(s)) for s in self.core.members_all(group, where)])
            else:
                catalog = None if where is None else where.catalog
                services = b",".join([self._service(where, s) for s in self.core.members(group, catalog)])
            version = self.core.version(group) if where is None else where.catalog.version(group)
            head = b'{"group":' + dumps(group) + b',"version":' + str(version).encode()
            return head + b',"services":[' + services + b"]" + (_answered(self.core, where) if named else b"") + b"}"

        return await self._answer(request, group, build)

    async def groups(self, request: web.Request) -> web.Response:
        named = "dc" in request.query
        dc = self._dc(request)

        def build() -> bytes:
            where = self.core.where(dc)
            catalog = self.core.catalog if where is None else where.catalog
            answer: dict[str, object] = {"groups": catalog.groups(), "ring": message_json(ring_info(catalog))}
            if self.core.federation is not None:
                answer["datacenters"] = [message_json(d) for d in api_dc.datacenters_pb(self.core.federation)]
            if named:
                answer["datacenter"] = self.core.datacenter if where is None else where.name
                answer["stale_seconds"] = 0.0 if where is None else where.stale
            return dumps(answer)

        return await self._answer(request, None, build)

    async def healthz(self, request: web.Request) -> web.Response:
        """For load balancers: 200 while the registry serves (joined, catalog loaded), else 503."""
        if self.health.serving:
            return json_response(b'{"status":"serving"}')
        return json_response(b'{"status":"not_serving"}', status=503)

