"""Embed a service in the registry's gossip pool: `Register` (sync apps) and `AsyncRegister`.

A service joins the same Serf pool as the registry servers, as a member whose tags say
its group and the address clients should use (`addr`).  Registries turn those tags into
ring entries; the service itself only has to stay in the pool and leave gracefully.

Deliberately light: only the gossip layers are imported (never grpc), so a service pays
for nothing but SWIM.  The sync `Register` runs gossip on a daemon thread with its own
event loop, so a blocking app (Flask, a worker loop, ...) needs no asyncio.
"""

from __future__ import annotations

import asyncio
import inspect
import ipaddress
import logging
import socket
import threading
from collections.abc import Iterable, Mapping
from concurrent.futures import Future
from typing import Any, Protocol

from registry.memberlist.config import Config

__all__ = ["Register", "AsyncRegister", "RegisterError", "Handler", "DEFAULT_REPLICAS"]

log = logging.getLogger("register")

#: What the Go original puts in the `replicas` tag by default.
DEFAULT_REPLICAS = 10000
_RESERVED = ("group", "addr", "replicas", "weight")


class RegisterError(RuntimeError):
    """Joining failed (no registry answered, bad address, port taken) or the register is misused."""


class Handler(Protocol):
    """Membership callbacks, as in the Go original's `registry.Handler` (all optional).

    Each receives a `registry.serf.member.Member` (name, addr, port, tags, status).  They
    run on the gossip loop: keep them short and never block.
    """

    def on_member_join(self, member: Any) -> Any: ...

    def on_member_leave(self, member: Any) -> Any: ...

    def on_member_update(self, member: Any) -> Any: ...


def _split(text: str, what: str, default_port: int | None) -> tuple[str, int]:
    from registry.addresses import UsageError, parse_hostport

    try:
        hp = parse_hostport(text, what, default_port=default_port)
    except UsageError as exc:
        raise RegisterError(str(exc)) from None
    return hp.host, hp.port


def _literal(host: str) -> str:
    """An IP literal for `host` ("" = every interface); the gossip layer binds literal IPs only."""
    if not host:
        return "0.0.0.0"
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    try:
        return str(socket.getaddrinfo(host, None, type=socket.SOCK_DGRAM)[0][4][0])
    except (OSError, UnicodeError) as exc:
        raise RegisterError(f"cannot resolve {host!r}: {exc}") from None


def _seeds(registries: str | Iterable[str]) -> list[str]:
    parts = registries.split(",") if isinstance(registries, str) else list(registries)
    out: list[str] = []
    for p in parts:
        if p.strip():
            host, port = _split(p.strip(), "registries", 7370)
            out.append(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    return out


class AsyncRegister:
    """A service's membership in the pool, for asyncio apps.

    id: unique member name; bind: gossip bind "host:port" (":0" picks a port);
    advertise: gossip address told to the pool ("" = derived from bind);
    registries: comma-separated gossip addresses of registries (or a list);
    group: the service group; addr: the address clients should dial.
    """

    def __init__(
        self,
        id: str,
        bind: str,
        advertise: str,
        registries: str | Iterable[str],
        group: str,
        addr: str,
        *,
        replicas: int | None = DEFAULT_REPLICAS,
        weight: int | None = None,
        tags: Mapping[str, str] | None = None,
        handler: Handler | Any | None = None,
        profile: str = "lan",
        encrypt: str | None = None,
        leave_timeout: float = 5.0,
    ) -> None:
        if not id:
            raise RegisterError("id must not be empty")
        if not group:
            raise RegisterError("group must not be empty")
        self.id = id
        self.group = group
        self.addr = addr
        self._bind = _split(bind or ":0", "bind", None)
        self._advertise = _split(advertise, "advertise", self._bind[1]) if advertise else None
        self._seeds = _seeds(registries)
        if not self._seeds:
            raise RegisterError("registries: give at least one registry gossip address")
        self._tags: dict[str, str] = dict(tags or {})
        self._tags.update({"group": group, "addr": addr})
        if replicas is not None:
            if replicas < 1:
                raise RegisterError("replicas must be positive")
            self._tags["replicas"] = str(replicas)
        if weight is not None:
            if weight < 1:
                raise RegisterError("weight must be positive")
            self._tags["weight"] = str(weight)
        self.handler = handler
        self.profile = profile
        self.encrypt = encrypt
        self.leave_timeout = leave_timeout
        self.agent: Any = None
        try:
            Config.profile(profile)
        except ValueError as exc:
            raise RegisterError(str(exc)) from None

    @property
    def tags(self) -> dict[str, str]:
        return dict(self._tags)

    @property
    def address(self) -> str:
        """The gossip address this service advertises (known after start)."""
        if self.agent is None:
            return ""
        m = self.agent.local_member()
        return f"[{m.addr}]:{m.port}" if ":" in m.addr else f"{m.addr}:{m.port}"

    async def start(self) -> int:
        """Bind, join the registries; returns how many answered.  Raises RegisterError if none did."""
        if self.agent is not None:
            raise RegisterError("already started")
        from registry.serf.agent import SerfAgent
        from registry.serf.config import SerfConfig

        overrides: dict[str, Any] = {"name": self.id, "bind_addr": _literal(self._bind[0]), "bind_port": self._bind[1]}
        if self._advertise is not None:
            if self._advertise[0]:
                overrides["advertise_addr"] = _literal(self._advertise[0])
            overrides["advertise_port"] = self._advertise[1]
        cfg = SerfConfig(
            name=self.id, tags=dict(self._tags), memberlist=Config.profile(self.profile).replace(**overrides), encrypt_key=self.encrypt
        )
        if self.profile == "fast":
            cfg = cfg.replace(leave_propagate_delay=0.2)
        agent = SerfAgent(cfg)
        if self.handler is not None:
            agent.add_handler(self._dispatch)
        try:
            await agent.start()
        except (OSError, ValueError) as exc:
            raise RegisterError(f"cannot start gossip on {self._bind[0]}:{self._bind[1]}: {exc}") from None
        self.agent = agent
        timeout = 2 * cfg.memberlist.tcp_timeout + 5.0
        try:
            n = await asyncio.wait_for(agent.join(list(self._seeds)), timeout)
        except asyncio.TimeoutError:
            await self._abort()
            raise RegisterError(f"no registry answered at {','.join(self._seeds)} within {timeout:.0f}s") from None
        except Exception as exc:
            await self._abort()
            raise RegisterError(f"no registry answered at {','.join(self._seeds)}: {exc}") from None
        if not n:
            await self._abort()
            raise RegisterError(f"no registry answered at {','.join(self._seeds)}")
        log.info("registered %s in group %s (addr %s) via %d registr%s", self.id, self.group, self.addr, n, "y" if n == 1 else "ies")
        return int(n)

    async def _abort(self) -> None:
        agent, self.agent = self.agent, None
        if agent is not None:
            try:
                await asyncio.wait_for(agent.shutdown(), 5.0)
            except Exception:
                log.exception("shutdown after a failed join")

    async def stop(self) -> None:
        """Leave the pool gracefully (bounded by leave_timeout) and release the ports."""
        agent = self.agent
        if agent is None:
            return
        try:
            await asyncio.wait_for(agent.leave(self.leave_timeout), self.leave_timeout + 1.0)
        except Exception as exc:
            log.warning("leave did not finish cleanly: %s", exc or type(exc).__name__)
        await self._abort()

    async def set_tags(self, tags: Mapping[str, str]) -> None:
        """Replace the extra tags (group/addr/replicas/weight are kept unless given)."""
        new = {k: v for k, v in self._tags.items() if k in _RESERVED}
        new.update(tags)
        self._tags = new
        if "addr" in tags:
            self.addr = tags["addr"]
        if self.agent is not None:
            await self.agent.set_tags(dict(new))

    def members(self) -> list[Any]:
        """Every member this service knows of (registries and services, any status)."""
        return list(self.agent.members()) if self.agent is not None else []

    def _dispatch(self, event: Any) -> None:
        from registry.serf.events import EventType, MemberEvent

        if not isinstance(event, MemberEvent):
            return
        method = {
            EventType.MEMBER_JOIN: "on_member_join",
            EventType.MEMBER_UPDATE: "on_member_update",
            EventType.MEMBER_LEAVE: "on_member_leave",
            EventType.MEMBER_FAILED: "on_member_leave",
        }.get(event.type)
        fn = getattr(self.handler, method, None) if method else None
        if fn is None:
            return
        for m in event.members:
            try:
                result = fn(m)
                if inspect.isawaitable(result):
                    asyncio.ensure_future(result)
            except Exception:
                log.exception("handler %s failed for %s", method, m.name)

    async def __aenter__(self) -> "AsyncRegister":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


class Register:
    """`AsyncRegister` for synchronous apps: gossip runs on a daemon thread with its own loop.

    `Register(id, bind, advertise, registries, group, addr).start()` returns once joined;
    `stop()` leaves gracefully.  Also a context manager.
    """

    def __init__(
        self,
        id: str,
        bind: str,
        advertise: str,
        registries: str | Iterable[str],
        group: str,
        addr: str,
        **kwargs: Any,
    ) -> None:
        self._inner = AsyncRegister(id, bind, advertise, registries, group, addr, **kwargs)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.start_timeout = 60.0

    @property
    def id(self) -> str:
        return self._inner.id

    @property
    def address(self) -> str:
        return self._inner.address

    @property
    def tags(self) -> dict[str, str]:
        return self._inner.tags

    def set_handler(self, handler: Any) -> None:
        """Go-style: set the membership handler (before start)."""
        self._inner.handler = handler

    def _call(self, coro: Any, timeout: float) -> Any:
        if self._loop is None:
            coro.close()
            raise RegisterError("not started")
        fut: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return fut.result(timeout)

    def start(self) -> int:
        """Join the pool; returns how many registries answered, raises RegisterError if none."""
        if self._thread is not None:
            raise RegisterError("already started")
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()
            loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name=f"register-{self.id}", daemon=True)
        self._thread.start()
        ready.wait()
        try:
            return int(self._call(self._inner.start(), self.start_timeout))
        except BaseException:
            self._halt()
            raise

    def _halt(self) -> None:
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(10.0)

    def stop(self) -> None:
        """Leave gracefully (bounded by leave_timeout) and stop the gossip thread."""
        if self._loop is None:
            return
        try:
            self._call(self._inner.stop(), self._inner.leave_timeout + 10.0)
        finally:
            self._halt()

    def set_tags(self, tags: Mapping[str, str]) -> None:
        if self._loop is None:
            # before start: just remember them
            asyncio.run(self._inner.set_tags(tags))
            return
        self._call(self._inner.set_tags(tags), 30.0)

    def members(self) -> list[Any]:
        if self._loop is None:
            return []

        async def snap() -> list[Any]:
            return self._inner.members()

        return list(self._call(snap(), 30.0))

    def __enter__(self) -> "Register":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
