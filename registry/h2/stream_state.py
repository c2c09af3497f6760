"""An HTTP/2 stream's state (RFC 9113 section 5.1) as an explicit transition table.

A stream is in one of seven states; what is sent or received on it (`StreamInput`) moves it
along the table `TRANSITIONS`, keyed by (state, input) as python-hyper's h2 keys its own. A pair
that is not in the table is illegal, and `ILLEGAL` says what the RFC makes of it: a stream error
(RST_STREAM, the connection goes on) or a connection error (GOAWAY), with its code.

Why a table rather than the two booleans a stream once had: every rule of section 5.1 is one
line here, read in one place, and the test walks every (state, input) pair against h2's own
machine (tests/h2/test_stream_state.py). The connection (`registry.h2.connection`, `.sender`)
keeps per open stream only its state; closed streams are remembered apart, with how they
closed (`registry.h2.streams.ClosedStreams`), because section 5.1 answers late frames on a
closed stream by that. Per-frame code reads the flat tuples `NEXT`, `SENDING`, `RECEIVING`
(plain ints, no hashing): the same table, indexed. See docs/native-front.md.
"""

from __future__ import annotations

from enum import IntEnum
from typing import NamedTuple

from registry.h2.events import ErrorCode

__all__ = [
    "ILLEGAL",
    "NEXT",
    "RECEIVING",
    "SENDING",
    "TRANSITIONS",
    "Illegal",
    "StreamInput",
    "StreamState",
    "StreamStateError",
    "transition",
]


class StreamState(IntEnum):
    """RFC 9113 section 5.1 (numbered as h2 numbers them)."""

    IDLE = 0
    RESERVED_REMOTE = 1
    RESERVED_LOCAL = 2
    OPEN = 3
    HALF_CLOSED_REMOTE = 4
    HALF_CLOSED_LOCAL = 5
    CLOSED = 6


class StreamInput(IntEnum):
    """What happens on a stream. END_STREAM is an input of its own, after the HEADERS or DATA
    that carried it (as in h2), so that "trailers end the request" is two steps of the table."""

    SEND_HEADERS = 0
    SEND_PUSH_PROMISE = 1
    SEND_RST_STREAM = 2
    SEND_DATA = 3
    SEND_WINDOW_UPDATE = 4
    SEND_END_STREAM = 5
    RECV_HEADERS = 6
    RECV_PUSH_PROMISE = 7
    RECV_RST_STREAM = 8
    RECV_DATA = 9
    RECV_WINDOW_UPDATE = 10
    RECV_END_STREAM = 11


St, In = StreamState, StreamInput  # short names for the table

#: The legal moves. Role rules (a server receives no PUSH_PROMISE, opens no stream) are the
#: connection's, not the stream's: this is the RFC's diagram, for either end.
TRANSITIONS: dict[tuple[StreamState, StreamInput], StreamState] = {
    (St.IDLE, In.SEND_HEADERS): St.OPEN,
    (St.IDLE, In.RECV_HEADERS): St.OPEN,
    (St.IDLE, In.SEND_PUSH_PROMISE): St.RESERVED_LOCAL,  # the promised stream
    (St.IDLE, In.RECV_PUSH_PROMISE): St.RESERVED_REMOTE,
    (St.RESERVED_LOCAL, In.SEND_HEADERS): St.HALF_CLOSED_REMOTE,
    (St.RESERVED_LOCAL, In.SEND_RST_STREAM): St.CLOSED,
    (St.RESERVED_LOCAL, In.RECV_RST_STREAM): St.CLOSED,
    (St.RESERVED_LOCAL, In.SEND_WINDOW_UPDATE): St.RESERVED_LOCAL,
    (St.RESERVED_LOCAL, In.RECV_WINDOW_UPDATE): St.RESERVED_LOCAL,
    (St.RESERVED_REMOTE, In.RECV_HEADERS): St.HALF_CLOSED_LOCAL,
    (St.RESERVED_REMOTE, In.SEND_RST_STREAM): St.CLOSED,
    (St.RESERVED_REMOTE, In.RECV_RST_STREAM): St.CLOSED,
    (St.RESERVED_REMOTE, In.SEND_WINDOW_UPDATE): St.RESERVED_REMOTE,
    (St.RESERVED_REMOTE, In.RECV_WINDOW_UPDATE): St.RESERVED_REMOTE,
    (St.OPEN, In.SEND_HEADERS): St.OPEN,
    (St.OPEN, In.SEND_DATA): St.OPEN,
    (St.OPEN, In.SEND_PUSH_PROMISE): St.OPEN,  # on the associated stream
    (St.OPEN, In.SEND_WINDOW_UPDATE): St.OPEN,
    (St.OPEN, In.SEND_END_STREAM): St.HALF_CLOSED_LOCAL,
    (St.OPEN, In.SEND_RST_STREAM): St.CLOSED,
    (St.OPEN, In.RECV_HEADERS): St.OPEN,
    (St.OPEN, In.RECV_DATA): St.OPEN,
    (St.OPEN, In.RECV_PUSH_PROMISE): St.OPEN,
    (St.OPEN, In.RECV_WINDOW_UPDATE): St.OPEN,
    (St.OPEN, In.RECV_END_STREAM): St.HALF_CLOSED_REMOTE,
    (St.OPEN, In.RECV_RST_STREAM): St.CLOSED,
    # half-closed (remote): we may still send; the peer only WINDOW_UPDATE, PRIORITY, RST_STREAM
    (St.HALF_CLOSED_REMOTE, In.SEND_HEADERS): St.HALF_CLOSED_REMOTE,
    (St.HALF_CLOSED_REMOTE, In.SEND_DATA): St.HALF_CLOSED_REMOTE,
    (St.HALF_CLOSED_REMOTE, In.SEND_PUSH_PROMISE): St.HALF_CLOSED_REMOTE,
    (St.HALF_CLOSED_REMOTE, In.SEND_WINDOW_UPDATE): St.HALF_CLOSED_REMOTE,
    (St.HALF_CLOSED_REMOTE, In.SEND_END_STREAM): St.CLOSED,
    (St.HALF_CLOSED_REMOTE, In.SEND_RST_STREAM): St.CLOSED,
    (St.HALF_CLOSED_REMOTE, In.RECV_WINDOW_UPDATE): St.HALF_CLOSED_REMOTE,
    (St.HALF_CLOSED_REMOTE, In.RECV_RST_STREAM): St.CLOSED,
    # half-closed (local): the peer may still send; we only WINDOW_UPDATE, PRIORITY, RST_STREAM
    (St.HALF_CLOSED_LOCAL, In.SEND_WINDOW_UPDATE): St.HALF_CLOSED_LOCAL,
    (St.HALF_CLOSED_LOCAL, In.SEND_RST_STREAM): St.CLOSED,
    (St.HALF_CLOSED_LOCAL, In.RECV_HEADERS): St.HALF_CLOSED_LOCAL,
    (St.HALF_CLOSED_LOCAL, In.RECV_DATA): St.HALF_CLOSED_LOCAL,
    (St.HALF_CLOSED_LOCAL, In.RECV_PUSH_PROMISE): St.HALF_CLOSED_LOCAL,
    (St.HALF_CLOSED_LOCAL, In.RECV_WINDOW_UPDATE): St.HALF_CLOSED_LOCAL,
    (St.HALF_CLOSED_LOCAL, In.RECV_END_STREAM): St.CLOSED,
    (St.HALF_CLOSED_LOCAL, In.RECV_RST_STREAM): St.CLOSED,
    # closed: frames in flight when it closed (WINDOW_UPDATE, RST_STREAM) are ignored
    (St.CLOSED, In.RECV_WINDOW_UPDATE): St.CLOSED,
    (St.CLOSED, In.RECV_RST_STREAM): St.CLOSED,
    (St.CLOSED, In.RECV_END_STREAM): St.CLOSED,  # only ever after a RECV_DATA/RECV_HEADERS judged first
}


class Illegal(NamedTuple):
    """What an input outside the table is: a connection error (GOAWAY) or a stream error
    (RST_STREAM on that stream only), with its code."""

    connection: bool
    code: ErrorCode


def _illegal(state: StreamState, event: StreamInput) -> Illegal:
    """Section 5.1, state by state (a send outside the table is a bug of ours, named the same)."""
    if event in (In.RECV_PUSH_PROMISE, In.SEND_PUSH_PROMISE):
        # Section 6.6: a PUSH_PROMISE on a stream neither open nor half-closed (local).
        return Illegal(True, ErrorCode.PROTOCOL_ERROR)
    if state == St.IDLE:  # "any frame other than HEADERS or PRIORITY": a connection error
        return Illegal(True, ErrorCode.PROTOCOL_ERROR)
    if state in (St.RESERVED_LOCAL, St.RESERVED_REMOTE):
        return Illegal(True, ErrorCode.PROTOCOL_ERROR)
    if state == St.HALF_CLOSED_REMOTE and event in (In.RECV_HEADERS, In.RECV_DATA):
        return Illegal(False, ErrorCode.STREAM_CLOSED)
    if state == St.CLOSED:
        # The connection refines this by how the stream closed (registry.h2.streams.Closed):
        # ignored after our RST_STREAM, a connection error after both END_STREAMs.
        return Illegal(False, ErrorCode.STREAM_CLOSED)
    return Illegal(True, ErrorCode.PROTOCOL_ERROR)  # e.g. END_STREAM twice, sends after ours ended


#: Every pair outside TRANSITIONS, and what it is.
ILLEGAL: dict[tuple[StreamState, StreamInput], Illegal] = {
    (s, i): _illegal(s, i) for s in StreamState for i in StreamInput if (s, i) not in TRANSITIONS
}

#: TRANSITIONS flattened for per-frame use: NEXT[state][input] is the next state, or -1 when illegal.
NEXT: tuple[tuple[int, ...], ...] = tuple(
    tuple(int(TRANSITIONS.get((s, i), -1)) for i in StreamInput) for s in StreamState
)
#: States in which this side may still send DATA (and a header block): open, half-closed (remote).
SENDING: tuple[bool, ...] = tuple((s, In.SEND_DATA) in TRANSITIONS for s in StreamState)
#: States in which the peer may still send DATA: open, half-closed (local).
RECEIVING: tuple[bool, ...] = tuple((s, In.RECV_DATA) in TRANSITIONS for s in StreamState)


class StreamStateError(Exception):
    """An input the table does not allow in the stream's state."""

    def __init__(self, state: StreamState, event: StreamInput, illegal: Illegal) -> None:
        scope = "connection" if illegal.connection else "stream"
        super().__init__(f"{event.name} in state {state.name}: {scope} error {illegal.code.name}")
        self.state = state
        self.event = event
        self.illegal = illegal


def transition(state: StreamState, event: StreamInput) -> StreamState:
    """The state after `event`, or StreamStateError saying which error the RFC makes of it."""
    nxt = TRANSITIONS.get((state, event))
    if nxt is None:
        raise StreamStateError(state, event, ILLEGAL[(state, event)])
    return nxt
