"""The first exchange with a new peer (`Replicator.syncing`): what a restarted registry waits for before
it says SERVING. An in-sync digest is acknowledged (an end mark), an answer is whole only once its end
mark and every message it counted arrived (in any order, over buckets too), and no answer leaves the
peer syncing (the driver's bound, tests/ttl_e2e, takes over)."""

from __future__ import annotations

import msgpack

from registry.ttl import wire
from registry.ttl.entry import Entry
from registry.ttl.replicator import ReplConfig
from tests.ttl.simnet import Net

SLOW = ReplConfig(anti_entropy_ms=60_000)  # no periodic round within a test: only the first exchange


def _held_at_least(net: Net, name: str, wanted: dict[tuple[str, str], Entry]) -> bool:
    """Whether `name` holds every record of `wanted` at its stamp or newer."""
    store = net.nodes[name].store
    return all((h := store.get(*key)) is not None and h.stamp >= e.stamp for key, e in wanted.items())


def _records(net: Net, name: str, groups: list[str]) -> dict[tuple[str, str], Entry]:
    store = net.nodes[name].store
    return {e.key: e for g in groups for e in store.records(g)}


def test_in_sync_digest_is_acknowledged() -> None:
    net = Net(["a", "b"], config=SLOW, delay_ms=(1, 1), connected=False)
    for i in range(20):
        e = net.write("b", "web", f"s{i}", addr="h:1", ttl_ms=120_000)
        net.nodes["a"].store.merge([e], now_ms=net.now)
    a, b = net.nodes["a"].repl, net.nodes["b"].repl
    b.set_peers(["a"], now_ms=net.now)
    b.drain()  # b's own first digest: not under test
    a.set_peers(["b"], now_ms=net.now)
    assert a.syncing() == {"b"}
    [(to, digest)] = a.drain()
    assert to == "b" and isinstance(msg := wire.decode(digest, net.limits), wire.Digest) and msg.ask is not None
    b.receive(digest, now_ms=net.now)
    [(to, ack)] = b.drain()
    end = wire.decode(ack, net.limits)
    assert to == "a" and isinstance(end, wire.Records) and (end.group, end.entries, end.ref, end.end) == (
        "", [], msg.ask, 0)
    assert a.receive(ack, now_ms=net.now) == [] and a.syncing() == frozenset()
    assert a.stats["sync.peers_done"] == 1


def test_a_periodic_in_sync_digest_is_not_answered() -> None:
    """A digest without an ask (periodic rounds, or a registry of the first format) draws nothing when
    the groups match, as before."""
    net = Net(["a", "b"], config=SLOW, connected=False)
    b = net.nodes["b"].repl
    b.set_peers(["a"], now_ms=net.now)
    b.drain()
    b.receive(wire.encode(wire.Digest("a", {}, True)), now_ms=net.now)
    assert b.drain() == []


def test_first_format_messages_still_decode() -> None:
    """Messages without the trailing fields (the first format) decode, ask/ref/end None; an end mark is
    an empty Records to a decoder of the first format."""
    old_digest = msgpack.packb([1, 2, "a", {"g": b"\0" * 8}, True, None, None], use_bin_type=True)
    assert wire.decode(old_digest, Net(["a"]).limits) == wire.Digest("a", {"g": b"\0" * 8}, True)
    old_records = msgpack.packb([1, 3, "a", "g", [], True, None, None, None], use_bin_type=True)
    assert wire.decode(old_records, Net(["a"]).limits) == wire.Records("a", "g", [], True)
    mark = msgpack.unpackb(wire.encode(wire.end_mark("a", 7, 3)), raw=False)
    assert mark[:9] == [1, 3, "a", "", [], False, None, None, None]


def test_synced_only_once_every_answer_merged_whatever_the_order() -> None:
    """Small groups (Records) and large ones (Buckets, then the records of the differing buckets and the
    peer's answer to them): at every instant the peer is no longer syncing, a holds every record b held;
    delays of 1-60 ms reorder the end marks before the messages they count."""
    for seed in range(8):
        net = Net(["a", "b"], seed=seed, config=SLOW, delay_ms=(1, 60), connected=False, bucketed_from=64)
        a = net.nodes["a"]
        for i in range(300):  # a large group both hold, each side with some newer versions
            e = net.write("b", "big", f"s{i:03d}", addr="10.0.0.1:80", ttl_ms=120_000)
            a.store.merge([e], now_ms=net.now)
        net.run_until(net.now + 1)
        for i in range(0, 300, 7):
            net.write("b", "big", f"s{i:03d}", addr="10.0.0.2:80", ttl_ms=120_000)
        for i in range(3, 300, 11):
            net.write("a", "big", f"s{i:03d}", addr="10.0.0.3:80", ttl_ms=120_000)
        for g in range(10):  # small groups only b has
            for i in range(5):
                net.write("b", f"small-{g}", f"x{i}", addr="10.0.1.1:80", ttl_ms=120_000)
        groups = ["big"] + [f"small-{g}" for g in range(10)]
        wanted = _records(net, "b", groups)
        net.set_peers("b", ["a"])
        net.set_peers("a", ["b"])
        assert a.repl.syncing() == {"b"}
        synced_at = None
        deadline = net.now + 1_000
        while net.now < deadline:
            net.run_until(net.now + 1)
            if not a.repl.syncing():
                synced_at = net.now
                assert _held_at_least(net, "a", wanted), seed
                break
        assert synced_at is not None, (seed, a.repl.stats)
        assert a.repl.stats["ae.buckets_differ"] > 0, "the large group did not go by buckets: tests nothing"


def test_never_synced_without_an_answer() -> None:
    """A digest lost (a partition) or never answered: the peer stays syncing through rounds and
    repairs (periodic digests carry no ask), so only the driver's bound ends the wait."""
    net = Net(["a", "b"], config=ReplConfig(anti_entropy_ms=1_000), connected=False)
    net.cut = {"b"}
    net.set_peers("a", ["b"])
    net.set_peers("b", ["a"])
    net.run_until(net.now + 500)
    net.cut = set()
    net.write("b", "web", "x", addr="h:1", ttl_ms=120_000)
    net.run_until(net.now + 5_000)  # rounds repair the stores...
    assert net.nodes["a"].store.get("web", "x") is not None
    assert net.nodes["a"].repl.syncing() == {"b"}  # ...but the first exchange was never answered


def test_a_digest_before_the_peer_knows_us_is_answered_when_it_does() -> None:
    """The joiner's first digest reaches a registry whose member table does not have the joiner yet
    (gossip brings it ~a round later): dropped as from an unknown sender, but kept and answered once
    set_peers adds the sender, so the joiner does not wait for the bound."""
    net = Net(["a", "b"], config=SLOW, delay_ms=(1, 1), connected=False)
    for i in range(10):
        net.write("b", "web", f"s{i}", addr="h:1", ttl_ms=120_000)
    wanted = _records(net, "b", ["web"])
    net.set_peers("a", ["b"])
    net.run_until(net.now + 5)
    b = net.nodes["b"].repl
    assert b.stats["drop.unknown_sender"] == 1 and b.stats["sync.early_kept"] == 1
    assert net.nodes["a"].repl.syncing() == {"b"}
    net.set_peers("b", ["a"])
    net.run_until(net.now + 10)
    assert b.stats["sync.early_answered"] == 1
    assert net.nodes["a"].repl.syncing() == frozenset() and _held_at_least(net, "a", wanted)


def test_a_peer_that_leaves_is_no_longer_waited_for() -> None:
    net = Net(["a", "b", "c"], config=SLOW, connected=False)
    net.cut = {"c"}
    net.set_peers("a", ["b", "c"])
    assert net.nodes["a"].repl.syncing() == {"b", "c"}
    net.set_peers("b", ["a"])
    net.run_until(net.now + 50)
    assert net.nodes["a"].repl.syncing() == {"c"}
    net.set_peers("a", ["b"])
    assert net.nodes["a"].repl.syncing() == frozenset()


def test_a_first_exchange_is_not_rate_limited_by_a_periodic_digest_answered_just_before() -> None:
    """A registry killed and started again before its peer noticed is the same peer to it: the periodic
    digest answered for its former self must not leave its first digest unanswered; a second first
    digest within the window is limited as before."""
    net = Net(["a", "b"], config=SLOW, connected=False)
    b = net.nodes["b"].repl
    b.set_peers(["a"], now_ms=net.now)
    b.drain()
    b.receive(wire.encode(wire.Digest("a", {"web": b"\0" * 8}, True)), now_ms=net.now)  # periodic, differs
    assert len(b.drain()) == 1
    first = wire.encode(wire.Digest("a", {}, True, ask=5))
    b.receive(first, now_ms=net.now + 1)
    [(_, mark)] = b.drain()
    assert wire.decode(mark, net.limits) == wire.end_mark("b", 5, 0)
    b.receive(first, now_ms=net.now + 2)
    assert b.drain() == [] and b.stats["drop.rate"] == 1
