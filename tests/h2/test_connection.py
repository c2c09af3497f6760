"""The sans-I/O HTTP/2 server connection, frame by frame: no sockets, exact bytes."""

from __future__ import annotations

import gc
import random
import weakref

import pytest

from registry.h2.connection import PREFACE, ServerConnection
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
    CONTINUATION,
    DATA,
    GOAWAY,
    HEADERS,
    PING,
    PRIORITY,
    PUSH_PROMISE,
    RST_STREAM,
    SETTINGS,
    WINDOW_UPDATE,
    frame,
)
from registry.h2.hpack import Decoder
from tests.h2.framebytes import block, parse_frames

RST, PUSH, WINDOW, CONT = RST_STREAM, PUSH_PROMISE, WINDOW_UPDATE, CONTINUATION
REQUEST = [(":method", "POST"), (":scheme", "http"), (":path", "/svc/M"), (":authority", "x"),
           ("content-type", "application/grpc"), ("te", "trailers")]


ACK_SETTINGS = bytes.fromhex("000000040100000000")  # the peer acknowledges our SETTINGS


def settings(**values: int) -> bytes:
    ids = {"table": 1, "push": 2, "streams": 3, "window": 4, "frame": 5, "list": 6}
    return frame(SETTINGS, 0, 0, b"".join(ids[k].to_bytes(2, "big") + v.to_bytes(4, "big") for k, v in values.items()))


def opened(**peer: int) -> ServerConnection:
    c = ServerConnection(stream_window=1 << 16, connection_window=1 << 20)
    assert c.receive(PREFACE + settings(**peer)) == []
    out = parse_frames(c.data_to_send())
    assert [(t, f) for t, f, _, _ in out] == [(SETTINGS, 0), (WINDOW, 0), (SETTINGS, 1)]
    return c


def request(c: ServerConnection, sid: int, body: bytes | None = b"x") -> list[Event]:
    events = c.receive(frame(HEADERS, 0x4 | (0 if body is not None else 0x1), sid, block(REQUEST)))
    if body is not None:
        events += c.receive(frame(DATA, 0x1, sid, body))
    return events


def test_server_settings_and_window_first() -> None:
    c = ServerConnection(max_concurrent_streams=7, stream_window=1 << 20, connection_window=16 << 20)
    (t1, _, _, p1), (t2, _, _, p2) = parse_frames(c.data_to_send())
    assert t1 == SETTINGS and p1 == bytes.fromhex("0003 00000007 0004 00100000 0006 00010000")
    assert t2 == WINDOW and int.from_bytes(p2, "big") == (16 << 20) - 65535


def test_request_events_and_unary_response_bytes() -> None:
    c = opened()
    events = request(c, 1, b"\x00\x00\x00\x00\x02hi")
    assert events == [RequestReceived(1, REQUEST, False), DataReceived(1, b"\x00\x00\x00\x00\x02hi", True, 7)]
    c.respond(1, b"H", b"BODY", b"T")
    assert parse_frames(c.data_to_send()) == [(HEADERS, 0x4, 1, b"H"), (DATA, 0, 1, b"BODY"), (HEADERS, 0x5, 1, b"T")]
    assert c.open_streams == 0


def test_preface_byte_by_byte_and_wrong_preface() -> None:
    c = ServerConnection()
    c.data_to_send()
    for b in PREFACE:
        assert c.receive(bytes([b])) == []
    assert not c.ended
    bad = ServerConnection()
    events = bad.receive(b"GET / HTTP/1.1\r\n")
    assert isinstance(events[-1], ConnectionEnded) and bad.ended and bad.protocol_errors == 1


def test_frames_split_at_every_byte_give_the_same_events() -> None:
    wire = PREFACE + settings() + frame(HEADERS, 0x4, 1, block(REQUEST)) + frame(DATA, 0, 1, b"ab") + frame(DATA, 1, 1, b"c")
    whole = ServerConnection()
    want = whole.receive(wire)
    for cut in range(1, len(wire)):
        c = ServerConnection()
        assert c.receive(wire[:cut]) + c.receive(wire[cut:]) == want


def test_flow_control_holds_data_until_window_update() -> None:
    c = opened(window=10)  # the peer lets each stream receive 10 bytes
    request(c, 1)
    c.send_headers(1, b"H")
    c.send_data(1, b"0123456789abcdef")
    c.send_trailers(1, b"T")
    out = parse_frames(c.data_to_send())
    assert out == [(HEADERS, 0x4, 1, b"H"), (DATA, 0, 1, b"0123456789")]
    assert c.pending_bytes(1) == 6 and c.pending_total == 6 and c.is_open(1)
    c.receive(frame(WINDOW, 0, 1, (4).to_bytes(4, "big")))
    assert parse_frames(c.data_to_send()) == [(DATA, 0, 1, b"abcd")]
    c.receive(settings(window=100))  # a larger initial window applies to open streams at once
    assert parse_frames(c.data_to_send()) == [(SETTINGS, 1, 0, b""), (DATA, 0, 1, b"ef"), (HEADERS, 0x5, 1, b"T")]
    assert not c.is_open(1) and c.open_streams == 0


def test_connection_window_shared_by_streams() -> None:
    c = opened(window=1 << 20)
    for sid in (1, 3):
        request(c, sid)
        c.send_headers(sid, b"H")
    c.send_data(1, bytes(60_000))
    c.send_data(3, bytes(10_000), end_stream=True)  # only 5,535 bytes of connection window left
    sizes = [(sid, len(p)) for t, _, sid, p in parse_frames(c.data_to_send()) if t == DATA]
    assert sum(n for _, n in sizes) == 65_535 and sizes[-1] == (3, 65_535 - 60_000)
    c.receive(frame(WINDOW, 0, 0, (100_000).to_bytes(4, "big")))
    rest = parse_frames(c.data_to_send())
    assert rest[-1] == (DATA, 0x1, 3, b"") and sum(len(p) for t, _, _, p in rest if t == DATA) == 10_000 - 5_535


def test_large_data_split_at_peer_max_frame_size() -> None:
    c = opened(window=1 << 20)
    c.receive(frame(WINDOW, 0, 0, (1 << 20).to_bytes(4, "big")))
    request(c, 1)
    c.send_data(1, bytes(40_000))
    assert [len(p) for t, _, _, p in parse_frames(c.data_to_send()) if t == DATA] == [16_384, 16_384, 7_232]
    c.receive(settings(frame=32_768))
    c.send_data(1, bytes(40_000))
    assert [len(p) for t, _, _, p in parse_frames(c.data_to_send()) if t == DATA] == [32_768, 7_232]


def test_header_block_over_continuation_and_long_response_headers() -> None:
    c = opened()
    b = block(REQUEST)
    events = c.receive(frame(HEADERS, 0x1, 1, b[:5]) + frame(CONT, 0, 1, b[5:9]) + frame(CONT, 0x4, 1, b[9:]))
    assert events == [RequestReceived(1, REQUEST, True)]
    c.send_headers(1, bytes(40_000), end_stream=True)
    out = parse_frames(c.data_to_send())
    assert [(t, f, len(p)) for t, f, _, p in out] == [(HEADERS, 0x1, 16_384), (CONT, 0, 16_384), (CONT, 0x4, 7_232)]


def test_padding_and_priority_are_stripped() -> None:
    c = opened()
    b = block(REQUEST)
    padded = bytes([3]) + bytes(5) + b + b"\0\0\0"  # pad length, priority (5 bytes), block, padding
    assert c.receive(frame(HEADERS, 0x4 | 0x8 | 0x20, 1, padded)) == [RequestReceived(1, REQUEST, False)]
    assert c.receive(frame(DATA, 0x9, 1, b"\x02ab\0\0")) == [DataReceived(1, b"ab", True, 5)]


def test_ping_is_answered_and_counted() -> None:
    c = opened()
    c.receive(frame(PING, 0, 0, b"12345678"))
    assert parse_frames(c.data_to_send()) == [(PING, 1, 0, b"12345678")]
    c.ping(b"abcdefgh")
    assert c.pings_sent == 1 and c.pings_acked == 0
    c.receive(frame(PING, 1, 0, b"abcdefgh"))
    assert c.pings_acked == 1


def test_reset_by_peer_drops_queued_output() -> None:
    c = opened(window=4)
    request(c, 1)
    c.send_data(1, b"0123456789")
    c.data_to_send()
    assert c.pending_total == 6
    assert c.receive(frame(RST, 0, 1, (8).to_bytes(4, "big"))) == [StreamReset(1, 8)]
    assert c.pending_bytes(1) == 0 and c.pending_total == 0 and c.open_streams == 0
    c.receive(frame(WINDOW, 0, 1, (100).to_bytes(4, "big")))  # ignored
    assert parse_frames(c.data_to_send()) == [] and not c.ended
    c.receive(frame(DATA, 1, 1, b"late"))  # after the peer's own RST_STREAM: RFC 9113 5.1, a stream error
    assert parse_frames(c.data_to_send()) == [(RST, 0, 1, bytes.fromhex("00000005"))] and not c.ended


def test_a_connection_is_freed_by_reference_counting() -> None:
    """No reference cycle through the connection (a per-connection table of its bound methods
    would make one): a closed connection's buffers go as soon as the front drops it, not at the
    next run of the cyclic collector."""
    c = opened()
    request(c, 1)
    c.receive(frame(PING, 0, 0, b"12345678") + frame(WINDOW, 0, 0, (1).to_bytes(4, "big")))
    gone = weakref.ref(c)
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        del c
        assert gone() is None, gc.get_referrers(gone())
    finally:
        if was_enabled:
            gc.enable()


def test_too_many_streams_refused() -> None:
    c = ServerConnection(max_concurrent_streams=2)
    c.receive(PREFACE + settings())
    c.data_to_send()
    events = request(c, 1, None) + request(c, 3, None) + request(c, 5, None)
    assert events[-1] == StreamReset(5, ErrorCode.REFUSED_STREAM)
    assert parse_frames(c.data_to_send())[-1] == (RST, 0, 5, ErrorCode.REFUSED_STREAM.to_bytes(4, "big"))


def test_goaway_received_and_sent() -> None:
    c = opened()
    request(c, 1, None)
    assert c.receive(frame(GOAWAY, 0, 0, (1).to_bytes(4, "big") + bytes(4))) == [GoAwayReceived(1, 0)]
    c.goaway()
    assert parse_frames(c.data_to_send()) == [(GOAWAY, 0, 0, (1).to_bytes(4, "big") + bytes(4))]
    assert request(c, 3, None) == []  # above the GOAWAY's last stream: not served


def test_header_table_stays_in_step_across_requests() -> None:
    # Incremental indexing (0x40): the second request refers to the first one's entries.
    c = opened()
    first = b"".join(b"\x40" + bytes([len(n)]) + n.encode() + bytes([len(v)]) + v.encode() for n, v in REQUEST)
    assert c.receive(frame(HEADERS, 0x5, 1, first)) == [RequestReceived(1, REQUEST, True)]
    indexed = bytes(0x80 | (61 + len(REQUEST) - i) for i in range(len(REQUEST)))  # dynamic indices 62..
    assert c.receive(frame(HEADERS, 0x5, 3, indexed)) == [RequestReceived(3, REQUEST, True)]


@pytest.mark.parametrize(
    "wire, code",
    [
        (frame(DATA, 0, 0, b"x"), ErrorCode.PROTOCOL_ERROR),  # DATA on stream 0
        (frame(DATA, 0, 9, b"x"), ErrorCode.PROTOCOL_ERROR),  # DATA on an idle stream
        (frame(HEADERS, 0x5, 2, block(REQUEST)), ErrorCode.PROTOCOL_ERROR),  # even stream id
        (frame(HEADERS, 0x1, 1, b"") + frame(PING, 0, 0, bytes(8)), ErrorCode.PROTOCOL_ERROR),  # interrupted block
        (frame(CONT, 0x4, 1, b""), ErrorCode.PROTOCOL_ERROR),  # CONTINUATION out of the blue
        (frame(HEADERS, 0x5, 1, b"\xff\xff\xff\xff\xff\xff"), ErrorCode.COMPRESSION_ERROR),  # bad HPACK
        (frame(PING, 0, 0, b"short"), ErrorCode.FRAME_SIZE_ERROR),
        (frame(PING, 0, 1, bytes(8)), ErrorCode.PROTOCOL_ERROR),
        (frame(SETTINGS, 0, 0, b"12345"), ErrorCode.FRAME_SIZE_ERROR),
        (settings(window=2**31), ErrorCode.FLOW_CONTROL_ERROR),
        (settings(frame=100), ErrorCode.PROTOCOL_ERROR),
        (settings(push=2), ErrorCode.PROTOCOL_ERROR),
        (frame(WINDOW, 0, 0, bytes(4)), ErrorCode.PROTOCOL_ERROR),  # zero increment
        (frame(WINDOW, 0, 0, (2**31 - 1).to_bytes(4, "big")), ErrorCode.FLOW_CONTROL_ERROR),  # window overflow
        (frame(RST, 0, 7, bytes(4)), ErrorCode.PROTOCOL_ERROR),  # RST on an idle stream
        (frame(PUSH, 0x4, 1, bytes(4)), ErrorCode.PROTOCOL_ERROR),
        (frame(PRIORITY, 0, 1, b"1234"), ErrorCode.FRAME_SIZE_ERROR),
        (frame(HEADERS, 0x4 | 0x8, 1, b"\x09abc"), ErrorCode.PROTOCOL_ERROR),  # padding longer than the frame
        (bytes.fromhex("004001") + bytes(6), ErrorCode.FRAME_SIZE_ERROR),  # 16,385-byte frame announced
    ],
)
def test_peer_errors_end_the_connection_with_goaway(wire: bytes, code: int) -> None:
    c = opened()
    events = c.receive(wire)
    assert isinstance(events[-1], ConnectionEnded) and events[-1].error_code == code, events
    goaway = [p for t, _, _, p in parse_frames(c.data_to_send()) if t == GOAWAY]
    assert len(goaway) == 1 and int.from_bytes(goaway[0][4:8], "big") == code
    assert c.ended and c.protocol_errors == 1 and c.receive(frame(PING, 0, 0, bytes(8))) == []


@pytest.mark.parametrize("sizes", [[101], [30, 19, 52]])  # 30+19 stays under the half-window credit point
def test_peer_overrunning_the_stream_window(sizes: list[int]) -> None:
    c = ServerConnection(stream_window=100, connection_window=65_535)
    c.receive(PREFACE + settings() + ACK_SETTINGS + frame(HEADERS, 0x4, 1, block(REQUEST)))
    events = c.receive(b"".join(frame(DATA, 0, 1, bytes(n)) for n in sizes))
    assert isinstance(events[-1], ConnectionEnded) and events[-1].error_code == ErrorCode.FLOW_CONTROL_ERROR


def window_updates(c: ServerConnection) -> dict[int, int]:
    """Credit sent per stream id (0 = the connection) since the last call; nothing else may be sent."""
    out: dict[int, int] = {}
    for t, _, sid, p in parse_frames(c.data_to_send()):
        assert t == WINDOW, (t, p)
        out[sid] = out.get(sid, 0) + int.from_bytes(p, "big")
    return out


def test_small_stream_window_holds_only_once_the_peer_acknowledged_it() -> None:
    """Before it has seen our SETTINGS the peer may send 65,535 bytes per stream (RFC 9113 6.5.3)."""
    c = ServerConnection(stream_window=100, connection_window=1 << 20)
    c.receive(PREFACE + settings() + frame(HEADERS, 0x4, 1, block(REQUEST)))
    c.data_to_send()
    events = c.receive(b"".join(frame(DATA, 0, 1, bytes(16_383)) for _ in range(4)) + frame(DATA, 0, 1, bytes(3)))
    assert [len(e.data) for e in events if isinstance(e, DataReceived)] == [16_383] * 4 + [3]
    c.receive(ACK_SETTINGS)  # from now on 100 bytes, of which 65,535 are taken
    c.acknowledge_received_data(1, 65_535)
    assert window_updates(c) == {1: 65_535}
    assert isinstance(c.receive(frame(DATA, 0, 1, bytes(100)))[-1], DataReceived)
    assert c.receive(frame(DATA, 0, 1, b"x"))[-1] == ConnectionEnded(ErrorCode.FLOW_CONTROL_ERROR, "peer overran stream 1's window")


def test_received_data_is_credited_back_once_acknowledged() -> None:
    c = ServerConnection(stream_window=1000, connection_window=4000)
    c.receive(PREFACE + settings() + ACK_SETTINGS + frame(HEADERS, 0x4, 1, block(REQUEST)))
    c.data_to_send()
    total = 0
    for _ in range(20):  # 10,000 bytes through windows of 1,000 / 4,000: only works if credited back
        events = c.receive(frame(DATA, 0, 1, bytes(500)))
        assert isinstance(events[-1], DataReceived), events
        assert window_updates(c) == {}  # nothing before the application consumed it
        c.acknowledge_received_data(1, len(events[-1].data))
        total += window_updates(c).get(0, 0)
    assert total >= 10_000 - 2_000


def test_unconsumed_data_is_never_credited() -> None:
    """A peer cannot make us buffer more than the windows we advertised (the bug: credit on parse)."""
    c = ServerConnection(stream_window=1000, connection_window=4000)
    c.receive(PREFACE + settings() + ACK_SETTINGS + b"".join(frame(HEADERS, 0x4, sid, block(REQUEST)) for sid in (1, 3, 5, 7, 9)))
    c.data_to_send()
    received = 0
    for sid in (1, 3, 5, 7):
        for _ in range(2):
            events = c.receive(frame(DATA, 0, sid, bytes(500)))
            assert isinstance(events[-1], DataReceived)
            received += len(events[-1].data)
    assert window_updates(c) == {} and received == 4000
    events = c.receive(frame(DATA, 0, 9, b"x"))  # one byte past the connection window
    assert isinstance(events[-1], ConnectionEnded) and events[-1].error_code == ErrorCode.FLOW_CONTROL_ERROR


def test_padding_is_credited_at_once_and_data_on_acknowledgement() -> None:
    c = ServerConnection(stream_window=1000, connection_window=4000)
    c.receive(PREFACE + settings() + ACK_SETTINGS + frame(HEADERS, 0x4, 1, block(REQUEST)))
    c.data_to_send()
    (ev,) = c.receive(frame(DATA, 0x8, 1, bytes([250]) + bytes(349)))  # 99 data, 251 padding bytes (pad length included)
    assert isinstance(ev, DataReceived) and len(ev.data) == 99 and ev.flow_controlled_length == 350
    assert window_updates(c) == {}  # 251 < half of either window
    c.receive(frame(DATA, 0x8, 1, bytes([255]) + bytes(299)))  # 44 data, 256 padding: 507 padding in all
    assert window_updates(c) == {1: 507}
    c.acknowledge_received_data(1, 143)
    c.acknowledge_received_data(1, 10_000)  # more than was delivered: clamped, windows never overflow
    assert window_updates(c) == {}  # 650 < 2000 owed to the connection, 143 < 500 to the stream
    assert c.receive(frame(DATA, 0, 1, bytes(857)))[-1] == DataReceived(1, bytes(857), False, 857)  # exactly the window
    events = c.receive(frame(DATA, 0, 1, b"x"))
    assert isinstance(events[-1], ConnectionEnded) and events[-1].error_code == ErrorCode.FLOW_CONTROL_ERROR


def test_acknowledging_a_reset_stream_still_credits_the_connection() -> None:
    c = ServerConnection(stream_window=4000, connection_window=4000)
    c.receive(PREFACE + settings() + ACK_SETTINGS + frame(HEADERS, 0x4, 1, block(REQUEST)) + frame(DATA, 0, 1, bytes(1600)))
    c.data_to_send()
    c.reset(1)
    c.receive(frame(DATA, 0, 1, bytes(400)))  # in flight when we reset: dropped, credited by the connection
    assert [t for t, _, _, _ in parse_frames(c.data_to_send())] == [RST]
    c.acknowledge_received_data(1, 1600)  # the application drops what it held for the stream
    assert window_updates(c) == {0: 2000}  # half the connection window: sent


def test_random_bytes_never_raise() -> None:
    rng = random.Random(7)
    good = PREFACE + settings() + frame(HEADERS, 0x4, 1, block(REQUEST)) + frame(DATA, 1, 1, b"abc")
    for i in range(3000):
        c = ServerConnection()
        if i % 2:
            wire = bytearray(good)
            for _ in range(rng.randint(1, 4)):
                wire[rng.randrange(len(PREFACE), len(wire))] = rng.randrange(256)
            data = bytes(wire)
        else:
            data = PREFACE + bytes(rng.randrange(256) for _ in range(rng.randint(0, 64)))
        events = c.receive(data)  # any exception fails the test
        assert all(isinstance(e, (RequestReceived, DataReceived, StreamReset, GoAwayReceived, ConnectionEnded))
                   for e in events)
        Decoder()  # the module's decoder stays constructible (no shared state damaged)


def test_lowered_header_table_size_is_acknowledged_in_the_next_block() -> None:
    """RFC 7541 section 4.2: a peer that lowers SETTINGS_HEADER_TABLE_SIZE gets a dynamic table size
    update at the start of our next header block (nghttp2 fails the connection without it)."""
    c = opened(table=0)
    request(c, 1)
    request(c, 3)
    c.respond(1, b"H", b"B", b"T")
    c.respond(3, b"H", b"B", b"T")
    heads = [p for t, _, _, p in parse_frames(c.data_to_send()) if t == HEADERS]
    assert heads == [b"\x20H", b"T", b"H", b"T"]  # size update to 0, once
    c.receive(settings(table=256) + settings(table=1024))  # two changes: the smallest, then the latest
    request(c, 5, None)
    c.send_headers(5, b"H", end_stream=True)
    (block,) = [p for t, _, _, p in parse_frames(c.data_to_send()) if t == HEADERS]
    assert Decoder().decode(block[:-1]) == [] and block == bytes.fromhex("3fe101") + bytes.fromhex("3fe107") + b"H"
    c.receive(settings(table=1024))  # unchanged: nothing owed
    request(c, 7, None)
    c.send_headers(7, b"H", end_stream=True)
    assert [p for t, _, _, p in parse_frames(c.data_to_send()) if t == HEADERS] == [b"H"]


def test_request_checks_follow_the_header_table() -> None:
    """The verdict on a header block is reused only while the same bytes mean the same fields:
    an indexed reference whose entry changed is checked again."""
    from registry.h2.hpack import encode_integer

    c = opened()
    base = block(REQUEST)

    def with_index(name: bytes, value: bytes) -> bytes:
        return b"\x40" + encode_integer(len(name), 7) + name + encode_integer(len(value), 7) + value

    c.receive(frame(HEADERS, 0x5, 1, base + with_index(b"x-a", b"ok")))  # entry 62: x-a: ok
    same = base + b"\xbe"  # indexed field 62
    assert isinstance(c.receive(frame(HEADERS, 0x5, 3, same))[-1], RequestReceived)
    assert isinstance(c.receive(frame(HEADERS, 0x5, 5, same))[-1], RequestReceived)  # reused verdict
    c.receive(frame(HEADERS, 0x5, 7, base + with_index(b"X-BAD", b"v")))  # malformed, but indexed: entry 62 now
    c.data_to_send()
    assert c.receive(frame(HEADERS, 0x5, 9, same)) == []  # the same bytes, now malformed
    assert parse_frames(c.data_to_send()) == [(RST, 0, 9, ErrorCode.PROTOCOL_ERROR.to_bytes(4, "big"))]


def test_continuation_frames_per_header_block_are_bounded() -> None:
    from registry.h2.connection import MAX_CONTINUATIONS

    c = opened()
    wire = frame(HEADERS, 0x1, 1, block(REQUEST)) + frame(CONT, 0, 1) * (MAX_CONTINUATIONS - 1) + frame(CONT, 0x4, 1)
    assert c.receive(wire) == [RequestReceived(1, REQUEST, True)]  # MAX_CONTINUATIONS frames: fine
    events = c.receive(frame(HEADERS, 0x1, 3, block(REQUEST)) + frame(CONT, 0, 3) * MAX_CONTINUATIONS + frame(CONT, 0x4, 3))
    assert events == [ConnectionEnded(ErrorCode.ENHANCE_YOUR_CALM, f"header block over {MAX_CONTINUATIONS} CONTINUATION frames")]


def test_closed_streams_are_remembered_within_a_bound() -> None:
    """10,000 streams opened and ended: the memory of closed streams stays at its bound, and a
    frame on a stream long forgotten is ignored rather than taken for a protocol error."""
    from registry.h2.streams import CLOSED_STREAMS_REMEMBERED

    c = opened()
    for sid in range(1, 20_001, 2):
        c.receive(frame(HEADERS, 0x5, sid, block(REQUEST)))
        c.respond(sid, b"H", b"B", b"T")
        c.data_to_send()
    assert c.open_streams == 0 and len(c._closed._kind) == len(c._closed._order) == CLOSED_STREAMS_REMEMBERED
    assert c.receive(frame(DATA, 1, 1, b"late")) == [] and not c.ended  # forgotten: ignored (credited back)
    c.receive(frame(DATA, 1, 19_999, b"late"))  # remembered as ended on both sides: RFC 9113 5.1
    assert c.ended


def test_frames_after_the_peers_reset_of_a_stream_we_reset_first() -> None:
    """Both sides reset stream 1 (ours first): a HEADERS the peer sends after its own RST_STREAM is
    its error, answered once with STREAM_CLOSED (h2spec http2/5.1/9 when our reset wins the race)."""
    c = opened()
    c.receive(frame(HEADERS, 0x4, 1, block(REQUEST)))
    c.reset(1, ErrorCode.NO_ERROR)
    c.data_to_send()
    assert c.receive(frame(RST, 0, 1, (8).to_bytes(4, "big"))) == []
    c.receive(frame(HEADERS, 0x5, 1, block([("x-test", "ok")])) * 3)
    assert parse_frames(c.data_to_send()) == [(RST, 0, 1, ErrorCode.STREAM_CLOSED.to_bytes(4, "big"))]
    assert not c.ended


def test_a_header_block_is_buffered_up_to_the_header_list_limit_only() -> None:
    """CONTINUATION frames may not pile up more encoded octets than SETTINGS_MAX_HEADER_LIST_SIZE:
    no field encodes to more than it counts toward that limit, so more could only be refused later."""
    c = ServerConnection(max_header_list_size=4096)
    c.receive(PREFACE + settings() + ACK_SETTINGS)
    fields = [(f"x-{i}", "v" * 100) for i in range(30)]  # ~3,700 octets encoded, ~4,100 counted
    events = c.receive(frame(HEADERS, 0x1, 1, block(REQUEST)) + frame(CONT, 0, 1, block(fields[:15]))
                       + frame(CONT, 0x4, 1, block(fields[15:])))
    assert isinstance(events[-1], ConnectionEnded) and events[-1].error_code == ErrorCode.COMPRESSION_ERROR  # decoded: too long
    c = ServerConnection(max_header_list_size=4096)
    c.receive(PREFACE + settings() + ACK_SETTINGS)
    events = c.receive(frame(HEADERS, 0x1, 1, block(REQUEST)) + frame(CONT, 0, 1, bytes(4000)) + frame(CONT, 0, 1, bytes(200)))
    assert events == [ConnectionEnded(ErrorCode.ENHANCE_YOUR_CALM, "header block too large")]  # not even decoded
