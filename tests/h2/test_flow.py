"""Flow control toward the peer (issue 11 item 4): a SETTINGS_INITIAL_WINDOW_SIZE change costs O(1)
whatever the number of open streams, windows stay exact (checked against a naive model that walks
every stream), and RFC 9113 6.9.2's overflow is still a connection error FLOW_CONTROL_ERROR."""

from __future__ import annotations

import time

from hypothesis import given, settings
from hypothesis import strategies as st

from registry.h2.connection import PREFACE, ServerConnection
from registry.h2.events import ConnectionEnded, ErrorCode, StreamReset
from registry.h2.frames import DATA, HEADERS, RST_STREAM, SETTINGS, WINDOW_UPDATE, frame
from tests.h2.framebytes import block, parse_frames

RST, WINDOW = RST_STREAM, WINDOW_UPDATE
MAX = 2**31 - 1
REQUEST = [(":method", "POST"), (":scheme", "http"), (":path", "/svc/M"), (":authority", "x")]
BLOCK = block(REQUEST)


def initial_window(value: int) -> bytes:
    return frame(SETTINGS, 0, 0, (4).to_bytes(2, "big") + value.to_bytes(4, "big"))


def window_update(sid: int, inc: int) -> bytes:
    return frame(WINDOW, 0, sid, inc.to_bytes(4, "big"))


def connection_with(streams: int, *, queued: bool) -> ServerConnection:
    """`streams` open streams (requests whole, answers begun); with `queued`, each has output
    waiting behind a zero window, as a client that never reads would leave it."""
    c = ServerConnection(max_concurrent_streams=streams + 1)
    c.receive(PREFACE + initial_window(0 if queued else 65_535) + window_update(0, MAX - 65_535))
    c.receive(b"".join(frame(HEADERS, 0x5, 2 * i + 1, BLOCK) for i in range(streams)))
    for i in range(streams):
        c.send_headers(2 * i + 1, b"\x88")
        if queued:
            c.send_data(2 * i + 1, b"answer")
    c.data_to_send()
    assert c.open_streams == streams
    return c


def cost_per_settings_frame(c: ServerConnection, values: tuple[int, ...]) -> float:
    """Best of 5 runs of 400 SETTINGS frames cycling through `values` (seconds per frame)."""
    wire = b"".join(initial_window(v) for v in values) * (400 // len(values))
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        events = c.receive(wire)
        best = min(best, time.perf_counter() - t0)
        assert not events and not c.ended
        c.data_to_send()
    return best / (400 // len(values) * len(values))


def test_settings_cost_is_flat_with_idle_streams() -> None:
    """The attack of issue 11 item 4: with 4,000 open streams each SETTINGS frame walked them all
    (~96 us per 15-byte frame). Now a frame costs the same with 10 streams or 4,000."""
    few = cost_per_settings_frame(connection_with(10, queued=False), (65_536, 65_535))
    many = cost_per_settings_frame(connection_with(4000, queued=False), (65_536, 65_535))
    assert many < 3 * few, (many, few)


def test_settings_cost_is_flat_with_stalled_streams() -> None:
    """Streams with output queued behind their windows are woken only when their window opens:
    raising the initial window from -6 to 0 (still nothing to send) wakes none of them."""
    few, many = connection_with(10, queued=True), connection_with(4000, queued=True)
    for c in (few, many):  # every stream: window -6 (6 bytes sent at window 6, then the window fell by 12)
        c.receive(initial_window(6))
        assert sum(len(p) for t, _, _, p in parse_frames(c.data_to_send()) if t == DATA) == 6 * c.open_streams
        c.send_data(1, b"more")
        c.receive(initial_window(0))
    assert cost_per_settings_frame(many, (0, 0)) < 3 * cost_per_settings_frame(few, (0, 0))


def test_raising_the_initial_window_past_a_stream_credit_is_a_connection_error() -> None:
    """RFC 9113 6.9.2: a change that puts any stream window above 2^31-1 is FLOW_CONTROL_ERROR."""
    c = connection_with(3, queued=False)
    c.receive(window_update(3, MAX - 65_535 - 10))  # stream 3's window: 2^31-1 - 10
    assert c.receive(initial_window(65_535 + 10)) == []  # exactly 2^31-1: allowed
    events = c.receive(initial_window(65_535 + 11))
    assert isinstance(events[-1], ConnectionEnded) and events[-1].error_code == ErrorCode.FLOW_CONTROL_ERROR


def test_credit_that_was_spent_or_closed_raises_no_false_overflow() -> None:
    c = connection_with(3, queued=False)
    c.receive(window_update(1, MAX - 65_535))  # stream 1 at the maximum...
    c.send_data(1, bytes(100_000))  # ...spends 100,000 of it
    c.receive(window_update(3, MAX - 65_535))  # stream 3 at the maximum...
    c.receive(frame(RST, 0, 3, bytes(4)))  # ...is reset by the peer
    c.data_to_send()
    assert c.receive(initial_window(65_535 + 100_000)) == []  # stream 1 back at 2^31-1: fine
    events = c.receive(initial_window(65_535 + 100_001))
    assert isinstance(events[-1], ConnectionEnded) and events[-1].error_code == ErrorCode.FLOW_CONTROL_ERROR


ops = st.lists(
    st.one_of(
        st.tuples(st.just("settings"), st.one_of(st.integers(0, 70_000), st.integers(MAX - 200_000, MAX))),
        st.tuples(st.just("wu"), st.sampled_from([1, 3, 5]), st.one_of(st.integers(1, 70_000), st.integers(MAX - 200_000, MAX))),
        st.tuples(st.just("send"), st.sampled_from([1, 3, 5]), st.integers(1, 40_000)),
        st.tuples(st.just("rst"), st.sampled_from([1, 3, 5]), st.just(0)),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(ops)
def test_windows_match_a_model_that_walks_every_stream(program: list[tuple[object, ...]]) -> None:
    """Lazy windows (initial window + per-stream credit) against the RFC's literal rule (every
    stream's window moved by every change), on random SETTINGS / WINDOW_UPDATE / send / reset."""
    c = ServerConnection()
    c.receive(PREFACE + window_update(0, MAX - 65_535) + b"".join(frame(HEADERS, 0x5, s, BLOCK) for s in (1, 3, 5)))
    for s in (1, 3, 5):
        c.send_headers(s, b"\x88")
    c.data_to_send()
    peer_window, window, queued = 65_535, {1: 65_535, 3: 65_535, 5: 65_535}, {1: 0, 3: 0, 5: 0}
    sent = dict.fromkeys(window, 0)

    def flush(s: int) -> None:
        n = min(queued[s], max(window[s], 0))
        window[s] -= n
        queued[s] -= n
        sent[s] += n

    for op in program:
        expect_end = False
        if op[0] == "settings":
            value = int(op[1])  # type: ignore[call-overload]
            delta = value - peer_window
            expect_end = delta > 0 and any(w + delta > MAX for w in window.values())
            events = c.receive(initial_window(value))
            if not expect_end:
                peer_window = value
                for s in window:
                    window[s] += delta
                    flush(s)
        elif op[0] == "wu":
            s, inc = int(op[1]), int(op[2])  # type: ignore[call-overload]
            events = c.receive(window_update(s, inc))
            if s in window:
                window[s] += inc
                if window[s] > MAX:
                    assert events == [StreamReset(s, ErrorCode.FLOW_CONTROL_ERROR)]
                    del window[s]
                else:
                    flush(s)
        elif op[0] == "send":
            s, n = int(op[1]), int(op[2])  # type: ignore[call-overload]
            events = []
            c.send_data(s, bytes(n))
            if s in window:
                queued[s] += n
                flush(s)
        else:
            s = int(op[1])  # type: ignore[call-overload]
            events = c.receive(frame(RST, 0, s, bytes(4)))
            window.pop(s, None)
        assert c.ended == expect_end, (op, window)
        for t, _, sid, payload in parse_frames(c.data_to_send()):
            if t == DATA:
                sent[sid] -= len(payload)
        assert all(v == 0 for v in sent.values()), (op, sent)
        if expect_end:
            assert isinstance(events[-1], ConnectionEnded) and events[-1].error_code == ErrorCode.FLOW_CONTROL_ERROR
            return
        for s in window:
            assert c.pending_bytes(s) == queued[s], (op, s)
