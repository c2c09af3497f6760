"""The web page (issue 16): its files, and the JSON it draws the pool and each group's ring from.

Routes (all GET; the JSON ones block as the reads do, `?index=N&wait=30s`, and carry `X-Registry-Index`):
- `/` the page (`static/index.html`), `/ui/<file>` its other files.
- `/v1/pool`: every gossip member (any status, health, protocol, Vivaldi RTT from this registry) and every
  group's counts. Its index is its own: the registry-wide catalog change counter plus the member events
  (`pool.PoolView.events`), so a query blocked on it wakes on a join, leave, failure, tag or health change.
- `/v1/ring/<group>`: the ring to draw: each service's exact share (`Ring.shares()`, the balance benchmark's
  arc sums), the arcs merged per owner (`registry.ring.view.arcs`), the group's timeline
  (`registry.timeline`). Its index is the group's version (the Members index).
- `/v1/ring/<group>/key/<key>?n=3`: the key's position on the circle and its `n` owners, the very services
  `/v1/match` and gRPC Match answer (the same core call, the same cached JSON).

Why the static files are a table and not a directory served: the table is built once, at the first
request, from the package's `static/` listing (regular files with plain names, read into memory); a
request's path is only ever a key looked up in it, so no `..`, `%2e%2e` or symlink can reach another
file. Every file carries `Content-Security-Policy: default-src 'self'` (no inline script or style,
nothing fetched from elsewhere), `X-Content-Type-Options: nosniff` and `Cache-Control: no-cache` (an
upgraded registry serves its new page at once; the browser revalidates, the files are small).

Why drawings are cached and sometimes computed off the loop: shares walk every entry of the ring, a
Python-speed pass on rings of 4096 points a member. Per (group, version, bins) the answer's services
and arcs are kept (the newest version of each group only); rings of more than `INLINE_POINTS` entries
are drawn on the `Offload` worker (a newer version of the group supersedes one not yet started), the
request awaiting it without blocking the loop. A ring answer also waits (at most `MOVED_WAIT`) for the
worker's `moved` of the group's newest timeline entry, so the page rarely sees it "being computed".
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.resources
import re
import zlib
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from aiohttp import web

from registry.api import Invalid, RegistryCore
from registry.catalog import REGISTRY_GROUP, TAG_ADDR, TAG_GROUP, ServiceKind
from registry.grpcwire import Status
from registry.healthtags import parse_health
from registry.http.answers import ApiError, dumps, json_response
from registry.http.blocking import Changes, blocking_params
from registry.http.pool import PoolView
from registry.http.reads import int_param
from registry.offload import Busy, Offload
from registry.ring import Ring
from registry.ring.base import ring_class
from registry.ring.view import arcs, key_position, point_position
from registry.timeline import Timeline

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

__all__ = ["BINS", "INLINE_POINTS", "MOVED_WAIT", "SECURITY_HEADERS", "Ui"]

#: Default, least and most slices of a sampled circle (`?bins=`).
BINS = (1440, 64, 4096)
#: Rings with more entries are drawn on the worker, not on the loop (shares of 20,000 entries: ~5 ms).
INLINE_POINTS = 20_000
#: Seconds a ring answer waits for its timeline's newest `moved` share.
MOVED_WAIT = 1.0
#: Groups whose drawing is kept.
MAX_DRAWN = 256
#: How often a request drawn on the worker starts again when a newer version superseded its job.
_RETRIES = 8

SECURITY_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'self'",
    "Referrer-Policy": "no-referrer",
}
_TYPES = {
    "html": "text/html; charset=utf-8",
    "js": "text/javascript; charset=utf-8",
    "css": "text/css; charset=utf-8",
    "svg": "image/svg+xml",
    "png": "image/png",
    "ico": "image/x-icon",
    "json": "application/json",
    "txt": "text/plain; charset=utf-8",
}
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
_POOL_KEY = "\x00pool"  # parked /v1/pool queries (no group name holds NUL)


def colour(service_id: str) -> int:
    """The hue (0..359) a service is drawn in: a hash of its id, the same on every registry and run."""
    return zlib.crc32(service_id.encode("utf-8", "surrogatepass")) % 360


@dataclass(frozen=True)
class _File:
    body: bytes
    content_type: str


def _static_files(folder: Traversable) -> dict[str, _File]:
    """The page's files: every regular file with a plain name and a known type in `folder`."""
    out: dict[str, _File] = {}
    if not folder.is_dir():
        return out
    for item in folder.iterdir():
        name = item.name
        if not _PLAIN_NAME.fullmatch(name) or not item.is_file():
            continue
        kind = _TYPES.get(name.rpartition(".")[2].lower())
        if kind is not None:
            out[name] = _File(item.read_bytes(), kind)
    return out


@dataclass(frozen=True)
class _Drawn:
    """A group's ring at one version as the page draws it: the JSON of services and arcs."""

    version: int
    bins: int
    body: bytes  # `"services":[...],"arcs":{...}` without the braces around


def _draw(core: RegistryCore, group: str, version: int, ring: Ring, services: list[Any], bins: int) -> _Drawn:
    """Shares, point counts, colours and merged arcs of one snapshot (on the loop or the worker)."""
    shares = ring.shares()
    cls = ring_class(ring.algorithm)
    nodes = ring.nodes
    rows = []
    for s in services:
        node = nodes.get(s.id)
        rows.append({"id": s.id, "addr": s.addr, "kind": s.kind.value, "health": s.health.word,
                     "health_note": s.health_note or None, "on_ring": node is not None,
                     "share": shares.get(s.id, 0.0), "points": cls.count(node) if node is not None else 0,
                     "color": colour(s.id)})
    index = {s.id: i for i, s in enumerate(services)}
    drawn = arcs(ring, bins)
    runs = [[start, index[drawn.names[owner]]] for start, owner in drawn.runs]
    body = b'"services":' + dumps(rows) + b',"arcs":' + dumps({"exact": drawn.exact, "runs": runs})
    return _Drawn(version, bins, body)


class Ui:
    """Handlers of the page's routes over one core; see the module docstring."""

    def __init__(self, core: RegistryCore, changes: Changes, pool: PoolView | None, offload: Offload,
                 timeline: Timeline, *, inline_points: int = INLINE_POINTS) -> None:
        self.core = core
        self.changes = changes
        self.pool = pool
        self.offload = offload
        self.timeline = timeline
        self.inline_points = inline_points
        #: Where the page's files are read from, once, at the first request for one.
        self.static_dir: Traversable = importlib.resources.files("registry.http").joinpath("static")
        self._files: dict[str, _File] | None = None
        self._drawn: OrderedDict[str, _Drawn] = OrderedDict()
        #: Drawings on the worker now, by (group, bins): (version, future); requests for that version share it.
        self._flights: dict[tuple[str, int], tuple[int, Future[_Drawn]]] = {}
        self._loop = asyncio.get_running_loop()
        if pool is not None:
            pool.on_event(lambda: changes.wake(_POOL_KEY))
        changes.listeners.append(lambda _change: changes.wake(_POOL_KEY))

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/", self.index),
            web.get("/ui/{file}", self.static),
            web.get("/v1/pool", self.pool_answer),
            web.get("/v1/ring/{group}", self.ring_answer),
            web.get("/v1/ring/{group}/key/{key:.*}", self.key_answer),
        ]

    # ------------------------------------------------------------------ files

    def _file(self, name: str) -> _File:
        if self._files is None:
            self._files = _static_files(self.static_dir)
        found = self._files.get(name)
        if found is None:
            raise ApiError(HTTPStatus.NOT_FOUND, Status.NOT_FOUND, f"no file {name!r} in the web page's files")
        return found

    def _file_response(self, name: str) -> web.Response:
        f = self._file(name)
        return web.Response(body=f.body, headers={"Content-Type": f.content_type, **SECURITY_HEADERS})

    async def index(self, request: web.Request) -> web.Response:
        return self._file_response("index.html")

    async def static(self, request: web.Request) -> web.Response:
        return self._file_response(request.match_info["file"])

    # ------------------------------------------------------------------- pool

    def _pool_index(self) -> int:
        return self.changes.changes + (self.pool.events if self.pool is not None else 0)

    async def pool_answer(self, request: web.Request) -> web.Response:
        block = blocking_params(request.query)
        if block is not None:
            await self.changes.wait_on(_POOL_KEY, self._pool_index, *block)
        index = self._pool_index()
        pool = self.pool
        members = []
        for m in sorted(pool.members(), key=lambda m: m.name) if pool is not None else ():
            group = m.tags.get(TAG_GROUP) or None
            health, note = (None, None)
            if group is not None:
                h, text, _known = parse_health(m.tags)
                health, note = h.word, text or None
            rtt = pool.rtt_ms(m.name) if pool is not None else None
            members.append({
                "name": m.name, "addr": f"[{m.addr}]:{m.port}" if ":" in m.addr else f"{m.addr}:{m.port}",
                "status": m.status, "role": "registry" if group == REGISTRY_GROUP else "service",
                "group": group, "service_addr": m.tags.get(TAG_ADDR) or None, "health": health,
                "health_note": note, "protocol": m.protocol, "rtt_ms": None if rtt is None else round(rtt, 3),
                "tags": dict(m.tags)})
        catalog = self.core.catalog
        groups = []
        for g in catalog.groups():
            live = catalog.members(g)
            routed = [s for s in live if catalog.routed(s)]
            groups.append({"name": g, "services": len(routed),
                           "ttl": sum(1 for s in routed if s.kind is ServiceKind.TTL),
                           "critical": len(live) - len(routed)})
        body = dumps({"self": pool.local_name if pool is not None else None, "index": index,
                      "members": members, "groups": groups})
        return json_response(body, index=index)

    # ------------------------------------------------------------------- ring

    def _bins(self, request: web.Request) -> int:
        default, least, most = BINS
        bins = int_param(request.query, "bins", default)
        if not least <= bins <= most:
            raise Invalid(f"bins={bins} out of range {least}..{most}")
        return bins

    async def _drawing(self, group: str, bins: int) -> tuple[_Drawn, int]:
        """The drawing of the group's current version (and that version): cached, or drawn now."""
        catalog = self.core.catalog
        for _ in range(_RETRIES):
            services = self.core.members(group)  # Missing (404) as Members for a group with no live service
            version = catalog.version(group)
            hit = self._drawn.get(group)
            if hit is not None and hit.version == version and hit.bins == bins:
                self._drawn.move_to_end(group)
                return hit, version
            ring = catalog.ring(group)
            if ring.point_count <= self.inline_points:
                drawn = _draw(self.core, group, version, ring, services, bins)
            else:
                key = (group, bins)
                flight = self._flights.get(key)
                if flight is not None and flight[0] == version and not flight[1].cancelled():
                    future = flight[1]  # the same drawing asked by another request: share it
                else:
                    job = functools.partial(_draw, self.core, group, version, ring, services, bins)
                    try:
                        future = self.offload.submit(("ring", group, bins), job)
                    except Busy as exc:
                        raise ApiError(HTTPStatus.TOO_MANY_REQUESTS, Status.RESOURCE_EXHAUSTED, str(exc)) from None
                    self._flights[key] = (version, future)
                    future.add_done_callback(functools.partial(self._landed, key))
                waited = asyncio.wrap_future(future)
                await asyncio.wait({waited})  # never cancels the job: other requests may share it
                if waited.cancelled():
                    continue  # a newer version superseded it: draw that one
                drawn = waited.result()
            self._drawn[group] = drawn
            self._drawn.move_to_end(group)
            while len(self._drawn) > MAX_DRAWN:
                self._drawn.popitem(last=False)
            return drawn, version
        raise ApiError(HTTPStatus.SERVICE_UNAVAILABLE, Status.UNAVAILABLE,
                       f"group {group!r} changed {_RETRIES} times while its ring was drawn; ask again")

    def _landed(self, key: tuple[str, int], future: Future[_Drawn]) -> None:
        """A drawing's future is done (any thread): forget its flight, on the loop."""
        def forget() -> None:
            flight = self._flights.get(key)
            if flight is not None and flight[1] is future:
                del self._flights[key]

        with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to forget
            self._loop.call_soon_threadsafe(forget)

    async def ring_answer(self, request: web.Request) -> web.Response:
        group = request.match_info["group"]
        self.core.check_group(group)
        bins = self._bins(request)
        block = blocking_params(request.query)
        if block is not None:
            await self.changes.wait(group, *block)
        pending = self.timeline.pending(group)
        if pending is not None:
            await asyncio.wait({asyncio.wrap_future(pending)}, timeout=MOVED_WAIT)
        drawn, version = await self._drawing(group, bins)
        head = (b'{"group":' + dumps(group) + b',"version":' + str(version).encode()
                + b',"algorithm":' + dumps(self.core.catalog.algorithm) + b',"index":' + str(version).encode())
        body = head + b"," + drawn.body + b',"timeline":' + dumps(self.timeline.entries(group)) + b"}"
        return json_response(body, index=version)

    async def key_answer(self, request: web.Request) -> web.Response:
        group, key = request.match_info["group"], request.match_info["key"]
        n = int_param(request.query, "n", 3)
        block = blocking_params(request.query)
        if block is not None:
            await self.changes.wait(group, *block)
        version = self.core.catalog.version(group)
        found = self.core.match(group, key, n)  # Match's own checks and errors
        ring = self.core.catalog.ring(group)
        algorithm = ring.algorithm
        start, end, _owner = ring.arc_at(ring_class(algorithm).key_hash(key))
        services = b",".join([self.changes.service_bytes(self.core, s) for s in found])
        head = dumps({"group": group, "key": key, "version": version,
                      "position": key_position(algorithm, key),
                      "arc": [point_position(ring, start), point_position(ring, end)]})
        body = head[:-1] + b',"services":[' + services + b"]}"
        return json_response(body, index=version)
