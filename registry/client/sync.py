"""Blocking client: `RpcClient("h:p").match(group, key)`.

Several registry addresses may be given; a call that gets UNAVAILABLE or
DEADLINE_EXCEEDED is retried on the next address, and the address that answered
is tried first next time. `timeout` (per client, or per call) bounds each attempt,
so a call that fails over to k addresses can take up to k * timeout.

With `cache=True`, Match/MatchBatch are answered from a ring kept current by a Watch
stream in a daemon thread (one per group, started on first use; the first call waits
up to `timeout` for the snapshot). If every registry is unreachable the cache keeps
answering from the last state it saw while the thread keeps reconnecting; a new
connection starts with a full snapshot, so nothing missed in between is lost. Matches
never wait for the watch thread: while it applies a snapshot (seconds for thousands of
services) they answer from the previous ring (see registry.client.cache).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, overload

import grpc

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
from registry.client.errors import NotFound, RegistryError
from registry.client.types import Datacenter, Service
from registry.v1 import registry_pb2 as pb
from registry.v1 import registry_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from typing import Self  # 3.11+; annotations only (the package supports 3.10)

    from registry.client.cache import GroupView

__all__ = ["RpcClient"]

_R = TypeVar("_R")


class RpcClient(ClientCore[grpc.Channel]):
    """Blocking registry client (thread-safe). Use as a context manager or call close()."""

    def _setup(self) -> None:
        self._lock = threading.Lock()
        self._watches: dict[str | tuple[str, str], _WatchThread] = {}  # by view_key

    # -- plumbing ------------------------------------------------------------------------

    def _stub(self, i: int) -> pb_grpc.RegistryStub:
        stub = self._stubs[i]
        if stub is None:
            with self._lock:
                if self._closed.is_set():
                    raise RegistryError("client is closed")
                stub = self._stubs[i]
                if stub is None:
                    stub = self._dial(i, grpc.secure_channel, grpc.insecure_channel)
        return stub

    def _call(self, rpc: Rpc[_R], timeout: float | None) -> _R:
        attempts = self._attempts(rpc, timeout)
        for i in attempts:
            with attempts:
                return rpc.decode(getattr(self._stub(i), rpc.method)(rpc.request, timeout=attempts.timeout))
        raise attempts.exhausted()

    # -- API -----------------------------------------------------------------------------

    @overload
    def match(self, group: str, key: str) -> Service: ...
    @overload
    def match(self, group: str, key: str, n: int, *, timeout: float | None = None, datacenter: str = "",
              failover: bool = False) -> list[Service]: ...
    @overload
    def match(self, group: str, key: str, *, timeout: float | None = None, datacenter: str = "",
              failover: bool = False) -> Service: ...

    def match(self, group: str, key: str, n: int | None = None, *, timeout: float | None = None,
              datacenter: str = "", failover: bool = False) -> Service | list[Service]:
        """The service owning `key` in `group`; with `n`, the n distinct owners in ring order.

        `datacenter`: answer for that datacenter (from the registry's copy of it; "" the registry's
        own). `failover=True`: when that datacenter routes no service of the group, the registry
        answers from the nearest one that does. Either way each Service's `datacenter` says which
        answered and `stale_seconds` how old the registry's copy of it is. With `cache=True` the
        answer comes from a cached ring of that datacenter's group; a failover asks the registry
        when the cached ring has no service to give."""
        count = 1 if n is None else n
        check_match(group, key, count)
        if datacenter or failover:
            check_failover(group, datacenter, failover)
        if self.cache:
            try:
                found = self._view(group, timeout, datacenter).match(key, count)
            except NotFound:
                if not failover:
                    raise
                found = self._call(match_rpc(group, key, count, datacenter, failover), timeout)
        else:
            found = self._call(match_rpc(group, key, count, datacenter, failover), timeout)
        return found[0] if n is None else found

    def match_n(self, group: str, key: str, n: int, *, timeout: float | None = None, datacenter: str = "",
                failover: bool = False) -> list[Service]:
        return self.match(group, key, n, timeout=timeout, datacenter=datacenter, failover=failover)

    def match_batch(self, group: str, keys: Sequence[str], *, timeout: float | None = None,
                    datacenter: str = "") -> list[Service]:
        """One service per key, in the order of `keys` (for `datacenter`, as `match`)."""
        check_batch(group, keys)
        if datacenter:
            check_datacenter("MatchBatch", group, datacenter)
        if self.cache:
            return self._view(group, timeout, datacenter).match_batch(keys)
        return self._call(match_batch_rpc(group, keys, datacenter), timeout)

    def members(self, group: str, all: bool = False, *, timeout: float | None = None,
                datacenter: str = "") -> list[Service]:
        """The live members of `group`, whatever their `health` (sorted by id; ring insert order for
        "chash"): a critical one is listed but is on no ring, so Match never returns it.

        With `all=True`, every member the registry's gossip pool knows, each with its `status`
        ("alive", "leaving", "left", "failed"; failed and left ones until the pool reaps them),
        sorted by (group, id); `group=""` then means every group. Always asks a registry, also
        with `cache=True` (the cache holds rings, not the member table). For another `datacenter`,
        its live services as the registry's copy holds them (with `all=True`, all "alive")."""
        return self._call(members_rpc(group, all, datacenter), timeout)

    def groups(self, *, timeout: float | None = None, datacenter: str = "") -> list[str]:
        return self._call(groups_rpc(datacenter), timeout)

    def datacenters(self, *, timeout: float | None = None) -> list[Datacenter]:
        """The datacenters the registry knows over its WAN pool, its own first ([] without one)."""
        return self._call(datacenters_rpc(), timeout)

    # -- cache ---------------------------------------------------------------------------

    def _view(self, group: str, timeout: float | None, datacenter: str = "") -> GroupView:
        key = view_key(group, datacenter)
        view = self._views.get(key)
        if view is None:
            with self._lock:
                if self._closed.is_set():
                    raise RegistryError("client is closed")
                view = self._views.get(key)
                if view is None:
                    # lazy: only caching clients need the ring code
                    from registry.client.cache import GroupView

                    view = self._views[key] = GroupView(group, datacenter)
                    w = self._watches[key] = _WatchThread(self, view)
                    w.start()
        if not view.ready.is_set():
            t = self._timeout(timeout)
            if not view.ready.wait(t):
                raise self._no_snapshot(view, t)
        return view

    # -- lifetime ------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            self._closed.set()
            watches = list(self._watches.values())
        for w in watches:
            w.stop()
        for ch in self._channels:
            if ch is not None:
                ch.close()
        for w in watches:
            w.join(5.0)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class _WatchThread(threading.Thread):
    """Keeps one GroupView current; reconnects (with failover and backoff) until stopped."""

    def __init__(self, client: RpcClient, view: GroupView) -> None:
        super().__init__(name=f"registry-watch-{view.group}", daemon=True)
        self._client = client
        self._view = view
        self._call: Any = None

    def stop(self) -> None:
        call = self._call
        if call is not None:
            call.cancel()

    def run(self) -> None:
        c = self._client
        retry = WatchRetry(c)
        while not c._closed.is_set():
            why: BaseException | None = None
            try:
                call = c._stub(retry.index).Watch(pb.WatchRequest(group=self._view.group,
                                                                  datacenter=self._view.datacenter))
                self._call = call
                if c._closed.is_set():
                    call.cancel()
                    return
                for event in call:
                    self._view.apply(event)
                    retry.applied()
            except RegistryError:  # closed while reconnecting
                return
            except Exception as exc:  # noqa: BLE001 -- an RPC error, the channel closed under us, or a bad event
                if c._closed.is_set():
                    return
                why = exc
            if c._closed.wait(retry.ended(self._view, why)):
                return
