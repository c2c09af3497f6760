"""RpcClient / AsyncRpcClient against a real server: answers, errors, failover, cache, TLS."""

from __future__ import annotations

import random
import socket
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from registry.catalog import Catalog
from registry.client import (
    AsyncRpcClient,
    InvalidArgument,
    NotFound,
    RegistryError,
    RpcClient,
    Service,
    TlsConfig,
    Unavailable,
)
from registry.tls import TlsFiles
from tests.registry.rpc_fixtures import (
    ENGINES,
    GROUP,
    ServerThread,
    async_wait_for,
    make_certs,
    populate,
    populated_server,
    start_server,
    tags,
    wait_for,
)

KEYS = [f"user-{i}" for i in range(200)]


@pytest.fixture(scope="module", params=ENGINES)
def server(request: pytest.FixtureRequest) -> Iterator[ServerThread]:
    yield from populated_server(request.param)


def dead_addr() -> str:
    """A 127.0.0.1 port nobody listens on (bound then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def server_answer(server: ServerThread, key: str, n: int = 1) -> list[tuple[str, str, str]]:
    return [(s.id, s.group, s.addr) for s in server.call(server.catalog.match, GROUP, key, n)]


def test_match_members_groups(server: ServerThread) -> None:
    with RpcClient(server.addr) as c:
        svc = c.match(GROUP, "user-1")
        assert isinstance(svc, Service)
        assert [(svc.id, svc.group, svc.addr)] == server_answer(server, "user-1")
        assert svc.tags["group"] == GROUP
        three = c.match(GROUP, "user-1", 3)
        assert [(s.id, s.group, s.addr) for s in three] == server_answer(server, "user-1", 3)
        assert c.match_n(GROUP, "user-1", 3) == three
        batch = c.match_batch(GROUP, KEYS)
        assert [(s.id, s.group, s.addr) for s in batch] == [server_answer(server, k)[0] for k in KEYS]
        assert sorted(s.id for s in c.members(GROUP)) == [f"{GROUP}-{i}" for i in range(5)]
        assert GROUP in c.groups()
        assert hash(svc) == hash(Service(svc.id, svc.group, svc.addr, {"other": "tags"}))


def test_errors_are_typed_and_named(server: ServerThread) -> None:
    with RpcClient(server.addr) as c:
        with pytest.raises(NotFound) as nf:
            c.match("nosuch", "k")
        assert "'nosuch'" in str(nf.value) and server.addr in str(nf.value)
        with pytest.raises(NotFound):
            c.members("nosuch")
        with pytest.raises(InvalidArgument) as ia:
            c.match(GROUP, "")
        assert "key is empty" in str(ia.value) and repr(GROUP) in str(ia.value)
        with pytest.raises(InvalidArgument):
            c.match(GROUP, "k", -2)
        with pytest.raises(InvalidArgument):
            c.match("", "k")
        assert issubclass(NotFound, RegistryError) and issubclass(Unavailable, RegistryError)


def test_failover_to_second_address(server: ServerThread) -> None:
    down = dead_addr()
    with RpcClient(f"{down},{server.addr}", timeout=5) as c:
        assert c.match(GROUP, "user-3").id == server_answer(server, "user-3")[0][0]
        assert c.addresses[c._current] == server.addr  # the good one is tried first from now on
    with RpcClient([down, server.addr]) as c:
        assert sorted(s.id for s in c.members(GROUP)) == [f"{GROUP}-{i}" for i in range(5)]


def test_failover_when_first_address_hangs(server: ServerThread) -> None:
    """A registry that accepts TCP but never answers: DEADLINE_EXCEEDED, then the next one."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        hung = f"127.0.0.1:{silent.getsockname()[1]}"
        with RpcClient([hung, server.addr], timeout=0.5) as c:
            assert c.match(GROUP, "user-4").id == server_answer(server, "user-4")[0][0]
        with RpcClient([hung], timeout=0.5) as c:
            with pytest.raises(Unavailable) as info:
                c.members(GROUP)
            assert hung in str(info.value) and "DEADLINE_EXCEEDED" in str(info.value)


def test_all_down_is_unavailable_naming_addresses() -> None:
    a, b = dead_addr(), dead_addr()
    with RpcClient([a, b], timeout=2) as c, pytest.raises(Unavailable) as info:
        c.match(GROUP, "k")
    assert a in str(info.value) and b in str(info.value) and repr(GROUP) in str(info.value)


def test_bad_addresses_rejected() -> None:
    for bad in ("", "nohostport", "h:notaport", ":80", " , "):
        with pytest.raises(ValueError):
            RpcClient(bad)


def test_cached_client_equals_server_and_follows_changes() -> None:
    s = ServerThread()
    try:
        s.call(populate, s.catalog, GROUP, 8)
        keys = [f"k{i}" for i in range(10_000)]
        with RpcClient(s.addr) as plain, RpcClient(s.addr, cache=True) as cached:
            want = plain.match_batch(GROUP, keys)
            assert [cached.match(GROUP, k) for k in keys] == want
            assert cached.match_batch(GROUP, keys) == want
            for k in keys[:200]:
                assert cached.match(GROUP, k, 3) == plain.match(GROUP, k, 3)

            # Changes on the server reach the cache: a leave, a join, an address change.
            rng = random.Random(7)
            s.apply(f"{GROUP}-3", None)
            s.apply("late-joiner", tags(GROUP, "10.7.7.7:7"))
            s.apply(f"{GROUP}-5", tags(GROUP, "10.5.5.5:5"))
            version = s.call(s.catalog.version, GROUP)
            wait_for(lambda: cached.cache_version(GROUP) >= version, what="cache caught up")
            sample = rng.sample(keys, 2000)
            now = plain.match_batch(GROUP, sample)
            assert [cached.match(GROUP, k) for k in sample] == now
            assert any(x.id == "late-joiner" for x in now)
            assert all(x.id != f"{GROUP}-3" for x in now)

            for i in range(8):  # every member leaves: the cache says NotFound, like the server
                s.apply(f"{GROUP}-{i}", None)
            s.apply("late-joiner", None)
            wait_for(lambda: cached.cache_version(GROUP) >= s.call(s.catalog.version, GROUP), what="cache emptied")
            with pytest.raises(NotFound) as info:
                cached.match(GROUP, "k1")
            assert repr(GROUP) in str(info.value)
            with pytest.raises(InvalidArgument):
                cached.match(GROUP, "")
    finally:
        s.stop()


def test_cached_client_survives_failover_of_watch() -> None:
    first = ServerThread()
    second = ServerThread()
    try:
        for srv in (first, second):
            srv.call(populate, srv.catalog, GROUP, 4)
        with RpcClient([first.addr, second.addr], cache=True) as cached:
            before = cached.match(GROUP, "x")
            first.stop()
            second.apply("only-on-second", tags(GROUP, "10.8.8.8:8"))
            v = second.call(second.catalog.version, GROUP)
            wait_for(lambda: any(m.id == "only-on-second" for m in _members(cached)) and
                     cached.cache_version(GROUP) >= v, what="watch moved to the second registry")
            assert before.group == GROUP
    finally:
        second.stop()


def _members(c: RpcClient) -> list[Service]:
    view = c._views.get(GROUP)
    return [] if view is None else view.members()


def test_context_manager_closes(server: ServerThread) -> None:
    c = RpcClient(server.addr)
    with c:
        c.groups()
    with pytest.raises(RegistryError, match="closed"):
        c.match(GROUP, "k")


async def test_async_context_manager_closes(server: ServerThread) -> None:
    c = AsyncRpcClient(server.addr)
    async with c:
        await c.groups()
    with pytest.raises(RegistryError, match="closed"):
        await c.match(GROUP, "k")


async def test_async_client(server: ServerThread) -> None:
    async with AsyncRpcClient(server.addr) as c:
        svc = await c.match(GROUP, "user-9")
        assert [(svc.id, svc.group, svc.addr)] == server_answer(server, "user-9")
        assert [s.id for s in await c.match(GROUP, "user-9", 2)] == [x[0] for x in server_answer(server, "user-9", 2)]
        batch = await c.match_batch(GROUP, KEYS)
        assert [s.id for s in batch] == [server_answer(server, k)[0][0] for k in KEYS]
        assert len(await c.members(GROUP)) == 5 and GROUP in await c.groups()
        with pytest.raises(NotFound) as info:
            await c.match("nosuch", "k")
        assert "'nosuch'" in str(info.value)
        with pytest.raises(InvalidArgument):
            await c.members("")
    async with AsyncRpcClient([dead_addr(), server.addr]) as c:
        assert (await c.match(GROUP, "user-9")).id == svc.id
    async with AsyncRpcClient([dead_addr()], timeout=2) as c:
        with pytest.raises(Unavailable):
            await c.groups()


@pytest.mark.parametrize("engine", ENGINES)
async def test_async_cached_client_same_loop(engine: str) -> None:
    catalog = Catalog()
    populate(catalog, GROUP, 6)
    rpc = await start_server(catalog, engine)
    try:
        addr = f"127.0.0.1:{rpc.port}"
        keys = [f"a{i}" for i in range(3000)]
        async with AsyncRpcClient(addr) as plain, AsyncRpcClient(addr, cache=True) as cached:
            want = await plain.match_batch(GROUP, keys)
            assert await cached.match_batch(GROUP, keys) == want
            catalog.apply(f"{GROUP}-0", None)
            await async_wait_for(lambda: cached.cache_version(GROUP) >= catalog.version(GROUP), what="cache follows")
            assert await cached.match_batch(GROUP, keys) == await plain.match_batch(GROUP, keys)
    finally:
        await rpc.stop(None)


@pytest.mark.parametrize("engine", ENGINES)
def test_tls_and_mutual_tls(tmp_path: Path, engine: str) -> None:
    certs = make_certs(tmp_path)
    s = ServerThread(tls=TlsFiles(cert=certs["server_cert"], key=certs["server_key"]), engine=engine)
    try:
        s.call(populate, s.catalog, GROUP, 3)
        with RpcClient(s.addr, tls_ca=certs["ca"]) as c:
            assert c.match(GROUP, "k").group == GROUP
        # plaintext to a TLS port fails
        with RpcClient(s.addr, timeout=3) as c, pytest.raises(RegistryError):
            c.match(GROUP, "k")
    finally:
        s.stop()
    m = ServerThread(tls=TlsFiles(cert=certs["server_cert"], key=certs["server_key"], ca=certs["ca"]), engine=engine)
    try:
        m.call(populate, m.catalog, GROUP, 3)
        tls = TlsConfig(ca=certs["ca"], cert=certs["client_cert"], key=certs["client_key"])
        with RpcClient(m.addr, tls=tls) as c:
            assert c.match(GROUP, "k").group == GROUP
        # no client certificate: refused
        with RpcClient(m.addr, tls_ca=certs["ca"], timeout=3) as c, pytest.raises(RegistryError):
            c.match(GROUP, "k")
    finally:
        m.stop()


def test_client_errors_carry_status() -> None:
    err = NotFound("x", code=grpc.StatusCode.NOT_FOUND, group="g", addresses=["a:1"])
    assert err.code == grpc.StatusCode.NOT_FOUND and err.group == "g" and err.addresses == ("a:1",)


@pytest.mark.parametrize("algorithm", ["consistent", "chash"])
def test_cache_uses_the_servers_ring_parameters(algorithm: str) -> None:
    """Mixed/absent replicas tags and weights: the cache must still build the server's ring
    (chash fixes a group's replicas by its first member; absent tags use the server default)."""
    s = ServerThread(Catalog(algorithm=algorithm, default_replicas=64))
    try:
        def fill() -> None:
            s.catalog.apply("first", tags(GROUP, "10.0.0.1:1", replicas=30))
            s.catalog.apply("heavy", tags(GROUP, "10.0.0.2:1", replicas=90, weight="3"))
            s.catalog.apply("plain", {"group": GROUP, "addr": "10.0.0.3:1"})  # no replicas tag
            s.catalog.apply("bad", {"group": GROUP, "addr": "10.0.0.4:1", "replicas": "lots"})

        s.call(fill)
        keys = [f"key-{i}" for i in range(5000)]
        with RpcClient(s.addr) as plain, RpcClient(s.addr, cache=True) as cached:
            want = plain.match_batch(GROUP, keys)
            assert len({x.id for x in want}) == 4
            assert cached.match_batch(GROUP, keys) == want
            s.apply("first", None)  # chash keeps the group's replicas even so
            s.apply("late", tags(GROUP, "10.0.0.5:1", replicas=200))
            v = s.call(s.catalog.version, GROUP)
            wait_for(lambda: cached.cache_version(GROUP) >= v, what="cache caught up")
            assert cached.match_batch(GROUP, keys) == plain.match_batch(GROUP, keys)
    finally:
        s.stop()
