"""A client-side copy of one group's ring, fed by the server's Watch stream.

The copy is a real `registry.catalog.Catalog`, built with the algorithm and default
replica count the server reports, and fed the member tags the server's catalog holds
(with replicas/weight set to the ring parameters the server's ring uses); it therefore
answers Match exactly as the server does, with no RPC and with no second
implementation of the Service -> ring node mapping to drift apart. The Service values
handed out are the server's own (tags exactly as the server sent them).

Thread safety: the sync client's watch thread applies events while callers match; a
lock around both keeps the catalog consistent (it is uncontended almost always).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from client.common import to_service
from client.errors import NotFound
from client.types import Service
from registry.catalog import Catalog, UnknownGroup
from registry.catalog import Service as CatalogService
from registry.ring import EmptyRing
from registry.v1 import registry_pb2 as pb

__all__ = ["GroupView"]


def _member_tags(s: pb.Service) -> dict[str, str]:
    """Tags that make our catalog give `s` the ring node the server's ring has.

    The server sends the ring parameters it really uses (for chash the group's
    replica count, fixed by its first member), so they override the raw tags.
    """
    tags = dict(s.tags)
    tags["group"] = s.group
    tags["addr"] = s.addr
    if s.replicas > 0:
        tags["replicas"] = str(s.replicas)
    if s.weight > 0:
        tags["weight"] = str(s.weight)
    return tags


class GroupView:
    """Cached services and ring of one group; `version` is the server's version last applied."""

    def __init__(self, group: str) -> None:
        self.group = group
        self.version = -1  # nothing received yet
        self.ready = threading.Event()
        self.error: str = ""  # why the last watch attempt ended, for error messages
        self._lock = threading.Lock()
        self._catalog: Catalog | None = None
        self._ring_key: tuple[str, int] | None = None
        self._out: dict[str, Service] = {}  # id -> the service exactly as the server sent it

    def apply(self, event: pb.WatchEvent) -> None:
        """Apply one Watch event (snapshot or delta); stale deltas are ignored."""
        with self._lock:
            if event.snapshot:
                key = (event.ring.algorithm, event.ring.default_replicas)
                if self._catalog is None or key != self._ring_key:
                    self._catalog = self._new_catalog(*key)
                    self._ring_key = key
                    self._out = {}
                wanted = {s.id for s in event.services}
                for gone in set(self._out) - wanted:
                    self._catalog.apply(gone, None)
                    del self._out[gone]
                for s in event.services:
                    self._catalog.apply(s.id, _member_tags(s))
                    self._out[s.id] = to_service(s)
            else:
                if self._catalog is None or event.version <= self.version:
                    return
                for s in event.removed:
                    self._catalog.apply(s.id, None)
                    self._out.pop(s.id, None)
                for s in (*event.added, *event.updated):
                    self._catalog.apply(s.id, _member_tags(s))
                    self._out[s.id] = to_service(s)
            self.version = event.version
        self.ready.set()

    @staticmethod
    def _new_catalog(algorithm: str, default_replicas: int) -> Catalog:
        if default_replicas > 0:
            return Catalog(algorithm=algorithm, default_replicas=default_replicas)
        return Catalog(algorithm=algorithm)

    def _convert(self, s: CatalogService) -> Service:
        return self._out[s.id]

    def _missing(self) -> NotFound:
        return NotFound(f"Match (group {self.group!r}): group has no live member (client cache, version "
                        f"{self.version})", group=self.group)

    def match(self, key: str, n: int) -> list[Service]:
        with self._lock:
            if self._catalog is None:
                raise self._missing()
            try:
                if n == 1:  # the common call: straight to the ring, no list of Services
                    return [self._out[self._catalog.ring(self.group).get(key)]]
                found = self._catalog.match(self.group, key, n)
            except (UnknownGroup, EmptyRing):
                raise self._missing() from None
            if not found:
                raise self._missing()
            return [self._convert(s) for s in found]

    def match_batch(self, keys: Sequence[str]) -> list[Service]:
        """One Service per key, resolved by `Ring.get_many` (C-level pipelines, no per-key Python)."""
        with self._lock:
            if self._catalog is None:
                raise self._missing()
            try:
                names = self._catalog.ring(self.group).get_many(keys)
            except (UnknownGroup, EmptyRing):
                raise self._missing() from None
            return list(map(self._out.__getitem__, names))

    def members(self) -> list[Service]:
        with self._lock:
            if self._catalog is None:
                return []
            try:
                return [self._convert(s) for s in self._catalog.members(self.group)]
            except UnknownGroup:
                return []
