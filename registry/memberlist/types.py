"""Plain data shared by the sans-I/O core, its drivers and the layers above.

The core never touches a socket: it takes bytes and time in and hands back
`Output` values for a driver (asyncio transport or the in-memory simulator)
to carry out.  Everything here is therefore small, immutable where it can be,
and free of I/O.
"""

from __future__ import annotations

import enum
import errno
import ipaddress
import os
from dataclasses import dataclass, field
from typing import Protocol, Union

from registry.addresses import HostPort

__all__ = [
    "DEFAULT_VSN",
    "META_MAX_SIZE",
    "REFUSED",
    "Address",
    "Machine",
    "Node",
    "NodeState",
    "OpenStream",
    "Output",
    "SendPacket",
    "ip_from_bytes",
    "ip_to_bytes",
    "refusal_text",
]

#: `[pmin, pmax, pcur, dmin, dmax, dcur]` as a stock `serf agent` advertises it.
DEFAULT_VSN = bytes([1, 5, 2, 2, 5, 5])

#: memberlist's MetaMaxSize: larger node metadata is refused (Go panics on send).
META_MAX_SIZE = 512


def ip_to_bytes(host: str) -> bytes:
    """Wire form of an IP: 4 bytes for IPv4 (also for IPv4-mapped IPv6), 16 for IPv6."""
    parts = host.split(".")
    if len(parts) == 4 and all(p.isascii() and p.isdigit() and (p == "0" or p[0] != "0") for p in parts):
        vals = [int(p) for p in parts]  # fast path for plain dotted IPv4 (what ipaddress would accept)
        if max(vals) <= 255:
            return bytes(vals)
    ip = ipaddress.ip_address(host)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.packed


def ip_from_bytes(raw: bytes) -> str:
    """Text form of a wire IP; a 16-byte IPv4-mapped address comes back as dotted IPv4."""
    if len(raw) == 4:
        return "%d.%d.%d.%d" % (raw[0], raw[1], raw[2], raw[3])  # noqa: UP031 - = str(IPv4Address(raw)), much cheaper
    if len(raw) == 16:
        ip6 = ipaddress.IPv6Address(raw)
        return str(ip6.ipv4_mapped) if ip6.ipv4_mapped is not None else str(ip6)
    raise ValueError(f"an IP address has 4 or 16 bytes, not {len(raw)}")


@dataclass(frozen=True, order=True)
class Address(HostPort):
    """A UDP/TCP endpoint the gossip layer dials: a `HostPort` whose `host` is always a literal
    IP (drivers resolve names first).

    Why a class of its own: the core compares addresses (a node's identity on the wire is its
    IP and port), sends their IPs as bytes and sorts them, so it needs them resolved and
    ordered; a `HostPort` is what a person wrote, possibly a name or "" (every interface), and
    is never compared with one.  An `Address` is still a `HostPort`, printed the same way."""


class NodeState(enum.IntEnum):
    """memberlist's node states; the values are the wire values of `pushNodeState.State`."""

    ALIVE = 0
    SUSPECT = 1
    DEAD = 2
    LEFT = 3


class _VsnByte:
    """One byte of a node's `vsn` by position, 0 when the vector is shorter (as Go reads it)."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index

    def __get__(self, node: Node, owner: type | None = None) -> int:
        vsn = node.vsn
        return vsn[self.index] if len(vsn) > self.index else 0


@dataclass
class Node:
    """One row of the membership table, as the layers above see it."""

    name: str
    addr: str
    port: int
    meta: bytes = b""
    vsn: bytes = DEFAULT_VSN
    state: NodeState = NodeState.ALIVE
    incarnation: int = 0
    state_change: float = 0.0

    @property
    def address(self) -> Address:
        return Address(self.addr, self.port)

    pmin = _VsnByte(0)  # protocol versions: lowest, highest, current
    pmax = _VsnByte(1)
    pcur = _VsnByte(2)
    dmin = _VsnByte(3)  # delegate (Serf) versions: lowest, highest, current
    dmax = _VsnByte(4)
    dcur = _VsnByte(5)


@dataclass(frozen=True)
class SendPacket:
    """Send `data` as one UDP datagram to `addr`."""

    addr: Address
    data: bytes


#: A failed stream's error text when the peer's host refused the connection (ECONNREFUSED):
#: both drivers word errors with os.strerror, and pass `refused=` to the machine on this one.
REFUSED = os.strerror(errno.ECONNREFUSED)


@dataclass(frozen=True)
class OpenStream:
    """Dial `addr` over TCP, write `data`, and (if `expect_reply`) read one framed
    stream message back within `timeout` seconds; report it with
    `Machine.stream_result(stream_id, reply_or_None, now, refused=...)`.
    A stream with `expect_reply=False` is still reported (reply b"" on success)."""

    stream_id: int
    addr: Address
    data: bytes
    timeout: float
    expect_reply: bool = True
    kind: str = field(default="push_pull")


Output = Union[SendPacket, OpenStream]  # noqa: UP007 - a run-time alias, as in registry/h2/events.py


class Machine(Protocol):
    """What a driver needs from a sans-I/O gossip core (memberlist alone, or Serf on top)."""

    def receive_packet(self, data: bytes, source: Address, now: float) -> None: ...

    def receive_stream(self, data: bytes, source: Address, now: float) -> bytes | None:
        """A complete inbound stream message (as framed by `StreamFramer`); returns the reply to write, if any."""
        ...

    def stream_result(self, stream_id: int, reply: bytes | None, now: float, refused: bool = False) -> bool:
        """Outcome of an `OpenStream`: the framed reply, or None on connect error/timeout/EOF;
        `refused`: the peer's host answered that nothing listens on the port (ECONNREFUSED).
        Returns True when the reply was accepted (for a join: a valid push/pull that merged)."""
        ...

    def tick(self, now: float) -> None:
        """Run every timer due at or before `now`."""
        ...

    def next_deadline(self) -> float | None:
        """The earliest time `tick` has work to do, or None when no timer is armed."""
        ...

    def drain(self) -> list[Output]:
        """Take (and clear) everything the machine wants sent."""
        ...


def refusal_text(machine: Machine) -> str:
    """A stream's error when the machine refused its reply: the machine's own explanation
    (its optional `refusal` attribute, read right after `stream_result`), else a pointer to
    its stats."""
    why = getattr(machine, "refusal", "")
    return why if isinstance(why, str) and why else "reply refused (see the node's stats/logs)"
