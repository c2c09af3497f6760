"""The etcd adapter against a real etcd v3 (Debian's etcd-server) on loopback in a temporary directory.

The adapter runs with a small harness in place of the registry's host: `Recorder` is a real `Imports`
(it keeps what it is given, as the catalog would) and `Views` feeds real `CatalogView`s; etcd itself is
never mocked.  Keys are written and read with aetcd's own `Client` (a plain etcd client, not our code)."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import shutil
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import pytest

from registry.adapters.base import AdapterContext, AdapterError, CatalogView, ExportedService, ExternalService
from tests.agentproc import free_port
from tests.e2e.certs import Pki, write_pki

aetcd = pytest.importorskip("aetcd", reason="pip install 'hashring-registry[etcd]'")

pytestmark = pytest.mark.etcd
T = TypeVar("T")


class Etcd:
    """One etcd member on loopback ports with its data in ``data``: start, stop (SIGTERM), start again.
    With ``pki`` its client port is TLS and asks for a client certificate signed by the test CA."""

    def __init__(self, data: Path, pki: Pki | None = None, extra: tuple[str, ...] = ()) -> None:
        self.data, self.pki, self.extra = data, pki, extra
        self.port, self.peer = free_port(), free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        scheme = "https" if self.pki else "http"
        url, peer = f"{scheme}://127.0.0.1:{self.port}", f"http://127.0.0.1:{self.peer}"
        args = ["--name", "t", "--data-dir", str(self.data / "etcd"), "--listen-client-urls", url]
        args += ["--advertise-client-urls", url, "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer]
        args += ["--initial-cluster", f"t={peer}"]
        if self.pki:
            args += ["--cert-file", str(self.pki.server_cert), "--key-file", str(self.pki.server_key)]
            args += ["--trusted-ca-file", str(self.pki.ca), "--client-cert-auth"]
        args += self.extra
        with open(self.data / "etcd.log", "ab") as log:
            self.proc = subprocess.Popen(["etcd", *args], stdout=subprocess.DEVNULL, stderr=log)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            self.proc = None


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[Etcd]:
    e = Etcd(tmp_path)
    e.start()
    try:
        yield e
    finally:
        e.stop()


async def until(pred: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    """Await ``pred`` (sync or async) until truthy; fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            v = pred()
            if inspect.isawaitable(v):
                v = await v
            if v:
                return v
        except Exception as e:  # noqa: BLE001 - etcd may be starting
            last = e
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last error: {last!r}")
        await asyncio.sleep(0.05)


class Recorder:
    """A real `Imports`: applies upserts/deletes/resyncs to a dict keyed by (group, id), as the catalog does."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.services: dict[tuple[str, str], ExternalService] = {}
        self.resyncs = 0

    def upsert(self, service: ExternalService) -> None:
        with self.lock:
            self.services[(service.group, service.id)] = service

    def delete(self, group: str, id: str) -> None:
        with self.lock:
            self.services.pop((group, id), None)

    def replace_all(self, services: Iterable[ExternalService]) -> None:
        with self.lock:
            self.services = {(s.group, s.id): s for s in services}
            self.resyncs += 1

    def addrs(self) -> dict[tuple[str, str], str]:
        with self.lock:
            return {k: s.addr for k, s in self.services.items()}


class Views:
    """Coalesced catalog views, as the host gives them: an iterator sees the newest view, never a backlog."""

    def __init__(self, view: CatalogView) -> None:
        self.view, self.changed = view, asyncio.Event()

    def set(self, view: CatalogView) -> None:
        self.view = view
        self.changed.set()

    async def __call__(self) -> AsyncIterator[CatalogView]:
        while True:
            self.changed.clear()
            yield self.view
            await self.changed.wait()


def svc(group: str, sid: str, addr: str, origin: str = "", health: str = "passing") -> ExportedService:
    return ExportedService(group, sid, addr, {"zone": "a"}, health, "external" if origin else "ttl", origin)


def run_adapter(adapter: Any, imports: Recorder, views: Views, registry_id: str = "r1") -> asyncio.Task[None]:
    log = logging.getLogger(f"registry.adapters.etcd.{registry_id}")
    ctx = AdapterContext(imports=imports, exports=views, log=log, datacenter="dc1", registry_id=registry_id)
    return asyncio.ensure_future(adapter.run(ctx))


async def stop(*tasks: asyncio.Task[None]) -> None:
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def adapter(etcd: Etcd, **kw: str) -> Any:
    from registry.adapters.etcd import EtcdAdapter

    return EtcdAdapter(endpoint=etcd.endpoint, retry="0.2", lease_ttl="2", **kw)


async def client(etcd: Etcd) -> Any:
    host, port = etcd.endpoint.split(":")
    c = aetcd.Client(host=host, port=int(port), timeout=5)
    await until(lambda: c.put(b"/probe", b"1"), "etcd to answer")
    return c


async def exported(c: Any, prefix: bytes = b"/registry/dc1/") -> dict[str, dict[str, Any]]:
    r = await c.get_prefix(prefix)
    return {kv.key.decode()[len(prefix) :]: json.loads(kv.value) for kv in r}


async def test_import_put_change_delete_and_bad_value(etcd: Etcd, caplog: pytest.LogCaptureFixture) -> None:
    c = await client(etcd)
    await c.put(b"/services/api/a", json.dumps({"addr": "10.0.0.1:80", "tags": {"v": "1"}, "weight": 2}).encode())
    rec, views = Recorder(), Views(CatalogView("dc1", []))
    task = run_adapter(adapter(etcd, export="false"), rec, views)
    try:
        # the initial read (a resync) takes keys written before the adapter started
        await until(lambda: rec.addrs() == {("api", "a"): "10.0.0.1:80"}, "the existing key imported")
        assert rec.services[("api", "a")].tags == {"v": "1"} and rec.services[("api", "a")].weight == 2
        await c.put(b"/services/api/b", b'{"addr": "10.0.0.2:80"}')
        await c.put(b"/services/api/a", b'{"addr": "10.0.0.9:80"}')
        await until(lambda: rec.addrs() == {("api", "a"): "10.0.0.9:80", ("api", "b"): "10.0.0.2:80"}, "put+change")
        await c.delete(b"/services/api/a")
        await c.put(b"/services/api/b", b"not json")  # a bad value: one line, and no service
        await until(lambda: rec.addrs() == {}, "delete and bad value removing both")
        assert any("ignoring /services/api/b" in r.getMessage() for r in caplog.records)
        # a key under a lease goes when the lease does
        lease = await c.lease(2)
        await c.put(b"/services/web/x", b'{"addr": "10.0.0.3:80"}', lease=lease)
        await until(lambda: rec.addrs() == {("web", "x"): "10.0.0.3:80"}, "leased key imported")
        await lease.revoke()
        await until(lambda: rec.addrs() == {}, "leased key removed with its lease")
    finally:
        await stop(task)
        await c.close()


async def test_etcd_restart_mid_stream_resyncs(etcd: Etcd, caplog: pytest.LogCaptureFixture) -> None:
    c = await client(etcd)
    await c.put(b"/services/api/a", b'{"addr": "10.0.0.1:80"}')
    await c.put(b"/services/api/b", b'{"addr": "10.0.0.2:80"}')
    rec, views = Recorder(), Views(CatalogView("dc1", []))
    task = run_adapter(adapter(etcd, export="false"), rec, views)
    try:
        await until(lambda: len(rec.addrs()) == 2, "both imported")
        await c.close()
        etcd.stop()
        # while etcd is down nothing is lost or invented
        await asyncio.sleep(0.5)
        assert len(rec.addrs()) == 2
        etcd.start()
        c = await client(etcd)
        # changes made while the adapter was reconnecting (a delete it never saw as an event included)
        await c.delete(b"/services/api/a")
        await c.put(b"/services/api/c", b'{"addr": "10.0.0.3:80"}')
        await until(
            lambda: rec.addrs() == {("api", "b"): "10.0.0.2:80", ("api", "c"): "10.0.0.3:80"}, "resync after restart"
        )
        assert rec.resyncs >= 2
        # etcd rebuilt empty (a new data dir: revisions start again from 1, below where we watched): the
        # resync, not the watch, makes the imports exactly what etcd holds
        await c.close()
        etcd.stop()
        shutil.rmtree(etcd.data / "etcd")
        etcd.start()
        c = await client(etcd)
        await c.put(b"/services/api/z", b'{"addr": "10.0.0.26:80"}')
        await until(lambda: rec.addrs() == {("api", "z"): "10.0.0.26:80"}, "resync after etcd rebuilt empty")
        # one line per outage and one when back, not one per retry
        lines = [r.getMessage() for r in caplog.records if r.name.startswith("registry.adapters.etcd")]
        assert sum("retrying every" in m for m in lines) == 2, lines
        assert sum("reachable again" in m for m in lines) == 2, lines
    finally:
        await stop(task)
        await c.close()


async def test_export_one_writer_converges_and_never_imports_itself(etcd: Etcd) -> None:
    c = await client(etcd)
    # a stale key from an earlier run: the writer deletes it on taking over
    await c.put(b"/registry/dc1/old/gone", b'{"addr": "x"}')
    await c.put(b"/services/ext/e", b'{"addr": "10.9.9.9:80"}')
    view = CatalogView(
        "dc1",
        [
            svc("api", "a", "10.0.0.1:80"),
            svc("ext", "e", "10.9.9.9:80", origin="etcd"),
            svc("f", "x", "1.1.1.1:1", "file"),
        ],
    )
    # two registries exporting the same pool, each also importing from /services/ and the whole root
    rec1, rec2, v1, v2 = Recorder(), Recorder(), Views(view), Views(view)
    t1 = run_adapter(adapter(etcd), rec1, v1, "r1")
    t2 = run_adapter(adapter(etcd, prefix="/"), rec2, v2, "r2")
    tasks = [t1, t2]
    try:
        want = {"api/a": {"addr": "10.0.0.1:80", "tags": {"zone": "a"}, "health": "passing", "kind": "ttl"}}
        await until(lambda: _eq(exported(c), want), "the view exported")
        writer = (await c.get(b"/registry/.writers/dc1")).value.decode()
        assert writer in ("r1", "r2")
        # imported services (origin set) are not exported; what we export is never imported back
        # (r2 imports the root "/": it sees /services/ext/e but not /registry/...)
        await until(lambda: rec2.addrs() == {("services", "ext/e"): "10.9.9.9:80"}, "r2's root import")
        assert rec1.addrs() == {("ext", "e"): "10.9.9.9:80"}
        # a change: one key written, the others left alone
        before = (await c.get(b"/registry/dc1/api/a")).mod_revision
        new = CatalogView("dc1", [*view.services, svc("api", "b", "10.0.0.2:80", health="critical")])
        v1.set(new)
        v2.set(new)
        await until(
            lambda: _eq(exported(c), {**want, "api/b": {**want["api/a"], "addr": "10.0.0.2:80", "health": "critical"}}),
            "b added",
        )
        assert (await c.get(b"/registry/dc1/api/a")).mod_revision == before
        # the writer dies (no clean exit: its lease expires): its keys vanish, the other takes over and writes all
        dead, alive = (t1, t2) if writer == "r1" else (t2, t1)
        dead.cancel()
        await asyncio.gather(dead, return_exceptions=True)
        tasks = [alive]
        await until(lambda: _writer_is(c, "r2" if writer == "r1" else "r1"), "the other registry elected", timeout=15)
        await until(
            lambda: _eq(exported(c), {**want, "api/b": {**want["api/a"], "addr": "10.0.0.2:80", "health": "critical"}}),
            "re-exported",
        )
        # a service leaves: its key goes
        rest = CatalogView("dc1", [svc("api", "b", "10.0.0.2:80")])
        (v2 if writer == "r1" else v1).set(rest)
        await until(lambda: _keys(exported(c), {"api/b"}), "a leaves")
    finally:
        await stop(*tasks)
        await c.close()


async def _eq(got: Awaitable[dict[str, Any]], want: dict[str, Any]) -> bool:
    return await got == want


async def _keys(got: Awaitable[dict[str, Any]], want: set[str]) -> bool:
    return set(await got) == want


async def _has(got: Awaitable[dict[str, Any]], key: str) -> bool:
    return key in await got


async def _writer_is(c: Any, rid: str) -> bool:
    r = await c.get(b"/registry/.writers/dc1")
    return r is not None and r.value.decode() == rid


def test_bad_options_are_one_line() -> None:
    from registry.adapters.etcd import EtcdAdapter

    for kw in ({"import": "maybe"}, {"lease_ttl": "x"}, {"user": "u"}, {"cert": "c"}, {"colour": "red"}):
        with pytest.raises(AdapterError) as e:
            EtcdAdapter(**kw)
        assert "\n" not in str(e.value) and str(e.value).startswith("etcd adapter:")


async def test_tls_client_certificate_and_user_password(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """TLS (ca, cert, key) and auth (user, password) reach etcd: with them the adapter imports; with a
    wrong password it imports nothing and says why in one line."""
    import grpc.aio
    from aetcd import rpc  # type: ignore[import-untyped]

    (tmp_path / "pki").mkdir()
    pki = write_pki(tmp_path / "pki")
    e = Etcd(tmp_path, pki)
    e.start()
    creds = grpc.ssl_channel_credentials(pki.ca.read_bytes(), pki.client_key.read_bytes(), pki.client_cert.read_bytes())
    tasks: list[asyncio.Task[None]] = []
    try:
        async with grpc.aio.secure_channel(e.endpoint, creds) as ch:
            kv, auth = rpc.KVStub(ch), rpc.AuthStub(ch)
            await until(
                lambda: kv.Put(rpc.PutRequest(key=b"/services/api/s", value=b'{"addr": "10.1.1.1:80"}')), "etcd"
            )
            await auth.UserAdd(rpc.AuthUserAddRequest(name="root", password="pw"))
            await auth.UserGrantRole(rpc.AuthUserGrantRoleRequest(user="root", role="root"))
            await auth.AuthEnable(rpc.AuthEnableRequest())
        tls = {"ca": str(pki.ca), "cert": str(pki.client_cert), "key": str(pki.client_key)}
        bad, good = Recorder(), Recorder()
        tasks.append(
            run_adapter(
                adapter(e, export="false", user="root", password="wrong", **tls),
                bad,
                Views(CatalogView("dc1", [])),
                "bad",
            )
        )
        tasks.append(
            run_adapter(
                adapter(e, export="false", user="root", password="pw", **tls),
                good,
                Views(CatalogView("dc1", [])),
                "good",
            )
        )
        await until(lambda: good.addrs() == {("api", "s"): "10.1.1.1:80"}, "import over TLS with a password")
        await until(
            lambda: any(r.name.endswith(".bad") and "authentication failed" in r.getMessage() for r in caplog.records),
            "the wrong password said",
        )
        assert bad.addrs() == {} and bad.resyncs == 0
    finally:
        await stop(*tasks)
        e.stop()


async def test_registry_process_imports_and_exports_through_etcd(etcd: Etcd) -> None:
    """A real registry with ``-adapter etcd:...``: a key written by a plain etcd client is a member
    (kind external, origin etcd) that Match answers; a TTL service registered over HTTP appears under
    /registry/<dc>/; the imported one is not exported back; an etcd restart mid-stream loses nothing,
    takes later keys and the registry stays the writer (a service registered after it is exported); the registry's clean exit removes its exports at once (lease revoked, not
    left to expire: lease_ttl is 30 s here)."""
    import urllib.request

    from registry.client import RpcClient
    from tests.e2e.helpers import wait_for
    from tests.footprint import modules_child

    c = await client(etcd)
    await c.put(b"/services/api/e1", b'{"addr": "10.0.0.1:80", "tags": {"v": "1"}}')
    spec = f"etcd:endpoint={etcd.endpoint},lease_ttl=30,retry=0.2"
    base = ["-id", "x", "-bind", "127.0.0.1:0", "-addr", "127.0.0.1:0", "-http-addr", "127.0.0.1:0"]
    try:
        with modules_child(*base, "-adapter", spec) as child:
            rpc_client = RpcClient(child.started["grpc"], timeout=10.0)
            try:

                def members() -> dict[str, tuple[str, str, str]]:
                    return {s.id: (s.addr, s.kind, s.origin) for s in rpc_client.members("api")}

                wait_for(lambda: members() == {"e1": ("10.0.0.1:80", "external", "etcd")}, 20, what="e1 imported")
                assert rpc_client.match("api", "user-1").id == "e1"
                body = b'{"addr": "10.0.0.7:8080", "ttl": "60s", "tags": {"v": "2"}}'
                req = urllib.request.Request(f"http://{child.started['http']}/v1/services/web/w1", body, method="PUT")
                with urllib.request.urlopen(req, timeout=10) as r:
                    assert r.status == 200

                async def web_exported() -> dict[str, Any] | None:
                    got = await c.get_prefix(b"/registry/")
                    ours = {kv.key.decode(): json.loads(kv.value) for kv in got if kv.key.endswith(b"/web/w1")}
                    return ours if ours else None

                out = await until(web_exported, "the TTL service exported")
                ((key, value),) = out.items()
                assert value == {"addr": "10.0.0.7:8080", "tags": {"v": "2"}, "health": "passing", "kind": "ttl"}
                dc_prefix = key[: -len("web/w1")].encode()
                assert not any(k.key.endswith(b"/api/e1") for k in await c.get_prefix(dc_prefix))
                # etcd restarts mid-stream: e1 stays, e2 written after the restart comes in, w1 is exported again
                await c.close()
                etcd.stop()
                etcd.start()
                c = await client(etcd)
                await c.put(b"/services/api/e2", b'{"addr": "10.0.0.2:80"}')
                wait_for(lambda: set(members()) == {"e1", "e2"}, 20, what="e2 imported after the restart")
                await until(web_exported, "w1 exported after the restart")
                # still the writer after the restart (its lease, kept by etcd, adopted): a new service is exported
                req = urllib.request.Request(f"http://{child.started['http']}/v1/services/web/w2", body, method="PUT")
                with urllib.request.urlopen(req, timeout=10) as r:
                    assert r.status == 200
                await until(lambda: _has(exported(c, dc_prefix), "web/w2"), "w2 exported after the restart", 10)
            finally:
                rpc_client.close()
        # the registry left cleanly: its lease is revoked, its keys gone well before the 30 s lease would end
        await until(lambda: _keys(exported(c, dc_prefix), set()), "exports removed on exit", timeout=5)
    finally:
        await c.close()


@pytest.mark.slow
async def test_three_registry_pool_one_writer_and_a_failure(etcd: Etcd, tmp_path: Path) -> None:
    """Three registry processes with the etcd adapter: every one imports the etcd key and Match answers
    alike on all three; the pool (its registries included) is exported by ONE writer; the writer killed
    (SIGKILL: no revoke, its lease expires after lease_ttl=2 s) -> another registry is elected and the
    prefix converges to the pool without the dead one."""
    import signal

    from tests.e2e.helpers import Registry, procs, wait_for

    c = await client(etcd)
    for i in range(4):
        await c.put(f"/services/api/e{i}".encode(), json.dumps({"addr": f"10.0.0.{i}:80"}).encode())
    spec = ["-adapter", f"etcd:endpoint={etcd.endpoint},lease_ttl=2,retry=0.2"]
    try:
        with procs() as ps:
            r1 = Registry(ps, tmp_path, "r1", (), *spec, profile="lan").wait_ready()
            rs = [r1] + [Registry(ps, tmp_path, f"r{i}", (r1.gossip,), *spec, profile="lan") for i in (2, 3)]
            for r in rs:
                r.wait_ready()
            for r in rs:
                wait_for(partial(_imports_all, r), 20, what=f"{r.id} imports")
            keys = [f"user-{i}" for i in range(200)]
            answers = []
            for r in rs:
                with r.client() as cl:
                    answers.append([cl.match("api", k).id for k in keys])
            assert answers[0] == answers[1] == answers[2] and len(set(answers[0])) == 4

            async def registries() -> set[str]:
                return {k.removeprefix("registry-group/") for k in await exported(c) if k.startswith("registry-group/")}

            await until(lambda: _is(registries(), {"r1", "r2", "r3"}), "the pool exported")
            assert not any(k.startswith("api/") for k in await exported(c))  # imports are not exported
            writer = (await c.get(b"/registry/.writers/dc1")).value.decode()
            dead = next(r for r in rs if r.id == writer)
            dead.proc.signal(signal.SIGKILL)
            alive = {r.id for r in rs} - {writer}
            await until(lambda: _writer_in(c, alive), "another registry elected", 20)
            await until(lambda: _is(registries(), alive), "the prefix without the dead registry", 40)
    finally:
        await c.close()


def _imports_all(r: Any) -> bool:
    return bool(r.ids("api") == {"e0", "e1", "e2", "e3"})


async def _is(got: Awaitable[set[str]], want: set[str]) -> bool:
    return await got == want


async def _writer_in(c: Any, ids: set[str]) -> bool:
    r = await c.get(b"/registry/.writers/dc1")
    return r is not None and r.value.decode() in ids
