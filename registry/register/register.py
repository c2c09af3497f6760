"""Embed a service in the registry's gossip pool: `Register` (sync apps) and `AsyncRegister`.

A service joins the same Serf pool as the registry servers, as a member whose tags say
its group and the address clients should use (`addr`).  Registries turn those tags into
ring entries; the service itself only has to stay in the pool and leave gracefully.

Deliberately light: only the gossip layers are imported (never grpc), so a service pays
for nothing but SWIM.  The sync `Register` drives gossip from one daemon thread with plain
sockets (`registry.serf.threaded`), so a blocking app (Flask, a worker loop, ...) pays for
neither asyncio nor the ssl/OpenSSL it imports (~8 MiB RSS).  `AsyncRegister` runs on the
app's own event loop; asyncio is imported only inside its coroutines, where it is loaded anyway.

`start()` returns once a registry has merged our state (and fails, leaving nothing running,
when none answers or when our id is alive at another address: the join's reply says so).
`stop()` returns once a registry has acknowledged our departure, not after Serf's gossip-paced
leave (about 2 s at the LAN profile): a service being stopped should not wait on gossip timers.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from registry.memberlist.types import Address
from registry.serf.member import MemberStatus
from registry.serf.threaded import ThreadedSerf

from .options import DEFAULT_REPLICAS, Handler, Options, RegisterError

if TYPE_CHECKING:  # typing.Self is 3.11+: only the type checker sees it (the package runs on 3.10)
    import asyncio
    from typing import Self

__all__ = ["DEFAULT_REPLICAS", "AsyncRegister", "Handler", "Register", "RegisterError"]

log = logging.getLogger(__name__)


def _join_failure(seeds: str, exc: BaseException, bugs: int) -> str:
    """What a failed join says.  `bugs`: handler errors the join caused in this process (a
    registry that answered, whose reply our own code failed on): not "no registry answered",
    which would send the operator to the network instead of to the logged traceback."""
    if bugs:
        return f"joining the registries at {seeds} failed on a bug in this process (traceback logged): {exc}"
    return f"no registry answered at {seeds}: {exc}"


class AsyncRegister(Options):
    """A service's membership in the pool, for asyncio apps (arguments: see `Options`)."""

    #: the running `SerfAgent` (None when not started)
    agent: Any = None

    @functools.cached_property
    def _handler_tasks(self) -> set[asyncio.Future[Any]]:
        """Coroutines of async handlers still running (per instance, made on first use)."""
        return set()

    @property
    def address(self) -> str:
        """The gossip address this service advertises (known after start)."""
        if self.agent is None:
            return ""
        m = self.agent.local_member()
        return f"[{m.addr}]:{m.port}" if ":" in m.addr else f"{m.addr}:{m.port}"

    async def start(self) -> int:
        """Bind, join the registries; returns how many answered.  Raises RegisterError if none
        did, or if our id is alive at another address in the pool (nothing is left running)."""
        import asyncio

        from registry.serf.agent import SerfAgent

        if self.agent is not None:
            raise RegisterError("already started")
        cfg = self._serf_config()
        agent = SerfAgent(cfg)
        if self.handler is not None:
            agent.add_handler(self._dispatch)
        try:
            await agent.start()
        except (OSError, ValueError) as exc:
            raise RegisterError(f"cannot start gossip on {self._bind[0]}:{self._bind[1]}: {exc}") from None
        self.agent = agent
        timeout = self._join_timeout(cfg)
        failure: str | None = None
        n = 0
        bugs = agent.core.handler_errors
        try:
            n = await asyncio.wait_for(agent.join(list(self._seeds)), timeout)
        except asyncio.TimeoutError:
            failure = f"no registry answered at {','.join(self._seeds)} within {timeout:.0f}s"
        except Exception as exc:  # noqa: BLE001 - every way a join fails is this one error
            failure = _join_failure(",".join(self._seeds), exc, agent.core.handler_errors - bugs)
        holder = agent.core.name_taken_by
        if holder is not None:  # checked first: a join can also succeed through a seed that missed it
            await self._abort()  # no leave: a leave in our name would take the holder out
            raise self._taken(holder)
        if failure is not None or not n:
            await self._abort()
            raise RegisterError(failure or f"no registry answered at {','.join(self._seeds)}")
        log.info("registered %s in group %s (addr %s) via %d registr%s", self.id, self.group, self.addr, n, "y" if n == 1 else "ies")
        return int(n)

    async def _abort(self) -> None:
        import asyncio

        agent, self.agent = self.agent, None
        if agent is not None:
            try:
                await asyncio.wait_for(agent.shutdown(), 5.0)
            except Exception:
                log.exception("shutdown after a failed join")

    async def stop(self) -> None:
        """Leave the pool and release the ports: returns once a registry has acknowledged our
        departure (merged it, so it is out of its ring), or after leave_timeout."""
        import asyncio

        agent = self.agent
        if agent is None:
            return
        if agent.is_shutdown:  # it stopped itself (its id lost a name conflict, logged then)
            await self._abort()
            return
        try:
            if not await asyncio.wait_for(self._leave(agent), self.leave_timeout):
                log.warning("leave not acknowledged by the pool; shutting down anyway")
        except asyncio.TimeoutError:
            log.warning("leave not acknowledged within %gs; shutting down anyway", self.leave_timeout)
        except Exception as exc:  # noqa: BLE001 - stop() always releases the ports
            log.warning("leave did not finish cleanly: %s", exc or type(exc).__name__)
        await self._abort()

    async def _leave(self, agent: Any) -> bool:
        """`Serf.leave_now` to the peers `_confirm_peers` picks; True at the first accepted
        push/pull, else once Serf's own leave sequence ends."""
        import asyncio

        core, runner = agent.core, agent.runner
        alive = [m for m in core.members() if m.status == MemberStatus.ALIVE and m.name != core.name]
        peers = [Address(m.addr, m.port) for m in self._confirm_peers(alive)]
        pending = {runner.watch_stream(sid) for sid in core.leave_now(runner.now(), peers)}
        runner.kick()
        if not alive:
            return True  # nobody left to tell (Serf would still wait LeavePropagateDelay)
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if any(f.result().accepted for f in done):
                return True
        return bool(await runner.wait_until(lambda: core.left, self.leave_timeout))

    async def set_tags(self, tags: Mapping[str, str]) -> None:
        """Replace the extra tags (group/addr/replicas/weight are kept unless given)."""
        new = self._merge_tags(tags)
        if self.agent is not None:
            await self.agent.set_tags(new)

    def members(self) -> list[Any]:
        """Every member this service knows of (registries and services, any status)."""
        return list(self.agent.members()) if self.agent is not None else []

    def _dispatch(self, event: Any) -> None:
        import asyncio
        import inspect

        for method, fn, m in self._callbacks(event):
            try:
                result = fn(m)
                if inspect.isawaitable(result):
                    # The loop holds tasks only weakly: keep each until it ends (one not referenced could
                    # be collected midway), and log its failure as a sync handler's is logged.
                    task = asyncio.ensure_future(result)
                    self._handler_tasks.add(task)
                    task.add_done_callback(functools.partial(self._handler_done, method, m.name))
            except Exception:
                log.exception("handler %s failed for %s", method, m.name)

    def _handler_done(self, method: str, name: str, task: asyncio.Future[Any]) -> None:
        self._handler_tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("handler %s failed for %s", method, name, exc_info=task.exception())

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


class Register(Options):
    """A service's membership in the pool, for synchronous apps (arguments: see `Options`).

    `Register(id, bind, advertise, registries, group, addr).start()` returns once a registry
    has answered the join; gossip then runs on a daemon thread (no asyncio).  `stop()` leaves
    gracefully.  Also a context manager.  Handler callbacks run on the gossip thread.
    """

    #: the running gossip node (None when not started)
    agent: ThreadedSerf | None = None
    #: upper bound for the join in start() (the join has its own, usually shorter, bound)
    start_timeout: float = 60.0

    @property
    def address(self) -> str:
        """The gossip address this service advertises (known after start)."""
        agent = self.agent
        return str(agent.address) if agent is not None and agent.address is not None else ""

    def set_handler(self, handler: Any) -> None:
        """Go-style: set the membership handler (before start)."""
        self.handler = handler

    def start(self) -> int:
        """Bind and join the pool; returns how many registries answered (as soon as their
        push/pull merged).  Raises RegisterError if none did, or if our id is alive at another
        address in the pool (the gossip thread and sockets are gone then)."""
        if self.agent is not None:
            raise RegisterError("already started")
        cfg = self._serf_config()
        agent = ThreadedSerf(cfg)
        agent.add_handler(self._dispatch)
        try:
            agent.start()
        except (OSError, ValueError) as exc:
            raise RegisterError(f"cannot start gossip on {self._bind[0]}:{self._bind[1]}: {exc}") from None
        timeout = min(self._join_timeout(cfg), self.start_timeout)
        bugs = agent.core.handler_errors
        try:
            n = agent.join(self._seeds, timeout)
        except BaseException as exc:
            holder = agent.name_taken_by
            agent.shutdown()
            if holder is not None:
                raise self._taken(holder) from None
            if isinstance(exc, Exception):
                bugs = agent.core.handler_errors - bugs  # the gossip thread is stopped: read it as is
                raise RegisterError(_join_failure(",".join(self._seeds), exc, bugs)) from None
            raise
        holder = agent.name_taken_by  # a join can also succeed through a seed that missed it
        if holder is not None:
            agent.shutdown()  # no leave: a leave in our name would take the holder out
            raise self._taken(holder)
        self.agent = agent
        log.info("registered %s in group %s (addr %s) via %d registr%s", self.id, self.group, self.addr, n, "y" if n == 1 else "ies")
        return n

    def stop(self) -> None:
        """Leave the pool, then stop and join the gossip thread: returns once a registry has
        acknowledged our departure (merged it, so it is out of its ring), or after leave_timeout."""
        agent, self.agent = self.agent, None
        if agent is None:
            return
        if agent.is_shutdown:  # it stopped itself (its id lost a name conflict, logged then)
            agent.shutdown()
            return
        try:
            if not agent.leave(self.leave_timeout, confirm_with=self._confirm_peers):
                log.warning("leave not acknowledged within %gs; shutting down anyway", self.leave_timeout)
        except Exception as exc:  # noqa: BLE001 - stop() always releases the ports
            log.warning("leave did not finish cleanly: %s", exc or type(exc).__name__)
        finally:
            agent.shutdown()

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Replace the extra tags (group/addr/replicas/weight are kept unless given)."""
        new = self._merge_tags(tags)
        if self.agent is not None:
            self.agent.set_tags(new)

    def members(self) -> list[Any]:
        """Every member this service knows of (registries and services, any status)."""
        agent = self.agent
        return list(agent.members()) if agent is not None else []

    def _dispatch(self, event: Any) -> None:
        for method, fn, m in self._callbacks(event):
            try:
                result = fn(m)
            except Exception:
                log.exception("handler %s failed for %s", method, m.name)
                continue
            if hasattr(result, "__await__"):
                # no event loop here: an async handler belongs with AsyncRegister
                log.warning("handler %s returned an awaitable; Register ignores it (use AsyncRegister)", method)
                close = getattr(result, "close", None)
                if close is not None:
                    close()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
