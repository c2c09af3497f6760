"""asyncio client: `await AsyncRpcClient("h:p").match(group, key)`; same behaviour as RpcClient.

With `cache=True`, one task per group keeps a ring current from a Watch stream. Events
are applied in a worker thread (one per client): building the ring of a snapshot of
thousands of services takes seconds, which on the event loop would stall every
coroutine; meanwhile cached matches answer from the previous ring.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import TYPE_CHECKING, TypeVar, overload

import grpc
import grpc.aio

from registry.client.common import (
    DEFAULT_TIMEOUT,
    FAILOVER_CODES,
    channel_options,
    check_batch,
    check_match,
    check_timeout,
    describe,
    members_request,
    parse_addresses,
    tls_from,
    to_service,
    unavailable,
)
from registry.client.errors import RegistryError, from_rpc_error
from registry.client.types import Service, TlsConfig
from registry.v1 import registry_pb2 as pb
from registry.v1 import registry_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from typing import Self  # 3.11+; annotations only (the package supports 3.10)

    from registry.client.cache import GroupView

__all__ = ["AsyncRpcClient"]

_R = TypeVar("_R")
_WATCH_BACKOFF_MAX = 2.0


class AsyncRpcClient:
    """asyncio registry client; use `async with` or `await close()`. Bound to the loop that first uses it."""

    def __init__(
        self,
        addrs: str | Sequence[str],
        *,
        timeout: float = DEFAULT_TIMEOUT,
        tls: TlsConfig | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        tls_ca: str | None = None,
        cache: bool = False,
    ) -> None:
        self.addresses = parse_addresses(addrs)
        self.timeout = check_timeout(timeout)
        self.cache = cache
        self._tls = tls_from(tls, tls_cert, tls_key, tls_ca)
        self._channels: list[grpc.aio.Channel | None] = [None] * len(self.addresses)
        self._stubs: list[pb_grpc.RegistryStub | None] = [None] * len(self.addresses)
        self._current = 0
        self._closed = False
        self._views: dict[str, GroupView] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._ready: dict[str, asyncio.Event] = {}
        self._applier: ThreadPoolExecutor | None = None  # applies Watch events off the loop

    def _stub(self, i: int) -> pb_grpc.RegistryStub:
        stub = self._stubs[i]
        if stub is None:
            if self._closed:
                raise RegistryError("client is closed")
            addr = self.addresses[i]
            opts = channel_options(self._tls)
            if self._tls is not None:
                ch = grpc.aio.secure_channel(addr, self._tls.credentials(), options=opts)
            else:
                ch = grpc.aio.insecure_channel(addr, options=opts)
            self._channels[i] = ch
            stub = self._stubs[i] = pb_grpc.RegistryStub(ch)  # type: ignore[no-untyped-call]
        return stub

    async def _call(self, method: str, group: str, fn: Callable[[pb_grpc.RegistryStub], Awaitable[_R]]) -> _R:
        if self._closed:
            raise RegistryError(f"{method}: client is closed", group=group)
        tried: list[tuple[str, str]] = []
        start = self._current
        n = len(self.addresses)
        for step in range(n):
            i = (start + step) % n
            try:
                result = await fn(self._stub(i))
            except grpc.aio.AioRpcError as err:
                if err.code() in FAILOVER_CODES:
                    tried.append((self.addresses[i], describe(err, self._tls)))
                    continue
                raise from_rpc_error(method, group, self.addresses[i], err) from None
            if i != start:
                self._current = i
            return result
        raise unavailable(method, group, tried)

    @overload
    async def match(self, group: str, key: str) -> Service: ...
    @overload
    async def match(self, group: str, key: str, n: int, *, timeout: float | None = None) -> list[Service]: ...
    @overload
    async def match(self, group: str, key: str, *, timeout: float | None = None) -> Service: ...

    async def match(self, group: str, key: str, n: int | None = None, *,
                    timeout: float | None = None) -> Service | list[Service]:
        """The service owning `key` in `group`; with `n`, the n distinct owners in ring order."""
        count = 1 if n is None else n
        check_match(group, key, count)
        if self.cache:
            found = (await self._view(group, timeout)).match(key, count)
        else:
            t = self.timeout if timeout is None else check_timeout(timeout)
            req = pb.MatchRequest(group=group, key=key, n=count)
            resp = await self._call("Match", group, lambda s: s.Match(req, timeout=t))
            found = [to_service(s) for s in resp.services]
        return found[0] if n is None else found

    async def match_n(self, group: str, key: str, n: int, *, timeout: float | None = None) -> list[Service]:
        return await self.match(group, key, n, timeout=timeout)

    async def match_batch(self, group: str, keys: Sequence[str], *, timeout: float | None = None) -> list[Service]:
        check_batch(group, keys)
        if self.cache:
            return (await self._view(group, timeout)).match_batch(keys)
        t = self.timeout if timeout is None else check_timeout(timeout)
        req = pb.MatchBatchRequest(group=group, keys=list(keys))
        resp = await self._call("MatchBatch", group, lambda s: s.MatchBatch(req, timeout=t))
        cache: dict[str, Service] = {}
        out = []
        for s in resp.services:
            svc = cache.get(s.id)
            if svc is None:
                svc = cache[s.id] = to_service(s)
            out.append(svc)
        return out

    async def members(self, group: str, all: bool = False, *,
                      timeout: float | None = None) -> list[Service]:
        """As `RpcClient.members`: live ring members, or with `all=True` every member with its status."""
        req = members_request(group, all)
        t = self.timeout if timeout is None else check_timeout(timeout)
        resp = await self._call("Members", group, lambda s: s.Members(req, timeout=t))
        return [to_service(s) for s in resp.services]

    async def groups(self, *, timeout: float | None = None) -> list[str]:
        t = self.timeout if timeout is None else check_timeout(timeout)
        resp = await self._call("Groups", "", lambda s: s.Groups(pb.GroupsRequest(), timeout=t))
        return list(resp.groups)

    def cache_version(self, group: str) -> int:
        view = self._views.get(group)
        return -1 if view is None else view.version

    async def _view(self, group: str, timeout: float | None) -> GroupView:
        view = self._views.get(group)
        if view is None:
            if self._closed:
                raise RegistryError("client is closed")
            # lazy: only caching clients need the ring code
            from registry.client.cache import GroupView

            view = self._views[group] = GroupView(group)
            ready = self._ready[group] = asyncio.Event()
            self._tasks[group] = asyncio.create_task(self._watch(view, ready), name=f"registry-watch-{group}")
        if not view.ready.is_set():
            t = self.timeout if timeout is None else check_timeout(timeout)
            try:
                await asyncio.wait_for(self._ready[group].wait(), t)
            except asyncio.TimeoutError:  # not the builtin TimeoutError before Python 3.11
                raise unavailable("Watch", group, [(",".join(self.addresses), view.error or f"no snapshot within {t}s")]) from None
        return view

    async def _watch(self, view: GroupView, ready: asyncio.Event) -> None:
        backoff = 0.05
        i = self._current
        loop = asyncio.get_running_loop()
        if self._applier is None:
            self._applier = ThreadPoolExecutor(1, thread_name_prefix="registry-watch-apply")
        applier = self._applier
        while not self._closed:
            addr = self.addresses[i]
            try:
                async for event in self._stub(i).Watch(pb.WatchRequest(group=view.group)):
                    # In order (one event at a time, one thread): the view has a single writer.
                    await loop.run_in_executor(applier, view.apply, event)
                    ready.set()
                    backoff = 0.05
                view.error = f"{addr}: stream ended"
            except grpc.aio.AioRpcError as err:
                view.error = f"{addr}: {describe(err, self._tls)}"
            except RegistryError:
                return
            except Exception as exc:  # noqa: BLE001 -- a bad event must not end the watch silently
                view.error = f"{addr}: {type(exc).__name__}: {exc}"
            i = (i + 1) % len(self.addresses)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _WATCH_BACKOFF_MAX)

    async def close(self) -> None:
        self._closed = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for ch in self._channels:
            if ch is not None:
                await ch.close()
        if self._applier is not None:
            self._applier.shutdown(wait=False, cancel_futures=True)  # a build under way just finishes

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()
