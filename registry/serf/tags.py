"""Serf tags in memberlist node metadata (wire reference §11).

Protocol >= 3 writes `0xff` + a msgpack map of strings; protocol 2 writes the bare `role` tag.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgpack

from registry.memberlist.types import META_MAX_SIZE

__all__ = ["TAG_MAGIC", "TagsTooLarge", "check_tags", "decode_tags", "encode_tags"]

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
    """Encode and refuse (TagsTooLarge) a tag set over the metadata limit."""
    meta = encode_tags(tags, protocol)
    if len(meta) > META_MAX_SIZE:
        raise TagsTooLarge(len(meta))
    return meta


def _text(raw: object) -> str:
    if isinstance(raw, bytes):
        return raw.decode("utf-8", errors="replace")
    return str(raw)


def decode_tags(meta: bytes | None) -> dict[str, str]:
    """Tags from `Meta`: no magic byte means the whole thing is the `role` (so empty -> role="").

    Undecodable maps give an empty tag set rather than an error: a peer's bad metadata must not
    break our member table.
    """
    if not meta or meta[0] != TAG_MAGIC:
        return {"role": _text(meta or b"")}
    try:
        raw = msgpack.unpackb(meta[1:], raw=True)
    except Exception:  # noqa: BLE001 - msgpack raises many types on bad input
        return {}
    if not isinstance(raw, dict):
        return {}
    return {_text(k): _text(v) for k, v in raw.items()}
