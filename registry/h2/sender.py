"""The sending half of a server connection and the stream table both halves share: what leaves
(HEADERS, DATA as the peer's windows allow, RST_STREAM, PING, GOAWAY), receive-side credit
given back as the application consumes data, and how streams close.

Flow control toward the peer costs what it sends, not what is open: a stream's window is the
peer's SETTINGS_INITIAL_WINDOW_SIZE plus the stream's own credit, so a SETTINGS change is O(1);
queued output waits either for the connection window (`_blocked`, in order) or for its own
window (`_stalled`, a heap by credit), so a window that grows wakes only streams that can send.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict

from registry.h2 import frames as fr
from registry.h2.events import ErrorCode, Event, StreamReset
from registry.h2.frames import DEFAULT_WINDOW, MIN_FRAME, frame
from registry.h2.hpack import encode_integer
from registry.h2.stream_state import ILLEGAL, NEXT, RECEIVING, SENDING, StreamInput, StreamState, StreamStateError
from registry.h2.streams import Closed, ClosedStreams, CreditBound, Stream

__all__ = ["Sender"]

_frame = frame
_CLOSED = int(StreamState.CLOSED)
_SEND_END, _RECV_END = int(StreamInput.SEND_END_STREAM), int(StreamInput.RECV_END_STREAM)
_SEND_RST, _RECV_RST = int(StreamInput.SEND_RST_STREAM), int(StreamInput.RECV_RST_STREAM)


class Sender:
    """State shared by both halves of a connection, and everything that sends."""

    def __init__(self, stream_window: int, connection_window: int) -> None:
        self._stream_window = stream_window
        self._conn_window = connection_window
        self._out: list[bytes] = []
        self._preface_seen = False
        self._streams: dict[int, Stream] = {}
        self._closed = ClosedStreams()
        self._blocked: OrderedDict[int, None] = OrderedDict()  # queued output waiting for the connection window
        self._stalled: list[tuple[int, int]] = []  # heap of (-credit, id): queued output waiting for the stream window
        self._credit_bound = CreditBound()
        self._last_stream = 0  # highest stream id the peer opened
        self.pending_total = 0  # bytes queued on all streams behind the peer's flow-control windows
        self._peer_window = DEFAULT_WINDOW  # peer's SETTINGS_INITIAL_WINDOW_SIZE
        self._peer_max_frame = MIN_FRAME
        self._send_window = DEFAULT_WINDOW  # connection-level, toward the peer
        self._recv_window = connection_window  # connection-level: what the peer may still send us
        self._recv_credit = 0  # connection-level: acknowledged, not yet sent in a WINDOW_UPDATE
        self._recv_held = 0  # delivered in DataReceived events and not yet acknowledged
        # Our encoder never indexes, but a peer that lowers SETTINGS_HEADER_TABLE_SIZE still expects
        # the next header block to say so (RFC 7541 section 4.2): (smallest since then, latest) or None.
        self._table_update: tuple[int, int] | None = None
        self.ended = False
        self.goaway_sent = False
        self.pings_sent = 0
        self.stream_errors = 0  # streams reset for a peer's error on them (malformed requests included)

    def data_to_send(self) -> bytes:
        out = b"".join(self._out)
        self._out.clear()
        return out

    @property
    def preface_received(self) -> bool:
        """The client's connection preface arrived (until then the peer may not speak HTTP/2 at all)."""
        return self._preface_seen

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    @property
    def last_stream_id(self) -> int:
        return self._last_stream

    def is_open(self, stream_id: int) -> bool:
        """True while this side may still send on the stream."""
        s = self._streams.get(stream_id)
        return s is not None and SENDING[s.state]

    def stream_state(self, stream_id: int) -> StreamState:
        """The stream's RFC 9113 section 5.1 state as this side sees it: idle above the last id
        the peer opened, closed once it left the open streams (for tests and diagnostics)."""
        s = self._streams.get(stream_id)
        if s is not None:
            return StreamState(s.state)
        return StreamState.IDLE if stream_id > self._last_stream else StreamState.CLOSED

    def pending_bytes(self, stream_id: int) -> int:
        """Bytes queued on the stream waiting for the peer's flow-control windows."""
        s = self._streams.get(stream_id)
        return s.pending_bytes if s is not None else 0

    def send_headers(self, stream_id: int, block: bytes, end_stream: bool = False) -> None:
        s = self._streams.get(stream_id)
        if s is None or not SENDING[s.state]:
            return
        self._headers_frames(stream_id, block, end_stream)
        if end_stream:
            self._step(stream_id, s, _SEND_END)

    def send_data(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        """Queue `data`; it leaves as the windows allow (see `pending_bytes`)."""
        s = self._streams.get(stream_id)
        if s is None or not SENDING[s.state]:
            return
        if data:
            s.pending.append(data)
            s.pending_bytes += len(data)
            self.pending_total += len(data)
        if end_stream:
            s.trailers = b""  # empty marker: finish with an empty END_STREAM DATA frame
        if not s.stalled:
            self._flush_stream(stream_id, s)

    def send_trailers(self, stream_id: int, block: bytes) -> None:
        """End the stream with a trailing header block, after any queued data."""
        s = self._streams.get(stream_id)
        if s is None or not SENDING[s.state] or s.trailers is not None:
            return
        s.trailers = block
        if not s.stalled:
            self._flush_stream(stream_id, s)

    def respond(self, stream_id: int, head: bytes, body: bytes, trailers: bytes) -> None:
        """Headers, one DATA payload and trailers: the whole unary response in one call."""
        s = self._streams.get(stream_id)
        if s is None or not SENDING[s.state]:
            return
        n = len(body)
        if self._table_update is not None:
            head = self._table_prefix() + head
        if (
            n <= self._send_window
            and n <= self._peer_window + s.credit
            and n <= self._peer_max_frame
            and len(head) <= self._peer_max_frame
            and len(trailers) <= self._peer_max_frame
        ):
            self._send_window -= n
            s.credit -= n
            sid = stream_id.to_bytes(4, "big")
            self._out.append(
                len(head).to_bytes(3, "big") + b"\x01\x04" + sid + head
                + n.to_bytes(3, "big") + b"\x00\x00" + sid + body
                + len(trailers).to_bytes(3, "big") + b"\x01\x05" + sid + trailers
            )
            state = s.state = NEXT[s.state][_SEND_END]  # _step, inline: SENDING made it legal
            if state == _CLOSED:
                del self._streams[stream_id]
                self._closed.add(stream_id, Closed.ENDED)
            return
        self.send_headers(stream_id, head)
        self.send_data(stream_id, body)
        self.send_trailers(stream_id, trailers)

    def reset(self, stream_id: int, error_code: int = ErrorCode.CANCEL) -> None:
        if self._drop(stream_id, Closed.RESET_SENT):
            self._out.append(_frame(fr.RST_STREAM, 0, stream_id, error_code.to_bytes(4, "big")))

    def ping(self, payload: bytes = bytes(8)) -> None:
        """Send a PING; `pings_acked` catches up with `pings_sent` when the peer answers."""
        self.pings_sent += 1
        self._out.append(_frame(fr.PING, 0, 0, payload[:8].ljust(8, b"\0")))

    def goaway(self, error_code: int = ErrorCode.NO_ERROR, debug: bytes = b"") -> None:
        """Tell the peer no stream above the last one it opened will be served."""
        self.goaway_sent = True
        self._out.append(
            _frame(fr.GOAWAY, 0, 0, self._last_stream.to_bytes(4, "big") + error_code.to_bytes(4, "big") + debug)
        )

    def acknowledge_received_data(self, stream_id: int, n: int) -> None:
        """The application consumed (or dropped) `n` bytes of `DataReceived.data` on `stream_id`:
        the peer may send that much again. WINDOW_UPDATEs go out once half a window is owed,
        not per call. The stream part is a no-op once the stream is closed or reset; the
        connection part always counts (else the connection window would leak shut)."""
        held = self._recv_held
        n = min(n, held)  # never credit what was not delivered: the windows stay bounded
        if n <= 0 or self.ended:
            return
        self._recv_held = held - n
        self._credit(stream_id, self._streams.get(stream_id), n)

    def _credit(self, stream_id: int, s: Stream | None, n: int) -> None:
        """Return `n` bytes of credit to the connection and, if open for receiving, the stream."""
        self._recv_credit += n
        if self._recv_credit >= self._conn_window // 2:
            self._out.append(_frame(fr.WINDOW_UPDATE, 0, 0, self._recv_credit.to_bytes(4, "big")))
            self._recv_window += self._recv_credit
            self._recv_credit = 0
        if s is None or not RECEIVING[s.state]:
            return  # the peer sends nothing more on it: no stream WINDOW_UPDATE is due
        s.recv_credit += n
        if s.recv_credit >= self._stream_window // 2:
            self._out.append(_frame(fr.WINDOW_UPDATE, 0, stream_id, s.recv_credit.to_bytes(4, "big")))
            s.recv_taken -= s.recv_credit
            s.recv_credit = 0

    def _table_prefix(self) -> bytes:
        """Dynamic table size update(s) owed to the peer, for the start of the next header block."""
        if self._table_update is None:
            return b""
        smallest, latest = self._table_update
        self._table_update = None
        out = encode_integer(smallest, 5, 0x20)
        return out + encode_integer(latest, 5, 0x20) if latest != smallest else out

    def _headers_frames(self, stream_id: int, block: bytes, end_stream: bool) -> None:
        if self._table_update is not None:
            block = self._table_prefix() + block
        limit = self._peer_max_frame
        first, rest = block[:limit], block[limit:]
        flags = (fr.END_STREAM if end_stream else 0) | (0 if rest else fr.END_HEADERS)
        self._out.append(_frame(fr.HEADERS, flags, stream_id, first))
        while rest:
            chunk, rest = rest[:limit], rest[limit:]
            self._out.append(_frame(fr.CONTINUATION, 0 if rest else fr.END_HEADERS, stream_id, chunk))

    def _flush_stream(self, stream_id: int, s: Stream) -> None:
        """Send what the windows allow; file the stream as blocked (connection window) or
        stalled (its own window) if output remains, so only streams that can send are woken."""
        s.stalled = False
        while s.pending:
            if self._send_window <= 0:
                self._blocked[stream_id] = None
                return
            room = min(self._send_window, self._peer_window + s.credit, self._peer_max_frame)
            if room <= 0:
                self._blocked.pop(stream_id, None)
                self._stall(stream_id, s)
                return
            chunk = s.pending[0]
            if len(chunk) > room:
                s.pending[0] = chunk[room:]
                chunk = chunk[:room]
            else:
                s.pending.popleft()
            n = len(chunk)
            s.pending_bytes -= n
            self.pending_total -= n
            self._send_window -= n
            s.credit -= n
            self._out.append(_frame(fr.DATA, 0, stream_id, chunk))
        self._blocked.pop(stream_id, None)
        if s.trailers is not None:
            if s.trailers:
                self._headers_frames(stream_id, s.trailers, True)
            else:
                self._out.append(_frame(fr.DATA, fr.END_STREAM, stream_id))
            self._step(stream_id, s, _SEND_END)

    def _stall(self, stream_id: int, s: Stream) -> None:
        s.stalled = True
        heapq.heappush(self._stalled, (-s.credit, stream_id))
        if len(self._stalled) > 2 * len(self._streams) + 32:  # drop entries of closed or woken streams
            self._stalled = [(-x.credit, sid) for sid, x in self._streams.items() if x.stalled]
            heapq.heapify(self._stalled)

    def _flush_blocked(self) -> None:
        """After the connection window or the initial window grew: streams that can now send."""
        blocked, streams = self._blocked, self._streams
        while blocked and self._send_window > 0:
            stream_id = next(iter(blocked))
            s = streams.get(stream_id)
            if s is None:
                del blocked[stream_id]
            else:
                self._flush_stream(stream_id, s)  # leaves it filed only if the connection window ran out
        stalled = self._stalled
        while stalled and self._send_window > 0 and self._peer_window - stalled[0][0] > 0:
            neg, stream_id = heapq.heappop(stalled)
            s = streams.get(stream_id)
            if s is not None and s.stalled and s.credit == -neg:
                self._flush_stream(stream_id, s)

    def _step(self, stream_id: int, s: Stream, event: int) -> None:
        """Move an open stream along the table (END_STREAM sent or received); a stream that
        ends closed goes to the closed ones, as ENDED. An illegal step here is a bug of ours:
        the frame handlers judge the peer's inputs before they step."""
        state = NEXT[s.state][event]
        if state < 0:
            raise StreamStateError(StreamState(s.state), StreamInput(event), ILLEGAL[(StreamState(s.state), StreamInput(event))])
        s.state = state
        if state == _CLOSED:
            del self._streams[stream_id]
            self._closed.add(stream_id, Closed.ENDED)

    def _drop(self, stream_id: int, how: Closed) -> bool:
        """Forget an open stream and its queued output; False if it was not open."""
        s = self._streams.pop(stream_id, None)
        if s is None:
            return False
        s.state = NEXT[s.state][_RECV_RST if how is Closed.RESET_RECEIVED else _SEND_RST]  # CLOSED from any open state
        self._blocked.pop(stream_id, None)
        self.pending_total -= s.pending_bytes
        self._closed.add(stream_id, how)
        return True

    def _stream_error(self, stream_id: int, code: int, events: list[Event]) -> None:
        """RFC 9113 section 5.4.2: reset the stream; the application hears of it if it knew it.
        From then on the stream counts as reset by us, so later frames on it are ignored: one
        RST_STREAM per stream, however many frames a peer sends on it."""
        self.stream_errors += 1
        self._out.append(_frame(fr.RST_STREAM, 0, stream_id, code.to_bytes(4, "big")))
        if self._drop(stream_id, Closed.RESET_SENT):
            events.append(StreamReset(stream_id, code))
        else:
            self._closed.add(stream_id, Closed.RESET_SENT)
