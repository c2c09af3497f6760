"""``isolate=process``: run an adapter in a child process, the way HashiCorp's go-plugin runs plug-ins.

Why: on a thread of the registry an adapter shares the GIL, so one that spins (a bug, or heavy parsing)
adds up to a switch interval to each hand-over of the registry's loop: Match p99 grew from ~1 ms to
~37 ms next to a busy-loop adapter (tests/adapters/test_host.py prints both).  In a child process it
can only be slow itself; a crash, even in a C extension, is a restart with backoff, not the registry's end.

`ProcessAdapter` is itself an `Adapter`, so the host (`registry.adapters.host`) runs it like any other
on a thread of its own; that thread only moves frames (`registry.adapters.pipe`): the child's imports
and log records in, the coalesced catalog views out, and only once the child asked for them (an
import-only adapter is sent nothing).  Everything the child says is validated as network input is: a
bad frame ends the child and the host runs it again.  The cost: one Python process per such adapter
(about 30 MB) and a view encoded per catalog burst (a few ms for 10,000 services).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
from collections.abc import Mapping
from typing import Any

from registry.adapters.base import AdapterContext
from registry.adapters.pipe import FrameError, Kind, decode_service, encode_view, read_frame

__all__ = ["ProcessAdapter"]

#: Seconds a child has after its stdin closes (it cancels its adapter: an etcd exporter revokes its
#: lease then) before it is killed: inside the host's 2 s wait for an adapter's thread at stop.
STOP_GRACE = 1.5


class ProcessAdapter:
    """The adapter ``name`` built from ``options`` in a child process (``python -m registry.adapters.child``)."""

    def __init__(self, name: str, options: Mapping[str, str]) -> None:
        self.name = name
        self.options = dict(options)
        #: Child processes started (1 + restarts), for tests and logs.
        self.started = 0

    async def run(self, ctx: AdapterContext) -> None:
        spec = {"name": self.name, "options": self.options, "datacenter": ctx.datacenter,
                "registry_id": ctx.registry_id, "log_level": ctx.log.getEffectiveLevel() or logging.INFO}
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "registry.adapters.child", json.dumps(spec),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=2**16)
        self.started += 1
        views: asyncio.Task[None] | None = None
        try:
            assert child.stdout is not None
            while True:
                frame = await read_frame(child.stdout)
                if frame is None:
                    break
                kind, items = frame
                if kind is Kind.WANT_VIEWS and views is None:
                    views = asyncio.ensure_future(self._send_views(ctx, child))
                else:
                    self._apply(ctx, kind, items)
            code = await child.wait()
            raise RuntimeError(f"adapter process {child.pid} exited with status {code}")
        finally:
            if views is not None:
                views.cancel()
                await asyncio.gather(views, return_exceptions=True)
            await self._stop(child)

    def _apply(self, ctx: AdapterContext, kind: Kind, items: list[Any]) -> None:
        """One frame from the child; FrameError if it is not of its kind's shape."""
        try:
            if kind is Kind.UPSERT and len(items) == 1:
                ctx.imports.upsert(decode_service(items[0]))
            elif kind is Kind.DELETE and len(items) == 2 and all(isinstance(x, str) for x in items):
                ctx.imports.delete(items[0], items[1])
            elif kind is Kind.REPLACE_ALL and len(items) == 1 and isinstance(items[0], list):
                ctx.imports.replace_all([decode_service(x) for x in items[0]])
            elif kind is Kind.LOG and len(items) == 3 and isinstance(items[0], int) and isinstance(items[2], str):
                ctx.log.log(items[0], "%s", items[2])
            elif kind is not Kind.WANT_VIEWS:
                raise FrameError(f"unexpected {kind.name} frame from the child")
        except (TypeError, ValueError) as e:
            raise FrameError(f"{kind.name} frame: {e}") from None

    async def _send_views(self, ctx: AdapterContext, child: asyncio.subprocess.Process) -> None:
        """Each coalesced view to the child; a child slow to read holds us at drain(), and the views
        that come meanwhile are coalesced by the host (never a backlog)."""
        assert child.stdin is not None
        with contextlib.suppress(ConnectionError, BrokenPipeError):
            async for view in ctx.exports():
                child.stdin.write(encode_view(view))
                await child.stdin.drain()

    async def _stop(self, child: asyncio.subprocess.Process) -> None:
        """Close its stdin (it cancels its adapter and exits), wait STOP_GRACE, then kill it."""
        if child.returncode is not None:
            return
        if child.stdin is not None:
            with contextlib.suppress(OSError):
                child.stdin.close()
        try:
            await asyncio.wait_for(asyncio.shield(child.wait()), STOP_GRACE)
        except asyncio.TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                child.kill()
            await child.wait()
        except asyncio.CancelledError:
            with contextlib.suppress(ProcessLookupError):
                child.kill()
            raise
