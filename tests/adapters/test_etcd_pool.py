"""A pool of real registry processes with ``-adapter etcd:...`` against a real etcd (issue 18's "done when").

Everything is real: etcd 3.4 (Debian's etcd-server, `tests.adapters.test_etcd.Etcd`), registry processes
(`tests.e2e.helpers.Registry`), services that gossip (`registry.register.Register` in a child process,
`SERVICE_SRC`), and keys written by a plain etcd client (aetcd's ``Client``, not our adapter).

* export: services join, leave (SIGTERM), fail (SIGKILL), one is critical; the writer registry is
  SIGKILLed; after each step the export prefix equals the catalog a live registry answers over gRPC;
* restarts: the writer (SIGTERM, then again with the same id) and a non-writer; the prefix converges to
  the catalog, every key under the current writer's lease (nothing stale, nothing duplicated);
* import: Match answers for 1,000 keys equal on all three registries and equal to uhashring (the oracle of
  tests/registry/test_ring_packed.py), after puts, changes, deletes and a revoked lease;
* no loops: an import prefix (``/``) that contains the export prefix imports nothing of ours, and a pool
  with nothing changing writes nothing to etcd (the revision stands still for 3 s).
"""

from __future__ import annotations

import json
import signal
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from tests.adapters.test_etcd import Etcd, client, etcd, until  # noqa: F401  (etcd: the fixture)
from tests.e2e.helpers import Proc, Registry, procs, wait_for

aetcd = pytest.importorskip("aetcd", reason="pip install 'hashring-registry[etcd]'")

pytestmark = pytest.mark.etcd

ROOT = Path(__file__).resolve().parents[2]
DC = "dc1"
BASE = f"/registry/{DC}/".encode()
ELECT = f"/registry/.writers/{DC}".encode()

#: A service of the pool: `Register` in a process of its own (real gossip), with the given tags and ring
#: parameters; health "critical" gives it a check that always says so (a service without checks publishes
#: no health: passing).  Prints "registered" once a registry answered its join; SIGTERM leaves the pool.
SERVICE_SRC = r"""
import json, signal, sys, threading
from registry.checks import CallableCheck
from registry.register import Register
sid, seeds, group, addr, profile, health, extra = sys.argv[1:8]
kw = json.loads(extra)
checks = [CallableCheck(lambda: health, interval=0.1)] if health != "passing" else None
done = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: done.set())
reg = Register(sid, "127.0.0.1:0", "", seeds, group, addr, profile=profile, checks=checks, **kw)
reg.start()
print("registered", reg.address, flush=True)
done.wait()
reg.stop()
print("left", flush=True)
"""


def service(
    ps: list[Proc],
    tmp: Path,
    sid: str,
    seeds: Sequence[str],
    group: str,
    addr: str,
    profile: str,
    health: str = "passing",
    **kw: Any,
) -> Proc:
    argv = [sys.executable, "-c", SERVICE_SRC, sid, ",".join(seeds), group, addr, profile, health, json.dumps(kw)]
    p = Proc(argv, tmp / f"svc-{sid}.log")
    ps.append(p)
    return p


def adapter_spec(etcd: Etcd, **kw: str) -> list[str]:
    opts = {"endpoint": etcd.endpoint, "lease_ttl": "2", "retry": "0.2", **kw}
    return ["-adapter", "etcd:" + ",".join(f"{k}={v}" for k, v in opts.items())]


@contextmanager
def pool(tmp: Path, spec: list[str], profile: str, n: int = 3) -> Iterator[tuple[list[Proc], list[Registry]]]:
    """n registries gossiping together, each with the etcd adapter ``spec``."""
    with procs() as ps:
        first = Registry(ps, tmp, "r1", (), *spec, profile=profile)
        rs = [first] + [Registry(ps, tmp, f"r{i}", (first.gossip,), *spec, profile=profile) for i in range(2, n + 1)]
        for r in rs:
            r.wait_ready()
        names = {r.id for r in rs}
        for r in rs:
            wait_for(partial(_sees, r, names), 30, what=f"{r.id} sees the pool")
        yield ps, rs


def _sees(r: Registry, names: set[str]) -> bool:
    return r.ids("registry-group") == names


def expected_export(r: Registry) -> dict[str, dict[str, Any]]:
    """What the export prefix must hold for the catalog ``r`` answers over gRPC now (issue 18's format:
    ``<group>/<id>`` -> {addr, tags, health, kind, health_note if not passing}, the member tags the key or
    those fields say (addr, group, dc, health, health_note) left out, replicas and weight
    lifted out of the tags as integers; imported services not exported)."""
    out: dict[str, dict[str, Any]] = {}
    with r.client() as cl:
        for g in cl.groups():
            for s in cl.members(g):
                if s.origin:
                    continue
                tags = {k: v for k, v in s.tags.items() if k not in ("addr", "group", "dc", "health", "health_note")}
                doc: dict[str, Any] = {"addr": s.addr, "health": s.health, "kind": s.kind}
                if s.health != "passing" and s.health_note:
                    doc["health_note"] = s.health_note
                for ring in ("replicas", "weight"):
                    if tags.get(ring, "").isdigit():
                        doc[ring] = int(tags.pop(ring))
                doc["tags"] = tags
                out[f"{g}/{s.id}"] = doc
    return out


async def export_state(c: Any) -> tuple[dict[str, dict[str, Any]], set[int], bytes | None, int]:
    """(the dc's exported keys -> value, the leases they are under, the writer, the writer's lease)."""
    kvs = await c.get_prefix(b"/registry/")
    prefix = {kv.key[len(BASE) :].decode(): json.loads(kv.value) for kv in kvs if kv.key.startswith(BASE)}
    leases = {kv.lease for kv in kvs if kv.key.startswith(BASE)}
    others = [kv.key for kv in kvs if not kv.key.startswith(BASE) and kv.key != ELECT]
    assert not others, f"keys under /registry/ outside {BASE!r}: {others}"
    elect = [kv for kv in kvs if kv.key == ELECT]
    return prefix, leases, elect[0].value if elect else None, elect[0].lease if elect else 0


async def converged(c: Any, r: Registry, want: Mapping[str, Any] | None = None) -> bool:
    """The prefix is exactly the catalog ``r`` answers (and, if given, holds ``want``), every key under the
    elected writer's lease (no key left by an earlier writer, none written twice under two leases)."""
    prefix, leases, writer, lease = await export_state(c)
    catalog = expected_export(r)
    # raised, not returned: `until` names the last difference when it gives up
    if writer is None:
        raise AssertionError("no writer elected")
    if prefix != catalog:
        diff = {
            k: (prefix.get(k), catalog.get(k))
            for k in prefix.keys() | catalog.keys()
            if prefix.get(k) != catalog.get(k)
        }
        raise AssertionError(f"prefix != {r.id}'s catalog: key: (etcd, catalog) {diff}")
    if want is not None and any(prefix.get(k) != v for k, v in want.items()):
        raise AssertionError(f"want {want}, etcd has {prefix}")
    if prefix and leases != {lease}:
        raise AssertionError(f"keys under leases {leases}, the writer's is {lease}")
    return True


def passing(addr: str, kind: str = "gossip", **tags: str) -> dict[str, Any]:
    return {"addr": addr, "health": "passing", "kind": kind, "tags": tags}


async def test_export_pool_joins_leaves_failures_and_the_writer_killed(etcd: Etcd, tmp_path: Path) -> None:
    """Real services join (a key each, with its JSON), one leaves (SIGTERM: key gone), one is SIGKILLed
    (key gone once the pool marks it failed), a critical one shows as critical; then the writer registry
    is SIGKILLed: another is elected and the prefix equals the catalog of the two alive."""
    c = await client(etcd)
    try:
        with pool(tmp_path, adapter_spec(etcd), "fast") as (ps, rs):
            seeds = [r.gossip for r in rs]
            s1 = service(
                ps, tmp_path, "s1", seeds, "web", "10.1.0.1:80", "fast", tags={"v": "1"}, replicas=64, weight=2
            )
            s2 = service(ps, tmp_path, "s2", seeds, "web", "10.1.0.2:80", "fast")
            s3 = service(ps, tmp_path, "s3", seeds, "web", "10.1.0.3:80", "fast", health="critical")
            for s in (s1, s2, s3):
                wait_for(partial(s.logged, "registered"), 30, what=f"{s.log_path.name} registered")
            want = {
                "web/s1": {**passing("10.1.0.1:80", v="1"), "replicas": 64, "weight": 2},
                "web/s2": {**passing("10.1.0.2:80"), "replicas": 10000},  # Register's default replicas
            }
            await until(lambda: converged(c, rs[0], want), "the three services exported", 30)
            prefix, *_ = await export_state(c)
            assert prefix["web/s3"]["health"] == "critical" and prefix["web/s3"]["kind"] == "gossip", prefix
            assert {"r1", "r2", "r3"} <= {k.split("/", 1)[1] for k in prefix if k.startswith("registry-group/")}

            s2.signal(signal.SIGTERM)  # a leave
            assert s2.wait(30) == 0
            await until(lambda: _gone_and_converged(c, rs[0], "web/s2"), "s2's key removed on its leave", 30)
            s1.signal(signal.SIGKILL)  # a failure: gone once the pool marks it failed
            s1.wait(10)
            await until(lambda: _gone_and_converged(c, rs[0], "web/s1"), "s1's key removed on its failure", 40)

            _, _, writer, _ = await export_state(c)
            assert writer is not None
            dead = next(r for r in rs if r.id == writer.decode())
            dead.proc.signal(signal.SIGKILL)
            dead.proc.wait(10)
            alive = [r for r in rs if r is not dead]

            async def new_writer_converged() -> bool:
                _, _, w, _ = await export_state(c)
                names = {k.split("/", 1)[1] for k in expected_export(alive[0]) if k.startswith("registry-group/")}
                return w is not None and w != writer and names == {r.id for r in alive} and await converged(c, alive[0])

            await until(new_writer_converged, "another writer, the prefix the catalog of the two alive", 40)
            prefix, *_ = await export_state(c)
            assert prefix["web/s3"]["health"] == "critical" and "web/s1" not in prefix and "web/s2" not in prefix
    finally:
        await c.close()


async def _gone_and_converged(c: Any, r: Registry, key: str) -> bool:
    prefix, *_ = await export_state(c)
    return key not in prefix and await converged(c, r)


@pytest.mark.slow  # three registry restarts: 17 s here idle, 24 s at load 9
async def test_registry_restarts_converge_without_stale_or_duplicate_keys(etcd: Etcd, tmp_path: Path) -> None:
    """The writer stops (SIGTERM: its lease revoked, another elected at once) and starts again with the same
    id; a non-writer does the same; then the writer is SIGKILLed, a service leaves while it is down, and it
    is restarted within its lease (lease_ttl 10 s: it adopts its own lease, whose key for the service that
    left is stale).  After each step the prefix is exactly the catalog, every key under the current
    writer's lease."""
    c = await client(etcd)
    try:
        with pool(tmp_path, adapter_spec(etcd, lease_ttl="10"), "lan") as (ps, rs):
            seeds = [r.gossip for r in rs]
            svcs = [service(ps, tmp_path, f"s{i}", seeds, "web", f"10.2.0.{i}:80", "lan", replicas=100) for i in (1, 2)]
            for s in svcs:
                wait_for(partial(s.logged, "registered"), 30, what=f"{s.log_path.name} registered")
            await until(
                lambda: converged(c, rs[0], {"web/s2": {**passing("10.2.0.2:80"), "replicas": 100}}),
                "the pool exported",
                30,
            )

            async def restart(r: Registry, sig: int, leaves: Proc | None) -> Registry:
                gossip = r.gossip_port
                r.proc.signal(sig)
                r.proc.wait(30)
                if leaves is not None:  # a service leaves while the registry is down
                    leaves.signal(signal.SIGTERM)
                    assert leaves.wait(30) == 0
                others = [x for x in rs if x is not r]
                again = Registry(
                    ps,
                    tmp_path,
                    r.id,
                    [x.gossip for x in others],
                    *adapter_spec(etcd, lease_ttl="10"),
                    gossip=gossip,
                    profile="lan",
                ).wait_ready()
                rs[rs.index(r)] = again
                names = {x.id for x in rs}
                try:
                    wait_for(lambda: all(x.ids("registry-group") == names for x in rs), 60, what="the pool whole again")
                except AssertionError:
                    seen = {x.id: sorted(x.ids("registry-group")) for x in rs}
                    raise AssertionError(f"after restarting {r.id} ({sig!r}) the registries see {seen}; "
                                         f"its log:\n{again.proc.output()[-3000:]}") from None
                return again

            for step in ("writer SIGTERM", "non-writer SIGTERM", "writer SIGKILL"):
                _, _, writer, _ = await export_state(c)
                assert writer is not None
                target = next(r for r in rs if (r.id == writer.decode()) == step.startswith("writer"))
                killed = "KILL" in step
                # the SIGKILLed writer comes back within its lease and adopts it: s1 left meanwhile, so the
                # key s1 still has under that lease is stale and must go
                again = await restart(target, signal.SIGKILL if killed else signal.SIGTERM, svcs[0] if killed else None)
                witness = next(r for r in rs if r is not again)
                await until(partial(converged, c, witness), f"the prefix the catalog after a {step} restart", 40)
                prefix, leases, writer, _ = await export_state(c)
                assert ("web/s1" in prefix) != killed and "web/s2" in prefix and len(leases) == 1, (
                    step,
                    prefix,
                    leases,
                )
                if killed:
                    print(f"after the writer's SIGKILL and restart, the writer is {writer!r} (was {target.id})")
    finally:
        await c.close()


def oracle(services: Mapping[str, tuple[int | None, int | None]], keys: Sequence[str]) -> list[str]:
    """The owner of each key computed without the registry: uhashring with xxh3_64 (the ring's documented
    semantics, as tests/registry/test_ring_packed.py checks them), replicas None = the default 4096."""
    import uhashring
    import xxhash

    from registry.ring import DEFAULT_REPLICAS

    def xx(text: str) -> int:
        return int(xxhash.xxh3_64_intdigest(text.encode()))

    nodes = {sid: {"vnodes": r or DEFAULT_REPLICAS, "weight": w or 1} for sid, (r, w) in services.items()}
    ring = uhashring.HashRing(nodes, hash_fn=xx)
    return [str(ring.get_node(k)) for k in keys]


def answers(r: Registry, group: str, keys: Sequence[str]) -> list[str]:
    with r.client() as cl:
        return [s.id for s in cl.match_batch(group, keys)]


async def test_imports_match_equal_on_every_registry_and_the_oracle(etcd: Etcd, tmp_path: Path) -> None:
    """Keys written by a plain etcd client under /services/<group>/<id>: Match for 1,000 keys answers the
    same on all three registries and what uhashring computes, after puts, changes (replicas, weight, addr),
    deletes, and the revocation of a lease one key was under; nothing imported is exported back."""
    keys = [f"user-{i}" for i in range(1000)]
    c = await client(etcd)
    groups: dict[str, dict[str, tuple[int | None, int | None]]] = {
        "api": {f"a{i}": ((64, 300, 1024)[i % 3], (1, 2)[i % 2]) for i in range(20)},
        "pay": {f"p{i}": (200, None) for i in range(4)},
    }
    groups["pay"]["p-default"] = (None, None)  # the registry's default replicas

    async def put(group: str, sid: str, addr: str, lease: Any = None) -> None:
        r, w = groups[group][sid]
        doc: dict[str, Any] = {"addr": addr, "tags": {"src": "plain"}}
        if r is not None:
            doc["replicas"] = r
        if w is not None:
            doc["weight"] = w
        await c.put(f"/services/{group}/{sid}".encode(), json.dumps(doc).encode(), lease=lease)

    def all_equal_oracle(rs: Sequence[Registry]) -> bool:
        for g, svcs in groups.items():
            want = oracle(svcs, keys)
            got = [answers(r, g, keys) for r in rs]
            if any(a != want for a in got):
                wrong = [sum(x != y for x, y in zip(a, want)) for a in got]
                raise AssertionError(f"group {g}: keys answered unlike the oracle per registry: {wrong}")
        return True

    try:
        lease = await c.lease(30)
        for g, svcs in groups.items():
            for n, sid in enumerate(svcs):
                await put(g, sid, f"10.3.{n}.1:80", lease=lease if sid == "a7" else None)
        with pool(tmp_path, adapter_spec(etcd), "lan") as (_, rs):
            wait_for(lambda: all_equal_oracle(rs), 30, what="Match equal to the oracle on all three (puts)")
            with rs[1].client() as cl:
                a0 = next(s for s in cl.members("api") if s.id == "a0")
            assert (a0.kind, a0.origin, a0.addr, a0.tags.get("src")) == ("external", "etcd", "10.3.0.1:80", "plain")
            # changes: ring parameters, an address, deletes, a new one
            groups["api"]["a1"] = (700, 1)
            groups["api"]["a2"] = (300, 3)
            await put("api", "a1", "10.3.1.1:80")
            await put("api", "a2", "10.3.2.1:80")
            await put("api", "a3", "10.9.9.9:80")
            for sid in ("a4", "a5"):
                del groups["api"][sid]
                await c.delete(f"/services/api/{sid}".encode())
            groups["pay"]["p-new"] = (500, 2)
            await put("pay", "p-new", "10.3.99.1:80")
            wait_for(lambda: all_equal_oracle(rs), 30, what="Match equal to the oracle on all three (changes)")

            def moved(r: Registry) -> bool:
                with r.client() as cl:
                    return any(s.id == "a3" and s.addr == "10.9.9.9:80" for s in cl.members("api"))

            wait_for(lambda: all(moved(r) for r in rs), 30, what="a3's new address on all three")
            # the lease a7 was under is revoked: a7 goes from every ring
            await lease.revoke()
            del groups["api"]["a7"]
            wait_for(lambda: all_equal_oracle(rs), 30, what="Match equal to the oracle on all three (lease revoked)")
            prefix, *_ = await export_state(c)
            assert prefix and not [k for k in prefix if not k.startswith("registry-group/")], prefix
    finally:
        await c.close()


async def test_import_of_the_root_takes_nothing_of_ours_and_a_quiet_pool_writes_nothing(
    etcd: Etcd, tmp_path: Path
) -> None:
    """Import prefix ``/`` (it contains the export prefix /registry/): the registries import the other
    systems' keys only, never the pool's exports or the election key; with nothing changing, etcd's
    revision stands still for 3 s (no write loop, no rewrite of equal values); a put of one imported key
    costs exactly that one revision (an import is not exported, so nothing is written back)."""
    c = await client(etcd)

    async def revision() -> int:
        # a read's header carries the store's revision (every write bumps it; lease keepalives do not)
        return int((await c.get(b"/probe")).header.revision)

    def imported(r: Registry) -> set[tuple[str, str]]:
        with r.client() as cl:
            return {(s.group, s.id) for g in cl.groups() for s in cl.members(g) if s.origin}

    try:
        await c.put(b"/services/api/a", b'{"addr": "10.4.0.1:80"}')
        await c.put(b"/other/x", b'{"addr": "10.4.0.2:80"}')
        theirs = {("services", "api/a"), ("other", "x")}
        with pool(tmp_path, adapter_spec(etcd, prefix="/"), "lan", n=2) as (_, rs):
            await until(lambda: converged(c, rs[0]), "the pool exported", 30)
            wait_for(lambda: all(imported(r) == theirs for r in rs), 30, what="the root imported")
            before = await revision()
            t0 = time.monotonic()
            while time.monotonic() - t0 < 3.0:  # the measurement window the brief asks for: a steady pool
                assert all(imported(r) == theirs for r in rs)
                await until(lambda: converged(c, rs[0]), "still converged", 10)
            assert await revision() == before, "etcd was written while nothing changed"
            await c.put(b"/services/api/b", b'{"addr": "10.4.0.3:80"}')
            put_rev = await revision()
            wait_for(
                lambda: all(imported(r) == theirs | {("services", "api/b")} for r in rs),
                30,
                what="the new key imported",
            )
            t0 = time.monotonic()
            while time.monotonic() - t0 < 2.0:
                await until(lambda: converged(c, rs[0]), "still converged", 10)
            assert await revision() == put_rev == before + 1, "an import was written back to etcd"
    finally:
        await c.close()
