"""Unit tests of the memberlist state machine: incarnations, refutation, leave, reclaim, dispatch."""

from __future__ import annotations

import random

from registry.memberlist.codec import WireCodec, encode
from registry.memberlist.config import Config
from registry.memberlist.core import Memberlist
from registry.memberlist.messages import (
    Ack,
    Alive,
    Dead,
    Message,
    Ping,
    PushNodeState,
    PushPull,
    Suspect,
)
from registry.memberlist.types import (
    DEFAULT_VSN,
    Address,
    Node,
    NodeState,
    OpenStream,
    SendPacket,
    ip_to_bytes,
)
from tests.memberlist.memberlist_sim import Recorder, addr, make_cluster

SRC = Address("10.9.9.9", 7946)


def solo(name: str = "me", **kw: object) -> tuple[Memberlist, Recorder]:
    rec = Recorder()
    m = Memberlist(Config.fast(name=name, strict=True, **kw), Address("10.0.0.1", 7946), rec, rng=random.Random(1))
    return m, rec


def feed(m: Memberlist, *msgs: object, now: float = 0.0, src: Address = SRC) -> None:
    for msg in msgs:
        m.receive_packet(m.codec.encode_packet(encode(msg)), src, now)  # type: ignore[arg-type]


def alive(name: str, inc: int, host: str = "10.0.0.2", meta: bytes = b"") -> Alive:
    return Alive(inc, name, ip_to_bytes(host), 7946, meta, DEFAULT_VSN)


def packets(m: Memberlist) -> list[tuple[Address, list[Message]]]:
    out: list[tuple[Address, list[Message]]] = []
    codec = WireCodec()
    for o in m.drain():
        if isinstance(o, SendPacket):
            msgs, _ = codec.decode_packet(o.data)
            out.append((o.addr, list(msgs)))
    return out


def test_alive_incarnation_rules() -> None:
    m, rec = solo()
    feed(m, alive("x", 3))
    assert m.get("x").state == NodeState.ALIVE and rec.joins == ["me", "x"]  # type: ignore[union-attr]
    feed(m, alive("x", 3, meta=b"new"))  # same incarnation: ignored
    assert m.get("x").meta == b""  # type: ignore[union-attr]
    feed(m, alive("x", 2, meta=b"old"))
    assert m.get("x").incarnation == 3  # type: ignore[union-attr]
    feed(m, alive("x", 4, meta=b"new"))
    assert m.get("x").meta == b"new" and rec.updates == ["x"]  # type: ignore[union-attr]


def test_suspect_dead_left_rules() -> None:
    m, rec = solo()
    feed(m, alive("x", 3), alive("y", 1))
    feed(m, Suspect(2, "x", "z"))  # stale
    assert m.get("x").state == NodeState.ALIVE  # type: ignore[union-attr]
    feed(m, Suspect(3, "x", "z"))
    assert m.get("x").state == NodeState.SUSPECT  # type: ignore[union-attr]
    feed(m, alive("x", 4))  # refuted by the node itself
    assert m.get("x").state == NodeState.ALIVE  # type: ignore[union-attr]
    feed(m, Dead(4, "x", "z"))
    assert m.get("x").state == NodeState.DEAD  # type: ignore[union-attr]
    feed(m, Dead(1, "y", "y"))
    assert m.get("y").state == NodeState.LEFT  # type: ignore[union-attr]
    assert rec.leaves == [("x", NodeState.DEAD), ("y", NodeState.LEFT)]
    feed(m, alive("x", 4))
    assert m.get("x").state == NodeState.DEAD  # type: ignore[union-attr]
    feed(m, alive("x", 5))
    assert m.get("x").state == NodeState.ALIVE and rec.joins[-1] == "x"  # type: ignore[union-attr]


def test_suspicion_timeout_declares_dead() -> None:
    # a long probe interval stretches the suspicion timer so probes of the fake peers do not matter
    m, rec = solo(probe_interval=1000.0, push_pull_interval=0)
    feed(m, alive("x", 1), alive("y", 1), alive("z", 1), now=1.0)
    feed(m, Suspect(1, "x", "y"), now=1.0)
    # n=4: log10(4) < 1 -> min = 3 x 1000 s, max = 6 x min; k = 1 expected confirmation
    m.tick(1.0 + 17999.0)
    assert m.get("x").state == NodeState.SUSPECT  # type: ignore[union-attr]
    feed(m, Suspect(1, "x", "y"), now=5000.0)  # the same accuser again: no confirmation
    m.tick(5000.0)
    assert m.get("x").state == NodeState.SUSPECT  # type: ignore[union-attr]
    feed(m, Suspect(1, "x", "z"), now=5000.0)  # an independent one shrinks the timer to min: already due
    m.tick(5000.0)
    assert m.get("x").state == NodeState.DEAD  # type: ignore[union-attr]
    assert ("x", NodeState.DEAD) in rec.leaves


def test_refutes_suspect_and_dead_about_self() -> None:
    m, _ = solo()
    inc = m.incarnation
    feed(m, Suspect(inc, "me", "x"))
    assert m.incarnation == inc + 1 and m.local_node.state == NodeState.ALIVE
    assert m.health_score == 1
    feed(m, Dead(9, "me", "x"))
    assert m.incarnation == 10 and m.local_node.state == NodeState.ALIVE
    feed(m, alive("me", 10, host="10.0.0.1", meta=b"other"))  # same incarnation, other meta: refute
    assert m.incarnation == 11


def test_refutes_stale_records_in_join_reply() -> None:
    """After a restart the cluster remembers us dead with a higher incarnation; the join reply says so."""
    c = make_cluster(4, Config.fast(), seed=2)
    names = {f"n{i}" for i in range(4)}
    assert c.net.run_until_true(lambda: c.alive_views(names), timeout=20)
    old = c.nodes[3]
    for _ in range(3):
        old.update_meta(c.net.now, b"m")  # bump its incarnation
    c.net.run_for(2)
    c.net.stop(c.addrs[3])
    assert c.net.run_until_true(lambda: c.nodes[0].get("n3").state == NodeState.DEAD, timeout=30)  # type: ignore[union-attr]
    remembered = c.nodes[0].get("n3").incarnation  # type: ignore[union-attr]
    assert remembered >= 4
    c.net.remove(c.addrs[3])
    fresh = Memberlist(Config.fast(name="n3"), c.addrs[3], Recorder(), rng=random.Random(99), now=c.net.now)
    assert fresh.incarnation == 1
    c.net.add(fresh, c.addrs[3])
    fresh.join([c.addrs[0]], c.net.now)
    c.net.kick()
    assert c.net.run_until_true(
        lambda: all(m.get("n3") is not None and m.get("n3").state == NodeState.ALIVE for m in c.nodes[:3]),  # type: ignore[union-attr]
        timeout=10,
    )
    assert fresh.incarnation > remembered


def test_leave_marks_left_everywhere() -> None:
    c = make_cluster(5, Config.fast(), seed=4)
    names = {f"n{i}" for i in range(5)}
    assert c.net.run_until_true(lambda: c.alive_views(names), timeout=20)
    leaver = c.nodes[2]
    leaver.leave(c.net.now)
    c.net.kick()
    assert not leaver.leave_done()
    assert c.net.run_until_true(leaver.leave_done, timeout=5, step=0.01)
    assert c.net.run_until_true(
        lambda: all(getattr(c.nodes[i].get("n2"), "state", None) == NodeState.LEFT for i in (0, 1, 3, 4)),
        timeout=5,
    )
    assert all(("n2", NodeState.LEFT) in c.delegates[i].leaves for i in (0, 1, 3, 4))


def test_leave_alone_is_done_at_once() -> None:
    m, _ = solo()
    m.leave(0.0)
    assert m.leave_done() and m.local_node.state == NodeState.LEFT


def test_reclaim_dead_name_and_conflict() -> None:
    m, rec = solo(dead_node_reclaim_time=5.0)
    feed(m, alive("x", 1, host="10.0.0.2"), now=0.0)
    feed(m, alive("x", 2, host="10.0.0.3"), now=1.0)  # alive elsewhere: conflict
    assert m.get("x").addr == "10.0.0.2" and len(rec.conflicts) == 1  # type: ignore[union-attr]
    feed(m, Dead(1, "x", "y"), now=2.0)
    feed(m, alive("x", 1, host="10.0.0.3"), now=4.0)  # dead, but not long enough
    assert m.get("x").state == NodeState.DEAD and len(rec.conflicts) == 2  # type: ignore[union-attr]
    feed(m, alive("x", 1, host="10.0.0.3"), now=8.0)  # restarted node reclaims its name
    x = m.get("x")
    assert x is not None and x.state == NodeState.ALIVE and x.addr == "10.0.0.3"


def test_ping_answered_to_source_addr_only_if_ours() -> None:
    m, _ = solo()
    m.drain()
    feed(m, Ping(7, "other"))
    assert packets(m) == [] and m.stats["drop.ping_wrong_node"] == 1
    feed(m, Ping(8, "me", ip_to_bytes("10.1.1.1"), 9000, "x"))
    ((dest, msgs),) = packets(m)
    assert dest == Address("10.1.1.1", 9000) and msgs[0] == Ack(8, None)
    feed(m, Ping(9, "", source_node="no-address-given"))
    ((dest, msgs),) = packets(m)
    assert dest == SRC and msgs[0] == Ack(9, None)
    # an ack bigger than its ping (18 > 15 bytes) is not sent to an unverified address
    feed(m, Ping(10, ""))
    assert packets(m) == [] and m.stats["drop.reply_budget"] == 1


def test_tcp_ping_and_push_pull_replies() -> None:
    m, _ = solo()
    peer = WireCodec()
    reply = m.receive_stream(peer.encode_stream(encode(Ping(3, "me")), dialer=True), SRC, 0.0)
    assert reply is not None and peer.decode_stream(reply, from_dialer=False) == Ack(3, None)
    pp = PushPull(False, [PushNodeState("x", ip_to_bytes("10.0.0.5"), 7946, b"", 2, 0, DEFAULT_VSN)], b"")
    reply = m.receive_stream(peer.encode_stream(encode(pp), dialer=True), SRC, 0.0)
    got = peer.decode_stream(reply, from_dialer=False)  # type: ignore[arg-type]
    assert isinstance(got, PushPull) and [n.name for n in got.nodes] == ["me"]
    assert m.get("x") is not None
    bad = m.receive_stream(b"\xff\x00garbage", SRC, 0.0)
    assert bad is not None and m.stats["drop.unknown_type"] == 1  # answered with an error, and named


def test_incompatible_push_pull_refused() -> None:
    m, _ = solo()
    peer = WireCodec()
    bad_vsn = bytes([1, 5, 9, 2, 5, 5])  # pcur 9 outside everyone's range
    pp = PushPull(True, [PushNodeState("x", ip_to_bytes("10.0.0.5"), 7946, b"", 2, 0, bad_vsn)], b"")
    m.receive_stream(peer.encode_stream(encode(pp), dialer=True), SRC, 0.0)
    assert m.get("x") is None and m.stats["drop.incompatible_version"] == 1


def test_garbage_packets_counted_not_raised() -> None:
    m, _ = solo()
    for junk in (b"", b"\x07\x05\x00", b"\x04\x81", b"\xfe" * 10, b"\x0c\x00\x00\x00\x00\x02"):
        m.receive_packet(junk, SRC, 0.0)
    drops = {k: v for k, v in m.stats.items() if k.startswith("drop.")}
    assert drops == {"drop.truncated": 2, "drop.malformed": 1, "drop.unknown_type": 1, "drop.bad_crc": 1}


def test_join_stream_and_user_messages() -> None:
    c = make_cluster(3, Config.fast(), seed=8)
    names = {"n0", "n1", "n2"}
    assert c.net.run_until_true(lambda: c.alive_views(names), timeout=20)
    assert c.nodes[1].stats["push_pull.ok"] >= 1
    c.nodes[0].send_best_effort(c.addrs[1], b"hello", c.net.now)
    c.nodes[0].send_reliable(c.addrs[2], b"reliable", c.net.now)
    c.net.kick()
    c.net.run_for(0.5)
    assert c.delegates[1].msgs == [b"hello"] and c.delegates[2].msgs == [b"reliable"]
    c.nodes[2].update_meta(c.net.now, b"tags")
    c.net.kick()
    assert c.net.run_until_true(lambda: c.nodes[0].get("n2").meta == b"tags", timeout=5)  # type: ignore[union-attr]
    assert "n2" in c.delegates[0].updates


def test_join_unreachable_fails() -> None:
    c = make_cluster(1, Config.fast(), seed=8, join=False)
    (sid,) = c.nodes[0].join([addr(50)], c.net.now)
    outs = c.nodes[0].drain()
    assert any(isinstance(o, OpenStream) and o.stream_id == sid for o in outs)
    assert c.nodes[0].stream_result(sid, None, 1.0) is False


def test_indirect_probe_through_helper_and_nacks() -> None:
    c = make_cluster(4, Config.fast(), seed=6)
    names = {f"n{i}" for i in range(4)}
    assert c.net.run_until_true(lambda: c.alive_views(names), timeout=20)
    # n0 cannot reach n1 directly (nor by TCP), but n2 and n3 reach both
    c.net.partition({c.addrs[0]}, {c.addrs[1]})
    c.net.run_for(20.0)
    assert c.alive_views(names)
    assert c.nodes[0].stats["probe.indirect"] > 0 and c.nodes[0].stats["probe.failed"] == 0
    # n1 silent: helpers answer with nacks, so n0 is not penalised for a failure that is not its own
    c.net.heal()
    c.net.run_for(3.0)
    c.net.stop(c.addrs[1])
    assert c.net.run_until_true(lambda: c.nodes[0].get("n1").state == NodeState.DEAD, timeout=20)  # type: ignore[union-attr]
    assert c.nodes[0].stats["probe.failed"] >= 1
    assert c.nodes[0].health_score == 0


def test_missing_nacks_raise_health_score() -> None:
    c = make_cluster(4, Config.fast(), seed=6)
    names = {f"n{i}" for i in range(4)}
    assert c.net.run_until_true(lambda: c.alive_views(names), timeout=20)
    c.net.partition({c.addrs[0]}, {c.addrs[1], c.addrs[2], c.addrs[3]})  # n0 is the broken one
    c.net.run_for(0.8)
    assert c.nodes[0].health_score >= 1


def test_delegate_broadcasts_are_piggybacked() -> None:
    c = make_cluster(3, Config.fast(), seed=12)
    names = {"n0", "n1", "n2"}
    assert c.net.run_until_true(lambda: c.alive_views(names), timeout=20)
    pending = [b"serf-1", b"serf-2"]

    def give(overhead: int, limit: int) -> list[bytes]:
        out = [m for m in pending if len(m) + overhead <= limit]
        pending.clear()
        return out

    c.delegates[0].get_broadcasts = give  # type: ignore[method-assign]
    assert c.net.run_until_true(lambda: b"serf-1" in c.delegates[1].msgs or b"serf-1" in c.delegates[2].msgs, timeout=5)


def test_crc_on_gossip_to_pmax5_nodes() -> None:
    m, _ = solo()
    feed(m, alive("x", 1))
    m.drain()
    m.tick(1.0)  # gossip tick: the alive about x goes to x, with a CRC header as x advertises pmax 5
    sends = [o for o in m.drain() if isinstance(o, SendPacket) and o.addr == Address("10.0.0.2", 7946)]
    assert sends and all(o.data[0] == 12 for o in sends)
    msgs, drops = WireCodec().decode_packet(sends[0].data)
    assert drops == [] and msgs


def test_merge_and_alive_vetoes() -> None:
    class Picky(Recorder):
        def notify_merge(self, peers: list[Node]) -> str | None:
            return "no strangers" if any(p.name.startswith("evil") for p in peers) else None

        def notify_alive(self, peer: Node) -> str | None:
            return "blocked" if peer.name == "blocked" else None

    m = Memberlist(Config.fast(name="me"), Address("10.0.0.1", 7946), Picky(), rng=random.Random(3))
    peer = WireCodec()
    evil = PushPull(True, [PushNodeState("evil1", ip_to_bytes("10.0.0.5"), 7946, b"", 1, 0, DEFAULT_VSN)], b"")
    m.receive_stream(peer.encode_stream(encode(evil), dialer=True), SRC, 0.0)
    assert m.get("evil1") is None and m.stats["drop.merge_vetoed"] == 1
    feed(m, alive("blocked", 1), alive("fine", 1))
    assert m.get("blocked") is None and m.get("fine") is not None
    assert m.stats["drop.alive_vetoed"] == 1
