"""`Mirror` alone against a real catalog: the events are a real `RegistryCore.watch_all` stream of a
`Catalog` that random batches of gossip and TTL changes drive (no sockets); after each round, Match
and Members on the mirror equal Match and Members on the source. Then hostile events, one by one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from unittest import mock

from hypothesis import given, settings
from hypothesis import strategies as st

from registry.api import RegistryCore
from registry.api_pb import service_pb
from registry.catalog import Catalog, UnknownGroup
from registry.federation import Drop, Mirror
from registry.service import Service
from registry.v1 import registry_pb2 as pb

GROUPS = ("a", "b", "c")
NAMES = ("n0", "n1", "n2", "n3", "n4", "n5")
TTL_IDS = ("n0", "n1", "t0", "t1")  # n0/n1 are also gossip names: a TTL entry held aside on the source
EXT_IDS = ("n1", "t1", "e0", "e1")  # n1/t1 are also gossip names and TTL ids: held aside on the source
ORIGINS = ("etcd", "file")
KEYS = [f"key-{i}" for i in range(64)]
FENCE = "~fence"

Params = tuple[str | None, str | None, str | None]  # replicas, weight and health tags (None: absent)
Op = tuple[str, str, str | None, Params]  # kind (gossip, ttl, ext:<origin>), name or id, group (None: remove), params
Rounds = list[tuple[list[Op], bool]]  # batches, and whether the follower catches up after each

health = st.sampled_from([None, "passing", "warning", "critical", "bogus"])
params = st.tuples(st.sampled_from([None, "2", "3", "bad"]), st.sampled_from([None, "1", "2"]), health)
gossip_op = st.tuples(st.just("gossip"), st.sampled_from(NAMES), st.sampled_from((*GROUPS, None)), params)
ttl_op = st.tuples(st.just("ttl"), st.sampled_from(TTL_IDS), st.sampled_from((*GROUPS, None)), params)
#: (ops of one catalog batch, kind of the batch, whether the follower catches up after it)
ext_op = st.tuples(st.sampled_from([f"ext:{o}" for o in ORIGINS]), st.sampled_from(EXT_IDS),
                   st.sampled_from((*GROUPS, None)), params)
batches = st.lists(st.tuples(st.lists(gossip_op | ttl_op | ext_op, min_size=1, max_size=4), st.booleans()),
                   min_size=1, max_size=12)


def tags_of(group: str, addr: str, p: Params) -> dict[str, str]:
    replicas, weight, h = p
    tags = {"group": group, "addr": addr}
    if replicas is not None:
        tags["replicas"] = replicas
    if weight is not None:
        tags["weight"] = weight
    if h is not None:
        tags["health"] = h
        tags["health_note"] = f"note of {addr}"
    return tags


def apply_batch(catalog: Catalog, ops: list[Op],
                ttl_groups: dict[str, str]) -> None:
    """One batch on the source: the gossip ops in one apply_many, the TTL ops in one apply_ttl, then each
    external op (an adapter's import) in an apply_external of its origin."""
    gossip = [(name, None if g is None else tags_of(g, f"{name}@{g}", p)) for kind, name, g, p in ops
              if kind == "gossip"]
    ttl: list[tuple[str, str, Mapping[str, str] | None]] = []
    for kind, id_, g, p in ops:
        if kind != "ttl":
            continue
        if g is None:  # remove the entry wherever the test put it last
            old = ttl_groups.pop(id_, None)
            if old is not None:
                ttl.append((old, id_, None))
        else:
            ttl_groups[id_] = g
            ttl.append((g, id_, tags_of(g, f"{id_}#ttl@{g}", p)))
    if gossip:
        catalog.apply_many(gossip)
    if ttl:
        catalog.apply_ttl(ttl)
    for kind, id_, g, p in ops:  # imported by an adapter (issue 18): kind and origin mirrored too
        if not kind.startswith("ext:"):
            continue
        origin = kind[4:]
        old = ttl_groups.pop(f"{kind}/{id_}", None)
        if old is not None and old != g:
            catalog.apply_external(origin, [(old, id_, None)])
        if g is not None:
            ttl_groups[f"{kind}/{id_}"] = g
            catalog.apply_external(origin, [(g, id_, tags_of(g, f"{id_}#{origin}@{g}", p))])


def view(catalog: Catalog, s: Service) -> tuple[object, ...]:
    p = service_pb(s, catalog.ring_node(s))
    return p.id, p.addr, p.kind, p.origin, p.health, p.health_note, p.replicas, p.weight


def assert_same(source: Catalog, mirror: Catalog) -> None:
    assert source.groups() == mirror.groups()
    for g in source.groups():
        assert [view(source, s) for s in source.members(g)] == [view(mirror, s) for s in mirror.members(g)], g
        for key in KEYS:
            try:
                want = [s.id for s in source.match(g, key, 2)]
            except UnknownGroup:
                want = []
            try:
                got = [s.id for s in mirror.match(g, key, 2)]
            except UnknownGroup:
                got = []
            assert got == want, (g, key)


class Follow:
    """The source's all-groups stream into a Mirror, caught up to a fence change (no timing involved)."""

    def __init__(self, catalog: Catalog, core: RegistryCore, mirror: Mirror) -> None:
        self.catalog, self.core, self.mirror = catalog, core, mirror
        self.stream: AsyncIterator[bytes] = core.watch_all()
        self.fences = 0
        self.resyncs = 0

    async def catch_up(self) -> None:
        self.fences += 1
        self.catalog.apply(FENCE, {"group": FENCE, "addr": str(self.fences)})
        want = self.catalog.version(FENCE)
        while self.mirror.version(FENCE) != want:
            self.mirror.apply(await self.stream.__anext__(), now=0.0)
            if self.mirror.needs_resync:  # what the follower does: a new stream, the mirror reset
                await self.restart()

    async def restart(self) -> None:
        await self.stream.aclose()  # type: ignore[attr-defined]
        self.resyncs += 1
        self.mirror.reset()
        self.stream = self.core.watch_all()

    async def close(self) -> None:
        await self.stream.aclose()  # type: ignore[attr-defined]


async def _run(algorithm: str, rounds: Rounds,
               queue_size: int) -> Mirror:
    with mock.patch("registry.api_watch.WATCH_QUEUE_SIZE", queue_size):
        catalog = Catalog(algorithm, default_replicas=8)
        core = RegistryCore(catalog)
        mirror = Mirror("dc2")
        follow = Follow(catalog, core, mirror)
        ttl_groups: dict[str, str] = {}
        try:
            await follow.catch_up()
            assert mirror.synced
            for ops, catch_up in rounds:
                apply_batch(catalog, ops, ttl_groups)
                if catch_up:
                    await follow.catch_up()
                    assert_same(catalog, mirror.catalog)
            await follow.catch_up()
            assert_same(catalog, mirror.catalog)
        finally:
            await follow.close()
            core.close()
    assert not mirror.dropped, mirror.dropped
    return mirror


@settings(max_examples=100, deadline=None)
@given(rounds=batches, queue_size=st.sampled_from([3, 1024]))
def test_mirror_matches_its_source_consistent(rounds: Rounds,
                                              queue_size: int) -> None:
    """"consistent" (the default): followed exactly, through overflows (queue 3: a resync sequence)."""
    mirror = asyncio.run(_run("consistent", rounds, queue_size))
    assert not mirror.anomalies


@settings(max_examples=100, deadline=None)
@given(rounds=batches, queue_size=st.sampled_from([3, 1024]))
def test_mirror_matches_its_source_chash(rounds: Rounds,
                                         queue_size: int) -> None:
    """"chash": insert order matters; an event that does not say it makes the follower resync."""
    asyncio.run(_run("chash", rounds, queue_size))


# -- hostile and lifecycle events, one by one ------------------------------------------------------------


def _svc(id_: str, group: str = "web", **kw: object) -> pb.Service:
    return pb.Service(id=id_, group=group, addr=f"{id_}:1", tags={"group": group, "addr": f"{id_}:1"},
                      replicas=8, weight=1, health="passing", kind="gossip", **kw)  # type: ignore[arg-type]


RING = pb.RingInfo(algorithm="consistent", default_replicas=8)
MARKER = pb.WatchEvent(group="", snapshot=True, ring=RING)


def _synced(*ids: str) -> Mirror:
    m = Mirror("dc2")
    m.apply(pb.WatchEvent(group="web", version=5, snapshot=True, ring=RING, services=[_svc(i) for i in ids]), now=0)
    m.apply(MARKER, now=0)
    assert m.synced and not m.dropped
    return m


def _ids(m: Mirror, group: str = "web") -> list[str]:
    return [s.id for s in m.catalog.members(group)]


def test_hostile_events_are_dropped_and_counted() -> None:
    m = Mirror("dc2")
    m.apply(pb.WatchEvent(group="web", version=1, added=[_svc("x")]), now=0)
    assert m.dropped == {Drop.BEFORE_SNAPSHOT: 1} and m.catalog.groups() == []
    m = _synced("a", "b")
    cases: list[tuple[bytes | pb.WatchEvent, Drop]] = [
        (b"\xff\xff\xff", Drop.BAD_BYTES),
        (pb.WatchEvent(group="web", version=5, added=[_svc("c")]), Drop.OLD_VERSION),  # not newer
        (pb.WatchEvent(group="web", version=4, removed=[_svc("a")]), Drop.OLD_VERSION),  # backwards
        (pb.WatchEvent(group="new", version=1, removed=[_svc("a", "new")]), Drop.UNKNOWN_GROUP),
        (pb.WatchEvent(group="new", version=1, updated=[_svc("a", "new")]), Drop.UNKNOWN_GROUP),
        (pb.WatchEvent(group="web", version=6, added=[_svc("c", "api")]), Drop.BAD_SERVICE),  # another group
        (pb.WatchEvent(group="web", version=6, added=[_svc("c"), _svc("c")]), Drop.BAD_SERVICE),  # id twice
        (pb.WatchEvent(group="web", version=6, added=[_svc("")]), Drop.BAD_SERVICE),
        (pb.WatchEvent(group="web", version=6, added=[_svc("c", health_note="x")], updated=[_svc("c")]),
         Drop.BAD_SERVICE),
        (pb.WatchEvent(group="web", version=6, added=[pb.Service(id="c", group="web", health="sick")]),
         Drop.BAD_SERVICE),
        (pb.WatchEvent(group="", version=6, added=[_svc("c", "")]), Drop.BAD_SERVICE),  # a delta without group
        # sizes a registry could not hold (registry/limits.py): an id, an addr, an origin, tags
        (pb.WatchEvent(group="web", version=6, added=[_svc("c" * 129)]), Drop.BAD_SERVICE),
        (pb.WatchEvent(group="web", version=6, added=[pb.Service(id="c", group="web", addr="h" * 300)]),
         Drop.BAD_SERVICE),
        (pb.WatchEvent(group="web", version=6, added=[pb.Service(id="c", group="web", origin="o" * 129)]),
         Drop.BAD_SERVICE),
        (pb.WatchEvent(group="web", version=6, added=[pb.Service(id="c", group="web", tags={"k": "v" * 2000})]),
         Drop.BAD_SERVICE),
    ]
    for event, reason in cases:
        before = dict(m.dropped)
        m.apply(event, now=1)
        assert m.dropped[reason] == before.get(reason, 0) + 1, (event, reason, m.dropped)
        assert _ids(m) == ["a", "b"] and m.catalog.groups() == ["web"] and m.version("web") == 5
    m.apply(pb.WatchEvent(group="web", version=6, added=[_svc("c")]), now=2)  # a good one still applies
    assert _ids(m) == ["a", "b", "c"] and m.version("web") == 6 and not m.needs_resync
    m.apply(pb.WatchEvent(group="web", version=9, removed=[_svc("c")]), now=3)  # a gap: applied, resync asked
    assert _ids(m) == ["a", "b"] and m.needs_resync and m.anomalies


def test_a_bad_event_breaks_the_whole_snapshot_sequence() -> None:
    m = _synced("a", "b")
    m.apply(pb.WatchEvent(group="api", version=3, snapshot=True, ring=RING, services=[_svc("p", "api")]), now=1)
    m.apply(pb.WatchEvent(group="api", version=4, added=[_svc("q", "api")]), now=1)  # a delta inside it
    assert m.dropped[Drop.IN_SEQUENCE] == 1 and m.needs_resync
    m.apply(pb.WatchEvent(group="web", version=6, snapshot=True, ring=RING, services=[_svc("z")]), now=1)
    m.apply(MARKER, now=1)
    assert m.dropped[Drop.BROKEN_SEQUENCE] == 2  # the rest, marker included: nothing of it published
    assert m.catalog.groups() == ["web"] and _ids(m) == ["a", "b"]
    # a snapshot whose ring disagrees with its sequence's, and an unknown algorithm, break it too
    m.apply(pb.WatchEvent(group="api", version=3, snapshot=True, ring=RING, services=[_svc("p", "api")]), now=1)
    m.apply(pb.WatchEvent(group="web", version=7, snapshot=True, services=[_svc("a")],
                          ring=pb.RingInfo(algorithm="chash", default_replicas=8)), now=1)
    m.apply(MARKER, now=1)
    m.apply(pb.WatchEvent(group="", snapshot=True, ring=pb.RingInfo(algorithm="nope")), now=1)
    assert m.dropped[Drop.BAD_RING] == 2 and _ids(m) == ["a", "b"]


def test_reset_keeps_the_copy_until_the_new_source_is_whole_and_staleness() -> None:
    m = _synced("a", "b")
    assert m.stale_for(100) is None
    m.mark_lost(now=10)
    m.mark_lost(now=12)  # the first loss counts
    assert m.stale_for(15) == 5 and _ids(m) == ["a", "b"]
    m.reset()  # a new source: versions start over (lower than the old source's: accepted)
    assert not m.synced
    m.apply(pb.WatchEvent(group="web", version=1, added=[_svc("x")]), now=16)  # before its snapshot
    assert m.dropped[Drop.BEFORE_SNAPSHOT] == 1
    m.apply(pb.WatchEvent(group="api", version=2, snapshot=True, ring=RING, services=[_svc("p", "api")]), now=16)
    assert _ids(m) == ["a", "b"] and m.stale_for(17) == 7  # readers still get the old copy
    m.apply(MARKER, now=18)
    assert m.synced and m.stale_for(19) is None
    assert m.catalog.groups() == ["api"] and m.version("api") == 2 and m.version("web") == 0  # web is gone


def test_chash_member_changed_and_back_in_one_batch_is_followed() -> None:
    """A chash member changed and changed back within one batch is re-inserted last on the source (Go's
    Upsert per event), which moves its shared points: the Watch event must say so (as `updated`), or a
    copy keeps it in its old place (found by hypothesis; the other change makes the event non-empty)."""

    async def run() -> None:
        catalog = Catalog("chash", default_replicas=8)
        core = RegistryCore(catalog)
        mirror = Mirror("dc2")
        follow = Follow(catalog, core, mirror)
        try:
            catalog.apply_many([(f"m{i}", {"group": "g", "addr": f"m{i}:1"}) for i in range(4)])
            await follow.catch_up()
            catalog.apply_many([("m0", {"group": "g", "addr": "elsewhere:1"}), ("m0", {"group": "g", "addr": "m0:1"}),
                                ("m3", None)])
            await follow.catch_up()
            assert [s.id for s in catalog.members("g")] == ["m1", "m2", "m0"]  # m0 re-inserted last
            assert_same(catalog, mirror.catalog)
        finally:
            await follow.close()
            core.close()

    asyncio.run(run())


async def test_imported_services_of_another_datacenter_keep_their_kind_and_origin() -> None:
    """dc2 holds services its etcd adapter imported (EXTERNAL, origin "etcd") beside a gossiping one; dc1's
    mirror of it, served by the native front: Members(datacenter="dc2") says external and etcd (they were
    mirrored as gossip, origin lost), Match answers them as dc2's catalog does, and a change follows."""
    from registry.client import AsyncRpcClient
    from tests.registry.rpc_fixtures import async_wait_for, start_server
    from tests.registry.test_api_datacenter import Datacenters

    dc2 = Catalog()
    dc2.apply("g0", {"group": "db", "addr": "10.2.0.1:5432"})
    dc2.apply_external("etcd", [("db", f"pg{i}", {"group": "db", "addr": f"10.2.1.{i}:5432"}) for i in range(3)])
    core = RegistryCore(dc2)
    dcs = Datacenters("dc1")
    mirror = dcs.follow("dc2", core)
    server = await start_server(Catalog(), "native")
    server.core.federation = dcs
    try:
        await async_wait_for(lambda: mirror.synced, what="the mirror synced")
        async with AsyncRpcClient(f"127.0.0.1:{server.port}", timeout=10.0) as c:
            got = {(s.id, str(s.kind), s.origin) for s in await c.members("db", datacenter="dc2")}
            assert got == {("g0", "gossip", ""), *((f"pg{i}", "external", "etcd") for i in range(3))}, got
            for key in KEYS:
                answer = await c.match("db", key, datacenter="dc2")
                want = dc2.match("db", key)[0]
                assert (answer.id, str(answer.kind), answer.origin) == (want.id, str(want.kind), want.origin), key
            dc2.apply_external("etcd", [("db", "pg0", None)])
            dc2.apply_external("file", [("db", "static", {"group": "db", "addr": "10.2.2.1:5432"})])
            await async_wait_for(lambda: {(s.id, s.origin) for s in mirror.catalog.members("db")} == {
                ("g0", ""), ("pg1", "etcd"), ("pg2", "etcd"), ("static", "file")}, what="the change mirrored")
            [static] = [s for s in await c.members("db", datacenter="dc2") if s.id == "static"]
            assert (str(static.kind), static.origin) == ("external", "file")
    finally:
        await server.stop(None)
        await dcs.close()
        core.close()
