"""The asyncio driver's socket plumbing: the UDP protocol, and bounded-time outbound TCP
exchanges (inbound ones, which need admission, are `inbound.py`'s; binding the UDP+TCP pair on
one port is `registry.addresses.bind_pair`).

Every TCP exchange here runs under one deadline so that a slow or silent peer can only cost a
task for `timeout` seconds, never block the node.  Framing (where a stream message ends) is
delegated to `StreamFramer`, which knows the wire; failures are counted and worded by
`driver.dial_*`, as the thread driver's are.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, cast

from .driver import dial_bad_reply, dial_eof, dial_error, dial_timed_out
from .types import Address

__all__ = [
    "StreamOutcome",
    "UdpProtocol",
    "dial_stream",
    "read_framed",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StreamOutcome:
    """Result of one outbound stream, as the machine judged it (`accepted`) plus why it failed."""

    accepted: bool
    error: str = ""


class UdpProtocol(asyncio.DatagramProtocol):
    """Hands every datagram to `on_packet`; never lets an error reach asyncio."""

    def __init__(self, on_packet: Callable[[bytes, Address], None], stats: Counter[str]) -> None:
        self._on_packet = on_packet
        self._stats = stats
        self.transport: asyncio.DatagramTransport | None = None
        #: done once asyncio has closed the socket: `transport.close()` only schedules that
        #: for a later loop iteration, and the port cannot be bound again until then
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self._stats["udp.in.packets"] += 1
        self._stats["udp.in.bytes"] += len(data)
        try:
            source = Address(str(addr[0]), int(addr[1]))
        except (IndexError, TypeError, ValueError):
            self._stats["udp.drop.source"] += 1
            return
        self._on_packet(data, source)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and friends: normal when a peer has died.
        self._stats["udp.error"] += 1
        log.debug("udp error: %s", exc)

    def send(self, data: bytes, addr: Address) -> None:
        if self.transport is None or self.transport.is_closing():
            self._stats["udp.drop.closed"] += 1
            return
        try:
            self.transport.sendto(data, (addr.host, addr.port))
        except (OSError, ValueError, TypeError) as exc:
            self._stats["udp.error"] += 1
            log.debug("udp send to %s failed: %s", addr, exc)
            return
        self._stats["udp.out.packets"] += 1
        self._stats["udp.out.bytes"] += len(data)


class FramerLike(Protocol):
    """The part of `StreamFramer` used here (kept structural so this module imports nothing heavy)."""

    def feed(self, data: bytes) -> bytes | None: ...


async def read_framed(
    reader: asyncio.StreamReader, framer: FramerLike, stats: Counter[str], chunk: int = 65536
) -> bytes | None:
    """Read until `framer` reports one complete stream message; None on EOF before that.

    Reads whatever is available (never waits for EOF or a full buffer): the peer keeps
    the connection open until it gets our reply.  DecodeError from the framer propagates.
    """
    while True:
        data = await reader.read(chunk)
        if not data:
            return None
        stats["tcp.in.bytes"] += len(data)
        msg = framer.feed(data)
        if msg is not None:
            return msg


async def _close_writer(writer: asyncio.StreamWriter) -> None:
    try:
        writer.close()
        await asyncio.wait_for(writer.wait_closed(), 1.0)
    except (asyncio.TimeoutError, OSError, ConnectionError):  # asyncio's, not the builtin, before 3.11
        pass


async def dial_stream(
    addr: Address,
    data: bytes,
    *,
    timeout: float,
    expect_reply: bool,
    framer: FramerLike | None,
    stats: Counter[str],
) -> tuple[bytes | None, str]:
    """Connect, write `data`, optionally read one framed reply: all within `timeout` seconds.

    Returns (reply, "") on success (reply b"" when none was expected) or (None, why).
    """
    writer: asyncio.StreamWriter | None = None

    async def exchange() -> bytes | None:
        nonlocal writer
        reader, writer = await asyncio.open_connection(addr.host, addr.port)
        writer.write(data)
        await writer.drain()
        stats["tcp.out.bytes"] += len(data)
        if not expect_reply:
            return b""
        assert framer is not None
        return await read_framed(reader, framer, stats)

    try:
        reply = await asyncio.wait_for(exchange(), timeout)
    except asyncio.TimeoutError:  # not the builtin TimeoutError before Python 3.11
        return None, dial_timed_out(stats, timeout)
    except (OSError, ConnectionError) as exc:
        return None, dial_error(stats, exc)
    except ValueError as exc:  # DecodeError from the framer, or a bad address
        return None, dial_bad_reply(stats, exc)
    finally:
        if writer is not None:
            await _close_writer(writer)
    if reply is None:
        return None, dial_eof(stats)
    return reply, ""
