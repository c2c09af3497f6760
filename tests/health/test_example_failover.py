"""examples/failover/ runs as its README says: break the owner of a key, the key moves; mend it, it comes back.

Real processes on loopback: a `registry` server and three `examples/failover/service.py` processes (each
an HTTP server with an `HttpCheck` on its own /health, README's thresholds: 2 failures, 2 successes; a
0.1 s interval instead of 1 s to keep the test short).  The break and the mend are the README's
`POST /break` / `POST /mend`; the owner is read with Match through the registry, and once with the
README's `registry match` command.  Exactly the broken service's keys move, each to another live service,
and after the mend every key maps as before.
"""

from __future__ import annotations

import functools
import re
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from registry.client import NotFound, RpcClient
from tests.e2e.helpers import ROOT, TOLERANT, Proc, Registry, env, procs, wait_for

SCRIPT = ROOT / "examples" / "failover" / "service.py"
GROUP = "web"
KEYS = ["user-42", *(f"key-{i}" for i in range(199))]
_REGISTERED = re.compile(r"(\S+) registered in \S+, serving http://(\S+)/ \(gossip \S+\)")


class Example:
    """The registry and the example's services, as the README starts them (free ports instead of fixed)."""

    def __init__(self, ps: list[Proc], tmp: Path) -> None:
        self.registry = Registry(ps, tmp, "registry-1", profile=TOLERANT)
        self.services = {
            ident: Proc([sys.executable, str(SCRIPT), "-id", ident, "-bind", "127.0.0.1:0",
                         "-registries", self.registry.gossip, "-group", GROUP, "-addr", "127.0.0.1:0",
                         "-profile", TOLERANT, "-interval", "0.1"], tmp / f"{ident}.log")
            for ident in ("web-1", "web-2", "web-3")
        }
        ps.extend(self.services.values())
        self.addr = {ident: wait_for(functools.partial(self._registered, p), 60, interval=0.02,
                                     what=f"{ident} registered") for ident, p in self.services.items()}
        self.client = RpcClient(self.registry.rpc, timeout=10.0)

    @staticmethod
    def _registered(p: Proc) -> str | None:
        m = _REGISTERED.search(p.output())
        if m is None:
            p.check_running()
            return None
        return m.group(2)

    def owners(self) -> dict[str, str]:
        """key -> id of the service Match sends it to (empty while the group is unknown)."""
        try:
            return {k: s.id for k, s in zip(KEYS, self.client.match_batch(GROUP, KEYS))}
        except NotFound:
            return {}

    def wait_owners(self, pred: Callable[[dict[str, str]], bool], timeout: float, what: str) -> dict[str, str]:
        """The first `owners()` (every key answered) for which `pred` holds."""
        def check() -> dict[str, str] | None:
            o = self.owners()
            return o if o and pred(o) else None

        return wait_for(check, timeout, interval=0.02, what=what)

    def post(self, ident: str, path: str) -> str:
        req = urllib.request.Request(f"http://{self.addr[ident]}{path}", method="POST")
        with urllib.request.urlopen(req, timeout=10) as resp:
            return str(resp.read().decode()).strip()

    def health(self, ident: str) -> tuple[str, str]:
        """(health, note) of `ident` as the registry lists it (Members with all=True shows critical ones)."""
        found = [s for s in self.client.members(GROUP, all=True) if s.id == ident]
        return (found[0].health, found[0].health_note) if found else ("", "")


@pytest.fixture
def example(tmp_path: Path) -> Iterator[Example]:
    with procs() as ps:
        ex = Example(ps, tmp_path)
        try:
            yield ex
        finally:
            ex.client.close()
            for p in ex.services.values():  # all leave at once (procs() would stop them one after another)
                p.signal(signal.SIGTERM)
            for name, p in ex.services.items():
                # 1.6 s here; once in CI (four suites at once, load ~6) a service took about 30 s to leave
                # (it exited 0 just after the 30 s wait gave up; cause not found): wait longer and, if it
                # still has not left, fail with its own account of its stop
                try:
                    p.wait(60)
                except subprocess.TimeoutExpired:
                    raise AssertionError(f"{name} still running 60 s after SIGTERM; its output:\n"
                                         f"{p.output()[-4000:]}") from None


def test_breaking_the_owner_moves_its_keys_and_mending_brings_them_back(example: Example) -> None:
    ids = set(example.services)
    before = example.wait_owners(lambda o: set(o.values()) == ids, 30, "all three services owning keys")
    owner = before["user-42"]
    others = ids - {owner}
    assert "/health now answers 500" in example.post(owner, "/break")

    during = example.wait_owners(lambda o: owner not in o.values(), 20, f"{owner}'s keys moving after POST /break")
    # exactly its keys moved, each to a live service; every other key stayed where it was
    assert {k: v for k, v in during.items() if before[k] != owner} == {k: v for k, v in before.items() if v != owner}
    assert {during[k] for k, v in before.items() if v == owner} <= others
    health, note = example.health(owner)
    assert health == "critical" and "HTTP 500" in note, (health, note)
    assert example.services[owner].logged(f"health of {owner}: critical (http: HTTP 500")

    # the README's command prints the new owner
    cli = subprocess.run([sys.executable, "-m", "registry.cli", "match", GROUP, "user-42", "-rpc", example.registry.rpc],
                         capture_output=True, text=True, timeout=60, env=env(), check=False)
    assert cli.returncode == 0, cli.stderr
    assert cli.stdout.split()[0] == during["user-42"] != owner, cli.stdout

    assert "/health now answers 200" in example.post(owner, "/mend")
    wait_for(lambda: example.owners() == before, 20, what=f"every key mapping as before after {owner}'s POST /mend")
    assert example.health(owner) == ("passing", "")


@pytest.mark.parametrize(("flags", "code", "says"), [
    (["-interval", "0"], 2, "error: interval must be a number of seconds >= 0.01"),
    (["-failures-before-critical", "-1"], 2, "error: failures_before_critical must be an int >= 0"),
    (["-registries", "127.0.0.1:1"], 1, "failover service: no registry answered at 127.0.0.1:1"),
])
def test_a_bad_flag_or_no_registry_is_one_line_and_its_exit_status(flags: list[str], code: int, says: str) -> None:
    """A bad flag is a usage error (2, as argparse does); no registry to join is a failure (1)."""
    out = subprocess.run([sys.executable, str(SCRIPT), "-id", "web-x", "-bind", "127.0.0.1:0", "-addr", "127.0.0.1:0",
                          "-registries", "127.0.0.1:1", *flags], capture_output=True, text=True, timeout=60, env=env(),
                         check=False)
    assert out.returncode == code, (out.returncode, out.stderr)
    assert [line for line in out.stderr.splitlines() if says in line], out.stderr
    assert "Traceback" not in out.stderr, out.stderr
