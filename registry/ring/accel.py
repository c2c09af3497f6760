"""The optional C accelerator of the packed ``"consistent"`` ring: ``registry._ringaccel``.

``setup.py`` builds it from ``registry/_ringaccel.c`` where a compiler exists (``optional=True``);
without it the pure-Python passes of ``registry.ring.consistent`` run instead and build identical
snapshots, entry for entry (tests/registry/test_ring_accel.py).  What it does and what it buys:
docs/ring.md, "The C accelerator".
"""

from __future__ import annotations

from types import ModuleType

__all__ = ["load"]


def load(bucket_bits: int, owner_bits: int) -> ModuleType | None:
    """The accelerator module if it is built for this layout, else None (pure Python).

    A build for another layout (a stale ``.so`` from before a layout change) would
    corrupt rings, so it is refused like a missing one.
    """
    try:
        from registry import _ringaccel
    except ImportError:
        return None
    if (bucket_bits, owner_bits) != (_ringaccel.BUCKET_BITS, _ringaccel.OWNER_BITS):
        return None
    return _ringaccel
