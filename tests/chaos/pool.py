"""A pool of real registry and service processes, each in its own namespace of a NetLab.

Registries run the `registry` CLI (gossip on :7370, gRPC on :9800 of their namespace's
address, JSON logs at debug level so membership events can be read back); services run
service_main.py (a bare `register.Register`).  The test process stays in the root namespace
and watches through gRPC clients, one per registry, kept open for the whole test.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tests.e2e.helpers import Proc, registry_cmd, wait_for

from .netlab import NetLab, Node

GOSSIP_PORT = 7370
RPC_PORT = 9800
SERVICE_PORT = 7380
REGISTRY_GROUP = "registry-group"
GROUP = "webservice"
KEYS = [f"user-{i}" for i in range(200)]
SERVICE_MAIN = str(Path(__file__).with_name("service_main.py"))


class RegistryProc:
    """One `registry` server in namespace `node`; start() may be called again after it exits."""

    def __init__(self, ps: list[Proc], tmp: Path, node: Node, profile: str) -> None:
        self.id = node.name
        self.node = node
        self.profile = profile
        self.seeds: list[str] = []
        self._ps = ps
        self._tmp = tmp
        self._runs = 0
        self.proc: Proc | None = None
        self._client: Any = None

    @property
    def gossip(self) -> str:
        return f"{self.node.ip}:{GOSSIP_PORT}"

    @property
    def rpc(self) -> str:
        return f"{self.node.ip}:{RPC_PORT}"

    def start(self) -> None:
        args = ["-id", self.id, "-bind", self.gossip, "-addr", self.rpc, "-profile", self.profile,
                "-log-format", "json", "-log-level", "debug", "-leave-timeout", "2"]
        if self.seeds:
            args += ["-registries", ",".join(self.seeds)]
        self._runs += 1
        self.proc = Proc(self.node.python(*registry_cmd(*args)[1:]), self._tmp / f"{self.id}-{self._runs}.log")
        self._ps.append(self.proc)

    def output(self) -> str:
        assert self.proc is not None
        return self.proc.output()

    def started(self) -> bool:
        """True once the server logged "registry started"; raises at once if it exited."""
        assert self.proc is not None
        return self.proc.logged('"registry started"')

    def client(self) -> Any:
        """A client for this registry alone, opened once (its channel reconnects by itself)."""
        if self._client is None:
            from registry.client import RpcClient

            self._client = RpcClient(self.rpc, timeout=5.0)
        return self._client

    def ids(self, group: str, timeout: float = 5.0) -> set[str]:
        """Ids this registry lists alive in `group` (empty when the group is unknown to it)."""
        from registry.client import NotFound

        try:
            return {s.id for s in self.client().members(group, timeout=timeout)}
        except NotFound:
            return set()

    def owners(self, timeout: float = 10.0) -> list[str]:
        """The owner of each of KEYS, as this registry's Match answers it."""
        return [s.id for s in self.client().match_batch(GROUP, KEYS, timeout=timeout)]

    def failed_events(self) -> list[tuple[str, str]]:
        """(timestamp, member) for each member-failed event in this registry's logs so far."""
        seen: list[tuple[str, str]] = []
        for line in self.output().splitlines():
            if '"member-failed"' not in line:
                continue
            row = json.loads(line)
            for name in row.get("members", []):
                seen.append((str(row.get("timestamp", "")), str(name)))
        return seen

    def close_client(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


class ServiceProc:
    """One service (service_main.py) in namespace `node`."""

    def __init__(self, ps: list[Proc], tmp: Path, node: Node, seeds: Sequence[str], profile: str) -> None:
        self.id = node.name
        self.node = node
        self.proc = Proc(
            node.python(SERVICE_MAIN, self.id, f"{node.ip}:{SERVICE_PORT}", ",".join(seeds), GROUP,
                        f"{node.ip}:8080", profile),
            tmp / f"{self.id}.log",
        )
        ps.append(self.proc)

    def registered(self) -> bool:
        return self.proc.logged(f"registered {self.id}")


class Pool:
    """n registries (r0..) and m services (s0..), all in their own namespaces, started together."""

    def __init__(self, lab: NetLab, ps: list[Proc], tmp: Path, registries: int, services: int,
                 profile: str) -> None:
        self.lab = lab
        self.profile = profile
        self.registries = [RegistryProc(ps, tmp, lab.add(f"r{i}"), profile) for i in range(registries)]
        for r in self.registries:  # everyone seeds everyone: start order does not matter
            r.seeds = [o.gossip for o in self.registries if o is not r]
        for r in self.registries:
            r.start()
        for r in self.registries:
            wait_for(r.started, 90, what=f"{r.id} started")
        seeds = [r.gossip for r in self.registries]
        nodes = [lab.add(f"s{i}") for i in range(services)]
        self.services = [ServiceProc(ps, tmp, node, seeds, profile) for node in nodes]
        for s in self.services:
            wait_for(s.registered, 90, what=f"{s.id} registered")

    def reg(self, ident: str) -> RegistryProc:
        return next(r for r in self.registries if r.id == ident)

    @property
    def registry_ids(self) -> set[str]:
        return {r.id for r in self.registries}

    @property
    def service_ids(self) -> set[str]:
        return {s.id for s in self.services}

    def converged(self, registries: Sequence[RegistryProc] | None = None,
                  want_registries: set[str] | None = None, want_services: set[str] | None = None) -> str:
        """"" when every given registry lists exactly the wanted members alive and all their
        Match answers agree; otherwise what differs (for the deadline's failure message)."""
        regs = list(self.registries if registries is None else registries)
        want_r = self.registry_ids if want_registries is None else want_registries
        want_s = self.service_ids if want_services is None else want_services
        for r in regs:
            got_r, got_s = r.ids(REGISTRY_GROUP), r.ids(GROUP)
            if got_r != want_r or got_s != want_s:
                return f"{r.id} lists {sorted(got_r)} + {sorted(got_s)}, want {sorted(want_r)} + {sorted(want_s)}"
        answers = {r.id: r.owners() for r in regs}
        first = answers[regs[0].id]
        for rid, got in answers.items():
            if got != first:
                return f"Match answers differ between {regs[0].id} and {rid} on {sum(a != b for a, b in zip(first, got))} keys"
        if set(first) != want_s:
            return f"Match answers name {sorted(set(first))}, want {sorted(want_s)}"
        return ""

    def wait_converged(self, timeout: float, what: str, **kw: Any) -> None:
        last = ["not polled yet"]

        def ok() -> bool:
            last[0] = self.converged(**kw)
            return not last[0]

        try:
            wait_for(ok, timeout, interval=0.1, what=what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last state: {last[0]}") from None

    def close(self) -> None:
        for r in self.registries:
            r.close_client()


def until(pred: Callable[[], object], timeout: float, what: str) -> None:
    """wait_for with the suite's polling interval."""
    wait_for(pred, timeout, interval=0.1, what=what)


