"""asyncio client: `await AsyncRpcClient("h:p").match(group, key)`; same behaviour as RpcClient.

With `cache=True`, one task per group keeps a ring current from a Watch stream. Events
are applied in a worker thread (one per client): building the ring of a snapshot of
thousands of services takes seconds, which on the event loop would stall every
coroutine; meanwhile cached matches answer from the previous ring.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import TYPE_CHECKING, TypeVar, overload

import grpc.aio

from registry.client.common import check_batch, check_datacenter, check_match
from registry.client.core import (
    ClientCore,
    Rpc,
    WatchRetry,
    check_failover,
    datacenters_rpc,
    groups_rpc,
    match_batch_rpc,
    match_rpc,
    members_rpc,
    view_key,
)
from registry.client.errors import NotFound, RegistryError, Unavailable, from_rpc_error
from registry.client.types import Datacenter, Service
from registry.v1 import registry_pb2 as pb
from registry.v1 import registry_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from typing import Self  # 3.11+; annotations only (the package supports 3.10)

    from registry.client.cache import GroupView

__all__ = ["AsyncRpcClient"]

_R = TypeVar("_R")
_WATCH = f"/{pb.DESCRIPTOR.services_by_name['Registry'].full_name}/Watch"


class AsyncRpcClient(ClientCore[grpc.aio.Channel]):
    """asyncio registry client; use `async with` or `await close()`. Bound to the loop that first uses it."""

    def _setup(self) -> None:
        self._tasks: dict[str | tuple[str, str], asyncio.Task[None]] = {}  # by view_key
        self._ready: dict[str | tuple[str, str], asyncio.Event] = {}
        self._applier: ThreadPoolExecutor | None = None  # applies Watch events off the loop

    def _stub(self, i: int) -> pb_grpc.RegistryStub:
        stub = self._stubs[i]
        if stub is None:
            if self._closed.is_set():
                raise RegistryError("client is closed")
            stub = self._dial(i, grpc.aio.secure_channel, grpc.aio.insecure_channel)
        return stub

    async def _call(self, rpc: Rpc[_R], timeout: float | None) -> _R:
        attempts = self._attempts(rpc, timeout)
        for i in attempts:
            with attempts:
                return rpc.decode(await getattr(self._stub(i), rpc.method)(rpc.request, timeout=attempts.timeout))
        raise attempts.exhausted()

    @overload
    async def match(self, group: str, key: str) -> Service: ...
    @overload
    async def match(self, group: str, key: str, n: int, *, timeout: float | None = None, datacenter: str = "",
                    failover: bool = False) -> list[Service]: ...
    @overload
    async def match(self, group: str, key: str, *, timeout: float | None = None, datacenter: str = "",
                    failover: bool = False) -> Service: ...

    async def match(self, group: str, key: str, n: int | None = None, *, timeout: float | None = None,
                    datacenter: str = "", failover: bool = False) -> Service | list[Service]:
        """The service owning `key` in `group`; with `n`, the n distinct owners in ring order.
        `datacenter` and `failover` as `RpcClient.match`."""
        count = 1 if n is None else n
        check_match(group, key, count)
        if datacenter or failover:
            check_failover(group, datacenter, failover)
        if self.cache:
            try:
                found = (await self._view(group, timeout, datacenter)).match(key, count)
            except NotFound:
                if not failover:
                    raise
                found = await self._call(match_rpc(group, key, count, datacenter, failover), timeout)
        else:
            found = await self._call(match_rpc(group, key, count, datacenter, failover), timeout)
        return found[0] if n is None else found

    async def match_n(self, group: str, key: str, n: int, *, timeout: float | None = None, datacenter: str = "",
                      failover: bool = False) -> list[Service]:
        return await self.match(group, key, n, timeout=timeout, datacenter=datacenter, failover=failover)

    async def match_batch(self, group: str, keys: Sequence[str], *, timeout: float | None = None,
                          datacenter: str = "") -> list[Service]:
        check_batch(group, keys)
        if datacenter:
            check_datacenter("MatchBatch", group, datacenter)
        if self.cache:
            return (await self._view(group, timeout, datacenter)).match_batch(keys)
        return await self._call(match_batch_rpc(group, keys, datacenter), timeout)

    async def members(self, group: str, all: bool = False, *, timeout: float | None = None,
                      datacenter: str = "") -> list[Service]:
        """As `RpcClient.members`: live members with their health, or with `all=True` every member
        with its status."""
        return await self._call(members_rpc(group, all, datacenter), timeout)

    async def groups(self, *, timeout: float | None = None, datacenter: str = "") -> list[str]:
        return await self._call(groups_rpc(datacenter), timeout)

    async def datacenters(self, *, timeout: float | None = None) -> list[Datacenter]:
        """As `RpcClient.datacenters`."""
        return await self._call(datacenters_rpc(), timeout)

    async def watch_events(self, group: str = "", *, timeout: float | None = None,
                           export: bool = False) -> AsyncIterator[bytes]:
        """The raw Watch stream of `group` ("": every group) from the address calls use first: each
        event as the serialized `registry.v1.WatchEvent` the registry sent, for a consumer that checks
        them itself (`registry.federation.Mirror`). No failover and no retry: the stream ends when the
        server ends it, and any failure is raised as a RegistryError (Unavailable when the registry is
        unreachable or stops answering keepalive PINGs). `timeout` bounds the wait for the first event.
        `export`: only the groups the registry exports to other datacenters (-wan-export; a follower's)."""
        if self._closed.is_set():
            raise RegistryError("client is closed")
        t = self._timeout(timeout)
        self._stub(self._current)  # dials the channel
        channel = self._channels[self._current]
        assert channel is not None
        call = channel.unary_stream(_WATCH, request_serializer=pb.WatchRequest.SerializeToString,
                                    response_deserializer=None)(pb.WatchRequest(group=group, export=export))
        first = True
        try:
            while True:
                try:
                    data = await (asyncio.wait_for(call.read(), t) if first else call.read())
                except asyncio.TimeoutError:  # not the builtin TimeoutError before Python 3.11
                    raise Unavailable(f"Watch (group {group!r}): {self.addresses[self._current]}: "
                                      f"no event within {t}s", group=group) from None
                except grpc.RpcError as err:
                    raise from_rpc_error("Watch", group, self.addresses[self._current], err) from None
                if data is grpc.aio.EOF:
                    return
                first = False
                yield data
        finally:
            call.cancel()

    async def _view(self, group: str, timeout: float | None, datacenter: str = "") -> GroupView:
        key = view_key(group, datacenter)
        view = self._views.get(key)
        if view is None:
            if self._closed.is_set():
                raise RegistryError("client is closed")
            # lazy: only caching clients need the ring code
            from registry.client.cache import GroupView

            view = self._views[key] = GroupView(group, datacenter)
            ready = self._ready[key] = asyncio.Event()
            self._tasks[key] = asyncio.create_task(self._watch(view, ready), name=f"registry-watch-{group}")
        if not view.ready.is_set():
            t = self._timeout(timeout)
            try:
                await asyncio.wait_for(self._ready[key].wait(), t)
            except asyncio.TimeoutError:  # not the builtin TimeoutError before Python 3.11
                raise self._no_snapshot(view, t) from None
        return view

    async def _watch(self, view: GroupView, ready: asyncio.Event) -> None:
        retry = WatchRetry(self)
        loop = asyncio.get_running_loop()
        if self._applier is None:
            self._applier = ThreadPoolExecutor(1, thread_name_prefix="registry-watch-apply")
        applier = self._applier
        while not self._closed.is_set():
            why: BaseException | None = None
            try:
                request = pb.WatchRequest(group=view.group, datacenter=view.datacenter)
                async for event in self._stub(retry.index).Watch(request):
                    # In order (one event at a time, one thread): the view has a single writer.
                    await loop.run_in_executor(applier, view.apply, event)
                    ready.set()
                    retry.applied()
            except RegistryError:
                return
            except Exception as exc:  # noqa: BLE001 -- an RPC error, or a bad event: must not end the watch silently
                why = exc
            await asyncio.sleep(retry.ended(view, why))

    async def close(self) -> None:
        self._closed.set()
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
