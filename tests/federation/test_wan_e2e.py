"""Issue 17's "Done when", with real `registry` processes federated over the WAN pool (fast profile).

Every registry's WAN gossip port and gRPC port sit behind a fault-injecting `Proxy` (tests/federation/
proxy.py): `-wan-advertise` and `-advertise` tell the proxies' addresses, so every WAN packet and every
follower's Watch stream to that registry passes its proxies, while the test itself queries each registry
directly (its answers are not faults' victims).  A WAN cut is `cut()` on every proxy; "dc3 is far" is a
delay on dc3's WAN proxy (the pings to it pay it on the way in, its pings' acks on the way back).

The queries are raw gRPC calls built from the proto (registry.v1), so these tests depend on the wire
contract only, not on any client's spelling of it.

- two datacenters x two registries, services in both: MatchBatch on dc1 for dc2 (10,000 keys) equals
  MatchBatch on dc2, through a join, a leave and a failure in dc2, within PROPAGATION seconds of dc2
  itself showing the change; the dc2 registry dc1 follows is killed: the answers go on (from the mirror,
  stale for the switch time at most), none fails, and are correct again once switched (times printed);
- the WAN link cut for CUT seconds (60 by default, the issue's figure; WAN_CUT_SECONDS to change):
  local answers unaffected throughout, remote ones served from the kept mirror with their age, correct
  (a change made in dc2 during the cut included) within RECOVERY seconds of the heal;
- three datacenters, dc3 behind 80 ms, dc2 behind 5 ms: with every "pay" service of dc1 stopped,
  Match(failover=True) on dc1 answers from dc2; back from dc1 once one of dc1's returns.

A datacenter with a wrong WAN key is tests/wan/test_pool.py's.
"""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest

from registry.catalog import REGISTRY_GROUP
from registry.register import Register
from registry.v1 import registry_pb2 as pb
from registry.v1.registry_pb2_grpc import RegistryStub
from tests.e2e.helpers import Proc, Registry, Service, free_port, procs

from .proxy import Proxy

KEY = base64.b64encode(os.urandom(32)).decode()
KEYS = [f"user-{i}" for i in range(10_000)]
#: seconds a change dc2 shows may take to show in dc1's mirror (fast profile; measured ~0.1-1 s)
PROPAGATION = 15.0
#: the WAN cut; the issue says 60 s
CUT = float(os.environ.get("WAN_CUT_SECONDS", "60"))
#: seconds after the heal until dc1 answers for dc2 correctly and fresh again
RECOVERY = 30.0

T = TypeVar("T")


def wait(pred: Callable[[], T | None], timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll `pred` until truthy (exceptions count as no); fail naming `what` and the last answer."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            last = value = pred()
            if value:
                return value
        except (grpc.RpcError, OSError) as exc:
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
        time.sleep(interval)


class Rpc:
    """Raw gRPC stubs by address, one channel each, closed at the end."""

    def __init__(self) -> None:
        self._channels: dict[str, tuple[grpc.Channel, RegistryStub]] = {}

    def __call__(self, addr: str) -> RegistryStub:
        if addr not in self._channels:
            ch = grpc.insecure_channel(addr, options=[("grpc.max_receive_message_length", 64 << 20)])
            self._channels[addr] = (ch, RegistryStub(ch))  # type: ignore[no-untyped-call]
        return self._channels[addr][1]

    def close(self) -> None:
        for ch, _ in self._channels.values():
            ch.close()
        self._channels.clear()


@dataclass
class Node:
    """A registry process with its WAN and gRPC ports behind proxies."""

    ident: str
    dc: str
    registry: Registry
    rpc: str  # direct (the test's queries)
    wan: Proxy
    grpc: Proxy

    @property
    def proxies(self) -> list[Proxy]:
        return [self.wan, self.grpc]


@dataclass
class Federation:
    ps: list[Proc]
    tmp: Path
    stack: contextlib.ExitStack
    rpc: Rpc = field(default_factory=Rpc)
    nodes: list[Node] = field(default_factory=list)
    services: list[Register] = field(default_factory=list)

    def start(self, ident: str, dc: str, lan: Sequence[str] = ()) -> Node:
        wan_port, rpc_port = free_port(), free_port()
        wan = self.stack.enter_context(Proxy(("127.0.0.1", wan_port)))
        grpc_proxy = self.stack.enter_context(Proxy(("127.0.0.1", rpc_port)))
        join = [n.wan.address for n in self.nodes[:1]]
        extra = ["-datacenter", dc, "-wan-bind", f"127.0.0.1:{wan_port}", "-wan-advertise", wan.address,
                 "-advertise", grpc_proxy.address, "-wan-encrypt", KEY]
        if join:
            extra += ["-wan-join", ",".join(join)]
        r = Registry(self.ps, self.tmp, f"{ident}", lan, *extra, rpc=rpc_port)
        node = Node(ident, dc, r, f"127.0.0.1:{rpc_port}", wan, grpc_proxy)
        self.nodes.append(node)
        return node

    def ready(self, node: Node) -> None:
        def serving() -> bool:
            node.registry.proc.check_running()
            got = self.rpc(node.rpc).Members(pb.MembersRequest(group="registry-group"), timeout=5)
            return node.ident in {s.id for s in got.services}

        wait(serving, 60, f"{node.ident}.{node.dc} serving")

    def service(self, ident: str, group: str, node: Node, **kw: Any) -> Register:
        r = Register(ident, "127.0.0.1:0", "", [node.registry.gossip], group,
                     f"10.{len(self.services) % 250}.0.1:{8000 + len(self.services)}", profile="fast",
                     datacenter=node.dc, **kw)
        r.start()
        self.services.append(r)
        return r

    def dc(self, name: str) -> list[Node]:
        return [n for n in self.nodes if n.dc == name and n.registry.proc.alive()]

    def close(self) -> None:
        for s in self.services:
            with contextlib.suppress(Exception):
                s.stop()
        self.rpc.close()


@pytest.fixture
def federation(tmp_path: Path) -> Iterator[Federation]:
    with procs() as ps, contextlib.ExitStack() as stack:
        fed = Federation(ps, tmp_path, stack)
        try:
            yield fed
        finally:
            fed.close()


def ids(rows: Any) -> list[str]:
    return [s.id for s in rows]


def batch(rpc: Rpc, addr: str, group: str, dc: str = "") -> tuple[list[str], pb.MatchBatchResponse | None]:
    """MatchBatch of every key: the ids ([] when the group routes nobody there) and the answer."""
    try:
        got = rpc(addr).MatchBatch(pb.MatchBatchRequest(group=group, keys=KEYS, datacenter=dc), timeout=20)
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.NOT_FOUND and "datacenter" not in (exc.details() or ""):
            return [], None
        raise
    return ids(got.services), got


def differences(rpc: Rpc, local: Node, remote: Node) -> list[str]:
    """What `local` answers for `remote`'s datacenter otherwise than `remote` itself ([]: nothing)."""
    mine = rpc(local.rpc).Groups(pb.GroupsRequest(datacenter=remote.dc), timeout=10)
    theirs = [g for g in rpc(remote.rpc).Groups(pb.GroupsRequest(), timeout=10).groups if g != REGISTRY_GROUP]
    if list(mine.groups) != theirs:  # (a datacenter never exports its registries' group)
        return [f"groups {list(mine.groups)} != {theirs}"]
    if mine.stale_seconds != 0.0:
        return [f"stale for {mine.stale_seconds:.1f}s"]
    out = []
    for g in theirs:
        want, _ = batch(rpc, remote.rpc, g)
        got, answer = batch(rpc, local.rpc, g, remote.dc)
        if answer is not None and answer.datacenter != remote.dc:
            out.append(f"{g}: answered by {answer.datacenter!r}")
        if got != want:
            out.append(f"{g}: {sum(a != b for a, b in zip(got, want))} keys differ, {len(got)} vs {len(want)}")
    return out


def converge(fed: Federation, local: list[Node], remote: Node, timeout: float, what: str) -> float:
    """Seconds until every registry of `local` answers for `remote`'s datacenter as `remote` does."""
    start = time.monotonic()
    last: list[str] = []
    for node in local:
        def equal(node: Node = node) -> bool:
            nonlocal last
            last = differences(fed.rpc, node, remote)
            return not last

        try:
            wait(equal, max(0.1, timeout - (time.monotonic() - start)), what, interval=0.1)
        except AssertionError:
            raise AssertionError(f"{what}: {node.ident}.{node.dc} still differs after {timeout}s: {last}") from None
    return time.monotonic() - start


def members(fed: Federation, node: Node, group: str) -> set[str]:
    got = fed.rpc(node.rpc).Members(pb.MembersRequest(group=group), timeout=10)
    return {s.id for s in got.services}


def two_datacenters(fed: Federation) -> tuple[list[Node], list[Node]]:
    a1 = fed.start("a", "dc1")
    a2 = fed.start("a", "dc2")
    b1 = fed.start("b", "dc1", [a1.registry.gossip])
    b2 = fed.start("b", "dc2", [a2.registry.gossip])
    for n in fed.nodes:
        fed.ready(n)
    fed.service("web-1a", "web", a1, replicas=64)
    fed.service("web-1b", "web", b1, replicas=64)
    fed.service("web-2a", "web", a2, replicas=64)
    fed.service("web-2b", "web", b2, replicas=64, weight=2)
    fed.service("api-2a", "api", b2, replicas=32)
    return [a1, b1], [a2, b2]


def test_dc1_answers_for_dc2_through_churn_and_the_followed_registry_killed(federation: Federation) -> None:
    fed = federation
    dc1, dc2 = two_datacenters(fed)
    took = converge(fed, dc1, dc2[0], 60, "first sync")
    print(f"first sync: {took:.2f}s")

    def changed(what: str, pred: Callable[[], bool]) -> None:
        """dc2 shows the change first (its own gossip); then dc1 within PROPAGATION."""
        wait(pred, 30, f"dc2 showing {what}")
        took = converge(fed, dc1, dc2[0], PROPAGATION, f"after {what}")
        print(f"{what}: dc1 equal {took:.2f}s after dc2 showed it")

    fed.service("web-2c", "web", dc2[0], replicas=64)
    changed("a join", lambda: "web-2c" in members(fed, dc2[0], "web"))
    fed.services[2].stop()  # web-2a leaves
    changed("a leave", lambda: "web-2a" not in members(fed, dc2[0], "web"))
    proc = Service(fed.ps, fed.tmp, "web-2p", [dc2[0].registry.gossip], group="web").wait_registered()
    changed("a join (process)", lambda: "web-2p" in members(fed, dc2[0], "web"))
    proc.proc.signal(signal.SIGKILL)
    changed("a failure", lambda: "web-2p" not in members(fed, dc2[0], "web"))

    # kill the dc2 registry dc1 follows (the one whose gRPC proxy carries the most streams)
    followed = max(dc2, key=lambda n: n.grpc.connections)
    other = next(n for n in dc2 if n is not followed)
    assert followed.grpc.connections, "no follower stream through either dc2 registry's proxy"
    want = {g: batch(fed.rpc, other.rpc, g)[0] for g in ("web", "api")}
    failures: list[str] = []
    stale_max = 0.0
    followed.registry.proc.signal(signal.SIGKILL)
    killed = time.monotonic()
    switched: dict[str, float] = {}
    while len(switched) < len(dc1) and time.monotonic() - killed < 30:
        for node in dc1:
            for g in ("web", "api"):
                try:
                    got, answer = batch(fed.rpc, node.rpc, g, "dc2")
                except grpc.RpcError as exc:
                    failures.append(f"{node.ident}: {exc.code()} {exc.details()}")
                    continue
                assert answer is not None
                stale_max = max(stale_max, answer.stale_seconds)
                if got != want[g]:
                    failures.append(f"{node.ident} {g}: answered otherwise than dc2 during the switch")
            if node.ident not in switched and not differences(fed.rpc, node, other):
                switched[node.ident] = time.monotonic() - killed
    print(f"followed registry killed: dc1 correct and fresh again after {switched}; stale at most "
          f"{stale_max:.2f}s; failed or wrong answers: {len(failures)}")
    assert len(switched) == len(dc1), f"dc1 not switched within 30s: {switched}"
    assert not failures, failures[:5]
    converge(fed, dc1, other, PROPAGATION, "after the kill")


@pytest.mark.slow
def test_wan_cut_keeps_local_answers_serves_remote_stale_and_recovers(federation: Federation) -> None:
    fed = federation
    dc1, dc2 = two_datacenters(fed)
    converge(fed, dc1, dc2[0], 60, "first sync")
    local_before = {n.ident: batch(fed.rpc, n.rpc, "web")[0] for n in dc1}
    remote_before = batch(fed.rpc, dc2[0].rpc, "web")[0]

    proxies = [p for n in fed.nodes for p in n.proxies]
    for p in proxies:
        p.cut(reset=False)  # a partition: open streams go silent, only timeouts find it
    cut_at = time.monotonic()
    local_bad: list[str] = []
    stale: dict[str, float] = {}
    joined_during_cut = False
    last_age = 0.0
    try:
        while time.monotonic() - cut_at < CUT:
            for node in dc1:
                got, _ = batch(fed.rpc, node.rpc, "web")
                if got != local_before[node.ident]:
                    local_bad.append(f"{node.ident} at {time.monotonic() - cut_at:.1f}s")
                try:
                    got, answer = batch(fed.rpc, node.rpc, "web", "dc2")
                except grpc.RpcError as exc:
                    raise AssertionError(f"{node.ident}: no remote answer during the cut: {exc.details()}") from exc
                assert answer is not None and got == remote_before, "the kept mirror changed during the cut"
                if answer.stale_seconds > 0:
                    stale.setdefault(node.ident, time.monotonic() - cut_at)
                    assert answer.stale_seconds <= time.monotonic() - cut_at + 0.5, answer.stale_seconds
                    last_age = answer.stale_seconds
            if not joined_during_cut and time.monotonic() - cut_at > CUT / 2:
                fed.service("web-2c", "web", dc2[1], replicas=64)  # a change dc1 cannot see yet
                joined_during_cut = True
            time.sleep(0.5)
    finally:
        for p in proxies:
            p.heal()
    healed = time.monotonic()
    print(f"WAN cut {CUT:.0f}s: dc1 stale after {stale} s, age at the end {last_age:.1f}s; "
          f"local answers wrong {len(local_bad)} times")
    assert not local_bad, local_bad[:5]
    assert set(stale) == {n.ident for n in dc1}, f"not marked stale during the cut: {stale}"
    assert last_age >= CUT - 30, f"the age said {last_age:.1f}s after a {CUT:.0f}s cut"
    assert "web-2c" in members(fed, dc2[0], "web")
    took = converge(fed, dc1, dc2[0], RECOVERY, "after the heal")
    print(f"after the heal: dc1 correct and fresh again in {time.monotonic() - healed:.2f}s ({took:.2f}s)")


def test_failover_answers_from_the_nearest_datacenter_and_comes_back(federation: Federation) -> None:
    fed = federation
    n1, n2, n3 = fed.start("a", "dc1"), fed.start("a", "dc2"), fed.start("a", "dc3")
    n2.wan.set_delay(5)
    n3.wan.set_delay(80)
    for n in fed.nodes:
        fed.ready(n)
    pay1 = fed.service("pay-1", "pay", n1)
    fed.service("pay-2", "pay", n2)
    fed.service("pay-3", "pay", n3)

    def nearest_known() -> bool:
        got = fed.rpc(n1.rpc).Groups(pb.GroupsRequest(), timeout=10)
        rtt = {d.name: d.rtt_ms for d in got.datacenters if not d.local}
        return bool(rtt.get("dc2")) and bool(rtt.get("dc3")) and rtt["dc2"] < rtt["dc3"]

    wait(nearest_known, 60, "dc1 measuring dc2 nearer than dc3")
    for node in (n2, n3):
        converge(fed, [n1], node, 60, f"dc1's mirror of {node.dc}")

    def match(key: str) -> pb.MatchResponse:
        got: pb.MatchResponse = fed.rpc(n1.rpc).Match(pb.MatchRequest(group="pay", key=key, failover=True),
                                                      timeout=10)
        return got

    def answered_by(*dcs: str) -> pb.MatchResponse | None:
        got = match("k1")
        return got if got.datacenter in dcs else None

    local = match("k1")
    assert local.datacenter in ("", "dc1") and ids(local.services) == ["pay-1"]
    pay1.stop()
    stopped = time.monotonic()
    answer = wait(lambda: answered_by("dc2"), 30, "Match(failover) answering from dc2")
    print(f"failover to dc2 {time.monotonic() - stopped:.2f}s after dc1's last pay service left")
    assert ids(answer.services) == ["pay-2"]
    with pytest.raises(grpc.RpcError) as err:  # without failover: no member here, as before
        fed.rpc(n1.rpc).Match(pb.MatchRequest(group="pay", key="k1"), timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND

    fed.service("pay-1b", "pay", n1)
    back = wait(lambda: answered_by("", "dc1"), 30, "Match(failover) back on dc1")
    assert ids(back.services) == ["pay-1b"]
