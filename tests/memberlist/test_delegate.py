"""The delegate interfaces: one required `Delegate`, optional ones given explicitly or
found on the delegate by their methods (registry/memberlist/delegate.py)."""

from __future__ import annotations

import random

from registry.memberlist.codec import encode
from registry.memberlist.config import Config
from registry.memberlist.core import Memberlist
from registry.memberlist.delegate import AliveDelegate, Delegate, Hooks, Wiring
from registry.memberlist.messages import Ack, Alive, Ping
from registry.memberlist.types import DEFAULT_VSN, Address, Node, SendPacket, ip_to_bytes
from tests.memberlist.memberlist_sim import Recorder

SRC = Address("10.9.9.9", 7946)


def _alive(name: str, inc: int = 1) -> bytes:
    return encode(Alive(inc, name, ip_to_bytes("10.0.0.2"), 7946, b"", DEFAULT_VSN))


def _make(delegate: Delegate | None, **optional: object) -> Memberlist:
    cfg = Config.fast(name="me", strict=True, probe_interval=0, gossip_interval=0, push_pull_interval=0)
    return Memberlist(cfg, Address("10.0.0.1", 7946), delegate, rng=random.Random(1), **optional)  # type: ignore[arg-type]


class Refuser:
    """An alive delegate alone (no base class): refuses one name."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def notify_alive(self, peer: Node) -> str | None:
        self.asked.append(peer.name)
        return "no" if peer.name == "bad" else None


def test_a_plain_delegate_has_every_optional_interface_but_alive() -> None:
    d = Delegate()
    hooks = Wiring().hooks(d)
    assert hooks == Hooks(d, d, d, d, None, d)
    assert not isinstance(d, AliveDelegate)
    assert Wiring().hooks(None) == Hooks()


def test_optional_interfaces_given_explicitly() -> None:
    rec, other, refuser = Recorder(), Recorder(), Refuser()
    m = _make(rec, events=other, alive=refuser, ping=None)
    m.receive_packet(_alive("good"), SRC, 0.0)
    m.receive_packet(_alive("bad"), SRC, 0.0)
    assert other.joins == ["me", "good"] and rec.joins == []  # events went to the object given for them
    assert refuser.asked == ["good", "bad"] and m.get("bad") is None and m.stats["drop.alive_vetoed"] == 1


class Coordinates(Recorder):
    def ack_payload(self) -> bytes:
        return b"coordinate"


def _ack_payload(m: Memberlist) -> bytes | None:
    m.drain()
    m.receive_packet(encode(Ping(7, "me", ip_to_bytes("10.0.0.2"), 7946, "x")), Address("10.0.0.2", 7946), 1.0)
    (out,) = m.drain()
    assert isinstance(out, SendPacket)
    ack = m.codec.decode_packet(out.data)[0][0]  # gossip may ride behind it
    assert isinstance(ack, Ack) and ack.seq_no == 7
    return ack.payload


def test_ping_none_leaves_acks_bare() -> None:
    m = _make(Coordinates())
    m.receive_packet(_alive("x"), SRC, 0.0)
    assert _ack_payload(m) == b"coordinate"
    m = _make(Coordinates(), ping=None)
    m.receive_packet(_alive("x"), SRC, 0.0)
    assert _ack_payload(m) is None


def test_events_none_silences_a_delegate_that_has_them() -> None:
    rec = Recorder()
    m = _make(rec, events=None)
    m.receive_packet(_alive("x"), SRC, 0.0)
    assert m.get("x") is not None and rec.joins == []
    assert _make(rec).get("me") is not None and rec.joins == ["me"]  # the same delegate, defaulted


def test_an_alive_hook_on_the_instance_is_found() -> None:
    """A delegate opts into the alive interface by having `notify_alive`, even set on the
    instance (as the tests' fault injection does)."""
    rec = Recorder()
    refuser = Refuser()
    rec.notify_alive = refuser.notify_alive  # type: ignore[attr-defined]
    m = _make(rec)
    m.receive_packet(_alive("bad"), SRC, 0.0)
    assert refuser.asked == ["bad"] and m.get("bad") is None


def test_a_replaced_delegate_is_wired_by_the_same_choices() -> None:
    first, second, events = Recorder(), Recorder(), Recorder()
    m = _make(first)
    m.delegate = second
    m.receive_packet(_alive("a"), SRC, 0.0)
    assert second.joins == ["a"] and first.joins == ["me"]  # defaulted interfaces follow the delegate
    m = _make(first, events=events)
    m.delegate = second
    m.receive_packet(_alive("b"), SRC, 0.0)
    assert events.joins == ["me", "b"] and second.joins == ["a"]  # an explicit one stays
    assert m.delegate is second
