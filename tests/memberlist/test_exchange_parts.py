"""Exchanges alone: a dialer's stream answered, and the outcome of ours (exchange.py)."""

from __future__ import annotations

from registry.memberlist.codec import WireCodec, encode, encode_user_stream
from registry.memberlist.messages import Ack, ErrResp, Ping, PushPull
from registry.memberlist.outbox import StreamCtx
from registry.memberlist.types import NodeState
from tests.memberlist.parts import alive, make_parts, peer_addr

PEER = WireCodec()


def _reply(data: bytes | None) -> object:
    assert data is not None
    return PEER.decode_stream(data, from_dialer=False)


def test_a_dialers_stream_is_answered_by_the_part_it_is_for() -> None:
    p = make_parts()
    ping = PEER.encode_stream(encode(Ping(4, "me")), dialer=True)
    assert _reply(p.exchanges.answer(ping, peer_addr(1), 1.0)) == Ack(4, None)
    join = PEER.encode_stream(encode(PushPull(True, [], b"")), dialer=True)
    answer = _reply(p.exchanges.answer(join, peer_addr(1), 2.0))
    assert isinstance(answer, PushPull) and p.gossip_rounds == [2.0]  # a seed gossips a join at once
    assert _reply(p.exchanges.answer(b"\xff garbage", peer_addr(1), 3.0)) == ErrResp("failed to receive: unknown_type")
    user = PEER.encode_stream(encode_user_stream(b"hi"), dialer=True)
    assert p.exchanges.answer(user, peer_addr(1), 4.0) is None  # no delegate: nothing to tell, no reply
    assert p.outbox.reply_budget is None  # only set while a stream is handled


def test_the_outcome_of_our_streams() -> None:
    p = make_parts()
    p.members.on_alive(alive("n1"))
    user = p.outbox.open(peer_addr(1), b"", StreamCtx("user"), expect_reply=False)
    assert p.exchanges.outcome(user, b"", 1.0, refused=False) and p.stats["stream.user.ok"] == 1
    assert not p.exchanges.outcome(user, b"", 1.0, refused=False)  # already settled
    pp = p.outbox.open(peer_addr(1), b"", StreamCtx("push_pull"))
    refused = PEER.encode_stream(encode(ErrResp("no key for this")), dialer=False)
    assert not p.exchanges.outcome(pp, refused, 2.0, refused=False)
    assert p.stats["push_pull.remote_error"] == 1 and "could not read our stream" in p.exchanges.refusal
    pp = p.outbox.open(peer_addr(1), b"", StreamCtx("push_pull"))
    state = PEER.encode_stream(encode(p.push_pull.local_state(False)), dialer=False)
    assert p.exchanges.outcome(pp, state, 3.0, refused=False) and p.exchanges.refusal == ""


def test_a_refused_fallback_ping_suspects_at_once() -> None:
    p = make_parts()
    p.members.on_alive(alive("n1"))
    p.clock.now = 1.0
    p.prober.tick(1.0)
    p.run(1.0 + p.config.probe_timeout)  # no ack: indirect probes and the TCP fallback ping
    (sid,) = [sid for sid, st in p.outbox.streams.items() if st.kind == "ping"]
    assert not p.exchanges.outcome(sid, None, 1.3, refused=True)
    assert p.members.nodes["n1"].state == NodeState.SUSPECT and p.stats["probe.tcp_refused"] == 1
