"""memberlist wire messages as plain frozen values (docs/wire.md §5, §6).

Field names are snake_case; the codec maps them to the Go struct field names
that appear as msgpack map keys on the wire (e.g. ``seq_no`` <-> ``SeqNo``,
``sender`` <-> ``From``).  Text fields are ``str``, binary fields ``bytes``;
``None`` stands for Go's nil slice (written as msgpack nil).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "Ack",
    "Alive",
    "Dead",
    "ErrResp",
    "IndirectPing",
    "Message",
    "MessageType",
    "Nack",
    "Ping",
    "PushNodeState",
    "PushPull",
    "Suspect",
    "UserMsg",
]


class MessageType(enum.IntEnum):
    """First byte of every memberlist message (244 is the label header, not a message)."""

    PING = 0
    INDIRECT_PING = 1
    ACK = 2
    SUSPECT = 3
    ALIVE = 4
    DEAD = 5
    PUSH_PULL = 6
    COMPOUND = 7
    USER = 8
    COMPRESS = 9
    ENCRYPT = 10
    NACK = 11
    HAS_CRC = 12
    ERR = 13
    HAS_LABEL = 244


@dataclass(frozen=True, slots=True)
class Ping:
    """Direct probe; ``node`` names the intended recipient ("" = anyone)."""

    seq_no: int
    node: str
    source_addr: bytes = b""
    source_port: int = 0
    source_node: str = ""


@dataclass(frozen=True, slots=True)
class IndirectPing:
    """Request to probe ``target:port`` on the sender's behalf."""

    seq_no: int
    target: bytes
    port: int
    node: str
    nack: bool = False
    source_addr: bytes = b""
    source_port: int = 0
    source_node: str = ""


@dataclass(frozen=True, slots=True)
class Ack:
    """Answer to a ping; ``payload`` is the ack-payload hook's bytes (Serf: coordinate) or nil."""

    seq_no: int
    payload: bytes | None = None


@dataclass(frozen=True, slots=True)
class Nack:
    """An intermediary heard nothing from the indirect-probe target."""

    seq_no: int


@dataclass(frozen=True, slots=True)
class _Claim:
    """What ``sender`` (wire key ``From``) says of ``node`` at ``incarnation``; suspect and dead
    share the layout (one encoder and decoder serve both) but are distinct messages: a suspect
    never equals a dead with the same fields."""

    incarnation: int
    node: str
    sender: str


@dataclass(frozen=True, slots=True)
class Suspect(_Claim):
    """``sender`` suspects ``node`` at ``incarnation``."""


@dataclass(frozen=True, slots=True)
class Dead(_Claim):
    """``sender`` declares ``node`` dead; ``sender == node`` means it left."""


@dataclass(frozen=True, slots=True)
class Alive:
    """A node announces (or refutes) itself; ``vsn`` is the 6-byte version vector."""

    incarnation: int
    node: str
    addr: bytes
    port: int
    meta: bytes | None
    vsn: bytes


@dataclass(frozen=True, slots=True)
class PushNodeState:
    """One row of a push/pull exchange (wire key ``Name``, not ``Node``)."""

    name: str
    addr: bytes
    port: int
    meta: bytes | None
    incarnation: int
    state: int
    vsn: bytes


@dataclass(frozen=True, slots=True)
class PushPull:
    """Full-state exchange over TCP: header, node rows, opaque application state."""

    join: bool
    nodes: list[PushNodeState]
    user_state: bytes
    #: drop reasons of rows refused at decode (bad UTF-8 name, Vsn, Meta); the rest is usable
    dropped: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class UserMsg:
    """Application payload (Serf messages); UDP and TCP framings differ, the value does not."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class ErrResp:
    """Error reply on a stream the peer could not read."""

    error: str


Message = (
    Ping
    | IndirectPing
    | Ack
    | Nack
    | Suspect
    | Alive
    | Dead
    | PushPull
    | UserMsg
    | ErrResp
)
