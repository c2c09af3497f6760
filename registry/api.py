"""The registry API with no transport in it: what Match, MatchBatch, Members, Groups and
Watch answer, as serialized protobuf bytes in and out. Both gRPC fronts (the native
HTTP/2 one, `registry.native`, and grpcio's, `registry.rpc`) call the same methods, so
they cannot disagree on an answer or an error.

Why the handlers look unusual: they are hot (Match is the whole point of a registry),
so responses are assembled from cached, already-serialized protobuf bytes per service.
A cache entry is keyed by (group, id) and is valid while the catalog still hands out
the *same* Service object (the catalog swaps the object when a member changes), so no
invalidation protocol is needed beyond dropping entries of removed services.

Watch (its fan-out to every watcher, the all-groups stream, the watcher cap) is
`registry.api_watch`'s, a base class of `RegistryCore`.

Members with all=true (`registry members`, like `serf members`) answers from the gossip pool's
member table, not the catalog: the catalog holds only the live members the rings route to,
while an operator also wants to see who is leaving, left or failed (until the pool reaps them).
That table is the server's, so the server hands it over as `RegistryCore.member_table`; a core
over a bare catalog (no gossip) answers with the catalog's live members. Those answers are
built per call, uncached: they serve people and scripts, not routing, and every answer routing
reads (Match, MatchBatch, Members without all, Watch) stays as it was, status left empty.

Health (issue 14): every Service answer carries the service's `health` and `health_note`, read
by the catalog from its tags; "passing" is written out too, so a client can tell a registry
that routes by health from an older one (empty). Members and Watch list a critical service
(an operator wants to see it, and a caching client must hold it to put it back), Match never
returns it: the catalog keeps it off the ring. Its ring parameters are still sent (the ones it
gets back in with), so a caching client's ring takes it back exactly as the server's does.
`RingInfo.only_passing` tells that client whether warning services are off the ring too.

TTL services (issue 15): every Service answer carries `kind`, "gossip" or "ttl" (empty from an
older registry); the catalog puts both on the rings alike, so Match, Members and Watch answer them
alike. Members(all=true) lists TTL services from the catalog ("alive"): no member table has them.

Datacenters (issue 17): Match, MatchBatch, Members, Groups and Watch take a `datacenter`; "" or the
registry's own name (`RegistryCore.datacenter`) takes the path above, at its cost; another one answers
from that datacenter's mirror (`RegistryCore.federation`, see `registry.api_dc`), and Match with
`failover` answers from the nearest datacenter that routes the group when the asked one does not. An
answer names the datacenter that answered, and how stale its mirror is, only when the request named
one or asked for failover: a default answer is byte for byte what it was. The compat service `R`
answers for the registry's own datacenter only.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from google.protobuf.message import DecodeError

from registry import api_dc
from registry.api_dc import Federation, Remote
from registry.api_errors import Exhausted, Invalid, Missing, NotSynced, UnknownDatacenter
from registry.api_pb import ring_info, service_pb
from registry.api_watch import MAX_WATCHERS, WATCH_QUEUE_SIZE, WatchFanOut
from registry.catalog import TAG_ADDR, TAG_GROUP, Catalog, GroupChange, Service, ServiceKind, UnknownGroup
from registry.compat import rpcserver_pb2 as compat_pb2
from registry.datacenter import DEFAULT_DATACENTER
from registry.healthtags import parse_health
from registry.ring import RingNode
from registry.v1 import registry_pb2 as pb

__all__ = [
    "COMPAT_SERVICE",
    "MAX_BATCH_KEYS",
    "MAX_MATCH_N",
    "MAX_WATCHERS",
    "V1_SERVICE",
    "WATCH_QUEUE_SIZE",
    "Exhausted",
    "Invalid",
    "MemberRow",
    "MemberTable",
    "Missing",
    "NotSynced",
    "RegistryCore",
    "StreamMethod",
    "UnaryMethod",
    "UnknownDatacenter",
]

V1_SERVICE = pb.DESCRIPTOR.services_by_name["Registry"].full_name  # "registry.v1.Registry"
COMPAT_SERVICE = compat_pb2.DESCRIPTOR.services_by_name["R"].full_name  # "R" (no package, as in Go)
MAX_MATCH_N = 1000  # more distinct owners of one key than this is a client bug
MAX_BATCH_KEYS = 100_000

#: One gossip member as Members(all=true) lists it: (name, tags, Serf status word, e.g. "failed").
MemberRow = tuple[str, Mapping[str, str], str]
#: Every member of the gossip pool, any status (the registry server's Serf member table).
MemberTable = Callable[[], Iterable[MemberRow]]
#: The Serf status of a member that serves (the only one the catalog and its rings hold).
ALIVE = "alive"

UnaryMethod = Callable[[bytes], bytes]
StreamMethod = Callable[[bytes], AsyncIterator[bytes]]
_M = TypeVar("_M")


def parse(cls: Callable[[], _M], data: bytes) -> _M:
    """`data` as a `cls` message, or Invalid naming the message type."""
    msg: Any = cls()
    try:
        msg.ParseFromString(data)
    except DecodeError as exc:
        raise Invalid(f"request is not a valid {msg.DESCRIPTOR.full_name}: {exc}") from None
    return msg  # type: ignore[no-any-return]


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field1(payload: bytes) -> bytes:
    """`payload` framed as length-delimited field 1 (the `services` field everywhere)."""
    return b"\x0a" + _varint(len(payload)) + payload


class _Encoded:
    """One service's pre-serialized forms (v1 Service and compat MatchResponse, field-1 framed).

    Valid as long as the catalog hands out the same Service object: a service's ring
    parameters depend only on itself and its group's fixed replica count (chash), and its
    health only on its tags.
    """

    __slots__ = ("compat", "compat_bare", "source", "v1")
    source: Service
    v1: bytes
    compat: bytes
    compat_bare: bytes

    def __init__(self, s: Service, node: RingNode) -> None:
        self.source = s
        self.v1 = _field1(service_pb(s, node).SerializeToString())
        self.compat_bare = compat_pb2.MatchResponse(id=s.id, group=s.group, addr=s.addr).SerializeToString()
        self.compat = _field1(self.compat_bare)


class RegistryCore(WatchFanOut):
    """Request handling shared by the v1 and compat services (no gRPC types inside).

    Made on the serving loop. The catalog should be changed on that loop too (the
    registry server does); a change from another thread is handed to the loop.
    """

    def __init__(self, catalog: Catalog, max_watchers: int = MAX_WATCHERS) -> None:
        self.catalog = catalog
        self._init_watch(max_watchers)
        #: What Members(all=true) lists; the registry server sets it to its Serf member table
        #: once gossip runs (None: only the catalog's live members are known).
        self.member_table: MemberTable | None = None
        #: This registry's datacenter (the server sets it from -datacenter): what "" means in a request.
        self.datacenter = DEFAULT_DATACENTER
        #: The mirrors of the other datacenters (the server sets it with -wan-bind; None: none).
        self.federation: Federation | None = None
        self._remote_encoded = api_dc.RemoteEncoded(lambda s, node: _field1(service_pb(s, node).SerializeToString()))
        self._encoded: dict[str, dict[str, _Encoded]] = {}
        self._unsubscribe = catalog.subscribe(self._on_change)

    def close(self) -> None:
        self._unsubscribe()

    # -- cache ---------------------------------------------------------------------------

    def encoded(self, s: Service) -> _Encoded:
        group = self._encoded.get(s.group)
        if group is None:
            group = self._encoded[s.group] = {}
        e = group.get(s.id)
        if e is None or e.source is not s:
            e = group[s.id] = _Encoded(s, self.catalog.ring_node(s))
        return e

    def service_pb(self, s: Service) -> pb.Service:
        """`s` as answers carry it, ring parameters and health included."""
        return service_pb(s, self.catalog.ring_node(s))

    def _on_change(self, change: GroupChange) -> None:
        """Catalog callback (runs right after the change, on the applying thread)."""
        cached = self._encoded.get(change.group)
        if cached is not None:
            for s in change.removed:
                cached.pop(s.id, None)
        # Serialized once for every watcher (if any), with the group as it is right after the change.
        self._watch_change(change.group, change.version, lambda: pb.WatchEvent(
            group=change.group,
            version=change.version,
            added=[self.service_pb(s) for s in change.added],
            removed=[self.service_pb(s) for s in change.removed],
            updated=[self.service_pb(s) for s in change.updated],
        ).SerializeToString())

    # -- queries -------------------------------------------------------------------------

    @staticmethod
    def check_group(group: str) -> None:
        if not group:
            raise Invalid("group is empty")

    def match(self, group: str, key: str, n: int, catalog: Catalog | None = None) -> list[Service]:
        """The n owners of `key` (n=0: 1) in the local catalog, or in `catalog` (a mirror's)."""
        if not group:
            raise Invalid("group is empty")
        if not key:
            raise Invalid(f"key is empty (group {group!r})")
        if n == 0:
            n = 1
        elif n < 0 or n > MAX_MATCH_N:
            raise Invalid(f"n={n} out of range 1..{MAX_MATCH_N} (group {group!r})")
        cat = self.catalog if catalog is None else catalog
        try:
            found = cat.match(group, key, n)
        except UnknownGroup:
            raise self._missing(group, cat) from None
        if not found:
            raise self._missing(group, cat)
        return found

    def _missing(self, group: str, catalog: Catalog | None = None) -> Missing:
        cat = self.catalog if catalog is None else catalog
        if cat.version(group) > 0:
            members = cat.members(group)
            if members:  # live, but none on the ring: their health keeps them off
                counts = Counter(s.health.word for s in members)
                health = ", ".join(f"{n} {word}" for word, n in sorted(counts.items()))
                passing = "passing" if cat.only_passing else "passing or warning"
                return Missing(f"group {group!r} has no {passing} member ({health})")
            return Missing(f"group {group!r} has no live member")
        return Missing(f"group {group!r} not found")

    # -- datacenters (registry.api_dc) ----------------------------------------------------

    def where(self, datacenter: str) -> Remote | None:
        """None for this registry's own datacenter ("" or its name); else the mirror answering for
        `datacenter` (UnknownDatacenter, NotSynced)."""
        if not datacenter or datacenter == self.datacenter:
            return None
        return api_dc.remote(self.federation, self.datacenter, datacenter)

    def match_in(self, group: str, key: str, n: int, datacenter: str,
                 failover: bool = False) -> tuple[list[Service], Remote | None]:
        """Match in `datacenter` (None in the answer: the local one answered); with `failover`, when
        it routes no service of the group, in the first datacenter of `api_dc.failover_order` that does.
        A request's own mistakes (Invalid, an unknown datacenter) never fail over."""
        try:
            where = self.where(datacenter)
            return self.match(group, key, n, None if where is None else where.catalog), where
        except Missing as exc:
            if not failover or isinstance(exc, UnknownDatacenter):
                raise
            for dc in api_dc.failover_order(self.federation, self.datacenter, datacenter or self.datacenter):
                try:
                    where = self.where(dc)
                    return self.match(group, key, n, None if where is None else where.catalog), where
                except Missing:
                    continue
            raise

    def answered(self, where: Remote | None, field: int) -> bytes:
        """The answer's datacenter and staleness fields (`field`: the datacenter's field number)."""
        if where is None:
            return api_dc.answer_fields(field, self.datacenter, 0.0)
        return api_dc.answer_fields(field, where.name, where.stale)

    def encode_in(self, where: Remote | None, s: Service) -> bytes:
        """`s`'s serialized v1 form (field 1 framed), from the cache of the catalog it came from."""
        return self.encoded(s).v1 if where is None else self._remote_encoded(where, s)

    def match_batch(self, group: str, keys: Sequence[str], catalog: Catalog | None = None) -> list[Service]:
        if not group:
            raise Invalid("group is empty")
        if len(keys) > MAX_BATCH_KEYS:
            raise Invalid(f"{len(keys)} keys, at most {MAX_BATCH_KEYS} per batch (group {group!r})")
        if "" in keys:
            raise Invalid(f"key #{list(keys).index('')} is empty (group {group!r})")
        cat = self.catalog if catalog is None else catalog
        try:
            found = cat.match_batch(group, keys)
        except UnknownGroup:
            raise self._missing(group, cat) from None
        if len(found) != len(keys):
            raise self._missing(group, cat)
        return found

    def members(self, group: str, catalog: Catalog | None = None) -> list[Service]:
        if not group:
            raise Invalid("group is empty")
        cat = self.catalog if catalog is None else catalog
        try:
            found = cat.members(group)
        except UnknownGroup:
            raise self._missing(group, cat) from None
        if not found:
            raise self._missing(group, cat)
        return found

    def members_all(self, group: str, where: Remote | None = None) -> list[pb.Service]:
        """Every member of `group` (every group when "") the gossip pool knows, any status, by
        (group, id), status and health set.  A member is listed under the group its tags name; one
        whose tags name no group (a plain Serf agent in the pool) is not a service and is not listed.
        A live member carries its ring parameters (as Members without all), any other 0; a member
        not in the catalog its health as its tags say. TTL and external services, in no member table, are
        listed from the catalog, "alive" (kind "ttl", "external"): they are there exactly while they live."""
        if where is not None:  # another datacenter: its mirror holds its live services only
            return self._members_remote(where.catalog, group)
        table = self.member_table
        groups = [group] if group else self.catalog.groups()
        if table is None:  # no gossip behind this core: the catalog's live members are all it knows
            rows: Iterable[MemberRow] = [(s.id, s.tags, ALIVE) for g in groups for s in self.catalog.members(g)
                                         if s.kind is ServiceKind.GOSSIP]
        else:
            rows = table()
        live: dict[str, dict[str, Service]] = {}
        found: list[pb.Service] = []
        for name, tags, status in rows:
            g = tags.get(TAG_GROUP, "")
            if not g or (group and g != group):
                continue
            service: pb.Service | None = None
            if status == ALIVE:
                in_group = live.get(g)
                if in_group is None:
                    in_group = live[g] = {s.id: s for s in self.catalog.members(g)}
                s = in_group.get(name)
                if s is not None and s.kind is ServiceKind.GOSSIP:  # else a TTL entry of that id: not this row
                    service = self.service_pb(s)
            if service is None:  # not in the catalog (not alive, or not applied yet): no ring parameters
                health, note, _ = parse_health(tags)
                service = pb.Service(id=name, group=g, addr=tags.get(TAG_ADDR, ""), tags=dict(tags),
                                     health=health.word, health_note=note, kind=ServiceKind.GOSSIP.value)
            service.status = status
            found.append(service)
        for g in groups:
            for s in self.catalog.members(g):
                if s.kind is not ServiceKind.GOSSIP:  # TTL and external (imported by an adapter)
                    service = self.service_pb(s)
                    service.status = ALIVE
                    found.append(service)
        if not found:
            raise self._missing(group) if group else Missing("no member in any group")
        found.sort(key=lambda s: (s.group, s.id))
        return found

    def _members_remote(self, catalog: Catalog, group: str) -> list[pb.Service]:
        """Members(all=true) of another datacenter: its mirror's live services, "alive"."""
        found: list[pb.Service] = []
        for g in [group] if group else catalog.groups():
            for s in catalog.members(g):
                service = service_pb(s, catalog.ring_node(s))
                service.status = ALIVE
                found.append(service)
        if not found:
            raise self._missing(group, catalog) if group else Missing("no member in any group")
        found.sort(key=lambda s: (s.group, s.id))
        return found

    def version(self, group: str) -> int:
        return self.catalog.version(group)

    def snapshot(self, group: str) -> tuple[int, bytes]:
        version = self.version(group)
        event = pb.WatchEvent(
            group=group,
            version=version,
            snapshot=True,
            services=[self.service_pb(s) for s in self.catalog.members(group)],
            ring=ring_info(self.catalog),
        )
        return version, event.SerializeToString()

    def snapshot_marker(self) -> bytes:
        """The event that ends a sequence of snapshots in a Watch of every group."""
        marker: bytes = pb.WatchEvent(group="", snapshot=True, ring=ring_info(self.catalog)).SerializeToString()
        return marker

    # -- wire methods: serialized request in, serialized response out --------------------

    def unary_methods(self) -> dict[str, UnaryMethod]:
        """Every unary method by its gRPC path ("/package.Service/Method")."""
        v1, compat = f"/{V1_SERVICE}/", f"/{COMPAT_SERVICE}/"
        return {
            v1 + "Match": self.wire_match,
            v1 + "MatchBatch": self.wire_match_batch,
            v1 + "Members": self.wire_members,
            v1 + "Groups": self.wire_groups,
            compat + "Match": self.wire_compat_match,
            compat + "Members": self.wire_compat_members,
        }

    def stream_methods(self) -> dict[str, StreamMethod]:
        """Every server-streaming method by its gRPC path."""
        return {f"/{V1_SERVICE}/Watch": self.wire_watch}

    def wire_match(self, data: bytes) -> bytes:
        req = parse(pb.MatchRequest, data)
        if req.datacenter or req.failover:
            found, where = self.match_in(req.group, req.key, req.n, req.datacenter, req.failover)
            return b"".join([self.encode_in(where, s) for s in found]) + self.answered(where, 2)
        found = self.match(req.group, req.key, req.n)
        if len(found) == 1:
            return self.encoded(found[0]).v1
        return b"".join([self.encoded(s).v1 for s in found])

    def wire_match_batch(self, data: bytes) -> bytes:
        req = parse(pb.MatchBatchRequest, data)
        where = self.where(req.datacenter) if req.datacenter else None
        found = self.match_batch(req.group, req.keys, None if where is None else where.catalog)
        # Batches repeat few services many times: encode each distinct object once.
        local: dict[int, bytes] = {}
        out = []
        for s in found:
            b = local.get(id(s))
            if b is None:
                b = local[id(s)] = self.encode_in(where, s)
            out.append(b)
        if req.datacenter:
            out.append(self.answered(where, 2))
        return b"".join(out)

    def wire_members(self, data: bytes) -> bytes:
        req = parse(pb.MembersRequest, data)
        where = self.where(req.datacenter) if req.datacenter else None
        if req.all:
            body = b"".join([_field1(s.SerializeToString()) for s in self.members_all(req.group, where)])
        else:
            catalog = None if where is None else where.catalog
            body = b"".join([self.encode_in(where, s) for s in self.members(req.group, catalog)])
        version = self.version(req.group) if where is None else where.catalog.version(req.group)
        if version:
            body += b"\x10" + _varint(version)
        return body + self.answered(where, 3) if req.datacenter else body

    def wire_groups(self, data: bytes) -> bytes:
        req = parse(pb.GroupsRequest, data)
        where = self.where(req.datacenter) if req.datacenter else None
        catalog = self.catalog if where is None else where.catalog
        answer = pb.GroupsResponse(groups=catalog.groups(), ring=ring_info(catalog),
                                   datacenters=api_dc.datacenters_pb(self.federation))
        if req.datacenter:
            answer.datacenter = self.datacenter if where is None else where.name
            answer.stale_seconds = 0.0 if where is None else where.stale
        out: bytes = answer.SerializeToString()
        return out

    def wire_compat_match(self, data: bytes) -> bytes:
        req = parse(compat_pb2.MatchRequest, data)
        return self.encoded(self.match(req.group, req.key, 1)[0]).compat_bare

    def wire_compat_members(self, data: bytes) -> bytes:
        """The group's routed services only: a Go client cannot see health, and builds its own
        ring or picks from this list, so a critical service must not be in it."""
        req = parse(compat_pb2.MembersRequest, data)
        routed = [s for s in self.members(req.group) if self.catalog.routed(s)]
        if not routed:
            raise self._missing(req.group)
        return b"".join([self.encoded(s).compat for s in routed])

    def wire_watch(self, data: bytes) -> AsyncIterator[bytes]:
        """Checks the request before returning, so a bad one fails before the stream starts."""
        req = parse(pb.WatchRequest, data)
        where = self.where(req.datacenter) if req.datacenter else None
        if where is not None:
            self.check_watcher_room()
            if not req.group:
                raise Invalid(f"a Watch of every group answers for this registry's own datacenter only "
                              f"({self.datacenter!r}), not {where.name!r}")
            assert self.federation is not None  # where() found the mirror there
            return api_dc.watch_remote(self.federation, where.name, req.group, self._count_watcher)
        return self.open_watch(req.group, req.export)

    def _count_watcher(self, delta: int) -> None:
        self._watcher_total += delta
