"""Serf's view of a cluster member: memberlist node + tags + Serf status."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from registry.memberlist.types import DEFAULT_VSN

__all__ = ["Member", "MemberState", "MemberStatus", "SerfState"]


class SerfState(enum.Enum):
    """The local Serf node's own lifecycle (not a member's status)."""

    ALIVE = "alive"
    LEAVING = "leaving"
    LEFT = "left"
    SHUTDOWN = "shutdown"


class MemberStatus(enum.IntEnum):
    """Values are Serf's `MemberStatus` (on the wire in conflict answers)."""

    NONE = 0
    ALIVE = 1
    LEAVING = 2
    LEFT = 3
    FAILED = 4

    def __str__(self) -> str:
        # the words `serf members` prints
        return self.name.lower()


@dataclass
class Member:
    name: str
    addr: str
    port: int
    tags: dict[str, str]
    status: MemberStatus
    vsn: bytes = DEFAULT_VSN

    @property
    def protocol_cur(self) -> int:
        return self.vsn[5] if len(self.vsn) > 5 else 0

    def copy(self) -> Member:
        return Member(
            self.name, self.addr, self.port, dict(self.tags), self.status, self.vsn
        )


@dataclass
class MemberState:
    """A member plus what only the local node tracks: the Lamport time of the last accepted
    intent, and when it left/failed (for reaping), on the core's clock."""

    member: Member
    status_ltime: int = 0
    leave_time: float = 0.0
    #: A join intent newer than its leave arrived while it is still `left` (it is rejoining; memberlist
    #: has not said it is alive yet): push/pull must not call it left as of that join's time.
    rejoining: bool = False
