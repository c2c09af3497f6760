"""What `Register` and `AsyncRegister` check up front, and the Serf config they build (no I/O).

Every mistake a caller can make in the arguments is refused here, at construction (or in
`set_tags`), with a `RegisterError` naming the argument: a wrong type, an empty id or group,
a client address clients could not dial, tags too large for gossip metadata.  Left to later,
they surfaced as an AttributeError from deep inside, as "cannot start gossip on :0: ...", or
not at all (clients got `Service(addr='')`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from registry.addresses import (
    HostPort,
    UsageError,
    dial_problem,
    format_hostport,
    ip_literal,
    parse_hostport,
)
from registry.checks.board import Board, Published
from registry.checks.spec import Check, CheckError, name_checks
from registry.datacenter import DEFAULT_DATACENTER, TAG_DATACENTER, datacenter_problem
from registry.healthtags import MAX_NOTE_BYTES, TAG_HEALTH, TAG_HEALTH_NOTE, Health, health_tags
from registry.memberlist.config import Config, Profile
from registry.memberlist.types import META_MAX_SIZE
from registry.serf.config import SerfConfig
from registry.serf.events import EventType, MemberEvent
from registry.serf.keyring import decode_key
from registry.serf.tags import TagsTooLarge, check_tags

__all__ = ["DEFAULT_REPLICAS", "REGISTRY_GROUP", "Handler", "Options", "RegisterError", "client_addr"]

#: What the Go original puts in the `replicas` tag by default.
DEFAULT_REPLICAS = 10000
#: The group registries put in their own tags (`registry.server.REGISTRY_GROUP`, not imported
#: from there: that module loads asyncio, which a sync service must not pay for).
REGISTRY_GROUP = "registry-group"
_RESERVED = ("group", "addr", "replicas", "weight", TAG_DATACENTER)
#: The largest health tags checks can publish: what tags are sized against when there are checks.
_WORST_HEALTH = health_tags(Health.CRITICAL, "x" * MAX_NOTE_BYTES)


class RegisterError(RuntimeError):
    """Joining failed (no registry answered, bad address, port taken, id taken) or misuse."""


class Handler(Protocol):
    """Membership callbacks, as in the Go original's `registry.Handler` (all optional).

    Each receives a `registry.serf.member.Member` (name, addr, port, tags, status).  They
    run on the gossip thread (`Register`) or loop (`AsyncRegister`): keep them short, never block.
    """

    def on_member_join(self, member: Any) -> Any: ...

    def on_member_leave(self, member: Any) -> Any: ...

    def on_member_update(self, member: Any) -> Any: ...


def _text(value: object, what: str, example: str) -> str:
    """`value` if it is a str; else one line saying what was expected (an int port included:
    one spelling, "host:port" text as in the Go original, rather than guessing what 7380 meant)."""
    if isinstance(value, str):
        return value
    raise RegisterError(f"{what} must be a string such as {example!r}, not {type(value).__name__} {value!r}")


def _split(text: str, what: str, default_port: int | None) -> tuple[str, int]:
    try:
        hp = parse_hostport(text, what, default_port=default_port)
    except UsageError as exc:
        raise RegisterError(str(exc)) from None
    return hp.host, hp.port


def client_addr(value: object, what: str = "addr") -> str:
    """The address clients dial: "host:port" with a host (name or IP) and a port 1-65535."""
    text = _text(value, what, "10.0.0.5:8080")
    host, port = _split(text, what, None)
    if not host:
        raise RegisterError(f"{what}: {text!r} has no host: clients need one to dial (e.g. 10.0.0.5:{port})")
    why = dial_problem(HostPort(host, port))
    if why is not None:
        raise RegisterError(f"{what}: {text!r}: {why}")
    return text.strip()


def _literal(host: str) -> str:
    """An IP literal for `host` ("" = every interface); the gossip layer binds literal IPs only."""
    try:
        return ip_literal(host)
    except UsageError as exc:
        raise RegisterError(str(exc)) from None


def _seeds(registries: object) -> list[str]:
    if isinstance(registries, str):
        parts = registries.split(",")
    elif isinstance(registries, Iterable) and not isinstance(registries, (bytes, bytearray, Mapping)):
        parts = [_text(p, "registries: each address", "10.0.0.1:7370") for p in registries]
    else:
        raise RegisterError(
            f"registries must be 'host:port,host:port' or a list of such strings, not {type(registries).__name__}"
        )
    out: list[str] = []
    for p in parts:
        if p.strip():
            host, port = _split(p.strip(), "registries", 7370)
            why = dial_problem(HostPort(host, port))
            if why is not None:
                raise RegisterError(f"registries: {p.strip()!r}: {why}")
            out.append(format_hostport(host, port))
    return out


def _count(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise RegisterError(f"{what} must be a positive int, not {value!r}")
    return value


def _checked_tags(tags: Mapping[str, str], with_health: bool = False) -> dict[str, str]:
    """Tags that fit in gossip metadata, with valid reserved values, or RegisterError.
    `with_health`: the service has checks, which own the health tags and need room for the
    largest ones (a critical status and a full note) beside these."""
    for k, v in tags.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise RegisterError(f"tags must map str to str, not {k!r}: {v!r}")
    if with_health and (TAG_HEALTH in tags or TAG_HEALTH_NOTE in tags):
        raise RegisterError(
            f"tags {TAG_HEALTH!r} and {TAG_HEALTH_NOTE!r} belong to the checks (a TtlCheck's status is set with set_status)"
        )
    if not tags.get("group"):
        raise RegisterError("group must not be empty")
    client_addr(tags.get("addr", ""))
    for key in ("replicas", "weight"):
        if key in tags and not (tags[key].isdigit() and int(tags[key]) >= 1):
            raise RegisterError(f"tag {key!r} must be a positive integer, not {tags[key]!r}")
    try:
        check_tags({**tags, **_WORST_HEALTH} if with_health else tags)
    except TagsTooLarge as exc:
        room = ", the checks' health tags at their largest" if with_health else ""
        raise RegisterError(
            f"tags are {exc.size} bytes encoded, over the {META_MAX_SIZE}-byte limit of gossip metadata "
            f"(group, addr{room} and every tag count)"
        ) from None
    except ValueError as exc:
        raise RegisterError(str(exc)) from None
    return dict(tags)


def _check_dc_tag(tags: Mapping[str, str], datacenter: str) -> None:
    """A `dc` tag is the datacenter option's: another value in `tags` would contradict it."""
    if TAG_DATACENTER in tags and tags[TAG_DATACENTER] != datacenter:
        raise RegisterError(f"tag {TAG_DATACENTER!r} is set by datacenter= ({datacenter!r}), "
                            f"not {tags[TAG_DATACENTER]!r}: pass datacenter={tags[TAG_DATACENTER]!r} instead")


def _checked_checks(checks: object) -> tuple[list[Check], list[str]]:
    """The checks and the name each is known by, or RegisterError naming the bad one."""
    if checks is None:
        return [], []
    if isinstance(checks, Check) or not isinstance(checks, Sequence) or isinstance(checks, (str, bytes)):
        raise RegisterError(f"checks must be a list of checks (HttpCheck, TcpCheck, ...), not {type(checks).__name__}")
    for c in checks:
        if not isinstance(c, Check):
            raise RegisterError(f"checks: {c!r} is not a check (HttpCheck, TcpCheck, GrpcCheck, CallableCheck, TtlCheck)")
    try:
        return list(checks), name_checks(list(checks))
    except CheckError as exc:
        raise RegisterError(f"checks: {exc}") from None


def _deregister_after(value: object, has_checks: bool) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise RegisterError(f"deregister_critical_after must be a positive number of seconds, not {value!r}")
    if not has_checks:
        raise RegisterError("deregister_critical_after needs checks: without any the service is never critical")
    return float(value)


_MEMBER_METHODS = {
    EventType.MEMBER_JOIN: "on_member_join",
    EventType.MEMBER_UPDATE: "on_member_update",
    EventType.MEMBER_LEAVE: "on_member_leave",
    EventType.MEMBER_FAILED: "on_member_leave",
}


class Options:
    """What both registers validate up front and turn into a Serf config (no I/O here).

    id: unique member name; bind: gossip bind "host:port" (":0" picks a port);
    advertise: gossip address told to the pool ("" = derived from bind);
    registries: comma-separated gossip addresses of registries (or a list);
    group: the service group; addr: the address clients should dial ("host:port");
    checks: health checks (`registry.checks`), whose aggregate status the service publishes in its
    tags (a service without checks publishes none, as a Go service); deregister_critical_after:
    seconds of critical aggregate after which the service leaves the pool by itself;
    datacenter: the service's datacenter, published in its `dc` tag (issue 17; a service joins
    its own datacenter's registries only, never the WAN pool).
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
        profile: Profile = "lan",
        encrypt: str | None = None,
        leave_timeout: float = 5.0,
        checks: Sequence[Check] | None = None,
        deregister_critical_after: float | None = None,
        datacenter: str = DEFAULT_DATACENTER,
    ) -> None:
        if not _text(id, "id", "webservice-1"):
            raise RegisterError("id must not be empty")
        if not _text(group, "group", "webservice"):
            raise RegisterError("group must not be empty")
        self.id = id
        self.group = group
        self.addr = client_addr(addr)
        self._bind = _split(_text(bind, "bind", ":7380") or ":0", "bind", None)
        advertise = _text(advertise, "advertise", "10.0.0.5:7380")
        self._advertise = _split(advertise, "advertise", self._bind[1]) if advertise else None
        self._seeds = _seeds(registries)
        if not self._seeds:
            raise RegisterError("registries: give at least one registry gossip address")
        if tags is not None and not isinstance(tags, Mapping):
            raise RegisterError(f"tags must be a mapping of str to str, not {type(tags).__name__}")
        self._checks, self._check_names = _checked_checks(checks)
        self.deregister_critical_after = _deregister_after(deregister_critical_after, bool(self._checks))
        why = datacenter_problem(datacenter)
        if why is not None:
            raise RegisterError(f"datacenter {why}")
        self.datacenter = datacenter
        merged: dict[str, str] = dict(tags or {})
        _check_dc_tag(merged, datacenter)
        merged.update({"group": group, "addr": self.addr, TAG_DATACENTER: datacenter})
        if replicas is not None:
            merged["replicas"] = str(_count(replicas, "replicas"))
        if weight is not None:
            merged["weight"] = str(_count(weight, "weight"))
        self._tags = _checked_tags(merged, bool(self._checks))
        #: the health tags last published (none without checks: what a Go service sends)
        self._health: dict[str, str] = {}
        if self._checks:
            self._health = health_tags(*self._new_board(0.0).health)
        if isinstance(leave_timeout, bool) or not isinstance(leave_timeout, (int, float)) or not leave_timeout > 0:
            raise RegisterError(f"leave_timeout must be a positive number of seconds, not {leave_timeout!r}")
        if encrypt is not None:
            try:
                decode_key(_text(encrypt, "encrypt", "base64 of 16, 24 or 32 bytes"))
            except ValueError:
                raise RegisterError(
                    "encrypt: the key must be standard base64 of 16, 24 or 32 bytes (as `registry keygen` prints)"
                ) from None
        try:
            Config.profile(_text(profile, "profile", "lan"))
        except ValueError as exc:
            raise RegisterError(str(exc)) from None
        self.handler = handler
        self.profile = profile
        self.encrypt = encrypt
        self.leave_timeout = float(leave_timeout)

    @property
    def tags(self) -> dict[str, str]:
        """What the service publishes: its tags and, with checks, its health."""
        return {**self._tags, **self._health}

    def _new_board(self, now: float) -> Board:
        """The checks' states as they start (each at its initial status)."""
        return Board(self._checks, self._check_names, now)

    def _health_update(self, pub: Published) -> dict[str, str]:
        """Record a new aggregate health; the whole tag set to gossip."""
        self._health = health_tags(*pub)
        return self.tags

    def _ttl_indexes(self, check: str | None, what: str) -> list[int]:
        """The TTL checks `heartbeat`/`set_status` applies to: the one named, or every TTL check."""
        ttl = [i for i, c in enumerate(self._checks) if c.kind.value == "ttl"]
        if not ttl:
            raise RegisterError(f"{what}: this service has no TtlCheck")
        if check is None:
            return ttl
        named = [i for i in ttl if self._check_names[i] == check]
        if not named:
            ttl_names = ", ".join(self._check_names[i] for i in ttl)
            raise RegisterError(f"{what}: no TtlCheck named {check!r} (TTL checks: {ttl_names})")
        return named

    def _serf_config(self) -> SerfConfig:
        overrides: dict[str, Any] = {"name": self.id, "bind_addr": _literal(self._bind[0]), "bind_port": self._bind[1]}
        if self._advertise is not None:
            if self._advertise[0]:
                overrides["advertise_addr"] = _literal(self._advertise[0])
            overrides["advertise_port"] = self._advertise[1]
        cfg = SerfConfig(
            name=self.id, tags=self.tags, memberlist=Config.profile(self.profile).replace(**overrides), encrypt_key=self.encrypt
        )
        if self.profile == "fast":
            cfg = cfg.replace(leave_propagate_delay=0.2)
        return cfg

    def _join_timeout(self, cfg: SerfConfig) -> float:
        return 2 * cfg.memberlist.tcp_timeout + 5.0

    def _merge_tags(self, tags: Mapping[str, str]) -> dict[str, str]:
        """Check and record new extra tags (group/addr/replicas/weight/dc are kept unless given; a dc other
        than the datacenter option is refused);
        nothing changes when they are refused."""
        if not isinstance(tags, Mapping):
            raise RegisterError(f"tags must be a mapping of str to str, not {type(tags).__name__}")
        new = {k: v for k, v in self._tags.items() if k in _RESERVED}
        _check_dc_tag(tags, self.datacenter)
        new.update(tags)
        new = _checked_tags(new, bool(self._checks))
        self._tags = new
        self.addr, self.group = new["addr"], new["group"]
        return self.tags

    def _confirm_peers(self, alive: list[Any]) -> list[Any]:
        """Whom to ask to acknowledge our leave: the registries (they hold us in their rings),
        at most 3; any alive member if no registry is known (it gossips our departure on)."""
        registries = [m for m in alive if m.tags.get("group") == REGISTRY_GROUP]
        return (registries or alive)[:3]

    def _callbacks(self, event: Any) -> list[tuple[str, Callable[[Any], Any], Any]]:
        """(method name, handler method, member) for each member a membership event names."""
        if not isinstance(event, MemberEvent):
            return []
        method = _MEMBER_METHODS.get(event.type)
        fn = getattr(self.handler, method, None) if method else None
        if fn is None or method is None:
            return []
        return [(method, fn, m) for m in event.members]

    def _taken(self, holder: Any) -> RegisterError:
        where = f"[{holder.addr}]:{holder.port}" if ":" in holder.addr else f"{holder.addr}:{holder.port}"
        return RegisterError(f"id {self.id!r} is taken by {where} (alive in the pool); pick another id or stop that one")
