"""The fault-injecting proxy of the WAN tests (tests/federation/proxy.py) against echo servers on loopback.

The echo servers run on the test's loop, the proxy on its own thread: delays are measured as round
trips (at least the injected delay, in both directions, and not much more), TCP bytes keep their
order under delay, drops follow the probability, a cut stops everything (a reset connection fails at
once, a silent one reads nothing, a new one is held) and a heal lets everything through again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import cast

import pytest

from .proxy import Proxy


class _Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # (the selector's is no subclass of it)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(data, addr)


class _Client(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.got: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.got.put_nowait(data)


async def _tcp_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


@pytest.fixture
async def echo() -> AsyncIterator[str]:
    """UDP and TCP echo on one loopback port (as a memberlist endpoint): "127.0.0.1:port"."""
    server = await asyncio.start_server(_tcp_echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    udp, _ = await asyncio.get_running_loop().create_datagram_endpoint(_Echo, local_addr=("127.0.0.1", port))
    try:
        yield f"127.0.0.1:{port}"
    finally:
        udp.close()
        server.close()
        await server.wait_closed()


async def _udp_client(address: str) -> tuple[asyncio.DatagramTransport, _Client]:
    host, port = address.rsplit(":", 1)
    transport, proto = await asyncio.get_running_loop().create_datagram_endpoint(
        _Client, remote_addr=(host, int(port)))
    return transport, proto


async def _udp_rtt(address: str, payload: bytes = b"ping") -> float:
    transport, proto = await _udp_client(address)
    try:
        start = time.monotonic()
        transport.sendto(payload)
        assert await asyncio.wait_for(proto.got.get(), 5) == payload
        return time.monotonic() - start
    finally:
        transport.close()


async def _open(address: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = address.rsplit(":", 1)
    return await asyncio.open_connection(host, int(port))


async def test_delay_is_added_per_direction_and_tcp_keeps_its_order(echo: str) -> None:
    with Proxy(echo) as proxy:
        assert proxy.address != echo
        base = min([await _udp_rtt(proxy.address) for _ in range(3)])
        proxy.set_delay(80, 40)
        rtt = await _udp_rtt(proxy.address)
        assert 0.120 <= rtt < 0.120 + base + 1.0, rtt  # 80 ms there, 40 ms back (a loaded machine adds, never takes)
        reader, writer = await _open(proxy.address)
        start = time.monotonic()
        writer.write(b"x")
        assert await asyncio.wait_for(reader.readexactly(1), 5) == b"x"
        assert time.monotonic() - start >= 0.120
        # 200 chunks written in a burst arrive in order, all delayed, none after the other's delay
        sent = b"".join(i.to_bytes(2, "big") * 50 for i in range(200))
        start = time.monotonic()
        for i in range(200):
            writer.write(sent[i * 100:(i + 1) * 100])
        await writer.drain()
        got = await asyncio.wait_for(reader.readexactly(len(sent)), 10)
        took = time.monotonic() - start
        assert got == sent
        assert 0.120 <= took < 2.0, took  # latency, not a rate cap: not 200 x 120 ms
        writer.close()
        assert proxy.stats["udp_packets_to"] >= 4 and proxy.stats["tcp_bytes_back"] == len(sent) + 1


async def test_drop_is_a_probability_per_direction(echo: str) -> None:
    with Proxy(echo, seed=7) as proxy:
        proxy.drop_to = 0.5
        transport, client = await _udp_client(proxy.address)
        try:
            for i in range(200):
                transport.sendto(b"%d" % i)
            await asyncio.sleep(0)

            def settled() -> bool:
                return proxy.stats["udp_dropped_to"] + proxy.stats["udp_packets_to"] == 200

            deadline = time.monotonic() + 5
            while not (settled() and client.got.qsize() == proxy.stats["udp_packets_back"]
                       == proxy.stats["udp_packets_to"]):
                assert time.monotonic() < deadline, proxy.stats
                await asyncio.sleep(0.01)
            dropped = proxy.stats["udp_dropped_to"]
            assert 60 <= dropped <= 140, dropped  # binomial(200, 0.5): far outside 100 +- 40 is a bug
            assert proxy.stats["udp_dropped_back"] == 0
        finally:
            transport.close()


async def test_cut_stops_everything_and_heal_lets_it_through(echo: str) -> None:
    with Proxy(echo) as proxy:
        reset_r, reset_w = await _open(proxy.address)
        silent_r, silent_w = await _open(proxy.address)
        for w, r in ((reset_w, reset_r), (silent_w, silent_r)):
            w.write(b"hi")
            assert await asyncio.wait_for(r.readexactly(2), 5) == b"hi"

        proxy.cut(reset=False)  # a partition: the open connection goes silent
        silent_w.write(b"lost")
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(silent_r.read(10), 0.5)
        proxy.cut(reset=True)  # and this one is reset: the reader learns at once
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            await asyncio.wait_for(reset_r.readexactly(1), 5)
        # UDP: nothing answers
        transport, client = await _udp_client(proxy.address)
        transport.sendto(b"lost")
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(client.got.get(), 0.5)
        # a new connection is accepted and held: nothing comes back
        held_r, held_w = await _open(proxy.address)
        held_w.write(b"lost")
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(held_r.read(10), 0.5)
        assert proxy.stats["tcp_held"] == 1 and proxy.stats["udp_dropped_to"] == 1

        proxy.heal()
        # the connections held silent are reset, so their peers reconnect
        for r in (silent_r, held_r):
            with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
                await asyncio.wait_for(r.readexactly(1), 5)
        transport.sendto(b"again")
        assert await asyncio.wait_for(client.got.get(), 5) == b"again"
        transport.close()
        r, w = await _open(proxy.address)
        w.write(b"back")
        assert await asyncio.wait_for(r.readexactly(4), 5) == b"back"
        w.close()
        for w in (reset_w, silent_w, held_w):
            w.close()
