"""PushPuller alone, on a membership table and an outbox: our state, merging a peer's through
the state rules, version checks and vetoes (pushpull.py)."""

from __future__ import annotations

from registry.memberlist.codec import WireCodec
from registry.memberlist.messages import ErrResp, PushNodeState, PushPull
from registry.memberlist.types import DEFAULT_VSN, Node, NodeState, ip_to_bytes
from tests.memberlist.parts import alive, make_parts


def row(name: str, state: NodeState, inc: int = 1, vsn: bytes = DEFAULT_VSN) -> PushNodeState:
    return PushNodeState(name, ip_to_bytes("10.0.2.1"), 7946, b"", inc, int(state), vsn)


def test_our_state_is_every_row() -> None:
    p = make_parts()
    p.members.on_alive(alive("n1", 4))
    state = p.push_pull.local_state(join=True)
    assert state.join and {r.name: r.incarnation for r in state.nodes} == {"me": 1, "n1": 4}
    assert state.user_state == b""  # no delegate


def test_a_peers_rows_go_through_the_state_rules() -> None:
    p = make_parts()
    p.members.on_alive(alive("n3"))
    pp = PushPull(False, [row("n1", NodeState.ALIVE), row("n2", NodeState.LEFT), row("n3", NodeState.DEAD)], b"")
    assert p.push_pull.merge_remote(pp, join=False)
    nodes = p.members.nodes
    assert nodes["n1"].state == NodeState.ALIVE and "n2" not in nodes  # a left stranger: nothing to apply
    assert nodes["n3"].state == NodeState.SUSPECT  # a dead row only makes us suspect (Go's mergeState)


def test_incompatible_versions_and_a_merge_veto_refuse_the_whole_state() -> None:
    p = make_parts()
    too_new = bytes([5, 6, 6, 2, 5, 5])  # speaks protocol 5-6 only: outside what we support
    assert not p.push_pull.merge_remote(PushPull(False, [row("n1", NodeState.ALIVE, vsn=too_new)], b""), join=False)
    assert p.stats["drop.incompatible_version"] == 1 and "n1" not in p.members.nodes

    class NoStrangers:
        def notify_merge(self, peers: list[Node]) -> str | None:
            return "no" if any(n.name.startswith("evil") for n in peers) else None

    p.push_pull.hooks.merge = NoStrangers()
    assert not p.push_pull.merge_remote(PushPull(True, [row("evil1", NodeState.ALIVE)], b""), join=True)
    assert p.stats["drop.merge_vetoed"] == 1 and "evil1" not in p.members.nodes
    assert p.push_pull.merge_remote(PushPull(False, [row("evil1", NodeState.ALIVE)], b""), join=False)  # not a join


def test_an_oversized_state_is_answered_with_an_error() -> None:
    p = make_parts(max_push_pull_nodes=1)
    reply, joined = p.push_pull.answer(PushPull(True, [row("n1", NodeState.ALIVE), row("n2", NodeState.ALIVE)], b""))
    assert not joined and p.stats["drop.too_large"] == 1
    assert WireCodec().decode_stream(reply, from_dialer=False) == ErrResp("too many nodes")
    reply, joined = p.push_pull.answer(PushPull(True, [row("n1", NodeState.ALIVE)], b""))
    answer = WireCodec().decode_stream(reply, from_dialer=False)
    assert joined and isinstance(answer, PushPull) and {r.name for r in answer.nodes} == {"me"}
