"""The registry's membership -> catalog rule: only `alive` members are in a group's ring.

A member whose leave intent arrived (MEMBER_LEAVING, or a join/update carrying status
leaving) is taken out at once and gets no new keys; it is put back when it refutes."""

from __future__ import annotations

import pytest

from registry.catalog import UnknownGroup
from registry.serf.events import EventType, MemberEvent
from registry.serf.member import Member, MemberStatus
from registry.server import RegistryServer, ServerConfig


def member(name: str, status: MemberStatus = MemberStatus.ALIVE) -> Member:
    return Member(name, "127.0.0.1", 7946, {"group": "web", "addr": f"10.0.0.1:{len(name)}"}, status)


def ids(server: RegistryServer) -> list[str]:
    return [s.id for s in server.catalog.members("web")]


def test_leaving_member_leaves_the_ring_and_comes_back_when_it_refutes() -> None:
    server = RegistryServer(ServerConfig(id="r1"))
    server._on_event(MemberEvent(EventType.MEMBER_JOIN, [member("a"), member("b")]))
    assert ids(server) == ["a", "b"]
    server._on_event(MemberEvent(EventType.MEMBER_LEAVING, [member("b", MemberStatus.LEAVING)]))
    assert ids(server) == ["a"]
    assert all(server.catalog.match("web", f"k{i}")[0].id == "a" for i in range(50))
    server._on_event(MemberEvent(EventType.MEMBER_UPDATE, [member("b", MemberStatus.ALIVE)]))
    assert ids(server) == ["a", "b"]
    server._on_event(MemberEvent(EventType.MEMBER_LEAVING, [member("b", MemberStatus.LEAVING)]))
    server._on_event(MemberEvent(EventType.MEMBER_LEAVE, [member("b", MemberStatus.LEFT)]))
    assert ids(server) == ["a"]


def test_join_or_update_seen_while_leaving_does_not_add() -> None:
    server = RegistryServer(ServerConfig(id="r1"))
    server._on_event(MemberEvent(EventType.MEMBER_JOIN, [member("a", MemberStatus.LEAVING)]))
    assert ids(server) == []
    server._on_event(MemberEvent(EventType.MEMBER_JOIN, [member("a")]))
    server._on_event(MemberEvent(EventType.MEMBER_UPDATE, [member("a", MemberStatus.LEAVING)]))
    with pytest.raises(UnknownGroup):
        server.catalog.match("web", "k")

