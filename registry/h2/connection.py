"""The server side of one HTTP/2 connection (RFC 9113) as a state machine: bytes in, events
and bytes out, no sockets, no clock.

Only what a gRPC server needs is here: client-initiated streams, no server push, no
priorities (PRIORITY is checked and otherwise ignored, as RFC 9113 allows). Flow control is
whole: received data is credited back (WINDOW_UPDATE) only when the application says it
consumed it (`acknowledge_received_data`), so a peer can never make us hold more than the
windows we advertised; sent data waits in a per-stream queue until the peer's windows allow
it. Requests are checked to be well-formed (`registry.h2.request`) before the application
sees them. A peer's protocol error ends the connection with GOAWAY and a `ConnectionEnded`
event, a stream error resets that stream only; neither ever raises out of `receive`.

Costs are bounded by what this side allows, whatever the peer sends: a SETTINGS frame costs
O(1) however many streams are open (windows are the peer's initial window plus a per-stream
credit), a WINDOW_UPDATE wakes only streams that can send, and a header block may span at
most MAX_CONTINUATIONS frames.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict

from registry.h2.events import (
    ConnectionEnded,
    DataReceived,
    ErrorCode,
    Event,
    GoAwayReceived,
    RequestReceived,
    StreamReset,
)
from registry.h2.frames import (
    DEFAULT_WINDOW,
    MAX_FRAME,
    MAX_WINDOW,
    MIN_FRAME,
    PREFACE,
    frame,
)
from registry.h2.hpack import Decoder, HPACKError, encode_integer
from registry.h2.request import check_request, check_trailers
from registry.h2.streams import Closed, ClosedStreams, CreditBound, Stream

__all__ = [
    "MAX_CONTINUATIONS",
    "PREFACE",
    "ConnectionEnded",
    "DataReceived",
    "ErrorCode",
    "Event",
    "GoAwayReceived",
    "RequestReceived",
    "ServerConnection",
    "StreamReset",
]

# CONTINUATION frames one header block may take (nghttp2 allows 8): empty ones cost CPU and
# nothing else, so without a count a peer could send them for ever (issue 11 item 8).
MAX_CONTINUATIONS = 32

_DATA, _HEADERS, _PRIORITY, _RST_STREAM, _SETTINGS, _PUSH_PROMISE, _PING, _GOAWAY, _WINDOW_UPDATE, _CONTINUATION = (
    range(10)
)
_END_STREAM, _ACK, _END_HEADERS, _PADDED, _PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20
_SELF_DEPENDENT = 0x100  # not on the wire: the HEADERS frame's priority named its own stream
_frame = frame


class _ProtocolError(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


class ServerConnection:
    """One connection, server side. Call `receive` with what the socket read and write out
    `data_to_send()` after every call that may produce output (all public methods may)."""

    def __init__(
        self,
        *,
        max_concurrent_streams: int = 4096,
        stream_window: int = 1 << 20,
        connection_window: int = 16 << 20,
        max_header_list_size: int = 65_536,
    ) -> None:
        self.max_concurrent_streams = max_concurrent_streams
        self._stream_window = stream_window
        # Until the peer ACKs our SETTINGS it may use the default window (RFC 9113 section 6.5.3).
        self._local_initial = max(stream_window, DEFAULT_WINDOW)
        self._conn_window = connection_window
        self._decoder = Decoder(max_header_list_size=max_header_list_size)
        self._buf = bytearray()
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
        self._settings_acked = False
        self._continuation: tuple[int, int, bytearray, int] | None = None  # (stream, flags, block, frames)
        # Our encoder never indexes, but a peer that lowers SETTINGS_HEADER_TABLE_SIZE still expects
        # the next header block to say so (RFC 7541 section 4.2): (smallest since then, latest) or None.
        self._table_update: tuple[int, int] | None = None
        self._table_size = 4096
        self.ended = False
        self.goaway_sent = False
        self.frames_received = 0
        self.pings_sent = 0
        self.pings_acked = 0
        self.protocol_errors = 0
        self.stream_errors = 0  # streams reset for a peer's error on them (malformed requests included)
        self._out.append(
            _frame(
                _SETTINGS,
                0,
                0,
                (3).to_bytes(2, "big") + max_concurrent_streams.to_bytes(4, "big")
                + (4).to_bytes(2, "big") + stream_window.to_bytes(4, "big")
                + (6).to_bytes(2, "big") + max_header_list_size.to_bytes(4, "big"),
            )
        )
        if connection_window > DEFAULT_WINDOW:
            self._out.append(_frame(_WINDOW_UPDATE, 0, 0, (connection_window - DEFAULT_WINDOW).to_bytes(4, "big")))

    # -- output --------------------------------------------------------------------------

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
        return s is not None and s.local_open

    def pending_bytes(self, stream_id: int) -> int:
        """Bytes queued on the stream waiting for the peer's flow-control windows."""
        s = self._streams.get(stream_id)
        return s.pending_bytes if s is not None else 0

    def send_headers(self, stream_id: int, block: bytes, end_stream: bool = False) -> None:
        s = self._streams.get(stream_id)
        if s is None or not s.local_open:
            return
        self._headers_frames(stream_id, block, end_stream)
        if end_stream:
            self._local_close(stream_id, s)

    def send_data(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        """Queue `data`; it leaves as the windows allow (see `pending_bytes`)."""
        s = self._streams.get(stream_id)
        if s is None or not s.local_open:
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
        if s is None or not s.local_open or s.trailers is not None:
            return
        s.trailers = block
        if not s.stalled:
            self._flush_stream(stream_id, s)

    def respond(self, stream_id: int, head: bytes, body: bytes, trailers: bytes) -> None:
        """Headers, one DATA payload and trailers: the whole unary response in one call."""
        s = self._streams.get(stream_id)
        if s is None or not s.local_open:
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
            self._local_close(stream_id, s)
            return
        self.send_headers(stream_id, head)
        self.send_data(stream_id, body)
        self.send_trailers(stream_id, trailers)

    def reset(self, stream_id: int, error_code: int = ErrorCode.CANCEL) -> None:
        if self._drop(stream_id, Closed.RESET_SENT):
            self._out.append(_frame(_RST_STREAM, 0, stream_id, error_code.to_bytes(4, "big")))

    def ping(self, payload: bytes = bytes(8)) -> None:
        """Send a PING; `pings_acked` catches up with `pings_sent` when the peer answers."""
        self.pings_sent += 1
        self._out.append(_frame(_PING, 0, 0, payload[:8].ljust(8, b"\0")))

    def goaway(self, error_code: int = ErrorCode.NO_ERROR, debug: bytes = b"") -> None:
        """Tell the peer no stream above the last one it opened will be served."""
        self.goaway_sent = True
        self._out.append(
            _frame(_GOAWAY, 0, 0, self._last_stream.to_bytes(4, "big") + error_code.to_bytes(4, "big") + debug)
        )

    def acknowledge_received_data(self, stream_id: int, n: int) -> None:
        """The application consumed (or dropped) `n` bytes of `DataReceived.data` on `stream_id`:
        the peer may send that much again. WINDOW_UPDATEs go out once half a window is owed,
        not per call. The stream part is a no-op once the stream is closed or reset; the
        connection part always counts (else the connection window would leak shut)."""
        n = min(n, self._recv_held)  # never credit what was not delivered: the windows stay bounded
        if n <= 0 or self.ended:
            return
        self._recv_held -= n
        self._credit(stream_id, self._streams.get(stream_id), n)

    def _credit(self, stream_id: int, s: Stream | None, n: int) -> None:
        """Return `n` bytes of credit to the connection and, if open for receiving, the stream."""
        self._recv_credit += n
        if self._recv_credit >= self._conn_window // 2:
            self._out.append(_frame(_WINDOW_UPDATE, 0, 0, self._recv_credit.to_bytes(4, "big")))
            self._recv_window += self._recv_credit
            self._recv_credit = 0
        if s is None or not s.remote_open:
            return  # the peer sends nothing more on it: no stream WINDOW_UPDATE is due
        s.recv_credit += n
        if s.recv_credit >= self._stream_window // 2:
            self._out.append(_frame(_WINDOW_UPDATE, 0, stream_id, s.recv_credit.to_bytes(4, "big")))
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
        flags = (_END_STREAM if end_stream else 0) | (0 if rest else _END_HEADERS)
        self._out.append(_frame(_HEADERS, flags, stream_id, first))
        while rest:
            chunk, rest = rest[:limit], rest[limit:]
            self._out.append(_frame(_CONTINUATION, 0 if rest else _END_HEADERS, stream_id, chunk))

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
            self._out.append(_frame(_DATA, 0, stream_id, chunk))
        self._blocked.pop(stream_id, None)
        if s.trailers is not None:
            if s.trailers:
                self._headers_frames(stream_id, s.trailers, True)
            else:
                self._out.append(_frame(_DATA, _END_STREAM, stream_id))
            self._local_close(stream_id, s)

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

    def _local_close(self, stream_id: int, s: Stream) -> None:
        s.local_open = False
        if not s.remote_open:
            del self._streams[stream_id]
            self._closed.add(stream_id, Closed.ENDED)

    def _remote_close(self, stream_id: int, s: Stream) -> None:
        s.remote_open = False
        if not s.local_open:
            del self._streams[stream_id]
            self._closed.add(stream_id, Closed.ENDED)

    def _drop(self, stream_id: int, how: Closed) -> bool:
        """Forget an open stream and its queued output; False if it was not open."""
        s = self._streams.pop(stream_id, None)
        if s is None:
            return False
        self._blocked.pop(stream_id, None)
        self.pending_total -= s.pending_bytes
        self._closed.add(stream_id, how)
        return True

    def _stream_error(self, stream_id: int, code: int, events: list[Event]) -> None:
        """RFC 9113 section 5.4.2: reset the stream; the application hears of it if it knew it."""
        self.stream_errors += 1
        self._out.append(_frame(_RST_STREAM, 0, stream_id, code.to_bytes(4, "big")))
        if self._drop(stream_id, Closed.RESET_SENT):
            events.append(StreamReset(stream_id, code))
        elif stream_id > self._last_stream or self._closed.get(stream_id) is None:
            self._closed.add(stream_id, Closed.RESET_SENT)

    # -- input ---------------------------------------------------------------------------

    def receive(self, data: bytes) -> list[Event]:
        """Feed bytes read from the socket; returns what they meant, in order."""
        events: list[Event] = []
        if self.ended:
            return events
        buf = self._buf
        buf += data
        try:
            if not self._preface_seen:
                if len(buf) < len(PREFACE):
                    if not PREFACE.startswith(bytes(buf)):
                        raise _ProtocolError(ErrorCode.PROTOCOL_ERROR, "not an HTTP/2 connection preface")
                    return events
                if buf[: len(PREFACE)] != PREFACE:
                    raise _ProtocolError(ErrorCode.PROTOCOL_ERROR, "not an HTTP/2 connection preface")
                del buf[: len(PREFACE)]
                self._preface_seen = True
            pos, end = 0, len(buf)
            view = memoryview(buf)
            try:
                while end - pos >= 9:
                    length = int.from_bytes(view[pos : pos + 3], "big")
                    if length > MIN_FRAME:  # we never advertise a larger SETTINGS_MAX_FRAME_SIZE
                        raise _ProtocolError(ErrorCode.FRAME_SIZE_ERROR, f"frame of {length} bytes")
                    if end - pos < 9 + length:
                        break
                    ftype, flags = view[pos + 3], view[pos + 4]
                    stream_id = int.from_bytes(view[pos + 5 : pos + 9], "big") & 0x7FFFFFFF
                    payload = bytes(view[pos + 9 : pos + 9 + length])
                    pos += 9 + length
                    self.frames_received += 1
                    self._frame_received(ftype, flags, stream_id, payload, events)
            finally:
                view.release()
                del buf[:pos]
        except _ProtocolError as exc:
            self.protocol_errors += 1
            self.ended = True
            if self._preface_seen:
                self.goaway(exc.code, str(exc).encode()[:256])
            buf.clear()
            events.append(ConnectionEnded(exc.code, str(exc)))
        return events

    def _frame_received(self, ftype: int, flags: int, stream_id: int, payload: bytes, events: list[Event]) -> None:
        if self._continuation is not None and ftype != _CONTINUATION:
            raise _ProtocolError(ErrorCode.PROTOCOL_ERROR, "header block interrupted by another frame")
        if ftype == _HEADERS:
            self._on_headers(flags, stream_id, payload, events)
        elif ftype == _DATA:
            self._on_data(flags, stream_id, payload, events)
        elif ftype == _WINDOW_UPDATE:
            self._on_window_update(stream_id, payload, events)
        elif ftype == _SETTINGS:
            self._on_settings(flags, stream_id, payload)
        elif ftype == _PING:
            if stream_id != 0:
                raise _ProtocolError(ErrorCode.PROTOCOL_ERROR, "PING on a stream")
            if len(payload) != 8:
                raise _ProtocolError(ErrorCode.FRAME_SIZE_ERROR, "PING payload is not 8 bytes")
            if flags & _ACK:
                self.pings_acked += 1
            else:
                self._out.append(_frame(_PING, _ACK, 0, payload))
        elif ftype == _RST_STREAM:
            self._on_rst_stream(stream_id, payload, events)
        elif ftype == _CONTINUATION:
            self._on_continuation(flags, stream_id, payload, events)
        elif ftype == _PRIORITY:
            if stream_id == 0:
                raise _ProtocolError(ErrorCode.PROTOCOL_ERROR, "PRIORITY on stream 0")
            if len(payload) != 5:
                raise _ProtocolError(ErrorCode.FRAME_SIZE_ERROR, "PRIORITY payload is not 5 bytes")
            if int.from_bytes(payload[:4], "big") & 0x7FFFFFFF == stream_id:  # section 5.3.1
                if stream_id not in self._streams:  # no stream to reset (an idle one may not be)
                    raise _ProtocolError(ErrorCode.PROTOCOL_ERROR, f"stream {stream_id} depends on itself")
                self._stream_error(stream_id, ErrorCode.PROTOCOL_ERROR, events)
        elif ftype == _GOAWAY:
            if stream_id != 0 or len(payload) < 8:
                raise _ProtocolError(ErrorCode.PROTOCOL_ERROR, "malformed GOAWAY")
            last = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
            events.append(GoAwayReceived(last, int.from_bytes(payload[4:8], "big")))
        elif ftype == _PUSH_PROMISE:
            raise _ProtocolError(ErrorCode.PROTOCOL_ERROR, "PUSH_PROMISE from a client")
        # Unknown frame types are ignored (RFC 9113 section 4.1).

    @staticmethod
    def _unpad(flags: int, payload: bytes, what: str) -> bytes:
        if not flags & _PADDED:
            return payload
        if not payload or payload[0] >= len(payload):
            raise _ProtocolError(ErrorCode.PROTOCOL_ERROR, f"{what} padding longer than the frame")
        return payload[1 : len(payload) - payload[0]]

    def _on_headers(self, flags: int, stream_id: int, payload: bytes, events: list[Event]) -> None:
        if stream_id == 0:
            raise _ProtocolError(ErrorCode.PROTOCOL_ERROR, "HEADERS on stream 0")
        block = self._unpad(flags, payload, "HEADERS")
        if flags & _PRIORITY_FLAG:
            if len(block) < 5:
                raise _ProtocolError(ErrorCode.FRAME_SIZE_ERROR, "HEADERS too short for its priority")
            if int.from_bytes(block[:4], "big") & 0x7FFFFFFF == stream_id:
                flags |= _SELF_DEPENDENT
            block = block[5:]
        if flags & _END_HEADERS:
            self._header_block(stream_id, flags, block, events)
        else:
            self._continuation = (stream_id, flags, bytearray(block), 0)

    def _on_continuation(self, flags: int, stream_id: int, payload: bytes, events: list[Event]) -> None:
        pending = self._continuation
        if pending is None or pending[0] != stream_id:
            raise _ProtocolError(ErrorCode.PROTOCOL_ERROR, "CONTINUATION without a header block to continue")
        _, first_flags, block, count = pending
        if count >= MAX_CONTINUATIONS:
            raise _ProtocolError(ErrorCode.ENHANCE_YOUR_CALM, f"header block over {MAX_CONTINUATIONS} CONTINUATION frames")
        block.extend(payload)
        if len(block) > 4 * self._decoder.max_header_list_size:
            raise _ProtocolError(ErrorCode.ENHANCE_YOUR_CALM, "header block too large")
        if flags & _END_HEADERS:
            self._continuation = None
            self._header_block(stream_id, first_flags, bytes(block), events)
        else:
            self._continuation = (stream_id, first_flags, block, count + 1)

    def _header_block(self, stream_id: int, flags: int, block: bytes, events: list[Event]) -> None:
        try:
            headers = self._decoder.decode(block)  # always: the decoder's table must stay in step
        except HPACKError as exc:
            raise _ProtocolError(ErrorCode.COMPRESSION_ERROR, f"header block: {exc}") from None
        end_stream = bool(flags & _END_STREAM)
        s = self._streams.get(stream_id)
        if s is not None:  # trailers of a request
            if not s.remote_open:
                self._stream_error(stream_id, ErrorCode.STREAM_CLOSED, events)  # half-closed (remote)
                return
            malformed = check_trailers(headers) if end_stream else "trailers without END_STREAM"
            if malformed is None and (flags & _SELF_DEPENDENT or s.expect_len not in (-1, s.received_len)):
                malformed = "bad priority or content-length"
            if malformed is not None:
                self._stream_error(stream_id, ErrorCode.PROTOCOL_ERROR, events)
                return
            self._remote_close(stream_id, s)
            events.append(DataReceived(stream_id, b"", True, 0))
            return
        if stream_id % 2 == 0:
            raise _ProtocolError(ErrorCode.PROTOCOL_ERROR, f"HEADERS on server-side stream id {stream_id}")
        if stream_id <= self._last_stream:
            self._late_frame(stream_id, "HEADERS", events)
            return
        self._last_stream = stream_id
        if self.goaway_sent:  # streams above the GOAWAY's last id are not served (RFC 9113 section 6.8)
            self._closed.add(stream_id, Closed.RESET_SENT)
            return
        malformed, length = check_request(headers)
        if malformed is None and (flags & _SELF_DEPENDENT or (end_stream and length > 0)):
            malformed = "bad priority or content-length"
        if malformed is not None:  # section 8.1.1: a stream error, unseen by the application
            self._stream_error(stream_id, ErrorCode.PROTOCOL_ERROR, events)
            return
        if len(self._streams) >= self.max_concurrent_streams:
            self._out.append(_frame(_RST_STREAM, 0, stream_id, ErrorCode.REFUSED_STREAM.to_bytes(4, "big")))
            self._closed.add(stream_id, Closed.RESET_SENT)
            events.append(StreamReset(stream_id, ErrorCode.REFUSED_STREAM))
            return
        s = self._streams[stream_id] = Stream(length)
        if end_stream:
            s.remote_open = False
        events.append(RequestReceived(stream_id, headers, end_stream))

    def _late_frame(self, stream_id: int, what: str, events: list[Event]) -> None:
        """DATA or HEADERS on a stream id the peer used before that is no longer open (RFC 9113 5.1)."""
        how = self._closed.get(stream_id)
        if how is Closed.RESET_SENT:
            return  # in flight when we reset it: ignored
        if how is Closed.RESET_RECEIVED:
            self._stream_error(stream_id, ErrorCode.STREAM_CLOSED, events)
            return
        if how is Closed.ENDED:
            raise _ProtocolError(ErrorCode.STREAM_CLOSED, f"{what} on closed stream {stream_id}")
        if what == "HEADERS":  # never opened (or long forgotten): stream ids must increase
            raise _ProtocolError(ErrorCode.PROTOCOL_ERROR, f"HEADERS opening stream {stream_id} out of order")

    def _on_data(self, flags: int, stream_id: int, payload: bytes, events: list[Event]) -> None:
        if stream_id == 0:
            raise _ProtocolError(ErrorCode.PROTOCOL_ERROR, "DATA on stream 0")
        size = len(payload)
        self._recv_window -= size
        if self._recv_window < 0:
            raise _ProtocolError(ErrorCode.FLOW_CONTROL_ERROR, "peer overran the connection window")
        data = self._unpad(flags, payload, "DATA")
        s = self._streams.get(stream_id)
        if s is None or not s.remote_open:
            if stream_id > self._last_stream:
                raise _ProtocolError(ErrorCode.PROTOCOL_ERROR, f"DATA on idle stream {stream_id}")
            # No application will see these bytes: their connection-level credit goes back now.
            self._credit(0, None, size)
            if s is not None:
                self._stream_error(stream_id, ErrorCode.STREAM_CLOSED, events)  # half-closed (remote)
            else:
                self._late_frame(stream_id, "DATA", events)
            return
        s.recv_taken += size
        if s.recv_taken > self._local_initial:
            raise _ProtocolError(ErrorCode.FLOW_CONTROL_ERROR, f"peer overran stream {stream_id}'s window")
        end_stream = bool(flags & _END_STREAM)
        s.received_len += len(data)
        if s.expect_len >= 0 and (s.received_len > s.expect_len or (end_stream and s.received_len < s.expect_len)):
            self._credit(0, None, size)
            self._stream_error(stream_id, ErrorCode.PROTOCOL_ERROR, events)  # section 8.1.1: content-length
            return
        if end_stream:
            self._remote_close(stream_id, s)
        self._recv_held += len(data)
        if size > len(data):
            self._credit(stream_id, s, size - len(data))  # padding: nothing for the application to consume
        events.append(DataReceived(stream_id, data, end_stream, size))

    def _on_rst_stream(self, stream_id: int, payload: bytes, events: list[Event]) -> None:
        if stream_id == 0 or stream_id > self._last_stream:
            raise _ProtocolError(ErrorCode.PROTOCOL_ERROR, f"RST_STREAM on idle stream {stream_id}")
        if len(payload) != 4:
            raise _ProtocolError(ErrorCode.FRAME_SIZE_ERROR, "RST_STREAM payload is not 4 bytes")
        if self._drop(stream_id, Closed.RESET_RECEIVED):
            events.append(StreamReset(stream_id, int.from_bytes(payload, "big")))

    def _on_window_update(self, stream_id: int, payload: bytes, events: list[Event]) -> None:
        if len(payload) != 4:
            raise _ProtocolError(ErrorCode.FRAME_SIZE_ERROR, "WINDOW_UPDATE payload is not 4 bytes")
        increment = int.from_bytes(payload, "big") & 0x7FFFFFFF
        if stream_id == 0:
            if increment == 0:
                raise _ProtocolError(ErrorCode.PROTOCOL_ERROR, "WINDOW_UPDATE of 0 on the connection")
            self._send_window += increment
            if self._send_window > MAX_WINDOW:
                raise _ProtocolError(ErrorCode.FLOW_CONTROL_ERROR, "connection window above 2^31-1")
            self._flush_blocked()
            return
        if stream_id > self._last_stream:
            raise _ProtocolError(ErrorCode.PROTOCOL_ERROR, f"WINDOW_UPDATE on idle stream {stream_id}")
        s = self._streams.get(stream_id)
        if s is None:
            return  # closed: WINDOW_UPDATEs may still be in flight (section 5.1)
        s.credit += increment
        if increment == 0 or self._peer_window + s.credit > MAX_WINDOW:
            self._stream_error(stream_id, ErrorCode.PROTOCOL_ERROR if increment == 0 else ErrorCode.FLOW_CONTROL_ERROR, events)
            return
        if s.credit > 0:
            self._credit_bound.note(stream_id, s, self._streams)
        if s.pending or s.trailers is not None:
            self._flush_stream(stream_id, s)

    def _on_settings(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id != 0:
            raise _ProtocolError(ErrorCode.PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & _ACK:
            if payload:
                raise _ProtocolError(ErrorCode.FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
            if not self._settings_acked:  # our only SETTINGS: our stream window holds from now on
                self._settings_acked = True
                self._local_initial = self._stream_window
            return
        if len(payload) % 6:
            raise _ProtocolError(ErrorCode.FRAME_SIZE_ERROR, "SETTINGS payload not a multiple of 6")
        raised = False
        for i in range(0, len(payload), 6):
            ident = int.from_bytes(payload[i : i + 2], "big")
            value = int.from_bytes(payload[i + 2 : i + 6], "big")
            if ident == 0x2 and value > 1:
                raise _ProtocolError(ErrorCode.PROTOCOL_ERROR, "SETTINGS_ENABLE_PUSH not 0 or 1")
            if ident == 0x4:
                if value > MAX_WINDOW:
                    raise _ProtocolError(ErrorCode.FLOW_CONTROL_ERROR, "SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1")
                if value > self._peer_window:  # section 6.9.2: no stream's window may pass 2^31-1
                    if self._credit_bound.exceeds(MAX_WINDOW - value, self._streams):
                        raise _ProtocolError(ErrorCode.FLOW_CONTROL_ERROR, "a stream window would pass 2^31-1")
                    raised = True
                self._peer_window = value  # every stream's window moves with it: O(1)
            elif ident == 0x5:
                if not MIN_FRAME <= value <= MAX_FRAME:
                    raise _ProtocolError(ErrorCode.PROTOCOL_ERROR, f"SETTINGS_MAX_FRAME_SIZE {value} out of range")
                self._peer_max_frame = value
            elif ident == 0x1 and value != self._table_size:
                smallest = min(value, self._table_update[0]) if self._table_update else value
                self._table_update = (smallest, value)
                self._table_size = value
            # Others (MAX_CONCURRENT_STREAMS, MAX_HEADER_LIST_SIZE): advisory for a server.
        self._out.append(_frame(_SETTINGS, _ACK, 0))
        if raised:
            self._flush_blocked()
