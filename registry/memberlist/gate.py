"""Inbound gossip streams as both drivers handle them: accepting in batches, and counting and
logging every admission, shed, timeout and failure around the `Admission` table.

`admission.py` decides (pure bookkeeping); this module is the one place that turns its
decisions into the counters and log lines an operator sees (`tcp.accept`, `tcp.in.shed.*`,
`tcp.in.timeout*`, `tcp.accept.no_fd`, ...), so that the asyncio driver (`inbound.py`) and the
thread driver (`threaded_streams.py`) cannot drift apart in what they report.  Each driver
gives a `close` function that ends one of its streams at once; how it waits for sockets stays
its own.
"""

from __future__ import annotations

import logging
import socket
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from .admission import ACCEPT_BATCH, NO_FD_ERRNOS, Admission, Shed, make_admission
from .config import Config
from .types import Address

if TYPE_CHECKING:
    from .stream import StreamFramer

__all__ = ["Gate", "InboundStream", "accept_some", "inbound_framer", "peer_address"]

log = logging.getLogger(__name__)


class InboundStream(Protocol):
    """What the gate reads of a driver's inbound stream (a key of its `Admission` table)."""

    def __hash__(self) -> int: ...

    @property
    def source(self) -> Address: ...

    @property
    def done(self) -> bool:
        """Its one message arrived (it is past the pre-auth stage)."""
        ...


S = TypeVar("S", bound=InboundStream)


def peer_address(peer: Any) -> Address:
    """The source of an accepted connection (`accept()`'s address); 0.0.0.0:0 if the OS gave
    none we can read, so the stream is still admitted under one shared source."""
    try:
        return Address(str(peer[0]), int(peer[1]))
    except (IndexError, TypeError, ValueError):
        return Address("0.0.0.0", 0)


def inbound_framer(config: Config) -> StreamFramer:
    """The framer an inbound stream is read with: a label may lead, and a message (and a user
    message inside it) is bounded before any of it is buffered."""
    from .stream import StreamFramer  # the codec is only needed once streams flow

    return StreamFramer(
        expect_label=True, max_size=config.max_stream_size, max_user_size=config.max_stream_user_msg_size
    )


def accept_some(
    listener: socket.socket,
    stats: Counter[str],
    admit: Callable[[socket.socket, Any], None],
    out_of_fds: Callable[[], bool],
) -> None:
    """Accept up to `ACCEPT_BATCH` waiting connections (then other work gets a turn), each
    handed to `admit(sock, peer)`.  When the process is out of descriptors while a newcomer
    waits, `out_of_fds()` sheds or pauses accepting and says whether to try again at once;
    never logged per retry, never spinning."""
    accepted = False
    for _ in range(ACCEPT_BATCH):
        try:
            conn, peer = listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            if exc.errno not in NO_FD_ERRNOS:  # e.g. ECONNABORTED: that peer is gone, the listener is fine
                stats["tcp.accept.error"] += 1
                log.debug("accept failed: %s", exc)
                return
            # Linux checks for a free descriptor before looking at the queue, so only a failure
            # before any accept proves a newcomer waits (the listener was readable).
            if accepted or not out_of_fds():
                return
            continue
        accepted = True
        admit(conn, peer)


class Gate(Generic[S]):
    """One node's inbound streams: the `Admission` table, and the counting and logging around
    it.  `close(stream)` must end a stream at once and then call `release(stream)` (directly
    or when the driver forgets it)."""

    def __init__(self, config: Config, stats: Counter[str], close: Callable[[S], None]) -> None:
        self.admission: Admission[S] = make_admission(config)
        self._stats = stats
        self._close = close

    def admit(self, stream: S, now: float) -> bool:
        """Take a slot for a just-accepted stream (shedding others to make room); False when it
        must be closed unserved."""
        admitted, shed = self.admission.admit(stream, stream.source.host, now)
        for victim, why in shed:
            self.shed(victim, why)
        if not admitted:
            self._stats["tcp.in.rejected_busy"] += 1
            return False
        self._stats["tcp.accept"] += 1
        return True

    def charge(self, stream: S, nbytes: int) -> None:
        """`nbytes` arrived for `stream`, to be buffered: charged to the budget, which may shed
        streams (`stream` itself among them: then do not buffer them)."""
        self._stats["tcp.in.bytes"] += nbytes
        for victim, why in self.admission.charge(stream, nbytes):
            self.shed(victim, why)

    def receive(self, stream: S, framer: StreamFramer, data: bytes, now: float) -> bytes | None:
        """`data` arrived on `stream`: charged to the budget, then framed.  Returns the message
        once it is complete (its bytes then leave the budget: it goes to the machine at once);
        None while it is not, or when `stream` was shed for these bytes or sent what the framer
        refuses (then it is closed and counted)."""
        self.charge(stream, len(data))
        if stream not in self.admission:  # shed to stay within the budget
            return None
        try:
            msg = framer.feed(data)
        except ValueError as exc:  # DecodeError: too large, malformed, unknown type
            self.malformed(stream, exc)
            return None
        if msg is not None:
            self.complete(stream, now)
        return msg

    def complete(self, stream: S, now: float) -> None:
        """`stream`'s message arrived: it goes to the machine, its bytes leave the budget."""
        self.admission.complete(stream, now)

    def release(self, stream: S) -> None:
        self.admission.release(stream)

    def shed(self, victim: S, why: Shed) -> None:
        self._stats["tcp.in.shed." + why.value] += 1
        log.debug("inbound stream from %s shed (%s)", victim.source, why.value)
        self._close(victim)

    def out_of_fds(self, now: float) -> bool:
        """No descriptor for a waiting newcomer: shed an idle stream to free one (True), else
        False (the driver pauses accepting for `NO_FD_BACKOFF`)."""
        self._stats["tcp.accept.no_fd"] += 1
        victim = self.admission.shed_for_fd(now)
        if victim is None:
            return False
        self.shed(victim, Shed.NO_FD)
        return True

    def malformed(self, stream: S, exc: ValueError) -> None:
        """The framer refused what `stream` sent (too large, malformed, unknown type)."""
        self._stats["tcp.in.drop." + str(getattr(exc, "reason", "malformed"))] += 1
        log.debug("inbound stream from %s dropped: %s", stream.source, exc)
        self._close(stream)

    def timed_out(self, stream: S) -> None:
        self._stats["tcp.in.timeout"] += 1
        if not stream.done:
            self._stats["tcp.in.timeout.first_message"] += 1
        log.debug("inbound stream from %s timed out", stream.source)
        self._close(stream)

    def failed(self, stream: S, why: object) -> None:
        self._stats["tcp.in.error"] += 1
        log.debug("inbound stream from %s failed: %s", stream.source, why)
        self._close(stream)
