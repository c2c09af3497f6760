"""The catalog's per-group state and its batches: the working copies a change is made on.

Why apart from `registry.catalog`: the catalog applies every change, one member or a whole cluster,
gossiping or TTL, as one batch (`Updates`): each touched group gets a working copy (`Batch`) of its
services, the updates are played on the copies in order, and each group is then committed once (one
new `GroupState`, one version, its ring updated once: in bulk when the batch adds many). This module is
that bookkeeping; the rules (which service wins an id, health, rings) are the catalog's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .catalog import Service
    from .ring import Ring

__all__ = ["BULK_MIN", "NO_GROUP", "Batch", "GroupState", "Updates", "parse_int"]

#: A batch rebuilds a group's ring in bulk when it adds at least this many members.
BULK_MIN = 16
#: `Updates.moved`: the gossiping member is in no group after the batch.
NO_GROUP = ""


@dataclass(frozen=True)
class GroupState:
    """Immutable state of one group; replaced whole on each change."""

    name: str
    version: int
    replicas: int | None  # chash: fixed by the group's first member
    services: Mapping[str, Service]  # every live member, routed or not (its health), by id
    ring: Ring  # the routed members only


def parse_int(raw: str | None, default: int, low: int, high: int) -> tuple[int, bool]:
    """(value, ok): ``default`` when absent; ``(default, False)`` when not an int in range."""
    if raw is None:
        return default, True
    text = raw.strip()
    if not text.isascii() or len(text) > 12:
        return default, False
    try:
        value = int(text, 10)
    except ValueError:
        return default, False
    if value < low or value > high:
        return default, False
    return value, True


class Batch:
    """Working copy of one group's services during a batch."""

    def __init__(self, state: GroupState | None, reinsert_last: bool) -> None:
        self.state = state
        self.original: Mapping[str, Service] = state.services if state is not None else {}
        self.services: dict[str, Service] = dict(self.original)
        self.touched: set[str] = set()  # ids (re)inserted in this batch, in services order
        self.first: Service | None = None  # first service ever added (chash group replicas)
        self.reinsert_last = reinsert_last  # chash: an upsert moves the service last (Go's Upsert)

    def remove(self, name: str) -> None:
        self.services.pop(name, None)
        self.touched.discard(name)

    def upsert(self, service: Service) -> None:
        if self.services.get(service.id) == service:
            return
        if self.reinsert_last:
            self.services.pop(service.id, None)
        self.services[service.id] = service
        self.touched.add(service.id)
        if self.first is None:
            self.first = service


class Updates:
    """One batch in progress: each touched group's `Batch`, and where gossiping members go. Reads the
    catalog's committed state (``groups``, ``where``) and writes none of it: the catalog commits."""

    def __init__(self, groups: Mapping[str, GroupState], where: Mapping[str, str], reinsert_last: bool) -> None:
        self._committed = groups
        self._where = where
        self._reinsert_last = reinsert_last
        self.groups: dict[str, Batch] = {}
        #: gossiping member name -> its group after the batch (NO_GROUP: none); the others as in ``where``
        self.moved: dict[str, str] = {}

    def group(self, name: str) -> Batch:
        found = self.groups.get(name)
        if found is None:
            found = self.groups[name] = Batch(self._committed.get(name), self._reinsert_last)
        return found

    def where(self, name: str) -> str | None:
        """The group gossiping member ``name`` is in at this point of the batch."""
        group = self.moved.get(name)
        if group is None:
            return self._where.get(name)
        return group or None
