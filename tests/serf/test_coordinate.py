"""Vivaldi coordinates in ack payloads (§16)."""

from __future__ import annotations

import random

from registry.serf.coordinate import (
    Coordinate,
    VivaldiClient,
    decode_ack_payload,
    encode_ack_payload,
)
from tests.serf.serf_sim import make_cluster

GOLDEN = (
    "0184aa41646a7573746d656e74cb0000000000000000a54572726f72cb3ff8000000000000a6486569676874cb3ee4f8b588e368f1"
    "a356656392cb0000000000000000cb0000000000000000"
)


def test_ack_payload_golden() -> None:
    c = Coordinate([0.0, 0.0], 1.5, 0.0, 1e-5)
    assert encode_ack_payload(c).hex() == GOLDEN
    assert decode_ack_payload(bytes.fromhex(GOLDEN)) == c
    for bad in (b"", b"\x02\x80", b"\x01\xc1", b"\x01\x81\xa3Vec\xa1x", b"\x01\x90"):
        assert decode_ack_payload(bad) is None


def test_two_clients_converge_to_true_rtt() -> None:
    a, b = VivaldiClient(rng=random.Random(1)), VivaldiClient(rng=random.Random(2))
    for _ in range(200):
        a.update("b", b.coord.copy(), 0.010)
        b.update("a", a.coord.copy(), 0.010)
    assert abs(a.coord.distance(b.coord) - 0.010) < 0.001
    assert not a.update("b", Coordinate([float("nan")] * 8, 1.0), 0.01)
    assert not a.update("b", b.coord.copy(), 0.0)


def test_sim_nodes_exchange_coordinates() -> None:
    c = make_cluster(3)
    c.net.run_for(10.0)
    for s in c.nodes:
        assert {"s0", "s1", "s2"} <= set(s.coord_cache)
    off = make_cluster(2, seed=4, disable_coordinates=True)
    off.net.run_for(5.0)
    assert not off.nodes[0].coord_cache
