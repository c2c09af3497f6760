"""The API's three refusals, apart so that `registry.api` and its Watch half (`registry.api_watch`)
raise the same classes; `registry.api` re-exports them, which is where the fronts import them from."""

from __future__ import annotations

__all__ = ["Exhausted", "Invalid", "Missing"]


class Invalid(Exception):
    """The request is wrong whatever the cluster holds: INVALID_ARGUMENT, with this text."""


class Missing(Exception):
    """The group is unknown or has no live member: NOT_FOUND, with this text."""


class Exhausted(Exception):
    """A server-wide limit is reached (too many watchers): RESOURCE_EXHAUSTED, with this text."""
