"""Serf "app messages": direct messages between registries that no Go Serf speaks.

Why a channel of its own: the registries replicate TTL services to each other (`registry.ttl`), in
batches of thousands of entries, to a handful of peers. Serf's user events go to every member (the
services too), ride in 1,400-byte gossip packets and are dropped past a 512-tick window; a direct
reliable message to each registry carries a whole batch once. memberlist already has that message:
its reliable *user message* (type 8 on a TCP stream: `Memberlist.send_reliable`, Go's SendReliable),
which reaches the delegate's `notify_msg` like a UDP one and is compressed and encrypted with the
pool's keys like every stream. Inside it, Serf reads the first byte as its own message type; app
messages take `SerfMessageType.APP` (0xF0), far from Go's types (0..~13), so a Go Serf that got one
would log it as unknown and drop it. The registry sends them only to members whose tags say they
speak it (the `repl` tag), so Go nodes never do.

A receiver bounds the message by memberlist's `max_stream_user_msg_size` (1 MiB by default: checked
at the stream's header when it is plain, and after decompression or decryption otherwise).

The handler is called inside memberlist's handling of the message, on the driver's turn, with the
payload (the type byte stripped). An exception from it is a handler bug like any Serf handler's:
counted as memberlist's "drop.handler_error", logged once per kind with its traceback, raised when
strict (`registry/memberlist/handler_errors.py`).
"""

from __future__ import annotations

import collections
from collections.abc import Callable

from registry.memberlist.core import Memberlist
from registry.memberlist.types import Address

from .member import MemberStatus
from .membership import Membership
from .wire import SerfMessageType

__all__ = ["APP_TYPE", "AppChannel", "AppHandler"]

#: The type byte in front of an app message.
APP_TYPE = int(SerfMessageType.APP)
_APP_PREFIX = bytes([APP_TYPE])

#: What receives an app message's payload.
AppHandler = Callable[[bytes], None]


class AppChannel:
    """Sends app messages to members by name and hands received ones to the handler."""

    def __init__(self, memberlist: Memberlist, membership: Membership, stats: collections.Counter[str]) -> None:
        self._memberlist = memberlist
        self._membership = membership
        self._stats = stats
        #: receives each app message's payload; None: they are counted ("serf.drop.app_no_handler") and dropped
        self.handler: AppHandler | None = None

    def send(self, name: str, payload: bytes, now: float) -> bool:
        """Queue `payload` to member `name` over a reliable stream; False (nothing sent) when no
        alive member has that name. True means queued: the stream's outcome is memberlist's
        ("stream.user.ok" / "stream.user.failed"); replication repairs a loss by anti-entropy."""
        state = self._membership.get(name)
        if state is None or state.member.status != MemberStatus.ALIVE:
            self._stats["app.send.no_member"] += 1
            return False
        member = state.member
        self._memberlist.send_reliable(Address(member.addr, member.port), _APP_PREFIX + payload, now)
        self._stats["app.sent"] += 1
        return True

    def receive(self, msg: bytes) -> None:
        """`msg` is an app message (its first byte is `APP_TYPE`), over TCP or UDP."""
        handler = self.handler
        if handler is None:
            self._stats["serf.drop.app_no_handler"] += 1
            return
        self._stats["app.received"] += 1
        handler(bytes(msg[1:]))
