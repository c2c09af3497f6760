"""`Proxy`: a fault-injecting forwarder for one endpoint, UDP and TCP on one port (issue 17's WAN tests).

Why one port for both: memberlist (the WAN pool) gossips over UDP and pushes/pulls state over TCP to
the same advertised address, so a registry told `-wan-advertise <proxy>` has every WAN packet for it
pass through the proxy.  The same class fronts a gRPC port (TCP only is used; the UDP side idles).

Where it sits: in front of the endpoint that *receives*.  Every datagram or connection to the
registry behind it, from any datacenter, goes through it; memberlist's acks go to the sender's
advertised address (the ping carries it), i.e. through the *sender's* proxy.  So "cut the WAN link" is
`cut()` on every WAN-facing proxy, and "dc3 is far away" is a delay on dc3's proxies: a probe from dc1
to dc3 pays it on the way in, dc3's probes of dc1 pay it on their acks, and Vivaldi sees dc3 far in
both directions.

Faults (attributes and methods, safe to set from any thread; read at every datagram or chunk):

- `delay_to_ms` / `delay_back_ms`: added to every datagram and every TCP chunk, towards the target and
  back (TCP chunks keep their order: a queue per direction, delivered at arrival + delay);
- `drop_to` / `drop_back`: the probability of dropping a UDP datagram in that direction;
- `cut(reset=True)` drops everything from then on; with `reset` the open TCP connections are reset
  (RST) at once, without it they go silent (a partition: only a timeout finds it); connections opened
  during the cut are accepted and held silent.  `heal()` forwards again and resets the connections
  held silent (their peers reconnect, as after a real partition whose TCP state timed out).

It runs on its own thread and event loop, so a test may drive registries from its own loop, block
its thread, or run them as subprocesses.  Counters (`stats`) say what passed and what was dropped:
bytes through the proxy are the WAN bytes of the registry behind it.
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Coroutine
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, TypeVar, cast

if TYPE_CHECKING:
    from typing import Self

__all__ = ["Proxy"]

T = TypeVar("T")

#: UDP upstream sockets (one per client address, as a NAT) idle this long are closed.
UDP_IDLE = 60.0


def _split(addr: str | tuple[str, int]) -> tuple[str, int]:
    if isinstance(addr, tuple):
        return addr
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


class _Upstream(asyncio.DatagramProtocol):
    """The proxy's socket towards the target for one client address: replies go back to that client."""

    def __init__(self, proxy: Proxy, client: tuple[str, int]) -> None:
        self.proxy = proxy
        self.client = client
        self.transport: asyncio.DatagramTransport | None = None
        self.used = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # (the selector's is no subclass of it)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.used = time.monotonic()
        self.proxy._udp_forward(data, "back", self.client, None)


class _Listener(asyncio.DatagramProtocol):
    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.proxy._udp_from_client(data, addr)


class _Pipe:
    """One TCP connection through the proxy: two ordered, delayed pumps."""

    def __init__(self, proxy: Proxy, client: asyncio.StreamWriter) -> None:
        self.proxy = proxy
        self.writers: list[asyncio.StreamWriter] = [client]
        self.tasks: list[asyncio.Task[None]] = []
        #: held silent (opened during a cut, or open at a cut without reset): forwards nothing
        self.silent = proxy.is_cut

    def reset(self) -> None:
        """RST both sides (SO_LINGER 0, then abort) and stop the pumps."""
        for w in self.writers:
            sock = w.get_extra_info("socket")
            if sock is not None:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                except OSError:
                    pass
            w.transport.abort()
        for t in self.tasks:
            t.cancel()

    async def pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, direction: str) -> None:
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
        deliver = asyncio.ensure_future(self._deliver(queue, writer, direction))
        try:
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                if self.silent or self.proxy.is_cut:
                    self.proxy.stats[f"tcp_dropped_{direction}"] += len(chunk)
                    continue
                queue.put_nowait((time.monotonic() + self.proxy._delay(direction), chunk))
        except (ConnectionError, OSError):
            pass
        finally:
            queue.put_nowait(None)
            await asyncio.gather(deliver, return_exceptions=True)

    async def _deliver(self, queue: asyncio.Queue[tuple[float, bytes] | None], writer: asyncio.StreamWriter,
                       direction: str) -> None:
        try:
            while True:
                item = await queue.get()
                if item is None:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                at, chunk = item
                wait = at - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                if self.silent or self.proxy.is_cut:
                    self.proxy.stats[f"tcp_dropped_{direction}"] += len(chunk)
                    continue
                self.proxy.stats[f"tcp_bytes_{direction}"] += len(chunk)  # first: a reader may look once it has them
                writer.write(chunk)
                await writer.drain()
        except (ConnectionError, OSError):
            pass


class Proxy:
    """Forwards UDP and TCP from `listen` (port 0: a free one) to `target`; see the module docstring.

    `start()` (or `with Proxy(...) as p:`) binds and runs it on its own thread; `address` is then
    "host:port" to advertise.  `stop()` closes everything."""

    def __init__(self, target: str | tuple[str, int], listen: str | tuple[str, int] = ("127.0.0.1", 0), *,
                 seed: int | None = None) -> None:
        self.target = _split(target)
        self.listen = _split(listen)
        self.delay_to_ms = 0.0
        self.delay_back_ms = 0.0
        self.drop_to = 0.0
        self.drop_back = 0.0
        self.is_cut = False
        #: bytes and datagrams forwarded and dropped, by kind and direction ("udp_bytes_to", "tcp_dropped_back", ...)
        self.stats: Counter[str] = Counter()
        self.address = ""
        self.port = 0
        self._random = random.Random(seed)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._listener: asyncio.DatagramTransport | None = None
        self._server: asyncio.AbstractServer | None = None
        self._upstreams: dict[tuple[str, int], _Upstream] = {}
        self._pending: set[tuple[str, int]] = set()
        self._backlog: dict[tuple[str, int], list[tuple[float, bytes]]] = {}
        self._pipes: set[_Pipe] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    # -- the thread's side -----------------------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        assert self._loop is not None
        fut: Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return fut.result(timeout)

    def start(self) -> Self:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name=f"proxy->{self.target[1]}", daemon=True)
        self._thread.start()
        try:
            self._call(self._bind())
        except BaseException:
            self.stop()
            raise
        return self

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _bind(self) -> None:
        loop = asyncio.get_running_loop()
        host, port = self.listen
        for _ in range(20):  # TCP picks a free port; UDP must get the same one (rarely taken: retry)
            server = await asyncio.start_server(self._on_tcp, host, port)
            chosen = server.sockets[0].getsockname()[1]
            try:
                transport, _ = await loop.create_datagram_endpoint(lambda: _Listener(self), local_addr=(host, chosen))
            except OSError:
                server.close()
                await server.wait_closed()
                if port:
                    raise
                continue
            self._server, self._listener, self.port = server, transport, chosen
            self.address = f"{host}:{chosen}" if ":" not in host else f"[{host}]:{chosen}"
            self._keep(self._reap_udp())
            return
        raise OSError("no port free for both UDP and TCP")

    def stop(self) -> None:
        """Close every socket and end the thread (idempotent)."""
        loop, self._loop = self._loop, None
        if loop is None:
            return
        if loop.is_running():
            fut = asyncio.run_coroutine_threadsafe(self._close(), loop)
            try:
                fut.result(10)
            except Exception:  # noqa: BLE001 - closing what is left whatever happened
                pass
            loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        loop.close()

    async def _close(self) -> None:
        for pipe in list(self._pipes):
            pipe.reset()
        if self._server is not None:
            self._server.close()
        if self._listener is not None:
            self._listener.close()
        for up in self._upstreams.values():
            if up.transport is not None:
                up.transport.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    @property
    def connections(self) -> int:
        """TCP connections open through the proxy now (held silent ones included)."""
        return len(self._pipes)

    # -- faults ----------------------------------------------------------------------------

    def set_delay(self, to_ms: float, back_ms: float | None = None) -> None:
        """Delay every datagram and TCP chunk by `to_ms` towards the target, `back_ms` (default the same) back."""
        self.delay_to_ms = to_ms
        self.delay_back_ms = to_ms if back_ms is None else back_ms

    def cut(self, reset: bool = True) -> None:
        """Drop everything from now on; `reset`: RST the open TCP connections, else hold them silent."""
        self.is_cut = True
        self._call(self._on_cut(reset))

    async def _on_cut(self, reset: bool) -> None:
        for pipe in list(self._pipes):
            if reset:
                pipe.reset()
            else:
                pipe.silent = True

    def heal(self) -> None:
        """Forward again; connections held silent are reset (their peers open new ones)."""
        self._call(self._on_heal())

    async def _on_heal(self) -> None:
        self.is_cut = False
        for pipe in list(self._pipes):
            if pipe.silent:
                pipe.reset()

    def _keep(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run `coro` as a task held until it ends (the loop keeps only weak references)."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _delay(self, direction: str) -> float:
        return max(0.0, (self.delay_to_ms if direction == "to" else self.delay_back_ms) / 1000.0)

    # -- UDP -------------------------------------------------------------------------------

    def _udp_from_client(self, data: bytes, client: tuple[str, int]) -> None:
        up = self._upstreams.get(client)
        if up is not None and up.transport is not None:
            up.used = time.monotonic()
            self._udp_forward(data, "to", client, up)
            return
        # the first datagram of this client: open its upstream socket, keep what arrives meanwhile
        self._backlog.setdefault(client, []).append((time.monotonic(), data))
        if client not in self._pending:
            self._pending.add(client)
            self._keep(self._open_upstream(client))

    async def _open_upstream(self, client: tuple[str, int]) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, proto = await loop.create_datagram_endpoint(lambda: _Upstream(self, client), remote_addr=self.target)
        except OSError:
            self.stats["udp_upstream_errors"] += 1
            self._backlog.pop(client, None)
            return
        finally:
            self._pending.discard(client)
        self._upstreams[client] = proto
        for _, data in self._backlog.pop(client, []):
            self._udp_forward(data, "to", client, proto)

    def _udp_forward(self, data: bytes, direction: str, client: tuple[str, int], up: _Upstream | None) -> None:
        drop = self.drop_to if direction == "to" else self.drop_back
        if self.is_cut or (drop > 0 and self._random.random() < drop):
            self.stats[f"udp_dropped_{direction}"] += 1
            return
        delay = self._delay(direction)
        if delay > 0:
            assert self._loop is not None
            self._loop.call_later(delay, self._udp_send, data, direction, client, up)
        else:
            self._udp_send(data, direction, client, up)

    def _udp_send(self, data: bytes, direction: str, client: tuple[str, int], up: _Upstream | None) -> None:
        if self.is_cut:  # cut while it was delayed
            self.stats[f"udp_dropped_{direction}"] += 1
            return
        try:
            if direction == "to":
                if up is None or up.transport is None or up.transport.is_closing():
                    return
                self._count_udp(data, direction)
                up.transport.sendto(data)
            elif self._listener is not None:
                self._count_udp(data, direction)
                self._listener.sendto(data, client)
        except OSError:
            self.stats[f"udp_errors_{direction}"] += 1

    def _count_udp(self, data: bytes, direction: str) -> None:
        """Counted before sending: a reader may look as soon as it has the datagram."""
        self.stats[f"udp_bytes_{direction}"] += len(data)
        self.stats[f"udp_packets_{direction}"] += 1

    async def _reap_udp(self) -> None:
        while True:
            await asyncio.sleep(UDP_IDLE / 4)
            now = time.monotonic()
            for client, up in list(self._upstreams.items()):
                if now - up.used > UDP_IDLE and up.transport is not None:
                    up.transport.close()
                    del self._upstreams[client]

    # -- TCP -------------------------------------------------------------------------------

    async def _on_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        pipe = _Pipe(self, writer)
        self._pipes.add(pipe)
        try:
            if pipe.silent:  # opened during a cut: accepted (the SYN got through the kernel) and held
                self.stats["tcp_held"] += 1
                while await reader.read(65536):
                    pass
                return
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.target)
            except OSError:
                self.stats["tcp_connect_errors"] += 1
                pipe.reset()
                return
            pipe.writers.append(up_writer)
            self.stats["tcp_connections"] += 1
            pipe.tasks = [asyncio.ensure_future(pipe.pump(reader, up_writer, "to")),
                          asyncio.ensure_future(pipe.pump(up_reader, writer, "back"))]
            await asyncio.gather(*pipe.tasks, return_exceptions=True)
        except (ConnectionError, OSError):
            pass
        except asyncio.CancelledError:  # the proxy stops: end quietly (asyncio logs a cancelled handler task)
            for t in pipe.tasks:
                t.cancel()
        finally:
            self._pipes.discard(pipe)
            for w in pipe.writers:
                if pipe.silent:
                    w.transport.abort()
                else:
                    w.close()
