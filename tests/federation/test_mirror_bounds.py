"""What another datacenter's Watch stream can make a mirror hold is bounded (`MirrorLimits`): per group,
per datacenter in all, groups; the catalog a resync builds aside is bounded as the served one.

The sans-I/O `Mirror` is fed real `pb.WatchEvent`s (it is the real thing); then the whole path once:
a `Federation` following a real registry front on loopback (a native server over a `Catalog`), whose
group outgrows the bounds and shrinks back. Over the bounds the copy served stays the remote exactly as
it was (never a truncated group) and reports itself stale, the events are dropped and counted
(`over_limit`), and one warning is logged per episode."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from registry.catalog import Catalog
from registry.federation import Drop, Mirror
from registry.federation.federation import Federation
from registry.federation.mirror import MirrorLimits
from registry.metrics import render
from registry.native import start_native
from registry.serf.member import MemberStatus
from registry.v1 import registry_pb2 as pb
from tests.federation.helpers import poll

LIMITS = MirrorLimits(max_services=10, max_per_group=4, max_groups=3)
RING = pb.RingInfo(algorithm="consistent", default_replicas=8)
MARKER = pb.WatchEvent(group="", snapshot=True, ring=RING)


def svc(id_: str, group: str = "web") -> pb.Service:
    return pb.Service(id=id_, group=group, addr=f"{id_}:1", tags={"group": group, "addr": f"{id_}:1"},
                      replicas=8, weight=1, health="passing", kind="gossip")


def snap(group: str, version: int, *ids: str) -> pb.WatchEvent:
    return pb.WatchEvent(group=group, version=version, snapshot=True, ring=RING, services=[svc(i, group) for i in ids])


def delta(group: str, version: int, added: tuple[str, ...] = (), removed: tuple[str, ...] = ()) -> pb.WatchEvent:
    return pb.WatchEvent(group=group, version=version, added=[svc(i, group) for i in added],
                         removed=[svc(i, group) for i in removed])


def held(m: Mirror | Catalog) -> dict[str, list[str]]:
    c = m.catalog if isinstance(m, Mirror) else m
    return {g: [s.id for s in c.members(g)] for g in c.groups()}


def synced(*events: pb.WatchEvent) -> Mirror:
    m = Mirror("dc2", LIMITS)
    for ev in (*events, MARKER):
        m.apply(ev, now=0.0)
    assert m.synced and not m.dropped and m.over_limit is None and m.stale_for(0.0) is None
    return m


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "registry.federation.mirror" and r.levelno == logging.WARNING]


def test_a_snapshot_over_the_bounds_breaks_its_sequence_and_the_copy_goes_stale(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="registry.federation.mirror")
    m = synced(snap("web", 5, "a", "b"))
    m.reset()  # a resync: the new sequence is built aside
    m.apply(snap("api", 3, "p", "q", "r", "s"), now=10.0)  # 4: fits
    assert m.building() == 4
    m.apply(snap("web", 6, "a", "b", "c", "d", "e"), now=11.0)  # 5 in one group: over
    m.apply(MARKER, now=12.0)
    assert m.dropped == {Drop.OVER_LIMIT: 1, Drop.BROKEN_SEQUENCE: 1} and m.building() == 0
    assert held(m) == {"web": ["a", "b"]}  # the copy served: as it was, nothing of the sequence
    assert m.needs_resync and m.over_limit is not None and "'web' has 5 services, more than 4" in m.over_limit
    assert m.stale_for(20.0) == 9.0  # stale from the refused event

    # the building catalog is bounded in all too (its own count, whatever the served one holds)
    m.reset()
    for ev in (snap("g1", 1, "a", "b", "c", "d"), snap("g2", 1, "e", "f", "g", "h"), snap("g3", 1, "i", "j", "k")):
        m.apply(ev, now=13.0)
    m.apply(MARKER, now=13.0)
    assert m.dropped[Drop.OVER_LIMIT] == 2 and held(m) == {"web": ["a", "b"]} and "more than 10 services" in m.over_limit
    m.reset()  # and in groups
    for ev in (snap("g1", 1, "a"), snap("g2", 1, "b"), snap("g3", 1, "c"), snap("g4", 1, "d")):
        m.apply(ev, now=14.0)
    m.apply(MARKER, now=14.0)
    assert m.dropped[Drop.OVER_LIMIT] == 3 and held(m) == {"web": ["a", "b"]} and "more than 3 groups" in m.over_limit
    assert len(warnings(caplog)) == 1, warnings(caplog)  # one episode, one line

    # the datacenter fits again: published, no longer stale, said once
    m.reset()
    m.apply(snap("web", 7, "a", "b", "c", "d"), now=15.0)
    m.apply(MARKER, now=15.0)
    assert held(m) == {"web": ["a", "b", "c", "d"]} and m.over_limit is None and m.stale_for(16.0) is None
    lines = warnings(caplog)
    assert len(lines) == 2 and "fits its bounds again" in lines[1], lines


def test_a_delta_over_the_bounds_is_refused_whole_and_following_stops() -> None:
    m = synced(snap("web", 5, "a", "b", "c"), snap("api", 2, "p", "q", "r", "s"))
    m.apply(delta("web", 6, added=("d",)), now=1.0)  # 4: fits
    m.apply(delta("web", 7, added=("e",), removed=("a",)), now=1.0)  # one out, one in: still 4
    assert held(m)["web"] == ["b", "c", "d", "e"] and not m.dropped and not m.needs_resync
    m.apply(delta("web", 8, added=("f", "g"), removed=("b",)), now=2.0)  # 5: over, nothing of it applied
    assert m.dropped == {Drop.OVER_LIMIT: 1} and held(m)["web"] == ["b", "c", "d", "e"] and m.version("web") == 7
    assert m.needs_resync and m.stale_for(3.0) == 1.0 and m.over_limit is not None
    m.apply(delta("web", 9, removed=("b",)), now=3.0)  # the copy no longer follows: refused until a snapshot
    assert m.dropped[Drop.BEFORE_SNAPSHOT] == 1 and held(m)["web"] == ["b", "c", "d", "e"]

    m = synced(snap("web", 5, "a", "b", "c", "d"), snap("api", 2, "p", "q", "r", "s"))
    m.apply(delta("pay", 1, added=("x",)), now=1.0)  # 9 services, 3 groups: fits
    m.apply(delta("pay", 2, added=("y", "z")), now=1.0)  # 11 in all: over
    assert m.dropped == {Drop.OVER_LIMIT: 1} and held(m)["pay"] == ["x"] and "more than 10 services" in (m.over_limit or "")
    m = synced(snap("web", 5, "a"), snap("api", 2, "p"), snap("pay", 1, "x"))
    m.apply(delta("ops", 1, added=("o",)), now=1.0)  # a fourth group: over
    assert m.dropped == {Drop.OVER_LIMIT: 1} and "ops" not in held(m) and m.version("ops") == 0


@dataclass
class Peer:
    datacenter: str
    rpc_addr: str
    status: MemberStatus = MemberStatus.ALIVE
    rtt_ms: float | None = 1.0


class Pool:
    """What a Federation reads of the WAN pool: here one datacenter's one registry, fixed."""

    def __init__(self, peers: dict[str, list[Peer]]) -> None:
        self._peers = peers

    def peers(self) -> dict[str, list[Peer]]:
        return self._peers

    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]:
        return lambda: None


def metric(text: str, name: str) -> float:
    [line] = [x for x in text.splitlines() if x.startswith(name + '{datacenter="dc2"')]
    return float(line.rsplit(" ", 1)[1])


async def test_a_federation_following_a_real_registry_over_its_bounds() -> None:
    dc2 = Catalog()
    dc2.apply_many([(f"w{i}", {"group": "web", "addr": f"10.2.0.{i}:80"}) for i in range(3)])
    server = await start_native(dc2, "127.0.0.1:0")
    fed = Federation(Pool({"dc2": [Peer("dc2", f"127.0.0.1:{server.port}")]}), local="dc1", tick=0.05,
                     mirror_limits=LIMITS,
                     follower_opts={"retry": 0.05, "max_retry": 0.2, "check": 0.05, "probe": 1.0})
    fed.start()
    try:
        await poll(lambda: fed.known() == ["dc1", "dc2"] and fed.mirror("dc2").synced, 20, "dc2 mirrored")
        mirror = fed.mirror("dc2")
        assert held(mirror) == {"web": ["w0", "w1", "w2"]}
        dc2.apply_many([(f"w{i}", {"group": "web", "addr": f"10.2.0.{i}:80"}) for i in range(3, 6)])  # 6: over
        await poll(lambda: mirror.over_limit is not None, 20, "over the bounds")
        await poll(lambda: mirror.dropped[Drop.OVER_LIMIT] >= 2, 20, "a resync tried, over the bounds too")
        assert held(fed.catalog("dc2")) == {"web": ["w0", "w1", "w2"]}  # still served, as it was
        text = render(fed.metrics())
        assert metric(text, "registry_federation_mirror_over_limit") == 1.0
        assert metric(text, "registry_federation_stale_seconds") > 0.0
        assert 'reason="over_limit"' in text
        dc2.apply_many([(f"w{i}", None) for i in range(2, 6)])  # 2: fits again
        await poll(lambda: mirror.over_limit is None and held(mirror) == {"web": ["w0", "w1"]}, 20, "back in bounds")
        assert fed.stale_for("dc2") == 0.0
        assert metric(render(fed.metrics()), "registry_federation_mirror_over_limit") == 0.0
    finally:
        await fed.close()
        await server.stop(None)
        await asyncio.sleep(0)
