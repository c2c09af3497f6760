"""What the blocking and the asyncio client share beyond argument checks: their state, each call
as data, failover over the registry addresses, and the Watch stream's retry policy.

`RpcClient` (sync.py) and `AsyncRpcClient` (aio.py) differ only in how they wait: a call blocks or
is awaited, the cache is kept by a thread or a task.  Everything a call decides (the request, how
the answer becomes Services, which failures move on to the next address, which error a failure
becomes, which address is tried first next time, how a watch backs off) is decided here once, so
the two cannot drift apart.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import grpc

from registry.client.common import (
    DEFAULT_TIMEOUT,
    FAILOVER_CODES,
    channel_options,
    check_datacenter,
    check_timeout,
    describe,
    members_request,
    parse_addresses,
    tls_from,
    to_service,
    unavailable,
)
from registry.client.errors import InvalidArgument, RegistryError, from_rpc_error
from registry.client.types import Datacenter, Service, TlsConfig
from registry.v1 import registry_pb2 as pb
from registry.v1 import registry_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from registry.client.cache import GroupView

__all__ = ["Attempts", "ClientCore", "Rpc", "WatchRetry", "check_failover", "datacenters_rpc", "groups_rpc",
           "match_batch_rpc", "match_rpc", "members_rpc", "view_key"]

_R = TypeVar("_R")
_Ch = TypeVar("_Ch")

_WATCH_BACKOFF_MIN = 0.05
_WATCH_BACKOFF_MAX = 2.0


@dataclass(frozen=True)
class Rpc(Generic[_R]):
    """One unary registry call as data: the method (also named in errors), the group it concerns
    (named in errors), the request, and how the answer becomes what the caller gets."""

    method: str
    group: str
    request: Any
    decode: Callable[[Any], _R]


def _services(resp: Any) -> list[Service]:
    """The answer's services, each stamped with the datacenter that answered and its staleness
    (both empty unless the request named a datacenter or asked for failover)."""
    dc, stale = resp.datacenter, resp.stale_seconds
    return [to_service(s, dc, stale) for s in resp.services]


def _batch_services(resp: Any) -> list[Service]:
    """One Service per key; a service owning many keys is one object (the answer repeats it)."""
    dc, stale = resp.datacenter, resp.stale_seconds
    seen: dict[str, Service] = {}
    out = []
    for s in resp.services:
        svc = seen.get(s.id)
        if svc is None:
            svc = seen[s.id] = to_service(s, dc, stale)
        out.append(svc)
    return out


def _groups(resp: Any) -> list[str]:
    return list(resp.groups)


def _datacenters(resp: Any) -> list[Datacenter]:
    return [Datacenter(d.name, d.local, d.stale_seconds, d.rtt_ms, d.registries) for d in resp.datacenters]


def match_rpc(group: str, key: str, n: int, datacenter: str = "", failover: bool = False) -> Rpc[list[Service]]:
    """Match, its arguments already checked by `check_match` (the cache path checks them too)."""
    return Rpc("Match", group, pb.MatchRequest(group=group, key=key, n=n, datacenter=datacenter, failover=failover),
               _services)


def match_batch_rpc(group: str, keys: Sequence[str], datacenter: str = "") -> Rpc[list[Service]]:
    """MatchBatch, its arguments already checked by `check_batch`."""
    return Rpc("MatchBatch", group, pb.MatchBatchRequest(group=group, keys=list(keys), datacenter=datacenter),
               _batch_services)


def members_rpc(group: str, all: bool, datacenter: str = "") -> Rpc[list[Service]]:
    return Rpc("Members", group, members_request(group, all, datacenter), _services)


def groups_rpc(datacenter: str = "") -> Rpc[list[str]]:
    check_datacenter("Groups", "", datacenter)
    return Rpc("Groups", "", pb.GroupsRequest(datacenter=datacenter), _groups)


def datacenters_rpc() -> Rpc[list[Datacenter]]:
    return Rpc("Groups", "", pb.GroupsRequest(), _datacenters)


def check_failover(group: str, datacenter: str, failover: bool) -> None:
    """Match's datacenter and failover arguments (a truthy string would otherwise pass as True)."""
    if type(failover) is not bool:
        raise InvalidArgument(f"Match (group {group!r}): failover={failover!r} must be True or False", group=group)
    check_datacenter("Match", group, datacenter)


def view_key(group: str, datacenter: str) -> str | tuple[str, str]:
    """A cached group's key among the client's views: the group for the registry's own datacenter
    (as before datacenters), (datacenter, group) for another one."""
    return (datacenter, group) if datacenter else group


class Attempts:
    """One call's walk over the registry addresses, starting with the one that answered last.

    Iterate for the index of the address to try, and make the attempt inside `with attempts:`.
    UNAVAILABLE and DEADLINE_EXCEEDED are noted and swallowed (the loop goes on to the next
    address); any other gRPC error becomes the client's exception at once; an answer from
    another address than the first makes it the first one for the next call.  After the loop,
    `raise attempts.exhausted()`."""

    def __init__(self, core: ClientCore[Any], rpc: Rpc[Any], timeout: float) -> None:
        self.timeout = timeout
        self._core = core
        self._rpc = rpc
        self._start = core._current
        self._index = self._start
        self._tried: list[tuple[str, str]] = []

    def __iter__(self) -> Iterator[int]:
        n = len(self._core.addresses)
        for step in range(n):
            self._index = (self._start + step) % n
            yield self._index

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> bool:
        i = self._index
        if exc is None:
            if i != self._start:
                self._core._current = i
            return False
        if not isinstance(exc, grpc.RpcError):
            return False
        addr = self._core.addresses[i]
        if exc.code() in FAILOVER_CODES:
            self._tried.append((addr, describe(exc, self._core._tls)))
            return True
        raise from_rpc_error(self._rpc.method, self._rpc.group, addr, exc) from None

    def exhausted(self) -> RegistryError:
        return unavailable(self._rpc.method, self._rpc.group, self._tried)


class ClientCore(Generic[_Ch]):
    """The state both clients keep (and their constructor): checked arguments, one channel and stub per address (opened
    on first use), the address to try first, and the cached groups.  `_Ch` is the channel type
    (grpc.Channel or grpc.aio.Channel)."""

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
        self._channels: list[_Ch | None] = [None] * len(self.addresses)
        self._stubs: list[pb_grpc.RegistryStub | None] = [None] * len(self.addresses)
        self._current = 0
        self._views: dict[str | tuple[str, str], GroupView] = {}  # by view_key
        self._closed = threading.Event()  # an Event for the thread of the sync client's watches
        self._setup()

    def _setup(self) -> None:
        """The client's own state for waiting: its lock, watch threads or tasks."""

    def _timeout(self, timeout: float | None) -> float:
        """A call's own timeout, or the client's."""
        return self.timeout if timeout is None else check_timeout(timeout)

    def _attempts(self, rpc: Rpc[Any], timeout: float | None) -> Attempts:
        t = self._timeout(timeout)
        if self._closed.is_set():
            raise RegistryError(f"{rpc.method}: client is closed", group=rpc.group)
        return Attempts(self, rpc, t)

    def _dial(self, i: int, secure: Callable[..., _Ch], insecure: Callable[..., _Ch]) -> pb_grpc.RegistryStub:
        """A stub on a new channel to address `i` (`secure`/`insecure`: grpc's or grpc.aio's)."""
        addr = self.addresses[i]
        opts = channel_options(self._tls)
        if self._tls is not None:
            ch = secure(addr, self._tls.credentials(), options=opts)
        else:
            ch = insecure(addr, options=opts)
        self._channels[i] = ch
        stub = self._stubs[i] = pb_grpc.RegistryStub(ch)  # type: ignore[no-untyped-call]
        return stub

    def _no_snapshot(self, view: GroupView, timeout: float) -> RegistryError:
        """A cached match before the first snapshot arrived within `timeout`."""
        return unavailable("Watch", view.group, [(",".join(self.addresses), view.error or
                                                  f"no snapshot within {timeout}s")])

    def cache_version(self, group: str, datacenter: str = "") -> int:
        """Server version of `group` last applied to the cache (-1: none yet); for another
        `datacenter`, the number of the Watch event last applied (its registry numbers them)."""
        view = self._views.get(view_key(group, datacenter))
        return -1 if view is None else view.version


class WatchRetry:
    """Which address a group's Watch stream uses, and how long it waits after a stream ends.

    Starts at the address calls use; after each ended stream, the next address, waiting
    0.05 s, doubling up to 2 s; an applied event resets the wait."""

    def __init__(self, core: ClientCore[Any]) -> None:
        self.index = core._current
        self._core = core
        self._backoff = _WATCH_BACKOFF_MIN

    def applied(self) -> None:
        self._backoff = _WATCH_BACKOFF_MIN

    def ended(self, view: GroupView, why: BaseException | None) -> float:
        """Note why the stream at the current address ended (None: the server ended it) for
        error messages, move to the next address, and return how long to wait first."""
        addr = self._core.addresses[self.index]
        if why is None:
            view.error = f"{addr}: stream ended"
        elif isinstance(why, grpc.RpcError):
            view.error = f"{addr}: {describe(why, self._core._tls)}"
        else:
            view.error = f"{addr}: {type(why).__name__}: {why}"
        self.index = (self.index + 1) % len(self._core.addresses)
        delay = self._backoff
        self._backoff = min(delay * 2, _WATCH_BACKOFF_MAX)
        return delay
