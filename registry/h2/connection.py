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

A stream's state moves along `registry.h2.stream_state` (RFC 9113 section 5.1 as a table); the peer
errors it names are the ones raised here. See docs/native-front.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from registry.h2.events import ConnectionEnded, DataReceived, ErrorCode, GoAwayReceived, RequestReceived, StreamReset
from registry.h2.frames import (
    ACK,
    CONTINUATION,
    DATA,
    DEFAULT_WINDOW,
    END_HEADERS,
    END_STREAM,
    GOAWAY,
    HEADERS,
    MAX_FRAME,
    MAX_WINDOW,
    MIN_FRAME,
    PADDED,
    PING,
    PREFACE,
    PRIORITY,
    PRIORITY_FLAG,
    PUSH_PROMISE,
    RST_STREAM,
    SETTINGS,
    WINDOW_UPDATE,
    Setting,
    frame,
)
from registry.h2.hpack import Decoder, HPACKError
from registry.h2.request import check_request, check_trailers
from registry.h2.sender import Sender
from registry.h2.stream_state import ILLEGAL, NEXT, RECEIVING, StreamInput, StreamState
from registry.h2.streams import LATE_FRAME, Closed, Stream

if TYPE_CHECKING:
    from registry.h2.events import Event

__all__ = ["MAX_CONTINUATIONS", "PREFACE", "ServerConnection"]

# CONTINUATION frames one header block may take (nghttp2 allows 8): empty ones cost CPU and
# nothing else, so without a count a peer could send them for ever (issue 11 item 8).
MAX_CONTINUATIONS = 32

_SELF_DEPENDENT = 0x100  # not on the wire: the HEADERS frame's priority named its own stream
_frame = frame
_IDLE, _CLOSED = int(StreamState.IDLE), int(StreamState.CLOSED)
_RECV_HEADERS, _RECV_DATA, _RECV_END = (
    int(StreamInput.RECV_HEADERS), int(StreamInput.RECV_DATA), int(StreamInput.RECV_END_STREAM)
)
_RECV_RST, _RECV_WINDOW_UPDATE = int(StreamInput.RECV_RST_STREAM), int(StreamInput.RECV_WINDOW_UPDATE)


class _ProtocolError(Exception):
    """A connection error (RFC 9113 section 5.4.1): caught in `receive`, answered with GOAWAY."""

    def __init__(self, code: ErrorCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code


class ServerConnection(Sender):
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
        super().__init__(stream_window, connection_window)
        self.max_concurrent_streams = max_concurrent_streams
        # Until the peer ACKs our SETTINGS it may use the default window (RFC 9113 section 6.5.3).
        self._local_initial = max(stream_window, DEFAULT_WINDOW)
        self._settings_acked = False
        self._decoder = Decoder(max_header_list_size=max_header_list_size)
        self._buf = bytearray()
        self._continuation: tuple[int, int, bytearray, int] | None = None  # (stream, flags, block, frames)
        # check_request's verdict per header block, valid while the decoder reuses its decoding
        # of the same bytes (same table): at most 16 blocks of at most 256 bytes (indexed blocks
        # of repeated requests are a few dozen bytes).
        self._checked: dict[bytes, tuple[str | None, int]] = {}
        self._table_size = 4096
        self.pings_acked = 0
        self.protocol_errors = 0
        self._out.append(
            _frame(
                SETTINGS,
                0,
                0,
                Setting.MAX_CONCURRENT_STREAMS.to_bytes(2, "big") + max_concurrent_streams.to_bytes(4, "big")
                + Setting.INITIAL_WINDOW_SIZE.to_bytes(2, "big") + stream_window.to_bytes(4, "big")
                + Setting.MAX_HEADER_LIST_SIZE.to_bytes(2, "big") + max_header_list_size.to_bytes(4, "big"),
            )
        )
        if connection_window > DEFAULT_WINDOW:
            self._out.append(_frame(WINDOW_UPDATE, 0, 0, (connection_window - DEFAULT_WINDOW).to_bytes(4, "big")))

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
            handler_for = _DISPATCH.get
            try:
                while end - pos >= 9:
                    length = int.from_bytes(view[pos : pos + 3], "big")
                    if length > MIN_FRAME:  # we never advertise a larger SETTINGS_MAX_FRAME_SIZE
                        raise _ProtocolError(ErrorCode.FRAME_SIZE_ERROR, f"frame of {length} bytes")
                    stop = pos + 9 + length
                    if stop > end:
                        break
                    ftype, flags = view[pos + 3], view[pos + 4]
                    stream_id = int.from_bytes(view[pos + 5 : pos + 9], "big") & 0x7FFFFFFF
                    payload = bytes(view[pos + 9 : stop])
                    pos = stop
                    if self._continuation is not None and ftype != CONTINUATION:
                        raise _ProtocolError(ErrorCode.PROTOCOL_ERROR, "header block interrupted by another frame")
                    handler = handler_for(ftype)
                    if handler is not None:  # unknown frame types are ignored (RFC 9113 section 4.1)
                        handler(self, flags, stream_id, payload, events)
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

    def _on_ping(self, flags: int, stream_id: int, payload: bytes, events: list[Event]) -> None:
        if stream_id != 0:
            raise _ProtocolError(ErrorCode.PROTOCOL_ERROR, "PING on a stream")
        if len(payload) != 8:
            raise _ProtocolError(ErrorCode.FRAME_SIZE_ERROR, "PING payload is not 8 bytes")
        if flags & ACK:
            self.pings_acked += 1
        else:
            self._out.append(_frame(PING, ACK, 0, payload))

    def _on_priority(self, flags: int, stream_id: int, payload: bytes, events: list[Event]) -> None:
        if stream_id == 0:
            raise _ProtocolError(ErrorCode.PROTOCOL_ERROR, "PRIORITY on stream 0")
        if len(payload) != 5:
            raise _ProtocolError(ErrorCode.FRAME_SIZE_ERROR, "PRIORITY payload is not 5 bytes")
        if int.from_bytes(payload[:4], "big") & 0x7FFFFFFF == stream_id:  # section 5.3.1
            if stream_id not in self._streams:  # no stream to reset (an idle one may not be)
                raise _ProtocolError(ErrorCode.PROTOCOL_ERROR, f"stream {stream_id} depends on itself")
            self._stream_error(stream_id, ErrorCode.PROTOCOL_ERROR, events)

    def _on_goaway(self, flags: int, stream_id: int, payload: bytes, events: list[Event]) -> None:
        if stream_id != 0 or len(payload) < 8:
            raise _ProtocolError(ErrorCode.PROTOCOL_ERROR, "malformed GOAWAY")
        last = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
        events.append(GoAwayReceived(last, int.from_bytes(payload[4:8], "big")))

    def _on_push_promise(self, flags: int, stream_id: int, payload: bytes, events: list[Event]) -> None:
        raise _ProtocolError(ErrorCode.PROTOCOL_ERROR, "PUSH_PROMISE from a client")

    @staticmethod
    def _unpad(flags: int, payload: bytes, what: str) -> bytes:
        if not flags & PADDED:
            return payload
        if not payload or payload[0] >= len(payload):
            raise _ProtocolError(ErrorCode.PROTOCOL_ERROR, f"{what} padding longer than the frame")
        return payload[1 : len(payload) - payload[0]]

    def _on_headers(self, flags: int, stream_id: int, payload: bytes, events: list[Event]) -> None:
        if stream_id == 0:
            raise _ProtocolError(ErrorCode.PROTOCOL_ERROR, "HEADERS on stream 0")
        block = self._unpad(flags, payload, "HEADERS") if flags & PADDED else payload
        if flags & PRIORITY_FLAG:
            if len(block) < 5:
                raise _ProtocolError(ErrorCode.FRAME_SIZE_ERROR, "HEADERS too short for its priority")
            if int.from_bytes(block[:4], "big") & 0x7FFFFFFF == stream_id:
                flags |= _SELF_DEPENDENT
            block = block[5:]
        if flags & END_HEADERS:
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
        # Encoded, a field never takes more octets than it counts toward SETTINGS_MAX_HEADER_LIST_SIZE
        # (name + value + 32): a larger block could only decode to a list we refuse, so it is not
        # buffered (was 4x, 256 KiB a connection).
        if len(block) > self._decoder.max_header_list_size:
            raise _ProtocolError(ErrorCode.ENHANCE_YOUR_CALM, "header block too large")
        if flags & END_HEADERS:
            self._continuation = None
            self._header_block(stream_id, first_flags, bytes(block), events)
        else:
            self._continuation = (stream_id, first_flags, block, count + 1)

    def _header_block(self, stream_id: int, flags: int, block: bytes, events: list[Event]) -> None:
        try:
            headers = self._decoder.decode(block)  # always: the decoder's table must stay in step
        except HPACKError as exc:
            raise _ProtocolError(ErrorCode.COMPRESSION_ERROR, f"header block: {exc}") from None
        end_stream = bool(flags & END_STREAM)
        s = self._streams.get(stream_id)
        if s is not None:  # trailers of a request
            if NEXT[s.state][_RECV_HEADERS] < 0:  # half-closed (remote)
                self._illegal(stream_id, s.state, _RECV_HEADERS, "HEADERS", events)
                return
            malformed = check_trailers(headers) if end_stream else "trailers without END_STREAM"
            if malformed is None and (flags & _SELF_DEPENDENT or s.expect_len not in (-1, s.received_len)):
                malformed = "bad priority or content-length"
            if malformed is not None:
                self._stream_error(stream_id, ErrorCode.PROTOCOL_ERROR, events)
                return
            self._step(stream_id, s, _RECV_END)
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
        checked = self._checked.get(block) if self._decoder.reused else None
        if checked is None:  # checked once per distinct block: clients repeat theirs
            checked = check_request(headers)
            if len(block) <= 256:
                if len(self._checked) >= 16:
                    self._checked.clear()
                self._checked[block] = checked
            else:
                self._checked.pop(block, None)
        malformed, length = checked
        if malformed is None and (flags & _SELF_DEPENDENT or (end_stream and length > 0)):
            malformed = "bad priority or content-length"
        if malformed is not None:  # section 8.1.1: a stream error, unseen by the application
            self._stream_error(stream_id, ErrorCode.PROTOCOL_ERROR, events)
            return
        if len(self._streams) >= self.max_concurrent_streams:
            self._out.append(_frame(RST_STREAM, 0, stream_id, ErrorCode.REFUSED_STREAM.to_bytes(4, "big")))
            self._closed.add(stream_id, Closed.RESET_SENT)
            events.append(StreamReset(stream_id, ErrorCode.REFUSED_STREAM))
            return
        s = self._streams[stream_id] = Stream(length)  # idle, RECV_HEADERS: open
        if end_stream:
            s.state = NEXT[s.state][_RECV_END]  # half-closed (remote)
        events.append(RequestReceived(stream_id, headers, end_stream))

    def _illegal(self, stream_id: int, state: int, event: int, what: str, events: list[Event]) -> None:
        """A peer's frame the stream's state does not allow (registry.h2.stream_state.ILLEGAL):
        a connection error raises, a stream error resets the stream."""
        bad = ILLEGAL[(StreamState(state), StreamInput(event))]
        if bad.connection:
            raise _ProtocolError(bad.code, f"{what} on {StreamState(state).name.lower()} stream {stream_id}")
        self._stream_error(stream_id, bad.code, events)

    def _late_frame(self, stream_id: int, what: str, events: list[Event]) -> None:
        """DATA or HEADERS on a stream id the peer used before that is no longer open (RFC 9113 5.1)."""
        how = self._closed.get(stream_id)
        if how is None:  # never opened, or closed too long ago to remember
            if what == "HEADERS":  # stream ids must increase
                raise _ProtocolError(ErrorCode.PROTOCOL_ERROR, f"HEADERS opening stream {stream_id} out of order")
            return
        bad = LATE_FRAME[how]
        if bad is None:
            return  # in flight when we reset it: ignored
        if bad.connection:
            raise _ProtocolError(bad.code, f"{what} on closed stream {stream_id}")
        self._stream_error(stream_id, bad.code, events)

    def _on_data(self, flags: int, stream_id: int, payload: bytes, events: list[Event]) -> None:
        if stream_id == 0:
            raise _ProtocolError(ErrorCode.PROTOCOL_ERROR, "DATA on stream 0")
        size = len(payload)
        self._recv_window -= size
        if self._recv_window < 0:
            raise _ProtocolError(ErrorCode.FLOW_CONTROL_ERROR, "peer overran the connection window")
        data = self._unpad(flags, payload, "DATA") if flags & PADDED else payload
        s = self._streams.get(stream_id)
        if s is None or not RECEIVING[s.state]:
            if stream_id > self._last_stream:
                self._illegal(stream_id, _IDLE, _RECV_DATA, "DATA", events)
                return  # (a connection error: _illegal raised)
            # No application will see these bytes: their connection-level credit goes back now.
            self._credit(0, None, size)
            if s is not None:
                self._illegal(stream_id, s.state, _RECV_DATA, "DATA", events)  # half-closed (remote)
            else:
                self._late_frame(stream_id, "DATA", events)
            return
        s.recv_taken += size
        if s.recv_taken > self._local_initial:
            raise _ProtocolError(ErrorCode.FLOW_CONTROL_ERROR, f"peer overran stream {stream_id}'s window")
        end_stream = bool(flags & END_STREAM)
        n = len(data)
        received = s.received_len = s.received_len + n
        expect = s.expect_len
        if expect >= 0 and (received > expect or (end_stream and received < expect)):
            self._credit(0, None, size)
            self._stream_error(stream_id, ErrorCode.PROTOCOL_ERROR, events)  # section 8.1.1: content-length
            return
        if end_stream:
            state = s.state = NEXT[s.state][_RECV_END]  # _step, inline: RECEIVING made it legal
            if state == _CLOSED:
                del self._streams[stream_id]
                self._closed.add(stream_id, Closed.ENDED)
        self._recv_held += n
        if size > n:
            self._credit(stream_id, s, size - n)  # padding: nothing for the application to consume
        events.append(DataReceived(stream_id, data, end_stream, size))

    def _on_rst_stream(self, flags: int, stream_id: int, payload: bytes, events: list[Event]) -> None:
        if stream_id == 0:
            raise _ProtocolError(ErrorCode.PROTOCOL_ERROR, "RST_STREAM on stream 0")
        if stream_id > self._last_stream:
            self._illegal(stream_id, _IDLE, _RECV_RST, "RST_STREAM", events)
            return  # (a connection error: _illegal raised)
        if len(payload) != 4:
            raise _ProtocolError(ErrorCode.FRAME_SIZE_ERROR, "RST_STREAM payload is not 4 bytes")
        if self._drop(stream_id, Closed.RESET_RECEIVED):
            events.append(StreamReset(stream_id, int.from_bytes(payload, "big")))
        elif self._closed.get(stream_id) is not None:
            # Closed already (our RST_STREAM or both END_STREAMs may have crossed theirs): from
            # now on the peer has reset it, so its later frames on it are its error (RFC 9113 5.1).
            self._closed.add(stream_id, Closed.RESET_RECEIVED)

    def _on_window_update(self, flags: int, stream_id: int, payload: bytes, events: list[Event]) -> None:
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
            self._illegal(stream_id, _IDLE, _RECV_WINDOW_UPDATE, "WINDOW_UPDATE", events)
            return  # (a connection error: _illegal raised)
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

    def _on_settings(self, flags: int, stream_id: int, payload: bytes, events: list[Event]) -> None:
        if stream_id != 0:
            raise _ProtocolError(ErrorCode.PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & ACK:
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
            if ident == Setting.ENABLE_PUSH and value > 1:
                raise _ProtocolError(ErrorCode.PROTOCOL_ERROR, "SETTINGS_ENABLE_PUSH not 0 or 1")
            if ident == Setting.INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    raise _ProtocolError(ErrorCode.FLOW_CONTROL_ERROR, "SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1")
                if value > self._peer_window:  # section 6.9.2: no stream's window may pass 2^31-1
                    if self._credit_bound.exceeds(MAX_WINDOW - value, self._streams):
                        raise _ProtocolError(ErrorCode.FLOW_CONTROL_ERROR, "a stream window would pass 2^31-1")
                    raised = True
                self._peer_window = value  # every stream's window moves with it: O(1)
            elif ident == Setting.MAX_FRAME_SIZE:
                if not MIN_FRAME <= value <= MAX_FRAME:
                    raise _ProtocolError(ErrorCode.PROTOCOL_ERROR, f"SETTINGS_MAX_FRAME_SIZE {value} out of range")
                self._peer_max_frame = value
            elif ident == Setting.HEADER_TABLE_SIZE and value != self._table_size:
                smallest = min(value, self._table_update[0]) if self._table_update else value
                self._table_update = (smallest, value)
                self._table_size = value
            # Others (MAX_CONCURRENT_STREAMS, MAX_HEADER_LIST_SIZE): advisory for a server.
        self._out.append(_frame(SETTINGS, ACK, 0))
        if raised:
            self._flush_blocked()


_Handler = Callable[[ServerConnection, int, int, bytes, "list[Event]"], None]
#: Frame type -> its handler, all called as (connection, flags, stream id, payload, events): one
#: lookup instead of a chain of comparisons.  A table of the class's functions, not of bound
#: methods built per connection (h2's `_frame_dispatch_table`): those would cost each connection a
#: dict and ten method objects and make it a reference cycle, freed only by the cyclic collector.
_DISPATCH: dict[int, _Handler] = {
    HEADERS: ServerConnection._on_headers,
    DATA: ServerConnection._on_data,
    WINDOW_UPDATE: ServerConnection._on_window_update,
    SETTINGS: ServerConnection._on_settings,
    PING: ServerConnection._on_ping,
    RST_STREAM: ServerConnection._on_rst_stream,
    CONTINUATION: ServerConnection._on_continuation,
    PRIORITY: ServerConnection._on_priority,
    GOAWAY: ServerConnection._on_goaway,
    PUSH_PROMISE: ServerConnection._on_push_promise,
}
