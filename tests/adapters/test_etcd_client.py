"""The etcd adapter's client robustness against real etcd processes (Debian's etcd 3.4 on loopback):
a 3-member cluster losing the member the adapter uses, auth tokens that expire, a prefix bigger than one
gRPC message.  The harness (Recorder, Views, ...) is test_etcd's: etcd itself is never mocked."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from registry.adapters.base import AdapterError, CatalogView
from registry.adapters.etcd_conn import Endpoints
from tests.adapters.test_etcd import (
    Etcd,
    Recorder,
    Views,
    etcd,  # noqa: F401 - the fixture
    exported,
    run_adapter,
    stop,
    svc,
    until,
)
from tests.agentproc import free_port

aetcd = pytest.importorskip("aetcd", reason="pip install 'hashring-registry[etcd]'")

pytestmark = pytest.mark.etcd


class Cluster:
    """``n`` etcd members on loopback forming one cluster (peer and client ports picked free); a member
    can be killed (SIGKILL: no goodbye, as a crash or a pulled cable) and started again."""

    def __init__(self, data: Path, n: int = 3) -> None:
        self.data = data
        self.ports = [(free_port(), free_port()) for _ in range(n)]
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * n
        self.token = uuid.uuid4().hex

    def endpoint(self, i: int) -> str:
        return f"127.0.0.1:{self.ports[i][0]}"

    @property
    def endpoints(self) -> str:
        return ",".join(self.endpoint(i) for i in range(len(self.ports)))

    def start(self, i: int) -> None:
        client, peer = (f"http://127.0.0.1:{p}" for p in self.ports[i])
        initial = ",".join(f"m{j}=http://127.0.0.1:{pp}" for j, (_, pp) in enumerate(self.ports))
        args = ["--name", f"m{i}", "--data-dir", str(self.data / f"m{i}"), "--listen-client-urls", client]
        args += ["--advertise-client-urls", client, "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer]
        args += ["--initial-cluster", initial, "--initial-cluster-state", "new", "--initial-cluster-token", self.token]
        # a quick election (the default 1 s timeout would do, only slower)
        args += ["--heartbeat-interval", "50", "--election-timeout", "500"]
        with open(self.data / f"m{i}.log", "ab") as log:
            self.procs[i] = subprocess.Popen(["etcd", *args], stdout=subprocess.DEVNULL, stderr=log)

    async def leader(self) -> tuple[int] | None:
        """(the index of the member that leads,) by Maintenance.Status of each; None if none does yet."""
        import grpc.aio
        from aetcd import rpc  # type: ignore[import-untyped]

        for i in range(len(self.ports)):
            async with grpc.aio.insecure_channel(
                self.endpoint(i), options=[("grpc.use_local_subchannel_pool", 1)]
            ) as ch:
                st = await rpc.MaintenanceStub(ch).Status(rpc.StatusRequest(), timeout=2)
                if st.leader and st.leader == st.header.member_id:
                    return (i,)
        return None

    def kill(self, i: int) -> None:
        p = self.procs[i]
        if p is not None:
            p.send_signal(signal.SIGKILL)
            p.wait(10)
            self.procs[i] = None


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    for i in range(len(c.ports)):
        c.start(i)
    try:
        yield c
    finally:
        for i in range(len(c.ports)):
            c.kill(i)


def _adapter(**kw: str) -> Any:
    from registry.adapters.etcd import EtcdAdapter

    return EtcdAdapter(retry="0.2", **{"lease_ttl": "2", **kw})


async def _client(endpoint: str) -> Any:
    host, port = endpoint.split(":")
    c = aetcd.Client(host=host, port=int(port), timeout=5)
    await until(lambda: c.put(b"/probe", b"1"), f"etcd {endpoint} to answer with a leader", timeout=30)
    return c


async def test_cluster_member_killed_imports_and_exports_continue(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    """endpoints=m0,m1,m2: the adapter uses m0; m0 is killed (SIGKILL): within a bound the adapter is on
    another member, a key put after the kill is imported, a view change is exported, the export lease is
    ADOPTED (the election key and the exported keys are the same etcd keys, not rewritten) and the prefix
    is exactly the view.  Before several endpoints, the adapter only ever knew one member."""
    # the worst case: the adapter's member is the raft leader (its death costs an election too)
    (lead,) = await until(cluster.leader, "a leader", timeout=30)
    others = [i for i in range(3) if i != lead]
    c = await _client(cluster.endpoint(others[0]))
    await c.put(b"/services/api/a", b'{"addr": "10.0.0.1:80"}')
    view = CatalogView("dc1", [svc("web", "x", "10.1.0.1:80")])
    rec, views = Recorder(), Views(view)
    # lease_ttl 8: the keys must outlive the failover (measured ~0.6-1.2 s, bound 8 s below)
    ad = _adapter(endpoints=",".join(cluster.endpoint(i) for i in [lead, *others]), lease_ttl="8")
    task = run_adapter(ad, rec, views)
    try:
        await until(lambda: rec.addrs() == {("api", "a"): "10.0.0.1:80"}, "the key imported")
        await until(lambda: _keys(c, {"web/x"}), "the view exported")
        assert ad.endpoint == cluster.endpoint(lead)
        elect = await c.get(b"/registry/.writers/dc1")
        x_rev = (await c.get(b"/registry/dc1/web/x")).mod_revision

        t0 = time.monotonic()
        cluster.kill(lead)
        # the put waits for a new leader (tried every 0.5 s: a put sent to a member before it knows its
        # leader is dead hangs until its timeout): the gaps below are measured from the kill
        await until(lambda: _put(cluster.endpoint(others[1]), b"/services/api/b", b'{"addr": "10.0.0.2:80"}'), "a put")
        put = time.monotonic() - t0
        views.set(CatalogView("dc1", [*view.services, svc("web", "y", "10.1.0.2:80")]))
        await until(lambda: len(rec.addrs()) == 2, "the key put after the kill imported", timeout=30)
        imported = time.monotonic() - t0
        await until(lambda: _keys(c, {"web/x", "web/y"}), "the new view exported", timeout=30)
        exported_gap = time.monotonic() - t0
        print(f"failover: put {put:.2f}s, import {imported:.2f}s, export {exported_gap:.2f}s after the kill")
        assert ad.endpoint in [cluster.endpoint(i) for i in others]
        # the lease was adopted: same election key (same lease, not re-created) and x not rewritten
        again = await c.get(b"/registry/.writers/dc1")
        assert (again.lease, again.create_revision) == (elect.lease, elect.create_revision)
        assert (await c.get(b"/registry/dc1/web/x")).mod_revision == x_rev
        assert rec.addrs() == {("api", "a"): "10.0.0.1:80", ("api", "b"): "10.0.0.2:80"}
        # the bound: the next member is tried at once (no retry wait: only one of three failed); what is
        # left is a new leader's election (<= 2 election timeouts, 1 s here) and one resync round trip.
        # The export lease (8 s) must not lapse; a loaded machine gets slack up to it.
        assert exported_gap < 8.0, exported_gap
        lines = [r.getMessage() for r in caplog.records if r.name.startswith("registry.adapters.etcd")]
        # one warning per failure, no flood: the dead leader's; and, when the adapter reached a follower
        # while the election was still on, that follower's "leader changed" (seen once in CI under load)
        moves = [m for m in lines if "trying the next endpoint" in m]
        assert 1 <= len(moves) <= 2 and all("leader changed" in m for m in moves[1:]), lines
    finally:
        await stop(task)
        await c.close()


async def test_member_without_quorum_is_left(cluster: Cluster, caplog: pytest.LogCaptureFixture) -> None:
    """hasleader=true (clientv3's WithRequireLeader): the adapter's member loses its quorum (the two
    others killed) -> etcd cancels its watch and the adapter says so once; the quorum back (one member
    restarted), it resyncs from a member with a leader.  Without the metadata the watch on a leaderless
    member stays open, silent, and the outage is never told."""
    c = await _client(cluster.endpoint(0))
    await c.put(b"/services/api/a", b'{"addr": "10.0.0.1:80"}')
    await c.close()
    rec, views = Recorder(), Views(CatalogView("dc1", []))
    ad = _adapter(endpoints=cluster.endpoints, export="false")
    task = run_adapter(ad, rec, views)
    try:
        await until(lambda: rec.addrs() == {("api", "a"): "10.0.0.1:80"}, "the key imported")
        assert ad.endpoint == cluster.endpoint(0)
        cluster.kill(1)
        cluster.kill(2)

        def told() -> bool:
            return any("trying the next endpoint" in r.getMessage() for r in caplog.records)

        await until(told, "the lost quorum told", timeout=15)
        assert rec.addrs() == {("api", "a"): "10.0.0.1:80"}  # nothing invented or lost meanwhile
        cluster.start(1)
        c = await _client(cluster.endpoint(1))
        try:
            await c.put(b"/services/api/b", b'{"addr": "10.0.0.2:80"}')
            await until(lambda: len(rec.addrs()) == 2, "resynced with the quorum back", timeout=30)
        finally:
            await c.close()
        assert rec.resyncs >= 2
    finally:
        await stop(task)


async def _put(endpoint: str, key: bytes, value: bytes) -> bool:
    import grpc.aio
    from aetcd import rpc

    async with grpc.aio.insecure_channel(endpoint, options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
        await rpc.KVStub(ch).Put(rpc.PutRequest(key=key, value=value), timeout=0.5)
    return True


async def _keys(c: Any, want: set[str]) -> bool:
    return set(await exported(c)) == want


async def _enable_auth(endpoint: str) -> None:
    import grpc.aio
    from aetcd import rpc

    async with grpc.aio.insecure_channel(endpoint) as ch:
        kv, auth = rpc.KVStub(ch), rpc.AuthStub(ch)
        await until(lambda: kv.Put(rpc.PutRequest(key=b"/services/api/a", value=b'{"addr": "10.0.0.1:80"}')), "etcd")
        await auth.UserAdd(rpc.AuthUserAddRequest(name="root", password="pw"))
        await auth.UserGrantRole(rpc.AuthUserGrantRoleRequest(user="root", role="root"))
        await auth.AuthEnable(rpc.AuthEnableRequest())


async def test_expired_auth_token_is_renewed_without_a_resync(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """--auth-token-ttl 1: the adapter's token expires while it idles; the next export write gets
    "invalid auth token" (UNAUTHENTICATED): the adapter authenticates again and writes, with no
    reconnect (no resync, no warning) and one INFO line.  Before: a lost connection, a warning and a
    whole resync every time the token lapsed."""
    import grpc
    import grpc.aio
    from aetcd import rpc

    caplog.set_level(logging.INFO, logger="registry.adapters.etcd")
    e = Etcd(tmp_path, extra=("--auth-token-ttl", "1"))
    e.start()
    try:
        await _enable_auth(e.endpoint)
        rec, views = Recorder(), Views(CatalogView("dc1", [svc("web", "x", "10.1.0.1:80")]))
        # lease_ttl 6: keepalives every 2 s, so nothing the adapter does keeps its 1 s token fresh
        task = run_adapter(_adapter(endpoint=e.endpoint, user="root", password="pw", lease_ttl="6"), rec, views)
        # a connection of the adapter's own kind, to create a watch with an expired token below
        members = Endpoints([e.endpoint], user="root", password="pw", tls=(None, None, None), timeout=5)
        conn = await members.connect(logging.getLogger("registry.adapters.etcd.conn"))
        async with grpc.aio.insecure_channel(e.endpoint) as ch:
            auth, kv = rpc.AuthStub(ch), rpc.KVStub(ch)
            tok = (await auth.Authenticate(rpc.AuthenticateRequest(name="root", password="pw"))).token
            md = (("token", tok),)

            async def exported_keys() -> set[bytes]:
                r = await kv.Range(rpc.RangeRequest(key=b"/registry/dc1/", range_end=b"/registry/dc10"), metadata=md)
                return {k.key for k in r.kvs}

            try:
                await until(lambda: rec.addrs() == {("api", "a"): "10.0.0.1:80"}, "imported with a password")
                await until(lambda: _is(exported_keys(), {b"/registry/dc1/web/x"}), "exported with a password")
                # tokens issued after the adapter last wrote, expiring: the adapter's has expired too.  A
                # use renews a simple token, so each probe spends one token of a pool issued at once.
                probes = [
                    r.token
                    for r in await asyncio.gather(
                        *(auth.Authenticate(rpc.AuthenticateRequest(name="root", password="pw")) for _ in range(12))
                    )
                ]

                async def expired() -> bool:
                    await asyncio.sleep(0.5)  # spreads the 12 probes over 6 s: the pace, not the condition
                    try:
                        await kv.Range(rpc.RangeRequest(key=b"/x"), metadata=(("token", probes.pop()),))
                    except grpc.aio.AioRpcError as err:
                        return bool(err.code() == grpc.StatusCode.UNAUTHENTICATED)
                    return False

                await until(expired, "the tokens to expire")
                # etcd cancels a watch created with an expired token ("invalid auth token"): a new token
                stream = await conn.watch(rpc.WatchCreateRequest(key=b"/services/"))
                stream.cancel()
                assert conn.reauths == 1
                tok = (await auth.Authenticate(rpc.AuthenticateRequest(name="root", password="pw"))).token
                md = (("token", tok),)
                views.set(CatalogView("dc1", [svc("web", "x", "10.1.0.1:80"), svc("web", "y", "10.1.0.2:80")]))
                want = {b"/registry/dc1/web/x", b"/registry/dc1/web/y"}
                await until(lambda: _is(exported_keys(), want), "exported after the token expired")
                # the watch (created with the old token) still delivers
                await kv.Put(rpc.PutRequest(key=b"/services/api/b", value=b'{"addr": "10.0.0.2:80"}'), metadata=md)
                await until(lambda: len(rec.addrs()) == 2, "imported after the token expired")
            finally:
                await stop(task)
                await conn.close()
        lines = [r for r in caplog.records if r.name.startswith("registry.adapters.etcd")]
        assert rec.resyncs == 1, [r.getMessage() for r in lines]
        assert not [r for r in lines if r.levelno >= logging.WARNING], [r.getMessage() for r in lines]
        assert sum("authenticating again" in r.getMessage() for r in lines) >= 1
    finally:
        e.stop()


async def _is(got: Any, want: Any) -> bool:
    return bool(await got == want)


async def test_prefix_bigger_than_a_grpc_message_imports_whole(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """20,000 keys of ~330 B (6.6 MB: more than grpcio's 4 MiB receive limit): the paged Range imports
    them all; then ONE DeleteRange of the prefix (one revision of 20,000 events, ~4.5 MB) arrives through
    the fragmented watch and empties the imports without breaking the stream (no second resync, no
    warning).  Before: RESOURCE_EXHAUSTED on the Range, retried forever, nothing imported."""
    import grpc.aio
    from aetcd import rpc

    n, pad = 20_000, "k" * 200
    value = json.dumps({"addr": "10.0.0.1:80", "tags": {"note": "v" * 60}}).encode()
    # 600 puts per txn (200 kB): 34 fsyncs to fill it, not 157.  Requests of 256 KiB at most: etcd cuts
    # watch fragments at that size, and its cutting is quadratic in the events per fragment (the 1.5 MiB
    # default took ~2 s per 9,000-event fragment on the test machine; the adapter applied one in ~0.1 s)
    etcd = Etcd(tmp_path, extra=("--max-txn-ops", "600", "--max-request-bytes", str(256 * 1024)))
    etcd.start()
    t0 = time.monotonic()
    try:
        async with grpc.aio.insecure_channel(etcd.endpoint) as ch:
            kv = rpc.KVStub(ch)
            await until(lambda: kv.Put(rpc.PutRequest(key=b"/probe", value=b"1")), "etcd")
            keys = [f"/services/big/{pad}{i:05d}".encode() for i in range(n)]
            for i in range(0, n, 600):
                ops = [rpc.RequestOp(request_put=rpc.PutRequest(key=k, value=value)) for k in keys[i : i + 600]]
                await kv.Txn(rpc.TxnRequest(success=ops))
            t1 = time.monotonic()
            rec, views = Recorder(), Views(CatalogView("dc1", []))
            task = run_adapter(_adapter(endpoint=etcd.endpoint, export="false"), rec, views)
            try:
                await until(lambda: len(rec.services) == n, "the whole prefix imported", timeout=60)
                t2 = time.monotonic()
                await kv.DeleteRange(rpc.DeleteRangeRequest(key=b"/services/big/", range_end=b"/services/big0"))
                await until(lambda: not rec.services, "the one-revision delete of the prefix applied", timeout=60)
                print(f"filled {t1 - t0:.2f}s, imported {t2 - t1:.2f}s, deleted {time.monotonic() - t2:.2f}s")
            finally:
                await stop(task)
    finally:
        etcd.stop()
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("registry.adapters.etcd")]
    assert rec.resyncs == 1 and not any("retrying" in m for m in lines), (rec.resyncs, lines)


def test_endpoint_options() -> None:
    from registry.adapters.etcd import EtcdAdapter

    assert EtcdAdapter(endpoints="a:1,b:2").endpoint == "a:1"
    assert EtcdAdapter(endpoint="c:3").endpoint == "c:3"  # the alias
    for kw in ({"endpoints": "a:1", "endpoint": "b:2"}, {"endpoints": "a:1,,b:2"}, {"page": "0"}):
        with pytest.raises(AdapterError) as err:
            EtcdAdapter(**kw)
        assert "\n" not in str(err.value) and str(err.value).startswith("etcd adapter:")


def test_export_values_encoded_once_per_service_change() -> None:
    """A view with one service changed re-encodes that service only: the unchanged ones' values are the
    very bytes of the last view (fresh `ExportedService` objects, as the host builds each view).  Before:
    every service's JSON was rebuilt on every view (10,000 services: ~250-300 ms per view on the loaded
    test machine, ~50 ms after; /tmp/bench/bench_wanted.py in the session report)."""
    from registry.adapters.etcd import EtcdAdapter

    a = EtcdAdapter()

    def view(dc: str, health_b: str) -> CatalogView:
        return CatalogView(dc, [svc("api", "a", "10.0.0.1:80"), svc("api", "b", "10.0.0.2:80", health=health_b)])

    first = a._wanted(view("dc1", "passing"))
    again = a._wanted(view("dc1", "critical"))
    ka, kb = b"/registry/dc1/api/a", b"/registry/dc1/api/b"
    assert again[ka] is first[ka]
    assert json.loads(again[kb])["health"] == "critical" and json.loads(first[kb])["health"] == "passing"
    # a service gone leaves the cache; another datacenter's view gets its own keys
    assert set(a._wanted(CatalogView("dc1", [svc("api", "a", "10.0.0.1:80")]))) == {ka}
    assert set(a._wanted(view("dc2", "passing"))) == {b"/registry/dc2/api/a", b"/registry/dc2/api/b"}
