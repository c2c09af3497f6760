"""Helpers of the multi-registry TTL tests: registries with the HTTP front, PUT/DELETE through it,
what each registry's gRPC API answers for a group.

HTTP goes through `urllib.request` (a real HTTP/1.1 client, one connection per request: the tests
care what the registries answer, not how fast). gRPC goes through one `RpcClient` per registry.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from registry.client import NotFound, RpcClient
from tests.e2e.helpers import Proc, Registry, wait_for

#: Where the tests put their TTL services (not the registries' own group).
GROUP = "ttl-svc"


@dataclass(frozen=True)
class Written:
    """What a PUT answered: the entry as the registry stored it (its stamp orders conflicts)."""

    id: str
    addr: str
    written_ms: int
    writer: str
    ttl_ms: int

    @property
    def stamp(self) -> tuple[int, str]:
        return (self.written_ms, self.writer)

    @property
    def expires_ms(self) -> int:
        return self.written_ms + self.ttl_ms


def http_call(base: str, method: str, path: str, body: Any = None, timeout: float = 10.0) -> tuple[int, Any]:
    """(status, decoded JSON body or None) of one request to `base` (http://host:port)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"} if data is not None else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            status = int(resp.status)
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        status = exc.code
    return status, (json.loads(raw) if raw else None)


def _field(doc: Any, *names: str) -> Any:
    """The first of `names` found in the answer (at its top level or under "entry")."""
    for where in (doc, doc.get("entry") if isinstance(doc, dict) else None):
        if isinstance(where, dict):
            for name in names:
                if name in where:
                    return where[name]
    raise AssertionError(f"no {names} in the PUT answer {doc!r}")


class TtlRegistry:
    """A registry subprocess with the HTTP front on a port of its choosing, and a gRPC client."""

    def __init__(self, ps: list[Proc], tmp: Path, ident: str, seeds: Sequence[str] = (), *,
                 profile: str = "lan", gossip: int = 0, rpc: int = 0) -> None:
        self.reg = Registry(ps, tmp, ident, seeds, "-http-addr", "127.0.0.1:0",
                            gossip=gossip, rpc=rpc, profile=profile)
        self.id = ident
        self._client: RpcClient | None = None
        self._http = ""

    @property
    def proc(self) -> Proc:
        return self.reg.proc

    @property
    def http(self) -> str:
        if not self._http:
            self._http = "http://" + self.reg.http
        return self._http

    def client(self) -> RpcClient:
        if self._client is None:
            self._client = RpcClient(self.reg.rpc, timeout=10.0)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def put(self, id: str, addr: str, ttl: str, group: str = GROUP, **fields: Any) -> Written:
        status, doc = http_call(self.http, "PUT", f"/v1/services/{group}/{id}", {"addr": addr, "ttl": ttl, **fields})
        assert status == 200, f"PUT {group}/{id} on {self.id}: {status} {doc}"
        return Written(id=id, addr=addr, written_ms=int(_field(doc, "written_ms")), writer=str(_field(doc, "writer")),
                       ttl_ms=int(_field(doc, "ttl_ms")))

    def delete(self, id: str, group: str = GROUP) -> int:
        status, _ = http_call(self.http, "DELETE", f"/v1/services/{group}/{id}")
        return status

    def members(self, group: str = GROUP) -> dict[str, str]:
        """id -> addr of the group's live services on this registry ({} for an unknown group)."""
        try:
            return {s.id: s.addr for s in self.client().members(group)}
        except NotFound:
            return {}

    def owner(self, key: str, group: str = GROUP) -> str | None:
        """The addr Match answers for `key` (None: the group is unknown, i.e. empty)."""
        try:
            return self.client().match(group, key).addr
        except NotFound:
            return None

    def wait_ready(self, timeout: float = 60.0) -> TtlRegistry:
        self.reg.wait_ready(timeout)
        return self


@contextmanager
def clients(regs: Sequence[TtlRegistry]) -> Iterator[None]:
    """Closes the registries' gRPC clients at the end, pass or fail."""
    try:
        yield
    finally:
        for r in regs:
            r.close()


def start_pool(ps: list[Proc], tmp: Path, n: int = 3, *, profile: str = "lan", prefix: str = "r") -> list[TtlRegistry]:
    """n registries, the first the others' seed, each serving and seeing all n in the registry group."""
    first = TtlRegistry(ps, tmp, f"{prefix}0", profile=profile).wait_ready()
    regs = [first] + [TtlRegistry(ps, tmp, f"{prefix}{i}", (first.reg.gossip,), profile=profile) for i in range(1, n)]
    names = {r.id for r in regs}
    for r in regs:
        r.wait_ready()
        wait_for(lambda r=r: r.reg.ids("registry-group") == names, 60, what=f"{r.id} seeing the whole pool")  # type: ignore[misc]
    return regs


def wall_ms() -> int:
    return time.time_ns() // 1_000_000
