"""How a `registry.federation.mirror.Mirror` writes a remote datacenter's services into its catalogs.

Why apart from the mirror: the mirror is the state machine of a Watch stream (snapshots, deltas,
versions, drops, bounds); this is the mapping of one remote service onto a real `Catalog` exactly as
the remote's catalog holds it (its kind and origin, the tags overridden where our catalog would read
them otherwise), and the bookkeeping of a copy: which ids each kind holds, how many services in all.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from registry.catalog import MAX_REPLICAS_TAG, MAX_WEIGHT, TAG_ADDR, TAG_GROUP, TAG_REPLICAS, TAG_WEIGHT, Catalog
from registry.catalog_batch import GroupState, parse_int
from registry.healthtags import TAG_HEALTH, TAG_HEALTH_NOTE, Health, parse_health
from registry.ring import CHASH_DEFAULT_REPLICAS, DEFAULT_REPLICAS, Ring
from registry.service import ServiceKind
from registry.v1 import registry_pb2 as pb

__all__ = ["Copy", "carry_versions", "evict", "holds", "kind_of", "remote_tags", "same_ring"]


@dataclass
class Copy:
    """One catalog and the remote's version of each of its groups."""

    catalog: Catalog
    versions: dict[str, int] = field(default_factory=dict)
    ttl: dict[str, set[str]] = field(default_factory=dict)  # group -> TTL ids held (the catalog keeps them private)
    ext: dict[str, dict[str, str]] = field(default_factory=dict)  # group -> external id -> its origin
    count: int = 0  # services in the catalog, all groups (kept as events apply: the bounds read it)

    def holds(self, group: str, id_: str) -> bool:
        """Whether a service `id_` of any kind is in `group` (the copy never holds one aside)."""
        return (self.catalog.holds_gossip(group, id_) or id_ in self.ttl.get(group, ())
                or id_ in self.ext.get(group, ()))


def same_ring(catalog: Catalog, ring: pb.RingInfo) -> bool:
    default = ring.default_replicas or (CHASH_DEFAULT_REPLICAS if ring.algorithm == "chash" else DEFAULT_REPLICAS)
    return (catalog.algorithm, catalog.default_replicas, catalog.only_passing) == (
        ring.algorithm, default, ring.only_passing)


def carry_versions(old: Catalog, new: Catalog) -> None:
    """Number `new`'s groups after `old`'s: each group's version becomes at least one more than it was
    in `old`, and a group `old` had that `new` lacks is there empty (as a catalog keeps a group whose
    last service left), one version on.  `new` is not published yet: no reader, no listener."""
    with old._lock:
        before = {name: state.version for name, state in old._groups.items()}
    groups = new._groups
    for name, version in before.items():
        state = groups.get(name)
        if state is None:
            groups[name] = GroupState(name, version + 1, None, MappingProxyType({}), Ring(new.algorithm))
        elif state.version <= version:
            groups[name] = GroupState(name, version + state.version, state.replicas, state.services, state.ring)


def kind_of(s: pb.Service) -> ServiceKind:
    """The remote's kind; what we do not know (a registry older than TTL services sends "") gossips."""
    try:
        return ServiceKind(s.kind)
    except ValueError:
        return ServiceKind.GOSSIP


def remote_tags(s: pb.Service, catalog: Catalog) -> dict[str, str]:
    """`s`'s tags, overridden only where our catalog would read them otherwise than the remote did."""
    tags = dict(s.tags)
    if tags.get(TAG_GROUP) != s.group:
        tags[TAG_GROUP] = s.group
    if tags.get(TAG_ADDR, "") != s.addr:
        tags[TAG_ADDR] = s.addr
    replicas, _ = parse_int(tags.get(TAG_REPLICAS), catalog.default_replicas, 1, MAX_REPLICAS_TAG)
    if s.replicas > 0 and replicas != s.replicas:
        tags[TAG_REPLICAS] = str(s.replicas)
    weight, _ = parse_int(tags.get(TAG_WEIGHT), 1, 1, MAX_WEIGHT)
    if s.weight > 0 and weight != s.weight:
        tags[TAG_WEIGHT] = str(s.weight)
    want = Health.from_word(s.health) if s.health else Health.PASSING  # ValueError: caller drops
    health, note, _ = parse_health(tags)
    want_note = s.health_note if want is not Health.PASSING else ""
    if health is not want or note != want_note:
        tags[TAG_HEALTH] = want.word
        if want is Health.PASSING:
            tags.pop(TAG_HEALTH_NOTE, None)
        else:
            tags[TAG_HEALTH_NOTE] = want_note
    return tags


def holds(copy: Copy, group: str, id_: str, kind: ServiceKind, origin: str) -> bool:
    """Whether the copy holds `id_` in `group` as a service of `kind` (external: of `origin`)."""
    if kind is ServiceKind.TTL:
        return id_ in copy.ttl.get(group, ())
    if kind is ServiceKind.EXTERNAL:
        return copy.ext.get(group, {}).get(id_) == origin
    return copy.catalog.holds_gossip(group, id_)


def evict(copy: Copy, group: str, ids: list[str], keep: ServiceKind | None) -> None:
    """Remove each of `ids` from `group`, whatever kind holds it, unless that kind is `keep` (None: all)."""
    catalog = copy.catalog
    if keep is not ServiceKind.GOSSIP:
        gossip: list[tuple[str, Mapping[str, str] | None]] = [(i, None) for i in ids if catalog.holds_gossip(group, i)]
        if gossip:
            catalog.apply_many(gossip)
    ttl = copy.ttl.get(group)
    if keep is not ServiceKind.TTL and ttl:
        gone: list[tuple[str, str, Mapping[str, str] | None]] = [(group, i, None) for i in ids if i in ttl]
        if gone:
            catalog.apply_ttl(gone)
            ttl.difference_update(i for _, i, _ in gone)
    ext = copy.ext.get(group)
    if keep is not ServiceKind.EXTERNAL and ext:
        by_origin: dict[str, list[tuple[str, str, Mapping[str, str] | None]]] = {}
        for i in ids:
            origin = ext.pop(i, None)
            if origin is not None:
                by_origin.setdefault(origin, []).append((group, i, None))
        for origin, updates in by_origin.items():
            catalog.apply_external(origin, updates)
