"""The etcd adapter's connection to one member of an etcd cluster: channel, auth token, leader check.

Why a module of its own: what the adapter does with etcd (import, export, election: `registry.adapters.etcd`)
is independent of how it reaches a member, and the reaching has its own failure modes, kept here:

- Several endpoints (``endpoints=h1:2379,h2:2379``, etcdctl's ``--endpoints``): `Endpoints` hands out the
  members in turn, starting with the one that worked last; the adapter moves to the next one the moment a
  call to its member fails, and waits ``retry`` seconds only once every member has failed in a row.
- Partitioned members: every call carries the metadata ``hasleader=true``, what clientv3's
  ``WithRequireLeader`` sends.  With it a member without a leader refuses unary calls (``no leader``) and
  CANCELS open watch and keepalive streams after a few election timeouts, instead of keeping a watch open
  that will never see another event (a partitioned member serves its stale store forever).  The adapter then
  moves to another member and resyncs.
- Auth tokens: etcd's simple tokens expire (``--auth-token-ttl``, 300 s after their last use) and vanish
  when the member restarts.  `Conn.unary` and `Conn.watch` re-authenticate once on ``invalid auth token``
  (gRPC UNAUTHENTICATED; a new watch is canceled with that reason) and repeat the call: the
  open streams, the imports and the export lease stay as they are (no resync, no warning: one INFO line).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import grpc
import grpc.aio
from aetcd import rpc  # type: ignore[import-untyped]

__all__ = ["Conn", "Endpoints", "LostError"]

#: HTTP/2 pings while a call is open: a watch on a quiet prefix over a connection that died without a
#: reset (a cut network) would otherwise wait forever; etcd refuses pings more often than every 5 s.
_OPTIONS = [("grpc.keepalive_time_ms", 10_000), ("grpc.keepalive_timeout_ms", 5_000)]
#: clientv3's WithRequireLeader (etcd's rpctypes.MetadataRequireLeaderKey).
_REQUIRE_LEADER = ("hasleader", "true")
R = TypeVar("R")


class LostError(Exception):
    """The connection, its member's leader or the lease is gone: move on (one log line, then a resync)."""


def _auth_expired(e: grpc.aio.AioRpcError) -> bool:
    """etcd's ErrGRPCInvalidAuthToken is UNAUTHENTICATED; "revision of auth store is old" (a token issued
    before a role change) is cured by a new token too.  A wrong password is INVALID_ARGUMENT: not retried."""
    return e.code() == grpc.StatusCode.UNAUTHENTICATED or "auth store is old" in (e.details() or "")


class Conn:
    """A channel to one member and the metadata every call sends (the auth token, ``hasleader``)."""

    def __init__(self, endpoints: Endpoints, endpoint: str, channel: grpc.aio.Channel, log: logging.Logger) -> None:
        self.endpoints, self.endpoint, self.channel, self.log = endpoints, endpoint, channel, log
        self.metadata: tuple[tuple[str, str], ...] = (_REQUIRE_LEADER,)
        self.reauths = 0

    async def authenticate(self) -> None:
        """A fresh token for ``user``/``password`` (nothing without them)."""
        e = self.endpoints
        if e.user is None:
            return
        resp = await rpc.AuthStub(self.channel).Authenticate(
            rpc.AuthenticateRequest(name=e.user, password=e.password), metadata=(_REQUIRE_LEADER,), timeout=e.timeout
        )
        self.metadata = (_REQUIRE_LEADER, ("token", resp.token))

    async def _reauth(self, why: str) -> None:
        self.reauths += 1
        self.log.info("etcd %s: %s, authenticating again", self.endpoint, why)
        await self.authenticate()

    async def unary(self, method: Callable[..., Awaitable[R]], request: Any) -> R:
        """``method(request)`` with our metadata and timeout; on an expired token, a new one and once again."""
        try:
            return await method(request, metadata=self.metadata, timeout=self.endpoints.timeout)
        except grpc.aio.AioRpcError as e:
            if self.endpoints.user is None or not _auth_expired(e):
                raise
            await self._reauth(e.details() or "auth token expired")
        return await method(request, metadata=self.metadata, timeout=self.endpoints.timeout)

    async def watch(self, create: Any) -> Any:
        """A Watch stream with ``create`` registered, once etcd confirmed the watch.  etcd checks the token
        only when a watch is created, and refuses an expired one by cancelling the new watch (reason
        ``... invalid auth token``, etcd 3.4): then a new token and once again."""
        for attempt in (0, 1):
            call = rpc.WatchStub(self.channel).Watch(metadata=self.metadata)
            await call.write(rpc.WatchRequest(create_request=create))
            first = await call.read()
            if first is grpc.aio.EOF:
                raise LostError("watch stream ended")
            if not first.canceled:
                return _Stream(call)
            call.cancel()
            reason = first.cancel_reason or "canceled"
            if attempt or self.endpoints.user is None or "invalid auth token" not in reason:
                raise LostError(f"watch canceled: {reason}")
            await self._reauth(f"watch refused ({reason})")
        raise AssertionError("unreachable")

    def keepalive(self) -> Any:
        return rpc.LeaseStub(self.channel).LeaseKeepAlive(metadata=self.metadata)

    async def close(self) -> None:
        await self.channel.close(grace=None)


class _Stream:
    """A call's responses as an async iterator, by ``read()`` (grpc.aio refuses ``async for`` on a call
    already read from, and `Conn.watch` reads the first response itself)."""

    def __init__(self, call: Any) -> None:
        self.call = call

    def __aiter__(self) -> _Stream:
        return self

    async def __anext__(self) -> Any:
        r = await self.call.read()
        if r is grpc.aio.EOF:
            raise StopAsyncIteration
        return r

    def cancel(self) -> None:
        self.call.cancel()


class Endpoints:
    """The members to try, in turn, and how to open a channel to one (TLS, auth)."""

    def __init__(
        self,
        endpoints: list[str],
        *,
        user: str | None,
        password: str | None,
        tls: tuple[Path | None, Path | None, Path | None],
        timeout: float,
    ) -> None:
        self.all, self.user, self.password, self.tls, self.timeout = endpoints, user, password, tls, timeout
        self._next = 0
        #: Connections that failed since one last worked: at len(all) every member has failed in a row.
        self.failed = 0

    @property
    def current(self) -> str:
        """The member `connect` opens next."""
        return self.all[self._next % len(self.all)]

    def _channel(self, endpoint: str) -> grpc.aio.Channel:
        if any(p is not None for p in self.tls):
            ca, cert, key = (None if p is None else p.read_bytes() for p in self.tls)
            creds = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
            return grpc.aio.secure_channel(endpoint, creds, options=_OPTIONS)
        return grpc.aio.insecure_channel(endpoint, options=_OPTIONS)

    async def connect(self, log: logging.Logger) -> Conn:
        """A connection to the next member (authenticated when there is a user); the channel is closed if
        authentication fails."""
        endpoint = self.current
        conn = Conn(self, endpoint, self._channel(endpoint), log)
        try:
            await conn.authenticate()
        except BaseException:
            await conn.close()
            raise
        return conn

    def worked(self) -> None:
        """The current member answered: it is the one to try first next time."""
        self.failed = 0

    def move_on(self) -> bool:
        """The current member failed: the next one is tried; True when all have failed in a row (wait)."""
        self._next += 1
        self.failed += 1
        return self.failed % len(self.all) == 0
