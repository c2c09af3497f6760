"""The `registry` command given bad values, run for real as a subprocess: every mistake a person
can make in a flag is a usage error (exit 2, one line naming the flag, never a Python exception
name), found before anything starts; and what `registry members` shows of a real (TLS) registry."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .certs import Pki, write_pki
from .helpers import Registry, env, procs, registry_cmd, wait_for

# Server flags come with loopback ports picked by the kernel, so that a value the command wrongly
# accepts starts a server on a free port (and the test fails on its timeout) instead of taking
# the default ports 7370/9800 of the machine.
SERVER = ["-id", "a", "-bind", "127.0.0.1:0", "-addr", "127.0.0.1:0", "-log-format", "json"]
NOT_PEM = str(Path(__file__))  # a readable file that is not PEM

USAGE_ERRORS = [
    # -rpc: what the client cannot dial is refused before any call
    (["members", "-rpc", "nonsense.invalid"], "-rpc: cannot resolve 'nonsense.invalid'"),
    (["members", "-rpc", "garbage:x"], "-rpc: bad address 'garbage:x'"),
    (["members", "-rpc", "127.0.0.1:0"], "-rpc: '127.0.0.1:0': port 0 cannot be dialled"),
    (["groups", "-rpc", "0.0.0.0:9800"], "0.0.0.0 means every interface"),
    (["groups", "-rpc", "127.0.0.1:1,nonsense.invalid"], "-rpc: cannot resolve"),
    # durations: positive and finite, checked at parse time
    (["members", "-timeout", "0"], "-timeout/--timeout: must be a positive number of seconds, not '0'"),
    (["members", "-timeout", "-1"], "must be a positive number of seconds"),
    (["groups", "-timeout", "nan"], "must be a positive number of seconds"),
    (["groups", "-timeout", "soon"], "-timeout/--timeout: 'soon' is not a number of seconds"),
    ([*SERVER, "-leave-timeout", "0"], "-leave-timeout/--leave-timeout: must be a positive number of seconds"),
    ([*SERVER, "-leave-timeout", "inf"], "must be a positive number of seconds"),
    # match: the client's and the server's limits
    (["match", "g", "k", "-n", "1001"], "-n must be at most 1000"),
    (["match", "g", "k", "-n", "-3"], "-n must be at least 1"),
    (["match", "g", ""], "match: KEY is empty"),
    (["match", "", "k"], "match: GROUP is empty"),
    # TLS files of the ops client
    (["groups", "-tls-ca", NOT_PEM], "is not a PEM file"),
    (["groups", "-tls-ca", "/nonexistent/ca.pem"], "-tls-ca: cannot read '/nonexistent/ca.pem'"),
    # addresses told to others: a host they can reach and a real port
    ([*SERVER, "-advertise", ":9800"], "-advertise: ':9800' has no host"),
    ([*SERVER, "-advertise", "10.0.0.1:0"], "-advertise: '10.0.0.1:0': port 0 cannot be dialled"),
    ([*SERVER, "-advertise", "0.0.0.0:9800"], "-advertise: '0.0.0.0:9800': 0.0.0.0 means every interface"),
    ([*SERVER, "-advertise", "10.0.0.1"], "-advertise: '10.0.0.1': port 0"),  # -addr's port is 0 here
    ([*SERVER, "-bind-advertise", "0.0.0.0:7946"], "-bind-advertise: '0.0.0.0:7946': 0.0.0.0 means"),
    ([*SERVER, "-registries", "127.0.0.1:7370,10.0.0.1:0"], "-registries: '10.0.0.1:0': port 0 cannot be dialled"),
    ([*SERVER, "-encrypt", "QUJDREVGR0hJSktMTU5PUFFSU1Q="], "-encrypt: key must decode to 16, 24 or 32 bytes, not 20"),
    ([*SERVER, "-log-format", ""], "-log-format/--log-format: invalid choice: ''"),
    ([*SERVER, "-id", "x" * 600], "-id is too long (600 bytes)"),  # was exit 1 at start: "gossip: encoded tags ..."
    (["version", "extra"], "unrecognized arguments: extra"),
]


def run(*args: str, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(registry_cmd(*args), check=False, capture_output=True, text=True, env=env(), timeout=timeout)


def one_line(r: subprocess.CompletedProcess[str]) -> str:
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("registry: "), r
    assert not re.match(r"registry: \w+(Error|Exception|Warning)\b", lines[0]), lines[0]  # no exception names
    assert "Traceback" not in r.stderr, r.stderr
    return lines[0]


@pytest.mark.parametrize("args, needle", USAGE_ERRORS, ids=[" ".join(a[-2:])[:40] or "-" for a, _ in USAGE_ERRORS])
def test_bad_flag_value_is_a_usage_error(args: list[str], needle: str) -> None:
    r = run(*args)
    line = one_line(r)
    assert r.returncode == 2, r
    assert needle in line, line
    assert r.stdout == "", r


def test_help_says_the_log_format_choices_and_default() -> None:
    h = run("-h")
    assert h.returncode == 0, h
    text = " ".join(h.stdout.split())  # argparse wraps lines
    assert "-log-format {console,json}" in text and "{,console,json}" not in text, h.stdout
    assert "default: console when stderr is a terminal, json otherwise" in text, h.stdout
    m = run("members", "-h")
    text = " ".join(m.stdout.split())
    assert m.returncode == 0 and "the members of the group 'registry-group'" in text, m.stdout
    assert "ID GROUP ADDR STATUS HEALTH KIND TAGS" in text and "STATUS is alive, leaving" in text, m.stdout
    assert "HEALTH is what the service's checks say: passing, warning or critical" in text, m.stdout


@pytest.fixture(scope="module")
def tls_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Registry, Pki]]:
    """One real registry serving gRPC over TLS (a pool of one)."""
    tmp = tmp_path_factory.mktemp("cli-tls")
    pki = write_pki(tmp)
    with procs() as ps:
        reg = Registry(ps, tmp, "reg-cli-tls", (), "-tls-cert", str(pki.server_cert), "-tls-key", str(pki.server_key),
                       profile="lan")

        def listed() -> bool:
            r = run("members", "-rpc", reg.rpc, "-tls-ca", str(pki.ca), "-timeout", "10", timeout=60)
            return r.returncode == 0 and "reg-cli-tls" in r.stdout

        wait_for(listed, 60, interval=0.2, what="the TLS registry listing itself")
        yield reg, pki


def test_members_shows_what_the_registry_knows_with_its_status(tls_registry: tuple[Registry, Pki]) -> None:
    reg, pki = tls_registry
    tls = ["-rpc", reg.rpc, "-tls-ca", str(pki.ca), "-timeout", "10"]
    for extra in ([], ["-group", "registry-group"]):
        r = run("members", *tls, *extra, timeout=60)
        assert r.returncode == 0 and r.stderr == "", r
        rows = [ln.split() for ln in r.stdout.splitlines()]
        assert [row[:3] for row in rows] == [["reg-cli-tls", "registry-group", reg.rpc]], r.stdout
        assert len(rows[0]) == 7 and rows[0][3:6] == ["alive", "passing", "gossip"], r.stdout  # ID GROUP ADDR STATUS HEALTH KIND TAGS
        assert f"addr={reg.rpc}" in rows[0][6] and "group=registry-group" in rows[0][6], r.stdout
    x = run("match", "registry-group", "user-1", *tls, timeout=60)
    assert x.returncode == 0 and x.stdout.split()[:3] == ["reg-cli-tls", "registry-group", reg.rpc], x
    missing = run("members", *tls, "-group", "nosuch", timeout=60)
    assert missing.returncode == 1 and "'nosuch'" in one_line(missing), missing


def test_plaintext_ops_on_a_tls_registry_say_so(tls_registry: tuple[Registry, Pki]) -> None:
    reg, _ = tls_registry
    r = run("groups", "-rpc", reg.rpc, "-timeout", "10", timeout=60)
    line = one_line(r)
    assert r.returncode == 1, r
    assert reg.rpc in line and "may be serving TLS" in line and "-tls-ca" in line, line


def test_cli_constants_are_the_servers() -> None:
    """The command keeps its own copy of the server's n limit (registry.api imports asyncio too early)."""
    from registry import api, ops

    assert ops.MAX_MATCH_N == api.MAX_MATCH_N
