"""Vivaldi network coordinates carried in memberlist ack payloads (docs/wire.md §16).

Serf puts `01` + msgpack `Coordinate{Adjustment, Error, Height, Vec}` into every UDP ack and
feeds the coordinates it receives, with the measured RTT, into a Vivaldi estimator; `serf rtt`
then estimates distances from these.  Parameters are Go's coordinate.DefaultConfig.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import msgpack

from registry.memberlist.types import Node

__all__ = [
    "Coordinate",
    "CoordinateConfig",
    "Coordinates",
    "VivaldiClient",
    "decode_ack_payload",
    "encode_ack_payload",
]

PING_VERSION = 1
_ZERO = 1.0e-6


@dataclass
class CoordinateConfig:
    dimensionality: int = 8
    vivaldi_error_max: float = 1.5
    vivaldi_ce: float = 0.25
    vivaldi_cc: float = 0.25
    adjustment_window_size: int = 20
    height_min: float = 10.0e-6
    latency_filter_size: int = 3
    gravity_rho: float = 150.0


@dataclass
class Coordinate:
    """A point in seconds: Euclidean `vec` plus `height` (access link) and `adjustment`."""

    vec: list[float]
    error: float
    adjustment: float = 0.0
    height: float = 10.0e-6

    @classmethod
    def origin(cls, cfg: CoordinateConfig) -> Coordinate:
        return cls(
            [0.0] * cfg.dimensionality, cfg.vivaldi_error_max, 0.0, cfg.height_min
        )

    def copy(self) -> Coordinate:
        return Coordinate(list(self.vec), self.error, self.adjustment, self.height)

    def is_valid(self) -> bool:
        return all(
            math.isfinite(x)
            for x in [*self.vec, self.error, self.adjustment, self.height]
        )

    def compatible(self, other: Coordinate) -> bool:
        return len(self.vec) == len(other.vec)

    def raw_distance(self, other: Coordinate) -> float:
        return math.dist(self.vec, other.vec) + self.height + other.height

    def distance(self, other: Coordinate) -> float:
        """Estimated RTT in seconds (adjustments applied unless that makes it non-positive)."""
        dist = self.raw_distance(other)
        adjusted = dist + self.adjustment + other.adjustment
        return adjusted if adjusted > 0.0 else dist

    def apply_force(
        self, cfg: CoordinateConfig, force: float, other: Coordinate, rng: random.Random
    ) -> Coordinate:
        ret = self.copy()
        unit, mag = _unit_vector_at(self.vec, other.vec, rng)
        ret.vec = [a + u * force for a, u in zip(ret.vec, unit)]
        if mag > _ZERO:
            ret.height = max(
                (ret.height + other.height) * force / mag + ret.height, cfg.height_min
            )
        return ret


def _unit_vector_at(
    a: list[float], b: list[float], rng: random.Random
) -> tuple[list[float], float]:
    d = [x - y for x, y in zip(a, b)]
    mag = math.hypot(*d)
    if mag > _ZERO:
        return [x / mag for x in d], mag
    d = [rng.random() - 0.5 for _ in d]
    mag = math.hypot(*d)
    if mag > _ZERO:
        return [x / mag for x in d], 0.0
    return [1.0] + [0.0] * (len(d) - 1), 0.0


@dataclass
class VivaldiClient:
    """Go's coordinate.Client: latency filter, Vivaldi update, adjustment window, gravity."""

    cfg: CoordinateConfig = field(default_factory=CoordinateConfig)
    rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        self.coord = Coordinate.origin(self.cfg)
        self._origin = Coordinate.origin(self.cfg)
        self._window = [0.0] * self.cfg.adjustment_window_size
        self._index = 0
        self._samples: dict[str, list[float]] = {}

    def update(self, node: str, other: Coordinate, rtt: float) -> bool:
        """Take one observation; False (ignored) for an invalid coordinate or RTT."""
        if not other.is_valid() or not self.coord.compatible(other):
            return False
        if not (0.0 < rtt <= 10.0):
            return False
        samples = self._samples.setdefault(node, [])
        samples.append(rtt)
        if len(samples) > self.cfg.latency_filter_size:
            del samples[0]
        rtt = sorted(samples)[len(samples) // 2]
        self._vivaldi(other, rtt)
        self._adjust(other, rtt)
        self._gravity()
        if not self.coord.is_valid():
            self.coord = Coordinate.origin(self.cfg)
        return True

    def forget(self, node: str) -> None:
        self._samples.pop(node, None)

    def _vivaldi(self, other: Coordinate, rtt: float) -> None:
        cfg = self.cfg
        dist = self.coord.distance(other)
        rtt = max(rtt, _ZERO)
        wrongness = abs(dist - rtt) / rtt
        total = max(self.coord.error + other.error, _ZERO)
        weight = self.coord.error / total
        err = cfg.vivaldi_ce * weight * wrongness + self.coord.error * (
            1.0 - cfg.vivaldi_ce * weight
        )
        self.coord.error = min(err, cfg.vivaldi_error_max)
        force = cfg.vivaldi_cc * weight * (rtt - dist)
        self.coord = self.coord.apply_force(cfg, force, other, self.rng)

    def _adjust(self, other: Coordinate, rtt: float) -> None:
        size = self.cfg.adjustment_window_size
        if size == 0:
            return
        self._window[self._index] = rtt - self.coord.raw_distance(other)
        self._index = (self._index + 1) % size
        self.coord.adjustment = sum(self._window) / (2.0 * size)

    def _gravity(self) -> None:
        dist = self._origin.distance(self.coord)
        force = -1.0 * (dist / self.cfg.gravity_rho) ** 2
        self.coord = self.coord.apply_force(self.cfg, force, self._origin, self.rng)


def encode_ack_payload(c: Coordinate) -> bytes:
    body = {
        "Adjustment": c.adjustment,
        "Error": c.error,
        "Height": c.height,
        "Vec": [float(x) for x in c.vec],
    }
    packed: bytes = msgpack.packb(body, use_bin_type=False, use_single_float=False)
    return bytes([PING_VERSION]) + packed


def decode_ack_payload(data: bytes) -> Coordinate | None:
    """The coordinate in an ack payload; None for anything else (empty, other version, garbage)."""
    if len(data) < 2 or data[0] != PING_VERSION:
        return None
    try:
        obj: Any = msgpack.unpackb(data[1:], raw=True)
    except Exception:  # noqa: BLE001 - msgpack raises many types on bad input
        return None
    if not isinstance(obj, dict):
        return None
    m = {
        (k.decode("utf-8", "replace") if isinstance(k, bytes) else str(k)): v
        for k, v in obj.items()
    }

    def num(v: object) -> float | None:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return None
        return float(v)

    vec_raw = m.get("Vec")
    if not isinstance(vec_raw, list):
        return None
    vec = [num(x) for x in vec_raw]
    fields = [
        num(m.get("Error", 0.0)),
        num(m.get("Adjustment", 0.0)),
        num(m.get("Height", 0.0)),
    ]
    if any(x is None for x in vec) or any(x is None for x in fields):
        return None
    err, adj, height = (float(x) for x in fields)  # type: ignore[arg-type]
    return Coordinate([float(x) for x in vec], err, adj, height)  # type: ignore[arg-type]


class Coordinates:
    """Serf's use of Vivaldi, as memberlist's `PingDelegate` (ping_delegate.go): our coordinate rides in every probe ack, and
    each ack we receive updates ours and records the peer's (`cache`, ours under our own
    name).  Off (`enabled=False`), acks carry nothing and nothing is learnt."""

    def __init__(self, name: str, rng: random.Random, stats: Counter[str], *, enabled: bool) -> None:
        self.name = name
        self.enabled = enabled
        self.client = VivaldiClient(rng=rng)
        #: latest coordinate each peer reported in its acks (ours under our own name)
        self.cache: dict[str, Coordinate] = {}
        self._stats = stats

    def ack_payload(self) -> bytes:
        return encode_ack_payload(self.client.coord) if self.enabled else b""

    def notify_ping_complete(self, node: Node, rtt: float, payload: bytes) -> None:
        """A probe of `node` was acked after `rtt` seconds with `payload`."""
        if not self.enabled or not payload:
            return
        coord = decode_ack_payload(payload)
        if coord is None or not self.client.update(node.name, coord, rtt):
            self._stats["coordinate.rejected"] += 1
            return
        self.cache[node.name] = coord
        self.cache[self.name] = self.client.coord.copy()

    def forget(self, node: str) -> None:
        self.cache.pop(node, None)
        self.client.forget(node)
