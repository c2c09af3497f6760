"""The catalog's records as the v1 API's protobuf messages.

Why a module of its own: the API core (`registry.api`) and the datacenter answers (`registry.api_dc`)
both turn services into `pb.Service`, and `registry.api` imports `registry.api_dc`: this leaf keeps the
arrow one way.
"""

from __future__ import annotations

from registry.catalog import Catalog, Service
from registry.ring import RingNode
from registry.v1 import registry_pb2 as pb

__all__ = ["ring_info", "service_pb"]


def service_pb(s: Service, node: RingNode) -> pb.Service:
    """`s` with the ring parameters the server's ring uses for it (`node`: `Catalog.ring_node`)
    and its health."""
    return pb.Service(id=s.id, group=s.group, addr=s.addr, tags=dict(s.tags), replicas=node.replicas,
                      weight=node.weight, health=s.health.word, health_note=s.health_note, kind=s.kind.value,
                      origin=s.origin)


def ring_info(catalog: Catalog) -> pb.RingInfo:
    """How `catalog` builds rings, so caching clients build identical ones."""
    return pb.RingInfo(algorithm=catalog.algorithm, default_replicas=catalog.default_replicas,
                       only_passing=catalog.only_passing)
