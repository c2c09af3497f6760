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

from .service import Service

if TYPE_CHECKING:
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
    """Working copy of one group's services during a batch, copied on its first change (a refresh that
    changes nothing, the common case for TTL services, costs no copy of a large group), and what the
    batch did to it: the ids it (re)inserted and removed, so a commit costs what changed, not the group."""

    def __init__(self, state: GroupState | None, reinsert_last: bool) -> None:
        self.state = state
        self.original: Mapping[str, Service] = state.services if state is not None else {}
        self._copy: dict[str, Service] | None = None
        #: ids (re)inserted in this batch, in the order of their last insertion (for chash, the order
        #: they take in ``services``: each upsert moves its service last there, and here)
        self.touched: dict[str, None] = {}
        #: ids of the original services this batch removed (some may have come back: see ``services``)
        self.gone: dict[str, None] = {}
        self.first: Service | None = None  # first service ever added (chash group replicas)
        self.reinsert_last = reinsert_last  # chash: an upsert moves the service last (Go's Upsert)

    @property
    def services(self) -> Mapping[str, Service]:
        """The group's services at this point of the batch."""
        return self.original if self._copy is None else self._copy

    @property
    def changed(self) -> bool:
        """Whether anything was written (the result may still equal the original)."""
        return self._copy is not None

    def owned(self) -> dict[str, Service]:
        """The working copy itself (made now if not yet): the committed state takes it as it is."""
        if self._copy is None:
            self._copy = dict(self.original)
        return self._copy

    def remove(self, name: str) -> None:
        if name not in self.services:
            return
        del self.owned()[name]
        self.touched.pop(name, None)
        if name in self.original:
            self.gone[name] = None

    def upsert(self, service: Service) -> None:
        if self.services.get(service.id) == service:
            return
        services = self.owned()
        if self.reinsert_last:
            services.pop(service.id, None)
        services[service.id] = service
        self.touched.pop(service.id, None)
        self.touched[service.id] = None
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
