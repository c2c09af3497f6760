"""Addresses and sockets, in one place: parsing `host:port`, IP literals and their family,
wildcards, the outward IP, and binding the UDP+TCP pair a gossip node listens on.

Every layer used to carry its own copy (both gossip drivers, the server, `register`, the
client, the command line), and the copies drifted: "" became "0.0.0.0" in one and stayed ""
in another.  Here is the one rule: an empty host means every interface, and where an IP
literal is needed that is "0.0.0.0" (IPv4, as Go's memberlist binds by default); give "::"
for every IPv6 interface.  Errors are `UsageError` (a ValueError) with a one-line message;
each caller translates it at its edge into its own type (RegisterError, InvalidAddress,
StartError, the command's exit 2).  No asyncio here: the threaded driver and `Register` use
it without paying for asyncio and ssl.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "WILDCARD_V4",
    "HostPort",
    "UsageError",
    "bind_pair",
    "dial_problem",
    "family_of",
    "format_hostport",
    "ip_literal",
    "is_ip",
    "is_wildcard",
    "listen_tcp",
    "lookup_ips",
    "loopback_if_wildcard",
    "outward_host",
    "parse_hostport",
    "parse_join_address",
    "probe_tcp_port",
    "unique_ips",
]

#: The IP literal of an empty host ("every interface").
WILDCARD_V4 = "0.0.0.0"
#: How many times port 0 is retried when the UDP twin of the OS's TCP pick is taken.
_BIND_ATTEMPTS = 20

_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62})(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62}))*\.?$")


class UsageError(ValueError):
    """Bad command line: exit status 2."""


@dataclass(frozen=True)
class HostPort:
    """A parsed `host:port`; an empty host means every interface."""

    host: str
    port: int

    def __str__(self) -> str:
        return format_hostport(self.host, self.port)


def format_hostport(host: str, port: int) -> str:
    """`host:port`, IPv6 hosts in brackets (what every parser here reads back)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def is_ip(host: str) -> bool:
    """Whether `host` is an IP literal (an IPv6 zone, `%eth0`, allowed)."""
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


def family_of(host: str) -> socket.AddressFamily:
    """AF_INET6 for IPv6 literals, AF_INET otherwise (names are resolved before binding)."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return socket.AF_INET
    return socket.AF_INET6 if ip.version == 6 else socket.AF_INET


def is_wildcard(host: str) -> bool:
    """Whether `host` means every interface: "" or an unspecified IP (0.0.0.0, ::, 0::0, ...)."""
    if not host:
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_unspecified
    except ValueError:
        return False


def dial_problem(hp: HostPort) -> str | None:
    """Why others cannot dial `hp`, or None: port 0 and a wildcard host both mean "here, any"
    (a service or registry advertising one sends its clients to their own machine).  An empty
    host is left to the caller: some fill in a default, some refuse it."""
    if hp.port == 0:
        return "port 0 cannot be dialled"
    if hp.host and is_wildcard(hp.host):
        return f"{hp.host} means every interface and cannot be dialled"
    return None


def loopback_if_wildcard(host: str) -> str:
    """`host` as a place to dial: a wildcard ("", 0.0.0.0, ::) means this machine, dialled on
    the loopback address of its family; anything else is itself."""
    if not is_wildcard(host):
        return host
    return "::1" if family_of(host) == socket.AF_INET6 else "127.0.0.1"


def ip_literal(host: str) -> str:
    """The IP literal to bind or advertise for `host`: "" is "0.0.0.0" (see the module's rule),
    a literal is normalised, a name is resolved (blocking) to its first address.

    The gossip layer takes literal IPs only: it compares and sends them on the wire."""
    if not host:
        return WILDCARD_V4
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_DGRAM)
    except (OSError, UnicodeError) as exc:
        raise UsageError(f"cannot resolve {host!r}: {exc}") from None
    return str(infos[0][4][0])


def unique_ips(infos: Iterable[tuple[Any, ...]]) -> list[str]:
    """The IPv4/IPv6 addresses of `getaddrinfo` results, first occurrence first."""
    out: list[str] = []
    for family, _, _, _, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6) and str(sockaddr[0]) not in out:
            out.append(str(sockaddr[0]))
    return out


def lookup_ips(host: str, port: int) -> list[str]:
    """`host`'s IP addresses: itself if it is an IP literal, else its A/AAAA records in resolver
    order (a blocking lookup; OSError when the name does not resolve)."""
    if is_ip(host):
        return [host]
    return unique_ips(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))


def outward_host(host: str) -> str:
    """`host`, or for a wildcard the address the OS would use to reach the outside (no packet
    is sent; loopback when there is no route): a wildcard cannot be advertised to peers."""
    if host not in (WILDCARD_V4, "::", ""):
        return host
    fam = socket.AF_INET6 if host == "::" else socket.AF_INET
    probe = "2001:db8::1" if fam == socket.AF_INET6 else "192.0.2.1"
    try:
        with socket.socket(fam, socket.SOCK_DGRAM) as s:
            s.connect((probe, 9))
            return str(s.getsockname()[0])
    except OSError:
        return "::1" if fam == socket.AF_INET6 else "127.0.0.1"


def _exact_family(sock: socket.socket) -> None:
    """Bind exactly the family asked for: on an IPv6 socket "::" then means IPv6 only, so an
    IPv4 listener on the same port is a different socket, as Go's are."""
    if sock.family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)


def listen_tcp(
    family: int, sockaddr: tuple[Any, ...], *, backlog: int, kind: int = socket.SOCK_STREAM, proto: int = 0
) -> socket.socket:
    """A non-blocking TCP listener on `sockaddr`, set up as every listener of ours is (gossip,
    both gRPC fronts): SO_REUSEADDR, so connections of a previous run still in TIME_WAIT do not
    keep the port "in use" for a minute (Linux still refuses a port some socket listens on), and
    an IPv6 socket IPv6 only."""
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        _exact_family(sock)
        sock.bind(sockaddr)
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def probe_tcp_port(host: str, port: int) -> int:
    """Whether a TCP listener could take `host:port` now (the port it would get when 0): binds
    a socket set up like a real listener and closes it at once.  OSError when taken.

    SO_REUSEADDR on POSIX as every real listener of ours sets it (on Windows it would mean
    "steal the port"); no IPv6-only and no SO_REUSEPORT, so a port any socket holds is taken."""
    with socket.socket(family_of(host), socket.SOCK_STREAM) as s:
        if os.name == "posix":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host or WILDCARD_V4, port))
        return int(s.getsockname()[1])


def _bind_once(host: str, port: int) -> tuple[socket.socket, socket.socket]:
    fam = family_of(host)
    tcp = listen_tcp(fam, (host, port), backlog=128)
    udp = socket.socket(fam, socket.SOCK_DGRAM)
    try:
        udp.setblocking(False)
        _exact_family(udp)
        udp.bind((host, tcp.getsockname()[1]))
    except BaseException:
        tcp.close()
        udp.close()
        raise
    for size in (4 << 20, 2 << 20, 1 << 20):
        # A larger receive buffer absorbs gossip bursts; fall back quietly if the OS refuses.
        try:
            udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
            break
        except OSError:
            continue
    return tcp, udp


def bind_pair(host: str, port: int) -> tuple[socket.socket, socket.socket]:
    """A listening TCP socket and a UDP socket on the same `host:port`, both non-blocking.

    memberlist peers send UDP and open TCP to the one port a node advertises, so both sockets
    share it.  With port 0 the OS picks the TCP port and UDP takes the same number; if that UDP
    port is taken we try again with a fresh pick.  `host` must be an IP literal (`ip_literal`).
    """
    last: OSError | None = None
    for _ in range(_BIND_ATTEMPTS if port == 0 else 1):
        try:
            return _bind_once(host, port)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            last = exc
    assert last is not None
    raise OSError(last.errno, f"could not bind UDP and TCP on {format_hostport(host, port)}: {last.strerror}")


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


def parse_join_address(text: str, default_port: int) -> HostPort:
    """A gossip join target, as memberlist reads one: "host:port", "[v6]:port", a bare IPv6
    literal, "host" (default port), ":port" (this machine: "0.0.0.0", the rule for ""), and
    "name/..." (memberlist's expected node name: accepted and ignored).  `host` may still be a
    name; the drivers resolve it.  UsageError, flag "join", for anything else."""
    raw = text.strip()
    if "/" in raw:
        raw = raw.split("/", 1)[1]
    if raw.count(":") > 1 and not raw.startswith("[") and is_ip(raw):
        return HostPort(raw, default_port)
    hp = parse_hostport(raw, "join", default_port=default_port)
    return HostPort(hp.host or WILDCARD_V4, hp.port)
