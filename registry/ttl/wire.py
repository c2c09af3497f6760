"""The replication messages between registries (msgpack), decoded as hostile input.

Four messages, each a msgpack array ``[version, type, sender, ...]`` (`VERSION` 1; a receiver refuses
another version rather than guess at it):

- `Push` ``[1, 1, sender, [record...]]``: a writer's new records (local writes and tombstones).
- `Digest` ``[1, 2, sender, {group: bin}, reply, lo, hi]``: the digests (`TtlStore.digest`) of the
  sender's groups named in ``(lo, hi]`` (None: unbounded; so thousands of groups can go as several
  messages, and a group missing from one is one the sender lacks); reply=True asks the receiver to
  compare and answer (the replicator answers with `Records`). Trailing: ``ask`` (int or nil, below).
- `Records` ``[1, 3, sender, group, [record...], want_back, lo, hi, buckets]``: the sender's records of
  one group whose ids lie in ``(lo, hi]`` (None: unbounded) and, unless buckets is nil, in those buckets
  (`store.bucket_of`), sorted by id. want_back=True asks the receiver for its own records of that range
  and those buckets that differ from these (so one message repairs both ways, and the answer carries only
  the difference); a group too large for one message goes as several ranges. Trailing: ``ref``,
  ``ask``, ``end`` (ints or nil, below).
- `Buckets` ``[1, 4, sender, group, bin]``: a large group's `store.BUCKETS` bucket sums (8 bytes each,
  big-endian): the receiver answers with `Records` of the buckets that differ (want_back), so a round
  over a 10,000-entry group under steady refreshes carries the few buckets touched since, not the group.
  Trailing: ``ref`` (int or nil).

**Asks and their end** (how a restarted registry knows it holds the pool's entries before it says
SERVING): a request (a `Digest`, or `Records` with want_back) may carry ``ask``, a number the asker
picked. Every message of the answer then carries ``ref`` = that number, and the answer ends with an
*end mark*: an empty `Records` of group ``""`` (no group has that name), want_back false, ``ref`` and
``end`` = how many other messages the answer had (0: nothing differed, the "in sync" acknowledgement).
The asker counts: the answer is whole once the end mark and that many messages arrived, in any order
(bundles travel as separate streams, so the end mark may overtake them). Why trailing fields and an
empty `Records` rather than a new message type: a decoder of the first format reads them as what they
were (the trailing fields are ignored, the end mark is an empty `Records` that merges nothing and asks
nothing), so no version bump and no message a peer would count as malformed.

A record is an array, not a map (no field names repeated 10,000 times):
``[group, id, addr, {tag: value}, replicas|nil, weight|nil, ttl_ms, written_ms, writer, deleted, doc]``,
doc as bin. Trailing elements after those a version knows are ignored (room for fields a later minor
change adds); missing ones are an error.

`decode` never raises anything but `WireError`: lengths are bounded before msgpack builds an object
(``max_str_len`` and friends from `Limits`; msgpack's own stack bound stops deep nesting), then every
field's type is checked. Field *bounds* (name lengths, TTL range, tag bytes) are `check_entry`'s, applied
by `TtlStore.merge`, which drops and counts a bad record rather than the whole message.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

from registry.ttl.entry import Entry, Limits
from registry.ttl.store import BUCKETS

__all__ = [
    "MAX_DATA_BYTES",
    "VERSION",
    "Buckets",
    "Digest",
    "Message",
    "MsgType",
    "Push",
    "Records",
    "WireError",
    "chunk_digest",
    "chunk_push",
    "chunk_records",
    "decode",
    "encode",
    "end_mark",
]

VERSION = 1
#: The largest message `decode` reads (memberlist's reliable user messages stop at 1 MiB anyway).
MAX_DATA_BYTES = 4 * 1024 * 1024
#: A digest's bytes (`TtlStore.digest`: 8); room for a longer hash in a later version.
MAX_DIGEST_BYTES = 64
_RECORD_FIELDS = 11
#: Items of one array or map: a message of MAX_DATA_BYTES holds at most this many of the smallest records.
_MAX_ITEMS = MAX_DATA_BYTES // 16


class MsgType(enum.IntEnum):
    PUSH = 1
    DIGEST = 2
    RECORDS = 3
    BUCKETS = 4


class WireError(ValueError):
    """Bytes that are not a message this version reads; ``reason`` names what was wrong."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Push:
    sender: str
    entries: list[Entry]


@dataclass(frozen=True)
class Digest:
    sender: str
    digests: dict[str, bytes]
    reply: bool
    #: The group names these digests cover: (lo, hi]; None is unbounded on that side.
    lo: str | None = None
    hi: str | None = None
    #: Asks for an answer that ends with an end mark (`Records.end`) carrying this number.
    ask: int | None = None


@dataclass(frozen=True)
class Records:
    sender: str
    group: str
    entries: list[Entry]
    want_back: bool
    #: The id range these records cover: ids in (lo, hi]; None is unbounded on that side.
    lo: str | None = None
    hi: str | None = None
    #: The buckets (`store.bucket_of`) these records cover; None: all.
    buckets: tuple[int, ...] | None = None
    #: Part of the answer to the receiver's ask of this number.
    ref: int | None = None
    #: Asks for an answer (to want_back) that ends with an end mark carrying this number.
    ask: int | None = None
    #: Not None: this is the end mark of the answer to `ref`, which had this many other messages.
    end: int | None = None

    @property
    def is_end(self) -> bool:
        return self.end is not None


@dataclass(frozen=True)
class Buckets:
    sender: str
    group: str
    #: `store.BUCKETS` sums, by bucket.
    sums: tuple[int, ...]
    #: Part of the answer to the receiver's ask of this number.
    ref: int | None = None


def end_mark(sender: str, ref: int, count: int) -> Records:
    """The end of the answer to ask `ref`, which had `count` other messages (see the module docstring)."""
    return Records(sender, "", [], False, ref=ref, end=count)


Message = Push | Digest | Records | Buckets


# -- encoding ------------------------------------------------------------------------------------------

def _record(entry: Entry) -> list[Any]:
    return [entry.group, entry.id, entry.addr, dict(entry.tags), entry.replicas, entry.weight,
            entry.ttl_ms, entry.written_ms, entry.writer, entry.deleted, entry.doc]


def _pack(obj: Any) -> bytes:
    data: bytes = msgpack.packb(obj, use_bin_type=True)
    return data


def _header(n: int, fix: int, x16: bytes, x32: bytes) -> bytes:
    """A msgpack container header for `n` items: the fix form under 16, else the 16- or 32-bit one."""
    if n < 16:
        return bytes((fix | n,))
    if n < 1 << 16:
        return x16 + n.to_bytes(2, "big")
    return x32 + n.to_bytes(4, "big")


def _array_header(n: int) -> bytes:
    return _header(n, 0x90, b"\xdc", b"\xdd")


def _map_header(n: int) -> bytes:
    return _header(n, 0x80, b"\xde", b"\xdf")


def encode(msg: Message) -> bytes:
    """One message's bytes (`chunk_push` / `chunk_records` split long entry lists)."""
    if isinstance(msg, Push):
        return _pack([VERSION, MsgType.PUSH.value, msg.sender, [_record(e) for e in msg.entries]])
    if isinstance(msg, Digest):
        return _pack([VERSION, MsgType.DIGEST.value, msg.sender, msg.digests, msg.reply, msg.lo, msg.hi, msg.ask])
    if isinstance(msg, Buckets):
        return _pack([VERSION, MsgType.BUCKETS.value, msg.sender, msg.group, _sums(msg.sums), msg.ref])
    return _pack([VERSION, MsgType.RECORDS.value, msg.sender, msg.group, [_record(e) for e in msg.entries],
                  msg.want_back, msg.lo, msg.hi, None if msg.buckets is None else list(msg.buckets),
                  msg.ref, msg.ask, msg.end])


def _sums(sums: Sequence[int]) -> bytes:
    return b"".join(s.to_bytes(8, "big") for s in sums)


def _chunks(packed: Sequence[bytes], budget: int) -> list[tuple[int, int]]:
    """[start, end) index ranges of `packed` whose bytes sum to at most `budget` (at least one each)."""
    out: list[tuple[int, int]] = []
    start, size = 0, 0
    for i, rec in enumerate(packed):
        if i > start and size + len(rec) > budget:
            out.append((start, i))
            start, size = i, 0
        size += len(rec)
    if start < len(packed) or not out:
        out.append((start, len(packed)))
    return out


#: What a message's array headers and scalars take beyond its strings and records, with room to spare.
_OVERHEAD = 64


def chunk_push(sender: str, entries: Iterable[Entry], max_bytes: int) -> list[bytes]:
    """`Push` messages carrying `entries`, each at most `max_bytes` (a record larger than that alone goes
    in a message of its own: an entry is at most ~5 KiB by `Limits`, a message 512 KiB by default)."""
    packed = [_pack(_record(e)) for e in entries]
    if not packed:
        return []
    head = _pack(VERSION) + _pack(MsgType.PUSH.value) + _pack(sender)
    budget = max_bytes - len(head) - _OVERHEAD
    return [b"".join((_array_header(4), head, _array_header(end - start), *packed[start:end]))
            for start, end in _chunks(packed, budget)]


def chunk_records(sender: str, group: str, entries: Iterable[Entry], *, want_back: bool,
                  max_bytes: int, buckets: Sequence[int] | None = None,
                  ref: int | None = None, ask: int | None = None) -> list[bytes]:
    """`Records` messages for one group, sorted by id, each at most `max_bytes`, whose ranges ``(lo, hi]``
    cover every id together: the first from the bottom, the last to the top (one message covers all),
    each within `buckets` (None: all). An empty `entries` gives one message (an ask, with want_back).
    `ref` and `ask` go in every message (see the module docstring)."""
    ordered = sorted(entries, key=lambda e: e.id)
    packed = [_pack(_record(e)) for e in ordered]
    longest = max((len(e.id.encode("utf-8", "surrogatepass")) for e in ordered), default=0)
    head = _pack(VERSION) + _pack(MsgType.RECORDS.value) + _pack(sender) + _pack(group)
    tail = _pack(None if buckets is None else list(buckets)) + _pack(ref) + _pack(ask) + _pack(None)
    budget = max_bytes - len(head) - len(tail) - 2 * (longest + 5) - _OVERHEAD
    spans = _chunks(packed, budget)
    out = []
    for n, (start, end) in enumerate(spans):
        lo = None if n == 0 else ordered[start - 1].id
        hi = None if n == len(spans) - 1 else ordered[end - 1].id
        out.append(b"".join((_array_header(12), head, _array_header(end - start), *packed[start:end],
                             _pack(want_back), _pack(lo), _pack(hi), tail)))
    return out


def chunk_digest(sender: str, digests: dict[str, bytes], *, reply: bool, max_bytes: int,
                 ask: int | None = None) -> list[bytes]:
    """`Digest` messages for `digests`, sorted by group, each at most `max_bytes`, whose ranges ``(lo, hi]``
    cover every group name together (one message when they fit, the usual case; an empty map gives one),
    each carrying `ask` (each is answered, and ended, on its own)."""
    names = sorted(digests)
    packed = [_pack(name) + _pack(digests[name]) for name in names]
    longest = max((len(n.encode("utf-8", "surrogatepass")) for n in names), default=0)
    head = _pack(VERSION) + _pack(MsgType.DIGEST.value) + _pack(sender)
    budget = max_bytes - len(head) - 2 * (longest + 5) - 9 - _OVERHEAD
    spans = _chunks(packed, budget)
    out = []
    for n, (start, end) in enumerate(spans):
        lo = None if n == 0 else names[start - 1]
        hi = None if n == len(spans) - 1 else names[end - 1]
        out.append(b"".join((_array_header(8), head, _map_header(end - start), *packed[start:end],
                             _pack(reply), _pack(lo), _pack(hi), _pack(ask))))
    return out


# -- decoding ------------------------------------------------------------------------------------------

def _str(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise WireError(f"{what} is not a string")
    return value


def _opt_str(value: object, what: str) -> str | None:
    return None if value is None else _str(value, what)


def _int(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise WireError(f"{what} is not an integer")
    return value


def _opt_int(value: object, what: str) -> int | None:
    return None if value is None else _int(value, what)


def _trailing_int(msg: list[Any], index: int, what: str) -> int | None:
    """An optional trailing field: None when absent (a sender of the first format) or nil."""
    return _opt_int(msg[index], what) if len(msg) > index else None


def _bool(value: object, what: str) -> bool:
    if not isinstance(value, bool):
        raise WireError(f"{what} is not a boolean")
    return value


def _list(value: object, what: str, min_len: int = 0) -> list[Any]:
    if not isinstance(value, list):
        raise WireError(f"{what} is not an array")
    if len(value) < min_len:
        raise WireError(f"{what} has {len(value)} elements, fewer than {min_len}")
    return value


def _entry(value: object) -> Entry:
    r = _list(value, "a record", _RECORD_FIELDS)
    tags = r[3]
    if not isinstance(tags, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items()):
        raise WireError("a record's tags are not a map of strings")
    doc = r[10]
    if not isinstance(doc, bytes):
        raise WireError("a record's doc is not bin")
    return Entry(group=_str(r[0], "a record's group"), id=_str(r[1], "a record's id"),
                 addr=_str(r[2], "a record's addr"), tags=tags,
                 replicas=_opt_int(r[4], "a record's replicas"), weight=_opt_int(r[5], "a record's weight"),
                 ttl_ms=_int(r[6], "a record's ttl_ms"), written_ms=_int(r[7], "a record's written_ms"),
                 writer=_str(r[8], "a record's writer"), deleted=_bool(r[9], "a record's deleted"), doc=doc)


def _entries(value: object) -> list[Entry]:
    return [_entry(r) for r in _list(value, "the records")]


def decode(data: bytes, limits: Limits) -> Message:
    """The message in `data`; `WireError` for anything else (never another exception)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise WireError("not bytes")
    if len(data) > MAX_DATA_BYTES:
        raise WireError(f"{len(data)} bytes, more than {MAX_DATA_BYTES}")
    try:
        obj = msgpack.unpackb(
            data, raw=False, strict_map_key=True, use_list=True,
            max_str_len=max(limits.max_name_bytes, limits.max_addr_bytes, limits.max_tags_bytes),
            max_bin_len=max(limits.max_doc_bytes, MAX_DIGEST_BYTES, 8 * BUCKETS),
            # Not limits.max_entries alone: a peer configured with larger bounds may send more records
            # in one message than we hold in all, and the updates among them must still be read.
            max_array_len=max(limits.max_entries, _MAX_ITEMS),
            max_map_len=max(limits.max_entries, limits.max_tags_bytes, _MAX_ITEMS),
            max_ext_len=0,
        )
    except Exception as exc:  # noqa: BLE001 (hostile bytes: whatever msgpack raises is a bad message)
        raise WireError(f"not msgpack: {type(exc).__name__}: {exc}"[:200]) from None
    msg = _list(obj, "the message", 3)
    version = msg[0]
    if version != VERSION or isinstance(version, bool):
        raise WireError(f"version {str(version)[:20]!r}, this registry reads {VERSION}")
    try:
        kind = MsgType(_int(msg[1], "the message type"))
    except ValueError as exc:
        if isinstance(exc, WireError):
            raise
        raise WireError(f"unknown message type {msg[1]}") from None
    sender = _str(msg[2], "the sender")
    if kind is MsgType.PUSH:
        _list(msg, "a push", 4)
        return Push(sender, _entries(msg[3]))
    if kind is MsgType.DIGEST:
        _list(msg, "a digest", 5)
        digests = msg[3]
        if not isinstance(digests, dict) or not all(
                isinstance(k, str) and isinstance(v, bytes) for k, v in digests.items()):
            raise WireError("the digests are not a map of group to bin")
        lo = _opt_str(msg[5], "lo") if len(msg) > 5 else None
        hi = _opt_str(msg[6], "hi") if len(msg) > 6 else None
        return Digest(sender, digests, _bool(msg[4], "reply"), lo, hi, _trailing_int(msg, 7, "ask"))
    if kind is MsgType.BUCKETS:
        _list(msg, "buckets", 5)
        sums = msg[4]
        if not isinstance(sums, bytes) or len(sums) != 8 * BUCKETS:
            raise WireError(f"the bucket sums are not {8 * BUCKETS} bytes")
        return Buckets(sender, _str(msg[3], "the group"),
                       tuple(int.from_bytes(sums[i:i + 8], "big") for i in range(0, len(sums), 8)),
                       _trailing_int(msg, 5, "ref"))
    _list(msg, "records", 8)
    buckets: tuple[int, ...] | None = None
    if len(msg) > 8 and msg[8] is not None:
        raw = _list(msg[8], "the buckets")
        if len(raw) > BUCKETS or not all(isinstance(b, int) and not isinstance(b, bool) and 0 <= b < BUCKETS
                                         for b in raw):
            raise WireError(f"the buckets are not at most {BUCKETS} integers below {BUCKETS}")
        buckets = tuple(raw)
    group = _str(msg[3], "the group")
    entries = _entries(msg[4])
    if any(e.group != group for e in entries):
        raise WireError("a record's group is not the message's")
    end = _trailing_int(msg, 11, "end")
    if end is not None and (entries or end < 0):
        raise WireError("an end mark carries records or a negative count")
    return Records(sender, group, entries, _bool(msg[5], "want_back"), _opt_str(msg[6], "lo"),
                   _opt_str(msg[7], "hi"), buckets, _trailing_int(msg, 9, "ref"), _trailing_int(msg, 10, "ask"), end)
