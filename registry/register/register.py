"""Embed a service in the registry's gossip pool: `Register` (sync apps) and `AsyncRegister`.

A service joins the same Serf pool as the registry servers, as a member whose tags say
its group and the address clients should use (`addr`).  Registries turn those tags into
ring entries; the service itself only has to stay in the pool and leave gracefully.

Deliberately light: only the gossip layers are imported (never grpc), so a service pays
for nothing but SWIM.  The sync `Register` drives gossip from one daemon thread with plain
sockets (`registry.serf.threaded`), so a blocking app (Flask, a worker loop, ...) pays for
neither asyncio nor the ssl/OpenSSL it imports (~8 MiB RSS).  `AsyncRegister` runs on the
app's own event loop; asyncio is imported only inside its coroutines, where it is loaded anyway.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from registry.addresses import UsageError, parse_hostport
from registry.memberlist.config import Config
from registry.serf.config import SerfConfig
from registry.serf.events import EventType, MemberEvent
from registry.serf.threaded import ThreadedSerf

__all__ = ["Register", "AsyncRegister", "RegisterError", "Handler", "DEFAULT_REPLICAS"]

log = logging.getLogger(__name__)

#: What the Go original puts in the `replicas` tag by default.
DEFAULT_REPLICAS = 10000
_RESERVED = ("group", "addr", "replicas", "weight")


class RegisterError(RuntimeError):
    """Joining failed (no registry answered, bad address, port taken) or the register is misused."""


class Handler(Protocol):
    """Membership callbacks, as in the Go original's `registry.Handler` (all optional).

    Each receives a `registry.serf.member.Member` (name, addr, port, tags, status).  They
    run on the gossip thread (`Register`) or loop (`AsyncRegister`): keep them short, never block.
    """

    def on_member_join(self, member: Any) -> Any: ...

    def on_member_leave(self, member: Any) -> Any: ...

    def on_member_update(self, member: Any) -> Any: ...


def _split(text: str, what: str, default_port: int | None) -> tuple[str, int]:
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


_MEMBER_METHODS = {
    EventType.MEMBER_JOIN: "on_member_join",
    EventType.MEMBER_UPDATE: "on_member_update",
    EventType.MEMBER_LEAVE: "on_member_leave",
    EventType.MEMBER_FAILED: "on_member_leave",
}


class _Settings:
    """What both registers validate up front and turn into a Serf config (no I/O here).

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
        try:
            Config.profile(profile)
        except ValueError as exc:
            raise RegisterError(str(exc)) from None

    @property
    def tags(self) -> dict[str, str]:
        return dict(self._tags)

    def _serf_config(self) -> SerfConfig:
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
        return cfg

    def _join_timeout(self, cfg: SerfConfig) -> float:
        return 2 * cfg.memberlist.tcp_timeout + 5.0

    def _merge_tags(self, tags: Mapping[str, str]) -> dict[str, str]:
        """Record new extra tags (group/addr/replicas/weight are kept unless given)."""
        new = {k: v for k, v in self._tags.items() if k in _RESERVED}
        new.update(tags)
        self._tags = new
        if "addr" in tags:
            self.addr = tags["addr"]
        return dict(new)

    def _callbacks(self, event: Any) -> list[tuple[str, Callable[[Any], Any], Any]]:
        """(method name, handler method, member) for each member a membership event names."""
        if not isinstance(event, MemberEvent):
            return []
        method = _MEMBER_METHODS.get(event.type)
        fn = getattr(self.handler, method, None) if method else None
        if fn is None or method is None:
            return []
        return [(method, fn, m) for m in event.members]


class AsyncRegister(_Settings):
    """A service's membership in the pool, for asyncio apps (arguments: see `_Settings`)."""

    #: the running `SerfAgent` (None when not started)
    agent: Any = None

    @property
    def address(self) -> str:
        """The gossip address this service advertises (known after start)."""
        if self.agent is None:
            return ""
        m = self.agent.local_member()
        return f"[{m.addr}]:{m.port}" if ":" in m.addr else f"{m.addr}:{m.port}"

    async def start(self) -> int:
        """Bind, join the registries; returns how many answered.  Raises RegisterError if none did."""
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
        import asyncio

        agent, self.agent = self.agent, None
        if agent is not None:
            try:
                await asyncio.wait_for(agent.shutdown(), 5.0)
            except Exception:
                log.exception("shutdown after a failed join")

    async def stop(self) -> None:
        """Leave the pool gracefully (bounded by leave_timeout) and release the ports."""
        import asyncio

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
                    asyncio.ensure_future(result)
            except Exception:
                log.exception("handler %s failed for %s", method, m.name)

    async def __aenter__(self) -> "AsyncRegister":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


class Register(_Settings):
    """A service's membership in the pool, for synchronous apps (arguments: see `_Settings`).

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
        push/pull merged), raises RegisterError if none did."""
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
        try:
            n = agent.join(self._seeds, timeout)
        except BaseException as exc:
            agent.shutdown()
            if isinstance(exc, Exception):
                raise RegisterError(f"no registry answered at {','.join(self._seeds)}: {exc}") from None
            raise
        self.agent = agent
        log.info("registered %s in group %s (addr %s) via %d registr%s", self.id, self.group, self.addr, n, "y" if n == 1 else "ies")
        return n

    def stop(self) -> None:
        """Leave gracefully (bounded by leave_timeout), then stop and join the gossip thread."""
        agent, self.agent = self.agent, None
        if agent is None:
            return
        try:
            if not agent.leave(self.leave_timeout):
                log.warning("leave did not finish within %gs", self.leave_timeout)
        except Exception as exc:
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

    def __enter__(self) -> "Register":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
