"""registry-adapter-dropdir: a third-party adapter for registry, "drop a file to register".

Import: under ``dir=``, the file ``<dir>/<group>/<id>`` puts service ``id`` on ``group``'s ring. Its
first line is the address; the lines after it are optional ``key=value`` tags (blank lines and lines
starting with ``#`` are skipped)::

    $ mkdir -p /run/registry-drop/db
    $ printf '10.0.0.5:5432\\nzone=a\\n' > /run/registry-drop/db/pg1     # registered
    $ rm /run/registry-drop/db/pg1                                      # gone

The directory is polled every ``poll=`` seconds (default 1). Names starting with "." are skipped, so a
writer can write ``.pg1.tmp`` and rename it over ``pg1`` (a rename is atomic: never a half-written file).
A bad file (no address, a tag line without "=", not UTF-8, over 64 KiB) logs ONE line and is skipped: the
service keeps the last good content it had, if any, until the file is fixed or removed.

Export (optional ``out=FILE``): on every catalog view, the whole catalog as one JSON file written
atomically (a temporary file in the same directory, then ``os.replace``), for tools that render
nginx/haproxy configuration from a file::

    {"datacenter": "dc1", "services": [{"group": "db", "id": "pg1", "addr": "10.0.0.5:5432",
      "tags": {"zone": "a"}, "health": "passing", "kind": "external", "origin": "dropdir"}, ...]}

Every live service is listed, imported ones too (``kind``/``origin`` say which): the file is read by
other tools, never by an adapter, so it cannot loop.

``registry -adapter dropdir:dir=/run/registry-drop,out=/run/registry/catalog.json,poll=0.5``

Why it is written this way (a model for your own adapter): it imports only the standard library and
``registry.adapters.base`` (the stable interface); ``run`` is a plain coroutine on the adapter's own
thread and loop, so the blocking file I/O here can never stall the registry; it starts every run with a
``replace_all`` (a resync: the host runs ``run`` again after a failure, and what was imported before
must converge) and then sends only differences (``upsert``/``delete``).
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass

from registry.adapters.base import AdapterContext, AdapterError, CatalogView, ExternalService

__all__ = ["MAX_FILE_BYTES", "DropDirAdapter", "parse_drop_file"]

#: A drop file holds an address and a few tags; anything bigger is a mistake (not read whole).
MAX_FILE_BYTES = 64 * 1024


class DropFileProblem(ValueError):
    """What is wrong with one drop file, in one line."""


@dataclass(frozen=True)
class _Seen:
    """A drop file as last read: its stat signature and what it gave (None: it was bad)."""

    signature: tuple[int, int, int]
    service: ExternalService | None


def parse_drop_file(group: str, id: str, data: bytes) -> ExternalService:
    """The service a drop file's bytes describe; `DropFileProblem` names the first thing wrong."""
    if len(data) > MAX_FILE_BYTES:
        raise DropFileProblem(f"over {MAX_FILE_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise DropFileProblem("not UTF-8 text") from None
    lines = [ln.strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    if not lines:
        raise DropFileProblem("empty (the first line is the service's address)")
    addr, tag_lines = lines[0], lines[1:]
    if "=" in addr or " " in addr:
        raise DropFileProblem(f"the first line must be the address (host:port), not {addr!r}")
    tags: dict[str, str] = {}
    for n, line in enumerate(tag_lines, start=2):
        key, eq, value = line.partition("=")
        key = key.strip()
        if not eq or not key:
            raise DropFileProblem(f"tag line {n}: expected key=value, not {line!r}")
        if key in tags:
            raise DropFileProblem(f"tag line {n}: {key} given twice")
        tags[key] = value.strip()
    return ExternalService(group=group, id=id, addr=addr, tags=tags)


class DropDirAdapter:
    """The ``dropdir`` adapter (entry point ``registry.adapters: dropdir``); see the module docstring."""

    def __init__(self, dir: str = "", poll: str = "1", out: str = "") -> None:
        # Options arrive as strings (the -adapter spec's key=values); a bad one is an AdapterError:
        # the registry prints it as one line and exits 2 before it starts.
        if not dir:
            raise AdapterError("dir=DIRECTORY is required")
        if not os.path.isdir(dir):
            raise AdapterError(f"dir={dir!r} is not a directory")
        try:
            self.poll = float(poll)
        except ValueError:
            raise AdapterError(f"poll={poll!r} is not a number of seconds") from None
        if not 0 < self.poll <= 3600:
            raise AdapterError(f"poll={poll!r} must be between 0 and 3600 seconds")
        if out and not os.path.isdir(os.path.dirname(os.path.abspath(out))):
            raise AdapterError(f"out={out!r}: its directory does not exist")
        self.name = "dropdir"
        self.dir = dir
        self.out = out

    async def run(self, ctx: AdapterContext) -> None:
        """Poll the directory and, with ``out=``, write each catalog view; until cancelled."""
        tasks = [asyncio.ensure_future(self._import(ctx))]
        if self.out:
            tasks.append(asyncio.ensure_future(self._export(ctx)))
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()  # raise what failed: the host logs it and runs us again after a backoff
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    # -- import -------------------------------------------------------------------------------

    async def _import(self, ctx: AdapterContext) -> None:
        seen: dict[tuple[str, str], _Seen] = {}
        sent: dict[tuple[str, str], ExternalService] = {}
        first = True
        dir_problem = ""
        while True:
            try:
                entries = self._scan()
            except OSError as e:  # the directory itself went away or cannot be read: keep what we have
                problem = f"{self.dir}: {e.strerror or e}; keeping the last services"
                if problem != dir_problem:
                    ctx.log.error("dropdir: %s", problem)
                dir_problem = problem
            else:
                dir_problem = ""
                seen = self._read_changed(ctx, entries, seen)
                now = {key: s.service for key, s in seen.items() if s.service is not None}
                if first:
                    ctx.imports.replace_all(now.values())  # a resync: this run may follow a failed one
                    first = False
                else:
                    for key in sent.keys() - now.keys():
                        ctx.imports.delete(*key)
                    for key, service in now.items():
                        if sent.get(key) != service:
                            ctx.imports.upsert(service)
                sent = now
            await asyncio.sleep(self.poll)

    def _scan(self) -> dict[tuple[str, str], str]:
        """(group, id) -> path of every drop file now (names starting with "." skipped)."""
        found: dict[tuple[str, str], str] = {}
        with os.scandir(self.dir) as groups:
            for g in groups:
                if g.name.startswith(".") or not g.is_dir():
                    continue
                try:
                    with os.scandir(g.path) as files:
                        for f in files:
                            if not f.name.startswith(".") and f.is_file():
                                found[g.name, f.name] = f.path
                except OSError:  # removed between the two listings: gone
                    continue
        return found

    def _read_changed(self, ctx: AdapterContext, entries: Mapping[tuple[str, str], str],
                      seen: Mapping[tuple[str, str], _Seen]) -> dict[tuple[str, str], _Seen]:
        """Read the files whose stat changed; a bad one logs one line and keeps its last good service."""
        result: dict[tuple[str, str], _Seen] = {}
        for key, path in entries.items():
            before = seen.get(key)
            try:
                st = os.stat(path)
            except FileNotFoundError:  # removed since the scan: gone
                continue
            except OSError as e:
                st = None
                problem = e.strerror or str(e)
            signature = (st.st_mtime_ns, st.st_size, st.st_ino) if st is not None else (0, 0, 0)
            if before is not None and before.signature == signature:
                result[key] = before  # unchanged (a bad one was said once already)
                continue
            if st is not None:
                try:
                    with open(path, "rb") as f:
                        data = f.read(MAX_FILE_BYTES + 1)
                    result[key] = _Seen(signature, parse_drop_file(key[0], key[1], data))
                    continue
                except FileNotFoundError:
                    continue
                except OSError as e:
                    problem = e.strerror or str(e)
                except DropFileProblem as e:
                    problem = str(e)
            ctx.log.error("dropdir: %s: %s; skipped", path, problem)
            result[key] = _Seen(signature, before.service if before is not None else None)
        return result

    # -- export -------------------------------------------------------------------------------

    async def _export(self, ctx: AdapterContext) -> None:
        written = b""
        async for view in ctx.exports():  # coalesced: after a burst of changes, only the newest view
            data = render(view)
            if data != written:
                write_atomically(self.out, data)
                written = data


def render(view: CatalogView) -> bytes:
    """The out file's bytes for ``view``: sorted, so an unchanged catalog is an unchanged file."""
    services = sorted(view.services, key=lambda s: (s.group, s.id))
    doc = {"datacenter": view.datacenter,
           "services": [{"group": s.group, "id": s.id, "addr": s.addr, "tags": dict(sorted(s.tags.items())),
                         "health": s.health, "kind": s.kind, "origin": s.origin} for s in services]}
    return (json.dumps(doc, indent=1) + "\n").encode()


def write_atomically(path: str, data: bytes) -> None:
    """A reader sees the old file or the new one, never a part: a temporary file beside it, renamed over."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".dropdir-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
