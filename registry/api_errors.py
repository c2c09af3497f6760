"""The API's refusals, apart so that `registry.api` and its Watch half (`registry.api_watch`)
raise the same classes; `registry.api` re-exports them, which is where the fronts import them from.

The two datacenter refusals subclass `Missing` so that every place that already turns a `Missing`
into a failed call (both gRPC fronts, the HTTP API) carries them without a new except clause;
`registry.grpcwire.code_of` and the HTTP API test for `NotSynced` first, since a mirror that has not
synced yet is a transient condition a client should retry (UNAVAILABLE), not an absent one."""

from __future__ import annotations

__all__ = ["Exhausted", "Invalid", "Missing", "NotSynced", "UnknownDatacenter"]


class Invalid(Exception):
    """The request is wrong whatever the cluster holds: INVALID_ARGUMENT, with this text."""


class Missing(Exception):
    """The group is unknown or has no live member: NOT_FOUND, with this text."""


class Exhausted(Exception):
    """A server-wide limit is reached (too many watchers): RESOURCE_EXHAUSTED, with this text."""


class UnknownDatacenter(Missing):
    """No registry of that datacenter is known over the WAN pool (or the registry has no WAN pool):
    NOT_FOUND, "unknown datacenter 'dc9' (known: dc1, dc2)"."""


class NotSynced(Missing):
    """The datacenter is known but its mirror has no snapshot yet: UNAVAILABLE (retry), not NOT_FOUND,
    "datacenter 'dc2' not synced yet"."""
