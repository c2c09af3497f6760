"""The adapter interface (issue 18): what an adapter is given and what it must provide.

Why a module of its own with no imports from the rest of the package: a third party's adapter imports
only this (and the standard library), so it is the stable surface; the host (`registry.adapters.host`)
and the catalog side live elsewhere and may change without breaking adapters.

An adapter is an object with a ``name`` and an ``async run(ctx)``.  The host runs it on the adapter's
OWN thread and event loop, until cancelled: a hang or an exception there never stalls the registry's
loop (gossip, RPC answers).  Import side: ``ctx.imports`` (thread-safe, callable from the adapter's
thread) takes upserts, deletes and whole resyncs of `ExternalService`; the registry puts them on the
group's ring as ``ServiceKind.EXTERNAL`` services whose ``origin`` is the adapter's name.  Export side:
``ctx.exports()`` is an async iterator of `CatalogView` snapshots, coalesced (a slow exporter gets the
newest view, never a backlog).

No loops: an exporter skips services whose ``origin`` is non-empty (imported by some adapter) unless
configured otherwise; an importer ignores keys under its exporter's prefix.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

__all__ = [
    "Adapter",
    "AdapterContext",
    "AdapterError",
    "CatalogView",
    "ExportedService",
    "ExternalService",
    "Imports",
]


class AdapterError(ValueError):
    """A bad adapter spec or option (a person's input): the message is one clear line."""


@dataclass(frozen=True)
class ExternalService:
    """One service an adapter imports: put on ``group``'s ring under ``id`` at ``addr``.

    ``replicas``/``weight`` of None take the registry's defaults, as a member without those tags does.
    ``tags`` may carry health (``health``/``health_note``, `registry.healthtags`) like any member's."""

    group: str
    id: str
    addr: str
    tags: Mapping[str, str] = field(default_factory=dict, hash=False)
    replicas: int | None = None
    weight: int | None = None


class Imports(Protocol):
    """Given to an adapter that imports; every method is thread-safe (call it from the adapter's thread).

    Nothing is applied on the caller's thread: calls are handed to the registry's loop in order, so a
    call returns at once and never waits on the registry."""

    def upsert(self, service: ExternalService) -> None:
        """Add ``service`` or replace this adapter's service of the same (group, id)."""

    def delete(self, group: str, id: str) -> None:
        """Remove this adapter's service (group, id); a no-op if it has none."""

    def replace_all(self, services: Iterable[ExternalService]) -> None:
        """A resync: this adapter's services are exactly ``services`` afterwards, the rest deleted."""


@dataclass(frozen=True)
class ExportedService:
    """One live service of the pool as an exporter sees it (plain types: no registry classes)."""

    group: str
    id: str
    addr: str
    tags: Mapping[str, str] = field(hash=False)
    #: "passing", "warning" or "critical".
    health: str
    #: "gossip", "ttl" or "external".
    kind: str
    #: The adapter that imported it, "" for the pool's own services.
    origin: str = ""


@dataclass(frozen=True)
class CatalogView:
    """What an exporter sees: the whole catalog at one moment."""

    datacenter: str
    services: Sequence[ExportedService]


@dataclass(frozen=True)
class AdapterContext:
    """What the host gives an adapter's ``run``."""

    #: Where imported services go (thread-safe).
    imports: Imports
    #: ``exports()`` -> async iterator of coalesced `CatalogView` (call it on the adapter's loop).
    exports: _Exports
    #: The adapter's logger ("registry.adapters.<name>").
    log: logging.Logger
    datacenter: str
    registry_id: str


class _Exports(Protocol):
    def __call__(self) -> AsyncIterator[CatalogView]: ...


@runtime_checkable
class Adapter(Protocol):
    """An adapter, as loaded from entry point group ``registry.adapters`` (called with its key=values
    as str keyword arguments; raise `AdapterError` for a bad one)."""

    #: As loaded ("etcd", "file", a third party's).
    name: str

    async def run(self, ctx: AdapterContext) -> None:
        """Until cancelled, on the adapter's own thread and loop. Returning or raising is logged and the
        host runs it again after a backoff."""
