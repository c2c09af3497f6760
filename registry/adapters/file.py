"""The file adapter: static services from a JSON or TOML file, reloaded on change.

The usual "external services" case: a database, a partner's API, anything that does not register
itself, put on a group's ring by hand.
``-adapter file:path=/etc/registry/external.json[,poll=1][,max_bytes=16777216]``.

JSON::

    {"services": [{"group": "db", "id": "pg1", "addr": "10.0.0.5:5432",
                   "tags": {"zone": "a"}, "replicas": 100, "weight": 2}]}

TOML (a ``.toml`` file; `tomllib` on Python 3.11+, the `tomli` package on 3.10 if installed, else
JSON only on 3.10)::

    [[services]]
    group = "db"
    id = "pg1"
    addr = "10.0.0.5:5432"
    tags = { zone = "a" }

``max_bytes`` (16 MiB by default) bounds the file: a bigger one is a bad file (checked by ``stat`` before
reading, and the read stops one byte past it should the file grow meanwhile), so a file that a runaway
generator filled never makes the registry read gigabytes into memory.

``group``, ``id``, ``addr`` are required; ``tags``, ``replicas``, ``weight`` optional; any other key is
an error (a typo must not pass silently). Why polled (every ``poll`` seconds, 1 by default, mtime and
size then a hash of the content) and not inotify: it works the same on every platform and on network
filesystems, and costs one stat a second. A file that cannot be read or parsed keeps the last good
services and logs ONE line naming the file and the problem (again only when the problem changes);
fixing the file loads it. A file removed keeps the last good state too (an editor's rename-over-write
must not empty the ring); to remove every service, write ``{"services": []}``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import Mapping
from typing import Any

from registry.adapters.base import AdapterContext, AdapterError, ExternalService
from registry.tomlread import toml_loads

__all__ = ["FileAdapter", "FileProblem", "parse_services"]

_KEYS = frozenset({"group", "id", "addr", "tags", "replicas", "weight"})
#: Default ``max_bytes``: a file of 100,000 services (the host's default bound per adapter) of ~170 bytes each.
MAX_BYTES = 16 << 20


class FileProblem(ValueError):
    """What is wrong with the file, in one line."""


def _too_large(max_bytes: int) -> str:
    """The same words whatever the size (a file still growing must not log a line per poll)."""
    return f"larger than max_bytes={max_bytes}"


def _positive(entry: Mapping[str, Any], key: str, where: str) -> int | None:
    value = entry.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise FileProblem(f"{where}: {key} must be a positive integer, not {value!r}")
    return value


def parse_services(text: str, toml: bool) -> list[ExternalService]:
    """The services of a file's text; `FileProblem` names the first thing wrong."""
    if toml:
        loads = toml_loads()
        if loads is None:
            raise FileProblem("TOML needs Python 3.11+ or the tomli package; use JSON")
        try:
            doc: Any = loads(text)
        except ValueError as e:  # tomllib.TOMLDecodeError is a ValueError
            raise FileProblem(f"not valid TOML: {e}") from None
    else:
        try:
            doc = json.loads(text)
        except ValueError as e:
            raise FileProblem(f"not valid JSON: {e}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("services"), list):
        raise FileProblem('expected a top-level "services" list')
    services: list[ExternalService] = []
    seen: set[tuple[str, str]] = set()
    for n, entry in enumerate(doc["services"]):
        where = f"services[{n}]"
        if not isinstance(entry, dict):
            raise FileProblem(f"{where}: expected a table/object, not {type(entry).__name__}")
        unknown = sorted(set(entry) - _KEYS)
        if unknown:
            raise FileProblem(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(_KEYS))})")
        for key in ("group", "id", "addr"):
            if not isinstance(entry.get(key), str) or not entry[key]:
                raise FileProblem(f"{where}: {key} must be a non-empty string")
        tags = entry.get("tags", {})
        if not isinstance(tags, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items()):
            raise FileProblem(f"{where}: tags must map strings to strings")
        if entry["group"] == "registry-group":
            raise FileProblem(f"{where}: registry-group is the registries' own group (clients find them there)")
        key_ = (entry["group"], entry["id"])
        if key_ in seen:
            raise FileProblem(f"{where}: {key_[0]}/{key_[1]} given twice")
        seen.add(key_)
        services.append(ExternalService(group=entry["group"], id=entry["id"], addr=entry["addr"], tags=dict(tags),
                                        replicas=_positive(entry, "replicas", where),
                                        weight=_positive(entry, "weight", where)))
    return services


class FileAdapter:
    """Imports the services of one file (see the module docstring)."""

    def __init__(self, path: str = "", poll: str = "1", max_bytes: str = str(MAX_BYTES)) -> None:
        if not path:
            raise AdapterError("path=FILE is required")
        try:
            self.poll = float(poll)
        except ValueError:
            raise AdapterError(f"poll={poll!r} is not a number of seconds") from None
        if not 0 < self.poll <= 3600:
            raise AdapterError(f"poll={poll!r} must be between 0 and 3600 seconds")
        try:
            self.max_bytes = int(max_bytes)
        except ValueError:
            raise AdapterError(f"max_bytes={max_bytes!r} is not a number of bytes") from None
        if self.max_bytes < 1:
            raise AdapterError(f"max_bytes={max_bytes!r} must be at least 1")
        self.path = path
        self.toml = path.lower().endswith(".toml")
        if self.toml and toml_loads() is None:
            raise AdapterError("a .toml file needs Python 3.11+ or the tomli package; use JSON")
        self.name = "file"
        #: Loads applied (for tests).
        self.loads = 0

    async def run(self, ctx: AdapterContext) -> None:
        stat_seen: tuple[int, int] | None = None
        digest_seen = b""
        problem_said = ""
        while True:
            problem = ""
            try:
                st = os.stat(self.path)
                if (st.st_mtime_ns, st.st_size) != stat_seen:
                    if st.st_size > self.max_bytes:
                        raise FileProblem(_too_large(self.max_bytes))
                    with open(self.path, "rb") as f:
                        data = f.read(self.max_bytes + 1)
                    if len(data) > self.max_bytes:  # it grew since the stat
                        raise FileProblem(_too_large(self.max_bytes))
                    stat_seen = (st.st_mtime_ns, st.st_size)
                    digest = hashlib.sha256(data).digest()
                    if digest != digest_seen:
                        try:
                            services = parse_services(data.decode("utf-8"), self.toml)
                        except UnicodeDecodeError:
                            raise FileProblem("not UTF-8 text") from None
                        ctx.imports.replace_all(services)
                        digest_seen = digest
                        self.loads += 1
                        ctx.log.info("file adapter: %s: loaded %d services", self.path, len(services))
                elif problem_said:
                    problem = problem_said  # unchanged since the problem: still there
            except FileProblem as e:
                problem = str(e)
            except OSError as e:
                problem = e.strerror or str(e)
                stat_seen = None
            if problem and problem != problem_said:
                ctx.log.error("file adapter: %s: %s; keeping the last good services", self.path, problem)
            problem_said = problem
            await asyncio.sleep(self.poll)
