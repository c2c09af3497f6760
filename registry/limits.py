"""The bounds on what a source outside this registry can make it hold: one set of numbers, shared.

Why a module of its own (a leaf: it imports nothing of the package): a TTL write (`registry.ttl.entry`),
a service an adapter imports (`registry.adapters.host`) and a service another datacenter's Watch sends
(`registry.federation.mirror`) are all records someone else chose; each layer checks them against the
same sizes, so one of them cannot hold what another refuses, and an operator reading one bound knows
them all. Each layer keeps its own `Limits`-like dataclass (its own counts, configurable), whose
defaults are these.

Sizes are UTF-8 bytes; tags are counted as Serf counts node metadata (key and value bytes summed).
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = [
    "MAX_ADDR_BYTES",
    "MAX_NAME_BYTES",
    "MAX_PER_GROUP",
    "MAX_SERVICES",
    "MAX_TAGS_BYTES",
    "tags_bytes",
    "utf8_len",
]

#: Services one source may make a registry hold, in all groups together.
MAX_SERVICES = 100_000
#: Services one source may make a registry hold in one group (the consistent ring's hard cap is 16,383
#: members in all, whatever their kind).
MAX_PER_GROUP = 10_000
#: A group name, an id.
MAX_NAME_BYTES = 128
#: An address.
MAX_ADDR_BYTES = 256
#: A service's own tags, key and value bytes summed: Serf's node metadata limit.
MAX_TAGS_BYTES = 512


def utf8_len(text: str) -> int:
    """`text`'s UTF-8 size; a lone surrogate (not encodable) counts as over any bound."""
    if text.isascii():  # the common case, without a copy
        return len(text)
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:
        return 1 << 62


def tags_bytes(tags: Mapping[str, str]) -> int:
    """Key and value bytes summed (as Serf counts node metadata); a non-str key or value counts as over
    any bound (a third party's adapter is not type-checked)."""
    total = 0
    for k, v in tags.items():
        if not isinstance(k, str) or not isinstance(v, str):
            return 1 << 62
        total += utf8_len(k) + utf8_len(v)
    return total
