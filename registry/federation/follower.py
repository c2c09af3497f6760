"""`Follower`: keeps a `Mirror` current by following one live registry of its datacenter.

The driver of `registry.federation.mirror` (which holds all the rules): it opens a Watch of every group
(`AsyncRpcClient.watch_events("")`) on the first address `sources()` gives (the WAN pool's registries of
that datacenter, nearest first), hands every event to the mirror, and moves on:

- to the next address of the list when the stream fails, ends, or its source stops answering: a
  registry killed or stopped gracefully closes its connection (the stream fails at once); one that dies
  without closing it (a host gone, a partition, a stopped process) is found by a probe, a Groups call on
  the stream's own connection every `probe` seconds that must answer within `probe` seconds (5 s by
  default: a dead source is left within ~10 s). Why a call and not HTTP/2 keepalive PINGs: a quiet Watch
  carries no data that could time out, and grpcio's client (1.85) sent no keepalive PING to a stopped
  peer within a minute even with keepalive_time_ms=500 (tried; its pings are throttled by policy), while
  a grpcio server refuses PINGs closer than 10 s apart; a unary call with a deadline works with both
  fronts and costs one small request per `probe` seconds. A source that does not send its first event
  within the client's `timeout` is skipped too;
- to the next address when its source is no longer in `sources()` (the WAN pool saw it leave or fail
  first), checked every `check` seconds;
- back to the same source, on a fresh stream, when the mirror asks for a resync (`needs_resync`).

Each new stream resets the mirror: the new source's snapshots replace the copy at their marker, and
readers keep the previous copy until then. From the moment a stream ends until a new source's snapshot is
whole the mirror is `stale_for` the time since (`mark_lost`); when a whole pass over `sources()` found
no source, the follower waits `retry` seconds, doubling up to `max_retry`, each wait drawn at random
between half and one and a half times that (followers of a datacenter that came back must not all
knock at the same instant), and tries again.

Events are applied in a worker thread, one at a time and in order: a snapshot of thousands of services
is seconds of ring building, which on the registry's loop would stall every call it serves (as the
caching client does, `registry.client.aio`). Readers read `mirror.catalog` from any thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from registry.client.aio import AsyncRpcClient
from registry.client.errors import RegistryError
from registry.federation.mirror import Mirror

__all__ = ["Follower"]

log = logging.getLogger(__name__)

#: Seconds between two probes of a followed source, and how long one may take.
PROBE = 5.0


class Follower:
    """Follows one live registry of `mirror`'s datacenter at a time; `await run()` until cancelled."""

    def __init__(self, mirror: Mirror, sources: Callable[[], list[str]], *, retry: float = 1.0,
                 max_retry: float = 30.0, check: float = 1.0, probe: float = PROBE,
                 clock: Callable[[], float] = time.monotonic, rng: random.Random | None = None,
                 **client_opts: Any) -> None:
        if not 0 < retry <= max_retry:
            raise ValueError(f"retry must be > 0 and <= max_retry, not {retry!r} (max_retry {max_retry!r})")
        if not check > 0:
            raise ValueError(f"check must be > 0, not {check!r}")
        if not probe > 0:
            raise ValueError(f"probe must be > 0, not {probe!r}")
        self.probe = probe
        self.mirror = mirror
        self.sources = sources
        self.retry = retry
        self.max_retry = max_retry
        self.check = check
        self.clock = clock
        self._rng = rng if rng is not None else random.Random()
        self._client_opts = client_opts
        AsyncRpcClient("127.0.0.1:1", **self._client_opts)  # the options, checked now (no channel is opened)
        #: The address followed now (None between sources).
        self.source: str | None = None
        #: Times the follower moved to a different source than the one it followed last.
        self.switches = 0
        #: Streams opened, and why the last one ended.
        self.streams = 0
        self.last_error = ""
        self._last_source: str | None = None

    async def run(self) -> None:
        """Follow until cancelled (nothing else ends it)."""
        applier = ThreadPoolExecutor(1, thread_name_prefix=f"mirror-{self.mirror.datacenter}")
        try:
            delay = self.retry
            while True:
                if await self._pass(applier):
                    delay = self.retry
                    continue
                self.mirror.mark_lost(now=self.clock())
                await asyncio.sleep(delay * self._rng.uniform(0.5, 1.5))
                delay = min(delay * 2, self.max_retry)
        finally:
            self.source = None
            applier.shutdown(wait=False, cancel_futures=True)  # an apply under way just finishes

    async def _pass(self, applier: ThreadPoolExecutor) -> bool:
        """Try the sources in order, each until its stream ends; whether any sent a whole snapshot."""
        answered = False
        for addr in self._sources():
            while addr in self._sources():  # again after a resync the mirror asked for
                whole = await self._follow(addr, applier)
                answered = answered or whole
                if not (whole and self.mirror.needs_resync):
                    break
        return answered

    async def _follow(self, addr: str, applier: ThreadPoolExecutor) -> bool:
        """One stream from `addr` into the mirror, until it ends, fails, `addr` leaves `sources()` or the
        mirror wants a resync; whether a whole snapshot came."""
        loop = asyncio.get_running_loop()
        mirror = self.mirror
        if self._last_source is not None and addr != self._last_source:
            self.switches += 1
        self.source = self._last_source = addr
        self.streams += 1
        whole = False
        try:
            client = AsyncRpcClient(addr, **self._client_opts)
        except RegistryError as exc:  # an `rpc` tag that is no address: skip it, as a source that fails
            self.last_error = str(exc)
            self.source = None
            mirror.mark_lost(now=self.clock())
            log.warning("mirror %s: cannot follow %r (%s)", mirror.datacenter, addr, exc)
            return False
        events: AsyncIterator[bytes] = client.watch_events("", export=True)  # only what it exports
        await loop.run_in_executor(applier, mirror.reset)
        pending: asyncio.Future[bytes] | None = None
        probe = asyncio.ensure_future(self._probe(client))
        try:
            while True:
                if pending is None:
                    pending = asyncio.ensure_future(events.__anext__())
                waiting: set[asyncio.Future[Any]] = {pending, probe}
                done, _ = await asyncio.wait(waiting, timeout=self.check,
                                             return_when=asyncio.FIRST_COMPLETED)
                if probe in done:
                    self.last_error = f"{addr}: {probe.result()}"
                    return whole
                if not done:
                    if addr not in self._sources():
                        self.last_error = f"{addr}: no longer a source"
                        return whole
                    continue
                data = pending.result()
                pending = None
                await loop.run_in_executor(applier, _apply, mirror, data, self.clock())
                whole = whole or mirror.synced
                if mirror.needs_resync:
                    self.last_error = f"{addr}: resync ({dict(mirror.anomalies)}, dropped {dict(mirror.dropped)})"
                    return whole
        except StopAsyncIteration:
            self.last_error = f"{addr}: stream ended"
            return whole
        except RegistryError as exc:
            self.last_error = str(exc)
            return whole
        finally:
            for task in (pending, probe):
                if task is None:
                    continue
                if not task.done():
                    task.cancel()
                    with contextlib.suppress(BaseException):
                        await task
                elif not task.cancelled():
                    # left behind done (the probe failed while the stream failed too): retrieve its
                    # error, or asyncio reports "Task exception was never retrieved" at collection
                    task.exception()
            with contextlib.suppress(Exception):
                await events.aclose()  # type: ignore[attr-defined]
            with contextlib.suppress(Exception):
                await client.close()
            self.source = None
            mirror.mark_lost(now=self.clock())
            log.info("mirror %s: left %s (%s)", mirror.datacenter, addr, self.last_error)


    def _sources(self) -> list[str]:
        """`sources()`; a callback that raises is logged and read as no source (it must not end `run`)."""
        try:
            return list(self.sources())
        except Exception:
            log.exception("mirror %s: sources() failed", self.mirror.datacenter)
            return []

    async def _probe(self, client: AsyncRpcClient) -> str:
        """Returns (why) only when the source failed to answer a Groups call within `probe` seconds."""
        while True:
            await asyncio.sleep(self.probe)
            try:
                await client.groups(timeout=self.probe)
            except RegistryError as exc:
                return f"probe failed: {exc}"


def _apply(mirror: Mirror, data: bytes, now: float) -> None:
    mirror.apply(data, now=now)
