"""Hostile gossip against the sans-I/O Serf core (issue 11, item 1), plus a fuzzer.

On d96d263 one alive message whose node name was not UTF-8 entered Serf's member table
(decoded with surrogateescape); from then on Serf's push/pull state could not be encoded,
so every join through that node failed and its push/pull timer died.
"""

from __future__ import annotations

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from registry.memberlist.codec import WireCodec, encode, make_compound
from registry.memberlist.messages import UserMsg
from registry.memberlist.types import DEFAULT_VSN, Address, ip_to_bytes
from registry.serf import messages as M
from registry.serf.member import MemberStatus
from tests.serf.serf_sim import addr, make_cluster

SRC = Address("10.9.9.9", 7946)


def raw_alive(name: bytes, host: str = "10.1.9.9", meta: bytes | None = b"", inc: int = 1,
              vsn: bytes = DEFAULT_VSN) -> bytes:
    body = {b"Addr": ip_to_bytes(host), b"Incarnation": inc, b"Meta": meta, b"Node": name, b"Port": 7946, b"Vsn": vsn}
    return b"\x04" + pack(body)


def pack(obj: object) -> bytes:
    out: bytes = msgpack.packb(obj, use_bin_type=False)
    return out


def tags(d: dict[bytes, bytes]) -> bytes:
    return b"\xff" + pack(d)


def test_non_utf8_member_is_refused_and_joins_still_work() -> None:
    c = make_cluster(2)
    s0 = c.nodes[0]
    s0.receive_packet(raw_alive(b"evil\xff"), SRC, c.net.now)
    s2 = c.add(2)
    s2.join([addr(0)], c.net.now)
    c.net.kick(addr(2))
    assert c.run_until(lambda: all(c.status(v, "s2") == MemberStatus.ALIVE for v in (0, 1, 2)), 30)
    assert s2.join_results and all(s2.join_results.values())
    M.encode(M.decode(s0.local_state(True)))  # what a join reply carries
    assert s0.memberlist.stats["drop.bad_utf8"] == 1
    assert {m.name for m in s0.members()} == {"s0", "s1", "s2"}


def test_member_with_non_text_tags_is_refused() -> None:
    """Meta that is not a map of UTF-8 strings: the member is refused (its tags would be a
    guess, and could not be served or re-encoded); valid tags still update a member."""
    c = make_cluster(2)
    s0 = c.nodes[0]
    bad = [tags({b"role": b"\xff\xfe"}), tags({b"\xc3": b"x"}), b"\xff\x93\x01\x02\x03", b"role-\xff"]
    for i, meta in enumerate(bad):
        s0.receive_packet(raw_alive(f"t{i}".encode(), host=f"10.1.9.{i + 10}", meta=meta), SRC, c.net.now)
    assert s0.memberlist.stats["drop.bad_meta"] == len(bad)
    assert all(s0.member(f"t{i}") is None for i in range(len(bad)))
    s0.receive_packet(raw_alive(b"ok", host="10.1.9.50", meta=tags({b"role": b"web"})), SRC, c.net.now)
    ok = s0.member("ok")
    assert ok is not None and ok.tags == {"role": "web"}
    s0.receive_packet(raw_alive(b"ok", host="10.1.9.50", meta=tags({b"role": b"\xff"}), inc=2), SRC, c.net.now)
    assert s0.member("ok").tags == {"role": "web"}  # type: ignore[union-attr]  # the bad update is refused


def test_serf_messages_with_non_utf8_text_are_refused() -> None:
    c = make_cluster(2)
    s0 = c.nodes[0]
    bodies = [
        bytes([M.SerfMessageType.JOIN]) + msgpack.packb({b"LTime": 9, b"Node": b"\xff"}, use_bin_type=False),
        bytes([M.SerfMessageType.LEAVE]) + msgpack.packb({b"LTime": 9, b"Node": b"s1\xff", b"Prune": False},
                                                         use_bin_type=False),
        bytes([M.SerfMessageType.USER_EVENT]) + msgpack.packb({b"LTime": 9, b"Name": b"ev\xfe", b"Payload": b""},
                                                              use_bin_type=False),
    ]
    for b in bodies:
        s0.receive_packet(encode(UserMsg(b)), SRC, c.net.now)
    assert s0.stats["serf.drop.bad_utf8"] == 3
    assert s0.member("s1").status == MemberStatus.ALIVE  # type: ignore[union-attr]  # no leave for "s1\ufffd"...
    M.encode(M.decode(s0.local_state(False)))


def test_push_pull_state_with_bad_names_is_refused() -> None:
    c = make_cluster(2)
    s0 = c.nodes[0]
    state = bytes([M.SerfMessageType.PUSH_PULL]) + msgpack.packb(
        {b"LTime": 5, b"StatusLTimes": {b"\xff": 3}, b"LeftMembers": [], b"EventLTime": 1, b"Events": [],
         b"QueryLTime": 1}, use_bin_type=False)
    s0.merge_remote_state(state, False)
    assert s0.stats["serf.drop.bad_utf8_entry"] == 1  # the entry alone: the rest of the state merges
    assert s0.clock.time() >= 5
    M.encode(M.decode(s0.local_state(False)))


def test_push_pull_leave_at_max_ltime_keeps_state_encodable() -> None:
    """A left member at status LTime 2**64-1: its leave applies at +1, which must wrap like
    Go's uint64 (d96d263 stored 2**64 and every later push/pull raised OverflowError)."""
    c = make_cluster(2)
    s0 = c.nodes[0]
    state = bytes([M.SerfMessageType.PUSH_PULL]) + msgpack.packb(
        {b"LTime": 5, b"StatusLTimes": {b"s1": 2**64 - 1}, b"LeftMembers": [b"s1"], b"EventLTime": 1,
         b"Events": [], b"QueryLTime": 1}, use_bin_type=False)
    s0.merge_remote_state(state, False)
    M.encode(M.decode(s0.local_state(False)))


def test_query_and_relay_to_impossible_ports_are_dropped() -> None:
    c = make_cluster(3)
    s0 = c.nodes[0]
    q = bytes([M.SerfMessageType.QUERY]) + msgpack.packb(
        {b"LTime": 50, b"ID": 1, b"Addr": ip_to_bytes("10.1.0.2"), b"Port": 70000, b"SourceNode": b"s1",
         b"Filters": None, b"Flags": M.QueryFlag.ACK, b"RelayFactor": 0, b"Timeout": 10**9, b"Name": b"q",
         b"Payload": b""}, use_bin_type=False)
    relay = M.encode_relay(M.RelayHeader(ip_to_bytes("10.1.0.2"), 0, "s1"), b"\x05\xc0")
    s0.receive_packet(make_compound([encode(UserMsg(q)), encode(UserMsg(relay))]), SRC, c.net.now)
    assert s0.stats["serf.drop.bad_query_addr"] == 1 and s0.stats["serf.drop.bad_relay_addr"] == 1
    c.net.run_for(1.0)  # the driver never sees a packet to an impossible port


# ----------------------------------------------------------------------------- fuzz

names = st.one_of(st.binary(min_size=1, max_size=12), st.sampled_from([b"s1", b"s0", b"x", b"\xff", b"\xed\xa0\x80"]))
metas = st.one_of(
    st.none(),
    st.binary(max_size=40),
    st.dictionaries(st.binary(max_size=6), st.binary(max_size=6), max_size=3).map(tags),
)


@st.composite
def alive_packets(draw: st.DrawFn) -> bytes:
    vsn = draw(st.sampled_from([DEFAULT_VSN, DEFAULT_VSN[:5], b"", DEFAULT_VSN + b"\x00"]))
    host = draw(st.sampled_from(["10.1.0.1", "10.1.0.2", "10.1.7.7"]))
    inc = draw(st.sampled_from([0, 1, 2, 7, 2**31, 2**32 - 1]))
    return raw_alive(draw(names), host, draw(metas), inc, vsn)


@st.composite
def push_pulls(draw: st.DrawFn) -> bytes:
    rows = draw(st.lists(st.tuples(names, metas, st.integers(0, 3)), max_size=4))
    head = pack({b"Join": draw(st.booleans()), b"Nodes": len(rows), b"UserStateLen": 0})
    body = b"".join(
        msgpack.packb({b"Addr": ip_to_bytes("10.1.8.8"), b"Incarnation": 3, b"Meta": meta, b"Name": name,
                       b"Port": 7946, b"State": state, b"Vsn": DEFAULT_VSN}, use_bin_type=False)
        for name, meta, state in rows
    )
    return b"\x06" + head + body


CLUSTER = make_cluster(2, seed=7)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(alive_packets(), min_size=1, max_size=6), st.lists(push_pulls(), max_size=2))
def test_random_names_and_tags_never_break_encoding_or_timers(packets: list[bytes], pps: list[bytes]) -> None:
    """Whatever names and tags arrive, our push/pull state encodes, timers keep running,
    no handler raises, and every member we hold has a UTF-8 name and text tags."""
    c = CLUSTER
    s0 = c.nodes[0]
    s0.receive_packet(make_compound(packets), SRC, c.net.now)
    peer = WireCodec()
    for pp in pps:
        s0.receive_stream(peer.encode_stream(pp, dialer=True), SRC, c.net.now)
    c.net.kick(addr(0))
    c.net.run_for(0.5)
    for s in c.nodes:
        M.encode(M.decode(s.local_state(True)))
        encode(s.memberlist._local_state(True))
        assert s.stats["timer.errors"] == 0 and s.memberlist.stats["timer.errors"] == 0
        assert s.memberlist.stats["drop.handler_error"] == 0
        for m in s.members():
            m.name.encode("utf-8")
            for k, v in m.tags.items():
                k.encode("utf-8")
                v.encode("utf-8")


ltimes = st.sampled_from([0, 1, 7, 2**32 - 1, 2**63, 2**64 - 2, 2**64 - 1])


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.dictionaries(names, ltimes, max_size=4), st.lists(names, max_size=3), ltimes, ltimes, ltimes)
def test_random_serf_state_never_breaks_encoding(status: dict[bytes, int], left: list[bytes], lt: int, ev: int,
                                                 q: int) -> None:
    """Serf's push/pull user state with any names and Lamport times: ours still encodes."""
    s0 = CLUSTER.nodes[0]
    state = bytes([M.SerfMessageType.PUSH_PULL]) + msgpack.packb(
        {b"LTime": lt, b"StatusLTimes": status, b"LeftMembers": left, b"EventLTime": ev,
         b"Events": [{b"LTime": ev, b"Events": [{b"Name": n, b"Payload": b""} for n in left]}], b"QueryLTime": q},
        use_bin_type=False)
    s0.merge_remote_state(state, True)
    M.encode(M.decode(s0.local_state(True)))
    CLUSTER.net.run_for(0.2)
    assert s0.stats["timer.errors"] == 0
