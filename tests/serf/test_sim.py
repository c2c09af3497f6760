"""Serf core on the virtual clock: statuses, intents, reaping, reconnect, events, queries."""

from __future__ import annotations

from registry.memberlist.config import Config
from registry.memberlist.types import Address, Node
from registry.serf import messages as M
from registry.serf.events import EventType, MemberEvent, QueryEvent, UserEvent
from registry.serf.member import Member, MemberStatus
from registry.serf.query import QueryParams, default_query_timeout
from tests.serf.serf_sim import addr, make_cluster


def must(m: Member | None) -> Member:
    assert m is not None
    return m


def test_join_status_ltimes_and_tags() -> None:
    c = make_cluster(3)
    for s in c.nodes:
        assert {m.name: m.tags for m in s.members()} == {
            f"s{i}": {"role": f"r{i}"} for i in range(3)
        }
    # every joiner's join intent reached everyone: status LTime > 0 for s1 and s2
    for s in c.nodes:
        assert s.status_ltime("s1") and s.status_ltime("s2")


def test_graceful_leave_shows_left_not_failed_then_reaped() -> None:
    c = make_cluster(3, tombstone_timeout=20.0)
    c.nodes[2].leave(c.net.now)
    c.net.kick(addr(2))
    assert c.run_until(lambda: c.nodes[2].left, 20.0)
    assert c.run_until(lambda: c.all_see("s2", MemberStatus.LEFT, [0, 1]), 20.0)
    kinds = [
        e.type
        for e in c.events[0]
        if isinstance(e, MemberEvent) and e.members[0].name == "s2"
    ]
    assert EventType.MEMBER_LEAVE in kinds and EventType.MEMBER_FAILED not in kinds
    c.net.stop(addr(2))
    assert c.run_until(
        lambda: c.status(0, "s2") is None and c.status(1, "s2") is None, 40.0
    )
    assert any(
        isinstance(e, MemberEvent) and e.type == EventType.MEMBER_REAP
        for e in c.events[0]
    )


def test_killed_node_fails_then_reaped_after_reconnect_timeout() -> None:
    c = make_cluster(3, reconnect_timeout=15.0)
    c.net.stop(addr(1))
    assert c.run_until(lambda: c.all_see("s1", MemberStatus.FAILED, [0, 2]), 30.0)
    kinds = [
        e.type
        for e in c.events[0]
        if isinstance(e, MemberEvent) and e.members[0].name == "s1"
    ]
    assert kinds[-1] == EventType.MEMBER_FAILED
    t_failed = c.net.now
    assert c.run_until(lambda: c.status(0, "s1") is None, 40.0)
    assert c.net.now - t_failed >= 14.0  # not before reconnect_timeout


def test_reconnect_after_partition() -> None:
    # no gossip to the dead: otherwise the sides may find each other again within one gossip
    # round of the heal, before any reconnect tick, and reconnect would go untested
    c = make_cluster(4, memberlist=Config.fast(gossip_to_the_dead_time=0.0))
    a, b = [addr(0), addr(1)], [addr(2), addr(3)]
    c.net.partition(a, b)
    # every member of the other side failed (not only one: a side still suspecting a member
    # gossips to it, and would find it again after the heal without any reconnect)
    assert c.run_until(
        lambda: all(c.all_see(f"s{i}", MemberStatus.FAILED, [0, 1]) for i in (2, 3))
        and all(c.all_see(f"s{i}", MemberStatus.FAILED, [2, 3]) for i in (0, 1)),
        60.0,
    )
    c.net.heal()
    assert c.run_until(
        lambda: all(
            c.all_see(f"s{i}", MemberStatus.ALIVE, [0, 1, 2, 3]) for i in range(4)
        ),
        90.0,
    )
    assert sum(s.stats["reconnect.attempts"] for s in c.nodes) > 0


def test_intents_out_of_lamport_order() -> None:
    c = make_cluster(2)
    s0 = c.nodes[0]
    # unknown node: the newest intent wins whatever the arrival order
    s0.notify_msg(M.encode(M.Leave(50, "ghost")))
    s0.notify_msg(M.encode(M.Join(40, "ghost")))
    s0.membership.notify_join(Node("ghost", "10.9.9.9", 7946))
    assert must(s0.member("ghost")).status == MemberStatus.LEAVING
    assert s0.status_ltime("ghost") == 50
    # known member: an older join after a newer leave changes nothing; a newer one revives
    lt0 = s0.status_ltime("s1") or 0
    s0.notify_msg(M.encode(M.Leave(lt0 + 10, "s1")))
    assert must(s0.member("s1")).status == MemberStatus.LEAVING
    s0.notify_msg(M.encode(M.Join(lt0 + 5, "s1")))
    assert must(s0.member("s1")).status == MemberStatus.LEAVING
    s0.notify_msg(M.encode(M.Join(lt0 + 11, "s1")))
    assert must(s0.member("s1")).status == MemberStatus.ALIVE
    assert s0.clock.time() > lt0 + 11


def test_stale_leave_intent_about_self_is_refuted() -> None:
    c = make_cluster(2)
    s1 = c.nodes[1]
    lt0 = c.nodes[0].status_ltime("s1") or 0
    c.nodes[0].notify_msg(
        M.encode(M.Leave(lt0 + 100, "s1"))
    )  # s0 wrongly believes s1 leaves
    c.nodes[0]._broadcasts.queue(None, M.encode(M.Leave(lt0 + 100, "s1")))
    c.net.kick()
    assert c.run_until(lambda: s1.stats["intent.refuted"] > 0, 10.0)
    assert c.run_until(lambda: c.status(0, "s1") == MemberStatus.ALIVE, 10.0)
    assert must(s1.member("s1")).status == MemberStatus.ALIVE


def test_user_events_delivered_once_everywhere() -> None:
    c = make_cluster(3)
    c.nodes[0].user_event("deploy", b"v1", True, c.net.now)
    c.nodes[1].user_event("deploy", b"v2", False, c.net.now)
    c.net.kick()

    def got(i: int) -> list[tuple[str, bytes, bool]]:
        return sorted(
            (e.name, e.payload, e.coalesce)
            for e in c.events[i]
            if isinstance(e, UserEvent)
        )

    want = [("deploy", b"v1", True), ("deploy", b"v2", False)]
    assert c.run_until(lambda: all(got(i) == want for i in range(3)), 10.0)
    c.net.run_for(10.0)  # gossip and push/pull keep running: still no duplicate
    c.pump_events()
    assert all(got(i) == want for i in range(3))


def test_late_joiner_ignores_old_events_by_default_but_can_replay() -> None:
    c = make_cluster(2)
    c.nodes[0].user_event("old", b"x", False, c.net.now)
    c.net.kick()
    c.net.run_for(3.0)
    new = c.add(2)
    new.join([addr(0)], c.net.now, ignore_old=True)
    c.net.kick(addr(2))
    late = c.add(3)
    late.join([addr(0)], c.net.now, ignore_old=False)
    c.net.kick(addr(3))
    c.run_until(lambda: False, 5.0)
    assert not [e for e in c.events[2] if isinstance(e, UserEvent)]
    assert [e.name for e in c.events[3] if isinstance(e, UserEvent)] == ["old"]


def test_user_event_size_limits() -> None:
    c = make_cluster(1)
    import pytest

    with pytest.raises(ValueError, match="exceeds configured limit of 512 bytes"):
        c.nodes[0].user_event("x", b"y" * 600, False, c.net.now)


def test_tag_change_propagates_as_update() -> None:
    c = make_cluster(3)
    c.nodes[1].set_tags({"role": "new", "dc": "x"}, c.net.now)
    c.net.kick()
    assert c.run_until(
        lambda: all(
            must(s.member("s1")).tags == {"role": "new", "dc": "x"} for s in c.nodes
        ),
        10.0,
    )
    assert any(
        isinstance(e, MemberEvent) and e.type == EventType.MEMBER_UPDATE
        for e in c.events[0]
    )


def test_queries_filters_acks_responses() -> None:
    c = make_cluster(4)
    h = c.nodes[0].query(
        "q", b"hi", c.net.now, QueryParams(request_ack=True, timeout=5.0)
    )
    c.net.kick()
    answered: set[tuple[int, int]] = set()

    def answer() -> bool:
        for i in range(4):
            for e in c.events[i]:
                if (
                    isinstance(e, QueryEvent)
                    and e.name == "q"
                    and (i, e.id) not in answered
                ):
                    answered.add((i, e.id))
                    assert e.respond(b"r" + str(i).encode())
                    assert not e.respond(b"again")
        c.net.kick()
        return h.closed

    assert c.run_until(answer, 10.0)
    assert sorted(h.acks) == ["s0", "s1", "s2", "s3"]
    assert sorted((r.from_, r.payload) for r in h.responses) == [
        (f"s{i}", b"r%d" % i) for i in range(4)
    ]
    # filters: node list and tag regexp
    h2 = c.nodes[0].query(
        "q2",
        b"",
        c.net.now,
        QueryParams(
            filter_nodes=["s1", "s2"],
            filter_tags={"role": "r[23]"},
            request_ack=True,
            timeout=3.0,
        ),
    )
    c.net.kick()
    assert c.run_until(lambda: h2.closed, 10.0)
    assert h2.acks == ["s2"]


def test_relayed_responses_are_deduplicated() -> None:
    c = make_cluster(4)
    h = c.nodes[0].query(
        "_serf_ping",
        b"",
        c.net.now,
        QueryParams(request_ack=True, relay_factor=2, timeout=3.0),
    )
    c.net.kick()
    assert c.run_until(lambda: h.closed, 10.0)
    assert sorted(h.acks) == ["s0", "s1", "s2", "s3"]
    assert sum(s.stats["query.relayed"] for s in c.nodes) > 0


def test_default_query_timeout_formula() -> None:
    assert default_query_timeout(0.2, 16, 2) == 3.2
    assert abs(default_query_timeout(0.2, 16, 10) - 6.4) < 1e-9
    c = make_cluster(3)
    assert (
        c.nodes[0].default_query_timeout()
        == c.nodes[0].memberlist.config.gossip_interval * 16
    )


def test_event_queue_overflow_drops_oldest_and_counts() -> None:
    c = make_cluster(1, event_queue_size=5)
    s = c.nodes[0]
    s.drain_events()
    for i in range(8):
        s.user_event(f"e{i}", b"", False, c.net.now)
    evs = s.drain_events()
    assert [e.name for e in evs if isinstance(e, UserEvent)] == [
        f"e{i}" for i in range(3, 8)
    ]
    assert s.stats["events.dropped"] == 3


def test_push_pull_state_roundtrip_merges_left_members() -> None:
    c = make_cluster(2)
    s0 = c.nodes[0]
    s0.membership.notify_join(Node("gone", "10.9.9.8", 7946))
    s0.notify_msg(M.encode(M.Leave(s0.clock.time() + 3, "gone")))
    s0.membership.notify_leave(Node("gone", "10.9.9.8", 7946))
    assert must(s0.member("gone")).status == MemberStatus.LEFT
    state = M.decode(s0.local_state(False))
    assert isinstance(state, M.PushPullState)
    assert state.left_members == ["gone"] and len(state.events) == 512
    s1 = c.nodes[1]
    s1.membership.notify_join(Node("gone", "10.9.9.8", 7946))
    s1.membership.notify_leave(Node("gone", "10.9.9.8", 7946))
    assert must(s1.member("gone")).status == MemberStatus.FAILED
    s1.merge_remote_state(s0.local_state(False), False)
    assert must(s1.member("gone")).status == MemberStatus.LEFT


def test_malformed_serf_messages_are_counted_not_raised() -> None:
    c = make_cluster(1)
    s = c.nodes[0]
    for bad in (b"\x01\xc1", b"\x0e", b"\x09\x80", b"\x04\x80\x01", b"\x02"):
        s.notify_msg(bad)
    s.merge_remote_state(b"\x05junk", True)
    assert s.stats["serf.drop.malformed"] == 5 and s.stats["serf.drop.bad_remote_state"] == 1


def test_name_conflict_answered_with_member_record() -> None:
    c = make_cluster(3)
    h = c.nodes[0].query("_serf_conflict", b"s1", c.net.now, QueryParams(timeout=3.0))
    c.net.kick()
    assert c.run_until(lambda: h.closed, 10.0)
    # s1 itself does not answer; s0 (the asker) and s2 send s1's record
    froms = sorted(r.from_ for r in h.responses)
    assert froms == ["s0", "s2"]
    cm = M.decode_conflict_response(h.responses[0].payload)
    assert (
        cm is not None
        and cm.name == "s1"
        and cm.port == 7946
        and cm.addr == bytes([10, 1, 0, 2])
    )


def test_conflicting_newcomer_loses_and_shuts_down() -> None:
    c = make_cluster(3)
    # an impostor with s1's name at another address joins through s0
    imp = c.add(5, name="s1")
    imp.join([addr(0)], c.net.now)
    c.net.kick(addr(5))
    assert c.run_until(lambda: imp.conflict_lost or c.nodes[1].conflict_lost, 30.0)
    assert imp.conflict_lost and not c.nodes[1].conflict_lost
    _ = Address


def test_user_event_coalescing_keeps_newest_per_name() -> None:
    c = make_cluster(2, user_coalesce_period=3.0, user_quiescent_period=1.0)
    for i in range(4):
        c.nodes[0].user_event("deploy", b"v%d" % i, True, c.net.now)
    c.nodes[0].user_event("other", b"x", True, c.net.now)
    c.nodes[0].user_event("plain", b"p", False, c.net.now)
    c.net.kick()

    def got(i: int) -> list[tuple[str, bytes]]:
        return sorted(
            (e.name, e.payload) for e in c.events[i] if isinstance(e, UserEvent)
        )

    assert c.run_until(
        lambda: got(1) == [("deploy", b"v3"), ("other", b"x"), ("plain", b"p")], 10.0
    )
    assert got(0) == got(1)


def test_lossy_reordering_network_still_converges_on_left_and_events() -> None:
    from registry.memberlist.simnet import SimNetwork
    from tests.serf.serf_sim import SerfCluster

    c = SerfCluster(SimNetwork(seed=7, loss=0.1, jitter=0.05, duplicate=0.1))
    for i in range(5):
        c.add(i)
    for i in range(1, 5):
        c.nodes[i].join([addr(0)], c.net.now)
    c.net.kick()
    assert c.run_until(
        lambda: all(
            c.all_see(f"s{i}", MemberStatus.ALIVE, list(range(5))) for i in range(5)
        ),
        60.0,
    )
    for i in range(5):
        c.nodes[i].user_event("e", b"%d" % i, False, c.net.now)
    c.nodes[4].leave(c.net.now)
    c.net.kick()
    assert c.run_until(lambda: c.all_see("s4", MemberStatus.LEFT, [0, 1, 2, 3]), 60.0)

    def payloads(i: int) -> list[bytes]:
        return sorted(e.payload for e in c.events[i] if isinstance(e, UserEvent))

    assert c.run_until(
        lambda: all(payloads(i) == [b"0", b"1", b"2", b"3", b"4"] for i in range(4)),
        60.0,
    )


def test_left_members_in_push_pull_override_a_death_seen_first() -> None:
    # A node learnt the leaver's status time from a push/pull (as a join time) and then saw the
    # memberlist death before the leave intent: it holds `failed` with status time == the leave's.
    # The next push/pull listing the node as left must still turn it into `left` (Go: time + 1).
    c = make_cluster(2)
    s0, s1 = c.nodes
    for s in (s0, s1):
        s.membership.notify_join(Node("gone", "10.9.9.7", 7946))
        s.notify_msg(M.encode(M.Join(40, "gone")))
    s0.notify_msg(M.encode(M.Leave(41, "gone")))
    s0.membership.notify_leave(Node("gone", "10.9.9.7", 7946))
    assert must(s0.member("gone")).status == MemberStatus.LEFT
    s1.notify_msg(M.encode(M.Join(41, "gone")))  # the push/pull-learnt status time
    s1.membership.notify_leave(Node("gone", "10.9.9.7", 7946))
    assert must(s1.member("gone")).status == MemberStatus.FAILED
    s1.notify_msg(M.encode(M.Leave(41, "gone")))  # the real intent now carries no news
    assert must(s1.member("gone")).status == MemberStatus.FAILED
    s1.merge_remote_state(s0.local_state(False), False)
    assert must(s1.member("gone")).status == MemberStatus.LEFT
