"""Serf message codec against the golden bytes of the wire reference (go-msgpack 0.5.x output)."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from registry.serf import messages as M

GOLDEN: dict[str, tuple[M.SerfMessage | M.PushPullState, str]] = {
    "join": (M.Join(5, "node-a"), "0182a54c54696d6505a44e6f6465a66e6f64652d61"),
    "leave": (
        M.Leave(6, "node-a"),
        "0083a54c54696d6506a44e6f6465a66e6f64652d61a55072756e65c2",
    ),
    "user_event": (
        M.UserEventMsg(2, "deploy", b"v1", False),
        "0384a24343c2a54c54696d6502a44e616d65a66465706c6f79a75061796c6f6164a27631",
    ),
    "query_ack": (
        M.QueryResponseMsg(1, 1234, "node-b", 1, None),
        "0585a5466c61677301a446726f6da66e6f64652d62a24944cd04d2a54c54696d6501a75061796c6f6164c0",
    ),
    "query": (
        M.QueryMsg(
            1,
            1234,
            bytes([10, 0, 0, 1]),
            7946,
            "node-a",
            [],
            1,
            0,
            15_000_000_000,
            "_serf_list-keys",
            bytes.fromhex("0781a34b6579a0"),
        ),
        (
            "048ba441646472a40a000001a746696c74657273c0a5466c61677301a24944cd04d2a54c54696d6501a44e616d65af5f73657266"
            "5f6c6973742d6b657973a75061796c6f6164a70781a34b6579a0a4506f7274cd1f0aab52656c6179466163746f7200aa536f75"
            "7263654e6f6465a66e6f64652d61a754696d656f7574cf000000037e11d600"
        ),
    ),
    "push_pull": (
        M.PushPullState(
            7,
            {"node-a": 5},
            [],
            3,
            [None, None, M.UserEventSlot(2, [M.UserEventEntry("deploy", b"v1")]), None],
            1,
        ),
        (
            "0286aa4576656e744c54696d6503a64576656e747394c0c082a64576656e74739182a44e616d65a66465706c6f79a75061796c6f"
            "6164a27631a54c54696d6502c0a54c54696d6507ab4c6566744d656d6265727390aa51756572794c54696d6501ac5374617475"
            "734c54696d657381a66e6f64652d6105"
        ),
    ),
}


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_encode_decode(name: str) -> None:
    msg, hexed = GOLDEN[name]
    assert M.encode(msg).hex() == hexed
    assert M.decode(bytes.fromhex(hexed)) == msg


def test_filters_relay_key_payloads_golden() -> None:
    assert M.encode_node_filter(["node-a"]).hex() == "0091a66e6f64652d61"
    assert (
        M.encode_tag_filter("role", "web.*").hex()
        == "0182a445787072a57765622e2aa3546167a4726f6c65"
    )
    assert M.decode_filter(bytes.fromhex("0091a66e6f64652d61")) == (
        M.FilterType.NODE,
        ["node-a"],
    )
    assert M.decode_filter(M.encode_tag_filter("role", "web.*")) == (
        M.FilterType.TAG,
        ("role", "web.*"),
    )
    hdr = M.RelayHeader(bytes([10, 0, 0, 1]), 7946, "node-a")
    frame = M.encode_relay(hdr, bytes.fromhex(GOLDEN["query_ack"][1]))
    assert frame.hex().startswith(
        "0982a8446573744164647283a24950a40a000001a4506f7274cd1f0aa45a6f6e65a0a8446573744e616d65a66e6f64652d61"
    )
    assert M.decode_relay(frame) == (hdr, bytes.fromhex(GOLDEN["query_ack"][1]))
    assert M.encode_key_request(b"").hex() == "0781a34b6579a0"
    key_b64 = "AAAAAAAAAAAAAAAAAAAAAA=="
    resp = M.KeyResponse(True, "", [key_b64], key_b64)
    hexed = (
        "0884a44b65797391b8414141414141414141414141414141414141414141413d3da74d657373616765a0aa5072696d6172794b6579"
        "b8414141414141414141414141414141414141414141413d3da6526573756c74c3"
    )
    assert M.encode_key_response(resp).hex() == hexed
    assert M.decode_key_response(bytes.fromhex(hexed)) == resp


def test_conflict_response_roundtrip_and_nil() -> None:
    cm = M.ConflictMember(
        "n1", bytes([127, 0, 0, 1]), 7946, {"role": "x"}, 1, bytes([1, 5, 2, 2, 5, 5])
    )
    assert M.decode_conflict_response(M.encode_conflict_response(cm)) == cm
    assert M.encode_conflict_response(None) == b"\x06\xc0"
    assert M.decode_conflict_response(b"\x06\xc0") is None


def test_accepts_v2_signed_ints_and_bin_types() -> None:
    body = msgpack.packb(
        {"LTime": 300, "Node": b"n"}, use_bin_type=True
    )  # bin + uint16
    assert M.decode(b"\x01" + body) == M.Join(300, "n")
    # go-msgpack v2 writes Go ints >= 128 as int16/int32/int64 (Timeout here)
    q = bytes.fromhex(
        GOLDEN["query"][1].replace("cf000000037e11d600", "d3000000037e11d600")
    )
    assert M.decode(q) == GOLDEN["query"][0]


@pytest.mark.parametrize(
    "data,reason",
    [
        (b"", "truncated"),
        (b"\x01\xc1", "malformed"),
        (b"\x01\x93\x01\x02\x03", "malformed"),
        (b"\x0e\x80", "unknown_type"),
        (b"\x01\x81\xa5LTime\xa1x", "malformed"),
        (b"\x01\x81\xa5LTime\xff", "malformed"),
    ],
)
def test_malformed_raises_decode_error_with_reason(data: bytes, reason: str) -> None:
    with pytest.raises(M.SerfDecodeError) as ei:
        M.decode(data)
    assert ei.value.reason == reason


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_fuzz_never_raises_anything_but_decode_error(data: bytes) -> None:
    try:
        M.decode(data)
    except M.SerfDecodeError:
        pass


@settings(max_examples=100, deadline=None)
@given(
    st.integers(0, 2**64 - 1),
    st.text(max_size=40),
    st.binary(max_size=100),
    st.booleans(),
)
def test_user_event_roundtrip(lt: int, name: str, payload: bytes, cc: bool) -> None:
    msg = M.UserEventMsg(lt, name, payload, cc)
    assert M.decode(M.encode(msg)) == msg


def test_push_pull_state_refuses_non_utf8_names_alone() -> None:
    """A Go node may hold a member (or event) whose name is not UTF-8: that entry is refused and
    counted, the clocks and every other entry still merge (tests/serf/test_gonode.py has the pool)."""
    body = {
        "LTime": 40,
        "StatusLTimes": {b"ok": 3, b"bad-\xff": 4},
        "LeftMembers": [b"gone", b"\xfe"],
        "EventLTime": 9,
        "Events": [{"LTime": 8, "Events": [{"Name": b"deploy", "Payload": b"x"}, {"Name": b"\xff", "Payload": b""}]}],
        "QueryLTime": 7,
    }
    raw = bytes([M.SerfMessageType.PUSH_PULL]) + msgpack.packb(body, use_bin_type=False)
    pp = M.decode(raw)
    assert isinstance(pp, M.PushPullState)
    assert (pp.ltime, pp.event_ltime, pp.query_ltime) == (40, 9, 7)
    assert pp.status_ltimes == {"ok": 3} and pp.left_members == ["gone"] and pp.dropped == 3
    slot = pp.events[0]
    assert slot is not None and [e.name for e in slot.events] == ["deploy"]
    # anything else malformed still refuses the whole state
    body["StatusLTimes"] = {b"ok": "three"}
    with pytest.raises(M.SerfDecodeError):
        M.decode(bytes([M.SerfMessageType.PUSH_PULL]) + msgpack.packb(body, use_bin_type=False))
