"""Hooks through which the layer above (Serf) rides on memberlist, as small interfaces.

Like memberlist's Go interfaces (delegate.go, event_delegate.go, conflict_delegate.go,
merge_delegate.go, alive_delegate.go, ping_delegate.go): one required `Delegate` and five
optional ones, each a `typing.Protocol`.  `Memberlist(..., events=, conflict=, merge=,
alive=, ping=)` takes each optional one explicitly; left out, the delegate serves for it
if it implements it (`Wiring.hooks`).  The `Delegate` base class implements the events,
conflict, merge and ping hooks as no-ops, so a subclass (Serf, the tests' recorders)
overrides only what it needs and one object can serve them all.  `AliveDelegate` is not on
the base class: merely having it costs a `Node` per alive message, so a delegate opts in by
defining `notify_alive` (or it is passed as `alive=`).

Hooks are called synchronously from inside the sans-I/O core, so they must not block or do
I/O; they read the current time from the core (`Memberlist.now`) when they need it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from .types import Node

__all__ = [
    "AliveDelegate",
    "ConflictDelegate",
    "Delegate",
    "EventDelegate",
    "Hooks",
    "MergeDelegate",
    "PingDelegate",
    "Wiring",
]


class Delegate:
    """The required hooks (Go's Delegate), with no-op defaults, plus no-op events,
    conflict, merge and ping hooks (see the module docstring)."""

    def node_meta(self, limit: int) -> bytes:
        """Metadata for our own alive messages; must not exceed `limit` bytes."""
        return b""

    def notify_msg(self, msg: bytes) -> None:
        """A user message (type 8) arrived, by gossip or directly; `msg` is its payload."""

    def get_broadcasts(self, overhead: int, limit: int) -> list[bytes]:
        """User messages to piggyback: their sizes plus `overhead` each must fit in `limit`."""
        return []

    def local_state(self, join: bool) -> bytes:
        """Application state sent in a push/pull."""
        return b""

    def merge_remote_state(self, buf: bytes, join: bool) -> None:
        """Application state received in a push/pull."""

    # -- EventDelegate
    def notify_join(self, node: Node) -> None:
        """A node became alive (new, or back from dead/left)."""

    def notify_leave(self, node: Node) -> None:
        """A node became dead or left (`node.state` says which)."""

    def notify_update(self, node: Node) -> None:
        """An alive node changed its metadata or address."""

    # -- ConflictDelegate
    def notify_conflict(self, existing: Node, other: Node) -> None:
        """Two nodes claim one name; `other` was refused."""

    # -- MergeDelegate
    def notify_merge(self, peers: list[Node]) -> str | None:
        """A join push/pull is about to merge `peers`; return an error text to refuse it."""
        return None

    # -- PingDelegate
    def ack_payload(self) -> bytes:
        """Payload for our UDP acks (Serf sends its network coordinate here)."""
        return b""

    def notify_ping_complete(self, node: Node, rtt: float, payload: bytes) -> None:
        """A probe of `node` was acked after `rtt` seconds with `payload`."""


@runtime_checkable
class EventDelegate(Protocol):
    """Membership changes (Go's EventDelegate)."""

    def notify_join(self, node: Node) -> None: ...
    def notify_leave(self, node: Node) -> None: ...
    def notify_update(self, node: Node) -> None: ...


@runtime_checkable
class ConflictDelegate(Protocol):
    """Two nodes claim one name (Go's ConflictDelegate)."""

    def notify_conflict(self, existing: Node, other: Node) -> None: ...


@runtime_checkable
class MergeDelegate(Protocol):
    """May refuse a joining push/pull (Go's MergeDelegate)."""

    def notify_merge(self, peers: list[Node]) -> str | None: ...


@runtime_checkable
class AliveDelegate(Protocol):
    """May refuse any alive message before it applies (Go's AliveDelegate)."""

    def notify_alive(self, peer: Node) -> str | None: ...


@runtime_checkable
class PingDelegate(Protocol):
    """Ack payloads and round-trip times (Go's PingDelegate)."""

    def ack_payload(self) -> bytes: ...
    def notify_ping_complete(self, node: Node, rtt: float, payload: bytes) -> None: ...


class _Default:
    """Marker: "the delegate, if it implements this interface" (a keyword left out)."""


DEFAULT = _Default()


@dataclass(slots=True)
class Hooks:
    """Which object answers each interface; None: nobody (the core skips the work).

    Resolved once, when the core is built or its delegate is replaced, so the hot path reads
    an attribute instead of asking the delegate what it implements.  The core's parts share
    one instance, rewired in place (`rewire`) when the delegate changes."""

    delegate: Delegate | None = None
    events: EventDelegate | None = None
    conflict: ConflictDelegate | None = None
    merge: MergeDelegate | None = None
    alive: AliveDelegate | None = None
    ping: PingDelegate | None = None

    def rewire(self, other: Hooks) -> None:
        """Take `other`'s choices, keeping this object (the parts hold it)."""
        self.delegate, self.events, self.conflict = other.delegate, other.events, other.conflict
        self.merge, self.alive, self.ping = other.merge, other.alive, other.ping


@dataclass(frozen=True)
class Wiring:
    """The optional interfaces as given to `Memberlist` (`DEFAULT`: the delegate's, if it has
    it), kept so that a replaced delegate is wired by the same choices."""

    events: EventDelegate | _Default | None = DEFAULT
    conflict: ConflictDelegate | _Default | None = DEFAULT
    merge: MergeDelegate | _Default | None = DEFAULT
    alive: AliveDelegate | _Default | None = DEFAULT
    ping: PingDelegate | _Default | None = DEFAULT

    def hooks(self, delegate: Delegate | None) -> Hooks:
        """Each optional interface: the one given (None: nobody), else `delegate` if it has it."""
        return Hooks(
            delegate,
            _pick(self.events, delegate, EventDelegate),
            _pick(self.conflict, delegate, ConflictDelegate),
            _pick(self.merge, delegate, MergeDelegate),
            _pick(self.alive, delegate, AliveDelegate),
            _pick(self.ping, delegate, PingDelegate),
        )


def _pick(given: object, delegate: Delegate | None, proto: type[Any]) -> Any:
    """`given` unless left out; else `delegate` when it has every method of `proto`."""
    if not isinstance(given, _Default):
        return given
    return delegate if isinstance(delegate, proto) else None
