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
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, overload

import grpc

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

__all__ = ["RpcClient"]

_R = TypeVar("_R")
_WATCH_BACKOFF_MAX = 2.0


class RpcClient:
    """Blocking registry client (thread-safe). Use as a context manager or call close()."""

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
        self._lock = threading.Lock()
        self._channels: list[grpc.Channel | None] = [None] * len(self.addresses)
        self._stubs: list[pb_grpc.RegistryStub | None] = [None] * len(self.addresses)
        self._current = 0
        self._closed = threading.Event()
        self._views: dict[str, GroupView] = {}
        self._watches: dict[str, _WatchThread] = {}

    # -- plumbing ------------------------------------------------------------------------

    def _stub(self, i: int) -> pb_grpc.RegistryStub:
        stub = self._stubs[i]
        if stub is None:
            with self._lock:
                if self._closed.is_set():
                    raise RegistryError("client is closed")
                stub = self._stubs[i]
                if stub is None:
                    addr = self.addresses[i]
                    opts = channel_options(self._tls)
                    if self._tls is not None:
                        ch = grpc.secure_channel(addr, self._tls.credentials(), options=opts)
                    else:
                        ch = grpc.insecure_channel(addr, options=opts)
                    self._channels[i] = ch
                    stub = self._stubs[i] = pb_grpc.RegistryStub(ch)  # type: ignore[no-untyped-call]
        return stub

    def _call(self, method: str, group: str, fn: Callable[[pb_grpc.RegistryStub], _R]) -> _R:
        if self._closed.is_set():
            raise RegistryError(f"{method}: client is closed", group=group)
        tried: list[tuple[str, str]] = []
        start = self._current
        n = len(self.addresses)
        for step in range(n):
            i = (start + step) % n
            try:
                result = fn(self._stub(i))
            except grpc.RpcError as err:
                if err.code() in FAILOVER_CODES:
                    tried.append((self.addresses[i], describe(err, self._tls)))
                    continue
                raise from_rpc_error(method, group, self.addresses[i], err) from None
            if i != start:
                self._current = i
            return result
        raise unavailable(method, group, tried)

    # -- API -----------------------------------------------------------------------------

    @overload
    def match(self, group: str, key: str) -> Service: ...
    @overload
    def match(self, group: str, key: str, n: int, *, timeout: float | None = None) -> list[Service]: ...
    @overload
    def match(self, group: str, key: str, *, timeout: float | None = None) -> Service: ...

    def match(self, group: str, key: str, n: int | None = None, *,
              timeout: float | None = None) -> Service | list[Service]:
        """The service owning `key` in `group`; with `n`, the n distinct owners in ring order."""
        count = 1 if n is None else n
        check_match(group, key, count)
        if self.cache:
            found = self._view(group, timeout).match(key, count)
        else:
            t = self.timeout if timeout is None else check_timeout(timeout)
            req = pb.MatchRequest(group=group, key=key, n=count)
            resp = self._call("Match", group, lambda s: s.Match(req, timeout=t))
            found = [to_service(s) for s in resp.services]
        return found[0] if n is None else found

    def match_n(self, group: str, key: str, n: int, *, timeout: float | None = None) -> list[Service]:
        return self.match(group, key, n, timeout=timeout)

    def match_batch(self, group: str, keys: Sequence[str], *, timeout: float | None = None) -> list[Service]:
        """One service per key, in the order of `keys`."""
        check_batch(group, keys)
        if self.cache:
            return self._view(group, timeout).match_batch(keys)
        t = self.timeout if timeout is None else check_timeout(timeout)
        req = pb.MatchBatchRequest(group=group, keys=list(keys))
        resp = self._call("MatchBatch", group, lambda s: s.MatchBatch(req, timeout=t))
        cache: dict[str, Service] = {}
        out = []
        for s in resp.services:
            svc = cache.get(s.id)
            if svc is None:
                svc = cache[s.id] = to_service(s)
            out.append(svc)
        return out

    def members(self, group: str, all: bool = False, *,
                timeout: float | None = None) -> list[Service]:
        """The live members of `group`, as its ring holds them (sorted by id; ring order for "chash").

        With `all=True`, every member the registry's gossip pool knows, each with its `status`
        ("alive", "leaving", "left", "failed"; failed and left ones until the pool reaps them),
        sorted by (group, id); `group=""` then means every group. Always asks a registry, also
        with `cache=True` (the cache holds rings, not the member table)."""
        req = members_request(group, all)
        t = self.timeout if timeout is None else check_timeout(timeout)
        resp = self._call("Members", group, lambda s: s.Members(req, timeout=t))
        return [to_service(s) for s in resp.services]

    def groups(self, *, timeout: float | None = None) -> list[str]:
        t = self.timeout if timeout is None else check_timeout(timeout)
        resp = self._call("Groups", "", lambda s: s.Groups(pb.GroupsRequest(), timeout=t))
        return list(resp.groups)

    def cache_version(self, group: str) -> int:
        """Server version of `group` last applied to the cache (-1: none yet)."""
        view = self._views.get(group)
        return -1 if view is None else view.version

    # -- cache ---------------------------------------------------------------------------

    def _view(self, group: str, timeout: float | None) -> GroupView:
        view = self._views.get(group)
        if view is None:
            with self._lock:
                if self._closed.is_set():
                    raise RegistryError("client is closed")
                view = self._views.get(group)
                if view is None:
                    # lazy: only caching clients need the ring code
                    from registry.client.cache import GroupView

                    view = self._views[group] = GroupView(group)
                    w = self._watches[group] = _WatchThread(self, view)
                    w.start()
        if not view.ready.is_set():
            t = self.timeout if timeout is None else check_timeout(timeout)
            if not view.ready.wait(t):
                raise unavailable("Watch", group, [(",".join(self.addresses), view.error or f"no snapshot within {t}s")])
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
        backoff = 0.05
        i = c._current
        while not c._closed.is_set():
            addr = c.addresses[i]
            try:
                call = c._stub(i).Watch(pb.WatchRequest(group=self._view.group))
                self._call = call
                if c._closed.is_set():
                    call.cancel()
                    return
                for event in call:
                    self._view.apply(event)
                    backoff = 0.05
                self._view.error = f"{addr}: stream ended"
            except grpc.RpcError as err:
                if c._closed.is_set():
                    return
                self._view.error = f"{addr}: {describe(err, c._tls)}"
            except RegistryError:  # closed while reconnecting
                return
            except Exception as exc:  # noqa: BLE001 -- channel closed under us, or a bad event
                if c._closed.is_set():
                    return
                self._view.error = f"{addr}: {type(exc).__name__}: {exc}"
            i = (i + 1) % len(c.addresses)
            if c._closed.wait(backoff):
                return
            backoff = min(backoff * 2, _WATCH_BACKOFF_MAX)
