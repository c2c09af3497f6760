"""The TTL driver inside real registry servers (in process, real loopback sockets): replication
between two registries over the Serf app channel, the repl tag, what a bug in the timer does, and the
metrics.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from registry.metrics import render
from registry.server import RegistryServer, ServerConfig
from registry.ttl.driver import bundle, unbundle
from registry.ttl.entry import Refused, RefusedReason
from registry.ttl.store import Change
from tests.waiting import aeventually

GROUP = "ttl-driver"


def _config(ident: str, seeds: list[str] | None = None) -> ServerConfig:
    return ServerConfig(id=ident, bind=("127.0.0.1", 0), addr=("127.0.0.1", 0), profile="fast",
                        registries=seeds or [])


@pytest.fixture
async def pair() -> AsyncIterator[tuple[RegistryServer, RegistryServer]]:
    a = RegistryServer(_config("ra"))
    b = RegistryServer(_config("rb"))
    try:
        await a.start()
        b.config.registries.append(a.gossip_address)
        await b.start()
        await aeventually(lambda: a.ttl.peers == {"rb"} and b.ttl.peers == {"ra"}, 30, "each the other's peer")
        yield a, b
    finally:
        await b.close()
        await a.close()


def _ids(server: RegistryServer, group: str = GROUP) -> list[str]:
    return [s.id for s in server.catalog.members(group)]


async def test_write_delete_and_expiry_reach_the_other_registry(pair: tuple[RegistryServer, RegistryServer]) -> None:
    a, b = pair
    assert a.agent.local_member().tags["repl"] == "1"
    entry = a.ttl.write(GROUP, "svc-1", addr="127.0.0.1:8001", ttl_ms=60_000, tags={"zone": "z1"})
    assert entry.writer == "ra" and a.ttl.entry(GROUP, "svc-1") == entry
    await aeventually(lambda: _ids(b) == ["svc-1"], 10, "svc-1 on rb")
    service = b.catalog.members(GROUP)[0]
    assert service.addr == "127.0.0.1:8001" and service.tags["zone"] == "z1"
    assert [e.id for e in b.ttl.entries(GROUP)] == ["svc-1"]

    assert b.ttl.delete(GROUP, "svc-1") is True
    assert b.ttl.delete(GROUP, "svc-1") is False  # not held live any more
    await aeventually(lambda: _ids(a) == [] and a.ttl.entry(GROUP, "svc-1") is None, 10, "the delete on ra")

    b.ttl.write(GROUP, "short", addr="127.0.0.1:8002", ttl_ms=1_000)
    await aeventually(lambda: _ids(a) == ["short"], 10, "short on ra")
    await aeventually(lambda: _ids(a) == [] and _ids(b) == [], 10, "short expired on both")


async def test_a_gossiping_members_id_is_taken(pair: tuple[RegistryServer, RegistryServer]) -> None:
    a, _ = pair
    with pytest.raises(Refused) as info:
        a.ttl.write("registry-group", "rb", addr="127.0.0.1:1", ttl_ms=10_000)
    assert info.value.reason is RefusedReason.TAKEN
    assert a.ttl.entry("registry-group", "rb") is None


class InjectedBug(RuntimeError):
    pass


@pytest.mark.handler_errors("InjectedBug")
async def test_a_bug_in_the_timer_is_logged_counted_and_the_timer_goes_on() -> None:
    """The replicator's tick raises the first time the timer fires: the driver logs and counts it and
    arms the timer again, so the entry still expires. A registry alone: no peer's message comes in to
    arm the timer by the way, so the expiry proves the timer itself went on."""
    server = RegistryServer(_config("r-alone"))
    await server.start()
    try:
        ttl = server.ttl
        tick = ttl.replicator.tick
        raised: list[int] = []

        def buggy_tick(*, now_ms: int) -> list[Change]:
            if not raised:
                raised.append(now_ms)
                raise InjectedBug("injected")
            return tick(now_ms=now_ms)

        ttl.replicator.tick = buggy_tick  # type: ignore[method-assign]
        ttl.write(GROUP, "expiring", addr="127.0.0.1:8003", ttl_ms=1_000)
        assert _ids(server) == ["expiring"]
        await aeventually(lambda: raised, 10, "the timer to fire")
        await aeventually(lambda: _ids(server) == [], 10, "the entry expiring after the failed tick")
        assert ttl.counters()["driver.errors"] == 1

        text = render(server._collect())
        assert 'registry_ttl_events_total{key="driver.errors"} 1' in text
        ttl.write(GROUP, "m1", addr="127.0.0.1:8004", ttl_ms=60_000)
        ttl.write(GROUP, "m2", addr="127.0.0.1:8005", ttl_ms=60_000)
        text = render(server._collect())
        assert f'registry_ttl_entries{{group="{GROUP}"}} 2' in text
        assert 'registry_ttl_events_total{key="driver.writes"} 3' in text
    finally:
        await server.close()


def test_bundles_round_trip_and_hostile_bundles_are_refused() -> None:
    messages = [b"a" * 10, b"", b"b" * 300, b"c" * 700]
    bundles = bundle(messages, limit=1_000)
    assert len(bundles) == 2 and all(len(b) <= 1_000 for b in bundles)
    assert [m for b in bundles for m in (unbundle(b) or [])] == messages
    assert bundle([b"x" * 5_000], limit=1_000) == [(5_000).to_bytes(4, "big") + b"x" * 5_000]  # alone, whole
    whole = bundles[0]
    for cut in (1, 3, 5, len(whole) - 1):
        assert unbundle(whole[:cut]) is None
    assert unbundle((2**32 - 1).to_bytes(4, "big") + b"xx") is None
    assert unbundle(b"") == []


async def test_a_registry_joining_a_pool_of_many_groups_gets_them_in_few_streams() -> None:
    """Anti-entropy answers a new registry with one message per group that differs; sent as one stream
    each, 300 groups were 300 streams at once, and memberlist's inbound stream table shed most of them
    (lost until a later round). Bundled per peer, the new registry takes a handful of streams, sheds
    none, and holds every entry after one exchange."""
    a = RegistryServer(_config("r-many"))
    b: RegistryServer | None = None
    await a.start()
    try:
        for g in range(300):
            for i in range(2):
                a.ttl.write(f"many-{g}", f"s{i}", addr=f"127.0.0.1:{9000 + i}", ttl_ms=120_000)
        b = RegistryServer(_config("r-new", [a.gossip_address]))
        await b.start()
        joined = b
        await aeventually(lambda: sum(len(joined.ttl.entries(f"many-{g}")) for g in range(300)) == 600, 30,
                          "the new registry holding all 600 entries")
        stats = b.agent.stats
        shed = {k: v for k, v in stats.items() if k.startswith("tcp.in.shed")}
        assert not shed, f"streams shed on the new registry: {shed}"
    finally:
        if b is not None:
            await b.close()
        await a.close()
