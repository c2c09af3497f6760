"""Per-stream state of a server connection, and the bounded bookkeeping around streams.

Everything here is sized by what this side allows (open streams, a fixed memory of closed
ones), never by what the peer sends: a peer cannot grow it with frames.
"""

from __future__ import annotations

import heapq
from collections import deque
from enum import IntEnum

from registry.h2.events import ErrorCode
from registry.h2.stream_state import Illegal, StreamState

__all__ = ["CLOSED_STREAMS_REMEMBERED", "LATE_FRAME", "Closed", "ClosedStreams", "CreditBound", "Stream"]

# How many closed streams a connection remembers, to answer late frames on them as RFC 9113
# section 5.1 says (ignored after our RST_STREAM, STREAM_CLOSED after theirs or after both
# END_STREAMs) rather than as frames on never-opened streams. About 50 bytes each.
CLOSED_STREAMS_REMEMBERED = 128

_OPEN = int(StreamState.OPEN)  # a plain int: per-frame code indexes tables with it (an IntEnum goes through __index__)


class Closed(IntEnum):
    """How a stream ended, which decides what a late frame on it means."""

    RESET_SENT = 0  # we sent RST_STREAM (or refused it): frames in flight are ignored
    RESET_RECEIVED = 1  # the peer reset it: more frames are a stream error STREAM_CLOSED
    ENDED = 2  # both sides sent END_STREAM: more DATA/HEADERS are a connection error STREAM_CLOSED


#: What DATA or HEADERS on a closed stream is (RFC 9113 section 5.1), by how the stream closed:
#: the closed state's row of registry.h2.stream_state.ILLEGAL, refined. None: ignored.
LATE_FRAME: dict[Closed, Illegal | None] = {
    Closed.RESET_SENT: None,
    Closed.RESET_RECEIVED: Illegal(False, ErrorCode.STREAM_CLOSED),
    Closed.ENDED: Illegal(True, ErrorCode.STREAM_CLOSED),
}


class Stream:
    """One open stream. The send window is the peer's SETTINGS_INITIAL_WINDOW_SIZE plus
    `credit` (its WINDOW_UPDATEs minus what we sent), so a SETTINGS change moves every
    stream's window at once, in O(1); the receive side counts what the peer sent and we
    have not credited back. `state` is its RFC 9113 section 5.1 state, moved only along
    `registry.h2.stream_state.TRANSITIONS` (open, or half-closed either way, while it is here)."""

    __slots__ = (
        "credit",
        "credit_seq",
        "expect_len",
        "pending",
        "pending_bytes",
        "received_len",
        "recv_credit",
        "recv_taken",
        "stalled",
        "state",
        "trailers",
    )

    def __init__(self, expect_len: int) -> None:
        self.credit = 0
        self.credit_seq = 0  # which CreditBound entry is this stream's latest
        self.pending: deque[bytes] = deque()  # DATA payloads the windows did not allow yet
        self.pending_bytes = 0
        self.trailers: bytes | None = None  # header block to send after `pending`, with END_STREAM
        self.stalled = False  # waiting for its own window (filed in the connection's stalled heap)
        self.state = _OPEN  # a StreamState's value (registry.h2.stream_state.NEXT is indexed with it)
        self.recv_taken = 0  # received and not yet credited back with a WINDOW_UPDATE
        self.recv_credit = 0  # acknowledged by the application, not yet sent in a WINDOW_UPDATE
        self.expect_len = expect_len  # the request's content-length, or -1
        self.received_len = 0  # DATA bytes received (padding excluded), checked against expect_len


class ClosedStreams:
    """The last CLOSED_STREAMS_REMEMBERED closed streams and how each ended (O(1) per close)."""

    __slots__ = ("_kind", "_order")

    def __init__(self) -> None:
        self._kind: dict[int, Closed] = {}
        self._order: deque[int] = deque()

    def add(self, stream_id: int, kind: Closed) -> None:
        if stream_id in self._kind:
            self._kind[stream_id] = kind
            return
        self._kind[stream_id] = kind
        self._order.append(stream_id)
        if len(self._order) > CLOSED_STREAMS_REMEMBERED:
            del self._kind[self._order.popleft()]

    def get(self, stream_id: int) -> Closed | None:
        return self._kind.get(stream_id)


class CreditBound:
    """Which stream has the most positive send credit, for RFC 9113 section 6.9.2: raising
    SETTINGS_INITIAL_WINDOW_SIZE must fail the connection if any window would pass 2^31-1.

    Walking every stream per SETTINGS frame cost ~96 us with 4,000 streams (issue 11 item
    4); instead a lazy max-heap holds an entry per WINDOW_UPDATE that left a stream with
    positive credit. Credit only grows through WINDOW_UPDATE, so the heap's top bounds every
    stream's credit from above; it is made exact only when the bound says "overflow", by
    dropping entries of closed or since-updated streams and re-filing streams whose credit
    fell (each re-filing is paid for by the data sent since). The heap is rebuilt when stale
    entries outnumber live streams, so it stays O(open streams)."""

    __slots__ = ("_heap", "_seq")

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, int]] = []  # (-credit, seq, stream id)
        self._seq = 0

    def note(self, stream_id: int, s: Stream, streams: dict[int, Stream]) -> None:
        """`s` just gained credit (now positive)."""
        self._seq += 1
        s.credit_seq = self._seq
        heapq.heappush(self._heap, (-s.credit, self._seq, stream_id))
        if len(self._heap) > 2 * len(streams) + 32:
            self._heap = []
            for sid, x in streams.items():
                if x.credit > 0:
                    self._seq += 1
                    x.credit_seq = self._seq
                    self._heap.append((-x.credit, self._seq, sid))
            heapq.heapify(self._heap)

    def exceeds(self, limit: int, streams: dict[int, Stream]) -> bool:
        """Does any open stream have credit above `limit`?"""
        heap = self._heap
        while heap and -heap[0][0] > limit:
            neg, seq, sid = heap[0]
            s = streams.get(sid)
            if s is None or s.credit_seq != seq:
                heapq.heappop(heap)  # closed, or a newer entry stands for it
            elif s.credit == -neg:
                return True
            elif s.credit > 0:
                self._seq += 1
                s.credit_seq = self._seq
                heapq.heapreplace(heap, (-s.credit, self._seq, sid))
            else:
                heapq.heappop(heap)
        return False
