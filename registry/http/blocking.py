"""Consul's blocking queries for the HTTP API: an index on every answer, and `?index=N&wait=30s`.

Every read answer carries `X-Registry-Index`: for a group's routes the group's catalog version (it bumps on
every change of the group and never goes back), for /v1/groups a registry-wide counter of catalog changes
(this front's, from 1 at its start: a registry's own, as Consul's index is a server's). A query with
`index=N` whose index is still N parks until the group changes, then answers; at `wait` (Go duration or
seconds, default 5m, at most 10m, as Consul) it answers with the same index. An index other than N (newer,
or older: the registry restarted) answers at once, as Consul does after a reset.

Why futures woken from `Catalog.subscribe` and not polling: a change wakes exactly the queries parked on its
group, on the next loop pass (well within the issue's 100 ms), and an idle parked query costs nothing but its
future. Parked queries are capped per process (`MAX_PARKED`, 10,000, beside the 10,000 Watch streams of
`registry.api`): each holds a request, a task and a connection; beyond the cap the query is refused with
429 RESOURCE_EXHAUSTED and counted, never parked unbounded. On stop every parked query is woken and answers.

The same subscription keeps the JSON of each Service cached (`service_bytes`), dropped when the service is.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from registry.api import Exhausted, Invalid
from registry.catalog import Catalog, GroupChange, Service
from registry.http.answers import dumps, message_json
from registry.http.durations import parse_duration_ms

if TYPE_CHECKING:
    from registry.api import RegistryCore

__all__ = ["DEFAULT_WAIT", "MAX_PARKED", "MAX_WAIT", "Changes", "blocking_params"]

MAX_PARKED = 10_000
DEFAULT_WAIT = 300.0  # seconds, when index is given without wait (Consul: 5 minutes)
MAX_WAIT = 600.0  # Consul caps wait at 10 minutes
_MAX_INDEX = (1 << 64) - 1
_ALL = "\x00groups"  # the key of queries on /v1/groups (no group name holds NUL: check_entry, tags)


def blocking_params(query: Mapping[str, str]) -> tuple[int, float] | None:
    """(index, wait seconds) of a blocking query, None for a plain one; `Invalid` naming a bad parameter."""
    raw = query.get("index")
    if raw is None:
        return None
    text = raw.strip()
    if not text.isdigit() or not text.isascii() or len(text) > 20 or int(text) > _MAX_INDEX:
        raise Invalid(f"index={raw!r} is not an index (a non-negative integer, as X-Registry-Index gives)")
    wait = DEFAULT_WAIT
    if "wait" in query:
        try:
            wait = parse_duration_ms(query["wait"]) / 1000
        except ValueError as exc:
            raise Invalid(f"wait: {exc}") from None
    return int(text), min(wait, MAX_WAIT)


class Changes:
    """Indexes, parked queries and the Service JSON cache, fed by the catalog's change callback."""

    def __init__(self, catalog: Catalog, max_parked: int = MAX_PARKED) -> None:
        self.catalog = catalog
        self.max_parked = max_parked
        #: Registry-wide changes seen (the /v1/groups index); from 1, as Consul's indexes are never 0.
        self.changes = 1
        self.parked_refused = 0
        self._parked = 0
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}
        self._json: dict[tuple[str, str], tuple[Service, bytes]] = {}
        self._closed = False
        #: Called on the loop after each catalog change (the UI's pool index wakes its own queries).
        self.listeners: list[Callable[[GroupChange], None]] = []
        self._loop = asyncio.get_running_loop()
        self._unsubscribe = catalog.subscribe(self._on_change)

    def close(self) -> None:
        """Stop following the catalog and wake every parked query (they answer at once)."""
        self._closed = True
        self._unsubscribe()
        for key in list(self._waiters):
            self._wake(key)

    @property
    def parked(self) -> int:
        return self._parked

    def index(self, group: str | None) -> int:
        """The group's version, or (None) the registry-wide change counter."""
        return self.changes if group is None else self.catalog.version(group)

    def _on_change(self, change: GroupChange) -> None:
        """Catalog callback: on the applying thread (the loop's, in a registry server)."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self._changed(change)
        else:
            self._loop.call_soon_threadsafe(self._changed, change)

    def _changed(self, change: GroupChange) -> None:
        self.changes += 1
        for s in change.removed:
            self._json.pop((s.group, s.id), None)
        self._wake(change.group)
        self._wake(_ALL)
        for listener in self.listeners:
            listener(change)

    def wake(self, key: str) -> None:
        """Wake the queries parked on `key` (a key of `wait_on`'s)."""
        self._wake(key)

    def _wake(self, key: str) -> None:
        waiters = self._waiters.pop(key, None)
        for fut in waiters or ():
            if not fut.done():
                fut.set_result(None)

    def waiting(self, group: str | None) -> int:
        """Queries parked on `group` (None: on the registry-wide index) and not woken yet."""
        return sum(not f.done() for f in self._waiters.get(_ALL if group is None else group, ()))

    async def wait(self, group: str | None, index: int, wait: float) -> None:
        """Return once the index is no longer `index`, or after `wait` seconds; Exhausted at the cap."""
        await self.wait_on(_ALL if group is None else group, lambda: self.index(group), index, wait)

    async def wait_on(self, key: str, current: Callable[[], int], index: int, wait: float) -> None:
        """`wait` on any index: parked under `key` (woken by `wake(key)`, or by the group's changes when
        `key` is a group), sharing the cap with every parked query."""
        if self._closed or current() != index or wait <= 0:
            return
        if self._parked >= self.max_parked:
            self.parked_refused += 1
            raise Exhausted(f"{self._parked} blocking queries parked, at most {self.max_parked} per server")
        fut: asyncio.Future[None] = self._loop.create_future()
        self._waiters.setdefault(key, set()).add(fut)
        self._parked += 1
        try:
            await asyncio.wait({fut}, timeout=wait)
        finally:
            self._parked -= 1
            waiters = self._waiters.get(key)
            if waiters is not None:
                waiters.discard(fut)
                if not waiters:
                    del self._waiters[key]
            if not fut.done():
                fut.cancel()

    def service_bytes(self, core: RegistryCore, s: Service) -> bytes:
        """`s` as JSON (`answers.message_json` of its proto), cached while the catalog holds that object."""
        key = (s.group, s.id)
        hit = self._json.get(key)
        if hit is not None and hit[0] is s:
            return hit[1]
        data = dumps(message_json(core.service_pb(s)))
        self._json[key] = (s, data)
        return data
