"""`TtlStore`: the replicated map (group, id) -> `Entry` one registry holds, sans I/O.

Every registry holds the same map: local writes (`write`, `delete`) and what peers send (`merge`) are
ordered last-writer-wins on `Entry.stamp`; a record whose stamp equals the one held is a no-op, so merges
are idempotent and commutative and every registry that has seen the same records holds the same map,
whatever order they came in. Each call returns the `Change`s the catalog must make: an entry that came
onto the ring or whose service (addr, tags, replicas, weight) changed, or one that left it. A refresh that
only moves the stamp is no Change: 1,000 refreshes a second must not make the catalog rebuild a ring.

Expiry: a live entry is gone at ``written_ms + ttl_ms`` (`Entry.expires_ms`) on every registry's clock.
`expire` turns it into a tombstone *of the same stamp* rather than forgetting it at once: an older write
of that id with a longer TTL (a service that re-registered with a shorter one), delayed by a partition,
must still lose to it, as it would on a registry that got both in order. Tombstones (deletes and expired
entries) are forgotten at `Entry.tombstone_expires_ms`. A record that arrives already expired is taken as
that tombstone (it still beats older records), or dropped if the tombstone too is past.

Bounds (`Limits`): a new key beyond ``max_per_group`` or ``max_entries`` is refused (`Refused` on a local
write, counted on a merge); a key held is always updated, and an accepted entry is never dropped to make
room. Tombstones count toward the bounds because they are held in memory like entries: not counting them
would let a churn of short-lived ids grow the store without bound for a minute at a time.

Costs: `write`, `delete` and each merged record are O(log n) (a heap push); `expire` is O(expired log n):
deadlines sit in a heap of ``(deadline, seq, entry)`` with lazy deletion (an item whose entry is no longer
the one held is skipped), rebuilt when it holds more than twice the records. `digest` is O(groups): each
group keeps the sum mod 2**64 of its records' xxh64 (an order-independent hash updated in O(1) per
change), folded with the record count into 8 bytes. A group of `bucketed_from` records or more also keeps
the sums of its `BUCKETS` buckets (ids hashed by `bucket_of`), so anti-entropy can find the few records
that differ in a large group without sending it (`registry.ttl.replicator`).

Memory (tracemalloc, 100,000 entries of an addr and 3 short tags in 10 groups, Python 3.11.7,
``python -m tests.ttl.measure_memory``): ~780 bytes per entry for local writes, of which ~260 are the
entry's own strings (id, addr, tag values), ~180 its tags dict, ~170 the Entry, ~140 the heap item and
its deadline, the rest the group's dict slot (75 MiB in all); ~860 bytes per entry when the same
entries are merged from peers' messages (decoded strings are not shared). A write or a merged record
takes ~20 us.
"""

from __future__ import annotations

import collections
import dataclasses
import heapq
import itertools
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import xxhash

from registry.ttl.entry import Entry, Limits, Refused, RefusedReason, check_entry

__all__ = ["BUCKETED_FROM", "BUCKETS", "Change", "TtlStore", "bucket_of", "record_hash"]

_MASK = (1 << 64) - 1
#: Anti-entropy compares a large group bucket by bucket (the ids hashed into this many), so a round sends
#: the records of the few buckets that differ, not the whole group (`registry.ttl.replicator`).
BUCKETS = 1024
#: Groups of at least this many records keep their bucket sums as they change (a list of `BUCKETS` ints,
#: ~40 KB: small beside the group's ~800 KB); smaller groups compute them when asked.
BUCKETED_FROM = 1024
_NO_TAGS: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True)
class Change:
    """What the catalog must now hold for (group, id): `entry` on the ring, or (None) nothing."""

    group: str
    id: str
    entry: Entry | None


def record_hash(entry: Entry) -> int:
    """The xxh64 of what identifies a record's version: id, stamp and deleted (the group is the digest's).

    Length-prefixed so no two records encode alike; the writer goes last, unprefixed."""
    ident = entry.id.encode("utf-8", "surrogatepass")
    data = b"".join((
        len(ident).to_bytes(4, "big"), ident,
        (entry.written_ms & _MASK).to_bytes(8, "big"),
        b"\x01" if entry.deleted else b"\x00",
        entry.writer.encode("utf-8", "surrogatepass"),
    ))
    return xxhash.xxh64_intdigest(data)


def _same_service(a: Entry, b: Entry) -> bool:
    """Whether the catalog would see the same service: what `entry_tags` reads, not the stamp or doc."""
    return (a.addr == b.addr and a.replicas == b.replicas and a.weight == b.weight
            and dict(a.tags) == dict(b.tags))


def bucket_of(id: str) -> int:
    """The bucket (0..BUCKETS-1) of an id, the same on every registry: the xxh64 of its UTF-8."""
    return xxhash.xxh64_intdigest(id.encode("utf-8", "surrogatepass")) % BUCKETS


class _Group:
    """One group's records, its count of live (not deleted) ones, its running digest sum and, once it is
    large (`BUCKETED_FROM`), the running sums of its `BUCKETS` buckets."""

    __slots__ = ("buckets", "live", "name", "records", "sum")

    def __init__(self, name: str) -> None:
        self.name = name
        self.records: dict[str, Entry] = {}
        self.live = 0
        self.sum = 0
        self.buckets: list[int] | None = None

    def add(self, entry: Entry, sign: int) -> None:
        h = record_hash(entry) * sign
        self.sum = (self.sum + h) & _MASK
        if self.buckets is not None:
            b = bucket_of(entry.id)
            self.buckets[b] = (self.buckets[b] + h) & _MASK


class TtlStore:
    """The map (group, id) -> Entry one registry holds; see the module docstring for its rules."""

    def __init__(self, name: str, limits: Limits = Limits(),  # noqa: B008 (frozen, immutable)
                 *, bucketed_from: int = BUCKETED_FROM) -> None:
        if not name:
            raise ValueError("a store needs its registry's name (the writer of its local writes)")
        self.name = sys.intern(name)
        self.limits = limits
        #: Groups of this many records keep bucket sums; the replicator sends them their buckets first.
        self.bucketed_from = max(1, bucketed_from)
        self.stats: collections.Counter[str] = collections.Counter()
        self._groups: dict[str, _Group] = {}
        self._count = 0
        self._heap: list[tuple[int, int, Entry]] = []
        self._seq = itertools.count()
        #: Canonical copies of the strings most records share (writers, tag names), so a merge of
        #: thousands of records from one peer holds each once; bounded by what the store holds.
        self._strings: dict[str, str] = {}

    # -- reads -----------------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._count

    def get(self, group: str, id: str) -> Entry | None:
        """The record held for (group, id): live, expired but not yet `expire`d, or a tombstone."""
        g = self._groups.get(group)
        return None if g is None else g.records.get(id)

    def live(self, group: str, *, now_ms: int) -> list[Entry]:
        """The group's live entries at `now_ms`, sorted by id."""
        g = self._groups.get(group)
        if g is None or not g.live:
            return []
        return sorted((e for e in g.records.values() if e.alive(now_ms)), key=lambda e: e.id)

    def groups(self) -> list[str]:
        """Groups holding a live (not deleted) record, sorted."""
        return sorted(name for name, g in self._groups.items() if g.live)

    def records(self, group: str) -> list[Entry]:
        """Every record of the group, tombstones too (what anti-entropy sends)."""
        g = self._groups.get(group)
        return [] if g is None else list(g.records.values())

    def digest(self) -> dict[str, bytes]:
        """group -> 8 bytes: equal for two stores holding the same records' (id, stamp, deleted)."""
        return {name: xxhash.xxh64_digest(g.sum.to_bytes(8, "big") + len(g.records).to_bytes(8, "big"))
                for name, g in self._groups.items()}

    def bucket_sums(self, group: str) -> list[int]:
        """The group's `BUCKETS` sums mod 2**64 of its records' hashes, by `bucket_of` their id (all zero
        for a group not held): equal buckets hold the same records' (id, stamp, deleted)."""
        g = self._groups.get(group)
        if g is None:
            return [0] * BUCKETS
        if g.buckets is not None:
            return list(g.buckets)
        return self._bucket_sums(g.records.values())

    def records_in(self, group: str, buckets: Iterable[int]) -> list[Entry]:
        """The group's records (tombstones too) whose id falls in one of `buckets`."""
        wanted = set(buckets)
        g = self._groups.get(group)
        if g is None or not wanted:
            return []
        return [e for e in g.records.values() if bucket_of(e.id) in wanted]

    @staticmethod
    def _bucket_sums(entries: Iterable[Entry]) -> list[int]:
        sums = [0] * BUCKETS
        for e in entries:
            b = bucket_of(e.id)
            sums[b] = (sums[b] + record_hash(e)) & _MASK
        return sums

    def next_expiry(self) -> int | None:
        """The earliest instant (ms) `expire` has work, None if it has none."""
        heap = self._heap
        while heap:
            deadline, _, entry = heap[0]
            if self._current(entry, deadline):
                return deadline
            heapq.heappop(heap)
        return None

    # -- local writes ----------------------------------------------------------------------------

    def write(self, group: str, id: str, *, addr: str, ttl_ms: int, now_ms: int,
              tags: Mapping[str, str] | None = None, replicas: int | None = None,
              weight: int | None = None, doc: bytes = b"") -> tuple[Entry, list[Change]]:
        """Register or refresh (group, id) as written here, now; `Refused` before anything changes.

        Stamped ``max(now_ms, held.written_ms + 1)`` when a record is held, whoever wrote it, so a refresh
        always wins over what this registry holds even if a peer's clock ran ahead of ours."""
        held = self.get(group, id)
        written = now_ms if held is None else max(now_ms, held.written_ms + 1)
        g = self._groups.get(group)
        entry = Entry(group=group if g is None else g.name, id=id, addr=addr, tags=self._tags(tags),
                      replicas=replicas, weight=weight, ttl_ms=ttl_ms, written_ms=written, writer=self.name,
                      doc=doc)
        check_entry(entry, self.limits)
        if held is None:
            full = self._full(group)
            if full is not None:
                self.stats[f"refused.{full.value}"] += 1
                raise Refused(full, self._full_message(full, group))
        self.stats["write"] += 1
        before = self._visible(held)
        self._put(entry, held)
        change = self._change(group, id, before, self._visible(entry))
        return entry, [] if change is None else [change]

    def delete(self, group: str, id: str, *, now_ms: int) -> tuple[Entry | None, list[Change]]:
        """A tombstone for (group, id), returned, if it is held live; ``(None, [])`` if not."""
        held = self.get(group, id)
        if held is None or not held.alive(now_ms):
            return None, []
        tomb = Entry(group=held.group, id=held.id, addr="", ttl_ms=held.ttl_ms,
                     written_ms=max(now_ms, held.written_ms + 1), writer=self.name, deleted=True)
        self.stats["delete"] += 1
        self._put(tomb, held)
        return tomb, [Change(group, id, None)]

    # -- what peers send -------------------------------------------------------------------------

    def merge(self, entries: Iterable[Entry], *, now_ms: int) -> list[Change]:
        """Take a peer's records, last writer wins; each bad, future, expired, stale or unfitting one is
        dropped and counted in `stats`. The Changes are the net effect on the catalog, one per key."""
        limits = self.limits
        before: dict[tuple[str, str], Entry | None] = {}
        for record in entries:
            # Stale first: anti-entropy sends whole groups, most of it what we hold; checking those
            # records' fields would be most of the cost of a round.
            held = self.get(record.group, record.id)
            if held is not None and record.stamp <= held.stamp:
                self.stats["merge.stale"] += 1
                continue
            try:
                check_entry(record, limits)
            except Refused:
                self.stats["drop.invalid"] += 1
                continue
            if record.written_ms > now_ms + limits.max_skew_ms:
                self.stats["drop.future"] += 1
                continue
            entry = record if record.deleted or record.expires_ms > now_ms else self._tombstone_of(record)
            if entry.deleted and entry.tombstone_expires_ms(limits) <= now_ms:
                self.stats["drop.expired"] += 1
                continue
            if held is None:
                full = self._full(entry.group)
                if full is not None:
                    self.stats[f"drop.{full.value}"] += 1
                    continue
            key = (entry.group, entry.id)
            if key not in before:
                before[key] = self._visible(held)
            self._put(self._canonical(entry), held)
            self.stats["merge.applied"] += 1
        changes = []
        for (group, id), was in before.items():
            change = self._change(group, id, was, self._visible(self.get(group, id)))
            if change is not None:
                changes.append(change)
        return changes

    # -- time ------------------------------------------------------------------------------------

    def expire(self, *, now_ms: int) -> list[Change]:
        """Entries past their TTL leave the ring (kept as tombstones of their stamp); tombstones past
        `Entry.tombstone_expires_ms` are forgotten. O(expired log n)."""
        changes: list[Change] = []
        heap = self._heap
        while heap and heap[0][0] <= now_ms:
            deadline, _, entry = heapq.heappop(heap)
            if not self._current(entry, deadline):
                continue
            if entry.deleted:
                self._remove(entry)
                self.stats["expire.tombstone"] += 1
            else:
                self._put(self._tombstone_of(entry), entry)
                self.stats["expire.live"] += 1
                changes.append(Change(entry.group, entry.id, None))
        return changes

    # -- internals -------------------------------------------------------------------------------

    def _deadline(self, entry: Entry) -> int:
        return entry.tombstone_expires_ms(self.limits) if entry.deleted else entry.expires_ms

    def _current(self, entry: Entry, deadline: int) -> bool:
        """Whether a heap item still stands for the record held (lazy deletion)."""
        g = self._groups.get(entry.group)
        return g is not None and g.records.get(entry.id) is entry and self._deadline(entry) == deadline

    @staticmethod
    def _tombstone_of(entry: Entry) -> Entry:
        """The tombstone an expired entry becomes: same stamp and TTL, nothing else kept."""
        return Entry(group=entry.group, id=entry.id, addr="", ttl_ms=entry.ttl_ms,
                     written_ms=entry.written_ms, writer=entry.writer, deleted=True)

    @staticmethod
    def _visible(entry: Entry | None) -> Entry | None:
        """What the catalog holds for a record: the entry unless it is a tombstone. Not `Entry.alive`: an
        entry past its TTL stays on the ring until `expire` says so, and if a newer record replaces it
        first, that replacement must say so instead (the entry's own expiry will no longer fire)."""
        return entry if entry is not None and not entry.deleted else None

    @staticmethod
    def _change(group: str, id: str, before: Entry | None, after: Entry | None) -> Change | None:
        if after is None:
            return None if before is None else Change(group, id, None)
        if before is not None and _same_service(before, after):
            return None
        return Change(group, id, after)

    def _full(self, group: str) -> RefusedReason | None:
        """Why a new key in `group` does not fit, or None."""
        g = self._groups.get(group)
        if g is not None and len(g.records) >= self.limits.max_per_group:
            return RefusedReason.GROUP_FULL
        if self._count >= self.limits.max_entries:
            return RefusedReason.STORE_FULL
        return None

    def _full_message(self, reason: RefusedReason, group: str) -> str:
        if reason is RefusedReason.GROUP_FULL:
            return f"group {group!r} holds {self.limits.max_per_group} entries (its bound)"
        return f"this registry holds {self.limits.max_entries} entries (its bound)"

    def _intern(self, text: str) -> str:
        return self._strings.setdefault(text, text)

    def _tags(self, tags: Mapping[str, str] | None) -> Mapping[str, str]:
        """A private copy (the caller's dict may change after the write) with the tag names shared.

        A plain dict typed read-only (`Mapping`), not a MappingProxyType: 48 bytes an entry saved."""
        if not tags:
            return _NO_TAGS
        if not isinstance(tags, Mapping):
            raise Refused(RefusedReason.INVALID, "tags must map strings to strings")
        intern = self._intern
        return {intern(k) if isinstance(k, str) else k: v for k, v in tags.items()}

    def _canonical(self, entry: Entry) -> Entry:
        """`entry` holding the strings the store already holds (its group's name, the writer, tag names),
        so 10,000 records of one group from one writer hold those strings once, not once per message."""
        g = self._groups.get(entry.group)
        group = entry.group if g is None else g.name
        writer = self._intern(entry.writer)
        intern = self._intern
        if (group is entry.group and writer is entry.writer
                and all(intern(k) is k for k in entry.tags)):
            return entry
        return dataclasses.replace(entry, group=group, writer=writer, tags=self._tags(entry.tags))

    def _put(self, entry: Entry, held: Entry | None) -> None:
        """Hold `entry` in place of `held` (the record held for its key, or None)."""
        g = self._groups.get(entry.group)
        if g is None:
            g = self._groups[entry.group] = _Group(entry.group)
        if held is not None:
            g.add(held, -1)
            g.live -= not held.deleted
        else:
            self._count += 1
        g.records[entry.id] = entry
        g.add(entry, 1)
        g.live += not entry.deleted
        if g.buckets is None and len(g.records) >= self.bucketed_from:
            g.buckets = self._bucket_sums(g.records.values())
        heapq.heappush(self._heap, (self._deadline(entry), next(self._seq), entry))
        if len(self._heap) > 2 * self._count + 64:
            self._rebuild_heap()

    def _remove(self, entry: Entry) -> None:
        g = self._groups[entry.group]
        del g.records[entry.id]
        g.add(entry, -1)
        g.live -= not entry.deleted
        if g.buckets is not None and len(g.records) < self.bucketed_from // 2:
            g.buckets = None
        self._count -= 1
        if not g.records:
            del self._groups[entry.group]
        if not self._count:
            self._strings.clear()

    def _rebuild_heap(self) -> None:
        """Drop the heap items that no longer stand for a held record (lazy deletion's garbage)."""
        self._heap = [item for item in self._heap if self._current(item[2], item[0])]
        heapq.heapify(self._heap)
        if len(self._strings) > 2 * self._count + 64:
            held = {s for g in self._groups.values() for e in g.records.values() for s in (e.writer, *e.tags)}
            self._strings = {s: s for s in self._strings if s in held}
