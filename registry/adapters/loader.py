"""``-adapter NAME:key=value,...`` -> an adapter, from the entry point NAME of group ``registry.adapters``.

Why entry points: a third party ships an adapter as its own installable package, declaring
``[options.entry_points] registry.adapters = mine = mypkg.adapter:MyAdapter``; the registry finds it by
name with no change here. The entry point is called with the key=values as str keyword arguments; it
raises `AdapterError` (or ``TypeError`` for a key it does not take) and the person gets one line.

Values cannot hold a comma (the separator); a key given twice is an error, not a silent last-wins.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterable

from registry.adapters.base import Adapter, AdapterError

__all__ = ["GROUP", "available", "load", "load_all", "parse_spec"]

GROUP = "registry.adapters"


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    """``"file:path=/etc/s.json,poll=2"`` -> ``("file", {"path": "/etc/s.json", "poll": "2"})``."""
    name, _, rest = spec.partition(":")
    name = name.strip()
    if not name:
        raise AdapterError(f"-adapter {spec!r}: no adapter name (expected NAME:key=value,...)")
    options: dict[str, str] = {}
    for item in rest.split(",") if rest.strip() else []:
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not key.isidentifier():
            raise AdapterError(f"-adapter {name}: {item.strip()!r} is not key=value (expected NAME:key=value,...)")
        if key in options:
            raise AdapterError(f"-adapter {name}: {key} given twice")
        options[key] = value.strip()
    return name, options


def available() -> list[str]:
    """Names of the installed adapters, sorted."""
    return sorted({ep.name for ep in importlib.metadata.entry_points(group=GROUP)})


def load(spec: str) -> Adapter:
    """The adapter ``spec`` names, built with its options; `AdapterError` (one line) if anything is wrong."""
    name, options = parse_spec(spec)
    found = [ep for ep in importlib.metadata.entry_points(group=GROUP) if ep.name == name]
    if not found:
        known = ", ".join(available()) or "none installed"
        raise AdapterError(f"-adapter {name}: no such adapter (installed: {known})")
    try:
        factory = found[0].load()
    except ImportError as e:  # an optional dependency missing (the etcd extra, ...)
        raise AdapterError(f"-adapter {name}: cannot load {found[0].value}: {e}") from None
    try:
        adapter = factory(**options)
    except TypeError as e:  # an unknown or missing key
        raise AdapterError(f"-adapter {name}: {e}") from None
    except ValueError as e:  # AdapterError is one
        raise AdapterError(f"-adapter {name}: {e}") from None
    if not isinstance(adapter, Adapter):
        raise AdapterError(f"-adapter {name}: {found[0].value} made no adapter (no name or no async run)")
    if getattr(adapter, "name", None) != name:
        adapter.name = name  # the origin of its imports is the name it was loaded by
    return adapter


def load_all(specs: Iterable[str]) -> list[Adapter]:
    """Every ``-adapter`` flag's adapter; two of one name would share an origin, so that is refused."""
    adapters: list[Adapter] = []
    for spec in specs:
        adapter = load(spec)
        if any(a.name == adapter.name for a in adapters):
            raise AdapterError(f"-adapter {adapter.name}: given twice (one adapter of each name)")
        adapters.append(adapter)
    return adapters
