"""Where members and keys land on a ring: the two hash functions and the replica point lists.

``"consistent"`` hashes with xxh3-64 (uhashring's scheme, ``f"{id}-{i}"``), ``"chash"`` with
CRC-32 IEEE (Go werbenhu/chash's scheme, ``str(i) + id``); docs/ring.md says why.  Pure functions,
no ring state: the ring classes pick theirs once, at construction.
"""

from __future__ import annotations

import operator
import zlib
from array import array
from itertools import repeat
from types import ModuleType

import xxhash

__all__ = ["DEFAULT_REPLICAS", "crc32_key", "crc32_points", "encode", "xxh3_key", "xxh3_point_array", "xxh3_points"]

#: Points per node (per unit of weight) when no ``replicas`` tag is given.
DEFAULT_REPLICAS = 4096

xxh3_64 = xxhash.xxh3_64_intdigest


def encode(text: str) -> bytes:
    """UTF-8 that keeps lone surrogates (ids and keys come from the wire as they are)."""
    return text.encode("utf-8", "surrogatepass")


def xxh3_key(key: str) -> int:
    """Position of ``key`` on a ``"consistent"`` ring (64 bits)."""
    return xxh3_64(encode(key))


def crc32_key(key: str) -> int:
    """Position of ``key`` on a ``"chash"`` ring (32 bits)."""
    return zlib.crc32(encode(key))


def _decimals(start: int, stop: int) -> tuple[bytes, ...]:
    return tuple(b"%d" % i for i in range(start, stop))


#: b"0" .. b"4095" precomputed once (immutable): formatting them cost a third of the hashing.
#: Only the default point count: 16384 of them held 0.7 MiB in every registry from import on,
#: and the rarer larger counts (weight > 1, chash's 10000) format the rest per join.
_DECIMALS: tuple[bytes, ...] = _decimals(0, DEFAULT_REPLICAS)


def _digits(count: int) -> tuple[bytes, ...]:
    """``b"0"`` .. ``b"{count-1}"``."""
    return _DECIMALS[:count] if count <= len(_DECIMALS) else _DECIMALS + _decimals(len(_DECIMALS), count)


def xxh3_points(node_id: str, count: int) -> list[int]:
    """``xxh3_64(f"{node_id}-{i}")`` for ``i in range(count)``, in replica order (C-level map)."""
    return list(map(xxh3_64, map((encode(node_id) + b"-").__add__, _digits(count))))


def xxh3_point_array(node_id: str, count: int, accel: ModuleType | None) -> array[int]:
    """``array("Q", xxh3_points(node_id, count))``, hashed by ``accel`` (``registry._ringaccel``) if given.

    Why: through ``xxhash`` each point costs a bytes object, a call and an int (0.3-0.75 us:
    ~3 ms a 4096-point member, seconds for a ring of thousands); the C loop writes the 64-bit
    hashes straight into the array a bulk build reads (~20 ns a point).  It hashes inputs of
    up to 240 bytes only (XXH3's short paths) and returns None beyond: an id of over ~230
    bytes, or an accelerator built before it had ``xxh3_points``, hashes here in Python.
    Both ways give the same numbers (tests/registry/test_ring_accel.py).
    """
    points = getattr(accel, "xxh3_points", None)
    if points is not None:
        arr: array[int] | None = points(encode(node_id) + b"-", count)
        if arr is not None:
            return arr
    return array("Q", xxh3_points(node_id, count))


def crc32_points(node_id: str, count: int) -> list[int]:
    """``crc32(str(i) + node_id)`` for ``i in range(count)``, in replica order (C-level map)."""
    return list(map(zlib.crc32, map(operator.add, _digits(count), repeat(encode(node_id)))))
