"""Address parsing shared by the command line and `register`.

Kept apart from `registry.cli` so a service embedding `Register` does not import argparse,
structlog and the rest of the command-line machinery just to read `host:port`.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass

__all__ = ["UsageError", "HostPort", "parse_hostport"]

_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62})(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62}))*\.?$")


class UsageError(ValueError):
    """Bad command line: exit status 2."""


@dataclass(frozen=True)
class HostPort:
    """A parsed `host:port`; an empty host means every interface."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_hostport(text: str, flag: str, *, default_port: int | None = None, resolve: bool = False) -> HostPort:
    """Parse `host:port`, `:port`, `[v6]:port` (and `host` alone when a default port is given).

    Raises UsageError naming `flag` for anything a socket call would choke on later,
    so the operator sees the mistake at once instead of a traceback from deep inside.
    """
    raw = text.strip()
    if not raw:
        raise UsageError(f"{flag}: empty address")
    host: str
    port_text: str | None
    if raw.startswith("["):
        end = raw.find("]")
        if end < 0:
            raise UsageError(f"{flag}: bad address {text!r}: missing ']'")
        host, rest = raw[1:end], raw[end + 1 :]
        if rest and not rest.startswith(":"):
            raise UsageError(f"{flag}: bad address {text!r}")
        port_text = rest[1:] if rest else None
        try:
            ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError:
            raise UsageError(f"{flag}: bad address {text!r}: {host!r} is not an IPv6 address") from None
    elif raw.count(":") > 1:
        raise UsageError(f"{flag}: bad address {text!r}: write IPv6 addresses as [addr]:port")
    elif ":" in raw:
        host, port_text = raw.split(":", 1)
    else:
        host, port_text = raw, None
    if port_text is None:
        if default_port is None:
            raise UsageError(f"{flag}: bad address {text!r}: missing port (host:port)")
        port = default_port
    else:
        if not port_text.isdigit():
            raise UsageError(f"{flag}: bad address {text!r}: port {port_text!r} is not a number")
        port = int(port_text)
        if not 0 <= port <= 65535:
            raise UsageError(f"{flag}: bad address {text!r}: port {port} out of range 0-65535")
    if host and not raw.startswith("["):
        try:
            ipaddress.ip_address(host)
        except ValueError:
            if not _HOSTNAME.match(host):
                raise UsageError(f"{flag}: bad address {text!r}: {host!r} is not a host name or IP") from None
            if resolve:
                try:
                    socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
                except socket.gaierror as exc:
                    raise UsageError(f"{flag}: cannot resolve {host!r}: {exc.strerror or exc}") from None
                except UnicodeError:
                    raise UsageError(f"{flag}: cannot resolve {host!r}") from None
    return HostPort(host, port)
