"""What the web page draws of a ring: positions on the circle, merged arcs, and how much moved.

Pure functions over immutable ``Ring`` snapshots (no I/O, no state), so the HTTP front can run
them on a worker thread while the loop keeps serving.  A position is a point of the algorithm's
hash space as a fraction of it, ``point / 2**BITS`` in ``[0, 1)``: 0 at the top of the drawn
circle, growing clockwise, the direction both algorithms walk.

Figures (CPU time, ``time.process_time``, best of 5, Python 3.11.7, C accelerator built, a shared
2-core machine; ``python -m tests.registry.test_ring_view`` prints them):

* ``arcs`` on 200 members x 4096 points (sampled, 1440 slices): 2.7 ms; on 2,000 x 4096: 4.2 ms
  (one lookup per slice: the cost hardly grows with the ring).  The exact mode walks every entry:
  8.1 ms at its limit (``4 * bins`` = 5,760 entries).
* ``moved_share`` of one 4096-point join into a 1,000-member 4096-point ring: 17-19 ms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .base import Ring, ring_class

__all__ = ["Arcs", "arcs", "key_position", "moved_share", "point_position"]

#: The largest float below 1.0: ``point / 2**64`` rounds to 1.0 for the top 2**10 points.
_BELOW_ONE = math.nextafter(1.0, 0.0)


def _fraction(point: int, space: int) -> float:
    return min(point / space, _BELOW_ONE)


def key_position(algorithm: str, key: str) -> float:
    """Where ``key`` sits on the drawn circle of an ``algorithm`` ring, in ``[0, 1)``.

    ``ValueError`` for an unknown algorithm.
    """
    cls = ring_class(algorithm)
    return _fraction(cls.key_hash(key), 1 << cls.BITS)


def point_position(ring: Ring, point: int) -> float:
    """Any point of ``ring``'s hash space as a fraction of it, in ``[0, 1)``."""
    space = 1 << ring.BITS
    if not 0 <= point < space:
        raise ValueError(f"point {point!r} is outside the {ring.BITS}-bit hash space")
    return _fraction(point, space)


@dataclass(frozen=True)
class Arcs:
    """The circle to draw: runs of the hash space, each owned by one member.

    ``names`` is ``sorted(ring.nodes)``, so an owner index is also the member's position in a
    by-id sorted list (a member may own no run: all its points tied and lost).  ``runs`` are
    ``(start fraction, owner index)`` with ascending starts; run ``i`` spans
    ``[start_i, start_{i+1})`` and the last one wraps past 1.0 to the first start.  Adjacent
    runs of one owner are merged, the last with the first included.  ``exact``: True when the
    runs are the ring's real arcs (summed per owner they give ``Ring.shares()``), False when
    the circle was sampled (see ``arcs``).
    """

    names: list[str]
    runs: list[tuple[float, int]]
    exact: bool


def _merge(starts: list[int], owners: list[int]) -> list[tuple[int, int]]:
    """Integer runs with adjacent equal owners merged (the last one with the first too)."""
    runs: list[tuple[int, int]] = []
    for s, o in zip(starts, owners):
        if not runs or runs[-1][1] != o:
            runs.append((s, o))
    if len(runs) > 1 and runs[0][1] == runs[-1][1]:
        del runs[0]  # the last run wraps through it
    return runs


def _runs(ring: Ring, bins: int) -> tuple[list[str], list[tuple[int, int]], bool]:
    """``arcs`` in integers: (names, (start point, owner index) runs, exact)."""
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(f"bins must be an int >= 1, got {bins!r}")
    names = sorted(ring.nodes)
    if not names:
        return names, [], True
    index = {name: i for i, name in enumerate(names)}
    if ring.point_count <= 4 * bins:
        owned = ring.owned_arcs()
        return names, _merge([s for s, _ in owned], [index[o] for _, o in owned]), True
    space = 1 << ring.BITS
    starts = [i * space // bins for i in range(bins)]
    owners = [index[ring.owner_at((2 * i + 1) * space // (2 * bins))] for i in range(bins)]
    return names, _merge(starts, owners), False


def arcs(ring: Ring, bins: int = 1440) -> Arcs:
    """The merged runs to draw for ``ring``: exact when small, else ``bins`` sampled slices.

    At most ``4 * bins`` entries: every arc exactly as the algorithm assigns it
    (``"consistent"``: a key goes clockwise to the first point above its hash, so the arc
    ending at a point is that point's; ``"chash"``: to the largest point at or below it, so the
    arc starting at a point is its, and the keys below the smallest point go to the largest),
    ties by the ring's own rule, adjacent arcs of one owner merged.

    More entries (a 4096-point member makes any ring larger than 1,440 x 4): slice ``i`` is
    ``[i / bins, (i + 1) / bins)`` and goes to the owner of its **midpoint** (the key whose hash
    is the slice's middle point), equal neighbours merged.  Why not the owner of the most of the
    slice: that needs every entry's arc, a Python step per entry: 13.7 s of CPU on 2,000 x 4096
    points and 1.3 s on 200 x 4096 (the entry walk alone: 6.0 s and 0.44 s), against 4.2 and
    2.7 ms for the midpoints.  At that size each
    slice holds hundreds of arcs of hundreds of owners, so neither rule shows more than
    sampled noise; the exact shares are ``Ring.shares()``.

    ``ValueError`` unless ``bins`` is an int >= 1.  An empty ring has no runs.
    """
    names, runs, exact = _runs(ring, bins)
    space = 1 << ring.BITS
    return Arcs(names, [(_fraction(s, space), o) for s, o in runs], exact)


def moved_share(old: Ring, new: Ring) -> float:
    """Exact fraction of the key space whose owner differs between ``old`` and ``new``.

    Both must be of the same algorithm (``ValueError`` otherwise).  If either ring is empty:
    1.0 when the other is not, 0.0 when both are.  Incremental: members that did not change
    (``Ring.changed_members``) own the same points with the same tie rank in both snapshots,
    so a key can change owner only if the point that owns it, in either ring, belongs to a
    changed member.  For each changed point ``s`` this looks at the one piece of the key space
    next to it that both rings give to a single entry each (the arc ending at ``s`` for
    ``"consistent"``, starting at ``s`` for ``"chash"``) and counts it when the two owners
    differ: two ring lookups per changed point, whatever the ring's size.
    """
    if type(old) is not type(new):
        raise ValueError(f"cannot compare a {old.algorithm!r} ring with a {new.algorithm!r} ring")
    if not len(old) or not len(new):
        return 1.0 if len(old) or len(new) else 0.0
    changed = new.changed_members(old)
    if not changed:
        return 0.0
    points: set[int] = set()
    for ring in (old, new):
        nodes = ring.nodes
        for k in changed:
            node = nodes.get(k)
            if node is not None:
                points.update(ring.replica_points(k, node))
    space = 1 << old.BITS
    ends = old.POINT_ENDS_ARC
    moved = 0
    for s in points:
        h = (s - 1) % space if ends else s  # a key inside the piece next to s
        a_old, b_old, owner_old = old.arc_at(h)
        a_new, b_new, owner_new = new.arc_at(h)
        if owner_old != owner_new:  # the piece is the intersection of both arcs around h
            left = min((h - a_old) % space, (h - a_new) % space)
            right = min((b_old - h - 1) % space, (b_new - h - 1) % space) + 1
            moved += left + right
    return moved / space
