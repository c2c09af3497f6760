"""Accepting connections for the native gRPC front without letting idle ones crowd out real ones.

Why not `loop.create_server`: when accept() fails for want of file descriptors (EMFILE), asyncio
3.11 logs a traceback and schedules a retry *for each of up to `backlog` loop passes in the same
tick* (1,100 idle connections under a 1,024 descriptor limit: ~140 MB of log in 25 s and a full
core), and it gives no hook to decide, per source address, who may take the next descriptor.
Here accept() is ours: a failure is counted, idle connections are shed and the listener pauses
briefly; each accepted socket is admitted against a per-source and a per-process cap; and past a
cap the *oldest idle* connection (no open stream, so no call is lost: GOAWAY, then close) makes
room, so a flood of idle connections can never lock a legitimate client out.

`ConnectionTable` is the bookkeeping (counts by source, idle connections oldest first, one idle
timer for all of them); `Listener` owns the listening sockets.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from registry.addresses import listen_tcp
from registry.native_limits import Limits

__all__ = ["ConnectionTable", "Counters", "Listener", "Peer"]

log = logging.getLogger(__name__)

_OUT_OF_RESOURCES = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))
_SHED_WHEN_OUT = 16  # idle connections closed when accept() finds no descriptor left
_ACCEPTS_PER_WAKEUP = 64  # then other callbacks get a turn
_WARN_EVERY = 30.0  # seconds between two warnings about the same trouble


class Peer(Protocol):
    """What the table needs of a connection."""

    source: str

    def shed(self) -> None:
        """GOAWAY then close, at once (called only while it has no open stream; possibly before
        its transport exists: a TLS handshake in progress, or a socket accepted this loop pass)."""


class Counters(Protocol):
    idle_timeouts: int
    connections_shed: int
    connections_refused: int
    accept_errors: int


class ConnectionTable:
    """Open connections counted per source address, and their idle subset in idle-since order
    (dicts keep insertion order, so the oldest idle connection is always the first key)."""

    def __init__(self, limits: Limits, counters: Counters) -> None:
        self.cap = limits.connection_cap()
        self.per_source = limits.max_connections_per_source
        self.idle_timeout = limits.idle_timeout
        self.counters = counters
        self.total = 0
        self._members: set[Peer] = set()
        self._per_source: dict[str, int] = {}
        self._idle: dict[Peer, float] = {}
        self._idle_by_source: dict[str, dict[Peer, None]] = {}
        self._timer: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return self.total

    def idle_count(self) -> int:
        return len(self._idle)

    def admit(self, source: str) -> bool:
        """Room for one more connection from `source`, shedding idle ones if a cap is reached."""
        if self._per_source.get(source, 0) >= self.per_source and not self._shed_oldest(self._idle_by_source.get(source)):
            return False
        return self.total < self.cap or self._shed_oldest(self._idle)

    def add(self, peer: Peer) -> None:
        if peer in self._members:
            return
        self._members.add(peer)
        self.total += 1
        self._per_source[peer.source] = self._per_source.get(peer.source, 0) + 1

    def remove(self, peer: Peer) -> None:
        """Idempotent: a shed connection is removed at once, and again when its transport ends."""
        if peer not in self._members:
            return
        self.set_busy(peer)
        self._members.discard(peer)
        self.total -= 1
        left = self._per_source[peer.source] - 1
        if left:
            self._per_source[peer.source] = left
        else:
            del self._per_source[peer.source]

    def set_idle(self, peer: Peer) -> None:
        """The connection has no open stream (since now, unless it already had none)."""
        if peer in self._idle or peer not in self._members:
            return
        loop = asyncio.get_running_loop()
        self._idle[peer] = loop.time()
        self._idle_by_source.setdefault(peer.source, {})[peer] = None
        if self._timer is None:
            self._timer = loop.call_at(self._idle[next(iter(self._idle))] + self.idle_timeout, self._expire)

    def touch(self, peer: Peer) -> None:
        """Calls opened and finished since the last look (within one read): an idle connection is
        idle from now, and last in the shedding order. Without this, a client making one call at
        a time (each whole in one read) stayed idle since its first call, and got the idle
        timeout's GOAWAY every `idle_timeout` however busy it was."""
        if peer in self._idle:
            self.set_busy(peer)
            self.set_idle(peer)

    def set_busy(self, peer: Peer) -> None:
        if self._idle.pop(peer, None) is None:
            return
        mine = self._idle_by_source[peer.source]
        del mine[peer]
        if not mine:
            del self._idle_by_source[peer.source]

    def _shed_oldest(self, idle: Mapping[Peer, object] | None) -> bool:
        if not idle:
            return False
        peer = next(iter(idle))
        self.remove(peer)
        self.counters.connections_shed += 1
        peer.shed()
        return True

    def shed_idle(self, n: int) -> int:
        """Close up to `n` idle connections, oldest first; returns how many."""
        done = 0
        while done < n and self._shed_oldest(self._idle):
            done += 1
        return done

    def _expire(self) -> None:
        """Close connections idle for `idle_timeout`, then wait for the next one due."""
        self._timer = None
        loop = asyncio.get_running_loop()
        deadline = loop.time() - self.idle_timeout
        while self._idle:
            peer, since = next(iter(self._idle.items()))
            if since > deadline:
                self._timer = loop.call_at(since + self.idle_timeout, self._expire)
                return
            self.remove(peer)
            self.counters.idle_timeouts += 1
            peer.shed()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class Listener:
    """Listening sockets whose accepted connections go through a ConnectionTable."""

    def __init__(
        self,
        factory: Callable[[str, socket.socket], Any],
        table: ConnectionTable,
        *,
        ssl: Any = None,
        ssl_handshake_timeout: float = 10.0,
        name: str = "native gRPC",
    ) -> None:
        #: Which front's listener this is, in its log lines (the HTTP front uses one too).
        self.name = name
        self.factory = factory  # (source address, socket) -> a new asyncio.Protocol that is also a Peer
        self.table = table
        self.ssl = ssl
        self.ssl_handshake_timeout = ssl_handshake_timeout
        self.sockets: list[socket.socket] = []
        self._loop = asyncio.get_running_loop()
        self._tasks: set[asyncio.Task[None]] = set()
        self._resume: dict[int, asyncio.TimerHandle] = {}
        self._closed = False
        self._warned_at = -_WARN_EVERY
        self._unwarned = 0

    async def start(self, host: str, port: int, backlog: int = 1024) -> int:
        """Bind every address `host` resolves to ("" = all) like asyncio does; returns the first port."""
        try:  # a numeric or empty host needs no lookup: no executor thread for it (asyncio skips it too)
            infos = socket.getaddrinfo(
                host or None, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE | socket.AI_NUMERICHOST
            )
        except socket.gaierror:
            infos = await self._loop.getaddrinfo(
                host or None, port, family=socket.AF_UNSPEC, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )
        seen: set[tuple[Any, ...]] = set()
        try:
            for family, kind, proto, _, addr in infos:
                if (family, addr) in seen:
                    continue
                seen.add((family, addr))
                try:
                    sock = listen_tcp(family, addr, backlog=backlog, kind=kind, proto=proto)
                except OSError as exc:  # worded as asyncio's create_server words it
                    raise OSError(exc.errno, f"error while attempting to bind on address {addr!r}: {exc.strerror}") from None
                self.sockets.append(sock)
        except BaseException:
            self.close()
            raise
        for sock in self.sockets:
            self._loop.add_reader(sock.fileno(), self._accept, sock)
        return int(self.sockets[0].getsockname()[1])

    def close(self) -> None:
        """Stop accepting (connections already made are the caller's to end)."""
        self._closed = True
        for handle in self._resume.values():
            handle.cancel()
        self._resume.clear()
        for sock in self.sockets:
            if sock.fileno() >= 0:
                self._loop.remove_reader(sock.fileno())
                sock.close()
        self.table.close()

    async def wait_closed(self) -> None:
        """Until connections still in their TLS handshake are through it (or failed)."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- accepting ---------------------------------------------------------------------------

    def _accept(self, sock: socket.socket) -> None:
        for _ in range(_ACCEPTS_PER_WAKEUP):
            try:
                conn, addr = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                self.table.counters.accept_errors += 1
                shed = self.table.shed_idle(_SHED_WHEN_OUT) if exc.errno in _OUT_OF_RESOURCES else 0
                # Shed connections free their descriptors on the next loop pass; without any to
                # shed, wait longer (Linux keeps the listening socket readable meanwhile).
                self._pause(sock, 0.01 if shed else 1.0)
                self._warn(
                    "%s: accept() failed (%s) with %d connections open; shed %d idle ones", self.name,
                    exc.strerror or exc, len(self.table), shed,
                )
                return
            self._admit(conn, addr)

    def _admit(self, conn: socket.socket, addr: Any) -> None:
        source = str(addr[0]) if isinstance(addr, tuple) else str(addr)
        if self._closed or not self.table.admit(source):
            self.table.counters.connections_refused += 1
            conn.close()
            return
        conn.setblocking(False)
        protocol = self.factory(source, conn)
        self.table.add(protocol)
        self.table.set_idle(protocol)  # idle from accept on: a burst of silent sockets can be shed too
        task = self._loop.create_task(self._connect(conn, protocol))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect(self, conn: socket.socket, protocol: Any) -> None:
        try:
            if self.ssl is None:
                await self._loop.connect_accepted_socket(lambda: protocol, conn)
            else:
                await self._loop.connect_accepted_socket(
                    lambda: protocol, conn, ssl=self.ssl, ssl_handshake_timeout=self.ssl_handshake_timeout
                )
        except BaseException as exc:
            # A failed TLS handshake never reaches the protocol: free its slot here.
            self.table.remove(protocol)
            conn.close()
            if not isinstance(exc, Exception):
                raise
            log.debug("%s: connection from %s failed before it started: %r", self.name, protocol.source, exc)

    def _pause(self, sock: socket.socket, delay: float) -> None:
        fd = sock.fileno()
        if fd < 0 or fd in self._resume:
            return
        self._loop.remove_reader(fd)
        self._resume[fd] = self._loop.call_later(delay, self._unpause, sock)

    def _unpause(self, sock: socket.socket) -> None:
        fd = sock.fileno()
        self._resume.pop(fd, None)
        if not self._closed and fd >= 0:
            self._loop.add_reader(fd, self._accept, sock)

    def _warn(self, message: str, *args: object) -> None:
        """At most one warning per _WARN_EVERY seconds, saying how many were skipped."""
        now = self._loop.time()
        if now - self._warned_at < _WARN_EVERY:
            self._unwarned += 1
            return
        if self._unwarned:
            message += f" ({self._unwarned} similar failures since the last warning)"
        log.warning(message, *args)
        self._warned_at = now
        self._unwarned = 0
