"""The catalog's record of one service, and its kind: what every layer above the catalog reads.

Why a module of its own: the catalog (`registry.catalog`) and its batch machinery
(`registry.catalog_batch`) both hold these records, and the API, the HTTP front and the TTL driver read
them; defined here, none of them imports another for a type. `registry.catalog` re-exports both names.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from .healthtags import Health

__all__ = ["Service", "ServiceKind"]


class ServiceKind(str, enum.Enum):
    """How a service is in the pool: it gossips (a `Register`, a Go service: alive while it answers
    pings), or a registry holds it for a TTL (an HTTP registration, `registry.ttl`: alive while it is
    refreshed), or an adapter imported it (issue 18, `registry.adapters`: alive while its source has it;
    ``Service.origin`` names the adapter).  All are on the rings by the same rules; Members says which
    each is."""

    GOSSIP = "gossip"
    TTL = "ttl"
    EXTERNAL = "external"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Service:
    """One registered service instance, as the catalog knows it (health read from its tags)."""

    id: str
    group: str
    addr: str
    replicas: int
    weight: int
    tags: Mapping[str, str] = field(hash=False)
    health: Health = Health.PASSING
    #: Why it is not passing (the failing check's note); "" when passing.
    health_note: str = ""
    kind: ServiceKind = ServiceKind.GOSSIP
    #: The adapter that imported it (kind EXTERNAL); "" for the pool's own services.
    origin: str = ""
