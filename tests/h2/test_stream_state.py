"""The stream state machine (registry.h2.stream_state) against python-hyper's h2 as the oracle:
every (state, input) pair of the table, then whole connections driven by h2's own client, whose
view of each stream must mirror ours frame after frame."""

from __future__ import annotations

import random

import pytest
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.exceptions import ProtocolError, StreamClosedError
from h2.stream import H2StreamStateMachine, StreamInputs
from h2.stream import StreamState as H2State

from registry.grpcwire import HEAD, TRAILERS_OK
from registry.h2.connection import ServerConnection
from registry.h2.events import DataReceived, ErrorCode, RequestReceived
from registry.h2.frames import frame
from registry.h2.stream_state import (
    ILLEGAL,
    NEXT,
    RECEIVING,
    SENDING,
    TRANSITIONS,
    Illegal,
    StreamInput,
    StreamState,
    StreamStateError,
    transition,
)
from registry.h2.streams import LATE_FRAME, Closed
from tests.h2.framebytes import block, parse_frames

# Where RFC 9113 says otherwise than h2 4.x, we follow the RFC; each pair says why.
RFC_OVER_H2 = {
    # Section 5.1, idle: "any frame other than HEADERS or PRIORITY ... connection error PROTOCOL_ERROR";
    # h2 resets the stream with STREAM_CLOSED instead.
    (StreamState.IDLE, StreamInput.RECV_DATA),
    # Section 5.1, reserved: frames other than HEADERS, RST_STREAM, PRIORITY (remote; RST_STREAM,
    # PRIORITY, WINDOW_UPDATE local) are a connection error PROTOCOL_ERROR; h2: STREAM_CLOSED.
    (StreamState.RESERVED_REMOTE, StreamInput.RECV_DATA),
    (StreamState.RESERVED_LOCAL, StreamInput.RECV_DATA),
    # Section 6.6: a PUSH_PROMISE on a stream neither open nor half-closed (local) is a connection
    # error PROTOCOL_ERROR; h2 resets a half-closed (remote) stream with STREAM_CLOSED.
    (StreamState.HALF_CLOSED_REMOTE, StreamInput.RECV_PUSH_PROMISE),
}


def h2_outcome(state: StreamState, event: StreamInput) -> StreamState | ErrorCode:
    """What h2's machine does with `event` in `state`: the next state if either role may do it
    (role rules are the connection's, in h2 too), else the error code it raises."""
    outcomes: list[StreamState | ErrorCode] = []
    for client in [None] if state == StreamState.IDLE else [False, True]:
        m = H2StreamStateMachine(1)
        m.state = H2State(int(state))
        m.client = client
        if state != StreamState.IDLE:  # a stream past idle has seen its request's headers
            m.headers_sent = m.headers_received = True
        try:
            m.process_input(StreamInputs[event.name])
        except StreamClosedError:
            outcomes.append(ErrorCode.STREAM_CLOSED)
        except ProtocolError:
            outcomes.append(ErrorCode.PROTOCOL_ERROR)
        else:
            outcomes.append(StreamState(int(m.state)))
    legal = [o for o in outcomes if isinstance(o, StreamState)]
    return legal[0] if legal else outcomes[0]


def ours(state: StreamState, event: StreamInput) -> StreamState | ErrorCode:
    try:
        return transition(state, event)
    except StreamStateError as exc:
        return exc.illegal.code


@pytest.mark.parametrize("state", list(StreamState), ids=lambda s: s.name)
def test_every_pair_matches_h2(state: StreamState) -> None:
    for event in StreamInput:
        theirs, mine = h2_outcome(state, event), ours(state, event)
        if (state, event) in RFC_OVER_H2:
            assert theirs != mine, f"{state.name} {event.name}: h2 now agrees, drop it from RFC_OVER_H2"
            assert mine == ErrorCode.PROTOCOL_ERROR and ILLEGAL[(state, event)].connection
        else:
            assert theirs == mine, f"{state.name} {event.name}: h2 {theirs!r}, ours {mine!r}"


def test_table_is_whole_and_its_indexes_agree() -> None:
    assert len(TRANSITIONS) + len(ILLEGAL) == len(StreamState) * len(StreamInput)
    for state in StreamState:
        for event in StreamInput:
            nxt = TRANSITIONS.get((state, event))
            assert NEXT[state][event] == (-1 if nxt is None else nxt)
        assert SENDING[state] == (state in (StreamState.OPEN, StreamState.HALF_CLOSED_REMOTE))
        assert RECEIVING[state] == (state in (StreamState.OPEN, StreamState.HALF_CLOSED_LOCAL))


def test_illegal_inputs_name_the_rfc_error() -> None:
    with pytest.raises(StreamStateError, match="RECV_DATA in state HALF_CLOSED_REMOTE: stream error STREAM_CLOSED"):
        transition(StreamState.HALF_CLOSED_REMOTE, StreamInput.RECV_DATA)
    assert ILLEGAL[(StreamState.IDLE, StreamInput.RECV_RST_STREAM)] == Illegal(True, ErrorCode.PROTOCOL_ERROR)
    assert ILLEGAL[(StreamState.HALF_CLOSED_REMOTE, StreamInput.RECV_END_STREAM)] == Illegal(True, ErrorCode.PROTOCOL_ERROR)


# -- whole connections: h2's client against our server, states compared after every step -------

REQUEST = [(":method", "POST"), (":scheme", "http"), (":path", "/svc/M"), (":authority", "x"),
           ("content-type", "application/grpc"), ("te", "trailers")]
MIRROR = {  # the client's view of a stream, seen from the server's side
    H2State.IDLE: StreamState.IDLE,
    H2State.OPEN: StreamState.OPEN,
    H2State.HALF_CLOSED_LOCAL: StreamState.HALF_CLOSED_REMOTE,
    H2State.HALF_CLOSED_REMOTE: StreamState.HALF_CLOSED_LOCAL,
    H2State.CLOSED: StreamState.CLOSED,
}


class Pair:
    """h2's client and our ServerConnection, bytes handed across in memory."""

    def __init__(self) -> None:
        self.client = H2Connection(H2Configuration(client_side=True, header_encoding="utf-8"))
        self.server = ServerConnection()
        self.client.initiate_connection()
        self.streams: dict[int, object] = {}  # h2's stream objects: h2 forgets closed ones
        self.headers_sent: set[int] = set()  # streams our server sent response headers on
        self.exchange()

    def exchange(self) -> None:
        for _ in range(4):
            out = self.client.data_to_send()
            if out:
                for event in self.server.receive(out):
                    if isinstance(event, DataReceived) and event.data:
                        self.server.acknowledge_received_data(event.stream_id, len(event.data))
            back = self.server.data_to_send()
            if back:
                for theirs in self.client.receive_data(back):
                    sid, data = getattr(theirs, "stream_id", None), getattr(theirs, "data", None)
                    if sid and data:
                        self.client.acknowledge_received_data(len(data), sid)
            if not out and not back:
                return

    def client_state(self, sid: int) -> StreamState:
        stream = self.streams.get(sid)
        return MIRROR[stream.state_machine.state] if stream is not None else StreamState.IDLE  # type: ignore[attr-defined]


def client_step(p: Pair, rng: random.Random, sids: list[int]) -> None:
    choice = rng.randrange(4)
    if choice == 0 or not sids:
        sid = p.client.get_next_available_stream_id()
        p.client.send_headers(sid, REQUEST, end_stream=rng.random() < 0.3)
        p.streams[sid] = p.client.streams[sid]
        sids.append(sid)
        return
    sid = rng.choice(sids)
    # Only what the client may do in its state: h2 refuses the rest, but closes its own copy of
    # the stream as it does (its machine moves to CLOSED on any illegal input).
    state = p.client_state(sid)  # as the server sees it: the client may send while we receive
    if state == StreamState.CLOSED or (choice != 3 and not RECEIVING[state]):
        return
    if choice == 1:
        p.client.send_data(sid, b"\0\0\0\0\1x", end_stream=rng.random() < 0.5)
    elif choice == 2:
        p.client.end_stream(sid)
    else:
        p.client.reset_stream(sid, rng.choice([0, 8]))


def server_step(p: Pair, rng: random.Random, sids: list[int]) -> None:
    if not sids:
        return
    sid = rng.choice(sids)
    choice = rng.randrange(4)
    if not p.server.is_open(sid) and choice != 3:
        return  # our sends on a stream we may not send on are dropped: nothing to compare
    if choice == 0 and sid not in p.headers_sent:
        p.server.send_headers(sid, HEAD)
        p.headers_sent.add(sid)
    elif choice == 1:  # trailers, or a trailers-only answer
        if sid in p.headers_sent:
            p.server.send_trailers(sid, TRAILERS_OK)
        else:
            p.server.send_headers(sid, HEAD + TRAILERS_OK, end_stream=True)
    elif choice == 2 and sid not in p.headers_sent:
        p.server.respond(sid, HEAD, b"\0\0\0\0\0", TRAILERS_OK)
    elif choice == 3:
        p.server.reset(sid, ErrorCode.CANCEL)


@pytest.mark.parametrize("seed", range(12))
def test_states_mirror_h2_client_on_a_whole_connection(seed: int) -> None:
    rng = random.Random(seed)
    p = Pair()
    sids: list[int] = []
    seen: set[StreamState] = set()
    for _ in range(60):
        (client_step if rng.random() < 0.6 else server_step)(p, rng, sids)
        p.exchange()
        assert not p.server.ended, "our server ended the connection on a legal client"
        for sid in sids:
            ours_now = p.server.stream_state(sid)
            seen.add(ours_now)
            assert ours_now == p.client_state(sid), f"stream {sid}: ours {ours_now.name}, h2 {p.client_state(sid).name}"
    assert StreamState.CLOSED in seen and StreamState.OPEN in seen


def test_request_received_opens_and_end_stream_half_closes() -> None:
    p = Pair()
    p.client.send_headers(1, REQUEST)
    p.streams[1] = p.client.streams[1]
    events = p.server.receive(p.client.data_to_send())
    assert any(isinstance(e, RequestReceived) for e in events)
    assert p.server.stream_state(1) == StreamState.OPEN
    assert p.server.stream_state(3) == StreamState.IDLE
    p.client.end_stream(1)
    p.exchange()
    assert p.server.stream_state(1) == StreamState.HALF_CLOSED_REMOTE
    p.server.respond(1, HEAD, b"\0\0\0\0\0", TRAILERS_OK)
    p.exchange()
    assert p.server.stream_state(1) == StreamState.CLOSED == p.client_state(1)


# -- the connection answers a peer's frame as the table says ------------------------------------

HEADERS_FRAME, DATA_FRAME, RST_FRAME, WINDOW_FRAME, GOAWAY_FRAME = 1, 0, 3, 8, 7
CLOSED_BY = ["ended", "reset_sent", "reset_received"]


def server_in(state: str) -> tuple[ServerConnection, StreamState]:
    """A server whose stream 1 is in `state` (a StreamState name, or how a closed stream closed)."""
    c = ServerConnection()
    c.receive(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0) + frame(4, 1, 0))
    if state == "IDLE":
        c.data_to_send()
        return c, StreamState.IDLE
    end = state in ("HALF_CLOSED_REMOTE", "ended")
    c.receive(frame(HEADERS_FRAME, 0x4 | (0x1 if end else 0), 1, block(REQUEST)))
    if state == "HALF_CLOSED_LOCAL":
        c.send_headers(1, HEAD + TRAILERS_OK, end_stream=True)
    elif state == "ended":
        c.respond(1, HEAD, b"\0\0\0\0\0", TRAILERS_OK)
    elif state == "reset_sent":
        c.reset(1, ErrorCode.CANCEL)
    elif state == "reset_received":
        c.receive(frame(RST_FRAME, 0, 1, bytes(4)))
    c.data_to_send()
    now = c.stream_state(1)
    assert now == (StreamState.CLOSED if state in CLOSED_BY else StreamState[state])
    return c, now


def expected(state: str, now: StreamState, event: StreamInput) -> StreamState | tuple[bool, ErrorCode] | None:
    """The table's verdict: the next state, (connection?, code), or None for "ignored"."""
    if state in CLOSED_BY and event in (StreamInput.RECV_HEADERS, StreamInput.RECV_DATA):
        late = LATE_FRAME[{"ended": Closed.ENDED, "reset_sent": Closed.RESET_SENT,
                           "reset_received": Closed.RESET_RECEIVED}[state]]
        return None if late is None else (late.connection, late.code)
    try:
        nxt = transition(now, event)
        if event == StreamInput.RECV_HEADERS and now != StreamState.IDLE:  # trailers: END_STREAM with them
            nxt = transition(nxt, StreamInput.RECV_END_STREAM)
        return nxt
    except StreamStateError as exc:
        return exc.illegal.connection, exc.illegal.code


@pytest.mark.parametrize("state", ["IDLE", "OPEN", "HALF_CLOSED_REMOTE", "HALF_CLOSED_LOCAL", *CLOSED_BY])
def test_the_connection_answers_each_peer_frame_as_the_table_says(state: str) -> None:
    frames = {
        StreamInput.RECV_HEADERS: frame(HEADERS_FRAME, 0x5, 1, block([("x-trailer", "1")]))
        if state != "IDLE" else frame(HEADERS_FRAME, 0x4, 1, block(REQUEST)),
        StreamInput.RECV_DATA: frame(DATA_FRAME, 0, 1, b"x"),
        StreamInput.RECV_RST_STREAM: frame(RST_FRAME, 0, 1, bytes(4)),
        StreamInput.RECV_WINDOW_UPDATE: frame(WINDOW_FRAME, 0, 1, (1).to_bytes(4, "big")),
    }
    for event, data in frames.items():
        c, now = server_in(state)
        want = expected(state, now, event)
        c.receive(data)
        out = [(t, sid, payload) for t, _, sid, payload in parse_frames(c.data_to_send())]
        answers = [(True, ErrorCode(int.from_bytes(p[4:8], "big"))) for t, _, p in out if t == GOAWAY_FRAME]
        answers += [(False, ErrorCode(int.from_bytes(p, "big"))) for t, sid, p in out if t == RST_FRAME and sid == 1]
        what = f"{event.name} in {state}"
        if isinstance(want, tuple):
            assert answers == [want], f"{what}: want {want}, sent {answers}"
        else:
            assert answers == [], f"{what}: legal or ignored, yet the server sent {answers}"
            if want is not None:
                assert c.stream_state(1) == want, f"{what}: {c.stream_state(1).name}, want {want.name}"
