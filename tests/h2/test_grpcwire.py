"""The gRPC layer's byte formats: grpc-message encoding, status blocks, framing, decompression limits."""

from __future__ import annotations

import gzip
import zlib

import grpc
import pytest

from registry.api import Invalid, Missing
from registry.grpcwire import (
    HEAD,
    MAX_MESSAGE,
    TRAILERS_OK,
    CallError,
    Status,
    code_of,
    decompress,
    frame_message,
    percent_encode,
    status_block,
)
from registry.h2.hpack import Decoder


@pytest.mark.parametrize(
    "text, wire",
    [("group 'web' not found", b"group 'web' not found"), ("50%", b"50%25"), ("ü", b"%C3%BC"),
     ("a\nb", b"a%0Ab"), ("~ ", b"~ "), ("\x7f", b"%7F")],
)
def test_grpc_message_percent_encoding(text: str, wire: bytes) -> None:
    assert percent_encode(text) == wire


def test_header_blocks_decode_to_what_grpc_expects() -> None:
    assert Decoder().decode(HEAD) == [(":status", "200"), ("content-type", "application/grpc")]
    assert Decoder().decode(TRAILERS_OK) == [("grpc-status", "0")]
    assert Decoder().decode(status_block(5, "group 'x' not found")) == [
        ("grpc-status", "5"), ("grpc-message", "group 'x' not found")]
    long = Decoder().decode(status_block(3, "x" * 5000))
    assert long[1] == ("grpc-message", "x" * 1024)  # cut: a trailer must not outgrow the peer's header limit


def test_status_codes_go_out_as_numbers() -> None:
    # Status is an IntEnum: on Python 3.10 its str() is the member's name, never to reach the wire.
    assert Decoder().decode(status_block(Status.NOT_FOUND, "")) == [("grpc-status", "5")]
    assert [int(s) for s in Status] == list(range(17))  # grpc's statuscodes.md, every one
    assert all(grpc.StatusCode[s.name].value[0] == s for s in Status)  # the grpcio front maps by name


def test_message_framing() -> None:
    assert frame_message(b"abc") == b"\x00\x00\x00\x00\x03abc"
    assert frame_message(b"") == b"\x00" + bytes(4)


def test_decompress_gzip_and_deflate() -> None:
    data = b"registry" * 100
    assert decompress("gzip", gzip.compress(data)) == data
    assert decompress("deflate", zlib.compress(data)) == data


@pytest.mark.parametrize(
    "encoding, payload, code",
    [("br", b"x", Status.UNIMPLEMENTED), ("identity", b"x", Status.UNIMPLEMENTED),
     ("gzip", b"not gzip", Status.INTERNAL),
     ("gzip", gzip.compress(bytes(MAX_MESSAGE + 1)), Status.RESOURCE_EXHAUSTED)],  # a ~16 KiB bomb
)
def test_decompress_refusals(encoding: str, payload: bytes, code: int) -> None:
    with pytest.raises(CallError) as err:
        decompress(encoding, payload)
    assert err.value.code == code
    assert (encoding in str(err.value)) or code == Status.RESOURCE_EXHAUSTED  # the message names the encoding


def test_status_of_failures() -> None:
    assert code_of(Invalid("x")) == Status.INVALID_ARGUMENT
    assert code_of(Missing("x")) == Status.NOT_FOUND
    assert code_of(CallError(Status.UNIMPLEMENTED, "x")) == Status.UNIMPLEMENTED
