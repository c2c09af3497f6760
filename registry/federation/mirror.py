"""`Mirror`: a read-only copy of one remote datacenter's catalog, fed by Watch events (sans-I/O).

Why a real `Catalog` inside: the copy must answer Match exactly as the remote registry does, and the
only way to not drift apart is to run the very code the remote runs (as the caching client's
`registry.client.cache.GroupView` does for one group).  The catalog is built with the remote's
`RingInfo` (algorithm, default replicas, only-passing) and fed each service as the remote's catalog
holds it:

- its tags as the remote sent them, overridden only where the remote's verdict differs from what our
  catalog would read from them: the ring parameters the remote's ring uses (`replicas`, `weight`:
  for "chash" the group's replica count, fixed on the remote by a member long gone perhaps), its
  health and note (the remote's word wins: an older registry routes every live service), `group`
  and `addr`; so in the common case the services handed out are the remote's own, tags and all;
- by kind: a gossiping service through `apply_many` (keyed by name, as Serf names are unique pool
  wide), a TTL service through `apply_ttl` (keyed by group and id: `web/1` and `api/1` both exist), a
  service an adapter imported there through `apply_external` with the remote's `origin` (so Members
  of that datacenter says ``external`` and which adapter, as the remote's own Members does).
  The remote never shows an entry that a service of another kind with the same id holds aside, so
  neither does the copy: before a service of one kind takes an id, the other kinds' holder is removed.

Snapshots: every sequence of snapshots (the first after `reset`, or the remote's resync of a watcher
that fell behind) is built into a fresh catalog, off to the side, and published whole at the marker
that ends it (`{group: "", snapshot: true}`): readers keep the previous copy meanwhile, a group absent
from the sequence is gone, and a "chash" group gets the remote's insert order and group replicas
afresh (a difference applied to the old copy could keep a stale order).  A group's version in the
published copy never goes back across that swap (`carry_versions`): whoever forwards the copy's
changes (`registry.federation.federation`, a Watch of this datacenter) orders them by version, and
the fresh catalog would number from 1 again.  `on_publish(old, new)` is called after each swap.

Deltas are applied to the published catalog in the order received.  For "consistent" rings (the
default) that reproduces the remote exactly: a ring depends on its member set only.  For "chash" the
ring also depends on insert order: every `updated` service is re-inserted (moved last, as the remote's
catalog did, even when it reads equal to ours), but a Watch event does not carry the interleaving of
its `added` and `updated` services: an event with both (or with no service at all: a registry older
than 7adeebf did not report a re-insert without a net change) cannot be followed exactly: it is
applied as well as it can be, counted (`AMBIGUOUS_ORDER`) and `needs_resync` is set, so the driver asks
the remote for a fresh snapshot.

Bounds (`MirrorLimits`): the remote is another operator's, and its stream could make us hold any
number of groups and services, twice while a resync is built aside. Each catalog (the one served and
the one a sequence builds) is bounded, and an event that would take one past its bounds is refused
before any of it is applied (`Drop.OVER_LIMIT`): in a snapshot sequence it breaks the sequence (the
building catalog is dropped), as a delta it ends following (deltas are refused until a snapshot
sequence). Either way the copy served is the remote exactly as it was before that event, never a
truncated group, and the mirror reports itself *stale* from that moment (`stale_for`: Groups'
stale_seconds) with `over_limit` saying why (one warning per episode); `needs_resync` makes the
driver try again (its backoff paces the retries), and a sequence that fits ends the episode. Why
stale and not "not synced": not synced would make every group of that datacenter UNAVAILABLE,
though each still holds an exact past state; stale says what is true, and clients and failover
already weigh staleness.

Every event is hostile input (another datacenter, possibly another operator): bytes that are no
WatchEvent, a delta inside a snapshot sequence or before the first one, a delta for a group the copy
does not hold that removes or updates something, a version not newer than the one applied, a service
of another group, empty or repeated ids, an unknown health word, a ring algorithm we do not know: the
event is dropped and counted by reason (`dropped`); nothing raises out of `apply`.  A bad event in a
snapshot sequence breaks the whole sequence (publishing the rest would lose a group): its remaining
events up to the marker are dropped too, the previous copy stays, and `needs_resync` is set.
"""

from __future__ import annotations

import enum
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from registry.catalog import Catalog
from registry.federation.mirror_copy import Copy, carry_versions, evict, holds, kind_of, remote_tags, same_ring
from registry.limits import MAX_ADDR_BYTES, MAX_NAME_BYTES, MAX_SERVICES, MAX_TAGS_BYTES, tags_bytes, utf8_len
from registry.ring import ALGORITHMS, MAX_MEMBERS
from registry.service import ServiceKind
from registry.v1 import registry_pb2 as pb

__all__ = ["Anomaly", "Drop", "Mirror", "MirrorLimits"]

log = logging.getLogger(__name__)


class Drop(str, enum.Enum):
    """Why an event was not applied (`Mirror.dropped` counts them)."""

    BAD_BYTES = "bad_bytes"  # not a serialized WatchEvent
    BEFORE_SNAPSHOT = "before_snapshot"  # a delta before the first snapshot sequence of this source
    IN_SEQUENCE = "in_sequence"  # a delta between a sequence's first snapshot and its marker
    UNKNOWN_GROUP = "unknown_group"  # a delta removing or updating services of a group not held
    OLD_VERSION = "old_version"  # a version not newer than the group's last applied
    REPEATED_GROUP = "repeated_group"  # a second snapshot of one group in one sequence
    BAD_SERVICE = "bad_service"  # a service of another group, an empty or repeated id, a bad health, too big
    BAD_RING = "bad_ring"  # an unknown ring algorithm, or a sequence whose snapshots disagree on it
    BROKEN_SEQUENCE = "broken_sequence"  # the rest of a snapshot sequence one bad event broke
    OVER_LIMIT = "over_limit"  # it would take the copy (or the one being built) over `MirrorLimits`


class Anomaly(str, enum.Enum):
    """Events applied, but not followed exactly: the driver should resync (`needs_resync`)."""

    GAP = "gap"  # a group's version jumped: the source skipped a change it should have sent
    AMBIGUOUS_ORDER = "ambiguous_order"  # "chash": the event does not say the remote's insert order


@dataclass(frozen=True)
class MirrorLimits:
    """What one remote datacenter's Watch stream can make this registry hold, per catalog: the one
    served and the one a snapshot sequence builds aside are each bounded by these, so a datacenter costs
    at most twice ``max_services`` services (and ``max_groups`` groups) while a resync is built.

    ``max_per_group`` defaults to the most a "consistent" ring holds at all (`registry.ring.MAX_MEMBERS`:
    a remote group cannot legitimately be bigger unless it is "chash"); ``max_services`` and
    ``max_groups`` to the shared `registry.limits.MAX_SERVICES`."""

    max_services: int = MAX_SERVICES
    max_per_group: int = MAX_MEMBERS
    #: Groups the copy keeps a version of (a group with no service left still costs one).
    max_groups: int = MAX_SERVICES


class _Invalid(Exception):
    def __init__(self, reason: Drop) -> None:
        super().__init__(reason.value)
        self.reason = reason


def _new_catalog(ring: pb.RingInfo) -> Catalog:
    if ring.algorithm not in ALGORITHMS or ring.default_replicas < 0:
        raise _Invalid(Drop.BAD_RING)
    return Catalog(algorithm=ring.algorithm, default_replicas=ring.default_replicas or None,
                   only_passing=ring.only_passing)


#: A remote service's tags (key and value bytes summed): its own (`MAX_TAGS_BYTES`, Serf's metadata limit)
#: plus those the remote catalog adds (addr, group, datacenter, health and its note, ring parameters).
MAX_REMOTE_TAGS_BYTES = MAX_TAGS_BYTES + MAX_ADDR_BYTES + 4 * MAX_NAME_BYTES + 256


def _check(ev: pb.WatchEvent) -> None:
    """The event's services belong to its group, with distinct non-empty ids in each list, each of the
    sizes a registry can hold (`registry.limits`): a remote registry's record is someone else's input."""
    for services in (ev.services, ev.added, ev.removed, ev.updated):
        seen: set[str] = set()
        for s in services:
            if s.group != ev.group or not s.id or s.id in seen:
                raise _Invalid(Drop.BAD_SERVICE)
            if (utf8_len(s.id) > MAX_NAME_BYTES or utf8_len(s.group) > MAX_NAME_BYTES
                    or utf8_len(s.origin) > MAX_NAME_BYTES or utf8_len(s.addr) > MAX_ADDR_BYTES
                    or tags_bytes(s.tags) > MAX_REMOTE_TAGS_BYTES):
                raise _Invalid(Drop.BAD_SERVICE)
            if s.health and s.health not in ("passing", "warning", "critical"):
                raise _Invalid(Drop.BAD_SERVICE)
            seen.add(s.id)
    if {s.id for s in ev.added} & {s.id for s in ev.updated}:
        raise _Invalid(Drop.BAD_SERVICE)


class Mirror:
    """The copy of `datacenter`'s catalog; one writer (its follower), readers read `catalog`.

    `catalog` is replaced whole at the end of each snapshot sequence; between sequences it is changed
    in place by deltas, as any catalog (its own lock; readers on other threads see whole groups).
    """

    def __init__(self, datacenter: str, limits: MirrorLimits | None = None) -> None:
        self.datacenter = datacenter
        self.limits = limits if limits is not None else MirrorLimits()
        #: Why the remote is over `limits` (a line for logs), None while it fits: set by the first event
        #: refused for the bounds (the copy then stays as it was, stale from that moment), cleared when
        #: a snapshot sequence that fits is published.
        self.over_limit: str | None = None
        self._now = 0.0
        self._copy = Copy(Catalog())
        #: A sequence of snapshots in progress (built aside), or None.
        self._next: Copy | None = None
        #: No sequence completed from the current source yet (after `reset`): deltas are refused.
        self._fresh = True
        #: A bad event broke the sequence in progress: drop everything up to its marker.
        self._broken = False
        #: A whole snapshot of every group has been applied since the last `reset`.
        self.synced = False
        #: Something was applied that the copy cannot follow exactly: ask the source for snapshots.
        self.needs_resync = False
        #: Events dropped, by reason; anomalies (applied, see `needs_resync`) by kind.
        self.dropped: Counter[Drop] = Counter()
        self.anomalies: Counter[Anomaly] = Counter()
        self.applied = 0  # events applied
        self.sequences = 0  # snapshot sequences published
        #: When the last event was applied (the caller's clock), None before any.
        self.last_event: float | None = None
        self._lost_at: float | None = None
        #: Called (on the applying thread) with (old, new) catalog right after a snapshot sequence
        #: replaced the published copy; an exception is logged, never raised out of `apply`.
        self.on_publish: Callable[[Catalog, Catalog], None] | None = None

    @property
    def catalog(self) -> Catalog:
        """The published copy: Match on it answers as Match on the remote (once `synced`)."""
        return self._copy.catalog

    def version(self, group: str) -> int:
        """The remote's version of `group` last applied (0: none)."""
        return self._copy.versions.get(group, 0)

    # -- the source's life ------------------------------------------------------------------------

    def reset(self) -> None:
        """A new source: its versions are its own, so the next snapshot sequence replaces everything;
        until its marker the previous copy is what readers get."""
        self._next = None
        self._fresh = True
        self._broken = False
        self.synced = False
        self.needs_resync = False

    def mark_lost(self, *, now: float) -> None:
        """No source answers: the copy is kept and grows stale from `now` (the first call's)."""
        if self._lost_at is None:
            self._lost_at = now

    def stale_for(self, now: float) -> float | None:
        """Seconds since the source was lost (until a new source's snapshots are whole); None while following."""
        return None if self._lost_at is None else max(0.0, now - self._lost_at)

    # -- events -----------------------------------------------------------------------------------

    def apply(self, event: bytes | pb.WatchEvent, *, now: float) -> None:
        """Apply one event of a Watch of every group, or drop it (counted in `dropped`)."""
        ev: pb.WatchEvent | None = None
        self._now = now
        try:
            ev = event if isinstance(event, pb.WatchEvent) else self._parse(event)
            if self._broken:
                if ev.snapshot and not ev.group:  # the broken sequence is over
                    self._broken = False
                raise _Invalid(Drop.BROKEN_SEQUENCE)
            if ev.snapshot:
                self._snapshot(ev)
            else:
                self._delta(ev)
        except _Invalid as bad:
            self.dropped[bad.reason] += 1
            if bad.reason is not Drop.BROKEN_SEQUENCE and (self._next is not None or (ev is not None and ev.snapshot)):
                self._next = None
                self._broken = ev is None or not (ev.snapshot and not ev.group)  # a bad marker ends it too
                self.needs_resync = True
            return
        self.applied += 1
        self.last_event = now
        if ev.snapshot and not ev.group:
            self._lost_at = None

    def building(self) -> int:
        """Services in the catalog a snapshot sequence builds aside now (0: none is being built)."""
        return 0 if self._next is None else self._next.count

    def _over(self, why: str) -> _Invalid:
        """The remote is over the bounds: the copy stays as it was, stale from now (it no longer follows
        the remote), one warning per episode; the caller raises the returned drop."""
        self.needs_resync = True
        if self._lost_at is None:
            self._lost_at = self._now
        if self.over_limit is None:
            log.warning("mirror %s: %s; the copy stays as it was, stale from now, until the datacenter fits "
                        "again (events refused: registry_federation_dropped_events_total{reason=\"over_limit\"})",
                        self.datacenter, why)
        self.over_limit = why
        return _Invalid(Drop.OVER_LIMIT)

    @staticmethod
    def _parse(data: bytes) -> pb.WatchEvent:
        ev = pb.WatchEvent()
        try:
            ev.ParseFromString(data)
        except (DecodeError, ValueError):
            raise _Invalid(Drop.BAD_BYTES) from None
        return ev

    def _snapshot(self, ev: pb.WatchEvent) -> None:
        if ev.added or ev.removed or ev.updated:
            raise _Invalid(Drop.BAD_SERVICE)
        nxt = self._next
        if nxt is None:  # the first event of a sequence
            nxt = Copy(_new_catalog(ev.ring))
        elif not same_ring(nxt.catalog, ev.ring):
            raise _Invalid(Drop.BAD_RING)
        if ev.group:
            _check(ev)
            if ev.group in nxt.versions:
                raise _Invalid(Drop.REPEATED_GROUP)
            if not self._fresh and ev.version < self._copy.versions.get(ev.group, 0):
                raise _Invalid(Drop.OLD_VERSION)  # the same source's versions never go back
            lim = self.limits
            if len(ev.services) > lim.max_per_group:
                raise self._over(f"group {ev.group!r} has {len(ev.services)} services, more than {lim.max_per_group}")
            if nxt.count + len(ev.services) > lim.max_services:
                raise self._over(f"more than {lim.max_services} services (snapshot)")
            if len(nxt.versions) >= lim.max_groups:
                raise self._over(f"more than {lim.max_groups} groups (snapshot)")
            self._next = nxt
            nxt.versions[ev.group] = ev.version
            self._upsert(nxt, ev.group, ev.services)
            nxt.count += nxt.catalog.size(ev.group)
            return
        # The marker: publish the sequence whole.
        old = self._copy.catalog
        carry_versions(old, nxt.catalog)
        self._copy = nxt
        self._next = None
        self._fresh = False
        self.synced = True
        self.needs_resync = False
        if self.over_limit is not None:
            log.warning("mirror %s: the datacenter fits its bounds again", self.datacenter)
            self.over_limit = None
        self.sequences += 1
        if self.on_publish is not None:
            try:
                self.on_publish(old, nxt.catalog)
            except Exception:  # the copy is published; a listener's bug must not undo that
                log.exception("mirror %s: on_publish failed", self.datacenter)

    def _delta(self, ev: pb.WatchEvent) -> None:
        if self._next is not None:
            raise _Invalid(Drop.IN_SEQUENCE)
        if self._fresh:
            raise _Invalid(Drop.BEFORE_SNAPSHOT)
        if not ev.group or ev.services:
            raise _Invalid(Drop.BAD_SERVICE)
        _check(ev)
        copy = self._copy
        known = copy.versions.get(ev.group)
        if known is None:
            if ev.removed or ev.updated:
                raise _Invalid(Drop.UNKNOWN_GROUP)
        elif ev.version <= known:
            raise _Invalid(Drop.OLD_VERSION)
        elif ev.version != known + 1:
            self._anomaly(Anomaly.GAP)
        self._check_room(copy, ev, known is None)
        if copy.catalog.algorithm == "chash" and (
                (ev.added and ev.updated) or not (ev.added or ev.removed or ev.updated)):
            self._anomaly(Anomaly.AMBIGUOUS_ORDER)
        copy.versions[ev.group] = ev.version
        before = copy.catalog.size(ev.group)
        try:
            self._remove(copy, ev.group, ev.removed)
            self._upsert(copy, ev.group, ev.added)
            # chash: the remote re-inserted each updated service last; ours may hold an equal one (the same
            # ring parameters after our overrides), which a plain upsert would leave in place.
            self._upsert(copy, ev.group, ev.updated, reinsert=copy.catalog.algorithm == "chash")
        finally:
            copy.count += copy.catalog.size(ev.group) - before

    def _check_room(self, copy: Copy, ev: pb.WatchEvent, new_group: bool) -> None:
        """Refuse a delta that would grow the copy past its bounds, before anything of it is applied:
        the copy then no longer follows the remote, so deltas are refused until a snapshot sequence
        (which is bounded too) replaces it."""
        lim = self.limits
        if new_group and len(copy.versions) >= lim.max_groups:
            self._fresh = True
            raise self._over(f"more than {lim.max_groups} groups")
        gone = {s.id for s in ev.removed if copy.holds(ev.group, s.id)}
        new = {s.id for s in (*ev.added, *ev.updated) if s.id in gone or not copy.holds(ev.group, s.id)}
        growth = len(new) - len(gone)
        if growth <= 0:
            return
        if copy.catalog.size(ev.group) + growth > lim.max_per_group:
            self._fresh = True
            raise self._over(f"group {ev.group!r} would hold more than {lim.max_per_group} services")
        if copy.count + growth > lim.max_services:
            self._fresh = True
            raise self._over(f"more than {lim.max_services} services")

    def _anomaly(self, kind: Anomaly) -> None:
        self.anomalies[kind] += 1
        self.needs_resync = True

    # -- writing the catalog ------------------------------------------------------------------------

    @staticmethod
    def _remove(copy: Copy, group: str, services: Iterable[pb.Service]) -> None:
        evict(copy, group, [s.id for s in services], None)

    def _upsert(self, copy: Copy, group: str, services: Iterable[pb.Service], *, reinsert: bool = False) -> None:
        """Upsert in the given order (chash: insert order), in runs of one kind (and origin); each id's
        holder of another kind leaves first, so the copy never holds an entry aside as the remote might.
        `reinsert`: each service leaves and comes back in the same batch (moved last, even if equal)."""
        catalog = copy.catalog
        ttl = copy.ttl.setdefault(group, set())
        ext = copy.ext.setdefault(group, {})
        run: list[tuple[str, Mapping[str, str] | None]] = []
        run_kind: tuple[ServiceKind, str] | None = None

        def flush() -> None:
            if not run or run_kind is None:
                return
            kind, origin = run_kind
            evict(copy, group, [id_ for id_, _ in run], kind)
            if kind is ServiceKind.TTL:
                catalog.apply_ttl([(group, id_, tags) for id_, tags in run])
                ttl.update(id_ for id_, tags in run if tags is not None)
            elif kind is ServiceKind.EXTERNAL:
                catalog.apply_external(origin, [(group, id_, tags) for id_, tags in run])
                for id_, tags in run:
                    if tags is None:
                        ext.pop(id_, None)
                    else:
                        ext[id_] = origin
            else:
                catalog.apply_many(run)
            run.clear()

        try:
            for s in services:
                kind = kind_of(s)
                key = (kind, s.origin if kind is ServiceKind.EXTERNAL else "")
                if key != run_kind:
                    flush()
                    run_kind = key
                if reinsert and holds(copy, group, s.id, kind, key[1]):
                    run.append((s.id, None))
                run.append((s.id, remote_tags(s, catalog)))
            flush()
        except ValueError:  # a health word _check let through: cannot happen, but never raise out
            raise _Invalid(Drop.BAD_SERVICE) from None
        if not ttl:
            copy.ttl.pop(group, None)
        if not ext:
            copy.ext.pop(group, None)
