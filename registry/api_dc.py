"""Answers for another datacenter (issue 17): which catalog a request's `datacenter` names, where
Match fails over to, how such an answer says who answered, and a Watch of one group of a mirror.

Why apart from `registry.api`: the registry's own datacenter ("" or its name) must cost what it
cost before, so `RegistryCore` tests the field and comes here only for another datacenter (or a
failover). The mirrors are `registry.federation`'s (`Federation`, made by the server only with
-wan-bind, held as `RegistryCore.federation`); this module knows them through the `Federation`
protocol alone, so a registry without a WAN pool imports nothing of the federation (nor grpcio's
client, which the follower needs).

Answers for a remote datacenter come from the mirror's catalog, a real `Catalog` rebuilt from
that datacenter's Watch stream: Match on it answers as Match there (eventually: see
`stale_seconds`). Its services are other objects than the local catalog's, so they are encoded
apart (`RemoteEncoded`), never in the core's per-(group, id) cache, which would otherwise thrash
between two datacenters holding the same ids.

A Watch of a remote group (`watch_remote`) numbers its events itself (1, 2, ...): the mirror's
catalog is replaced whole after a resync of the follower, and its versions start again, so they
cannot order one stream. Each event is the difference between what the stream sent last and the
mirror's group now, so a replaced catalog costs no fresh snapshot, only what really differs.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from registry.api_errors import UnknownDatacenter
from registry.api_pb import service_pb
from registry.catalog import Catalog, GroupChange, Service
from registry.ring import RingNode
from registry.v1 import registry_pb2 as pb

__all__ = [
    "DatacenterInfo",
    "Federation",
    "Remote",
    "RemoteEncoded",
    "answer_fields",
    "datacenters_pb",
    "failover_order",
    "remote",
    "watch_remote",
]

#: Encoded services kept per remote datacenter before the cache starts afresh (bounds the memory a
#: churning remote group can pin: entries are never invalidated, only superseded).
_ENCODED_MAX = 50_000


class DatacenterInfo(Protocol):
    """One datacenter as Groups lists it."""

    @property
    def name(self) -> str: ...
    @property
    def local(self) -> bool: ...
    @property
    def stale_seconds(self) -> float: ...
    @property
    def rtt_ms(self) -> float | None: ...
    @property
    def registries(self) -> int: ...


class Federation(Protocol):
    """What the API reads of the registry's mirrors (`registry.federation.federation.Federation`)."""

    @property
    def local(self) -> str: ...

    def catalog(self, dc: str) -> Catalog:
        """The mirror's current catalog; UnknownDatacenter or NotSynced."""
        ...

    def stale_for(self, dc: str) -> float:
        """Seconds since the datacenter's sources were lost; 0.0 while following."""
        ...

    def nearest(self) -> list[str]:
        """Other datacenters with a synced mirror, nearest first."""
        ...

    def datacenters(self) -> Sequence[DatacenterInfo]: ...

    def subscribe(self, dc: str, callback: Callable[[GroupChange], None]) -> Callable[[], None]:
        """`callback` after every change of the mirror's catalog (any thread); returns unsubscribe."""
        ...


@dataclass(frozen=True, slots=True)
class Remote:
    """The catalog that answers for `name` (another datacenter's mirror), and how stale it is."""

    name: str
    catalog: Catalog
    stale: float


def _shown(dc: str) -> str:
    return repr(dc if len(dc) <= 64 else dc[:64] + "...")


def remote(federation: Federation | None, local: str, dc: str) -> Remote:
    """The mirror answering for `dc` (not the local datacenter): UnknownDatacenter, NotSynced."""
    if federation is None:
        raise UnknownDatacenter(f"unknown datacenter {_shown(dc)} (known: {local}; this registry has no WAN pool)")
    catalog = federation.catalog(dc)
    return Remote(dc, catalog, federation.stale_for(dc))


def failover_order(federation: Federation | None, local: str, asked: str) -> list[str]:
    """Where a Match that found no routed service in `asked` tries next: the local datacenter (when
    another was asked: it is the nearest of all), then the other synced ones, nearest first."""
    if federation is None:
        return []
    order = [local] if asked != local else []
    order += [dc for dc in federation.nearest() if dc != asked and dc != local]
    return order


def answer_fields(field: int, datacenter: str, stale: float) -> bytes:
    """The answer's `datacenter` (field number `field`) and `stale_seconds` (the next one), serialized
    as protobuf appends them (a message's fields may come in any order; the services come first)."""
    name = datacenter.encode()
    out = bytes([field << 3 | 2, len(name)]) + name  # names are at most 64 bytes: a one-byte length
    if stale > 0:
        out += bytes([(field + 1) << 3 | 1]) + struct.pack("<d", stale)
    return out


def datacenters_pb(federation: Federation | None) -> list[pb.Datacenter]:
    if federation is None:
        return []
    return [pb.Datacenter(name=d.name, local=d.local, stale_seconds=d.stale_seconds, rtt_ms=d.rtt_ms or 0.0,
                          registries=d.registries) for d in federation.datacenters()]


class RemoteEncoded:
    """Remote services' serialized v1 form, per datacenter, valid while its mirror hands out the
    same object (as the core's cache for local services)."""

    def __init__(self, encode: Callable[[Service, RingNode], bytes]) -> None:
        self._encode = encode
        self._by_dc: dict[str, dict[tuple[str, str], tuple[Service, bytes]]] = {}

    def __call__(self, where: Remote, s: Service) -> bytes:
        cache = self._by_dc.get(where.name)
        if cache is None:
            cache = self._by_dc[where.name] = {}
        key = (s.group, s.id)
        hit = cache.get(key)
        if hit is not None and hit[0] is s:
            return hit[1]
        if len(cache) >= _ENCODED_MAX:
            cache.clear()
        data = self._encode(s, where.catalog.ring_node(s))
        cache[key] = (s, data)
        return data


def _service(catalog: Catalog, s: Service) -> pb.Service:

    return service_pb(s, catalog.ring_node(s))


def _ring(catalog: Catalog) -> pb.RingInfo:
    return pb.RingInfo(algorithm=catalog.algorithm, default_replicas=catalog.default_replicas,
                       only_passing=catalog.only_passing)


def _delta(group: str, before: list[Service], after: list[Service], catalog: Catalog) -> pb.WatchEvent | None:
    """The event taking a watcher from `before` to `after` (None: nothing to send). For "chash" the
    members both hold are re-sent as updated, in order, when their order changed (the ring depends on
    insert order, and an updated service is re-inserted last)."""
    was = {s.id: s for s in before}
    now = {s.id: s for s in after}
    added = [s for s in after if s.id not in was]
    removed = [s for s in before if s.id not in now]
    if catalog.algorithm == "chash" and [s.id for s in before if s.id in now] != [s.id for s in after if s.id in was]:
        updated = [s for s in after if s.id in was]
    else:
        updated = [s for s in after if s.id in was and was[s.id] != s]
    if not (added or removed or updated):
        return None
    return pb.WatchEvent(group=group, added=[_service(catalog, s) for s in added],
                         removed=[_service(catalog, s) for s in removed],
                         updated=[_service(catalog, s) for s in updated])


async def watch_remote(federation: Federation, dc: str, group: str, opened: Callable[[int], None]) -> AsyncIterator[bytes]:
    """Snapshot of `group` in `dc`'s mirror, then each change, numbered by this stream (module
    docstring). `opened(+1)` / `opened(-1)` count the stream among the core's watchers. The caller
    checked `dc` already (`remote`), so a bad one failed before the stream started.

    A change is read as the difference between what the stream last sent and the mirror's group
    now, not from the change's own lists: the mirror's catalog may have been replaced between the
    change and its delivery, and changes that come faster than the stream is read coalesce into
    one event (no queue to overflow). A datacenter dropped meanwhile ends the stream (NOT_FOUND)."""
    loop = asyncio.get_running_loop()
    wake = asyncio.Event()

    def on_change(change: GroupChange) -> None:
        if change.group != group:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            wake.set()
        else:
            loop.call_soon_threadsafe(wake.set)

    def snapshot(seq: int) -> tuple[pb.RingInfo, list[Service], bytes]:
        catalog = federation.catalog(dc)
        ring = _ring(catalog)
        held = catalog.members(group)
        event = pb.WatchEvent(group=group, version=seq, snapshot=True, ring=ring,
                              services=[_service(catalog, s) for s in held])
        return ring, held, event.SerializeToString()

    opened(1)
    try:
        unsubscribe = federation.subscribe(dc, on_change)
    except BaseException:
        opened(-1)
        raise
    try:
        seq = 1
        ring, held, data = snapshot(seq)
        yield data
        while True:
            await wake.wait()
            wake.clear()
            catalog = federation.catalog(dc)  # UnknownDatacenter once dropped
            if _ring(catalog) != ring:  # another ring altogether (the remote restarted otherwise): start afresh
                seq += 1
                ring, held, data = snapshot(seq)
                yield data
                continue
            after = catalog.members(group)
            event = _delta(group, held, after, catalog)
            held = after
            if event is not None:
                seq += 1
                event.version = seq
                yield event.SerializeToString()
    finally:
        unsubscribe()
        opened(-1)
