"""MemberlistNode on real loopback UDP+TCP sockets: join, failure detection, leave, IPv6,
port 0, address parsing, metadata, user messages, hostile input."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from registry.memberlist.config import Config, failure_detection_bound
from registry.memberlist.delegate import Delegate
from registry.memberlist.node import JoinError, MemberlistNode, parse_address
from registry.memberlist.types import Address, Node, NodeState
from tests.waiting import aeventually

LOOP4 = "127.0.0.1"
LOOP6 = "::1"

Spawn = Callable[..., Awaitable[MemberlistNode]]


class Recorder(Delegate):
    def __init__(self, meta: bytes = b"") -> None:
        self.meta = meta
        self.msgs: list[bytes] = []
        self.joined: list[str] = []
        self.left: list[tuple[str, NodeState]] = []

    def node_meta(self, limit: int) -> bytes:
        return self.meta

    def notify_msg(self, msg: bytes) -> None:
        self.msgs.append(msg)

    def notify_join(self, node: Node) -> None:
        self.joined.append(node.name)

    def notify_leave(self, node: Node) -> None:
        self.left.append((node.name, node.state))


def state_of(node: MemberlistNode, name: str) -> NodeState | None:
    n = node.get(name)
    return None if n is None else n.state


def names(node: MemberlistNode) -> set[str]:
    return {m.name for m in node.members()}


@pytest.fixture
async def spawn() -> AsyncIterator[Spawn]:
    nodes: list[MemberlistNode] = []

    async def make(name: str, host: str = LOOP4, delegate: Delegate | None = None, **cfg: object) -> MemberlistNode:
        config = Config.fast(name=name, bind_addr=host, bind_port=0, **cfg)
        node = await MemberlistNode.create(config, delegate)
        nodes.append(node)
        return node

    yield make
    bugs = {n.name: n.core.handler_errors for n in nodes}  # exceptions inside handlers: see the log
    for n in nodes:
        await n.shutdown()
    assert not any(bugs.values()), f"drop.handler_error counted: {bugs}"


async def make_cluster(spawn: Spawn, count: int, host: str = LOOP4) -> list[MemberlistNode]:
    nodes = [await spawn(f"n{i}", host) for i in range(count)]
    for n in nodes[1:]:
        assert await n.join([str(nodes[0].address)]) == 1
    everyone = {n.name for n in nodes}
    await aeventually(lambda: all(names(n) == everyone for n in nodes), 20, "full membership")
    return nodes


def detection_limit(node: MemberlistNode, n: int) -> float:
    # The configured bound, stretched for a loaded 2-core machine.
    return 3 * failure_detection_bound(node.config, n) + 5


# -- address parsing ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,expected",
    [
        ("10.0.0.1:7000", Address("10.0.0.1", 7000)),
        ("10.0.0.1", Address("10.0.0.1", 7946)),
        ("node-a/10.0.0.1:7000", Address("10.0.0.1", 7000)),
        ("[::1]:7000", Address("::1", 7000)),
        ("[::1]", Address("::1", 7946)),
        ("::1", Address("::1", 7946)),
        ("fe80::1", Address("fe80::1", 7946)),
        (":7000", Address("0.0.0.0", 7000)),
        ("example.com:80", Address("example.com", 80)),
        ("example.com", Address("example.com", 7946)),
    ],
)
def test_parse_address(text: str, expected: Address) -> None:
    assert parse_address(text, 7946) == expected


@pytest.mark.parametrize("text", ["", "1.2.3.4:x", "1.2.3.4:70000", "[::1", "[::1]x", "[nothost]:1", "1:2:zz"])
def test_parse_address_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_address(text, 7946)


# -- cluster behaviour --------------------------------------------------------------------


async def test_port_zero_binds_and_advertises_actual_port(spawn: Spawn) -> None:
    a = await spawn("a")
    assert a.address.port != 0 and a.address.host == LOOP4
    assert a.local_node.port == a.address.port
    assert a.runner.bound == a.address
    assert names(a) == {"a"}


async def test_cluster_of_four_converges_then_detects_kill_and_leave(spawn: Spawn) -> None:
    nodes = await make_cluster(spawn, 4)
    n0, n1, n2, n3 = nodes
    # Kill n3: no leave, it just stops answering.
    await n3.shutdown()
    took = await aeventually(
        lambda: all(state_of(n, "n3") == NodeState.DEAD for n in (n0, n1, n2)),
        detection_limit(n0, 4),
        "n3 declared dead",
    )
    print(f"kill detected by all in {took:.2f}s (bound {failure_detection_bound(n0.config, 4):.2f}s)")
    assert all(names(n) == {"n0", "n1", "n2"} for n in (n0, n1, n2))
    # Graceful leave of n2 shows as left, not dead.
    assert await n2.leave(5.0)
    await aeventually(lambda: all(state_of(n, "n2") == NodeState.LEFT for n in (n0, n1)), 20, "n2 left")
    await n2.shutdown()
    assert names(n0) == {"n0", "n1"}


async def test_ipv6_cluster(spawn: Spawn) -> None:
    nodes = await make_cluster(spawn, 3, LOOP6)
    assert all(m.addr == LOOP6 for m in nodes[0].members())
    await nodes[2].shutdown()
    await aeventually(
        lambda: all(state_of(n, "n2") == NodeState.DEAD for n in nodes[:2]), detection_limit(nodes[0], 3), "n2 dead"
    )


async def test_join_counts_and_errors(spawn: Spawn) -> None:
    a = await spawn("a")
    b = await spawn("b")
    c = await spawn("c")
    assert await c.join([str(a.address), f"b/{b.address}"]) == 2
    with socket.socket() as s:
        s.bind((LOOP4, 0))  # bound but not listening: refused
        closed = f"{LOOP4}:{s.getsockname()[1]}"
        d = await spawn("d")
        with pytest.raises(JoinError) as info:
            await d.join([closed, "bad:port:x", "no-such-host.invalid:7946"])
    msg = str(info.value)
    assert closed in msg and "refused" in msg.lower()
    assert "bad:port:x" in msg and "no-such-host.invalid:7946" in msg
    assert set(info.value.failures) == {closed, "bad:port:x", "no-such-host.invalid:7946"}
    # One good address among bad ones is a success.
    assert await d.join([closed, str(a.address)]) == 1


async def test_join_resolves_names_and_default_port(spawn: Spawn) -> None:
    a = await spawn("a")
    b = await spawn("b")
    # "localhost" resolves to 127.0.0.1 (and maybe ::1, where nobody listens): at least one answers.
    assert await b.join([f"localhost:{a.address.port}"]) >= 1
    await aeventually(lambda: names(a) == {"a", "b"}, 10, "a sees b")
    # ":port" means this host.
    c = await spawn("c")
    assert await c.join([f":{a.address.port}"]) == 1


async def test_advertise_address_distinct_from_bind(spawn: Spawn) -> None:
    a = await spawn("a")
    b = await spawn("b", advertise_addr="127.0.0.2", advertise_port=12345)
    assert b.runner.bound.host == LOOP4 and b.address == Address("127.0.0.2", 12345)
    assert b.local_node.addr == "127.0.0.2" and b.local_node.port == 12345
    await b.join([str(a.address)])  # b dials out; a learns b's advertised address
    await aeventually(lambda: a.get("b") is not None, 10, "a knows b")
    got = a.get("b")
    assert got is not None and (got.addr, got.port) == ("127.0.0.2", 12345)


async def test_meta_update_and_limit(spawn: Spawn) -> None:
    ra = Recorder(meta=b"v1")
    a = await spawn("a", delegate=ra)
    b = await spawn("b")
    await b.join([str(a.address)])
    await aeventually(lambda: (b.get("a") or Node("", "", 0)).meta == b"v1", 10, "b sees v1")
    with pytest.raises(ValueError, match="513"):
        a.update_meta(b"x" * 513)
    a.update_meta(b"v2")
    await aeventually(lambda: (b.get("a") or Node("", "", 0)).meta == b"v2", 10, "b sees v2")


async def test_user_messages(spawn: Spawn) -> None:
    rb = Recorder()
    a = await spawn("a")
    b = await spawn("b", delegate=rb)
    await a.join([str(b.address)])
    a.send_best_effort("b", b"udp-hello")
    await a.send_reliable("b", b"tcp-hello" * 1000)
    await aeventually(lambda: b"udp-hello" in rb.msgs and b"tcp-hello" * 1000 in rb.msgs, 10, "messages")
    with pytest.raises(ValueError):
        a.send_best_effort("nobody", b"x")
    with socket.socket() as s:
        s.bind((LOOP4, 0))
        with pytest.raises(ConnectionError):
            await a.send_reliable(Address(LOOP4, s.getsockname()[1]), b"x")


async def test_hostile_input_is_dropped_and_counted(spawn: Spawn) -> None:
    nodes = await make_cluster(spawn, 3)
    target = nodes[1]
    loop = asyncio.get_running_loop()
    before = target.stats
    # Garbage UDP datagrams.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for junk in (b"\xff" * 100, b"\x00", b"\x07\x05", b"\x09\x81\xa4Algo"):
            s.sendto(junk, (LOOP4, target.address.port))
    # Garbage and slow TCP connections.
    _, w_garbage = await asyncio.open_connection(LOOP4, target.address.port)
    w_garbage.write(b"\xee\x00\x01" * 50)
    r_slow, w_slow = await asyncio.open_connection(LOOP4, target.address.port)
    w_slow.write(b"\x06")  # a push/pull that never completes

    def drops() -> dict[str, int]:
        now = target.stats
        return {k: now[k] - before[k] for k in ("drop.unknown_type", "drop.truncated")}

    # the first datagram is of no known type, the other three end too soon
    await aeventually(lambda: drops() == {"drop.unknown_type": 1, "drop.truncated": 3}, 10, "udp garbage counted")
    start = loop.time()
    assert await asyncio.wait_for(r_slow.read(), 30) == b""
    assert loop.time() - start <= target.config.tcp_timeout + 5
    assert target.stats["tcp.in.timeout"] >= 1
    w_garbage.close()
    w_slow.close()
    # Nobody ever suspected the target, and it still takes part.
    assert all(state_of(n, target.name) == NodeState.ALIVE for n in nodes)
    assert names(target) == {"n0", "n1", "n2"}
    assert not any(k.startswith("runner.exception") for k in target.stats)


async def test_leave_then_shutdown_with_no_peers(spawn: Spawn) -> None:
    a = await spawn("a")
    assert await a.leave(1.0)
    await a.shutdown()
    with pytest.raises(JoinError):
        await a.join(["127.0.0.1:1"])


async def test_bind_to_a_host_name(spawn: Spawn) -> None:
    a = await spawn("a", host="localhost")
    assert a.runner.bound.host in (LOOP4, LOOP6)
    assert a.address.host == a.runner.bound.host  # advertises an IP, never a name


@pytest.mark.parametrize(
    "ours,theirs",
    [
        ({"label": "prod"}, {"label": "prod"}),
        ({"secret_keys": [b"k" * 16]}, {"secret_keys": [b"k" * 16]}),
        ({"secret_keys": [b"k" * 32], "label": "prod"}, {"secret_keys": [b"k" * 32], "label": "prod"}),
    ],
)
async def test_label_and_encryption_on_real_sockets(
    spawn: Spawn, ours: dict[str, object], theirs: dict[str, object]
) -> None:
    a = await spawn("a", **ours)
    b = await spawn("b", **theirs)
    c = await spawn("c")  # plain: must not get in
    assert await b.join([str(a.address)]) == 1
    await aeventually(lambda: names(a) == {"a", "b"}, 10, "a sees b")
    with pytest.raises(JoinError):
        await c.join([str(a.address)])
    assert names(a) == {"a", "b"}


@pytest.mark.parametrize(
    "ours,theirs,why",
    [
        ({"label": "dev"}, {"label": "prod"}, r"could not read our stream \(failed to receive: label\)\)$"),
        ({"secret_keys": [b"k" * 16]}, {"secret_keys": [b"j" * 16]}, "answered with a key we do not hold"),
    ],
)
async def test_a_refused_join_says_why(spawn: Spawn, ours: dict[str, object], theirs: dict[str, object],
                                       why: str) -> None:
    """The join error explains the peer's refusal (its error text, or which key is missing)."""
    a = await spawn("a", **theirs)
    c = await spawn("c", **ours)
    with pytest.raises(JoinError, match=why):
        await c.join([str(a.address)])
