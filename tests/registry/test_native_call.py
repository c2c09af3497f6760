"""One call's request buffer (registry.native_call), apart from the connection that fills it."""

from __future__ import annotations

import gzip

import pytest

from registry.grpcwire import MAX_MESSAGE, CallError, Status, frame_message
from registry.native_call import Call, announced_too_large, take_messages
from registry.native_stats import Stats


async def test_messages_come_out_whole_in_order_and_decompressed() -> None:
    call, stats = Call("/svc/M", "bidi", "gzip"), Stats()
    zipped = gzip.compress(b"second")
    call.buf += frame_message(b"first") + b"\x01" + len(zipped).to_bytes(4, "big") + zipped + frame_message(b"third")[:4]
    assert take_messages(call, stats, 1) == [b"first"]
    assert take_messages(call, stats) == [b"second"]  # the third is not whole yet: it stays
    assert stats.compressed_requests == 1 and bytes(call.buf) == frame_message(b"third")[:4]
    call.buf += frame_message(b"third")[4:]
    assert take_messages(call, stats) == [b"third"] and not call.buf


async def test_a_length_prefix_over_the_limit_is_refused_before_the_body() -> None:
    call = Call("/svc/M", "unary", "identity")
    call.buf += b"\x00" + (MAX_MESSAGE + 1).to_bytes(4, "big")
    assert announced_too_large(call)
    with pytest.raises(CallError) as err:
        take_messages(call, Stats())
    assert err.value.code == Status.RESOURCE_EXHAUSTED
