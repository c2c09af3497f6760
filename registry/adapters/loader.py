"""``-adapter NAME:key=value,...`` -> an adapter, from the entry point NAME of group ``registry.adapters``.

Why entry points: a third party ships an adapter as its own installable package, declaring
``[options.entry_points] registry.adapters = mine = mypkg.adapter:MyAdapter``; the registry finds it by
name with no change here. The entry point is called with the key=values as str keyword arguments; it
raises `AdapterError` (or ``TypeError`` for a key it does not take) and the person gets one line.

Commas: an item without ``=`` after a ``key=value`` continues that value (joined with ","), so
``etcd:endpoints=10.0.0.1:2379,10.0.0.2:2379,prefix=/s/`` gives ``endpoints="10.0.0.1:2379,10.0.0.2:2379"``,
as etcdctl's ``--endpoints`` reads it. An item WITH ``=`` always starts a new key, so a value cannot hold
``,key=...`` (the config file's tables check this for you). An item without ``=`` before any key, an empty
item (",," or a trailing ","), an empty or non-identifier key and a key given twice are errors, not a
silent guess or last-wins.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterable, Mapping

from registry.adapters.base import Adapter, AdapterError

__all__ = ["GROUP", "available", "build", "load", "load_all", "parse_spec"]

GROUP = "registry.adapters"


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    """``"file:path=/etc/s.json,poll=2"`` -> ``("file", {"path": "/etc/s.json", "poll": "2"})``;
    ``"etcd:endpoints=a:2379,b:2379"`` -> ``("etcd", {"endpoints": "a:2379,b:2379"})``."""
    name, _, rest = spec.partition(":")
    name = name.strip()
    if not name:
        raise AdapterError(f"-adapter {spec!r}: no adapter name (expected NAME:key=value,...)")
    options: dict[str, str] = {}
    last: str | None = None  # the key an item without "=" continues
    for item in rest.split(",") if rest.strip() else []:
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq:
            if not key:
                raise AdapterError(f"-adapter {name}: empty item (two commas in a row, or a trailing comma)")
            if last is None:
                raise AdapterError(f"-adapter {name}: {key!r} is not key=value (expected NAME:key=value,...)")
            options[last] += "," + key
            continue
        if not key.isidentifier():
            what = "empty key" if not key else f"{key!r} is not a key"
            raise AdapterError(f"-adapter {name}: {what} in {item.strip()!r} (expected NAME:key=value,...)")
        if key in options:
            raise AdapterError(f"-adapter {name}: {key} given twice")
        options[key] = value.strip()
        last = key
    return name, options


def available() -> list[str]:
    """Names of the installed adapters, sorted."""
    return sorted({ep.name for ep in importlib.metadata.entry_points(group=GROUP)})


def load(spec: str) -> Adapter:
    """The adapter ``spec`` names, built with its options; `AdapterError` (one line) if anything is wrong.

    The option ``isolate`` is the host's, not the adapter's: ``thread`` runs the adapter on a thread of the
    registry, ``process`` in a child process (`registry.adapters.process`).  The default depends on whose
    code it is: the adapters shipped in ``registry.adapters`` (file, etcd) are tested not to spin and run on
    a thread; anyone else's runs in a child, where a busy loop or a crash can only hurt itself (Match p50
    next to a busy-loop adapter: x12 on a thread, x1.0 in a child; benchmarks/bench_adapters.py).  It is
    built here first all the same, so a bad option is a usage error at start, not a child failing over and over."""
    name, options = parse_spec(spec)
    isolate = options.pop("isolate", "")
    if isolate not in ("", "thread", "process"):
        raise AdapterError(f"-adapter {name}: isolate={isolate!r} must be thread or process")
    adapter = build(name, options)
    if not isolate:
        isolate = "thread" if _shipped(adapter) else "process"
    if isolate == "process":
        from registry.adapters.process import ProcessAdapter

        return ProcessAdapter(name, options)
    return adapter


def _shipped(adapter: Adapter) -> bool:
    """Whether ``adapter`` is one of ours (its class defined in this package)."""
    return type(adapter).__module__.startswith(__name__.rpartition(".")[0] + ".")


def build(name: str, options: Mapping[str, str]) -> Adapter:
    """The entry point ``name`` of group ``registry.adapters`` called with ``options``; `AdapterError`
    (one line) if there is none, it cannot be imported, or it refuses the options."""
    found = [ep for ep in importlib.metadata.entry_points(group=GROUP) if ep.name == name]
    if not found:
        known = ", ".join(available()) or "none installed"
        raise AdapterError(f"-adapter {name}: no such adapter (installed: {known})")
    try:
        factory = found[0].load()
    except ImportError as e:  # an optional dependency missing (the etcd extra, ...)
        raise AdapterError(f"-adapter {name}: cannot load {found[0].value}: {e}") from None
    except Exception as e:  # noqa: BLE001 - a third party's module or entry point is wrong: still one line
        raise AdapterError(f"-adapter {name}: cannot load {found[0].value}: {type(e).__name__}: {e}") from None
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
