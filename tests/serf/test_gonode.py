"""Interop with the newest HashiCorp release: `gonode` (serf v0.10.2, memberlist v0.5.2, go-msgpack
v2) against a registry process, an in-process Serf node and a `register.Register`.

tests/serf/test_interop.py does the same against Debian's serf 0.9.4 agent.  What the v0.10.2 node
changes on the wire: go-msgpack v2 writes Go `int` fields (push/pull `Nodes`, `UserStateLen`,
`State`, `userMsgHeader.UserMsgLen`, query `Timeout`, ...) with the *signed* int family (0xd1/0xd2/
0xd3) where 0.5.x wrote uint (0xcc/0xcd/0xce); and the Serf library default protocol is 4 where
the `serf agent` says 5, so a gonode announces Vsn [1, 5, 2, 2, 5, 4].

Every test skips (with the path it looked at) when the gonode binary is absent.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from registry.memberlist.config import Config
from registry.register import Register, RegisterError
from registry.serf.agent import SerfAgent
from registry.serf.config import SerfConfig
from registry.serf.events import QueryEvent
from registry.serf.member import MemberStatus
from tests.e2e.helpers import (
    Proc,
    Registry,
    Service,
    env,
    free_port,
    procs,
    registry_cmd,
    wait_for,
)
from tests.gonode import GoNode
from tests.serf.serf_live import py_node, wait

pytestmark = [pytest.mark.gonode, pytest.mark.timeout(180)]

KEY1 = base64.b64encode(bytes(range(32))).decode()
KEY2 = base64.b64encode(bytes(range(50, 66))).decode()
#: What a gonode announces: memberlist protocol 1..5 speaking 2 (Serf maps every Serf protocol to
#: memberlist 2), Serf protocol 2..5 speaking the *library* default 4.
GO_VSN = [1, 5, 2, 2, 5, 4]
#: What we announce by default: the `serf agent`'s Serf protocol 5.
PY_VSN = [1, 5, 2, 2, 5, 5]
GoFactory = Callable[..., GoNode]


@pytest.fixture
def ps() -> Iterator[list[Proc]]:
    with procs() as started:
        yield started


#: Drops that are timing, not content: an ack or nack after its probe ended (a Go relay nacks
#: ProbeTimeout after our indirect request, about when our probe closes; Go ignores those
#: silently), a datagram arriving as our socket closes.
LATE = ("unknown_ack", "unknown_nack", "udp.drop.closed")


def drops(agent: SerfAgent, *expected: str) -> dict[str, int]:
    """What `agent` dropped as malformed or refused ("drop.*" counters) besides late answers and
    `expected` reasons: everything a v0.10.2 node sends must decode (go-msgpack v2's signed ints too)."""
    skip = LATE + expected
    return {
        k: v for k, v in agent.stats.items() if v and ("drop." in k or "rejected" in k) and not k.endswith(skip)
    }


def gossip(agent: SerfAgent) -> str:
    m = agent.local_member()
    return f"{m.addr}:{m.port}"


def services(reg: Registry, group: str) -> dict[str, tuple[str, dict[str, str]]]:
    """{id: (addr, tags)} of `group` in the registry's ring (empty if the group is unknown)."""
    from registry.client import NotFound, RpcClient

    with RpcClient(reg.rpc, timeout=10.0) as c:
        try:
            return {s.id: (s.addr, dict(s.tags)) for s in c.members(group)}
        except NotFound:
            return {}


def matched(reg: Registry, group: str, keys: int = 64) -> set[str]:
    from registry.client import RpcClient

    with RpcClient(reg.rpc, timeout=10.0) as c:
        return {c.match(group, f"key-{i}").id for i in range(keys)}


def settled(go: GoNode, name: str, timeout: float = 30.0) -> str:
    """`name`'s status at `go` once it is no longer alive ("left" or "failed")."""
    deadline = time.monotonic() + timeout
    while True:
        m = go.member(name)
        if m is not None and m["status"] != "alive":
            return str(m["status"])
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} still {m} at {go.name} after {timeout}s")
        time.sleep(0.1)


def web_tags(port: int) -> dict[str, str]:
    return {"group": "web", "addr": f"127.0.0.1:{port}"}


def registry_tags(reg: Registry) -> dict[str, str]:
    """A registry's tags as a Go node sees them (repl=1: it replicates TTL services, registry/ttl; dc: its
    datacenter, issue 17)."""
    return {"addr": reg.rpc, "group": "registry-group", "id": reg.id, "repl": "1", "dc": "dc1"}


# -- join both ways, tags, ring ------------------------------------------------------------------


def test_registry_process_and_gonodes_join_both_ways(gonode: GoFactory, ps: list[Proc], tmp_path: Path) -> None:
    go1 = gonode("go1", tags=web_tags(9001))
    r1 = Registry(ps, tmp_path, "r1", [go1.bind], profile="lan").wait_ready()  # we join gonode
    go2 = gonode("go2", tags=web_tags(9002), join=[r1.gossip])  # gonode joins us
    for go in (go1, go2):
        go.wait_member("r1", "alive", 30, tags=registry_tags(r1))
        for other in (go1, go2):
            got = go.wait_member(other.name, "alive", 30, tags=other.tags)
            assert got["protocol"] == GO_VSN
        assert go.wait_member("r1", "alive", 5)["protocol"] == PY_VSN
    want = {"go1": ("127.0.0.1:9001", web_tags(9001)), "go2": ("127.0.0.1:9002", web_tags(9002))}
    wait_for(lambda: services(r1, "web") == want, 30, what="both gonodes in r1's web ring")
    assert matched(r1, "web") == {"go1", "go2"}
    # a tag change on the Go side (a rejoin with new tags, gonode has no tag command) reaches the ring
    go2.terminate()
    wait_for(lambda: set(services(r1, "web")) == {"go1"}, 30, what="go2 out of the ring after its leave")
    go2b = gonode("go2", tags=web_tags(9003), join=[r1.gossip])
    wait_for(lambda: services(r1, "web").get("go2", ("", {}))[0] == "127.0.0.1:9003", 30, what="go2's new addr")
    go1.wait_member("go2", "alive", 30, tags=go2b.tags)
    # nothing of ours failed to decode or merge on the Go side (a restarted go2 refutes its own
    # leave, still gossiped: Go's normal way back)
    for go in (go1, go2, go2b):
        assert go.complaints("Refuting a dead message (from: go2)") == []


def test_register_through_gonode_reaches_registry_ring(gonode: GoFactory, ps: list[Proc], tmp_path: Path) -> None:
    """A service that knows only the Go node: the Go node relays its alive/tags to the registry."""
    go1 = gonode("go1")
    r1 = Registry(ps, tmp_path, "r1", [go1.bind], profile="lan").wait_ready()
    reg = Register("svc-1", "127.0.0.1:0", "", go1.bind, "svc", "127.0.0.1:7001", weight=2, tags={"zone": "a"})
    try:
        assert reg.start() >= 1
        want = {"group": "svc", "addr": "127.0.0.1:7001", "replicas": "10000", "weight": "2", "zone": "a",
                "dc": "dc1"}  # Register's datacenter= default (issue 17)
        go1.wait_member("svc-1", "alive", 30, tags=want)
        wait_for(lambda: services(r1, "svc") == {"svc-1": ("127.0.0.1:7001", want)}, 30, what="svc-1 in r1's ring")
        assert matched(r1, "svc", 8) == {"svc-1"}
        wait_for(
            lambda: {m.name for m in reg.members() if m.status == MemberStatus.ALIVE} == {"go1", "r1", "svc-1"},
            30, what="the register sees the pool")
        assert next(m for m in reg.members() if m.name == "r1").tags == registry_tags(r1)
        reg.set_tags({"zone": "b"})
        go1.wait_member("svc-1", "alive", 30, tags={**want, "zone": "b"})
        wait_for(lambda: services(r1, "svc").get("svc-1", ("", {}))[1].get("zone") == "b", 30, what="zone=b in r1")
    finally:
        reg.stop()  # graceful leave
    assert go1.wait_member("svc-1", "left", 30)["status"] == "left"
    wait_for(lambda: services(r1, "svc") == {}, 30, what="svc-1 out of r1's ring")
    # a service process (threaded gossip driver) joined through the Go node, then SIGKILLed
    svc = Service(ps, tmp_path, "svc-2", [go1.bind], group="svc", profile="lan").wait_registered()
    go1.wait_member("svc-2", "alive", 30, tags={"group": "svc", "addr": svc.addr, "replicas": "10000",
                                                   "dc": "dc1"})
    wait_for(lambda: set(services(r1, "svc")) == {"svc-2"}, 30, what="svc-2 in r1's ring")
    svc.proc.p.kill()
    svc.proc.wait(10)
    assert go1.wait_member("svc-2", "failed", 60)["status"] == "failed"
    wait_for(lambda: services(r1, "svc") == {}, 30, what="svc-2 out of r1's ring")
    assert go1.complaints() == []


# -- leave and failure, both ways --------------------------------------------------------------


def test_registry_process_leave_and_kill_seen_by_gonode(gonode: GoFactory, ps: list[Proc], tmp_path: Path) -> None:
    go1 = gonode("go1", tags=web_tags(9001))
    r1 = Registry(ps, tmp_path, "r1", [go1.bind], profile="lan").wait_ready()
    r2 = Registry(ps, tmp_path, "r2", [go1.bind], profile="lan").wait_ready()
    go1.wait_member("r1", "alive", 30)
    go1.wait_member("r2", "alive", 30)
    wait_for(lambda: set(services(r2, "registry-group")) == {"r1", "r2"}, 30, what="r2 sees r1")
    r1.proc.signal(signal.SIGTERM)  # graceful: leave intent, then memberlist dead{From=self}
    assert r1.proc.wait(30) == 0
    assert go1.wait_member("r1", "left", 30)["status"] == "left"
    r2.proc.p.kill()  # no leave: the Go node's probes must find it failed
    r2.proc.wait(10)
    assert go1.wait_member("r2", "failed", 60)["status"] == "failed"
    assert go1.complaints() == []


async def test_gonode_leave_and_kill_seen_by_python_then_reaped(gonode: GoFactory, nodes: list[SerfAgent]) -> None:
    py = await py_node(nodes, "py1", reap_interval=0.5, reconnect_timeout=4.0, tombstone_timeout=4.0)
    go1 = await gonode("go1", start=False, join=[gossip(py)]).astart()
    go2 = await gonode("go2", start=False, join=[gossip(py)]).astart()
    go3 = await gonode("go3", start=False, join=[gossip(py)]).astart()
    assert await wait(lambda: all(py.status_of(n) == MemberStatus.ALIVE for n in ("go1", "go2", "go3")))
    gm = py.core.member("go1")
    assert gm is not None and gm.vsn == bytes(GO_VSN)
    assert await asyncio.to_thread(go1.terminate) == 0
    assert await wait(lambda: py.status_of("go1") == MemberStatus.LEFT, 30), py.status_of("go1")
    go2.kill()
    assert await wait(lambda: py.status_of("go2") == MemberStatus.FAILED, 60), py.status_of("go2")
    # reaped after reconnect_timeout / tombstone_timeout, like Serf's reap()
    assert await wait(lambda: py.status_of("go1") is None and py.status_of("go2") is None, 30)
    assert py.status_of("go3") == MemberStatus.ALIVE
    # and our graceful leave is a `left` at the Go node, not a failure
    await go3.await_member("py1", "alive", 10)
    assert drops(py) == {}
    assert await py.leave(15.0)
    assert (await go3.await_member("py1", "left", 30))["status"] == "left"
    assert go3.complaints() == []


# -- encryption ----------------------------------------------------------------------------------


def test_encrypted_pool_both_ways_and_mismatched_keys_stay_out(
    gonode: GoFactory, ps: list[Proc], tmp_path: Path
) -> None:
    go1 = gonode("go1", tags=web_tags(9001), encrypt=KEY1)
    r1 = Registry(ps, tmp_path, "r1", [go1.bind], "-encrypt", KEY1, profile="lan").wait_ready()
    go2 = gonode("go2", tags=web_tags(9002), encrypt=KEY1, join=[r1.gossip])
    for go in (go1, go2):
        go.wait_member("r1", "alive", 30, tags=registry_tags(r1))
    go1.wait_member("go2", "alive", 30)
    wait_for(lambda: set(services(r1, "web")) == {"go1", "go2"}, 30, what="both gonodes in r1's ring")
    # a Go node with another key, or none, cannot join through the registry or through a Go node
    wrong = gonode("wrong", encrypt=KEY2, join=[r1.gossip], join_retry=2)
    plain = gonode("plain", join=[go1.bind], join_retry=2)
    assert wrong.join_failed() and plain.join_failed()
    # a Register (threaded driver, its own codec path) with the key joins through a Go node; with another it fails
    with Register("svc-e", "127.0.0.1:0", "", go2.bind, "svc", "127.0.0.1:7002", encrypt=KEY1) as reg:
        go1.wait_member("svc-e", "alive", 30, tags={"group": "svc", "addr": "127.0.0.1:7002", "replicas": "10000",
                                                           "dc": "dc1"})
        wait_for(lambda: set(services(r1, "svc")) == {"svc-e"}, 30, what="svc-e in r1's ring")
        assert {m.name for m in reg.members()} >= {"go1", "go2", "r1", "svc-e"}
    go1.wait_member("svc-e", "left", 30)
    for seed, key in ((go1.bind, KEY2), (go1.bind, None), (plain.bind, KEY1)):  # wrong key, none, one too many
        bad = Register("svc-x", "127.0.0.1:0", "", seed, "svc", "127.0.0.1:7003", encrypt=key, profile="fast")
        with pytest.raises(RegisterError):
            bad.start()
        bad.stop()
    # a registry with the wrong key cannot join the Go node
    r2 = Registry(ps, tmp_path, "r2", [go1.bind], "-encrypt", KEY2, profile="lan")
    wait_for(lambda: "join failed" in r2.proc.output(), 60, what="r2's failed join")
    deadline = time.monotonic() + 3  # nothing leaks in later either (gossip, push/pull)
    while time.monotonic() < deadline:
        assert {m["name"] for m in go1.members()} == {"go1", "go2", "r1", "svc-e"}
        assert {m["name"] for m in wrong.members()} == {"wrong"}
        assert set(services(r1, "web")) == {"go1", "go2"} and set(services(r1, "registry-group")) == {"r1"}
        time.sleep(0.3)
    # what the Go nodes logged is only the refused strangers: no message of a key holder was refused
    assert go2.complaints() == []
    assert go1.complaints("remote state is not encrypted", "No installed keys could decrypt") == []


async def test_key_rotation_from_python_with_gonodes_in_the_pool(
    gonode: GoFactory, nodes: list[SerfAgent], tmp_path: Path
) -> None:
    """Serf's internal key queries from our side; the Go nodes answer `_serf_*-key` themselves."""
    kr = tmp_path / "py1.keyring"
    py = await py_node(nodes, "py1", {"zone": "a"}, encrypt_key=KEY1, keyring_file=str(kr))
    go1 = await gonode("go1", start=False, encrypt=KEY1, join=[gossip(py)]).astart()
    go2 = await gonode("go2", start=False, encrypt=KEY1, join=[go1.bind]).astart()
    assert await wait(lambda: py.status_of("go1") == py.status_of("go2") == MemberStatus.ALIVE)
    res = await py.list_keys()
    assert res.ok and res.keys == {KEY1: 3} and res.primary_keys == {KEY1: 3}, res.messages
    res = await py.install_key(KEY2)
    assert res.ok and res.num_resp == 3, res.messages
    res = await py.use_key(KEY2)
    assert res.ok and res.num_resp == 3, res.messages
    res = await py.remove_key(KEY1)
    assert res.ok and res.num_resp == 3, res.messages
    res = await py.list_keys()
    assert res.ok and res.keys == {KEY2: 3} and res.primary_keys == {KEY2: 3}, res.messages
    assert json.loads(kr.read_text()) == [KEY2]
    # errors come back from the Go nodes as Serf words them
    res = await py.remove_key(KEY2)
    assert not res.ok and res.num_err == 3
    assert any("primary key" in m for m in res.messages.values()), res.messages
    # the pool keeps working on the new key: gossip both ways, new nodes with it join, old key is out
    await py.set_tags({"zone": "b"})
    await go2.await_member("py1", "alive", 30, tags={"zone": "b"})
    await gonode("go3", start=False, encrypt=KEY2, join=[gossip(py)]).astart()
    assert await wait(lambda: py.status_of("go3") == MemberStatus.ALIVE)
    await go1.await_member("go3", "alive", 30)
    old = await gonode("old", start=False, encrypt=KEY1, join=[go1.bind], join_retry=2).astart()
    assert await asyncio.to_thread(old.join_failed)
    for _ in range(10):
        ms = await asyncio.to_thread(go2.members)
        assert {m["name"]: m["status"] for m in ms} == dict.fromkeys(("go1", "go2", "go3", "py1"), "alive"), ms
        assert py.status_of("old") is None
        await asyncio.sleep(0.3)
    assert drops(py) == {}
    for go in (go1, go2):  # the refused removal of the primary key, and the stranger with the old key
        assert go.complaints("Removing the primary key is not allowed", "No installed keys could decrypt") == []


# -- protocol versions ---------------------------------------------------------------------------


@pytest.mark.parametrize("go_proto", [None, 2, 3, 4, 5])
async def test_serf_protocols(gonode: GoFactory, nodes: list[SerfAgent], go_proto: int | None) -> None:
    """gonode at its default (the library's 4) and at each protocol it speaks, with us at our default 5
    and at the Go node's own; memberlist protocol is 2 on both sides whatever the Serf protocol."""
    py_protos = [4, 5] if go_proto is None else sorted({5, go_proto})
    go = await gonode("go1", start=False, tags={"role": "db", "group": "g"}, protocol=go_proto).astart()
    for pp in py_protos:
        name = f"py{pp}"
        py = await py_node(nodes, name, {"role": "web", "x": "y"}, protocol_version=pp)
        assert await py.join([go.bind]) == 1
        cur = 4 if go_proto is None else go_proto
        # Serf protocol 2 carries only the role, as raw Meta; 3+ the tags map
        want = {"role": "web"} if min(pp, cur) == 2 and pp == 2 else {"role": "web", "x": "y"}
        m = await go.await_member(name, "alive", 30, tags=want)
        assert m["protocol"] == [1, 5, 2, 2, 5, pp]
        assert await wait(lambda py=py: py.status_of("go1") == MemberStatus.ALIVE)  # type: ignore[misc]
        gm = py.core.member("go1")
        assert gm is not None and gm.vsn == bytes([1, 5, 2, 2, 5, cur])
        assert gm.tags == ({"role": "db"} if cur == 2 else {"role": "db", "group": "g"})
        # the Go node's acks carry its Vivaldi coordinate (go-msgpack v2 floats), which we take
        assert await wait(lambda py=py: "go1" in py.core.coord_cache)  # type: ignore[misc]
        assert drops(py) == {}
    assert go.complaints() == []



async def test_largest_tags_both_ways(gonode: GoFactory, nodes: list[SerfAgent]) -> None:
    """Node metadata at memberlist's 512-byte limit (0xff + {"k": 505 chars}, the value a str16
    since Go writes no str8): a Go node's is accepted by us, ours by Go, in both encodings."""
    big = {"k": "x" * 505}
    py = await py_node(nodes, "py1", big)
    go = await gonode("go1", start=False, tags=big, join=[gossip(py)]).astart()
    assert await wait(lambda: py.status_of("go1") == MemberStatus.ALIVE)
    gm = py.core.member("go1")
    assert gm is not None and gm.tags == big
    assert (await go.await_member("py1", "alive", 30, tags=big))["tags"] == big
    assert drops(py) == {} and go.complaints() == []

# -- Serf's internal queries and relays across implementations ---------------------------------


async def test_name_conflicts_resolved_both_ways(gonode: GoFactory, nodes: list[SerfAgent]) -> None:
    """`_serf_conflict`: each side answers the other's query with its Member record (Go writes it with
    go-msgpack v2) and the newcomer with a taken name loses the vote and shuts down."""
    py1 = await py_node(nodes, "py1")
    go1 = await gonode("go1", start=False, join=[gossip(py1)]).astart()
    await gonode("go2", start=False, join=[go1.bind]).astart()
    assert await wait(lambda: py1.status_of("go2") == MemberStatus.ALIVE)
    # a Python newcomer named like a Go member: Go nodes (and py1) vote for the Go one
    dup = await py_node(nodes, "go2")
    assert await dup.join([go1.bind]) == 1
    assert await dup.wait_for(lambda: dup.is_shutdown, 30), dup.stats
    assert dup.stats["conflict.lost"] == 1
    # a Go newcomer named like a Python member: it asks, we (and go1, go2) answer for py1, it quits
    godup = await gonode("py1", start=False, join=[go1.bind]).astart()
    await asyncio.to_thread(godup.wait_log, "minority in name conflict resolution", 30)
    assert not py1.is_shutdown and py1.stats["conflict.seen"] >= 1
    m = py1.core.member("py1")
    assert m is not None and m.port == py1.local_member().port
    seen = await go1.await_member("py1", "alive", 10)
    assert seen["port"] == py1.local_member().port
    assert drops(py1, "name_conflict") == {}


async def test_query_acks_relayed_through_python_and_go(gonode: GoFactory, nodes: list[SerfAgent]) -> None:
    """Relayed acks: Go wraps its ack in a relay header (DestAddr.Port an int, int32 on the wire with
    go-msgpack v2 for ports above 32767) that a Python relay must unwrap, and Go relays ours."""
    py1 = await py_node(nodes, "py1")
    py2 = await py_node(nodes, "py2")
    go1 = await gonode("go1", start=False, join=[gossip(py1)]).astart()
    await gonode("go2", start=False, join=[go1.bind]).astart()
    assert await py2.join([go1.bind]) == 1
    names = {"py1", "py2", "go1", "go2"}
    assert await wait(lambda: {m.name for m in py1.members() if m.status == MemberStatus.ALIVE} == names)
    assert await wait(lambda: {m.name for m in py2.members() if m.status == MemberStatus.ALIVE} == names)
    py2.add_handler(lambda e: e.respond(b"from-py2") if isinstance(e, QueryEvent) else None)
    stream = py1.query("relayed", b"", request_ack=True, relay_factor=3, timeout=4.0)
    got = {i.from_: i.payload async for i in stream}
    assert got == {"py2": b"from-py2"} and sorted(stream.acks) == sorted(names)
    # py2 forwarded the relay frames Go sent it (one per Go ack) without dropping any
    assert drops(py1) == {} and drops(py2) == {}
    assert go1.complaints() == []


async def test_user_events_and_filtered_queries_reach_go(gonode: GoFactory, nodes: list[SerfAgent]) -> None:
    """Our user events and queries, with node and tag filters, as a v0.10.2 node decodes them."""
    py1 = await py_node(nodes, "py1", {"role": "web"})
    go1 = await gonode("go1", start=False, tags={"role": "db"}, join=[gossip(py1)]).astart()
    go2 = await gonode("go2", start=False, tags={"role": "cache"}, join=[gossip(py1)]).astart()
    assert await wait(lambda: py1.status_of("go1") == py1.status_of("go2") == MemberStatus.ALIVE)
    await py1.user_event("deploy", b"v" * 450, coalesce=False)  # near the 512-byte limit, encoded
    await py1.user_event("deploy-cc", b"x", coalesce=True)
    stream = py1.query("only-db", b"q", request_ack=True, filter_tags={"role": "d.*"}, timeout=3.0)
    await stream.collect()
    assert stream.acks == ["go1"]
    stream = py1.query("only-go2", b"q", request_ack=True, filter_nodes=["go2"], timeout=3.0)
    await stream.collect()
    assert stream.acks == ["go2"]
    for go in (go1, go2):
        await asyncio.to_thread(go.wait_log, "[EVENT] user-event: deploy-cc", 20)
        assert "[EVENT] user-event: deploy\n" in go.log_text()
    await asyncio.to_thread(go1.wait_log, "[EVENT] query: only-db", 20)
    await asyncio.to_thread(go2.wait_log, "[EVENT] query: only-go2", 20)
    assert "[EVENT] query: only-go2" not in go1.log_text() and "[EVENT] query: only-db" not in go2.log_text()
    assert go1.complaints() == [] and go2.complaints() == [] and drops(py1) == {}


# -- restarts --------------------------------------------------------------------------------------


async def test_restarts_on_the_same_address_rejoin_both_ways(gonode: GoFactory, nodes: list[SerfAgent]) -> None:
    """A node killed and restarted on its address starts over at incarnation 0 and must refute the
    `dead` the pool still holds about it: Go refutes ours (in its push/pull reply), we refute Go's."""
    port = free_port()
    obs = await py_node(nodes, "obs")
    go1 = await gonode("go1", start=False, join=[gossip(obs)]).astart()

    async def start_py(v: str) -> SerfAgent:
        cfg = SerfConfig(name="py1", tags={"v": v}, memberlist=Config.lan(bind_addr="127.0.0.1", bind_port=port))
        agent = SerfAgent(cfg)
        nodes.append(agent)
        await agent.start()
        assert await agent.join([go1.bind]) == 1
        return agent

    first = await start_py("1")
    await go1.await_member("py1", "alive", 30, tags={"v": "1"})
    await first.shutdown()  # no leave
    await go1.await_member("py1", "failed", 60)
    await start_py("2")
    await go1.await_member("py1", "alive", 30, tags={"v": "2"})
    # the Go side: SIGKILL, then a new process on the same address
    go2 = await gonode("go2", start=False, tags={"v": "1"}, join=[gossip(obs)]).astart()
    assert await wait(lambda: obs.status_of("go2") == MemberStatus.ALIVE)
    go2.kill()
    assert await wait(lambda: obs.status_of("go2") == MemberStatus.FAILED, 60)
    await gonode("go2", start=False, tags={"v": "2"}, port=go2.port, join=[gossip(obs)]).astart()

    def back() -> bool:
        m = obs.core.member("go2")
        return m is not None and m.status == MemberStatus.ALIVE and m.tags == {"v": "2"}

    assert await wait(back)
    assert drops(obs) == {}
    assert go1.complaints("Refuting a dead message (from: py1)") == []


async def test_go_member_with_a_non_utf8_name_is_refused_alone(gonode: GoFactory, nodes: list[SerfAgent]) -> None:
    """Go strings are bytes: a Go node may carry a name that is not UTF-8 (gonode takes it from
    argv).  We refuse that member, and only it: Serf's push/pull state from any node that knows it
    (its name is a StatusLTimes key) still merges, so clocks catch up.  Refusing the whole state
    left a restarted node's Lamport clock behind the status time the Go nodes hold for its name,
    and its graceful leave was taken as a failure (`failed`, not `left`)."""
    go1 = await gonode("go1", start=False).astart()
    bad = await gonode(os.fsdecode(b"bad-\xff\xfe"), start=False, join=[go1.bind]).astart()
    await go1.await_member(bad.json_name, "alive", 30)
    # and one whose tags are not text: refused as a member (its tags are all a registry reads)
    badtag = await gonode("badtag", start=False, tags={"group": os.fsdecode(b"\xff")}, join=[go1.bind]).astart()
    await go1.await_member(badtag.name, "alive", 30)
    port = free_port()
    agents: list[SerfAgent] = []
    for _restart in range(2):  # the same node, then the same name again (a redeployed service)
        cfg = SerfConfig(name="py1", memberlist=Config.lan(bind_addr="127.0.0.1", bind_port=port))
        py = SerfAgent(cfg)
        nodes.append(py)
        await py.start()
        assert await py.join([go1.bind]) == 1
        await go1.await_member("py1", "alive", 30)
        assert await wait(lambda py=py: py.status_of("go1") == MemberStatus.ALIVE)  # type: ignore[misc]
        assert {m.name for m in py.members()} == {"go1", "py1"}  # the bad name and tags are not carried
        assert await py.leave(15.0)
        await py.shutdown()
        assert await asyncio.to_thread(settled, go1, "py1") == "left"
        agents.append(py)
    for py in agents:
        # the bad rows were refused one by one (memberlist's and Serf's push/pull rows; whole
        # messages only when they are about the bad node, e.g. its join intent)
        assert py.stats["serf.drop.bad_utf8_entry"] >= 1 and py.stats["drop.bad_meta"] >= 1
        assert drops(py, "bad_utf8", "bad_utf8_entry", "bad_meta") == {}
    assert go1.complaints() == []



def test_registry_process_serves_with_non_utf8_go_members_in_the_pool(
    gonode: GoFactory, ps: list[Proc], tmp_path: Path
) -> None:
    """Issue 11's pool-wide wedge with the bytes carried by real Go nodes: a registry joining a pool
    that holds a non-UTF-8 name and non-UTF-8 tags keeps serving, and services still join through it."""
    go1 = gonode("go1", tags=web_tags(9001))
    gonode(os.fsdecode(b"bad-\xff"), tags=web_tags(9002), join=[go1.bind])
    gonode("badtag", tags={"group": "web", "addr": os.fsdecode(b"\xfe")}, join=[go1.bind])
    r1 = Registry(ps, tmp_path, "r1", [go1.bind], profile="lan").wait_ready()
    wait_for(lambda: set(services(r1, "web")) == {"go1"}, 30, what="go1 alone in r1's web ring")
    assert matched(r1, "web", 8) == {"go1"}
    with Register("svc-1", "127.0.0.1:0", "", r1.gossip, "svc", "127.0.0.1:7001") as reg:
        go1.wait_member("svc-1", "alive", 30)
        wait_for(lambda: set(services(r1, "svc")) == {"svc-1"}, 30, what="svc-1 in r1's ring")
        assert {m.name for m in reg.members()} >= {"go1", "r1", "svc-1"}
    go1.wait_member("svc-1", "left", 30)
    go2 = gonode("go2", tags=web_tags(9003), join=[r1.gossip])  # a Go node joins through the registry
    go2.wait_member("r1", "alive", 30)
    wait_for(lambda: set(services(r1, "web")) == {"go1", "go2"}, 30, what="go2 in r1's ring")
    argv = registry_cmd("members", "-rpc", r1.rpc)
    cli = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=60, env=env())
    assert cli.returncode == 0 and "go2" in cli.stdout and "bad" not in cli.stdout, cli.stdout + cli.stderr
    assert r1.proc.alive()

# -- UDP lost, TCP fine: memberlist's fallback probes across implementations -----------------------


@pytest.mark.chaos
def test_udp_blocked_tcp_fallback_pings_keep_both_alive(gonode: GoFactory, ps: list[Proc], tmp_path: Path) -> None:
    """A registry process and a gonode in two network namespaces; then every UDP datagram between
    them is dropped.  Each side's probes fail over UDP and fall back to a ping over TCP (both
    announce protocol max 5, so each expects the other to answer one): nobody is declared failed.
    Without a working TCP ping either side would fail the other within a few seconds."""
    from tests.chaos.netlab import NetLab, sweep_stale
    from tests.chaos.pool import RegistryProc

    sweep_stale()
    lab = NetLab()
    go: GoNode | None = None
    try:
        lab.start()
        gn, rn = lab.add("g0"), lab.add("r0")
        go = gonode("go1", start=False, tags=web_tags(9001), host=gn.ip, wrap=gn.argv())
        go.start()
        reg = RegistryProc(ps, tmp_path, rn, "lan")
        reg.seeds = [go.bind]
        reg.start()
        wait_for(reg.started, 60, what="r0 started")
        go.wait_member("r0", "alive", 30)
        wait_for(lambda: {s.id for s in reg.client().members("web")} == {"go1"}, 30, what="go1 in r0's ring")
        gn.iptables([f"-A CHAOS -p udp -s {rn.ip} -j DROP"])
        rn.iptables([f"-A CHAOS -p udp -s {gn.ip} -j DROP"])
        end = time.monotonic() + 20
        while time.monotonic() < end:
            seen = go.member("r0")
            assert seen is not None and seen["status"] == "alive", seen
            assert {s.id for s in reg.client().members("web")} == {"go1"}
            time.sleep(0.5)
        assert lab.drops("g0") > 0 and lab.drops("r0") > 0  # the fault really bit, both ways
        assert "over TCP but UDP probes failed" in go.log_text()  # Go's TCP ping to us was answered
        assert go.complaints("over TCP but UDP probes failed") == []
    finally:
        if go is not None:
            go.kill()
        for p in ps:
            p.signal(signal.SIGKILL)
        lab.close()
