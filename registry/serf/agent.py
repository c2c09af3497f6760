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

from registry.memberlist.driver import local_advertise
from registry.memberlist.node import JoinError, join_pool
from registry.memberlist.runner import MachineRunner
from registry.memberlist.types import Address

from . import keyring as keys
from . import messages as msgs
from .config import SerfConfig
from .core import Serf
from .events import Event
from .member import Member, MemberStatus
from .query import QueryHandle, QueryItem, QueryParams

__all__ = ["EventStream", "JoinError", "QueryStream", "SerfAgent"]

log = logging.getLogger(__name__)

#: an event callback; if it returns an awaitable, that is run as a task
Handler = Callable[[Event], object]


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
            self._agent._agent_stats["events.dropped"] += 1
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


class SerfAgent:
    """A running Serf node; `await SerfAgent(config).start()` binds and starts gossiping."""

    def __init__(self, config: SerfConfig) -> None:
        self.config = config
        self._runner: MachineRunner | None = None
        self._core: Serf | None = None
        self.address: Address | None = None
        self._handlers: list[Handler] = []
        self._streams: set[EventStream] = set()
        self._dispatch_scheduled = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._agent_stats: Counter[str] = Counter()
        self._shut = False

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> Address:
        """Bind UDP+TCP (port 0 = any free one) and start; returns the advertised address."""
        ml = self.config.memberlist
        runner = MachineRunner(None, ml)
        holder: list[Serf] = []

        def factory(bound: Address) -> Serf:
            adv = local_advertise(ml, bound)
            cfg = self.config.replace(memberlist=ml.replace(bind_port=bound.port))
            core = Serf(cfg, adv, now=runner.now())
            holder.append(core)
            return core

        await runner.start(Address(ml.bind_addr, ml.bind_port), factory)
        self._runner = runner
        self._core = holder[0]
        self._core.wakeup = self._schedule_dispatch
        self.address = self._core.memberlist.advertise
        runner.config = self._core.memberlist.config
        self._schedule_dispatch()
        log.info("serf agent %s advertising %s", self.name, self.address)
        return self.address

    @property
    def core(self) -> Serf:
        if self._core is None:
            raise RuntimeError("the agent is not started")
        return self._core

    @property
    def runner(self) -> MachineRunner:
        if self._runner is None:
            raise RuntimeError("the agent is not started")
        return self._runner

    @property
    def name(self) -> str:
        return self.core.name

    @property
    def is_shutdown(self) -> bool:
        return self._shut

    @property
    def stats(self) -> Counter[str]:
        total: Counter[str] = Counter(self.core.stats)
        total.update(self.core.memberlist.stats)
        total.update(self.runner.stats)
        total.update(self._agent_stats)
        return total

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
        if timeout is None:
            timeout = (
                2 * c.config.broadcast_timeout + c.config.leave_propagate_delay + 1.0
            )
        c.leave(self.runner.now())
        self.runner.kick()
        return await self.runner.wait_until(lambda: c.left, timeout)

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

    def add_handler(self, cb: Handler) -> Callable[[], None]:
        """Call `cb(event)` for every event (a coroutine result is run as a task); returns a remover."""
        self._handlers.append(cb)

        def remove() -> None:
            if cb in self._handlers:
                self._handlers.remove(cb)

        return remove

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
            for cb in list(self._handlers):
                try:
                    res = cb(ev)
                    if inspect.isawaitable(res):
                        self._spawn(res)
                except Exception:
                    self._agent_stats["handler.errors"] += 1
                    log.exception("serf event handler failed")
        if self._runner is not None:
            self._runner.kick()  # query responses sent from handlers
        if self._core.conflict_lost and not self._shut:
            # another node holds our name and the cluster sided with it: stop, as Go's Serf does
            log.error(
                "serf: name %r is taken by another node; shutting down", self._core.name
            )
            self._spawn(self.shutdown())

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
