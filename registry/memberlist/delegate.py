"""Hooks through which the layer above (Serf) rides on memberlist.

One base class with no-op defaults instead of Go's five interfaces: a
subclass overrides what it needs.  Hooks are called synchronously from inside
the sans-I/O core, so they must not block or do I/O; they read the current
time from the core (`Memberlist.now`) when they need it.
"""

from __future__ import annotations

from .types import Node


class Delegate:
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

    def notify_join(self, node: Node) -> None:
        """A node became alive (new, or back from dead/left)."""

    def notify_leave(self, node: Node) -> None:
        """A node became dead or left (`node.state` says which)."""

    def notify_update(self, node: Node) -> None:
        """An alive node changed its metadata or address."""

    def notify_conflict(self, existing: Node, other: Node) -> None:
        """Two nodes claim one name; `other` was refused."""

    def notify_merge(self, peers: list[Node]) -> str | None:
        """A join push/pull is about to merge `peers`; return an error text to refuse it."""
        return None

    def notify_alive(self, peer: Node) -> str | None:
        """An alive message about `peer` is about to be applied; return an error text to refuse it."""
        return None

    def ack_payload(self) -> bytes:
        """Payload for our UDP acks (Serf sends its network coordinate here)."""
        return b""

    def notify_ping_complete(self, node: Node, rtt: float, payload: bytes) -> None:
        """A probe of `node` was acked after `rtt` seconds with `payload`."""
