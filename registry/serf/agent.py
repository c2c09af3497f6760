"""`SerfAgent`: a Serf node on asyncio sockets (W3's MachineRunner driving the sans-I/O `Serf`).

Events reach the application two ways: callbacks (`add_handler`) called in order as events
are drained, and `events()` async iterators.  Each iterator has its own bounded buffer
(`event_queue_size`); when the consumer falls behind the oldest event is dropped and counted
in `stats["events.dropped"]`, so gossip never waits for the application.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

from registry.memberlist.node import JoinError, join_pool
from registry.memberlist.runner import MachineRunner
from registry.memberlist.types import Address

from . import keyring as keys
from . import messages as msgs
from .app import AppHandler
from .config import SerfConfig
from .core import Serf
from .events import Event
from .facade import SerfFacade
from .member import Member, MemberStatus
from .query import QueryHandle, QueryItem, QueryParams

__all__ = ["EventStream", "JoinError", "QueryStream", "SerfAgent"]

log = logging.getLogger(__name__)


class EventStream:
    """An async iterator over events, with a bounded drop-oldest buffer."""

    def __init__(self, agent: SerfAgent, size: int) -> None:
        self._agent = agent
        self._buf: deque[Event] = deque()
        self._size = size
        self._wake = asyncio.Event()
        self.dropped = 0
        self.closed = False

    def _push(self, ev: Event) -> None:
        if len(self._buf) >= self._size:
            self._buf.popleft()
            self.dropped += 1
            self._agent._node_stats["events.dropped"] += 1
        self._buf.append(ev)
        self._wake.set()

    def close(self) -> None:
        self.closed = True
        self._wake.set()
        self._agent._streams.discard(self)

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> Event:
        while not self._buf:
            if self.closed:
                raise StopAsyncIteration
            self._wake.clear()
            await self._wake.wait()
        return self._buf.popleft()


class QueryStream:
    """Responses to one query as an async iterator; ends when the query times out (or, with
    `stop_when_all`, once every member that was alive at the start has answered)."""

    def __init__(self, handle: QueryHandle, stop_when_all: bool = False) -> None:
        self.handle = handle
        self._buf: deque[QueryItem] = deque()
        self._wake = asyncio.Event()
        self._stop_when_all = stop_when_all
        # our own answer (and ack) is recorded while the query starts, before we listen
        self._buf.extend(handle.responses)
        handle.listener = self._on_item

    def _on_item(self, item: QueryItem | None) -> None:
        if item is not None and not item.ack:
            self._buf.append(item)
        self._wake.set()

    @property
    def acks(self) -> list[str]:
        return list(self.handle.acks)

    @property
    def responses(self) -> list[QueryItem]:
        return list(self.handle.responses)

    def _done(self) -> bool:
        if self.handle.closed:
            return True
        return (
            self._stop_when_all and len(self.handle.responses) >= self.handle.expected
        )

    def __aiter__(self) -> QueryStream:
        return self

    async def __anext__(self) -> QueryItem:
        while not self._buf:
            if self._done():
                raise StopAsyncIteration
            self._wake.clear()
            await self._wake.wait()
        return self._buf.popleft()

    async def collect(self) -> list[QueryItem]:
        return [item async for item in self]


class SerfAgent(SerfFacade[MachineRunner]):
    """A running Serf node; `await SerfAgent(config).start()` binds and starts gossiping.
    Event handlers may be coroutines: their awaitable results run as tasks."""

    def __init__(self, config: SerfConfig) -> None:
        super().__init__(config)
        self._streams: set[EventStream] = set()
        self._dispatch_scheduled = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._app_handler: AppHandler | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> Address:
        """Bind UDP+TCP (port 0 = any free one) and start; returns the advertised address."""
        runner = MachineRunner(None, self.config.memberlist)
        made: list[Serf] = []
        await runner.start(self._bind_address, self._machine_factory(runner, made, self._schedule_dispatch))
        address = self._adopt(runner, made[0])
        made[0].set_app_handler(self._app_handler)
        self._schedule_dispatch()
        log.info("serf agent %s advertising %s", self.name, address)
        return address

    @property
    def name(self) -> str:
        return self.core.name

    @property
    def stats(self) -> Counter[str]:
        return self._gather_stats()

    def members(self) -> list[Member]:
        return self.core.members()

    def local_member(self) -> Member:
        return self.core.local_member()

    async def join(self, addrs: list[str], ignore_old: bool = True) -> int:
        """Join through every address; returns how many answered.  JoinError if none did."""
        core = self.core
        return await join_pool(
            self.runner, addrs, 7946, lambda a, now: core.join([a], now, ignore_old=ignore_old), lambda: self._shut
        )

    async def leave(self, timeout: float | None = None) -> bool:
        """Graceful leave (intent, then memberlist leave, then propagate delay); True once done."""
        if self._shut:
            return False
        c = self.core
        c.leave(self.runner.now())
        self.runner.kick()
        return await self.runner.wait_until(lambda: c.left, self._leave_timeout(timeout))

    async def shutdown(self) -> None:
        """Stop at once (no leave): peers will see us fail."""
        if self._shut:
            return
        self._shut = True
        if self._core is not None:
            self._core.shutdown()
        self._dispatch()
        for s in list(self._streams):
            s.close()
        if self._runner is not None:
            await self._runner.close()
        current = asyncio.current_task()
        for t in list(self._tasks):
            if t is not current:
                t.cancel()

    # -- tags and events ---------------------------------------------------------------------

    async def set_tags(self, tags: dict[str, str]) -> None:
        self.core.set_tags(dict(tags), self.runner.now())
        self.runner.kick()

    async def user_event(
        self, name: str, payload: bytes = b"", coalesce: bool = True
    ) -> None:
        self.core.user_event(name, bytes(payload), coalesce, self.runner.now())
        self.runner.kick()

    # -- app messages (registry to registry: serf/app.py) --------------------------------------

    def send_app(self, name: str, payload: bytes) -> bool:
        """Send `payload` to member `name` as an app message (reliable, over TCP, encrypted with the
        pool's key when it has one); False when no alive member has that name (or we stopped).
        Send only to members whose tags say they speak it: a Go node drops it as unknown."""
        if self._shut:
            return False
        sent = self.core.send_app(name, bytes(payload), self.runner.now())
        if sent:
            self.runner.kick()
        return sent

    def set_app_handler(self, handler: AppHandler | None) -> None:
        """Have `handler(payload)` called, on the loop, for each app message received (None: drop
        them). It runs inside the message's handling: an exception is a counted, logged handler
        error; it may call `send_app`. May be set before `start`."""
        self._app_handler = handler
        if self._core is not None:
            self._core.set_app_handler(handler)

    def events(self, size: int | None = None) -> EventStream:
        """A new async iterator receiving every event from now on."""
        s = EventStream(self, size or self.config.event_queue_size)
        self._streams.add(s)
        return s

    def _schedule_dispatch(self) -> None:
        if self._dispatch_scheduled or self._core is None:
            return
        self._dispatch_scheduled = True
        try:
            asyncio.get_running_loop().call_soon(self._dispatch)
        except RuntimeError:
            self._dispatch_scheduled = False

    def _dispatch(self) -> None:
        self._dispatch_scheduled = False
        if self._core is None:
            return
        for ev in self._core.drain_events():
            for s in list(self._streams):
                s._push(ev)
            self._deliver(ev, self._run_if_awaitable)
        if self._runner is not None:
            self._runner.kick()  # query responses sent from handlers
        if self._name_lost(self._core):
            self._spawn(self.shutdown())

    def _run_if_awaitable(self, res: object) -> None:
        if inspect.isawaitable(res):
            self._spawn(res)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- queries -----------------------------------------------------------------------------

    def query(
        self,
        name: str,
        payload: bytes = b"",
        *,
        filter_nodes: list[str] | None = None,
        filter_tags: dict[str, str] | None = None,
        request_ack: bool = False,
        relay_factor: int = 0,
        timeout: float = 0.0,
    ) -> QueryStream:
        """Start a query now; iterate the result for responses (acks on `.acks`)."""
        params = QueryParams(
            list(filter_nodes or []),
            dict(filter_tags or {}),
            request_ack,
            relay_factor,
            timeout,
        )
        handle = self.core.query(name, bytes(payload), self.runner.now(), params)
        stream = QueryStream(handle)
        self.runner.kick()
        return stream

    # -- keyring -----------------------------------------------------------------------------

    async def _key_op(self, op: str, key: str | None) -> keys.KeyOpResult:
        payload = msgs.encode_key_request(
            keys.decode_key(key) if key is not None else b""
        )
        c = self.core
        expected = c.memberlist.num_members()
        handle = c.query(
            keys.KEY_QUERIES[op], payload, self.runner.now(), QueryParams()
        )
        stream = QueryStream(handle, stop_when_all=True)
        self.runner.kick()
        items = await stream.collect()
        return keys.aggregate_key_responses(items, expected)

    async def install_key(self, key: str) -> keys.KeyOpResult:
        return await self._key_op("install", key)

    async def use_key(self, key: str) -> keys.KeyOpResult:
        return await self._key_op("use", key)

    async def remove_key(self, key: str) -> keys.KeyOpResult:
        return await self._key_op("remove", key)

    async def list_keys(self) -> keys.KeyOpResult:
        return await self._key_op("list", None)

    # -- waiting helpers (tests, CLI) ----------------------------------------------------------

    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        return await self.runner.wait_until(predicate, timeout)

    def status_of(self, name: str) -> MemberStatus | None:
        m = self.core.member(name)
        return m.status if m is not None else None
