"""Serf tags in memberlist node metadata (docs/wire.md §11).

Protocol >= 3 writes `0xff` + a msgpack map of strings; protocol 2 writes the bare `role` tag.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgpack

from registry.memberlist.types import META_MAX_SIZE

__all__ = ["TAG_MAGIC", "TagsTooLarge", "check_tags", "decode_tags", "encode_tags", "valid_meta"]

TAG_MAGIC = 0xFF


class TagsTooLarge(ValueError):
    """The encoded tag set does not fit memberlist's 512-byte node metadata."""

    def __init__(self, size: int, limit: int = META_MAX_SIZE) -> None:
        super().__init__(
            f"encoded tags take {size} bytes, more than the {limit}-byte limit of node metadata"
        )
        self.size = size
        self.limit = limit


def encode_tags(tags: Mapping[str, str], protocol: int = 5) -> bytes:
    """The `Meta` bytes Serf would send for `tags` (no size check, see `check_tags`)."""
    if protocol < 3:
        return tags.get("role", "").encode()
    body: bytes = msgpack.packb(
        {str(k): str(v) for k, v in tags.items()}, use_bin_type=False
    )
    return bytes([TAG_MAGIC]) + body


def check_tags(tags: Mapping[str, str], protocol: int = 5) -> bytes:
    """Encode and refuse (TagsTooLarge) a tag set over the metadata limit; ValueError for
    text that is not UTF-8 (a lone surrogate): peers would refuse us as we refuse them."""
    try:
        meta = encode_tags(tags, protocol)
    except UnicodeEncodeError:
        raise ValueError("tags must be UTF-8 text") from None
    if len(meta) > META_MAX_SIZE:
        raise TagsTooLarge(len(meta))
    return meta


def _text(raw: object) -> str:
    if isinstance(raw, bytes):
        return raw.decode("utf-8", errors="replace")
    return str(raw)


def valid_meta(meta: bytes) -> bool:
    """`meta` is a tag set we can hold and send on: a map of UTF-8 strings (after the magic
    byte), or, without it, a UTF-8 `role`.  Serf refuses a member whose metadata is not
    (memberlist's `accept_meta` hook): its tags would be guesses, and text that is not
    UTF-8 cannot be re-encoded (nor served over gRPC, whose strings are UTF-8)."""
    if not meta or meta[0] != TAG_MAGIC:
        try:
            meta.decode("utf-8")
        except UnicodeDecodeError:
            return False
        return True
    try:
        raw = msgpack.unpackb(meta[1:], raw=True)
    except msgpack.ExtraData as e:  # Go's decoder ignores trailing bytes too
        raw = e.unpacked
    except Exception:  # noqa: BLE001 - msgpack raises many types on bad input
        return False
    if not isinstance(raw, dict):
        return False
    try:
        for k, v in raw.items():
            if type(k) is not bytes or type(v) is not bytes:
                return False
            k.decode("utf-8")
            v.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def decode_tags(meta: bytes | None) -> dict[str, str]:
    """Tags from `Meta`: no magic byte means the whole thing is the `role` (so empty -> role="").

    Undecodable maps give an empty tag set rather than an error: a peer's bad metadata must not
    break our member table.
    """
    if not meta or meta[0] != TAG_MAGIC:
        return {"role": _text(meta or b"")}
    try:
        raw = msgpack.unpackb(meta[1:], raw=True)
    except msgpack.ExtraData as e:
        raw = e.unpacked
    except Exception:  # noqa: BLE001 - msgpack raises many types on bad input
        return {}
    if not isinstance(raw, dict):
        return {}
    return {_text(k): _text(v) for k, v in raw.items()}
