"""A real cluster on loopback: 2 registries, 3 services, clients.  Timings use the fast profile.
registry-1 serves gRPC with the native front (the default), registry-2 with grpcio's, so every
comparison between them also compares the two fronts.

Every figure asserted here is also printed (run with -s to see them).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from registry.memberlist.config import Config, failure_detection_bound

from .helpers import Proc, Registry, Service, procs, wait_for

GROUP = "webservice"
KEYS = [f"user-{i}" for i in range(10_000)]


@dataclass
class Cluster:
    ps: list[Proc]
    tmp: Path
    r1: Registry
    r2: Registry
    services: list[Service]

    @property
    def seeds(self) -> list[str]:
        return [self.r1.gossip, self.r2.gossip]

    def on_both(self, pred: Callable[[Registry], bool]) -> bool:
        return all(pred(r) for r in (self.r1, self.r2))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("cluster")
    with procs() as ps:
        r1 = Registry(ps, tmp, "registry-1")
        r1.wait_ready()
        r2 = Registry(ps, tmp, "registry-2", [r1.gossip], "-rpc-engine", "grpcio").wait_ready()
        services = [Service(ps, tmp, f"web-{i}", [r1.gossip, r2.gossip]) for i in range(3)]
        for s in services:
            s.wait_registered()
        want = {s.id for s in services}
        wait_for(lambda: r1.ids(GROUP) == want and r2.ids(GROUP) == want, 30, what="3 services on both registries")
        wait_for(lambda: r1.ids("registry-group") == r2.ids("registry-group") == {"registry-1", "registry-2"}, 30)
        yield Cluster(ps, tmp, r1, r2, services)


def _batch(r: Registry) -> list[tuple[str, str]]:
    from registry.client import RpcClient

    with RpcClient(r.rpc, timeout=30) as c:
        return [(s.id, s.addr) for s in c.match_batch(GROUP, KEYS)]


def test_match_identical_everywhere(cluster: Cluster) -> None:
    """Both registries, a caching client and a single Match agree on all 10k keys.

    Agreement is eventual: on a loaded machine the fast profile can briefly declare a starved
    service dead (it refutes within a second), so the comparison is retried until it holds,
    with a deadline; a lasting disagreement still fails."""
    from registry.client import RpcClient

    want = {s.id for s in cluster.services}

    def agree() -> str:
        a, b = _batch(cluster.r1), _batch(cluster.r2)
        if a != b:
            return f"registries differ on {sum(x != y for x, y in zip(a, b))} keys"
        owners = {sid for sid, _ in a}
        if owners != want:  # 10k keys hit every service
            return f"owners {sorted(owners)} != {sorted(want)}"
        with RpcClient([cluster.r1.rpc, cluster.r2.rpc], cache=True, timeout=30) as c:
            cached = [(s.id, s.addr) for s in (c.match(GROUP, k) for k in KEYS)]
        if cached != a:
            return f"cached client differs on {sum(x != y for x, y in zip(cached, a))} keys"
        with RpcClient(cluster.r2.rpc) as c:
            one = c.match(GROUP, "user-42")
        if (one.id, one.addr) != a[42]:
            return f"Match(user-42) = {one} but batch says {a[42]}"
        return ""

    last = ["never compared"]

    def ok() -> bool:
        last[0] = agree()
        return not last[0]

    try:
        wait_for(ok, 60, interval=0.5, what="agreement")
    except AssertionError:
        raise AssertionError(f"never agreed; last: {last[0]}") from None


def _measure(pred: Callable[[], object], timeout: float) -> float:
    t0 = time.monotonic()
    wait_for(pred, timeout, interval=0.01)
    return time.monotonic() - t0


def test_late_service_matched_within_1s(cluster: Cluster) -> None:
    s = Service(cluster.ps, cluster.tmp, "web-late", cluster.seeds)
    s.wait_registered()
    took = _measure(lambda: cluster.on_both(lambda r: "web-late" in r.ids(GROUP)), 30)
    print(f"late service visible on both registries {took:.3f}s after Register.start returned")
    assert took <= 1.0
    s.proc.signal(signal.SIGTERM)
    assert s.proc.wait(30) == 0
    wait_for(lambda: cluster.on_both(lambda r: "web-late" not in r.ids(GROUP)), 30)


def test_graceful_stop_leaves_within_1s(cluster: Cluster) -> None:
    s = Service(cluster.ps, cluster.tmp, "web-graceful", cluster.seeds).wait_registered()
    wait_for(lambda: cluster.on_both(lambda r: "web-graceful" in r.ids(GROUP)), 30)
    t0 = time.monotonic()
    s.proc.signal(signal.SIGTERM)
    wait_for(lambda: cluster.on_both(lambda r: "web-graceful" not in r.ids(GROUP)), 30, interval=0.01)
    took = time.monotonic() - t0
    print(f"graceful leave: gone from both registries {took:.3f}s after SIGTERM")
    assert took <= 1.0
    assert s.proc.wait(30) == 0


def test_killed_service_leaves_within_failure_bound(cluster: Cluster) -> None:
    s = Service(cluster.ps, cluster.tmp, "web-killed", cluster.seeds).wait_registered()
    wait_for(lambda: cluster.on_both(lambda r: "web-killed" in r.ids(GROUP)), 30)
    n = len(cluster.r1.ids(GROUP)) + 2  # services + registries in the pool
    bound = failure_detection_bound(Config.fast(), n)
    t0 = time.monotonic()
    s.proc.signal(signal.SIGKILL)
    wait_for(lambda: cluster.on_both(lambda r: "web-killed" not in r.ids(GROUP)), 60, interval=0.02)
    took = time.monotonic() - t0
    print(f"SIGKILLed service gone from both registries after {took:.3f}s (fast bound for n={n}: {bound:.2f}s)")
    # 1 s of slack for two loaded cores: the bound assumes timers fire on time
    assert took <= bound + 1.0
    with_others = {x.id for x in cluster.services}
    assert cluster.r1.ids(GROUP) == cluster.r2.ids(GROUP) == with_others


def test_restarted_registry_gets_every_service_back(cluster: Cluster) -> None:
    r3 = Registry(cluster.ps, cluster.tmp, "registry-3", [cluster.r1.gossip]).wait_ready()
    want = cluster.r1.ids(GROUP)
    wait_for(lambda: r3.ids(GROUP) == want, 30)
    r3.proc.signal(signal.SIGKILL)
    r3.proc.wait(30)
    again = Registry(cluster.ps, cluster.tmp, "registry-3", [cluster.r2.gossip],
                     gossip=r3.gossip_port, rpc=r3.rpc_port)
    t0 = time.monotonic()
    wait_for(lambda: again.proc.alive() and again.ids(GROUP) == want, 60, interval=0.02)
    took = time.monotonic() - t0
    print(f"restarted registry had all {len(want)} services {took:.3f}s after exec")
    assert _batch(again) == _batch(cluster.r1)
    again.proc.signal(signal.SIGTERM)
    assert again.proc.wait(30) == 0
    wait_for(lambda: "registry-3" not in cluster.r1.ids("registry-group"), 30)


def test_ops_subcommands(cluster: Cluster) -> None:
    import subprocess

    from .helpers import env, registry_cmd

    def run(*a: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(registry_cmd(*a), capture_output=True, text=True, env=env(), timeout=60)

    g = run("groups", "-rpc", cluster.r1.rpc)
    assert g.returncode == 0 and set(g.stdout.split()) >= {GROUP, "registry-group"}, g
    m = run("members", "-rpc", cluster.r2.rpc, "-group", GROUP, "-status", "alive")  # the tests above left some
    assert m.returncode == 0, m
    assert {ln.split()[0] for ln in m.stdout.splitlines()} == {s.id for s in cluster.services}
    assert "group=webservice" in m.stdout and {ln.split()[3] for ln in m.stdout.splitlines()} == {"alive"}, m
    allm = run("members", "-rpc", cluster.r2.rpc)
    assert "registry-1" in allm.stdout and "web-0" in allm.stdout
    x = run("match", GROUP, "user-42", "-rpc", cluster.r1.rpc)
    assert x.returncode == 0 and x.stdout.split()[0] == _batch(cluster.r1)[42][0], x
    x3 = run("match", GROUP, "user-42", "-n", "3", "-rpc", cluster.r1.rpc)
    assert x3.returncode == 0 and len(x3.stdout.splitlines()) == 3, x3
    bad = run("match", "nosuchgroup", "k", "-rpc", cluster.r1.rpc)
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "nosuchgroup" in bad.stderr, bad
    down = run("groups", "-rpc", "127.0.0.1:1", "-timeout", "2")
    assert down.returncode == 1 and down.stderr.startswith("registry: "), down


KEY = "T9jncgl9mbLus+baTTa7q7nPSUrXwbDi2dhbtqir37s="


@pytest.mark.serf
def test_go_serf_agent_as_service_and_peer_with_encryption(tmp_path: Path) -> None:
    """Debian's Go `serf agent` joins an encrypted registry as a service (tags group/addr, as a
    Go Register would send); a Python Register joins *through* the Go agent; `serf members`
    shows the registry with its tags; a Register with the wrong key is refused."""
    from registry.register import Register, RegisterError
    from tests.serfagent import SerfAgent

    with procs() as ps:
        r = Registry(ps, tmp_path, "registry-enc", (), "-encrypt", KEY).wait_ready()
        go = SerfAgent("go-svc", tags={"group": "gosvc", "addr": "10.1.1.1:80", "replicas": "10000"},
                       encrypt=KEY, log_level="info")
        try:
            go.start()
            go.run("join", r.gossip)
            wait_for(lambda: r.ids("gosvc") == {"go-svc"}, 30, what="Go serf agent in the catalog")
            reg_row = go.wait_member("registry-enc", "alive", timeout=30)
            assert reg_row["tags"]["group"] == "registry-group"
            assert reg_row["tags"]["addr"] == r.rpc and reg_row["tags"]["id"] == "registry-enc"
            with Register("py-svc", "127.0.0.1:0", "", go.bind, "gosvc", "10.1.1.2:80", profile="fast",
                          encrypt=KEY):
                wait_for(lambda: r.ids("gosvc") == {"go-svc", "py-svc"}, 30, what="Register joined via Go agent")
                go.wait_member("py-svc", "alive", timeout=30)
            wait_for(lambda: r.ids("gosvc") == {"go-svc"}, 30, what="py-svc left")
            wrong = Register("py-bad", "127.0.0.1:0", "", r.gossip, "gosvc", "10.1.1.3:80", profile="fast",
                             encrypt="AAAAAAAAAAAAAAAAAAAAAA==")
            with pytest.raises(RegisterError):
                wrong.start()
            go.leave()
            wait_for(lambda: not r.ids("gosvc"), 30, what="Go agent left")
            # and the registry itself leaves (not fails) on SIGTERM, as a Go peer sees it
            watch = SerfAgent("go-watch", encrypt=KEY, log_level="info")
            try:
                watch.start()
                watch.run("join", r.gossip)
                watch.wait_member("registry-enc", "alive", timeout=30)
                r.proc.signal(signal.SIGTERM)
                assert r.proc.wait(30) == 0
                watch.wait_member("registry-enc", "left", timeout=30)
            finally:
                watch.close()
        finally:
            go.close()


def test_registry_started_before_its_seed_joins_later(tmp_path: Path) -> None:
    """A registry whose seeds are not up yet keeps serving and retries the join."""
    from .helpers import free_port

    seed_gossip = free_port()
    with procs() as ps:
        early = Registry(ps, tmp_path, "registry-early", [f"127.0.0.1:{seed_gossip}"]).wait_ready()
        wait_for(lambda: "no seed answered" in early.proc.output() or "join failed" in early.proc.output(), 30)
        late = Registry(ps, tmp_path, "registry-late", (), gossip=seed_gossip).wait_ready()
        both = {"registry-early", "registry-late"}
        wait_for(lambda: early.ids("registry-group") == late.ids("registry-group") == both, 30,
                 what="the early registry joined once its seed came up")
