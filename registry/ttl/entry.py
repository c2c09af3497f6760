"""One TTL registration as every registry stores and replicates it, and the bounds every writer checks.

Why a record of its own (not gossip tags): a TTL service does not gossip. A registry takes its write (the
HTTP API), stamps it with the registry's wall clock and name, and replicates the record to every other
registry; each registry expires it at ``written_ms + ttl_ms`` on its own clock. The stamp orders
conflicting writes, last writer wins: ``(written_ms, writer)``, the writer's name breaking a tie between
two registries writing in the same millisecond, so every registry picks the same winner whatever order
the writes reach it in. A delete is a write too (a *tombstone*, ``deleted=True``): it must win over the
older write it removes wherever that write arrives later, so it is kept until that write could no longer
be alive (`tombstone_expires_ms`).

Clock skew: expiry and ordering use the writers' clocks, so registries whose clocks disagree by ``d`` expire
an entry up to ``d`` apart, and a registry whose clock runs ahead wins conflicts it should lose by up to
``d``. `Limits.max_skew_ms` bounds what a peer may claim: a record stamped further in the future than that
is refused (counted), so one registry with a wrong clock cannot pin entries for hours.

Every field is bounded (`Limits`) and checked by `check_entry` both on a local write (the HTTP front turns
`Refused` into a 4xx naming the field) and on every record a peer sends (dropped and counted there).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from registry.limits import MAX_ADDR_BYTES, MAX_NAME_BYTES, MAX_PER_GROUP, MAX_SERVICES, MAX_TAGS_BYTES

__all__ = [
    "RESERVED_TAGS",
    "Entry",
    "Limits",
    "Refused",
    "RefusedReason",
    "check_entry",
    "entry_tags",
]

#: Tags the record's own fields set (the catalog reads them from a gossiping member's tags); a writer
#: may not set them in ``tags``: ``group`` and ``addr`` come from the path and the body, ``replicas`` and
#: ``weight`` from the body's fields of those names.
RESERVED_TAGS = frozenset({"group", "addr", "id", "replicas", "weight"})


class RefusedReason(enum.Enum):
    """Why a write was refused; the HTTP status it maps to is the front's business."""

    INVALID = "invalid"  # a field out of its bounds or malformed: 400
    TOO_LARGE = "too_large"  # body, doc or tags over their byte bounds: 413
    GROUP_FULL = "group_full"  # the group holds max_per_group entries: 507 / 429
    STORE_FULL = "store_full"  # the registry holds max_entries: 507 / 429
    TAKEN = "taken"  # the id is a gossiping member's in that group: 409


class Refused(ValueError):
    """A write the store will not take, with a one-line reason naming the field."""

    def __init__(self, reason: RefusedReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Limits:
    """Bounds on what one registry holds for TTL services (all configurable; the defaults are
    `registry.limits`', which adapters' imports and mirrors share).

    Sized so that the worst case stays small: 100,000 entries of the largest allowed size are
    ~100,000 x (4 KiB doc + 0.5 KiB tags) = ~450 MB, so `max_doc_bytes` is what an operator lowers
    on a small machine; typical entries (an address and a few tags) take ~1 KiB in memory each."""

    #: Entries (tombstones included) in all groups together.
    max_entries: int = MAX_SERVICES
    #: Entries (tombstones included) per group; the consistent ring's hard cap is 16,383 members in all.
    max_per_group: int = MAX_PER_GROUP
    #: UTF-8 bytes of a group name, an id, an addr.
    max_name_bytes: int = MAX_NAME_BYTES
    max_addr_bytes: int = MAX_ADDR_BYTES
    #: Tags, encoded as Serf would (key and value bytes summed): Serf's node metadata limit.
    max_tags_bytes: int = MAX_TAGS_BYTES
    #: The JSON object a hera-style PUT stored, as received.
    max_doc_bytes: int = 4096
    #: TTL bounds (ms).
    min_ttl_ms: int = 1_000
    max_ttl_ms: int = 86_400_000
    #: How far in the future (the receiving registry's clock) a peer's stamp may be.
    max_skew_ms: int = 5_000
    #: How long a tombstone outlives its write at least (ms): a delete must still win over a
    #: refresh of the same id that a partition delayed.
    min_tombstone_ms: int = 60_000


@dataclass(frozen=True)
class Entry:
    """One registration (or, ``deleted``, the tombstone of one) as every registry keeps it."""

    group: str
    id: str
    addr: str
    #: The service's own tags (never the reserved ones: `entry_tags` adds those).
    tags: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), hash=False)
    replicas: int | None = None
    weight: int | None = None
    #: Liveness: the entry is gone at written_ms + ttl_ms unless written again.
    ttl_ms: int = 300_000
    #: The writing registry's wall clock (ms since the epoch) when it took the write.
    written_ms: int = 0
    #: The name (-id) of the registry that took the write.
    writer: str = ""
    deleted: bool = False
    #: A hera-style PUT's JSON object as received (UTF-8 JSON text), returned as is by GET /<service>;
    #: b"" for the /v1 form.
    doc: bytes = b""

    @property
    def key(self) -> tuple[str, str]:
        return (self.group, self.id)

    @property
    def stamp(self) -> tuple[int, str]:
        """Last-writer-wins order: the greater stamp wins, everywhere."""
        return (self.written_ms, self.writer)

    @property
    def expires_ms(self) -> int:
        return self.written_ms + self.ttl_ms

    def tombstone_expires_ms(self, limits: Limits) -> int:
        """When a tombstone may be forgotten: no write it beat can still be alive after it."""
        return self.written_ms + max(self.ttl_ms, limits.min_tombstone_ms) + limits.max_skew_ms

    def alive(self, now_ms: int) -> bool:
        return not self.deleted and now_ms < self.expires_ms


def entry_tags(entry: Entry) -> dict[str, str]:
    """The tags the catalog sees for `entry`: its own plus the reserved ones its fields set, so a TTL
    service and a gossiping one are read by the very same rules (`Catalog._service`)."""
    tags = dict(entry.tags)
    tags["group"] = entry.group
    tags["addr"] = entry.addr
    if entry.replicas is not None:
        tags["replicas"] = str(entry.replicas)
    if entry.weight is not None:
        tags["weight"] = str(entry.weight)
    return tags


def _utf8_len(text: str, what: str) -> int:
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise Refused(RefusedReason.INVALID, f"{what} is not valid UTF-8") from None


def _check_name(text: str, what: str, limit: int) -> None:
    if not isinstance(text, str) or not text:
        raise Refused(RefusedReason.INVALID, f"{what} is empty")
    if _utf8_len(text, what) > limit:
        raise Refused(RefusedReason.INVALID, f"{what} is longer than {limit} bytes")
    if any(ord(c) < 0x20 or c == "\x7f" for c in text):
        raise Refused(RefusedReason.INVALID, f"{what} holds a control character")


def check_entry(entry: Entry, limits: Limits) -> None:
    """`Refused` naming the first field out of bounds; nothing for an entry every registry can hold.

    Checked for local writes and for every record a peer sends: a tombstone is checked like a write
    (its addr may be empty)."""
    _check_name(entry.group, "group", limits.max_name_bytes)
    _check_name(entry.id, "id", limits.max_name_bytes)
    if "/" in entry.group:
        raise Refused(RefusedReason.INVALID, "group holds '/'")
    if not entry.deleted:
        _check_name(entry.addr, "addr", limits.max_addr_bytes)
    elif _utf8_len(entry.addr, "addr") > limits.max_addr_bytes:
        raise Refused(RefusedReason.INVALID, f"addr is longer than {limits.max_addr_bytes} bytes")
    if not limits.min_ttl_ms <= entry.ttl_ms <= limits.max_ttl_ms:
        raise Refused(RefusedReason.INVALID,
                      f"ttl {entry.ttl_ms / 1000:g}s out of range {limits.min_ttl_ms / 1000:g}s.."
                      f"{limits.max_ttl_ms / 1000:g}s")
    if entry.replicas is not None and not 1 <= entry.replicas <= 100_000:
        raise Refused(RefusedReason.INVALID, f"replicas {entry.replicas} out of range 1..100000")
    if entry.weight is not None and not 1 <= entry.weight <= 64:
        raise Refused(RefusedReason.INVALID, f"weight {entry.weight} out of range 1..64")
    size = 0
    for k, v in entry.tags.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise Refused(RefusedReason.INVALID, "tags must map strings to strings")
        if not k:
            raise Refused(RefusedReason.INVALID, "a tag name is empty")
        if k in RESERVED_TAGS:
            raise Refused(RefusedReason.INVALID, f"tag {k!r} is set by the entry's own field, not in tags")
        size += _utf8_len(k, f"tag {k!r}") + _utf8_len(v, f"tag {k!r}'s value")
    if size > limits.max_tags_bytes:
        raise Refused(RefusedReason.TOO_LARGE, f"tags take {size} bytes, more than {limits.max_tags_bytes}")
    if len(entry.doc) > limits.max_doc_bytes:
        raise Refused(RefusedReason.TOO_LARGE, f"the entry's JSON takes {len(entry.doc)} bytes, "
                                               f"more than {limits.max_doc_bytes}")
    if not entry.writer:
        raise Refused(RefusedReason.INVALID, "writer is empty")
    if entry.written_ms <= 0:
        raise Refused(RefusedReason.INVALID, "written_ms is not a time")
