"""Consistent-hash rings: immutable snapshots that answer "which service owns this key".

Two algorithms, each its own class, chosen once when a ring is made (``Ring(algorithm)`` or
``Ring.build(algorithm, nodes)`` returns it):

* ``"consistent"`` (default, ``registry.ring.consistent``): uhashring's answers on xxh3-64 in a
  packed bucket layout, joins and leaves in C where ``registry._ringaccel`` is built
  (``registry.ring.accel``);
* ``"chash"`` (``registry.ring.chash``): Go ``werbenhu/chash`` v1.0.8's answers, for clusters that
  mix Go and Python registries.

``registry.ring.base`` holds the snapshot interface they share, ``registry.ring.hashing`` the hash
functions.  What each algorithm promises, why the layout, what the C part buys and the figures
(``python benchmarks/bench_ring.py --quick``): docs/ring.md.
"""

from __future__ import annotations

from .base import (
    ALGORITHMS,
    CHASH_DEFAULT_REPLICAS,
    MAX_REPLICAS,
    Algorithm,
    EmptyRing,
    Ring,
    RingNode,
    key_hash,
    node_points,
    point_count,
)
from .chash import ChashRing
from .consistent import MAX_MEMBERS, ConsistentRing
from .hashing import DEFAULT_REPLICAS

__all__ = [
    "ALGORITHMS",
    "CHASH_DEFAULT_REPLICAS",
    "DEFAULT_REPLICAS",
    "MAX_MEMBERS",
    "MAX_REPLICAS",
    "Algorithm",
    "ChashRing",
    "ConsistentRing",
    "EmptyRing",
    "Ring",
    "RingNode",
    "key_hash",
    "node_points",
    "point_count",
]
