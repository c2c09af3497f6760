"""Outbox alone: packet filling, compounds, the reply budget, streams (outbox.py)."""

from __future__ import annotations

from registry.memberlist.codec import encode
from registry.memberlist.messages import Ack, UserMsg
from registry.memberlist.outbox import MAX_PARTS, StreamCtx
from registry.memberlist.types import Address, OpenStream, SendPacket
from tests.memberlist.parts import alive, make_parts, peer_addr, queued

STRANGER = Address("10.66.0.1", 9999)


def test_a_message_carries_queued_broadcasts_and_compounds_split_at_255_parts() -> None:
    p = make_parts()
    queued(p)
    for i in range(3):
        p.queue.queue(f"k{i}", encode(UserMsg(b"x" * 10)))
    p.outbox.emit(peer_addr(1), encode(Ack(1, None)), piggyback=True)
    ((to, msgs),) = p.sent()
    assert to == peer_addr(1) and msgs[0] == Ack(1, None) and len(msgs) == 4
    for i in range(300):  # tiny messages: more than one compound's worth fit a packet
        p.queue.queue(f"t{i}", b"\x08")
    p.outbox.gossip([p.members.nodes["me"]])
    sizes = [len(msgs) for _, msgs in p.sent()]
    assert len(sizes) == 2 and max(sizes) == MAX_PARTS and sum(sizes) > MAX_PARTS


def test_replies_to_strangers_fit_the_budget_members_get_everything() -> None:
    p = make_parts()
    p.members.on_alive(alive("n1"))
    queued(p)
    p.queue.queue("news", encode(UserMsg(b"n" * 50)))
    big, small = encode(Ack(1, b"c" * 100)), encode(Ack(1, None))
    p.outbox.reply_budget = len(small) + 10  # room for one bare ack, not the full one
    assert p.outbox.emit_reply(STRANGER, p.outbox.verified("x", STRANGER), big, small)
    ((_, msgs),) = p.sent()
    assert msgs == [Ack(1, None)]  # the one that fit, alone (no gossip to a stranger)
    assert not p.outbox.emit_reply(STRANGER, False, big, small)  # budget spent
    assert p.stats["drop.reply_budget"] == 1 and p.sent() == []
    assert p.outbox.verified("n1", peer_addr(1))
    assert p.outbox.emit_reply(peer_addr(1), True, big, small)
    ((_, msgs),) = p.sent()
    assert msgs[0] == Ack(1, b"c" * 100) and len(msgs) == 2  # full ack, gossip piggybacked


def test_streams_are_numbered_and_remembered() -> None:
    p = make_parts()
    a = p.outbox.open(peer_addr(1), b"data", StreamCtx("push_pull", join=True))
    b = p.outbox.open(peer_addr(2), b"more", StreamCtx("user"), expect_reply=False, timeout=1.5)
    out = p.outbox.drain()
    assert [o.stream_id for o in out if isinstance(o, OpenStream)] == [a, b] and a != b
    assert not any(isinstance(o, SendPacket) for o in out)
    assert p.outbox.streams[a].join and p.outbox.streams[b].kind == "user"
    second = out[1]
    assert isinstance(second, OpenStream) and second.timeout == 1.5 and not second.expect_reply
