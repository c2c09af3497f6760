"""The datacenter and WAN flags: what they parse into, one line and exit 2 for each mistake, and a
registry started without -wan-bind never imports registry.wan nor registry.federation (with it, it does:
the check can fail)."""

from __future__ import annotations

import socket

import pytest

from registry.cli import main, parse_server_args
from tests.footprint import modules_child

BASE = ["-id", "x", "-bind", "127.0.0.1:0", "-addr", "127.0.0.1:0"]
KEY = "ivD4T3l/HRPFJ8JLR/KEEA=="


def test_wan_flags_parse_into_the_config() -> None:
    c = parse_server_args([*BASE, "-datacenter", "eu-west_2", "-wan-bind", "127.0.0.1:0",
                           "-wan-advertise", "10.0.0.1", "-wan-join", "10.0.0.2, 10.0.0.3:9000", "-wan-encrypt", KEY]).config
    assert (c.datacenter, c.wan_bind, c.wan_advertise) == ("eu-west_2", ("127.0.0.1", 0), ("10.0.0.1", 0))
    assert (c.wan_join, c.wan_encrypt_key) == (["10.0.0.2:7372", "10.0.0.3:9000"], KEY)
    plain = parse_server_args(BASE).config
    assert (plain.datacenter, plain.wan_bind, plain.wan_join, plain.wan_encrypt_key) == ("dc1", None, [], None)


@pytest.mark.parametrize(("args", "words"), [
    (["-datacenter", ""], "-datacenter must not be empty"),
    (["-datacenter", "DC1"], "-datacenter 'DC1': use lower-case letters, digits, '-' and '_' only"),
    (["-datacenter", "dc.1"], "-datacenter 'dc.1': use lower-case"),
    (["-datacenter", "d" * 65], "at most 64"),
    (["-wan-join", "10.0.0.2"], "-wan-join needs -wan-bind"),
    (["-wan-advertise", "10.0.0.2"], "-wan-advertise needs -wan-bind"),
    (["-wan-encrypt", KEY], "-wan-encrypt needs -wan-bind"),
    (["-wan-bind", "127.0.0.1:nope"], "-wan-bind: bad address"),
    (["-wan-bind", ":0", "-wan-join", "0.0.0.0:7372"], "-wan-join: '0.0.0.0:7372'"),
    (["-wan-bind", ":0", "-wan-encrypt", "not base64!"], "-wan-encrypt: key is not valid base64"),
    (["-wan-bind", ":0", "-wan-encrypt", "AAAA"], "-wan-encrypt: key must decode to 16, 24 or 32 bytes, not 3"),
    (["-wan-mirror-ttl", "1h"], "-wan-mirror-ttl needs -wan-bind"),
    (["-wan-export", "web"], "-wan-export needs -wan-bind"),
    (["-wan-bind", ":0", "-wan-mirror-ttl", "soon"], "-wan-mirror-ttl: duration 'soon'"),
    (["-wan-bind", ":0", "-wan-mirror-ttl", "0s"], "-wan-mirror-ttl: '0s' must be more than 0"),
    (["-wan-bind", ":0", "-wan-export", "web,,api"], "-wan-export: 'web,,api' has an empty group name"),
    (["-wan-bind", ":0", "-wan-export", "web,registry-group"], "-wan-export: registry-group is never exported"),
], ids=["dc-empty", "dc-upper", "dc-dot", "dc-long", "join-alone", "advertise-alone", "encrypt-alone", "bind-bad",
        "join-wildcard", "key-base64", "key-size", "ttl-alone", "export-alone", "ttl-bad", "ttl-zero", "export-empty",
        "export-registry-group"])
def test_bad_wan_flags_are_one_line_exit_2(args: list[str], words: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*BASE, *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err, err


@pytest.mark.parametrize("wan", [False, True], ids=["without", "with"])
def test_registry_wan_is_imported_only_with_wan_bind(wan: bool) -> None:
    args = [*BASE, "-wan-bind", "127.0.0.1:0"] if wan else BASE
    with modules_child(*args) as child:
        loaded = child.modules()
        assert ("registry.wan" in loaded, "registry.federation" in loaded) == (wan, wan), child.text()
        assert (child.started.get("wan", "").startswith("127.0.0.1:")) == wan, child.started


async def test_a_taken_wan_port_is_a_start_error_naming_it() -> None:
    from registry.server import RegistryServer, StartError

    from .procs import server_config

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = server_config("x", "dc1")
        config.wan_bind = ("127.0.0.1", port)
        server = RegistryServer(config)
        try:
            with pytest.raises(StartError, match=rf"^cannot bind WAN gossip on 127\.0\.0\.1:{port}: "):
                await server.start()
        finally:
            await server.close()


async def test_wan_advertise_is_the_address_the_pool_is_told() -> None:
    from .procs import server_config, started

    config = server_config("x", "dc1")
    config.wan_advertise = ("127.0.0.2", 7999)
    server = await started(config)
    try:
        assert server.wan is not None and server.wan.address == "127.0.0.2:7999"
        me = server.wan.agent.local_member()
        assert (me.name, me.addr, me.port) == ("x.dc1", "127.0.0.2", 7999)
        assert me.tags == {"dc": "dc1", "rpc": server.grpc_address, "role": "registry"}
    finally:
        await server.stop()
