"""The child process of an adapter run with ``isolate=process`` (`registry.adapters.process`).

    python -m registry.adapters.child '{"name": ..., "options": {...}, "datacenter": ..., "registry_id": ...}'

Why a process: an adapter on a thread of the registry shares its GIL, its memory and its fate, so a busy
loop in it adds up to a switch interval (5 ms) to each of the registry loop's hand-overs (Match p99 +30 ms
measured), and a crash in a C extension takes the registry down.  In a child it can only be slow itself.

The child builds the adapter from its entry point as the registry would and runs it once on its own
loop; its ``ctx.imports`` and log records become frames on the pipe that was its stdout (fd 1 is pointed
at stderr first, so a stray ``print`` cannot corrupt the frames); views arrive as frames on stdin, read
by a thread (so the child never stops reading while it writes: no deadlock with the parent) and handed
to the loop newest-first.  stdin's end or SIGTERM cancels the adapter (an etcd exporter revokes its lease
then) and the child exits; an adapter that raises is logged through the parent and the child exits 1,
the parent's host runs it again with its backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import threading
import traceback
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, BinaryIO

import msgpack

from registry.adapters.base import AdapterContext, CatalogView, ExternalService
from registry.adapters.pipe import MAX_FRAME, FrameError, Kind, decode_view, encode, encode_service

__all__ = ["main"]


class _Out:
    """The frame pipe to the parent: one locked blocking write per frame (any thread)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._lock = threading.Lock()
        self.broken = False

    def send(self, frame: bytes) -> None:
        with self._lock:
            if self.broken:
                return
            view = memoryview(frame)
            try:
                while view:
                    view = view[os.write(self._fd, view):]
            except OSError:  # the parent is gone: nothing more to tell it
                self.broken = True


class _Imports:
    def __init__(self, out: _Out) -> None:
        self._out = out

    def upsert(self, service: ExternalService) -> None:
        self._out.send(encode(Kind.UPSERT, encode_service(service)))

    def delete(self, group: str, id: str) -> None:
        self._out.send(encode(Kind.DELETE, group, id))

    def replace_all(self, services: Iterable[ExternalService]) -> None:
        self._out.send(encode(Kind.REPLACE_ALL, [encode_service(s) for s in services]))


class _LogFrames(logging.Handler):
    """Every record of the child's loggers, formatted (traceback included), as a LOG frame."""

    def __init__(self, out: _Out) -> None:
        super().__init__()
        self._out = out

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            if record.exc_info:
                text += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
            self._out.send(encode(Kind.LOG, record.levelno, record.name, text))
        except Exception:  # noqa: BLE001 - logging must not raise into the adapter
            self.handleError(record)


class _Views:
    """Views read from stdin by a thread, handed to the loop: the newest wins (coalesced)."""

    def __init__(self, out: _Out, loop: asyncio.AbstractEventLoop) -> None:
        self._out = out
        self._loop = loop
        self._newest: CatalogView | None = None
        self._event = asyncio.Event()
        self._asked = False

    def put(self, view: CatalogView) -> None:  # on the loop
        self._newest = view
        self._event.set()

    async def __call__(self) -> AsyncIterator[CatalogView]:
        if not self._asked:
            self._asked = True
            self._out.send(encode(Kind.WANT_VIEWS))
        while True:
            await self._event.wait()
            self._event.clear()
            view, self._newest = self._newest, None
            if view is not None:
                yield view


def _read_stdin(stream: BinaryIO, views: _Views, loop: asyncio.AbstractEventLoop, stop: Callable[[], None]) -> None:
    """(a thread) frames from the parent until its end, then stop the adapter."""
    try:
        while True:
            head = stream.read(4)
            if len(head) < 4:
                break
            n = int.from_bytes(head, "big")
            if n > MAX_FRAME:
                raise FrameError(f"frame of {n} bytes over the limit")
            body = stream.read(n)
            if len(body) < n:
                break
            doc = msgpack.unpackb(body, raw=False)
            if not isinstance(doc, list) or not doc or doc[0] != Kind.VIEW:
                raise FrameError("the parent sends only views")
            loop.call_soon_threadsafe(views.put, decode_view(doc[1:]))
    except Exception as e:  # noqa: BLE001 - a broken parent: stop, said in the log
        logging.getLogger("registry.adapters.child").error("reading the registry's frames: %s", e)
    finally:
        stop()


#: Seconds a stopping child gives its adapter to end after the cancel (an etcd exporter revokes its lease
#: then) before it exits anyway: an adapter that spins or blocks never sees the cancel.
GRACE = 1.0


def _stop(loop: asyncio.AbstractEventLoop, task: asyncio.Future[Any]) -> None:
    """(any thread, or a signal handler) cancel the adapter, and exit after `GRACE` whatever it does.

    Why the timer: the child must end with the registry in every case (its stdin closes when the
    registry exits, even by SIGKILL); an adapter that spins in pure Python or sleeps in C holds the loop,
    so a cancel alone left such children running, each eating a core, after their registries were gone."""
    with contextlib.suppress(RuntimeError):  # the loop is closed: the child is ending anyway
        loop.call_soon_threadsafe(task.cancel)
    timer = threading.Timer(GRACE, os._exit, (0,))
    timer.daemon = True
    timer.start()


async def _run(spec: dict[str, Any], out: _Out) -> int:
    from registry.adapters.loader import build

    log = logging.getLogger(f"registry.adapters.{spec['name']}")
    adapter = build(spec["name"], spec["options"])
    loop = asyncio.get_running_loop()
    views = _Views(out, loop)
    ctx = AdapterContext(imports=_Imports(out), exports=views, log=log, datacenter=spec["datacenter"],
                         registry_id=spec["registry_id"])
    task = asyncio.ensure_future(adapter.run(ctx))

    def stop(*_: object) -> None:
        _stop(loop, task)

    # signal.signal, not loop.add_signal_handler: a Python handler runs between bytecodes of whatever the
    # main thread runs, so a SIGTERM reaches an adapter that spins and never returns to its loop.
    signal.signal(signal.SIGTERM, stop)
    threading.Thread(target=_read_stdin, args=(sys.stdin.buffer, views, loop, stop), daemon=True).start()
    try:
        await task
    except asyncio.CancelledError:
        return 0
    except Exception:
        log.exception("adapter %s failed", spec["name"])
        return 1
    log.error("adapter %s: run returned", spec["name"])
    return 1


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    spec = json.loads(args[0])
    frames_fd = os.dup(1)
    os.dup2(2, 1)  # a print() in the adapter goes to stderr, never into the frames
    sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
    out = _Out(frames_fd)
    root = logging.getLogger()
    root.handlers[:] = [_LogFrames(out)]
    root.setLevel(int(spec.get("log_level", logging.INFO)))
    return asyncio.run(_run(spec, out))


if __name__ == "__main__":
    sys.exit(main())
