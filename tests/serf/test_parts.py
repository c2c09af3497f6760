"""Serf's parts alone (issue 13): each is built with only what it needs, fed directly, and
checked on what it emits, broadcasts and counts -- no cluster, no network."""

from __future__ import annotations

import collections
import random

from registry.memberlist.config import Config
from registry.memberlist.core import Memberlist
from registry.memberlist.timers import TimerHeap
from registry.memberlist.types import Address, Node, NodeState, SendPacket
from registry.serf import messages as M
from registry.serf.broadcasts import SerfBroadcasts
from registry.serf.clock import LamportRing
from registry.serf.config import SerfConfig
from registry.serf.conflict import NameConflicts
from registry.serf.events import Event, EventQueue, EventType, MemberEvent, QueryEvent, UserEvent
from registry.serf.joins import PendingJoins
from registry.serf.leaving import LeaveSequence, LeaveStage
from registry.serf.member import MemberStatus, SerfState
from registry.serf.membership import Membership
from registry.serf.query import QueryHandle, QueryParams
from registry.serf.querying import Queries
from registry.serf.user_events import Coalescer, UserEvents


class Rig:
    """What a part is handed: a clock, timers, counters, and lists for what it emits/sends."""

    def __init__(self) -> None:
        self.now = 0.0
        self.timers = TimerHeap()
        self.stats: collections.Counter[str] = collections.Counter()
        self.events: list[Event] = []
        self.sent: list[bytes] = []
        self.state = SerfState.ALIVE

    def advance(self, to: float) -> None:
        self.now = to
        self.timers.run_due(to)

    def membership(self, config: SerfConfig | None = None) -> tuple[Membership, list[str], list[Address]]:
        forgotten: list[str] = []
        rejoined: list[Address] = []
        m = Membership(
            config or SerfConfig(name="me"),
            "me",
            stats=self.stats,
            timers=self.timers,
            rng=random.Random(1),
            now=lambda: self.now,
            local_state=lambda: self.state,
            emit=self.events.append,
            broadcast=self.sent.append,
            forget=forgotten.append,
            rejoin=lambda addr, _now: rejoined.append(addr),
        )
        return m, forgotten, rejoined

    def kinds(self) -> list[EventType]:
        return [e.type for e in self.events]


def node(name: str, state: NodeState = NodeState.ALIVE) -> Node:
    return Node(name, "10.0.0.9", 7946, state=state)


# ---------------------------------------------------------------------------- Membership


def test_an_early_leave_intent_waits_for_its_node_and_an_older_join_cannot_undo_it() -> None:
    rig = Rig()
    m, _, _ = rig.membership()
    assert m.handle_leave_intent(M.Leave(10, "b"))  # b unknown: kept as an intent (news)
    assert not m.handle_join_intent(M.Join(9, "b"))  # older than the kept leave
    m.notify_join(node("b"))
    ms = m.get("b")
    assert ms is not None and ms.member.status == MemberStatus.LEAVING and ms.status_ltime == 10
    m.notify_leave(node("b", NodeState.DEAD))  # the death after an intent is a leave, not a failure
    assert rig.kinds() == [EventType.MEMBER_JOIN, EventType.MEMBER_LEAVE]
    assert m.clock.time() == 11  # witnessed past the newest intent


def test_a_leave_intent_about_ourselves_is_refuted_with_a_join_intent() -> None:
    rig = Rig()
    m, _, _ = rig.membership()
    m.notify_join(node("me"))
    assert not m.handle_leave_intent(M.Leave(5, "me"))
    assert rig.stats["intent.refuted"] == 1
    refute = M.decode(rig.sent[-1])
    assert isinstance(refute, M.Join) and refute.node == "me" and refute.ltime > 5
    assert m.get("me").member.status == MemberStatus.ALIVE  # type: ignore[union-attr]


def test_a_failed_member_is_reaped_after_reconnect_timeout_and_its_coordinate_forgotten() -> None:
    rig = Rig()
    m, forgotten, rejoined = rig.membership(
        SerfConfig(name="me", reap_interval=1.0, reconnect_interval=1.0, reconnect_timeout=5.0)
    )
    m.start(0.0)
    m.notify_join(node("me"))
    m.notify_join(node("b"))
    m.notify_leave(node("b", NodeState.DEAD))
    assert m.get("b").member.status == MemberStatus.FAILED  # type: ignore[union-attr]
    rig.advance(3.0)
    assert m.get("b") is not None and rejoined  # reconnect tried (1 failed per 1 alive: always)
    rig.advance(7.0)
    assert m.get("b") is None and forgotten == ["b"] and rig.stats["members.reaped"] == 1
    assert rig.kinds()[-1] == EventType.MEMBER_REAP


def test_push_pull_left_members_become_leave_intents_one_past_their_status_time() -> None:
    rig = Rig()
    m, _, _ = rig.membership()
    m.notify_join(node("b"))
    m.notify_leave(node("b", NodeState.DEAD))  # failed here
    m.merge(M.PushPullState(20, {"b": 7}, ["b"], 0, [], 0))
    ms = m.get("b")
    assert ms is not None and ms.member.status == MemberStatus.LEFT and ms.status_ltime == 8
    assert m.left_names() == ["b"] and m.status_ltimes() == {"b": 8}


def test_a_left_member_heard_rejoining_is_not_pushed_as_left() -> None:
    """b left (leave intent 5, then memberlist's death), restarted and gossiped its join intent (9)
    before memberlist here saw it alive. Our push/pull must not list it as left: a peer that already
    has b alive as of 9 would take "left" as a leave intent at 10 and hold live b leaving for good."""
    rig = Rig()
    here, _, _ = rig.membership()
    here.notify_join(node("b"))
    here.handle_leave_intent(M.Leave(5, "b"))
    here.notify_leave(node("b", NodeState.LEFT))
    assert here.left_names() == ["b"]
    here.handle_join_intent(M.Join(9, "b"))
    assert here.left_names() == [] and here.status_ltimes() == {"b": 9}
    peer_rig = Rig()
    peer, _, _ = peer_rig.membership()
    peer.notify_join(node("b"))
    peer.handle_join_intent(M.Join(9, "b"))
    peer.merge(M.PushPullState(20, here.status_ltimes(), here.left_names(), 0, [], 0))
    assert peer.get("b").member.status == MemberStatus.ALIVE  # type: ignore[union-attr]
    here.notify_join(node("b"))  # memberlist's alive: an ordinary member again
    here.handle_leave_intent(M.Leave(12, "b"))
    here.notify_leave(node("b", NodeState.LEFT))
    assert here.left_names() == ["b"]


# ---------------------------------------------------------------------------- user events


def test_user_events_are_delivered_once_and_too_old_ones_counted() -> None:
    rig = Rig()
    ev = UserEvents(SerfConfig(name="me", event_buffer=4), stats=rig.stats, emit=rig.events.append,
                    coalescer=None, broadcast=rig.sent.append)
    msg = M.UserEventMsg(10, "deploy", b"v1")
    assert ev.handle(msg)
    assert not ev.handle(msg)  # seen: not news, not delivered again
    assert not ev.handle(M.UserEventMsg(2, "old", b""))  # 4-slot ring, clock at 11
    assert rig.stats["events.too_old"] == 1
    assert [e.name for e in rig.events if isinstance(e, UserEvent)] == ["deploy"]
    ev.send("mine", b"x", coalesce=False)
    assert isinstance(M.decode(rig.sent[-1]), M.UserEventMsg) and len(rig.events) == 2


def test_a_join_that_ignores_old_events_skips_the_peers_ring() -> None:
    rig = Rig()
    ev = UserEvents(SerfConfig(name="me"), stats=rig.stats, emit=rig.events.append,
                    coalescer=None, broadcast=rig.sent.append)
    slot = M.UserEventSlot(3, [M.UserEventEntry("old", b"")])
    ev.merge(M.PushPullState(1, {}, [], 4, [slot], 1), ignore_old=True)
    assert rig.events == [] and not ev.handle(M.UserEventMsg(3, "late", b""))  # older than the peer's clock
    ev.merge(M.PushPullState(1, {}, [], 4, [M.UserEventSlot(5, [M.UserEventEntry("new", b"")])], 1), ignore_old=False)
    assert [e.name for e in rig.events if isinstance(e, UserEvent)] == ["new"]


def test_the_coalescer_delivers_only_the_newest_per_name_when_quiet() -> None:
    rig = Rig()
    co = Coalescer(3.0, 1.0, timers=rig.timers, now=lambda: rig.now, stats=rig.stats, emit=rig.events.append)
    co.add(UserEvent(5, "deploy", b"a", True))
    co.add(UserEvent(7, "deploy", b"b", True))
    co.add(UserEvent(6, "deploy", b"c", True))  # older than what is held: dropped
    co.add(UserEvent(1, "other", b"d", True))
    rig.advance(0.5)
    assert rig.events == []
    rig.advance(1.0)  # quiet for 1 s
    assert [(e.name, e.payload) for e in rig.events if isinstance(e, UserEvent)] == [("deploy", b"b"), ("other", b"d")]
    assert rig.stats["events.coalesced"] == 1


# ---------------------------------------------------------------------------- queues


def test_broadcast_queues_fill_a_packet_intents_first_and_prune_beyond_their_depth() -> None:
    stats: collections.Counter[str] = collections.Counter()
    out = SerfBroadcasts(4, 2, stats)
    out.queue(out.events, b"e" * 10)
    out.queue(out.intents, b"i" * 10)
    assert out.get(2, 13, 3) == [b"i" * 10]  # room for one: the intent
    for i in range(3):
        out.queue(out.queries, bytes([i]) * 5)
    assert stats["broadcasts.pruned"] == 1 and len(out.queries) == 2


def test_the_event_queue_drops_the_oldest_when_full_and_wakes_the_driver() -> None:
    stats: collections.Counter[str] = collections.Counter()
    wakes: list[int] = []
    q = EventQueue(2, stats, lambda: wakes.append(1))
    events: list[Event] = [
        MemberEvent(EventType.MEMBER_JOIN, []), UserEvent(1, "a", b"", False), UserEvent(2, "b", b"", False)
    ]
    for e in events:
        q.emit(e)
    assert q.drain() == events[1:] and stats["events.dropped"] == 1 and len(wakes) == 3
    assert q.drain() == []


# ---------------------------------------------------------------------------- leave, joins


def stage(seq: LeaveSequence) -> LeaveStage:
    return seq.stage


def test_a_lone_leave_runs_its_stages_to_left() -> None:
    rig = Rig()
    config = SerfConfig(name="me", memberlist=Config.fast(name="me"))
    ml = Memberlist(config.memberlist_config(), Address("10.0.0.1", 7946), None, now=0.0)
    left: list[float] = []
    seq = LeaveSequence(config, ml, timers=rig.timers, outbox=SerfBroadcasts(4, 10, rig.stats),
                        leaving=lambda: True, on_left=lambda: left.append(rig.now))
    seq.begin(M.encode(M.Leave(1, "me")), has_peers=False)
    assert stage(seq) == LeaveStage.INTENT_QUEUED
    rig.advance(0.0)
    assert stage(seq) == LeaveStage.PROPAGATING and not left  # nobody to tell: memberlist is done at once
    rig.advance(config.leave_propagate_delay)
    assert left == [config.leave_propagate_delay]


def test_a_leave_with_peers_waits_for_its_intent_to_be_sent() -> None:
    rig = Rig()
    config = SerfConfig(name="me", memberlist=Config.fast(name="me"))
    ml = Memberlist(config.memberlist_config(), Address("10.0.0.1", 7946), None, now=0.0)
    out = SerfBroadcasts(1, 10, rig.stats)
    seq = LeaveSequence(config, ml, timers=rig.timers, outbox=out, leaving=lambda: True, on_left=lambda: None)
    seq.begin(b"intent", has_peers=True)
    rig.advance(0.0)
    assert stage(seq) == LeaveStage.INTENT_QUEUED and len(out.intents) == 1
    while len(out.intents):  # the intent goes out its full retransmit count
        out.get(2, 1400, 1)
    rig.advance(0.0)
    assert stage(seq) in (LeaveStage.MEMBERLIST_LEAVE, LeaveStage.PROPAGATING)


def test_a_join_gossips_its_intent_once_all_its_push_pulls_ended_and_one_succeeded() -> None:
    joins = PendingJoins()
    joins.add([1, 2], ignore_old=True)
    assert joins.begin(9) is None and not joins.merging
    first = joins.begin(1)
    assert first is not None and joins.merging and joins.ignore_old
    joins.end()
    assert not joins.merging and not joins.record(first, 1, False)  # one still pending
    second = joins.begin(2)
    assert second is not None and joins.record(second, 2, True)
    assert joins.results == {1: False, 2: True}


def test_the_lamport_ring_keeps_each_item_once_per_time_and_refuses_what_it_cannot_tell_apart() -> None:
    stats: collections.Counter[str] = collections.Counter()
    ring: LamportRing[M.UserEventSlot, M.UserEventEntry] = LamportRing(
        2, lambda lt: M.UserEventSlot(lt, []), lambda slot: slot.events, stats, "too_old"
    )
    a, b = M.UserEventEntry("a", b""), M.UserEventEntry("b", b"")
    assert ring.record(5, a) and ring.record(5, b) and not ring.record(5, a)
    assert ring.clock.time() == 6
    assert ring.record(6, a)  # another time, another slot
    assert not ring.record(3, a) and stats["too_old"] == 1  # 2 slots: time 3 may be overwritten
    ring.min_time = 7
    assert not ring.record(7 - 1, b) and stats["too_old"] == 1
    assert ring.slots[5 % 2] is not None and [e.name for e in ring.slots[5 % 2].events] == ["a", "b"]


# ---------------------------------------------------------------------------- queries, conflicts


def queries_rig(tags: dict[str, str]) -> tuple[Rig, Memberlist, Queries, Membership, list[bytes]]:
    rig = Rig()
    config = SerfConfig(name="me", memberlist=Config.fast(name="me"))
    ml = Memberlist(config.memberlist_config(), Address("10.0.0.1", 7946), None, now=0.0)
    members, _, _ = rig.membership(config)
    local: list[bytes] = []
    queries = Queries(
        config, ml, members, stats=rig.stats, timers=rig.timers, rng=random.Random(3), emit=rig.events.append,
        wake=lambda: None, broadcast=rig.sent.append, deliver_local=local.append, tags=lambda: tags,
        shut_down=lambda: rig.state == SerfState.SHUTDOWN, encrypted=lambda: False,
    )
    return rig, ml, queries, members, local


def query_msg(qid: int, name: str, filters: list[bytes]) -> M.QueryMsg:
    return M.QueryMsg(4, qid, bytes([10, 0, 0, 2]), 7946, "asker", filters, 0, 0, 5 * 10**9, name, b"q?")


def test_a_query_is_answered_once_to_the_asker_and_filters_decide_who_answers() -> None:
    rig, ml, queries, _, _ = queries_rig({"role": "db"})
    assert queries.handle(query_msg(1, "other-role", [M.encode_tag_filter("role", "^web$")]))  # passed on,
    assert rig.events == []  # but not for us
    assert queries.handle(query_msg(2, "ask", [M.encode_tag_filter("role", "^db$")]))
    assert not queries.handle(query_msg(2, "ask", [M.encode_tag_filter("role", "^db$")]))  # seen: once
    (event,) = rig.events
    assert isinstance(event, QueryEvent) and event.name == "ask" and event.source_node == "asker"
    ml.drain()
    assert event.respond(b"yes") and not event.respond(b"again")
    assert rig.stats["query.respond_refused"] == 1
    (out,) = [o for o in ml.drain() if isinstance(o, SendPacket)]
    assert out.addr == Address("10.0.0.2", 7946)


def test_our_own_query_is_answered_without_the_network_and_collected_until_its_deadline() -> None:
    rig, _ml, queries, _, local = queries_rig({})
    handle = queries.query("ask", b"", 0.0, QueryParams(timeout=2.0))
    assert isinstance(M.decode(rig.sent[-1]), M.QueryMsg)  # gossiped
    (event,) = rig.events
    assert isinstance(event, QueryEvent) and event.respond(b"mine")
    (answer,) = local  # straight back to us, as if from the network
    response = M.decode(answer)
    assert isinstance(response, M.QueryResponseMsg)
    queries.handle_response(response)
    assert [(r.from_, r.payload) for r in handle.responses] == [("me", b"mine")]
    rig.advance(2.0)
    assert handle.closed


def test_a_conflict_query_is_answered_with_the_member_we_hold_under_that_name() -> None:
    rig = Rig()
    members, _, _ = rig.membership()
    members.notify_join(Node("dup", "10.0.0.7", 7000))
    conflicts = NameConflicts(
        SerfConfig(name="me"), lambda: Node("me", "10.0.0.1", 7946), members, stats=rig.stats,
        local_state=lambda: rig.state, during_join=lambda: False,
        ask=lambda _op, _payload: QueryHandle(1, 1, "q", 1.0, 1), shutdown=lambda: None,
    )
    answers: list[bytes] = []

    def respond(payload: bytes) -> bool:
        answers.append(payload)
        return True

    def ask(name: bytes) -> QueryEvent:
        return QueryEvent(1, 1, "_serf_conflict", name, "x", 1.0, respond)

    conflicts.answer(ask(b"dup"))
    conflicts.answer(ask(b"me"))  # a claimant never answers about its own name
    (raw,) = answers
    held = M.decode_conflict_response(raw)
    assert held is not None and (held.name, held.addr, held.port) == ("dup", bytes([10, 0, 0, 7]), 7000)
