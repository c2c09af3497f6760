"""Hostile or garbled Serf input is dropped and counted, never raised out of the node."""

from __future__ import annotations

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from registry.serf import messages as M
from registry.serf.member import MemberStatus
from tests.serf.serf_sim import make_cluster

CLUSTER = make_cluster(2)

values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.binary(max_size=20)
    | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "LTime",
                    "Node",
                    "Name",
                    "Payload",
                    "ID",
                    "Addr",
                    "Port",
                    "Filters",
                    "Flags",
                    "Timeout",
                    "RelayFactor",
                    "StatusLTimes",
                    "LeftMembers",
                    "Events",
                    "EventLTime",
                    "QueryLTime",
                    "DestAddr",
                    "From",
                    "CC",
                    "Prune",
                ]
            ),
            inner,
            max_size=6,
        )
    ),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.integers(0, 12), values)
def test_structured_garbage_never_raises(kind: int, body: object) -> None:
    s = CLUSTER.nodes[0]
    data = bytes([kind]) + msgpack.packb(body, use_bin_type=False)
    s.notify_msg(data)
    s.merge_remote_state(data, True)
    assert s.member("s0") is not None


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.binary(max_size=80))
def test_random_bytes_never_raise(data: bytes) -> None:
    s = CLUSTER.nodes[1]
    s.notify_msg(data)
    s.merge_remote_state(b"\x02" + data, False)


def test_cluster_still_healthy_after_garbage() -> None:
    c = make_cluster(2, seed=9)
    for i in range(50):
        c.nodes[0].notify_msg(bytes([i % 10]) + b"\x81\xa5LTime\xcf" + b"\xff" * 8)
    c.nodes[1].user_event("after", b"", False, c.net.now)
    c.net.kick()
    assert c.run_until(
        lambda: any(getattr(e, "name", "") == "after" for e in c.events[0]), 10.0
    )
    assert c.status(0, "s1") == MemberStatus.ALIVE
    _ = M
