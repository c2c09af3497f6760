"""Hostile and random input never escapes the core, and our own record stays alive and monotonic."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from registry.memberlist.codec import encode, make_compound
from registry.memberlist.config import Config
from registry.memberlist.core import Memberlist
from registry.memberlist.messages import (
    Ack,
    Alive,
    Dead,
    Message,
    Nack,
    Ping,
    PushNodeState,
    PushPull,
    Suspect,
)
from registry.memberlist.types import DEFAULT_VSN, Address, NodeState, ip_to_bytes

SRC = Address("10.9.9.9", 7946)
names = st.sampled_from(["me", "a", "b", "c"])
incs = st.integers(min_value=0, max_value=6)
hosts = st.sampled_from(["10.0.0.1", "10.0.0.2", "10.0.0.3"])


def _alive(inc: int, name: str, host: str, meta: bytes) -> Alive:
    return Alive(inc, name, ip_to_bytes(host), 7946, meta, DEFAULT_VSN)


messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(_alive, incs, names, hosts, st.sampled_from([b"", b"x"])),
    st.builds(Suspect, incs, names, names),
    st.builds(Dead, incs, names, names),
    st.builds(Ping, st.integers(0, 5), names),
    st.builds(Ack, st.integers(0, 50)),
    st.builds(Nack, st.integers(0, 50)),
)


def fresh() -> Memberlist:
    return Memberlist(Config.fast(name="me", strict=True), Address("10.0.0.1", 7946), rng=random.Random(0))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=10))
def test_random_bytes_are_dropped(blobs: list[bytes]) -> None:
    m = fresh()
    for i, b in enumerate(blobs):
        m.receive_packet(b, SRC, float(i))
        reply = m.receive_stream(b, SRC, float(i))
        assert reply is None or isinstance(reply, bytes)
    assert m.local_node.state == NodeState.ALIVE


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(messages, st.floats(0, 5)), max_size=30), st.booleans())
def test_random_message_sequences_keep_invariants(seq: list[tuple[Message, float]], compound: bool) -> None:
    m = fresh()
    now = 0.0
    last_inc = m.incarnation
    for msg, dt in seq:
        now += dt
        data = encode(msg)
        if compound:
            data = make_compound([data, encode(Suspect(0, "a", "b"))])
        m.receive_packet(m.codec.encode_packet(data), SRC, now)
        m.tick(now)
        m.drain()
        assert m.local_node.state == NodeState.ALIVE
        assert m.incarnation >= last_inc
        last_inc = m.incarnation
        assert 0 <= m.health_score < m.config.awareness_max_multiplier
    pp = PushPull(True, [PushNodeState("me", ip_to_bytes("10.0.0.1"), 7946, b"", last_inc + 3, 2, DEFAULT_VSN)], b"")
    m.receive_stream(m.codec.encode_stream(encode(pp), dialer=True), SRC, now)
    assert m.local_node.state == NodeState.ALIVE and m.incarnation > last_inc + 3
