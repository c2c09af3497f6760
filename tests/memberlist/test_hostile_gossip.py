"""Hostile gossip against the sans-I/O memberlist core (issue 11, items 1, 6, 7).

Each test replays one attack measured on d96d263 and failed there: a non-UTF-8 node name or
a short Vsn made our own push/pull state unencodable, a raising periodic action stopped its
timer for good, nested compound/compressed pings were answered 65,025 times, an LZW bomb
inflated to 40 MiB, and a forged incarnation 2**32-1 wedged its victim.
"""

from __future__ import annotations

import random
import time

import msgpack
import pytest

from registry.memberlist import lzw
from registry.memberlist.codec import (
    MAX_PACKET_INFLATE,
    DecodeError,
    WireCodec,
    decode,
    encode,
    make_compound,
)
from registry.memberlist.config import Config
from registry.memberlist.core import Memberlist
from registry.memberlist.messages import (
    Alive,
    Dead,
    IndirectPing,
    Message,
    Ping,
    PushNodeState,
    PushPull,
    Suspect,
)
from registry.memberlist.state import inc_newer, next_inc
from registry.memberlist.types import (
    DEFAULT_VSN,
    Address,
    NodeState,
    SendPacket,
    ip_to_bytes,
)
from tests.memberlist.memberlist_sim import Recorder, make_cluster

SRC = Address("10.9.9.9", 7946)
U32_MAX = 2**32 - 1


def raw_alive(name: bytes, inc: int = 1, host: str = "10.0.9.9", meta: bytes | None = b"", vsn: bytes = DEFAULT_VSN) -> bytes:
    """An alive message with any bytes as its name (our encoder only writes UTF-8)."""
    body = {b"Addr": ip_to_bytes(host), b"Incarnation": inc, b"Meta": meta, b"Node": name, b"Port": 7946, b"Vsn": vsn}
    return b"\x04" + pack(body)


def pack(obj: object) -> bytes:
    out: bytes = msgpack.packb(obj, use_bin_type=False)
    return out


def raw_push_node(name: bytes, host: str, inc: int = 1, vsn: bytes = DEFAULT_VSN) -> bytes:
    return pack(
        {b"Addr": ip_to_bytes(host), b"Incarnation": inc, b"Meta": b"", b"Name": name, b"Port": 7946,
         b"State": 0, b"Vsn": vsn},
    )


def solo(name: str = "me", delegate: Recorder | None = None, **kw: object) -> Memberlist:
    return Memberlist(Config.fast(name=name, strict=True, **kw), Address("10.0.0.1", 7946), delegate or Recorder(),
                      rng=random.Random(1))


def sent(m: Memberlist) -> list[SendPacket]:
    return [o for o in m.drain() if isinstance(o, SendPacket)]


# ----------------------------------------------------------------------------- item 1: names


def test_non_utf8_name_is_refused_and_state_stays_encodable() -> None:
    m = solo()
    good = raw_alive(b"good", host="10.0.9.8")
    m.receive_packet(make_compound([raw_alive(b"evil\xff\xfe"), good]), SRC, 1.0)
    assert m.stats["drop.bad_utf8"] == 1
    assert m.get("good") is not None and len(m.all_nodes()) == 2  # the good part of the packet still counts
    encode(m._local_state(True))
    for text in (b"\xed\xa0\x80", b"\xc0\x80", b"a\x80"):  # a surrogate, overlong NUL, lone continuation
        m.receive_packet(raw_alive(text), SRC, 2.0)
    assert m.stats["drop.bad_utf8"] == 4 and len(m.all_nodes()) == 2


@pytest.mark.parametrize(
    ("field", "value"),
    [(b"From", b"\xff"), (b"Node", b"\xff")],
)
def test_accusations_with_non_utf8_names_are_refused(field: bytes, value: bytes) -> None:
    body = {b"From": b"x", b"Incarnation": 1, b"Node": b"me", field: value}
    for kind in (b"\x03", b"\x05"):
        with pytest.raises(DecodeError) as e:
            decode(kind + msgpack.packb(body, use_bin_type=False))
        assert e.value.reason == "bad_utf8"


def test_probe_from_a_node_whose_name_is_not_utf8_is_still_answered() -> None:
    """A Go node may carry such a name: we do not admit it, but answer its pings (else it
    would keep suspecting us); its name is never stored or sent on."""
    m = solo()
    m.drain()
    ping = b"\x00" + msgpack.packb({b"Node": b"me", b"SeqNo": 3, b"SourceAddr": ip_to_bytes("10.0.0.9"),
                                    b"SourceNode": b"go-\xff" + b"-" * 40, b"SourcePort": 7946}, use_bin_type=False)
    m.receive_packet(ping, SRC, 1.0)
    (p,) = sent(m)
    assert p.addr == Address("10.0.0.9", 7946) and len(p.data) <= len(ping)
    assert decode(ping) == Ping(3, "me", ip_to_bytes("10.0.0.9"), 7946, "")


def test_short_vsn_and_oversize_meta_are_refused() -> None:
    """A 5-byte Vsn once entered the table and made every later push/pull raise."""
    m = solo()
    m.receive_packet(raw_alive(b"short", vsn=DEFAULT_VSN[:5]), SRC, 1.0)
    m.receive_packet(raw_alive(b"big", host="10.0.9.7", meta=b"x" * 513), SRC, 1.0)
    assert m.stats["drop.bad_vsn"] == 1 and m.stats["drop.meta_too_large"] == 1
    assert m.get("short") is None and m.get("big") is None
    encode(m._local_state(False))


def test_push_pull_row_with_bad_name_is_refused_alone() -> None:
    """A Go pool may hold a node whose name is not UTF-8: we refuse that row, not the sync."""
    m = solo()
    peer = WireCodec()
    head = msgpack.packb({b"Join": True, b"Nodes": 3, b"UserStateLen": 0}, use_bin_type=False)
    rows = raw_push_node(b"peer", "10.0.0.2") + raw_push_node(b"\xffbad", "10.0.0.3") + raw_push_node(
        b"v5", "10.0.0.4", vsn=b"\x01\x05\x02\x02\x05")
    reply = m.receive_stream(peer.encode_stream(b"\x06" + head + rows, dialer=True), SRC, 1.0)
    assert reply is not None and isinstance(peer.decode_stream(reply, from_dialer=False), PushPull)
    assert m.get("peer") is not None and len(m.all_nodes()) == 2
    assert m.stats["drop.bad_utf8"] == 1 and m.stats["drop.bad_vsn"] == 1
    assert m.stats["push_pull.inbound_ok"] == 1


def test_local_name_must_be_utf8() -> None:
    with pytest.raises(ValueError, match="UTF-8"):
        solo(name="bad\udcff")


# ----------------------------------------------------------------------------- item 1: timers


class FailingState(Recorder):
    """A delegate whose push/pull state raises the first `n` times (fault injection)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.failures = n

    def local_state(self, join: bool) -> bytes:
        if self.failures > 0:
            self.failures -= 1
            raise UnicodeEncodeError("utf-8", "x", 0, 1, "injected")
        return b""

    def get_broadcasts(self, overhead: int, limit: int) -> list[bytes]:
        if self.failures > 0:
            raise RuntimeError("injected")
        return []


@pytest.mark.handler_errors("RuntimeError", "UnicodeEncodeError")  # injected on purpose
def test_periodic_actions_survive_a_raising_round() -> None:
    """push/pull and gossip rounds that raise are counted, and run again next interval
    (on d96d263 the exception escaped before the timer was rescheduled: push/pull stopped)."""
    c = make_cluster(2, Config.fast(), seed=5)
    assert c.net.run_until_true(lambda: c.alive_views({"n0", "n1"}), 20)
    m = c.nodes[0]
    m.delegate = FailingState(3)
    # fault injection: the delegate's failures also reach handlers (an ack's piggybacked
    # broadcasts), which must count them here, not raise them as a strict simulation does
    c.net.strict = m.strict = False
    before = m.stats["push_pull.sent"]
    c.net.run_for(5 * m.config.push_pull_interval)  # the SimNetwork's tick would raise here before the fix
    assert m.stats["timer.errors"] >= 1  # the injected failures happened ...
    assert m.handler_errors >= 1
    assert m.stats["push_pull.sent"] >= before + 2  # ... and push/pull kept running after them
    assert c.alive_views({"n0", "n1"})


# ----------------------------------------------------------------------------- item 6: amplification


def _ping(seq: int, source_node: str = "spoofed") -> bytes:
    return encode(Ping(seq, "me", ip_to_bytes("10.66.0.1"), 9999, source_node))


def test_nested_compounds_are_dropped_and_replies_bounded() -> None:
    """255 x 255 nested pings (issue 11: 65,025 acks from one packet) get at most one ack."""
    inner = make_compound([_ping(i) for i in range(255)])
    packet = make_compound([inner] * 15)
    m = solo()
    m.drain()
    m.receive_packet(packet, SRC, 1.0)
    out = sent(m)
    assert out == [] and m.stats["drop.nested"] == 15
    # flat: one ping of the 255 is answered, alone, within the packet's size
    flat = make_compound([_ping(i) for i in range(255)])
    m.receive_packet(flat, SRC, 2.0)
    out = sent(m)
    assert len(out) == 1 and m.stats["drop.extra_ping"] == 254
    assert sum(len(p.data) for p in out) <= len(flat)


def test_compressed_inside_compound_and_double_compression_are_dropped() -> None:
    codec = WireCodec()
    once = b"\x09" + msgpack.packb({b"Algo": 0, b"Buf": lzw.compress(_ping(1))}, use_bin_type=False)
    twice = b"\x09" + msgpack.packb({b"Algo": 0, b"Buf": lzw.compress(once)}, use_bin_type=False)
    msgs, drops = codec.decode_packet(make_compound([once, _ping(2)]))
    assert msgs == [decode(_ping(2))] and drops == ["nested"]
    with pytest.raises(DecodeError) as e:
        codec.decode_packet(twice)
    assert e.value.reason == "nested"
    # what Go sends: compress(compound(messages))
    msgs, drops = codec.decode_packet(codec.encode_packet(make_compound([_ping(3), _ping(4)] * 20)))
    assert len(msgs) == 40 and drops == []


def test_reply_to_unverified_address_never_exceeds_the_request() -> None:
    """An ack carries a Serf coordinate (~100 bytes); to a spoofable address it goes only if
    it fits the ping's size, else bare; an ack to a member's address keeps everything."""

    class Coord(Recorder):
        def ack_payload(self) -> bytes:
            return b"c" * 100

    m = solo(delegate=Coord())
    m.drain()
    small = _ping(1)
    m.receive_packet(small, SRC, 1.0)
    (p,) = sent(m)
    assert len(p.data) <= len(small) and decode(p.data).payload is None  # type: ignore[union-attr]
    # a member at that address: the full ack
    m.receive_packet(encode(Alive(1, "peer", ip_to_bytes("10.66.0.1"), 9999, b"", DEFAULT_VSN)), SRC, 2.0)
    m.drain()
    m.receive_packet(_ping(2, source_node="peer"), SRC, 3.0)
    (p,) = sent(m)
    assert b"c" * 100 in p.data


def test_indirect_ping_to_unverified_addresses_is_bounded() -> None:
    m = solo()
    m.drain()
    req = encode(IndirectPing(5, ip_to_bytes("10.77.0.1"), 7946, "victim", True, ip_to_bytes("10.66.0.1"), 9999,
                              "spoofed"))
    m.receive_packet(req, SRC, 1.0)
    now = 1.0
    total = 0
    while (d := m.next_deadline()) is not None and d < 3.0:
        now = d
        m.tick(now)
        total += sum(len(p.data) for p in sent(m))
    total += sum(len(p.data) for p in sent(m))
    assert 0 < total <= len(req)  # the ping to the target, then the nack: together within the request


def _bomb(size: int) -> bytes:
    return lzw.compress(b"\x00" * size)


def test_lzw_bomb_stops_at_the_packet_cap_quickly() -> None:
    """Issue 11: a 19 KB packet inflated to 40 MiB (40-50 ms of CPU each)."""
    buf = _bomb(40 << 20)
    packet = b"\x09" + msgpack.packb({b"Algo": 0, b"Buf": buf}, use_bin_type=False)
    codec = WireCodec()
    t0 = time.process_time()
    for _ in range(20):
        with pytest.raises(DecodeError) as e:
            codec.decode_packet(packet)
        assert e.value.reason == "too_large"
    per_packet = (time.process_time() - t0) / 20
    print(f"LZW bomb: {len(packet)} B packet, {per_packet * 1e3:.2f} ms CPU each")
    with pytest.raises(lzw.LZWError):
        lzw.decompress(buf, MAX_PACKET_INFLATE)
    assert per_packet < 0.02  # measured ~1 ms; was 40-50 ms (loaded machine: generous bound)


def test_stream_inflation_is_bounded_by_ratio() -> None:
    codec = WireCodec()
    data = b"\x09" + msgpack.packb({b"Algo": 0, b"Buf": _bomb(8 << 20)}, use_bin_type=False)
    with pytest.raises(DecodeError) as e:
        codec.decode_stream(data, from_dialer=True)
    assert e.value.reason == "too_large"
    # a real push/pull (2,000 members with tags) compresses ~8:1 and still decodes
    rows = [PushNodeState(f"web-{i}", bytes([10, 0, i // 256, i % 256]), 7946,
                          b"\xff\x82\xa5group\xaawebservice\xa4addr\xad10.0.0.1:8080", 1, 0, DEFAULT_VSN)
            for i in range(2000)]
    pp = PushPull(False, rows, b"\x02" + b"\xc0" * 512)
    assert codec.decode_stream(codec.encode_stream(encode(pp), dialer=True), from_dialer=True) == pp


# ----------------------------------------------------------------------------- item 7: incarnations


def test_serial_order() -> None:
    assert inc_newer(2, 1) and not inc_newer(1, 2)
    assert not inc_newer(U32_MAX, 5) and inc_newer(5, U32_MAX)  # 2**32-1 is older than a live node
    assert next_inc(U32_MAX) == 1 and inc_newer(next_inc(U32_MAX), U32_MAX)


@pytest.mark.parametrize("inc", [U32_MAX, 2**31, 2**31 + 1000])
@pytest.mark.parametrize("kind", ["dead", "suspect", "alive"])
def test_forged_incarnation_cannot_wedge_a_node(kind: str, inc: int) -> None:
    """A forged claim about n1 at a huge incarnation, given to n0: n1 is alive everywhere
    again within seconds and its own incarnation stays encodable."""
    c = make_cluster(3, Config.fast(), seed=3)
    names = {"n0", "n1", "n2"}
    assert c.net.run_until_true(lambda: c.alive_views(names), 20)
    n1 = c.nodes[1].local_node
    forged: dict[str, Message] = {
        "dead": Dead(inc, "n1", "n2"),
        "suspect": Suspect(inc, "n1", "n2"),
        "alive": Alive(inc, "n1", ip_to_bytes(n1.addr), n1.port, b"forged", DEFAULT_VSN),
    }
    c.nodes[0].receive_packet(encode(forged[kind]), SRC, c.net.now)
    c.net.kick(c.addrs[0])
    c.net.run_for(0.5)
    assert c.net.run_until_true(
        lambda: c.alive_views(names) and all(n.get("n1").meta == b"" for n in c.nodes), 30  # type: ignore[union-attr]
    )
    assert 0 < c.nodes[1].incarnation <= U32_MAX
    for n in c.nodes:  # every table still encodes (a refutation at 2**32 did not)
        encode(n._local_state(False))


def test_accusation_does_not_raise_the_recorded_incarnation() -> None:
    m = solo()
    m.receive_packet(encode(Alive(4, "peer", ip_to_bytes("10.0.0.2"), 7946, b"", DEFAULT_VSN)), SRC, 0.0)
    m.receive_packet(encode(Dead(2**31, "peer", "x")), SRC, 1.0)
    peer = m.get("peer")
    assert peer is not None and peer.state == NodeState.DEAD and peer.incarnation == 4
    assert m.stats["incarnation.clamped"] == 1
    m.receive_packet(encode(Alive(5, "peer", ip_to_bytes("10.0.0.2"), 7946, b"", DEFAULT_VSN)), SRC, 2.0)
    assert m.get("peer").state == NodeState.ALIVE  # type: ignore[union-attr]  # its refutation wins
