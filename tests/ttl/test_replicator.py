"""Replicator: a simulated network of 3-5 registries (delay, reordering, loss, a partition, clock offsets)
converges to the last-writer-wins outcome; hostile and excess input is dropped and counted."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from registry.ttl import wire
from registry.ttl.entry import Entry
from registry.ttl.replicator import ReplConfig
from tests.ttl.simnet import Net

GROUPS = ["web", "db", "jobs"]


def _chaos(net: Net, rng: random.Random, *, seconds: int, ids: int) -> None:
    """Random writes, refreshes (writes of an id held), deletes on every registry, one partitioned for a
    while, its membership view reacting or not."""
    names = net.names
    cut = rng.choice(names)
    cut_from, cut_to = net.now + rng.randint(0, seconds * 300), net.now + rng.randint(seconds * 500, seconds * 1000)
    react = rng.random() < 0.5
    end = net.now + seconds * 1000
    while net.now < end:
        net.run_until(net.now + rng.randint(1, 150))
        if not net.cut and cut_from <= net.now < cut_to:
            net.cut = {cut}
            if react:
                for n in names:
                    net.set_peers(n, [] if n == cut else [p for p in names if p not in (n, cut)])
        elif net.cut and net.now >= cut_to:
            net.cut = set()
            if react:
                for n in names:
                    net.set_peers(n, [p for p in names if p != n])
        who = rng.choice(names)
        group, id = rng.choice(GROUPS), f"svc-{rng.randrange(ids)}"
        if rng.random() < 0.2:
            net.delete(who, group, id)
        else:
            net.write(who, group, id, addr=f"10.0.0.{rng.randrange(4)}:80", ttl_ms=rng.choice([2_000, 5_000, 30_000]))
    net.cut = set()
    for n in names:
        net.set_peers(n, [p for p in names if p != n])


def _converged(net: Net) -> bool:
    first = net.live(net.names[0], GROUPS)
    return all(net.live(n, GROUPS) == first for n in net.names[1:]) and first == net.expected_live()


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32), st.integers(3, 5), st.sampled_from([0.0, 0.1, 0.3]), st.sampled_from([1024, 3]))
def test_lossy_partitioned_network_converges_to_lww(seed: int, n: int, drop: float, bucketed_from: int) -> None:
    """bucketed_from=3: groups go by bucket sums in anti-entropy (the large-group path) from 3 records."""
    rng = random.Random(seed)
    net = Net([f"reg-{i}" for i in range(n)], seed=seed, max_offset_ms=rng.choice([0, 50, 400]), drop=drop,
              delay_ms=(1, rng.choice([5, 200])), bucketed_from=bucketed_from, tick_lag_ms=rng.choice([0, 300]))
    _chaos(net, rng, seconds=8, ids=12)
    net.drop = 0.0
    # a few anti-entropy rounds (1 s each, jittered), no more writes: every live set equal, and the LWW one
    for _ in range(20):
        net.run_until(net.now + 500)
        if _converged(net):
            break
    assert _converged(net), (seed, {name: sorted(net.live(name, GROUPS)) for name in net.names},
                             sorted(net.expected_live()))
    assert net.expected_live(), "the run left nothing live: it tests nothing"
    for name in net.names:  # the catalog changes each registry returned add up to its live set
        assert net.catalog_matches(name, GROUPS), name


def test_clean_network_write_visible_everywhere_within_batch_and_delay() -> None:
    net = Net(["a", "b", "c"], delay_ms=(1, 1))
    net.run_until(net.now + 100)  # the first digests of set_peers
    e = net.write("a", "web", "x", addr="h:1", ttl_ms=10_000)
    t = net.now
    net.run_until(t + net.config.batch_ms + 1)
    assert all(net.nodes[n].store.get("web", "x") == e for n in "bc")
    assert net.nodes["a"].repl.stats["push.records"] == 1


def test_unknown_sender_dropped() -> None:
    net = Net(["a", "b"])
    repl = net.nodes["b"].repl
    rec = Entry(group="web", id="x", addr="h:1", ttl_ms=10_000, written_ms=net.now, writer="evil")
    for sender in ("evil", "b"):  # a stranger, and a message claiming to come from the receiver itself
        assert repl.receive(wire.encode(wire.Push(sender, [rec])), now_ms=net.now) == []
        assert repl.receive(wire.encode(wire.Digest(sender, {"web": b"\0" * 8}, True)), now_ms=net.now) == []
    assert repl.stats["drop.unknown_sender"] == 4 and len(repl.store) == 0 and repl.drain() == []
    assert repl.receive(b"\xc1garbage", now_ms=net.now) == [] and repl.stats["drop.malformed"] == 1
    assert repl.receive(wire.encode(wire.Push("a", [rec])), now_ms=net.now) != []  # a peer's is taken


def test_digest_flood_answered_at_the_rate_bound() -> None:
    net = Net(["a", "b"])
    for i in range(50):
        net.write("b", "web", f"s{i}", addr="h:1", ttl_ms=60_000)
    b = net.nodes["b"].repl
    b.drain()
    flood = wire.encode(wire.Digest("a", {}, True))
    window = net.config.anti_entropy_ms // 4
    sent = []
    for ms in range(0, 2 * window, 5):  # a digest every 5 ms for two windows
        b.receive(flood, now_ms=net.now + ms)
        sent.extend(b.drain())
    assert len(sent) == 2, len(sent)  # one answer (one Records message for the one group) per window
    assert b.stats["drop.rate"] == 2 * window // 5 - 2
    msg = wire.decode(sent[0][1], net.limits)
    assert isinstance(msg, wire.Records) and msg.want_back and len(msg.entries) == 50


def test_push_overflow_counted_and_repaired_by_anti_entropy() -> None:
    net = Net(["a", "b", "c"], config=ReplConfig(anti_entropy_ms=1_000, max_queue_records=10))
    net.run_until(net.now + 50)
    for i in range(11):  # the 11th overflows the queue: nothing is pushed
        net.write("a", "web", f"s{i}", addr="h:1", ttl_ms=60_000)
    a = net.nodes["a"].repl
    assert a.stats["push.overflow"] == 1 and a.stats["push.overflow_records"] == 11
    net.run_until(net.now + 100)
    assert a.stats["push.records"] == 0 and len(net.nodes["b"].store) == 0
    net.run_until(net.now + 3_000)  # a's anti-entropy round reaches one peer; theirs reach a and each other
    for n in "bc":
        assert len(net.live(n, ["web"])) == 11, n


def test_new_peer_learns_everything_in_one_round_trip() -> None:
    net = Net(["a", "b"], config=ReplConfig(anti_entropy_ms=60_000), delay_ms=(10, 10), connected=False)
    for i in range(30):
        net.write("a", "web", f"a{i}", addr="h:1", ttl_ms=120_000)
        net.write("b", "db", f"b{i}", addr="h:2", ttl_ms=120_000)
    net.delete("a", "web", "a0")
    net.set_peers("b", ["a"])  # b sees a first: its digest reaches an a that does not know b, dropped
    net.run_until(net.now + 15)
    assert net.nodes["a"].repl.stats["drop.unknown_sender"] == 1
    net.set_peers("a", ["b"])  # so a's digest alone must repair both ways
    t = net.now
    net.run_until(t + 31)  # digest 10 ms, b's records 10 ms, a's difference back 10 ms
    assert net.live("a", GROUPS) == net.live("b", GROUPS) == net.expected_live()
    assert len(net.expected_live()) == 59
    assert net.nodes["a"].repl.stats["ae.records_back"] == 30  # a's group web went back, only it


def test_large_group_goes_in_ranges_and_only_the_difference_comes_back() -> None:
    config = ReplConfig(anti_entropy_ms=60_000, max_message_bytes=4_000)
    net = Net(["a", "b"], config=config, delay_ms=(1, 1), connected=False)
    for i in range(400):
        e = net.write("a", "web", f"s{i:03d}", addr="10.0.0.1:80", ttl_ms=120_000)
        net.nodes["b"].store.merge([e], now_ms=net.now)
    net.write("b", "web", "s007", addr="10.9.9.9:80", ttl_ms=120_000)  # b's newer version of one id
    net.write("b", "web", "zzz", addr="10.9.9.9:80", ttl_ms=120_000)   # and one id a lacks
    net.set_peers("a", ["b"])
    net.set_peers("b", ["a"])
    net.run_until(net.now + 50)
    assert net.live("a", ["web"]) == net.live("b", ["web"]) == net.expected_live()
    for n in "ab":
        assert net.nodes[n].repl.stats["drop.rate"] == 0
    back = net.nodes["a"].repl.stats["ae.records_back"] + net.nodes["b"].repl.stats["ae.records_back"]
    assert back <= 4, back  # the ranges' answers carried only the differing records


def test_busy_large_group_repaired_by_buckets_only() -> None:
    """A 3,000-entry group where each side holds a few records the other lacks or holds older: the round
    sends bucket sums and the records of the differing buckets, not the group."""
    net = Net(["a", "b"], config=ReplConfig(anti_entropy_ms=60_000), delay_ms=(1, 1), connected=False)
    a, b = net.nodes["a"], net.nodes["b"]
    for i in range(3_000):
        e = net.write("a", "web", f"s{i:04d}", addr="10.0.0.1:80", ttl_ms=120_000)
        b.store.merge([e], now_ms=net.now)
    net.run_until(net.now + 1)
    for i in range(0, 3_000, 300):  # 10 refreshes on a, 10 on b, 2 deletes, 2 new ids
        net.write("a", "web", f"s{i:04d}", addr="10.0.0.2:80", ttl_ms=120_000)
        net.write("b", "web", f"s{i + 7:04d}", addr="10.0.0.3:80", ttl_ms=120_000)
    net.delete("a", "web", "s0001")
    net.delete("b", "web", "s0002")
    net.write("a", "web", "new-a", addr="10.0.0.4:80", ttl_ms=120_000)
    net.write("b", "web", "new-b", addr="10.0.0.4:80", ttl_ms=120_000)
    assert a.store.digest() != b.store.digest()
    net.set_peers("b", ["a"])  # b's digest reaches an a that does not know b: dropped
    net.run_until(net.now + 2)
    net.set_peers("a", ["b"])  # a's digest to b: b answers with its bucket sums
    net.run_until(net.now + 10)
    assert net.live("a", ["web"]) == net.live("b", ["web"]) == net.expected_live()
    assert a.store.digest() == b.store.digest()
    assert b.repl.stats["ae.buckets_sent"] == 1
    sent = a.repl.stats["sent.bytes"] + b.repl.stats["sent.bytes"]
    assert sent < 30_000, sent  # the group itself is ~270 KB


def test_flood_of_asks_draws_at_most_the_answer_budget() -> None:
    """Records asks (want_back) with varied ranges, none rate-limited by key: what they draw to one peer
    per window is bounded (three times the records held, plus 1,024), then they are dropped and counted."""
    net = Net(["a", "b"])
    for i in range(50):
        net.write("b", "web", f"s{i:02d}", addr="h:1", ttl_ms=60_000)
    b = net.nodes["b"].repl
    b.drain()
    drawn = 0
    for n in range(200):
        ask = wire.encode(wire.Records("a", "web", [], True, None if n == 0 else f"{n:03d}", None))
        b.receive(ask, now_ms=net.now)
        for _, data in b.drain():
            msg = wire.decode(data, net.limits)
            assert isinstance(msg, wire.Records)
            drawn += len(msg.entries)
    budget = 3 * 50 + 1024
    assert budget - 51 <= drawn <= budget and b.stats["drop.budget"] > 100
    window = net.config.anti_entropy_ms // 4
    b.receive(wire.encode(wire.Records("a", "web", [], True, None, None)), now_ms=net.now + window)
    assert len(b.drain()) == 1  # a new window, a new budget


def test_restarted_empty_registry_learns_everything_within_the_budget() -> None:
    """A registry back with an empty store (same name) and a full peer: both digests cross (each sees
    the other as new), and everything comes over in one exchange, nothing refused by the budget."""
    net = Net(["full", "empty"], config=ReplConfig(anti_entropy_ms=60_000), delay_ms=(2, 2), connected=False)
    for g, n in (("big", 1_500), ("small", 300)):
        for i in range(n):
            net.write("full", g, f"s{i:04d}", addr="h:1", ttl_ms=120_000)
    for i in range(200):  # and many groups of one
        net.write("full", f"g{i:03d}", "only", addr="h:1", ttl_ms=120_000)
    net.set_peers("full", ["empty"])
    net.set_peers("empty", ["full"])
    net.run_until(net.now + 20)
    groups = ["big", "small"] + [f"g{i:03d}" for i in range(200)]
    assert net.live("empty", groups) == net.live("full", groups) == net.expected_live()
    assert len(net.expected_live()) == 2_000
    for name in ("full", "empty"):
        stats = net.nodes[name].repl.stats
        assert stats["drop.budget"] == 0 and stats["drop.rate"] == 0
