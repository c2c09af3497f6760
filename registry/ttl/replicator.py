"""`Replicator`: the protocol between registries that keeps their `TtlStore`s equal, sans I/O.

Bytes, time (ms) and randomness (a `random.Random` the caller seeds) in; ``(peer, bytes)`` to send
reliably (`drain`) and the catalog's `Change`s out. No clock, socket or random call of its own, so a test
runs five of them over a simulated lossy network in milliseconds.

Two mechanisms, both needed:

- **Push** (fast path): each local write or tombstone (`wrote`) is queued and, `ReplConfig.batch_ms` after
  the first queued one, sent to every peer in one `wire.Push` (chunked): writes in between share the
  message, and a key written twice goes once, at its newest. The queue is bounded (`max_queue_records`,
  `max_queue_bytes`); beyond the bound it is dropped whole and counted (``push.overflow``): anti-entropy
  repairs what it carried within a round, which is cheaper than holding an unbounded backlog for a peer
  that cannot keep up.
- **Anti-entropy** (repair): every `ReplConfig.anti_entropy_ms` (jittered +-20 % by the rng, so registries
  do not fall into step) a `wire.Digest` to one random peer, and one at once to each peer that `set_peers`
  adds (a registry that just joined or came back from a partition learns everything in one round trip).
  The receiver compares per-group digests and, for each group that differs, sends its records of the group
  (`wire.Records`, want_back) -- or an empty ask for a group only the sender has. The records' receiver
  merges them and answers with *its* records of that id range whose stamp differs from what it was sent
  (its newer ones, and the ones the sender lacked): one exchange repairs both ways, and the way back
  carries only the difference. A large group (`TtlStore.bucketed_from` records) goes first as its bucket
  sums (`wire.Buckets`), answered by the records of the differing buckets only: under steady refreshes
  the digests of a busy group always differ (writes in flight), and sending 10,000 records each round
  to repair the few dozen written since would cost ~0.1 s of CPU per round. Measured with
  ``python -m tests.ttl.measure_round`` (one round over a 10,000-entry group, one record differing, CPU
  of both registries): the group sent whole 105-109 ms and 903 KB; by buckets 6.9-7.3 ms and 9.3 KB.

  Why not the brief's reply=True digest sent back as well: the want_back answer already repairs the
  other direction, so a digest back would make every differing group travel twice. `wire.Digest.reply`
  stays in the format (a digest with reply=False is counted and not answered); this replicator always
  asks with reply=True.

**The first exchange with a new peer** (`syncing`): a restarted registry must not say SERVING before
it holds the pool's entries, and "no answer" must be told from "not yet". So the digest a new peer gets
carries an ``ask`` number (`wire`: its answer's messages carry ``ref`` = that number and the answer ends
with an end mark counting them; an in-sync digest is answered by the end mark alone). A bucket-sum
answer draws our records of the differing buckets, sent with an ask of their own whose answer (the
peer's newer records of those buckets) is counted the same way. The peer stays in `syncing` until every
ask of its first exchange is answered whole, in whatever order the messages come; the driver waits on
that, with a bound of its own (a peer that died without a leave never answers). A tracked digest that
reaches a peer before it knows us (its member event comes later, via gossip) would be dropped as from an
unknown sender, and the new registry would wait for nothing: such a digest (with an ask) is kept (the
latest per sender and range, at most `_EARLY_MAX`, for one ``anti_entropy_ms``) and answered when
`set_peers` adds its sender. Digests of the periodic rounds carry no ask: they need no end mark.

Hostile input: `receive` decodes with `wire.decode` (only `WireError`, counted ``drop.malformed``), drops a
message whose sender is not in the peer set (``drop.unknown_sender``; the driver sends to a peer's known
address by name, so a sender claiming a peer's name gets at most what that peer would get, sent to that
peer), and bounds what messages can make it send: at most one digest answer per peer (and digest
range, and kind: periodic or with an ask) per ``anti_entropy_ms / 4`` (``drop.rate``), and in that
window answers (to digests, bucket sums
and records asking back) carrying at most three times the records held, plus 1,024, to one peer
(``drop.budget``): an honest exchange never needs more, a flood of asks gets no more.
"""

from __future__ import annotations

import collections
import random
from collections.abc import Iterable
from dataclasses import dataclass

from registry.ttl import wire
from registry.ttl.entry import Entry
from registry.ttl.store import Change, TtlStore

__all__ = ["ReplConfig", "Replicator"]


@dataclass(frozen=True)
class ReplConfig:
    #: A local write is pushed at most this late (writes in between share a message).
    batch_ms: int = 20
    #: A digest to one random peer this often, jittered +-20 % (the fast profile: 1_000).
    anti_entropy_ms: int = 10_000
    #: One message at most (memberlist's reliable user message limit is 1 MiB).
    max_message_bytes: int = 512 * 1024
    #: Bounds on the push queue; beyond either it is dropped and anti-entropy repairs it.
    max_queue_records: int = 50_000
    max_queue_bytes: int = 64 * 1024 * 1024


#: When the rate-limit tables are swept of expired marks (they hold peers x groups x ranges at most).
_SWEEP_AT = 1024
#: Digests with an ask kept from senders not yet peers (see the module docstring).
_EARLY_MAX = 256


@dataclass
class _Ask:
    """One ask of a first exchange: what its answer has brought so far."""

    peer: str
    number: int
    #: Request messages sent under this number (each answered, and ended, on its own).
    asks: int
    ends: int = 0
    #: Answer messages the end marks counted, and those that came.
    expected: int = 0
    got: int = 0

    @property
    def whole(self) -> bool:
        return self.ends >= self.asks and self.got >= self.expected


def _size(entry: Entry) -> int:
    """What an entry costs the push queue, roughly its encoded size (chars, not bytes: a bound, not a
    measure)."""
    return (48 + len(entry.group) + len(entry.id) + len(entry.addr) + len(entry.writer) + len(entry.doc)
            + sum(len(k) + len(v) for k, v in entry.tags.items()))


class Replicator:
    """One registry's side of the replication; see the module docstring."""

    def __init__(self, store: TtlStore, config: ReplConfig, rng: random.Random) -> None:
        self.store = store
        self.config = config
        self.name = store.name
        self.stats: collections.Counter[str] = collections.Counter()
        self._rng = rng
        self._peers: list[str] = []
        self._peer_set: frozenset[str] = frozenset()
        self._queue: dict[tuple[str, str], Entry] = {}
        self._queue_bytes = 0
        self._queue_since: int | None = None
        self._next_ae: int | None = None
        self._out: list[tuple[str, bytes]] = []
        #: Digest answers: (peer, lo, with an ask) -> when it was last answered (ms).
        self._answered: dict[tuple[str, str | None, bool], int] = {}
        self._sweep_at = _SWEEP_AT
        #: What answers sent each peer in the current window: peer -> (window start ms, records).
        self._spent: dict[str, tuple[int, int]] = {}
        #: First exchanges under way: ask number -> its state; peer -> its asks not yet answered whole.
        self._asks: dict[int, _Ask] = {}
        self._syncing: dict[str, set[int]] = {}
        self._next_ask = 1
        #: Digests with an ask from senders not yet peers: (sender, lo) -> (when, digest).
        self._early: dict[tuple[str, str | None], tuple[int, wire.Digest]] = {}

    # -- inputs ----------------------------------------------------------------------------------

    def set_peers(self, names: Iterable[str], *, now_ms: int) -> None:
        """The other registries speaking the replication (the driver's view of the member table). A peer
        not there before gets a digest at once."""
        peers = sorted(set(names) - {self.name})
        added = [p for p in peers if p not in self._peer_set]
        self._peers = peers
        self._peer_set = frozenset(peers)
        self._answered = {k: v for k, v in self._answered.items() if k[0] in self._peer_set}
        self._spent = {k: v for k, v in self._spent.items() if k in self._peer_set}
        for gone in [p for p in self._syncing if p not in self._peer_set]:
            for ask in self._syncing.pop(gone):
                self._asks.pop(ask, None)
        for peer in added:
            self.stats["ae.new_peer"] += 1
            self._syncing[peer] = set()
            self._send_digest(peer, self._new_ask(peer))
            for key in [k for k in self._early if k[0] == peer]:
                when, early = self._early.pop(key)
                if now_ms - when < self.config.anti_entropy_ms:
                    self.stats["sync.early_answered"] += 1
                    self._answer_digest(early, now_ms)
        if not peers:
            self._next_ae = None
        elif self._next_ae is None:
            self._next_ae = now_ms + self._interval()

    def wrote(self, entry: Entry, *, now_ms: int) -> None:
        """A local write or tombstone, to push to every peer within `ReplConfig.batch_ms`."""
        if not self._peers:
            return  # nobody to push to: a peer that comes later gets it by anti-entropy
        key = entry.key
        old = self._queue.get(key)
        if old is not None:
            if old.stamp >= entry.stamp:
                return
            self._queue_bytes -= _size(old)
        self._queue[key] = entry
        self._queue_bytes += _size(entry)
        if self._queue_since is None:
            self._queue_since = now_ms
        config = self.config
        if len(self._queue) > config.max_queue_records or self._queue_bytes > config.max_queue_bytes:
            self.stats["push.overflow"] += 1
            self.stats["push.overflow_records"] += len(self._queue)
            self._clear_queue()

    def receive(self, data: bytes, *, now_ms: int) -> list[Change]:
        """A peer's message (hostile bytes); the Changes its records made to the catalog."""
        try:
            msg = wire.decode(data, self.store.limits)
        except wire.WireError:
            self.stats["drop.malformed"] += 1
            return []
        if msg.sender not in self._peer_set:
            self.stats["drop.unknown_sender"] += 1
            if isinstance(msg, wire.Digest) and msg.reply and msg.ask is not None:
                self._keep_early(msg, now_ms)
            return []
        if isinstance(msg, wire.Push):
            self.stats["recv.push"] += 1
            return self.store.merge(msg.entries, now_ms=now_ms)
        if isinstance(msg, wire.Digest):
            self.stats["recv.digest"] += 1
            if msg.reply:
                self._answer_digest(msg, now_ms)
            return []
        tracked = self._tracked(msg.sender, msg.ref)
        if isinstance(msg, wire.Buckets):
            self.stats["recv.buckets"] += 1
            # part of a first exchange: our records of the differing buckets go with an ask of their own
            self._answer_buckets(msg, now_ms, ask=None if tracked is None else self._new_ask(msg.sender, 0))
            self._got(tracked)
            return []
        self.stats["recv.records"] += 1
        if msg.end is not None:
            if tracked is not None:
                tracked.ends += 1
                tracked.expected += msg.end
                self._got(tracked, 0)
            return []
        changes = self.store.merge(msg.entries, now_ms=now_ms)
        if msg.want_back:
            self._answer_records(msg, now_ms)
        self._got(tracked)
        return changes

    def tick(self, *, now_ms: int) -> list[Change]:
        """What is due at `now_ms`: the batched push, an anti-entropy round, expiry."""
        if self._queue_since is not None and now_ms >= self._queue_since + self.config.batch_ms:
            self._flush()
        if self._next_ae is not None and now_ms >= self._next_ae:
            self._next_ae = now_ms + self._interval()
            self.stats["ae.rounds"] += 1
            self._send_digest(self._rng.choice(self._peers))
        return self.store.expire(now_ms=now_ms)

    # -- outputs ---------------------------------------------------------------------------------

    def next_deadline(self) -> int | None:
        """The earliest instant (ms) `tick` has work, None if none."""
        deadlines = [d for d in (
            None if self._queue_since is None else self._queue_since + self.config.batch_ms,
            self._next_ae,
            self.store.next_expiry(),
        ) if d is not None]
        return min(deadlines) if deadlines else None

    def syncing(self) -> frozenset[str]:
        """The peers whose first exchange (`set_peers` added them) is not yet answered whole: what a
        registry that just joined waits for before it says SERVING (see the module docstring)."""
        return frozenset(p for p, asks in self._syncing.items() if asks)

    def drain(self) -> list[tuple[str, bytes]]:
        """(peer name, message) to send reliably, in order; emptied."""
        out, self._out = self._out, []
        return out

    # -- internals -------------------------------------------------------------------------------

    def _interval(self) -> int:
        base = self.config.anti_entropy_ms
        return max(1, self._rng.randint(base * 4 // 5, base * 6 // 5))

    def _clear_queue(self) -> None:
        self._queue = {}
        self._queue_bytes = 0
        self._queue_since = None

    def _flush(self) -> None:
        messages = wire.chunk_push(self.name, self._queue.values(), self.config.max_message_bytes)
        self.stats["push.records"] += len(self._queue)
        self._clear_queue()
        for peer in self._peers:
            for message in messages:
                self._send(peer, message)

    def _send(self, peer: str, message: bytes) -> None:
        self.stats["sent.messages"] += 1
        self.stats["sent.bytes"] += len(message)
        self._out.append((peer, message))

    def _send_digest(self, peer: str, ask: int | None = None) -> None:
        messages = wire.chunk_digest(self.name, self.store.digest(), reply=True,
                                     max_bytes=self.config.max_message_bytes, ask=ask)
        if ask is not None:
            self._asks[ask].asks = len(messages)
        for message in messages:
            self._send(peer, message)

    # -- first exchanges ---------------------------------------------------------------------------

    def _new_ask(self, peer: str, asks: int = 1) -> int:
        """A new ask of `peer`'s first exchange (its request count set once the requests are made)."""
        ask = self._next_ask
        self._next_ask += 1
        self._asks[ask] = _Ask(peer, ask, asks)
        self._syncing.setdefault(peer, set()).add(ask)
        return ask

    def _tracked(self, sender: str, ref: int | None) -> _Ask | None:
        """The ask `ref` answers, if it is one of `sender`'s first exchange still open."""
        if ref is None:
            return None
        ask = self._asks.get(ref)
        return ask if ask is not None and ask.peer == sender else None

    def _got(self, ask: _Ask | None, n: int = 1) -> None:
        """`n` more messages of an ask's answer came; closes the ask (and the peer's first exchange)
        once whole."""
        if ask is None:
            return
        ask.got += n
        if not ask.whole:
            return
        del self._asks[ask.number]
        pending = self._syncing.get(ask.peer)
        if pending is not None:
            pending.discard(ask.number)
            if not pending:
                self.stats["sync.peers_done"] += 1

    def _end(self, peer: str, ask: int | None, count: int, now_ms: int) -> None:
        """The end mark of an answer to `ask` (nothing when the request asked for none). An answer of
        nothing (in sync) is charged to the peer's budget like one of records."""
        if ask is None or (count == 0 and not self._spend(peer, 0, now_ms)):
            return
        self._send(peer, wire.encode(wire.end_mark(self.name, ask, count)))

    def _window(self) -> int:
        return max(1, self.config.anti_entropy_ms // 4)

    def _budget(self) -> int:
        """Records the answers to one peer may carry per window. An honest exchange sends a peer each
        record at most twice (our answer to its digest, and our answer to the asks our own digest drew
        from it), plus one per answer (at most one per group); this bounds what a flood of asks (varied
        ranges, buckets, groups) can draw."""
        return 3 * len(self.store) + 1024

    def _can_spend(self, peer: str, now_ms: int) -> bool:
        """Whether the peer's answer budget has room at all (checked before the work of an answer)."""
        start, spent = self._spent.get(peer, (now_ms, 0))
        if now_ms - start < self._window() and spent >= self._budget():
            self.stats["drop.budget"] += 1
            return False
        return True

    def _spend(self, peer: str, records: int, now_ms: int) -> bool:
        """Charge an answer of `records` records (and one for the answer) to the peer's window; False
        (counted) if it does not fit."""
        start, spent = self._spent.get(peer, (now_ms, 0))
        if now_ms - start >= self._window():
            start, spent = now_ms, 0
        if spent + records + 1 > self._budget():
            self.stats["drop.budget"] += 1
            return False
        self._spent[peer] = (start, spent + records + 1)
        return True

    def _limited(self, key: tuple[str, str | None, bool], now_ms: int) -> bool:
        """Whether `key` was answered less than ``anti_entropy_ms / 4`` ago (counted); else marks it."""
        window = self._window()
        last = self._answered.get(key)
        if last is not None and now_ms - last < window:
            self.stats["drop.rate"] += 1
            return True
        self._answered[key] = now_ms
        if len(self._answered) >= self._sweep_at:
            self._answered = {k: v for k, v in self._answered.items() if now_ms - v < window}
            self._sweep_at = max(_SWEEP_AT, 2 * len(self._answered))
        return False

    @staticmethod
    def _in_range(name: str, lo: str | None, hi: str | None) -> bool:
        return (lo is None or name > lo) and (hi is None or name <= hi)

    def _answer_digest(self, msg: wire.Digest, now_ms: int) -> None:
        """Records (want_back) for each group in the digest's range whose digest differs from ours, an
        empty ask for each group only they have."""
        # Digests with an ask (a first exchange) are limited apart from the periodic ones: a registry
        # killed and started again before we saw it go is still the same peer to us, and the periodic
        # digest we answered for its former self must not leave its first exchange unanswered (it
        # would wait for the driver's bound). A flood gets at most twice the answers, within the budget.
        if self._limited((msg.sender, msg.lo, msg.ask is not None), now_ms) or not self._can_spend(msg.sender, now_ms):
            return
        ours = {g: d for g, d in self.store.digest().items() if self._in_range(g, msg.lo, msg.hi)}
        theirs = msg.digests
        differ = [g for g in sorted(set(ours) | {g for g in theirs if self._in_range(g, msg.lo, msg.hi)})
                  if ours.get(g) != theirs.get(g)]
        if not differ:
            self._end(msg.sender, msg.ask, 0, now_ms)
            return
        records = {g: self.store.records(g) if g in ours else [] for g in differ}
        big = {g for g, recs in records.items() if len(recs) >= self.store.bucketed_from}
        cost = sum(1 if g in big else len(recs) for g, recs in records.items())
        if not self._spend(msg.sender, cost, now_ms):
            return
        self.stats["ae.groups_differ"] += len(differ)
        sent = 0
        for group in differ:
            if group in big:
                self.stats["ae.buckets_sent"] += 1
                self._send(msg.sender, wire.encode(wire.Buckets(self.name, group,
                                                                tuple(self.store.bucket_sums(group)), msg.ask)))
                sent += 1
                continue
            for message in wire.chunk_records(self.name, group, records[group], want_back=True,
                                              max_bytes=self.config.max_message_bytes, ref=msg.ask):
                self._send(msg.sender, message)
                sent += 1
        self._end(msg.sender, msg.ask, sent, now_ms)

    def _answer_buckets(self, msg: wire.Buckets, now_ms: int, *, ask: int | None = None) -> None:
        """Records (want_back) of the buckets whose sums differ from ours, those buckets named; with
        `ask` (a first exchange's, its request count still 0) they ask for an end mark."""
        if not self._can_spend(msg.sender, now_ms):
            self._drop_ask(ask)
            return
        ours = self.store.bucket_sums(msg.group)
        differ = [b for b, (mine, theirs) in enumerate(zip(ours, msg.sums)) if mine != theirs]
        if not differ:
            self._drop_ask(ask)
            return
        records = self.store.records_in(msg.group, differ)
        if not self._spend(msg.sender, len(records), now_ms):
            self._drop_ask(ask)
            return
        self.stats["ae.buckets_differ"] += len(differ)
        messages = wire.chunk_records(self.name, msg.group, records, want_back=True,
                                      max_bytes=self.config.max_message_bytes, buckets=differ, ask=ask)
        if ask is not None:
            self._asks[ask].asks = len(messages)
        for message in messages:
            self._send(msg.sender, message)

    def _keep_early(self, msg: wire.Digest, now_ms: int) -> None:
        """Keep a first-exchange digest from a sender not yet a peer (bounded; stale ones go first)."""
        if len(self._early) >= _EARLY_MAX and (msg.sender, msg.lo) not in self._early:
            age = self.config.anti_entropy_ms
            self._early = {k: v for k, v in self._early.items() if now_ms - v[0] < age}
            if len(self._early) >= _EARLY_MAX:
                self.stats["drop.early_full"] += 1
                return
        self.stats["sync.early_kept"] += 1
        self._early[(msg.sender, msg.lo)] = (now_ms, msg)

    def _drop_ask(self, ask: int | None) -> None:
        """An ask made for requests that were not sent after all (nothing to wait for)."""
        if ask is None:
            return
        state = self._asks.pop(ask, None)
        if state is not None:
            pending = self._syncing.get(state.peer)
            if pending is not None:
                pending.discard(ask)

    def _answer_records(self, msg: wire.Records, now_ms: int) -> None:
        """Our records of the message's group and id range whose stamp differs from what it carried."""
        if not self._can_spend(msg.sender, now_ms):
            return
        theirs = {e.id: e.stamp for e in msg.entries}
        held = (self.store.records(msg.group) if msg.buckets is None
                else self.store.records_in(msg.group, msg.buckets))
        back = [e for e in held if self._in_range(e.id, msg.lo, msg.hi) and theirs.get(e.id) != e.stamp]
        if not back:
            self._end(msg.sender, msg.ask, 0, now_ms)
            return
        if not self._spend(msg.sender, len(back), now_ms):
            return
        self.stats["ae.records_back"] += len(back)
        messages = wire.chunk_records(self.name, msg.group, back, want_back=False,
                                      max_bytes=self.config.max_message_bytes, ref=msg.ask)
        for message in messages:
            self._send(msg.sender, message)
        self._end(msg.sender, msg.ask, len(messages), now_ms)
