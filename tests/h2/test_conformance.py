"""Every h2spec 2.6.0 case (146), without h2spec: the same frame sequences, sent by a client on
python-hyper's h2/hyperframe/hpack to a real native server on loopback, and our exact answer
checked (h2spec accepts a connection error where a stream error is due, or a bare close; these
tests do not). Test ids name the h2spec case: `generic/3.1/2` is "Generic tests, 3.1 DATA, case 2".

Requests that need an answer with a body use grpc.health.v1.Health (Check: a unary answer that
ends the stream; Watch: a stream that stays open, half-closed on the client's side).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from h2.errors import ErrorCodes
from hyperframe.frame import (
    GoAwayFrame,
    PingFrame,
    PriorityFrame,
    PushPromiseFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from registry.h2.connection import PREFACE
from tests.h2.wirepeer import CHECK, EMPTY_MESSAGE, GET, POST, WATCH, Peer

# Error codes from h2 (a peer independent of ours), under the short names the cases use.
NO_ERROR, PROTOCOL, INTERNAL, FLOW, SETTINGS_TIMEOUT, CLOSED, FRAME_SIZE, REFUSED, CANCEL, COMPRESSION = (
    ErrorCodes.NO_ERROR, ErrorCodes.PROTOCOL_ERROR, ErrorCodes.INTERNAL_ERROR, ErrorCodes.FLOW_CONTROL_ERROR,
    ErrorCodes.SETTINGS_TIMEOUT, ErrorCodes.STREAM_CLOSED, ErrorCodes.FRAME_SIZE_ERROR, ErrorCodes.REFUSED_STREAM,
    ErrorCodes.CANCEL, ErrorCodes.COMPRESSION_ERROR,
)
WINDOW = SettingsFrame.INITIAL_WINDOW_SIZE

CASES: dict[str, Callable[[Peer], None]] = {}


def case(name: str) -> Callable[[Callable[[Peer], None]], Callable[[Peer], None]]:
    def register(fn: Callable[[Peer], None]) -> Callable[[Peer], None]:
        assert name not in CASES, name
        CASES[name] = fn
        return fn
    return register


def settings(**values: int) -> SettingsFrame:
    ids = {"table": 1, "push": 2, "streams": 3, "window": 4, "frame": 5, "list": 6}
    return SettingsFrame(0, settings={ids[k]: v for k, v in values.items()})


def ping_answered(p: Peer) -> None:
    p.expect_alive()


def status(p: Peer, sid: int) -> str:
    return dict(p.expect_response(sid))[":status"]


def answered(p: Peer, sid: int = 1) -> None:
    """h2spec's VerifyHeadersFrame: the server answered the stream (our exact status checked)."""
    assert status(p, sid) in ("200", "405", "415")


def health_ok(p: Peer, sid: int = 1) -> None:
    """A Health/Check answered in full: 200, SERVING, grpc-status 0."""
    assert status(p, sid) == "200"
    assert p.expect_data(sid).data == b"\x00\x00\x00\x00\x02\x08\x01"  # HealthCheckResponse(status=SERVING)
    trailers = dict(p.expect_response(sid))
    assert trailers["grpc-status"] == "0"


def watching(p: Peer, sid: int = 1) -> None:
    """Open a Health/Watch stream (half-closed on our side, open on the server's) and see it answer."""
    p.unary(sid, WATCH)
    assert status(p, sid) == "200"
    p.expect_data(sid)


def ended(p: Peer, sid: int = 1) -> None:
    """A Health/Check on `sid`, answered to its end: the stream is closed on both sides."""
    p.unary(sid)
    p.expect_stream_end(sid)


# -- Generic tests for HTTP/2 server -----------------------------------------------------------


@case("generic/1/1")
def _(p: Peer) -> None:  # handshake done by the fixture: preface, SETTINGS both ways
    assert p.server_settings[SettingsFrame.MAX_CONCURRENT_STREAMS] == 4096


@case("generic/2/1")
def _(p: Peer) -> None:
    p.send(PriorityFrame(1, depends_on=0, stream_weight=255))
    ping_answered(p)


@case("generic/2/2")
def _(p: Peer) -> None:
    p.send(settings(window=0))
    p.unary(1)
    assert status(p, 1) == "200"
    p.send(WindowUpdateFrame(1, 1))
    assert p.expect_data(1).data == b"\x00"


@case("generic/2/3")
def _(p: Peer) -> None:
    p.send(settings(window=0))
    p.unary(1)
    assert status(p, 1) == "200"
    p.send(PriorityFrame(1, depends_on=0, stream_weight=255), WindowUpdateFrame(1, 1))
    assert p.expect_data(1).data == b"\x00"


@case("generic/2/4")
def _(p: Peer) -> None:
    p.send(p.headers(1, GET), RstStreamFrame(1, CANCEL))
    ping_answered(p)


@case("generic/2/5")
def _(p: Peer) -> None:
    ended(p)
    p.send(PriorityFrame(1, depends_on=0, stream_weight=255))
    ping_answered(p)


@case("generic/3.1/1")
def _(p: Peer) -> None:
    p.send(p.headers(1, CHECK, end_stream=False), p.data(1, EMPTY_MESSAGE))
    health_ok(p)


@case("generic/3.1/2")
def _(p: Peer) -> None:
    p.send(p.headers(1, CHECK, end_stream=False), p.data(1, EMPTY_MESSAGE[:2], end_stream=False),
           p.data(1, EMPTY_MESSAGE[2:]))
    health_ok(p)


@case("generic/3.1/3")
def _(p: Peer) -> None:
    p.send(p.headers(1, CHECK, end_stream=False), p.data(1, EMPTY_MESSAGE, pad=5))
    health_ok(p)


@case("generic/3.2/1")
def _(p: Peer) -> None:
    p.send(p.headers(1, GET))
    assert status(p, 1) == "405"


@case("generic/3.2/2")
def _(p: Peer) -> None:
    p.send(p.headers(1, GET, pad=8))
    assert status(p, 1) == "405"


@case("generic/3.2/3")
def _(p: Peer) -> None:
    p.send(p.headers(1, GET, depends_on=0))
    assert status(p, 1) == "405"


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_generic_3_3_priority_frames(peer: Peer, n: int) -> None:
    """generic/3.3/1-5: PRIORITY with weight 1 or 256, a dependency, exclusive, on a higher idle id; then a request."""
    frame = {1: PriorityFrame(1, depends_on=0, stream_weight=0),
             2: PriorityFrame(1, depends_on=0, stream_weight=255),
             3: PriorityFrame(3, depends_on=1, stream_weight=0),
             4: PriorityFrame(1, depends_on=0, stream_weight=0, exclusive=True),
             5: PriorityFrame(3, depends_on=0, stream_weight=255)}[n]
    peer.send(frame, peer.headers(1, GET))
    assert status(peer, 1) == "405"


@case("generic/3.4/1")
def _(p: Peer) -> None:
    p.send(p.headers(1, GET, end_stream=False), RstStreamFrame(1, CANCEL))
    ping_answered(p)


@case("generic/3.5/1")
def _(p: Peer) -> None:
    p.send(settings(table=4096, push=1, streams=100, window=65535, frame=16384, list=100))
    p.wait(lambda f: isinstance(f, SettingsFrame) and "ACK" in f.flags)


@case("generic/3.7/1")
def _(p: Peer) -> None:
    ping_answered(p)


@case("generic/3.8/1")
def _(p: Peer) -> None:
    p.send(GoAwayFrame(0, last_stream_id=0, error_code=NO_ERROR, additional_data=b"h2spec"))
    ping_answered(p)


@case("generic/3.9/1")
def _(p: Peer) -> None:
    p.send(WindowUpdateFrame(0, 1))
    ping_answered(p)


@case("generic/3.9/2")
def _(p: Peer) -> None:
    p.send(p.headers(1, GET), WindowUpdateFrame(1, 1))
    assert status(p, 1) == "405"


@case("generic/3.10/1")
def _(p: Peer) -> None:
    block = p.block(GET)
    p.send(p.headers(1, block[:5], end_headers=False), p.continuation(1, block[5:]))
    assert status(p, 1) == "405"


@case("generic/3.10/2")
def _(p: Peer) -> None:
    block = p.block(GET)
    p.send(p.headers(1, block[:5], end_headers=False), p.continuation(1, block[5:10], end_headers=False),
           p.continuation(1, block[10:]))
    assert status(p, 1) == "405"


def h2_exchange(port: int, method: str, body: bytes | None, trailers: list[tuple[str, str]] | None) -> dict[str, str]:
    """A request made entirely by h2's own state machine (sending and receiving): the response headers."""
    import socket
    import time

    import h2.config
    import h2.connection
    import h2.events

    sock = socket.create_connection(("127.0.0.1", port), timeout=15)
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    headers = [(":method", method), *GET[1:]] + ([("trailer", "x-test")] if trailers else [])
    conn.send_headers(1, headers, end_stream=body is None)
    if body is not None:
        conn.send_data(1, body, end_stream=trailers is None)
    if trailers:
        conn.send_headers(1, trailers, end_stream=True)
    sock.sendall(conn.data_to_send())
    deadline = time.monotonic() + 15
    try:
        while time.monotonic() < deadline:
            data = sock.recv(65536)
            assert data, "connection closed"
            for event in conn.receive_data(data):
                assert not isinstance(event, h2.events.ConnectionTerminated | h2.events.StreamReset), event
                if isinstance(event, h2.events.ResponseReceived):  # str fields: header_encoding="utf-8"
                    return {str(n): str(v) for n, v in event.headers}
            sock.sendall(conn.data_to_send())
    finally:
        sock.close()
    raise AssertionError("no response")


@pytest.mark.parametrize(("n", "method", "body", "trailers"), [
    (1, "GET", None, None), (2, "HEAD", None, None), (3, "POST", b"test", None), (4, "POST", b"test", [("x-test", "ok")]),
])
def test_generic_4_http_message_exchanges(port: int, n: int, method: str, body: bytes | None,
                                          trailers: list[tuple[str, str]] | None) -> None:
    """generic/4/1-4: GET, HEAD, POST, POST with trailers, all by h2 itself: non-gRPC requests get 405/415."""
    assert h2_exchange(port, method, body, trailers)[":status"] == ("405" if method != "POST" else "415")


# generic/5/1-13: one HPACK representation appended to a GET's block (h2spec's exact bytes).
HPACK_REPRESENTATIONS = {
    1: "ba",  # indexed (user-agent)
    2: "4087b505b161cc5a93849c48aca4",
    3: "400a757365722d6167656e74066832737065 63",
    4: "4006782d7465737406683273706563",
    5: "4085f2b24a84ff849c48aca4",
    6: "000a757365722d6167656e7406683273706563",
    7: "0087b505b161cc5a93849c48aca4",
    8: "0006782d7465737406683273706563",
    9: "0085f2b24a84ff849c48aca4",
    10: "100a757365722d6167656e7406683273706563",
    11: "1087b505b161cc5a93849c48aca4",
    12: "1006782d7465737406683273706563",
    13: "1085f2b24a84ff849c48aca4",
}


@pytest.mark.parametrize("n", sorted(HPACK_REPRESENTATIONS))
def test_generic_5_hpack_representations(peer: Peer, n: int) -> None:
    """generic/5/1-13."""
    peer.send(peer.headers(1, peer.block(GET) + bytes.fromhex(HPACK_REPRESENTATIONS[n].replace(" ", ""))))
    assert status(peer, 1) == "405"


@case("generic/5/14")
def _(p: Peer) -> None:
    p.encoder.header_table_size = 128  # the encoder starts its next block with a size update
    p.send(p.headers(1, GET))
    assert status(p, 1) == "405"


@case("generic/5/15")
def _(p: Peer) -> None:
    p.encoder.header_table_size = 128
    p.encoder.header_table_size = 4096  # two updates in one block
    p.send(p.headers(1, GET))
    assert status(p, 1) == "405"


# -- Hypertext Transfer Protocol Version 2 -----------------------------------------------------


def test_http2_3_5_1_preface_answered_with_settings(port: int) -> None:
    """http2/3.5/1 (and generic/1/1 without h2): the server's first frame is its SETTINGS."""
    p = Peer(port, handshake=False)
    p.send(PREFACE, settings(window=65535))
    first = p.wait(lambda f: True)
    assert isinstance(first, SettingsFrame) and "ACK" not in first.flags
    p.close()


def test_http2_3_5_2_invalid_preface_closes(port: int) -> None:
    """http2/3.5/2: not a preface: the connection is closed (no GOAWAY: the peer is not known to speak HTTP/2)."""
    p = Peer(port, handshake=False)
    p.send(b"INVALID CONNECTION PREFACE\r\n\r\n")
    p.expect_closed()
    assert not any(isinstance(f, GoAwayFrame) for f in p.received)
    p.close()


@case("http2/4.1/1")
def _(p: Peer) -> None:
    p.send(bytes.fromhex("000008160000000000") + bytes(8))  # frame type 0x16
    ping_answered(p)


@case("http2/4.1/2")
def _(p: Peer) -> None:
    p.send(bytes.fromhex("000008061600000000") + bytes(8))  # PING with undefined flags 0x16
    p.wait(lambda f: isinstance(f, PingFrame) and "ACK" in f.flags and f.opaque_data == bytes(8))


@case("http2/4.1/3")
def _(p: Peer) -> None:
    p.send(bytes.fromhex("000008061680000000") + bytes(8))  # and the reserved stream-id bit set
    p.wait(lambda f: isinstance(f, PingFrame) and "ACK" in f.flags and f.opaque_data == bytes(8))


@case("http2/4.2/1")
def _(p: Peer) -> None:
    p.send(p.headers(1, POST, end_stream=False), p.data(1, b"x" * 16384))
    assert status(p, 1) == "415"


@case("http2/4.2/2")
def _(p: Peer) -> None:
    p.send(p.headers(1, POST, end_stream=False), p.data(1, b"x" * 16385))
    p.expect_goaway(FRAME_SIZE)


@case("http2/4.2/3")
def _(p: Peer) -> None:
    p.send(p.headers(1, p.block(GET + [(f"x-dummy{i}", "x" * 4000) for i in range(5)], huffman=False)))
    p.expect_goaway(FRAME_SIZE)


@case("http2/4.3/1")
def _(p: Peer) -> None:
    p.send(bytes.fromhex("00000101050000000140"))  # a literal with incremental indexing, cut short
    p.expect_goaway(COMPRESSION)


@case("http2/4.3/2")
def _(p: Peer) -> None:
    p.send(p.headers(1, GET, end_stream=False, end_headers=False), PriorityFrame(1, depends_on=0, stream_weight=255),
           p.continuation(1, p.block([("x-dummy0", "x")])))
    p.expect_goaway(PROTOCOL)


@case("http2/4.3/3")
def _(p: Peer) -> None:
    p.send(p.headers(1, GET, end_stream=False, end_headers=False), p.headers(3, GET),
           p.continuation(1, p.block([("x-dummy0", "x")])))
    p.expect_goaway(PROTOCOL)


@case("http2/5.1/1")
def _(p: Peer) -> None:
    p.send(p.data(1, b"test"))
    p.expect_goaway(PROTOCOL)


@case("http2/5.1/2")
def _(p: Peer) -> None:
    p.send(RstStreamFrame(1, CANCEL))
    p.expect_goaway(PROTOCOL)


@case("http2/5.1/3")
def _(p: Peer) -> None:
    p.send(WindowUpdateFrame(1, 100))
    p.expect_goaway(PROTOCOL)


@case("http2/5.1/4")
def _(p: Peer) -> None:
    p.send(p.continuation(1, p.block(GET)))
    p.expect_goaway(PROTOCOL)


@case("http2/5.1/5")
def _(p: Peer) -> None:
    watching(p)
    p.send(p.data(1, b"test"))
    p.expect_rst(1, CLOSED)


@case("http2/5.1/6")
def _(p: Peer) -> None:
    watching(p)
    p.send(p.headers(1, [("x-test", "ok")]))
    p.expect_rst(1, CLOSED)


@case("http2/5.1/7")
def _(p: Peer) -> None:
    watching(p)
    p.send(p.continuation(1, p.block([("x-test", "ok")])))
    p.expect_goaway(PROTOCOL)


@case("http2/5.1/8")
def _(p: Peer) -> None:
    p.send(p.headers(1, CHECK, end_stream=False), RstStreamFrame(1, CANCEL), p.data(1, b"test"))
    p.expect_rst(1, CLOSED)


@case("http2/5.1/9")
def _(p: Peer) -> None:
    p.send(p.headers(1, CHECK, end_stream=False), RstStreamFrame(1, CANCEL), p.headers(1, [("x-test", "ok")]))
    p.expect_rst(1, CLOSED)


@case("http2/5.1/10")
def _(p: Peer) -> None:
    p.send(p.headers(1, CHECK, end_stream=False), RstStreamFrame(1, CANCEL), p.continuation(1, p.block([("x-test", "ok")])))
    p.expect_goaway(PROTOCOL)


@case("http2/5.1/11")
def _(p: Peer) -> None:
    ended(p)
    p.send(p.data(1, b"test"))
    p.expect_goaway(CLOSED)


@case("http2/5.1/12")
def _(p: Peer) -> None:
    ended(p)
    p.send(p.headers(1, CHECK))
    p.expect_goaway(CLOSED)


@case("http2/5.1/13")
def _(p: Peer) -> None:
    ended(p)
    p.send(p.continuation(1, p.block([("x-test", "ok")])))
    p.expect_goaway(PROTOCOL)


@case("http2/5.1.1/1")
def _(p: Peer) -> None:
    p.send(p.headers(2, GET))
    p.expect_goaway(PROTOCOL)


@case("http2/5.1.1/2")
def _(p: Peer) -> None:
    p.send(p.headers(5, GET), p.headers(3, GET))
    p.expect_goaway(PROTOCOL)


@case("http2/5.1.2/1")
def _(p: Peer) -> None:
    limit = p.server_settings[SettingsFrame.MAX_CONCURRENT_STREAMS]
    p.send(settings(window=0))  # no answer can finish: every stream stays open
    block = p.block(CHECK)  # indexed after the first use: later blocks are tiny
    for i in range(limit + 1):
        sid = 1 + 2 * i
        p.send(p.headers(sid, block if i == 0 else p.block(CHECK), end_stream=False), p.data(sid, EMPTY_MESSAGE))
    p.expect_rst(1 + 2 * limit, REFUSED)


@case("http2/5.3.1/1")
def _(p: Peer) -> None:
    p.send(p.headers(1, GET, depends_on=1))
    p.expect_rst(1, PROTOCOL)


@case("http2/5.3.1/2")
def _(p: Peer) -> None:
    p.send(PriorityFrame(1, depends_on=1, stream_weight=255))  # an idle stream cannot be reset: connection error
    p.expect_goaway(PROTOCOL)


def test_http2_5_3_1_priority_on_itself_of_an_open_stream_resets_it(peer: Peer) -> None:
    """http2/5.3.1/2 on an open stream: the stream error RFC 9113 asks for."""
    watching(peer)
    peer.send(PriorityFrame(1, depends_on=1, stream_weight=255))
    peer.expect_rst(1, PROTOCOL)


@case("http2/5.4.1/1")
def _(p: Peer) -> None:
    p.send(bytes.fromhex("000008060000000003") + bytes(8))  # PING on stream 3
    p.expect_goaway(PROTOCOL)


@case("http2/5.5/1")
def _(p: Peer) -> None:
    p.send(bytes.fromhex("000008160000000000") + bytes(8))  # an unknown extension frame type
    ping_answered(p)


@case("http2/5.5/2")
def _(p: Peer) -> None:
    p.send(p.headers(1, GET, end_headers=False), bytes.fromhex("000008160000000000") + bytes(8))
    p.expect_goaway(PROTOCOL)


@case("http2/6.1/1")
def _(p: Peer) -> None:
    p.send(bytes.fromhex("000004000100000000") + b"test")  # DATA on stream 0
    p.expect_goaway(PROTOCOL)


@case("http2/6.1/2")
def _(p: Peer) -> None:
    watching(p)  # half-closed (remote) for the server
    p.send(p.data(1, b"test"))
    p.expect_rst(1, CLOSED)


@case("http2/6.1/3")
def _(p: Peer) -> None:
    p.send(p.headers(1, POST + [("content-length", "4")], end_stream=False),
           bytes.fromhex("000005000900000001") + b"\x06Test")  # pad length 6 in a 5-byte payload
    p.expect_goaway(PROTOCOL)


@case("http2/6.2/1")
def _(p: Peer) -> None:
    p.send(p.headers(1, GET, end_stream=False, end_headers=False), PriorityFrame(1, depends_on=0, stream_weight=255))
    p.expect_goaway(PROTOCOL)


@case("http2/6.2/2")
def _(p: Peer) -> None:
    p.send(p.headers(1, GET, end_stream=False, end_headers=False), p.headers(3, GET))
    p.expect_goaway(PROTOCOL)


@case("http2/6.2/3")
def _(p: Peer) -> None:
    block = p.block(GET)
    p.send(len(block).to_bytes(3, "big") + b"\x01\x05" + bytes(4) + block)  # HEADERS on stream 0
    p.expect_goaway(PROTOCOL)


@case("http2/6.2/4")
def _(p: Peer) -> None:
    block = p.block(GET)
    p.send((len(block) + 1).to_bytes(3, "big") + b"\x01\x0d\x00\x00\x00\x01" + bytes([len(block) + 2]) + block)
    p.expect_goaway(PROTOCOL)  # padding longer than the frame: a connection error (RFC 9113 6.2)


@case("http2/6.3/1")
def _(p: Peer) -> None:
    p.send(bytes.fromhex("000005020000000000") + bytes.fromhex("00000000ff"))
    p.expect_goaway(PROTOCOL)


@case("http2/6.3/2")
def _(p: Peer) -> None:
    p.send(p.headers(1, GET), bytes.fromhex("000004020000000001") + bytes.fromhex("80000001"))
    p.expect_goaway(FRAME_SIZE)


@case("http2/6.4/1")
def _(p: Peer) -> None:
    p.send(bytes.fromhex("000004030000000000") + CANCEL.to_bytes(4, "big"))
    p.expect_goaway(PROTOCOL)


@case("http2/6.4/2")
def _(p: Peer) -> None:
    p.send(RstStreamFrame(1, CANCEL))
    p.expect_goaway(PROTOCOL)


@case("http2/6.4/3")
def _(p: Peer) -> None:
    p.send(p.headers(1, GET), bytes.fromhex("000003030000000001") + bytes(3))
    p.expect_goaway(FRAME_SIZE)


@case("http2/6.5/1")
def _(p: Peer) -> None:
    p.send(bytes.fromhex("000001040100000000") + b"\x00")
    p.expect_goaway(FRAME_SIZE)


@case("http2/6.5/2")
def _(p: Peer) -> None:
    p.send(bytes.fromhex("000006040000000001") + bytes.fromhex("000300000064"))
    p.expect_goaway(PROTOCOL)


@case("http2/6.5/3")
def _(p: Peer) -> None:
    p.send(bytes.fromhex("000003040000000000") + bytes.fromhex("000300"))
    p.expect_goaway(FRAME_SIZE)


@pytest.mark.parametrize(("n", "values", "code"), [
    (1, {"push": 2}, PROTOCOL), (2, {"window": 2**31}, FLOW), (3, {"frame": 16383}, PROTOCOL), (4, {"frame": 2**24}, PROTOCOL),
])
def test_http2_6_5_2_defined_settings(peer: Peer, n: int, values: dict[str, int], code: int) -> None:
    """http2/6.5.2/1-4: out-of-range SETTINGS values are connection errors."""
    payload = b"".join({"push": 2, "window": 4, "frame": 5}[k].to_bytes(2, "big") + v.to_bytes(4, "big") for k, v in values.items())
    peer.send(len(payload).to_bytes(3, "big") + b"\x04\x00" + bytes(4) + payload)
    peer.expect_goaway(code)


@case("http2/6.5.2/5")
def _(p: Peer) -> None:
    p.send(bytes.fromhex("000006040000000000") + bytes.fromhex("00ff00000001"))
    p.wait(lambda f: isinstance(f, SettingsFrame) and "ACK" in f.flags)
    ping_answered(p)


@case("http2/6.5.3/1")
def _(p: Peer) -> None:
    p.send(bytes.fromhex("00000c040000000000") + bytes.fromhex("000400000064" "000400000001"))
    p.unary(1)
    assert len(p.expect_data(1).data) == 1  # the last value holds


@case("http2/6.5.3/2")
def _(p: Peer) -> None:
    p.send(settings(push=0))
    p.wait(lambda f: isinstance(f, SettingsFrame) and "ACK" in f.flags)


@case("http2/6.7/1")
def _(p: Peer) -> None:
    p.send(PingFrame(0, b"h2spec\0\0"))
    p.wait(lambda f: isinstance(f, PingFrame) and "ACK" in f.flags and f.opaque_data == b"h2spec\0\0")


@case("http2/6.7/2")
def _(p: Peer) -> None:
    p.send(PingFrame(0, b"invalid\0", flags=["ACK"]), PingFrame(0, b"h2spec\0\0"))
    f = p.wait(lambda f: isinstance(f, PingFrame) and "ACK" in f.flags)
    assert isinstance(f, PingFrame) and f.opaque_data == b"h2spec\0\0"  # an ACK is not answered


@case("http2/6.7/3")
def _(p: Peer) -> None:
    p.send(bytes.fromhex("000008060000000001") + bytes(8))
    p.expect_goaway(PROTOCOL)


@case("http2/6.7/4")
def _(p: Peer) -> None:
    p.send(bytes.fromhex("000006060000000000") + bytes(6))
    p.expect_goaway(FRAME_SIZE)


@case("http2/6.8/1")
def _(p: Peer) -> None:
    p.send(bytes.fromhex("000008070000000001") + bytes(8))
    p.expect_goaway(PROTOCOL)


@case("http2/6.9/1")
def _(p: Peer) -> None:
    p.send(bytes.fromhex("000004080000000000") + bytes(4))
    p.expect_goaway(PROTOCOL)


@case("http2/6.9/2")
def _(p: Peer) -> None:
    p.send(p.headers(1, CHECK, end_stream=False), bytes.fromhex("000004080000000001") + bytes(4))
    p.expect_rst(1, PROTOCOL)


@case("http2/6.9/3")
def _(p: Peer) -> None:
    p.send(bytes.fromhex("000003080000000000") + bytes.fromhex("000001"))
    p.expect_goaway(FRAME_SIZE)


@case("http2/6.9.1/1")
def _(p: Peer) -> None:
    p.send(settings(window=1))
    p.unary(1)
    assert p.expect_data(1).data == b"\x00"


@case("http2/6.9.1/2")
def _(p: Peer) -> None:
    p.send(WindowUpdateFrame(0, 2**31 - 1), WindowUpdateFrame(0, 2**31 - 1))
    p.expect_goaway(FLOW)


@case("http2/6.9.1/3")
def _(p: Peer) -> None:
    p.send(p.headers(1, CHECK, end_stream=False), WindowUpdateFrame(1, 2**31 - 1), WindowUpdateFrame(1, 2**31 - 1))
    p.expect_rst(1, FLOW)


@case("http2/6.9.2/1")
def _(p: Peer) -> None:
    p.send(settings(window=0))
    p.unary(1)
    assert status(p, 1) == "200"
    p.send(settings(window=1))
    assert p.expect_data(1).data == b"\x00"


@case("http2/6.9.2/2")
def _(p: Peer) -> None:
    p.send(settings(window=3))
    p.unary(1)
    assert p.expect_data(1).data == b"\x00\x00\x00"
    p.send(settings(window=2), WindowUpdateFrame(1, 2))  # window 3-3 -> -1 -> 1
    assert p.expect_data(1).data == b"\x00"


@case("http2/6.9.2/3")
def _(p: Peer) -> None:
    p.send(bytes.fromhex("000006040000000000") + bytes.fromhex("000480000000"))
    p.expect_goaway(FLOW)


@case("http2/6.10/1")
def _(p: Peer) -> None:
    p.send(p.headers(1, GET, end_headers=False), p.continuation(1, p.block([("x-dummy0", "x" * 100)]), end_headers=False),
           p.continuation(1, p.block([("x-dummy0", "x" * 100)])))  # blocks encoded in wire order: tables in step
    assert status(p, 1) == "405"


@case("http2/6.10/2")
def _(p: Peer) -> None:
    p.send(p.headers(1, POST, end_stream=False, end_headers=False), p.continuation(1, p.block([("x-dummy0", "x")]), end_headers=False),
           p.data(1, b"test"))
    p.expect_goaway(PROTOCOL)


@case("http2/6.10/3")
def _(p: Peer) -> None:
    block = p.block([("x-dummy0", "x")])
    p.send(p.headers(1, GET, end_headers=False), len(block).to_bytes(3, "big") + b"\x09\x04" + bytes(4) + block)
    p.expect_goaway(PROTOCOL)


@case("http2/6.10/4")
def _(p: Peer) -> None:
    p.send(p.headers(1, GET), p.continuation(1, p.block([("x-dummy0", "x")])))
    p.expect_goaway(PROTOCOL)


@case("http2/6.10/5")
def _(p: Peer) -> None:
    p.send(p.headers(1, GET, end_headers=False), p.continuation(1, p.block([("x-dummy0", "x")])),
           p.continuation(1, p.block([("x-dummy1", "x")])))
    p.expect_goaway(PROTOCOL)


@case("http2/6.10/6")
def _(p: Peer) -> None:
    p.send(p.headers(1, POST, end_stream=False, end_headers=False), p.data(1, b"test"))
    p.expect_goaway(PROTOCOL)


@case("http2/7/1")
def _(p: Peer) -> None:
    p.send(GoAwayFrame(0, last_stream_id=0, error_code=0xFF))
    ping_answered(p)


@case("http2/7/2")
def _(p: Peer) -> None:
    p.send(p.headers(1, POST, end_stream=False), RstStreamFrame(1, 0xFF))
    ping_answered(p)


@case("http2/8.1/1")
def _(p: Peer) -> None:
    p.send(p.headers(1, CHECK, end_stream=False), p.data(1, b"test", end_stream=False),
           p.headers(1, [("x-test", "ok")], end_stream=False))
    p.expect_rst(1, PROTOCOL)


# http2/8.1.2/1, 8.1.2.1/1,2,4, 8.1.2.2/1-2, 8.1.2.3/1-7: malformed request header lists.
MALFORMED = {
    "http2/8.1.2/1": [*GET, ("X-TEST", "ok")],
    "http2/8.1.2.1/1": [*GET, (":test", "ok")],
    "http2/8.1.2.1/2": [*GET, (":status", "200")],
    "http2/8.1.2.1/4": [*GET[:3], ("x-test", "ok"), GET[3]],
    "http2/8.1.2.2/1": [*GET, ("connection", "keep-alive")],
    "http2/8.1.2.2/2": [*GET, ("trailers", "test"), ("te", "trailers, deflate")],
    "http2/8.1.2.3/1": [GET[0], GET[1], (":path", ""), GET[3]],
    "http2/8.1.2.3/2": GET[1:],
    "http2/8.1.2.3/3": [GET[0], GET[2], GET[3]],
    "http2/8.1.2.3/4": [GET[0], GET[1], GET[3]],
    "http2/8.1.2.3/5": [*GET, (":method", "GET")],
    "http2/8.1.2.3/6": [*GET, (":scheme", "http")],
    "http2/8.1.2.3/7": [*GET, (":path", "/")],
    # Beyond h2spec, RFC 9113 8.2.1 and 8.2.2:
    "rfc9113/8.2.1/cr": [*GET, ("x-test", "a\rb")],
    "rfc9113/8.2.1/space": [*GET, ("x-test", " padded")],
    "rfc9113/8.2.1/name-colon": [*GET, ("x:test", "ok")],
    "rfc9113/8.2.2/upgrade": [*GET, ("upgrade", "h2c")],
    "rfc9113/8.2.2/transfer-encoding": [*GET, ("transfer-encoding", "chunked")],
    "rfc9113/8.3.1/connect-with-path": [(":method", "CONNECT"), GET[1], GET[2], GET[3]],
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_requests_are_stream_errors(peer: Peer, name: str) -> None:
    """A malformed request: RST_STREAM PROTOCOL_ERROR, no answer on it, and the connection serves on."""
    peer.send(peer.headers(1, MALFORMED[name]))
    peer.expect_rst(1, PROTOCOL)
    assert not [f for f in peer.received if f.stream_id == 1 and not isinstance(f, RstStreamFrame)]
    peer.unary(3)
    health_ok(peer, 3)


@case("http2/8.1.2.1/3")
def _(p: Peer) -> None:
    p.send(p.headers(1, CHECK, end_stream=False), p.data(1, b"test", end_stream=False),
           p.headers(1, [(":method", "POST")], end_stream=False))
    p.expect_rst(1, PROTOCOL)


@case("http2/8.1.2.6/1")
def _(p: Peer) -> None:
    p.send(p.headers(1, [*CHECK, ("content-length", "1")], end_stream=False), p.data(1, b"test"))
    p.expect_rst(1, PROTOCOL)


@case("http2/8.1.2.6/2")
def _(p: Peer) -> None:
    p.send(p.headers(1, [*CHECK, ("content-length", "1")], end_stream=False), p.data(1, b"test", end_stream=False),
           p.data(1, b"test"))
    p.expect_rst(1, PROTOCOL)


def test_content_length_matching_the_body_is_served(peer: Peer) -> None:
    peer.send(peer.headers(1, [*CHECK, ("content-length", "5")], end_stream=False), peer.data(1, EMPTY_MESSAGE))
    health_ok(peer)


@case("http2/8.2/1")
def _(p: Peer) -> None:
    p.send(PushPromiseFrame(1, promised_stream_id=3, data=p.block(GET), flags=["END_HEADERS"]))
    p.expect_goaway(PROTOCOL)


# -- HPACK: Header Compression for HTTP/2 -------------------------------------------------------

HPACK_ERRORS = {
    "hpack/2.3.3/1": ("", "c6"),  # indexed, index 70: past both tables
    "hpack/2.3.3/2": ("", "7f0700"),  # literal with an indexed name past both tables
    "hpack/4.2/1": ("", "21"),  # table size update after a field
    "hpack/5.2/1": ("", "0085f2b24a84ff844950 9fff"),  # Huffman padding over 7 bits
    "hpack/5.2/2": ("", "0085f2b24a84ff83495090"),  # Huffman padding with zeros
    "hpack/5.2/3": ("", "0085f2b24a84ff874951fffffffa7f"),  # EOS inside a string
    "hpack/6.1/1": ("", "80"),  # index 0
    "hpack/6.3/1": ("3fe21f", ""),  # size update to 4097, above SETTINGS_HEADER_TABLE_SIZE
}


@pytest.mark.parametrize("name", sorted(HPACK_ERRORS))
def test_hpack_errors_are_compression_errors(peer: Peer, name: str) -> None:
    before, after = (bytes.fromhex(x.replace(" ", "")) for x in HPACK_ERRORS[name])
    peer.send(peer.headers(1, before + peer.block(GET) + after))
    peer.expect_goaway(COMPRESSION)


# -- the table-driven cases above ---------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CASES))
def test_h2spec_case(peer: Peer, name: str) -> None:
    CASES[name](peer)


def test_every_h2spec_case_is_covered() -> None:
    """146 cases: each registered above, parametrized, or a test of its own (counted by hand below)."""
    parametrized = 5 + 4 + 13 + 4  # generic/3.3, generic/4, generic/5/1-13, http2/6.5.2/1-4
    own_tests = 2  # http2/3.5/1-2
    malformed = len([k for k in MALFORMED if not k.startswith("rfc")])
    hpack = len(HPACK_ERRORS)
    assert len(CASES) + parametrized + own_tests + malformed + hpack == 146, len(CASES)



def test_late_frames_after_the_peers_reset_get_one_answer(peer: Peer) -> None:
    """DATA after the client's own RST_STREAM: one RST_STREAM STREAM_CLOSED, then ignored (no
    answer per frame a peer can send for free)."""
    peer.send(peer.headers(1, CHECK, end_stream=False), RstStreamFrame(1, CANCEL),
              *[peer.data(1, b"x", end_stream=False) for _ in range(50)])
    peer.expect_rst(1, CLOSED)  # then a PING round trip
    assert sum(isinstance(f, RstStreamFrame) for f in peer.received) == 1
