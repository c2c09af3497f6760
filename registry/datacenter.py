"""Datacenter names (issue 17): the default, and what makes a name acceptable.

Its own small module, free of asyncio and gossip, because three places check a name: the
`registry` command (`-datacenter`, a usage error), `Register(datacenter=...)` (a RegisterError)
and the WAN pool (`registry.wan`, which is only imported with -wan-bind).  One rule for all:
the name is part of a WAN member's name ("<id>.<dc>", Consul's scheme) and of every registry's
and service's `dc` tag, so it is kept short and plain (no dot, which would make the member
name ambiguous; nothing a log line or a URL path needs to quote).
"""

from __future__ import annotations

import re

__all__ = ["DEFAULT_DATACENTER", "MAX_DATACENTER", "TAG_DATACENTER", "datacenter_problem"]

DEFAULT_DATACENTER = "dc1"
#: The tag naming a registry's or a service's datacenter (LAN pool) and a WAN member's.
TAG_DATACENTER = "dc"
MAX_DATACENTER = 64
_NAME = re.compile(r"[a-z0-9_-]{1,64}")


def datacenter_problem(name: object) -> str | None:
    """Why `name` is not a datacenter name (one clause for an error message), or None if it is."""
    if not isinstance(name, str):
        return f"must be a string such as {DEFAULT_DATACENTER!r}, not {type(name).__name__}"
    if not name:
        return "must not be empty"
    if len(name) > MAX_DATACENTER:
        return f"{name[:20]!r}... is {len(name)} characters; at most {MAX_DATACENTER}"
    if _NAME.fullmatch(name) is None:
        return f"{name!r}: use lower-case letters, digits, '-' and '_' only"
    return None
