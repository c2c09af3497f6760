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

Health checks (`checks=[...]`, `registry.checks`) run from `start()` to `stop()` off the gossip
thread's hot path (threads for `Register`, tasks and threads for `AsyncRegister`), and their aggregate
goes into the service's tags (`registry.healthtags`) each time the status or the failing check
changes.  Each check starts at its initial status, critical unless told (Consul's default): a service
with checks joins the pool as critical, off every ring, and enters the rings once its checks pass,
usually within one probe (they start before the join).  With `deregister_critical_after`, a service
critical that long leaves the pool by itself as `stop()` does, logs why and keeps the reason in
`deregistered`; it stays out until the application calls `start()` again.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from registry.checks.board import Board, Published
from registry.checks.machine import CheckState
from registry.checks.spec import CheckError, status_of
from registry.checks.threads import CheckThreads
from registry.healthtags import Health, parse_health
from registry.memberlist.threaded import RunnerClosed
from registry.memberlist.types import Address
from registry.serf.member import MemberStatus
from registry.serf.threaded import ThreadedSerf

from .options import DEFAULT_REPLICAS, Handler, Options, RegisterError

if TYPE_CHECKING:  # typing.Self is 3.11+: only the type checker sees it (the package runs on 3.10)
    import asyncio
    from typing import Self

    from registry.checks.tasks import CheckTasks

__all__ = ["DEFAULT_REPLICAS", "AsyncRegister", "Handler", "Register", "RegisterError"]

log = logging.getLogger(__name__)


class _Runner(Protocol):
    """What `_Health` reads of either runner (`CheckThreads`, `CheckTasks`)."""

    @property
    def health(self) -> Published: ...

    def states(self) -> list[CheckState]: ...

    def force(self, indexes: list[int], status: Health, note: str) -> None: ...

    def start(self) -> None: ...


class _Health(Options):
    """What both registers show of their checks and how the application feeds a TtlCheck."""

    #: why the service left the pool by itself (`deregister_critical_after`), else None
    deregistered: str | None = None
    _checks_runner: _Runner | None = None

    @property
    def health(self) -> tuple[Health, str]:
        """(aggregate status, note naming the failing check); passing and "" without checks."""
        runner = self._checks_runner
        if runner is not None:
            return runner.health
        status, note, _ = parse_health(self._health)
        return status, note

    def checks(self) -> list[CheckState]:
        """Each check's state (status, output, last result and run), for display."""
        runner = self._checks_runner
        return runner.states() if runner is not None else self._new_board(time.monotonic()).states()

    def heartbeat(self, note: str = "", check: str | None = None) -> None:
        """A TtlCheck passes until `ttl` from now (Consul's /agent/check/pass): every TTL check, or
        the one named.  Before start() and after stop() it has no effect."""
        self.set_status(Health.PASSING, note, check)

    def set_status(self, status: str | Health, note: str = "", check: str | None = None) -> None:
        """Set a TtlCheck's status ("passing", "warning" or "critical") until `ttl` from now, at once
        (no thresholds, as Consul's /agent/check/pass|warn|fail); `note` says why."""
        try:
            health = status_of(status, "status")
        except CheckError as exc:
            raise RegisterError(str(exc)) from None
        if not isinstance(note, str):
            raise RegisterError(f"note must be a string, not {type(note).__name__}")
        indexes = self._ttl_indexes(check, "set_status" if health is not Health.PASSING else "heartbeat")
        runner = self._checks_runner
        if runner is not None:
            runner.force(indexes, health, note)

    def _gossip_started(self) -> Board | None:
        """The checks' board for a start (its initial statuses logged), None without checks."""
        if not self._checks:
            return None
        board = self._new_board(time.monotonic())
        self._health_changed(board.publish_due() or board.health, initial=True)
        return board

    def _cannot_start(self, exc: BaseException) -> RegisterError:
        return RegisterError(f"cannot start gossip on {self._bind[0]}:{self._bind[1]}: {exc}")

    def _run_checks(self, runner_class: Any, board: Board | None, publish: Any, deregister: Any) -> None:
        """Start the checks (`CheckThreads` or `CheckTasks`) before the join: their first results
        may make it into our join."""
        self.deregistered = None
        if board is None:
            return
        self._checks_runner = runner_class(board, publish,
                                           deregister_after=self.deregister_critical_after,
                                           deregister=deregister, label=self.id)
        self._checks_runner.start()

    def _health_changed(self, pub: Published, initial: bool = False) -> dict[str, str]:
        """The tags with a new aggregate, logged (the operator's record of why routing changed; the
        initial statuses, critical by default, are no news: INFO)."""
        status, note = pub
        level = logging.INFO if initial or status is Health.PASSING else logging.WARNING
        log.log(level, "health of %s: %s%s", self.id, status.word, f" ({note})" if note else "")
        return self._health_update(pub)


def _join_failure(seeds: str, exc: BaseException, bugs: int) -> str:
    """What a failed join says.  `bugs`: handler errors the join caused in this process (a
    registry that answered, whose reply our own code failed on): not "no registry answered",
    which would send the operator to the network instead of to the logged traceback."""
    if bugs:
        return f"joining the registries at {seeds} failed on a bug in this process (traceback logged): {exc}"
    return f"no registry answered at {seeds}: {exc}"


class AsyncRegister(_Health):
    """A service's membership in the pool, for asyncio apps (arguments: see `Options`)."""

    #: the running `SerfAgent` (None when not started)
    agent: Any = None
    _checks_runner: CheckTasks | None = None

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

        from registry.checks.tasks import CheckTasks
        from registry.serf.agent import SerfAgent

        if self.agent is not None:
            raise RegisterError("already started")
        board = self._gossip_started()
        cfg = self._serf_config()
        agent = SerfAgent(cfg)
        if self.handler is not None:
            agent.add_handler(self._dispatch)
        try:
            await agent.start()
        except (OSError, ValueError) as exc:
            raise self._cannot_start(exc) from None
        self.agent = agent
        self._run_checks(CheckTasks, board, functools.partial(self._publish, agent), self._deregister)
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

    def _publish(self, agent: Any, pub: Published) -> None:
        """(on the loop) gossip the tags with a new aggregate health."""
        new = self._health_changed(pub)
        if not agent.is_shutdown:
            agent.core.set_tags(new, agent.runner.now())
            agent.runner.kick()

    async def _deregister(self, reason: str) -> None:
        log.warning("%s deregisters itself: %s (deregister_critical_after=%gs); it leaves the pool until start() "
                    "is called again", self.id, reason, self.deregister_critical_after or 0)
        self.deregistered = reason
        await self.stop()

    async def _abort(self) -> None:
        import asyncio

        runner, self._checks_runner = self._checks_runner, None
        if runner is not None:
            await runner.stop()
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
        runner, self._checks_runner = self._checks_runner, None
        if runner is not None:  # no health change may follow our leave
            await runner.stop()
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
        """Replace the extra tags (group/addr/replicas/weight/dc are kept unless given)."""
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


class Register(_Health):
    """A service's membership in the pool, for synchronous apps (arguments: see `Options`).

    `Register(id, bind, advertise, registries, group, addr).start()` returns once a registry
    has answered the join; gossip then runs on a daemon thread (no asyncio).  `stop()` leaves
    gracefully.  Also a context manager.  Handler callbacks run on the gossip thread.
    """

    #: the running gossip node (None when not started)
    agent: ThreadedSerf | None = None
    _checks_runner: CheckThreads | None = None
    #: upper bound for the join in start() (the join has its own, usually shorter, bound)
    start_timeout: float = 60.0

    @functools.cached_property
    def _tag_lock(self) -> threading.Lock:
        """Orders tag changes (the app's set_tags, the checks' health) as they are queued for gossip."""
        return threading.Lock()

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
        board = self._gossip_started()
        cfg = self._serf_config()
        agent = ThreadedSerf(cfg)
        agent.add_handler(self._dispatch)
        try:
            agent.start()
        except (OSError, ValueError) as exc:
            raise self._cannot_start(exc) from None
        self._run_checks(CheckThreads, board, functools.partial(self._publish, agent), self._deregister)
        timeout = min(self._join_timeout(cfg), self.start_timeout)
        bugs = agent.core.handler_errors
        try:
            n = agent.join(self._seeds, timeout)
        except BaseException as exc:
            holder = agent.name_taken_by
            self._stop_checks()
            agent.shutdown()
            if holder is not None:
                raise self._taken(holder) from None
            if isinstance(exc, Exception):
                bugs = agent.core.handler_errors - bugs  # the gossip thread is stopped: read it as is
                raise RegisterError(_join_failure(",".join(self._seeds), exc, bugs)) from None
            raise
        holder = agent.name_taken_by  # a join can also succeed through a seed that missed it
        if holder is not None:
            self._stop_checks()
            agent.shutdown()  # no leave: a leave in our name would take the holder out
            raise self._taken(holder)
        self.agent = agent
        log.info("registered %s in group %s (addr %s) via %d registr%s", self.id, self.group, self.addr, n, "y" if n == 1 else "ies")
        return n

    def _stop_checks(self) -> None:
        runner, self._checks_runner = self._checks_runner, None
        if runner is not None:
            runner.stop()

    def _publish(self, agent: ThreadedSerf, pub: Published) -> None:
        """(a check's thread, its runner's lock held) queue the tags with a new aggregate health on
        the gossip thread, without waiting for it (a membership handler calling heartbeat() on the
        gossip thread must never wait on a check thread that waits on it)."""
        with self._tag_lock:
            new = self._health_changed(pub)
            self._queue_tags(agent, new)

    @staticmethod
    def _queue_tags(agent: ThreadedSerf, new: dict[str, str]) -> None:
        core, runner = agent.core, agent.runner
        try:
            runner.submit(lambda: core.set_tags(new, runner.now()))
        except RunnerClosed:
            pass  # shut down meanwhile: nobody to tell

    def _deregister(self, reason: str) -> None:
        """(the runner's own thread, its checks stopped) leave the pool as stop() does."""
        log.warning("%s deregisters itself: %s (deregister_critical_after=%gs); it leaves the pool until start() "
                    "is called again", self.id, reason, self.deregister_critical_after or 0)
        self.deregistered = reason
        self.stop()

    def stop(self) -> None:
        """Leave the pool, then stop and join the gossip thread: returns once a registry has
        acknowledged our departure (merged it, so it is out of its ring), or after leave_timeout."""
        self._stop_checks()  # no health change may follow our leave
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
        """Replace the extra tags (group/addr/replicas/weight/dc and the health are kept unless given);
        returns once the gossip thread has them."""
        agent = self.agent
        with self._tag_lock:
            new = self._merge_tags(tags)
            if agent is not None:
                self._queue_tags(agent, new)
        if agent is not None:
            try:
                agent.runner.call(lambda: None)  # the queue is in order: ours has been applied
            except RunnerClosed:
                pass

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
