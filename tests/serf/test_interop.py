"""Python SerfAgent against Debian's real `serf agent` processes on loopback."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from registry.memberlist.config import Config
from registry.memberlist.crypto import Keyring
from registry.serf.agent import JoinError, SerfAgent
from registry.serf.config import SerfConfig
from registry.serf.events import QueryEvent, UserEvent
from registry.serf.member import Member, MemberStatus
from tests.serf.serf_live import py_node, wait
from tests.serfagent import SerfAgent as GoAgent

pytestmark = [pytest.mark.serf, pytest.mark.timeout(120)]

KEY1 = base64.b64encode(bytes(range(32))).decode()
KEY2 = base64.b64encode(bytes(range(50, 66))).decode()


def must(m: Member | None) -> Member:
    assert m is not None
    return m


def must_kr(a: SerfAgent) -> Keyring:
    kr = a.core.keyring
    assert kr is not None
    return kr


async def test_members_tags_update_and_leave(serf_agent: Any, nodes: list[SerfAgent]) -> None:
    go: GoAgent = serf_agent(name="go1", tags={"role": "db"})
    py = await py_node(nodes, "py1", {"role": "web", "zone": "a"})
    assert await py.join([go.bind]) == 1
    m = await go.await_member("py1", "alive", timeout=20)
    assert m["tags"] == {"role": "web", "zone": "a"}
    assert m["protocol"]["version"] == 5 if "protocol" in m else True
    assert await wait(lambda: py.status_of("go1") == MemberStatus.ALIVE, 20)
    assert must(py.core.member("go1")).tags == {"role": "db"}
    # our acks carry a Vivaldi coordinate, so `serf rtt` can estimate the distance to us
    loop = asyncio.get_running_loop()
    end = loop.time() + 20
    rtt = ""
    while loop.time() < end and "Estimated" not in rtt:
        rtt = await go.arun("rtt", "py1", check=False)
        await asyncio.sleep(0.3)
    assert "Estimated py1 <-> go1 rtt" in rtt
    await py.set_tags({"role": "web", "zone": "b"})
    loop = asyncio.get_running_loop()
    end = loop.time() + 20
    while loop.time() < end:
        seen = await go.amember("py1")
        if seen and seen["tags"].get("zone") == "b":
            break
        await asyncio.sleep(0.2)
    assert seen and seen["tags"] == {"role": "web", "zone": "b"}
    assert await py.leave(15.0)
    m = await go.await_member("py1", "left", timeout=20)
    assert m["status"] == "left"


async def test_killed_python_node_shows_failed(serf_agent: Any, nodes: list[SerfAgent]) -> None:
    go: GoAgent = serf_agent(name="go1")
    py = await py_node(nodes, "py-dead")
    await py.join([go.bind])
    await go.await_member("py-dead", "alive", timeout=20)
    await py.shutdown()  # no leave: sockets closed, the node vanishes
    m = await go.await_member("py-dead", "failed", timeout=40)
    assert m["status"] == "failed"


async def test_python_sees_go_leave_and_failure(serf_agent: Any, nodes: list[SerfAgent]) -> None:
    go1: GoAgent = serf_agent(name="go1")
    go2: GoAgent = serf_agent(name="go2")
    py = await py_node(nodes, "py1")
    await py.join([go1.bind, go2.bind])
    assert await wait(
        lambda: (
            py.status_of("go1") == MemberStatus.ALIVE
            and py.status_of("go2") == MemberStatus.ALIVE
        ),
        20,
    )
    await asyncio.get_running_loop().run_in_executor(None, go1.leave)
    assert await wait(lambda: py.status_of("go1") == MemberStatus.LEFT, 30)
    go2.kill()
    assert await wait(lambda: py.status_of("go2") == MemberStatus.FAILED, 40)


async def test_user_events_both_ways(serf_agent: Any, nodes: list[SerfAgent], tmp_path: Any) -> None:
    out = tmp_path / "events.txt"
    script = tmp_path / "handler.sh"
    script.write_text(
        f'#!/bin/sh\necho "$SERF_EVENT $SERF_USER_EVENT $(cat)" >> {out}\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    go: GoAgent = serf_agent(name="go1", event_handlers=[f"user={script}"])
    py = await py_node(nodes, "py1")
    got: list[UserEvent] = []
    py.add_handler(lambda e: got.append(e) if isinstance(e, UserEvent) else None)
    await py.join([go.bind])
    await go.await_member("py1", "alive", timeout=20)
    await go.arun("event", "deploy", "v1-payload")
    assert await wait(lambda: any(e.name == "deploy" for e in got), 20)
    ev = next(e for e in got if e.name == "deploy")
    # `serf event` sets CC (coalesce) by default, but an event sent right after a join can reach us first
    # through the join's push/pull, whose event buffer carries no CC (Go's MergeRemoteState delivers those
    # with CC false too): seen once in CI, so only the payload is checked here (CC round trips in
    # tests/serf/test_messages.py; the real agent's bytes in tests/memberlist/test_captures.py)
    assert ev.payload == b"v1-payload"
    await py.user_event("from-py", b"hello-go", coalesce=False)
    assert await wait(
        lambda: out.exists() and "user from-py hello-go" in out.read_text(), 20
    )


async def test_queries_both_ways(serf_agent: Any, nodes: list[SerfAgent], tmp_path: Any) -> None:
    script = tmp_path / "answer.sh"
    script.write_text('#!/bin/sh\necho "go-answer:$(cat)"\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    go: GoAgent = serf_agent(
        name="go1", tags={"role": "db"}, event_handlers=[f"query:ask-go={script}"]
    )
    py = await py_node(nodes, "py1", {"role": "web"})

    def answer(e: Any) -> None:
        if isinstance(e, QueryEvent) and e.name == "who":
            e.respond(b"py-answer:" + e.payload)

    py.add_handler(answer)
    await py.join([go.bind])
    await go.await_member("py1", "alive", timeout=20)
    text = await go.arun(
        "query", "-format=json", "-timeout=5s", "who", "hi", timeout=30
    )
    data = json.loads(text)
    assert "py1" in data["Acks"]
    assert data["Responses"]["py1"] == "py-answer:hi"
    # the Go agent has no query handler script: it acks, and responds with nothing
    stream = py.query("ping-go", b"x", request_ack=True, timeout=3.0)
    await stream.collect()
    assert "go1" in stream.acks
    # a query the Go agent answers through its handler script
    stream = py.query("ask-go", b"q1", timeout=4.0)
    got = {item.from_: item.payload async for item in stream}
    assert got.get("go1", b"").strip() == b"go-answer:q1"
    # tag filter that only the Go node passes
    stream = py.query(
        "only-db", b"", request_ack=True, filter_tags={"role": "d.*"}, timeout=3.0
    )
    await stream.collect()
    assert stream.acks == ["go1"]


async def test_encrypted_cluster_and_key_rotation(serf_agent: Any, nodes: list[SerfAgent], tmp_path: Any) -> None:
    go1: GoAgent = serf_agent(name="go1", encrypt=KEY1)
    go2: GoAgent = serf_agent(name="go2", encrypt=KEY1)
    kr = str(tmp_path / "py1.keyring")
    py = await py_node(nodes, "py1", encrypt_key=KEY1, keyring_file=kr)
    await py.join([go1.bind])
    await go2.arun("join", go1.bind)
    await go1.await_member("py1", "alive", timeout=20)
    await go2.await_member("py1", "alive", timeout=20)
    # a node without the key, and one with a wrong key, stay out
    nokey = await py_node(nodes, "nokey")
    with pytest.raises(JoinError):
        await nokey.join([go1.bind])
    wrong = await py_node(nodes, "wrong", encrypt_key=KEY2)
    with pytest.raises(JoinError):
        await wrong.join([go1.bind])
    assert await go1.amember("nokey") is None and await go1.amember("wrong") is None
    # `serf keys` run against a Go agent manages the Python node too
    out = await go1.arun("keys", "-list", timeout=30)
    assert KEY1 in out and "[3/3]" in out
    await go1.arun("keys", "-install", KEY2, timeout=30)
    assert set(must_kr(py).keys) == {base64.b64decode(KEY1), base64.b64decode(KEY2)}
    # a Python node rotates the whole mixed cluster
    res = await py.use_key(KEY2)
    assert res.ok, res.messages
    res = await py.remove_key(KEY1)
    assert res.ok, res.messages
    res = await py.list_keys()
    assert res.keys == {KEY2: 3} and res.primary_keys == {KEY2: 3}
    assert json.loads(Path(kr).read_text()) == [KEY2]
    # and back again, driven by `serf keys` on the Go side
    for args in (["-install", KEY1], ["-use", KEY1], ["-remove", KEY2]):
        out = await go2.arun("keys", *args, timeout=30)
        assert "[3/3]" in out or "Successfully" in out, out
    assert must_kr(py).keys == [base64.b64decode(KEY1)]
    assert json.loads(Path(kr).read_text()) == [KEY1]
    for _ in range(10):
        ms = await go1.amembers()
        assert all(m["status"] == "alive" for m in ms), ms
        await asyncio.sleep(0.3)
    assert all(
        m.status == MemberStatus.ALIVE
        for m in py.members()
        if m.name in ("go1", "go2", "py1")
    )


@pytest.mark.parametrize("proto", [2, 3, 4])
async def test_older_serf_protocols(serf_agent: Any, nodes: list[SerfAgent], proto: int) -> None:
    go: GoAgent = serf_agent(
        name="go1", tags={"role": "db"}, extra_args=[f"-protocol={proto}"]
    )
    py = await py_node(nodes, "py1", {"role": "web", "x": "y"}, protocol_version=proto)
    await py.join([go.bind])
    m = await go.await_member("py1", "alive", timeout=20)
    # protocol 2 carries only the role, as the raw Meta
    assert m["tags"] == ({"role": "web"} if proto == 2 else {"role": "web", "x": "y"})
    assert m["protocol"]["version"] == proto
    assert must(py.core.member("go1")).tags == {"role": "db"}


async def test_relayed_query_responses(serf_agent: Any, nodes: list[SerfAgent]) -> None:
    go1: GoAgent = serf_agent(name="go1")
    go2: GoAgent = serf_agent(name="go2")
    py = await py_node(nodes, "py1")
    py.add_handler(lambda e: e.respond(b"py") if isinstance(e, QueryEvent) else None)
    await py.join([go1.bind, go2.bind])
    await go1.await_member("py1", "alive", timeout=20)
    await go1.await_member("go2", "alive", timeout=20)
    assert await wait(lambda: py.status_of("go2") == MemberStatus.ALIVE, 20)
    stream = py.query("relayed", b"", request_ack=True, relay_factor=2, timeout=3.0)
    got = {i.from_: i.payload async for i in stream}
    assert got == {"py1": b"py"} and sorted(stream.acks) == ["go1", "go2", "py1"]
    text = await go1.arun(
        "query",
        "-format=json",
        "-relay-factor=2",
        "-timeout=3s",
        "relayed",
        "x",
        timeout=30,
    )
    data = json.loads(text)
    assert data["Responses"].get("py1") == "py" and sorted(data["Acks"]) == [
        "go1",
        "go2",
        "py1",
    ]
    assert py.stats["query.relayed"] >= 1


KILL_SCRIPT = """
import asyncio, sys
from registry.memberlist.config import Config
from registry.serf.agent import SerfAgent
from registry.serf.config import SerfConfig

async def main():
    a = SerfAgent(SerfConfig(name="py-proc", memberlist=Config.lan(bind_addr="127.0.0.1", bind_port=0)))
    await a.start()
    await a.join([sys.argv[1]])
    print("ready", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_killed_python_process_shows_failed(serf_agent: Any) -> None:
    import sys

    go: GoAgent = serf_agent(name="go1")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        KILL_SCRIPT,
        go.bind,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": root},
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert line.strip() == b"ready"
        await go.await_member("py-proc", "alive", timeout=20)
        proc.kill()
        await proc.wait()
        m = await go.await_member("py-proc", "failed", timeout=40)
        assert m["status"] == "failed"
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_restart_after_kill_and_after_leave_rejoins(serf_agent: Any, nodes: list[SerfAgent]) -> None:
    from tests.serfagent import free_port

    go: GoAgent = serf_agent(name="go1")
    port = free_port()

    async def start(v: str) -> SerfAgent:
        cfg = SerfConfig(
            name="py1",
            tags={"v": v},
            memberlist=Config.lan(bind_addr="127.0.0.1", bind_port=port),
        )
        a = SerfAgent(cfg)
        await a.start()
        nodes.append(a)
        await a.join([go.bind])
        return a

    first = await start("1")
    await go.await_member("py1", "alive", timeout=20)
    await first.shutdown()
    await go.await_member("py1", "failed", timeout=40)
    second = await start(
        "2"
    )  # stale "dead" state about us comes back in the join reply: refuted
    m = await go.await_member("py1", "alive", timeout=20)
    assert m["tags"] == {"v": "2"}
    assert await second.leave(15.0)
    await go.await_member("py1", "left", timeout=20)
    await second.shutdown()
    await start("3")
    loop = asyncio.get_running_loop()
    end = loop.time() + 20
    while loop.time() < end:
        m = await go.amember("py1") or {}
        if m.get("status") == "alive" and m.get("tags") == {"v": "3"}:
            break
        await asyncio.sleep(0.2)
    assert m.get("status") == "alive" and m.get("tags") == {"v": "3"}


async def test_force_leave_of_failed_go_node(serf_agent: Any, nodes: list[SerfAgent]) -> None:
    go1: GoAgent = serf_agent(name="go1")
    go2: GoAgent = serf_agent(name="go2")
    py = await py_node(nodes, "py1")
    await py.join([go1.bind, go2.bind])
    assert await wait(lambda: py.status_of("go2") == MemberStatus.ALIVE, 20)
    go2.kill()
    assert await wait(lambda: py.status_of("go2") == MemberStatus.FAILED, 40)
    await go1.arun("force-leave", "go2")
    assert await wait(lambda: py.status_of("go2") == MemberStatus.LEFT, 20)
