"""`registry.addresses`, the one place for address parsing, wildcards and the UDP+TCP pair.

Every layer (both gossip drivers, the server, `register`, the client, the command) uses it, so
a rule is stated and checked once here: an empty host is every interface, "0.0.0.0" where a
literal is needed; any spelling of the unspecified address is a wildcard that cannot be dialled.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import subprocess

import pytest

from registry.addresses import (
    HostPort,
    bind_pair,
    format_hostport,
    ip_literal,
    is_wildcard,
    loopback_if_wildcard,
    outward_host,
    parse_join_address,
)

from .helpers import env, registry_cmd

SERVER = ["-id", "a", "-bind", "127.0.0.1:0", "-addr", "127.0.0.1:0", "-log-format", "json"]


@pytest.mark.parametrize("flag, value", [
    ("-advertise", "[0::]:9800"),
    ("-advertise", "[::0]:9800"),
    ("-registries", "[0:0::0]:7370"),
    ("-bind-advertise", "[::0]:7370"),
])
def test_every_spelling_of_the_wildcard_is_refused_where_others_dial(flag: str, value: str) -> None:
    """The command refused "::" and "0:0:0:0:0:0:0:0" but took "0::" or "::0" as an address to give
    others (the server then advertised an address nobody can dial); one `is_wildcard` now decides.
    A wrongly accepted value starts a server on loopback port 0, and the timeout fails the test."""
    r = subprocess.run(registry_cmd(*SERVER, flag, value), check=False, capture_output=True, text=True,
                       env=env(), timeout=20)
    assert r.returncode == 2, r
    assert flag in r.stderr and "every interface" in r.stderr, r.stderr


def test_the_one_rule_for_an_empty_host() -> None:
    assert ip_literal("") == "0.0.0.0"
    assert ip_literal("::0") == "::" and ip_literal("127.0.0.1") == "127.0.0.1"
    assert ip_literal("localhost") in ("127.0.0.1", "::1")
    assert all(is_wildcard(h) for h in ("", "0.0.0.0", "::", "0::", "0:0:0:0:0:0:0:0"))
    assert not any(is_wildcard(h) for h in ("127.0.0.1", "::1", "localhost"))
    assert outward_host("127.0.0.1") == "127.0.0.1" and not is_wildcard(outward_host(""))
    assert format_hostport("::1", 7) == "[::1]:7" and format_hostport("", 7) == ":7"
    # a wildcard given as a place to dial (a join target) is this machine
    assert [loopback_if_wildcard(h) for h in ("", "0.0.0.0", "::", "10.0.0.1")] == ["127.0.0.1", "127.0.0.1", "::1", "10.0.0.1"]


def test_bind_pair_takes_one_port_for_udp_and_tcp_and_says_when_it_is_taken() -> None:
    tcp, udp = bind_pair("127.0.0.1", 0)
    try:
        port = tcp.getsockname()[1]
        assert udp.getsockname()[1] == port and udp.type == socket.SOCK_DGRAM
        with pytest.raises(OSError) as info:
            bind_pair("127.0.0.1", port)
        assert info.value.errno == errno.EADDRINUSE and f"127.0.0.1:{port}" in str(info.value)
    finally:
        tcp.close()
        udp.close()


async def test_both_serf_drivers_read_join_targets_alike() -> None:
    """The asyncio and the threaded Serf drivers parsed join targets with different code: the
    threaded one refused memberlist's "name/host:port" (and read ":port" as 127.0.0.1 where the
    other read 0.0.0.0).  Both now use `parse_join_address`; real nodes on loopback."""
    from registry.memberlist.config import Config
    from registry.serf.agent import SerfAgent
    from registry.serf.config import SerfConfig
    from registry.serf.threaded import ThreadedSerf

    def config(name: str) -> SerfConfig:
        return SerfConfig(name=name, memberlist=Config.fast(bind_addr="127.0.0.1", bind_port=0))

    assert parse_join_address("a/[::1]:7000", 7946) == HostPort("::1", 7000)
    assert parse_join_address(":7000", 7946) == HostPort("0.0.0.0", 7000)
    seed = SerfAgent(config("seed"))
    await seed.start()
    joiner = SerfAgent(config("agent"))
    await joiner.start()
    threaded = ThreadedSerf(config("threaded"))
    threaded.start()
    try:
        port = seed.address.port if seed.address is not None else 0
        for target in (f"seed/127.0.0.1:{port}", f":{port}", f"0.0.0.0:{port}"):
            assert await joiner.join([target]) == 1, target
            assert await asyncio.to_thread(threaded.join, [target], 10.0) == 1, target
    finally:
        await asyncio.to_thread(threaded.shutdown)
        await joiner.shutdown()
        await seed.shutdown()


@pytest.mark.parametrize("addr", ["0.0.0.0:8080", "[::]:8080"])
def test_a_wildcard_is_not_an_address_to_give_clients(addr: str) -> None:
    """`Register` took "0.0.0.0:8080" as the address clients dial (they then dialled their own
    machine), and its seeds and the client's registry addresses took it too; the command refused
    it.  One `dial_problem` now decides for all of them, each saying it in its own error type."""
    from registry.client import InvalidAddress, RpcClient
    from registry.register import AsyncRegister, Register, RegisterError

    for cls in (Register, AsyncRegister):
        with pytest.raises(RegisterError, match=r"^addr: .* means every interface and cannot be dialled$"):
            cls("svc", ":0", "", "127.0.0.1:7370", "g", addr)
        with pytest.raises(RegisterError, match=r"^registries: .* means every interface and cannot be dialled$"):
            cls("svc", ":0", "", addr, "g", "127.0.0.1:8080")
    with pytest.raises(InvalidAddress, match=r"means every interface and cannot be dialled"):
        RpcClient(addr)
