"""`Federation` in a registry server (issue 17): dc1 is an in-process registry with a WAN pool, dc2 is
`registry` processes (fast profile) joined to it over the WAN pool only, with services of their own.

- dc1's `federation.catalog("dc2")` answers Match as dc2's registries answer gRPC MatchBatch, for
  10,000 keys in every exported group, through a join, a leave and a failure in dc2; a subscriber of
  dc2 hears each change, on the loop, versions never going back (a switch's resync included); killing
  the registry dc1 follows moves it to dc2's other one (the time is printed);
- `-wan-export` on dc2 limits what dc1 mirrors (registry-group never); a mirror whose datacenter has
  no registry left is kept, stale with its age, then dropped after `-wan-mirror-ttl`;
- the contract's errors: an unknown datacenter, one not synced yet.
"""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import socket
import time
from pathlib import Path

import pytest

from registry.api_errors import NotSynced, UnknownDatacenter
from registry.catalog import REGISTRY_GROUP, GroupChange
from registry.cli import parse_server_args
from registry.client import AsyncRpcClient, NotFound
from registry.federation.federation import Federation
from registry.register import Register
from registry.server import RegistryServer
from tests.e2e.helpers import Service, procs
from tests.federation.helpers import differences, poll
from tests.federation.proxy import Proxy
from tests.registry.rpc_fixtures import make_certs
from tests.wan.procs import server_config, started, wan_registry

KEYS = [f"user-{i}" for i in range(10_000)]



def fed(server: RegistryServer) -> Federation:
    assert server.federation is not None
    return server.federation



async def converge(server: RegistryServer, addr: str, timeout: float, what: str) -> float:
    """Seconds until dc1's mirror of dc2 answers every key of every group as dc2's registry at `addr`."""
    start = time.monotonic()
    last: list[str] = []
    while True:
        try:
            last = await differences(lambda: fed(server).catalog("dc2"), addr, KEYS)
        except (UnknownDatacenter, NotSynced) as exc:
            last = [str(exc)]
        if not last:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what}: dc1's mirror of dc2 still differs after {timeout}s: {last}")
        await asyncio.sleep(0.05)


def register(ident: str, group: str, seeds: list[str], **kw: object) -> Register:
    return Register(ident, "127.0.0.1:0", "", seeds, group, f"10.9.0.1:{8000 + sum(map(ord, ident))}",
                    profile="fast", datacenter="dc2", **kw)  # type: ignore[arg-type]


async def test_dc1_mirrors_dc2_through_churn_and_switches_when_its_source_dies(tmp_path: Path) -> None:
    with procs() as ps:
        b2, b2_line = wan_registry(ps, tmp_path, "b", "dc2")
        c2, c2_line = wan_registry(ps, tmp_path, "c", "dc2", "-wan-join", b2_line["wan"], lan=[b2.gossip])
        seeds = [b2.gossip, c2.gossip]
        services = [register("web-a", "web", seeds, replicas=64), register("web-b", "web", seeds, weight=2),
                    register("api-a", "api", seeds)]
        proc = Service(ps, tmp_path, "web-proc", seeds, group="web")
        a1 = await started(server_config("a", "dc1", wan_join=[b2_line["wan"]]))
        changes: list[GroupChange] = []
        on_loop: list[bool] = []
        try:
            for s in services:
                await asyncio.to_thread(s.start)
            await asyncio.to_thread(proc.wait_registered)
            took = await converge(a1, b2_line["grpc"], 30, "the first snapshot")
            print(f"dc1's mirror of dc2 equal to dc2 {took:.2f}s after the services were up")
            federation = fed(a1)
            loop = asyncio.get_running_loop()

            def heard(change: GroupChange) -> None:
                changes.append(change)
                on_loop.append(asyncio.get_running_loop() is loop)

            unsubscribe = federation.subscribe("dc2", heard)
            assert federation.known() == ["dc1", "dc2"] and federation.nearest() == ["dc2"]
            info = {d.name: d for d in federation.datacenters()}
            assert info["dc1"].local and not info["dc2"].local and (info["dc1"].registries, info["dc2"].registries) == (1, 2)
            assert federation.stale_for("dc2") == 0.0 and federation.catalog("dc1") is a1.catalog

            # a join, a leave, a failure in dc2
            joined = register("web-c", "web", seeds, replicas=64)
            await asyncio.to_thread(joined.start)
            services.append(joined)
            await converge(a1, b2_line["grpc"], 30, "after a join")
            await poll(lambda: any("web-c" in {s.id for s in c.added} for c in changes), 10, "the join heard")
            await asyncio.to_thread(services[0].stop)
            await converge(a1, b2_line["grpc"], 30, "after a leave")
            proc.proc.signal(signal.SIGKILL)
            await poll(lambda: "web-proc" not in {s.id for s in federation.catalog("dc2").members("web")}, 30,
                       "the failure mirrored")
            await converge(a1, b2_line["grpc"], 30, "after a failure")
            await poll(lambda: any("web-proc" in {s.id for s in c.removed} for c in changes), 10, "the failure heard")

            # the registry dc1 follows is killed: it moves to the other, and is equal to it again
            follower = federation.follower("dc2")
            followed, other = (b2, c2_line) if follower.source == b2_line["grpc"] else (c2, b2_line)
            switches, heard_before = follower.switches, len(changes)
            versions = {c.group: c.version for c in changes}
            killed = time.monotonic()
            followed.proc.signal(signal.SIGKILL)
            switch = await poll(lambda: follower.source == other["grpc"] and federation.mirror("dc2").synced
                                and federation.stale_for("dc2") == 0.0, 30, "the switch to dc2's other registry")
            print(f"switch to dc2's other registry after SIGKILL of the followed one: {switch:.2f}s")
            assert follower.switches > switches
            joined2 = register("api-b", "api", [other["gossip"]])
            await asyncio.to_thread(joined2.start)
            services.append(joined2)
            await asyncio.to_thread(services[1].stop)  # web-b leaves: web changed before the switch too
            await converge(a1, other["grpc"], 30, "after the switch, a join and a leave")
            print(f"equal again {time.monotonic() - killed:.2f}s after the kill")
            await poll(lambda: any("api-b" in {s.id for s in c.added} for c in changes[heard_before:])
                       and any("web-b" in {s.id for s in c.removed} for c in changes[heard_before:]), 10,
                       "the join and the leave after the switch heard")
            for c in changes[heard_before:]:  # the swap's changes and the later ones: never back
                assert c.version > versions.get(c.group, 0), (c.group, c.version, versions)
                versions[c.group] = c.version
            assert all(on_loop) and len(on_loop) == len(changes)
            unsubscribe()
            heard_after = len(changes)

            metrics = {m.name: m.samples for m in a1._collect()}
            assert metrics["registry_federation_mirror_services"] == [({"datacenter": "dc2"}, float(sum(
                len(federation.catalog("dc2").members(g)) for g in federation.catalog("dc2").groups())))]
            assert metrics["registry_federation_follower_switches_total"] == [
                ({"datacenter": "dc2"}, float(follower.switches))]
            assert metrics["registry_federation_stale_seconds"] == [({"datacenter": "dc2"}, 0.0)]
            assert metrics["registry_federation_mirror_synced"] == [({"datacenter": "dc2"}, 1.0)]
            assert metrics["registry_federation_dropped_events_total"] == []  # nothing refused
            await asyncio.to_thread(services[2].stop)
            await converge(a1, other["grpc"], 30, "after a leave, unsubscribed")
            assert len(changes) == heard_after
        finally:
            await a1.stop()
            for s in services:
                await asyncio.to_thread(s.stop)


async def test_wan_export_limits_the_groups_and_a_mirror_without_source_is_dropped_after_its_ttl(
        tmp_path: Path) -> None:
    with procs() as ps:
        b2, b2_line = wan_registry(ps, tmp_path, "b", "dc2", "-wan-export", "web,ttl")
        services = [register("web-a", "web", [b2.gossip]), register("api-a", "api", [b2.gossip])]
        config = dataclasses.replace(server_config("a", "dc1", wan_join=[b2_line["wan"]]), wan_mirror_ttl=2.0)
        a1 = await started(config)
        try:
            with pytest.raises(UnknownDatacenter, match=r"^unknown datacenter 'dc9' \(known: dc1"):
                fed(a1).catalog("dc9")
            for s in services:
                await asyncio.to_thread(s.start)
            await poll(lambda: "dc2" in fed(a1).known(), 30, "dc2 followed")
            federation = fed(a1)
            await poll(lambda: federation.mirror("dc2").synced and federation.catalog("dc2").groups() == ["web"], 30,
                       "dc2's exported groups mirrored")
            async with AsyncRpcClient(b2_line["grpc"]) as c:  # dc2 itself has them all
                assert await c.groups() == ["api", REGISTRY_GROUP, "web"]
            # a one-group Watch with export of a group not exported is refused
            async with AsyncRpcClient(b2_line["grpc"], timeout=5.0) as c:
                with pytest.raises(NotFound, match="not exported"):
                    async for _ in c.watch_events("api", export=True):
                        break

            # dc2 gone: the mirror is kept, stale with its age, then dropped after -wan-mirror-ttl (2 s)
            ids = [s.id for s in federation.catalog("dc2").match_batch("web", KEYS)]
            b2.proc.signal(signal.SIGKILL)
            killed = time.monotonic()
            await poll(lambda: federation.stale_for("dc2") > 0.5, 30, "the mirror stale")
            assert [s.id for s in federation.catalog("dc2").match_batch("web", KEYS)] == ids
            stale = next(d for d in federation.datacenters() if d.name == "dc2").stale_seconds
            assert stale > 0.5
            await poll(lambda: "dc2" not in federation.known(), 60, "the mirror dropped")
            gone = time.monotonic() - killed
            print(f"mirror dropped {gone:.2f}s after dc2's only registry was killed (-wan-mirror-ttl 2 s)")
            assert gone >= 2.0
            with pytest.raises(UnknownDatacenter, match=r"^unknown datacenter 'dc2' \(known: dc1\)$"):
                federation.catalog("dc2")
            metrics = {m.name: m.samples for m in a1._collect()}
            assert metrics["registry_federation_mirrors_dropped_total"] == [({"datacenter": "dc2"}, 1.0)]
        finally:
            await a1.stop()
            for s in services:
                await asyncio.to_thread(s.stop)


async def test_a_resync_after_a_cut_tells_subscribers_the_difference(tmp_path: Path) -> None:
    """dc2 ("chash": insert order matters) reached through a proxy in front of its gRPC port: cut, changes
    in dc2 meanwhile, healed: the resync swaps the mirror's catalog, and a subscriber that applies the
    changes it hears to a snapshot holds the mirror's catalog, members and order."""
    with socket.socket() as probe:  # its gRPC port must be known before it starts (the proxy's target)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    direct = f"127.0.0.1:{port}"
    with Proxy(direct) as proxy, procs() as ps:
        b2, b2_line = wan_registry(ps, tmp_path, "b", "dc2", "-hash", "chash", "-addr", direct,
                                   "-advertise", proxy.address)
        services = [register("web-a", "web", [b2.gossip]), register("web-b", "web", [b2.gossip]),
                    register("api-a", "api", [b2.gossip])]
        a1 = await started(server_config("a", "dc1", wan_join=[b2_line["wan"]]))
        try:
            for s in services:
                await asyncio.to_thread(s.start)
            await converge(a1, direct, 30, "the first snapshot")
            federation = fed(a1)
            copy: dict[str, dict[str, object]] = {}  # group -> id -> service, in insert order
            versions: list[tuple[str, int]] = []

            def heard(change: GroupChange) -> None:
                versions.append((change.group, change.version))
                group = copy.setdefault(change.group, {})
                for svc in change.removed:
                    group.pop(svc.id, None)
                for svc in (*change.added, *change.updated):
                    group.pop(svc.id, None)
                    group[svc.id] = svc

            federation.subscribe("dc2", heard)
            catalog = federation.catalog("dc2")
            for g in catalog.groups():
                copy[g] = {svc.id: svc for svc in catalog.members(g)}
            sequences = federation.mirror("dc2").sequences
            before = {g: catalog.version(g) for g in catalog.groups()}

            proxy.cut()
            await poll(lambda: federation.stale_for("dc2") > 0, 30, "the mirror stale")
            services.append(register("web-c", "web", [b2.gossip]))
            await asyncio.to_thread(services[-1].start)
            await asyncio.to_thread(services[0].stop)  # web-a leaves
            await asyncio.to_thread(services[2].stop)  # api's only service leaves
            async with AsyncRpcClient(direct) as c:
                while [s.id for s in await c.members("web")] != ["web-b", "web-c"] or "api" in await c.groups():
                    await asyncio.sleep(0.05)
            assert [s.id for s in federation.catalog("dc2").members("web")] == ["web-a", "web-b"]  # stale, kept
            proxy.heal()
            took = await converge(a1, direct, 30, "after the cut healed")
            print(f"mirror equal again {took:.2f}s after the cut healed")
            assert federation.mirror("dc2").sequences > sequences  # a resync, not deltas
            await poll(lambda: list(copy.get("web", {})) == ["web-b", "web-c"] and not copy.get("api"), 10,
                       "the swap heard")
            catalog = federation.catalog("dc2")
            assert {g: list(m) for g, m in copy.items() if m} == {g: [s.id for s in catalog.members(g)]
                                                                  for g in catalog.groups()}
            assert all(copy["web"][s.id] == s for s in catalog.members("web"))  # tags, health, kind too
            # versions go on from the old catalog's, a group gone in the swap included (api: its removal)
            assert {g for g, _ in versions} == {"web", "api"}
            assert all(v > before[g] for g, v in versions), (versions, before)
            assert catalog.version("api") > before["api"] and "api" not in catalog.groups()
        finally:
            await a1.stop()
            for s in services:
                await asyncio.to_thread(s.stop)


async def test_a_datacenter_not_synced_yet_is_not_synced(tmp_path: Path) -> None:
    """dc2's registry tells the WAN pool a gRPC address where nothing answers: dc2 is known, never synced."""
    with procs() as ps:
        _, b2_line = wan_registry(ps, tmp_path, "b", "dc2", "-advertise", "127.0.0.1:1")
        a1 = await started(server_config("a", "dc1", wan_join=[b2_line["wan"]]))
        try:
            await poll(lambda: "dc2" in fed(a1).known(), 30, "dc2 followed")
            await poll(lambda: fed(a1).follower("dc2").streams >= 2, 30, "two streams tried")
            with pytest.raises(NotSynced, match=r"^datacenter 'dc2' not synced yet$"):
                fed(a1).catalog("dc2")
            assert fed(a1).nearest() == []
            assert [(d.name, d.synced) for d in fed(a1).datacenters()] == [("dc1", True), ("dc2", False)]
        finally:
            await a1.stop()


async def test_a_registry_of_dc2_with_a_bad_rpc_address_does_not_end_its_follower(tmp_path: Path) -> None:
    """A WAN peer whose `rpc` tag is no address (another operator's registry, a bug) is skipped, and dc2 is
    followed through its other registry once there is one (the follower's task ended on it)."""
    bad = await started(dataclasses.replace(server_config("a", "dc2"), advertise="127.0.0.1:notaport"))
    assert bad.wan is not None
    a1 = await started(server_config("a", "dc1", wan_join=[bad.wan.address]))
    try:
        with procs() as ps:
            await poll(lambda: "dc2" in fed(a1).known() and fed(a1).follower("dc2").streams >= 2, 30,
                       "the bad address tried twice")
            b2, _ = wan_registry(ps, tmp_path, "b", "dc2", "-wan-join", bad.wan.address, lan=[bad.gossip_address])
            service = register("web-a", "web", [b2.gossip])
            await asyncio.to_thread(service.start)
            try:
                await poll(lambda: fed(a1).mirror("dc2").synced and fed(a1).catalog("dc2").groups() == ["web"], 30,
                           "dc2 mirrored from its good registry")
                assert "notaport" in fed(a1).follower("dc2").last_error or fed(a1).follower("dc2").switches == 0
            finally:
                await asyncio.to_thread(service.stop)
    finally:
        await a1.stop()
        await bad.stop()


async def test_followers_dial_with_the_registrys_tls_files(tmp_path: Path) -> None:
    """dc2 serves TLS only; dc1 serves TLS with the same CA: its follower verifies dc2 with -tls-ca."""
    certs = make_certs(tmp_path)
    tls = ("-tls-cert", certs["server_cert"], "-tls-key", certs["server_key"])
    with procs() as ps:
        b2, b2_line = wan_registry(ps, tmp_path, "b", "dc2", *tls)
        services = [register("web-a", "web", [b2.gossip])]
        config = dataclasses.replace(server_config("a", "dc1", wan_join=[b2_line["wan"]]), tls_cert=certs["server_cert"],
                                     tls_key=certs["server_key"], tls_ca=certs["ca"])
        a1 = await started(config)
        try:
            await asyncio.to_thread(services[0].start)
            await poll(lambda: "dc2" in fed(a1).known() and fed(a1).mirror("dc2").synced
                       and fed(a1).catalog("dc2").groups() == ["web"], 30, "dc2 mirrored over TLS")
        finally:
            await a1.stop()
            for s in services:
                await asyncio.to_thread(s.stop)


def test_wan_mirror_ttl_and_export_flags() -> None:
    base = ["-id", "x", "-wan-bind", "127.0.0.1:0"]
    c = parse_server_args([*base, "-wan-mirror-ttl", "90m", "-wan-export", "web, api"]).config
    assert (c.wan_mirror_ttl, c.wan_export) == (5400.0, frozenset({"web", "api"}))
    c = parse_server_args(base).config
    assert (c.wan_mirror_ttl, c.wan_export) == (72 * 3600.0, None)
