"""What a health check is: its kind, its target and Consul's timing and thresholds (no I/O here).

The fields, defaults and meanings are Consul's (agent/checks/check.go, the check definition
reference), so a Consul user's intuition holds:

- ``interval`` (s, default 10): time from the start of one run to the start of the next.  A run never
  overlaps the previous one of the same check.  Consul raises intervals under 1 s to 1 s; we accept
  down to 10 ms, because tests and failover drills want sub-second checks.
- ``timeout`` (s, default 10, Consul's for HTTP, TCP and gRPC): a run not finished by then counts as
  failed.  Consul's script checks wait 30 s; an in-process callable is expected to be quick, so ours
  waits 10 like the others.
- ``success_before_passing`` (default 0), ``failures_before_critical`` (default 0) and
  ``failures_before_warning`` (default: ``failures_before_critical``): how many results in a row it
  takes to move the status (Consul's StatusHandler; 0 and 1 both mean "at once").  Failures below the
  critical threshold but at or above the warning threshold report warning.
- ``initial_status`` (default ``"critical"``, Consul's ``status`` field): the status before the first
  result.  Critical keeps a service out of every ring until a check has confirmed it healthy, which is
  why Consul starts there; give ``"passing"`` to be routed to before the first run.

`CheckError` (a ValueError) names the bad argument in one line, at construction.
"""

from __future__ import annotations

import enum
import inspect
import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypedDict
from urllib.parse import urlsplit

from registry.healthtags import Health

if TYPE_CHECKING:
    from typing import Unpack  # annotations only (3.11+ at run time)

__all__ = [
    "DEFAULT_INTERVAL",
    "DEFAULT_TIMEOUT",
    "MIN_INTERVAL",
    "CallableCheck",
    "Check",
    "CheckError",
    "CheckKind",
    "GrpcCheck",
    "HttpCheck",
    "TcpCheck",
    "Timing",
    "TtlCheck",
    "status_of",
]

DEFAULT_INTERVAL = 10.0
DEFAULT_TIMEOUT = 10.0
MIN_INTERVAL = 0.01


class CheckError(ValueError):
    """A check declared with a bad argument (the message names it)."""


class CheckKind(enum.Enum):
    HTTP = "http"
    TCP = "tcp"
    GRPC = "grpc"
    CALLABLE = "callable"
    TTL = "ttl"


def status_of(value: object, what: str) -> Health:
    """A `Health` from a `Health` or its word; `CheckError` naming `what` otherwise."""
    if isinstance(value, Health):
        return value
    if isinstance(value, str):
        try:
            return Health.from_word(value)
        except ValueError as exc:
            raise CheckError(f"{what}: {exc}") from None
    raise CheckError(f"{what} must be 'passing', 'warning' or 'critical', not {value!r}")


def _seconds(value: object, what: str, minimum: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < minimum:
        raise CheckError(f"{what} must be a number of seconds >= {minimum:g}, not {value!r}")
    return float(value)


def _threshold(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise CheckError(f"{what} must be an int >= 0, not {value!r}")
    return value


def _hostport(target: object, what: str) -> tuple[str, int]:
    """("host", port) from "host:port" ("[v6]:port" too); a host and a port 1-65535 are required."""
    if not isinstance(target, str):
        raise CheckError(f"{what} must be a 'host:port' string, not {type(target).__name__} {target!r}")
    host, sep, port = target.strip().rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise CheckError(f"{what}: {target!r} is not 'host:port' with a host and a port 1-65535")
    return host, int(port)


class Timing(TypedDict, total=False):
    """The keyword arguments every kind but TTL takes (`Check`'s; meanings and defaults in the module
    docstring), written once and typed for the kinds' ``**timing``."""

    name: str | None
    interval: float
    timeout: float | None
    success_before_passing: int
    failures_before_warning: int | None
    failures_before_critical: int
    initial_status: str | Health


class Check:
    """The fields every kind shares (see the module docstring for their meaning and defaults)."""

    kind: CheckKind

    def __init__(
        self,
        *,
        name: str | None = None,
        interval: float = DEFAULT_INTERVAL,
        timeout: float | None = None,
        success_before_passing: int = 0,
        failures_before_warning: int | None = None,
        failures_before_critical: int = 0,
        initial_status: str | Health = Health.CRITICAL,
    ) -> None:
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise CheckError(f"name must be a non-empty string, not {name!r}")
        #: None until the service names it (its kind, numbered when several share it)
        self.name = name
        self.interval = _seconds(interval, "interval", MIN_INTERVAL)
        self.timeout = DEFAULT_TIMEOUT if timeout is None else _seconds(timeout, "timeout", 0.001)
        self.success_before_passing = _threshold(success_before_passing, "success_before_passing")
        self.failures_before_critical = _threshold(failures_before_critical, "failures_before_critical")
        self.failures_before_warning = (
            self.failures_before_critical
            if failures_before_warning is None
            else _threshold(failures_before_warning, "failures_before_warning")
        )
        if self.failures_before_warning > max(self.failures_before_critical, 1):
            raise CheckError(
                f"failures_before_warning ({self.failures_before_warning}) is above failures_before_critical "
                f"({self.failures_before_critical}): the check would never warn"
            )
        self.initial_status = status_of(initial_status, "initial_status")

    def describe(self) -> str:
        """The target, for logs and display."""
        return ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()!r}, name={self.name!r}, interval={self.interval:g})"


class HttpCheck(Check):
    """GET `url`: 2xx passing, 429 warning, anything else, a timeout or a refused connection critical.
    `tls_skip_verify` as Consul's: the certificate of an https URL is not checked."""

    kind = CheckKind.HTTP

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        tls_skip_verify: bool = False,
        **timing: Unpack[Timing],
    ) -> None:
        super().__init__(**timing)
        if not isinstance(url, str):
            raise CheckError(f"url must be a string such as 'http://127.0.0.1:8080/health', not {url!r}")
        parts = urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise CheckError(f"url: {url!r} is not an http:// or https:// URL with a host")
        try:
            port = parts.port
        except ValueError:
            raise CheckError(f"url: {url!r} has a bad port") from None
        for k, v in (headers or {}).items():
            if not isinstance(k, str) or not isinstance(v, str) or "\n" in k + v or "\r" in k + v:
                raise CheckError(f"headers must map str to str without line breaks, not {k!r}: {v!r}")
        self.url = url.strip()
        self.https = parts.scheme == "https"
        self.host = parts.hostname
        self.port = port or (443 if self.https else 80)
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.headers = dict(headers or {})
        self.tls_skip_verify = bool(tls_skip_verify)

    def describe(self) -> str:
        return self.url


class TcpCheck(Check):
    """Connect to "host:port": connected is passing, anything else critical."""

    kind = CheckKind.TCP

    def __init__(
        self,
        target: str,
        **timing: Unpack[Timing],
    ) -> None:
        super().__init__(**timing)
        self.host, self.port = _hostport(target, "target")

    def describe(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


class GrpcCheck(Check):
    """grpc.health.v1.Health/Check on "host:port" for `service` ("" = the whole server): SERVING is
    passing, any other answer or error critical.  grpc is imported only when such a check runs."""

    kind = CheckKind.GRPC

    def __init__(
        self,
        target: str,
        service: str = "",
        *,
        tls: bool = False,
        **timing: Unpack[Timing],
    ) -> None:
        super().__init__(**timing)
        self.host, self.port = _hostport(target, "target")
        if not isinstance(service, str):
            raise CheckError(f"service must be a string ('' = the whole server), not {service!r}")
        self.service = service
        self.tls = bool(tls)

    def describe(self) -> str:
        where = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
        return f"{where}/{self.service}" if self.service else where


class CallableCheck(Check):
    """Call `fn()` (a function or a coroutine function).  It returns a status: a `Health`, a word
    ("passing", "warning", "critical"), a bool (False is critical), None (passing: a function that
    only raises on trouble) or a (status, note) pair; raising is critical with the exception as note.

    A function cannot be interrupted: one past its timeout counts as failed and is abandoned on its
    thread; each later run counts as failed too, without starting another call, until it returns
    (a check never overlaps itself).  A coroutine past its timeout is cancelled."""

    kind = CheckKind.CALLABLE

    def __init__(
        self,
        fn: Callable[[], Any],
        **timing: Unpack[Timing],
    ) -> None:
        super().__init__(**timing)
        if not callable(fn):
            raise CheckError(f"fn must be callable, not {type(fn).__name__} {fn!r}")
        self.fn = fn
        self.is_coroutine = inspect.iscoroutinefunction(fn)

    def describe(self) -> str:
        return str(getattr(self.fn, "__qualname__", None) or repr(self.fn))


class TtlCheck(Check):
    """The application says it is alive: `heartbeat()` (passing) or `set_status(...)` at least every
    `ttl` seconds; missing that is critical ("TTL expired").  Statuses set this way take effect at once
    (as Consul's TTL checks, no thresholds).  The check that catches a hung application whose gossip
    thread runs on."""

    kind = CheckKind.TTL

    def __init__(
        self,
        ttl: float,
        *,
        name: str | None = None,
        initial_status: str | Health = Health.CRITICAL,
    ) -> None:
        self.ttl = _seconds(ttl, "ttl", MIN_INTERVAL)
        super().__init__(name=name, interval=self.ttl, timeout=None, success_before_passing=0,
                         failures_before_warning=None, failures_before_critical=0, initial_status=initial_status)

    def describe(self) -> str:
        return f"ttl {self.ttl:g}s"


def name_checks(checks: list[Check]) -> list[str]:
    """The name each check is known by: its own, else its kind word, numbered (":2", ...) when
    several share one; a name given twice is a `CheckError` (heartbeat(check=) and the notes
    could not tell them apart)."""
    given = [c.name for c in checks if c.name is not None]
    dup = {n for n in given if given.count(n) > 1}
    if dup:
        raise CheckError(f"check names must be unique: {sorted(dup)} given more than once")
    taken = set(given)
    names: list[str] = []
    counts: dict[str, int] = {}
    for c in checks:
        if c.name is not None:
            names.append(c.name)
            continue
        base = c.kind.value
        while True:
            counts[base] = counts.get(base, 0) + 1
            candidate = base if counts[base] == 1 else f"{base}:{counts[base]}"
            if candidate not in taken:
                break
        taken.add(candidate)
        names.append(candidate)
    return names
