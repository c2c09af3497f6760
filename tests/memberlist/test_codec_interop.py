"""The codec against a live Go `serf agent` (plain and `-encrypt`), over raw loopback sockets.

No Python node runs here: the test hand-builds one ping and one join push/pull with the codec
and checks that Go answers and that its (compressed, maybe encrypted) replies decode.  This
checks encryption (UDP: AAD = label; TCP: AAD = 0x0a + length), LZW and stream framing against
Go itself, not just against the reference's vectors.
"""

from __future__ import annotations

import base64
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest

from registry.memberlist.codec import DecodeError, WireCodec, encode
from registry.memberlist.crypto import Keyring
from registry.memberlist.messages import Ack, Ping, PushNodeState, PushPull
from registry.memberlist.stream import StreamFramer
from tests.serfagent import SerfAgent, serf_agent  # noqa: F401  (fixture)

KEY = bytes(range(32))
VSN = bytes([1, 5, 2, 2, 5, 5])
LOCAL = bytes([127, 0, 0, 1])


def _codec(encrypted: bool, envelope_v0: bool = False) -> WireCodec:
    # protocol_version 1 makes the codec send version-0 (PKCS#7-padded) envelopes.
    return WireCodec(
        keyring=Keyring([KEY]) if encrypted else None,
        protocol_version=1 if envelope_v0 else 2,
    )


@pytest.mark.serf
@pytest.mark.timeout(90)
@pytest.mark.parametrize(
    ("encrypted", "envelope_v0"),
    [(False, False), (True, False), (True, True)],
    ids=["plain", "encrypted", "enc-v0"],
)
def test_go_answers_our_ping_and_push_pull(
    request: pytest.FixtureRequest, encrypted: bool, envelope_v0: bool
) -> None:
    make: Callable[..., SerfAgent] = request.getfixturevalue("serf_agent")
    kw: dict[str, Any] = (
        {"encrypt": base64.b64encode(KEY).decode()} if encrypted else {}
    )
    agent = make(name="go-codec", **kw)
    codec = _codec(encrypted, envelope_v0)

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        udp.settimeout(0.5)
        my_port = udp.getsockname()[1]
        ping = Ping(77, agent.name, LOCAL, my_port, "py-codec")
        got: Ack | None = None
        deadline = time.monotonic() + 20
        while got is None and time.monotonic() < deadline:
            udp.sendto(codec.encode_packet(encode(ping)), ("127.0.0.1", agent.port))
            try:
                data, _ = udp.recvfrom(65536)
            except TimeoutError:
                continue
            msgs, drops = codec.decode_packet(data)
            assert drops == []
            got = next((m for m in msgs if isinstance(m, Ack) and m.seq_no == 77), None)
        assert got is not None, f"no ack from Go:\n{agent.log_text()[-2000:]}"
        # Serf puts its network coordinate into the ack payload.
        assert got.payload

        # A keyless packet is dropped by the encrypted agent: it never acks it.
        if encrypted:
            udp.sendto(WireCodec().encode_packet(encode(Ping(78, agent.name, LOCAL, my_port, "x"))),
                       ("127.0.0.1", agent.port))  # fmt: skip

        if encrypted:  # the envelope version byte we made Go accept
            assert codec.encode_packet(encode(ping))[0] == (0 if envelope_v0 else 1)

        me = PushNodeState("py-codec", LOCAL, my_port, b"\xff\x80", 1, 0, VSN)
        push = codec.encode_stream(encode(PushPull(True, [me], b"")), dialer=True)
        with socket.create_connection(("127.0.0.1", agent.port), timeout=10) as tcp:
            tcp.sendall(push)
            framer = StreamFramer(expect_label=False, max_size=1 << 20)
            reply = None
            while reply is None:
                chunk = tcp.recv(4096)
                assert chunk, "Go closed the connection without a complete reply"
                reply = framer.feed(chunk)
        assert reply[0] == (
            10 if encrypted else 9
        )  # Go always compresses stream messages
        msg = codec.decode_stream(reply, from_dialer=False)
        assert isinstance(msg, PushPull) and msg.join
        mine = [n for n in msg.nodes if n.name == agent.name]
        assert (
            len(mine) == 1
            and mine[0].state == 0
            and mine[0].port == agent.port
            and len(mine[0].vsn) == 6
        )
        assert msg.user_state[:1] == b"\x02"  # Serf's pushPull message type
        if encrypted:
            with pytest.raises(DecodeError) as ei:
                _codec(False).decode_stream(reply, from_dialer=False)
            assert ei.value.reason == "decrypt"
        # Go accepted our state: the agent now lists us (alive, until it finds we answer nothing).
        deadline = time.monotonic() + 20
        while agent.member("py-codec") is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert agent.member("py-codec") is not None
        if encrypted:
            # nothing but the first ack ever arrived for seq 78
            udp.settimeout(0.2)
            seen: list[int] = []
            until = (
                time.monotonic() + 1.0
            )  # Go gossips to us every 200 ms: bound the drain
            while time.monotonic() < until:
                try:
                    data, _ = udp.recvfrom(65536)
                except TimeoutError:
                    break
                try:
                    seen += [
                        m.seq_no
                        for m in codec.decode_packet(data)[0]
                        if isinstance(m, Ack)
                    ]
                except DecodeError:
                    pass
            assert 78 not in seen
