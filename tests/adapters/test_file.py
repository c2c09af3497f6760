"""The file adapter against a real registry process (issue 18): a real file edited under it -> add,
change, remove, corrupt (the last good services kept, ONE log line naming the file and the problem),
fix; Match over gRPC equals a catalog built from the file's services. Plus the flag's usage errors,
TOML on a real file, and "registry.adapters is imported only with -adapter"."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from registry.adapters.file import parse_services
from registry.adapters.host import external_tags
from registry.catalog import Catalog
from registry.cli import main
from registry.client import RpcClient
from tests.e2e.helpers import env, registry_cmd, wait_for
from tests.footprint import modules_child

BASE = ["-id", "x", "-bind", "127.0.0.1:0", "-addr", "127.0.0.1:0"]


def write(path: Path, doc: Any) -> None:
    """Replace the file in one step (as an editor or config manager does) with a new mtime."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    os.replace(tmp, path)


def svc(group: str, id_: str, addr: str, **extra: Any) -> dict[str, Any]:
    return {"group": group, "id": id_, "addr": addr, **extra}


def members(client: RpcClient, group: str) -> dict[str, tuple[str, str, str]]:
    return {s.id: (s.addr, s.kind, s.origin) for s in client.members(group)}


def expected_owners(text: str, group: str, keys: list[str]) -> list[str]:
    """The owners a catalog built from the file's services gives (the file's Match, computed here)."""
    c = Catalog()
    c.apply_external("file", [(s.group, s.id, external_tags(s)) for s in parse_services(text, toml=False)])
    return [s.id for s in c.match_batch(group, keys)]


def test_file_adapter_follows_the_file(tmp_path: Path) -> None:
    path = tmp_path / "services.json"
    first = {"services": [svc("db", "pg1", "10.0.0.1:5432"), svc("db", "pg2", "10.0.0.2:5432", weight=2),
                          svc("cache", "r1", "10.0.1.1:6379", tags={"zone": "a"})]}
    write(path, first)
    with modules_child(*BASE, "-adapter", f"file:path={path},poll=0.1") as child:
        assert child.started.get("adapters") == "file", child.started
        client = RpcClient(child.started["grpc"], timeout=10.0)
        try:
            ext = "external"
            wait_for(lambda: members(client, "db") == {"pg1": ("10.0.0.1:5432", ext, "file"),
                                                       "pg2": ("10.0.0.2:5432", ext, "file")}, 30, what="loaded")
            assert [s.tags.get("zone") for s in client.members("cache")] == ["a"]
            keys = [f"key-{i}" for i in range(300)]
            assert [client.match("db", k).id for k in keys] == expected_owners(path.read_text(), "db", keys)

            # change one, add one, remove the cache group's only service
            write(path, {"services": [svc("db", "pg1", "10.0.0.9:5432"), svc("db", "pg2", "10.0.0.2:5432", weight=2),
                                      svc("db", "pg3", "10.0.0.3:5432")]})
            wait_for(lambda: members(client, "db") == {"pg1": ("10.0.0.9:5432", ext, "file"),
                                                       "pg2": ("10.0.0.2:5432", ext, "file"),
                                                       "pg3": ("10.0.0.3:5432", ext, "file")}, 30, what="changed")
            assert "cache" not in client.groups()
            good = members(client, "db")
            all_ = {x.id: (x.status, x.kind, x.origin) for x in client.members("db", all=True)}
            assert all_ == {i: ("alive", ext, "file") for i in ("pg1", "pg2", "pg3")}, all_
            cli = subprocess.run(registry_cmd("members", "-rpc", child.started["grpc"], "-group", "db", "-timeout", "10"),
                                 capture_output=True, text=True, env=env(), timeout=60, check=False)
            rows = [ln.split() for ln in cli.stdout.splitlines()]  # ID GROUP ADDR STATUS HEALTH KIND TAGS
            assert cli.returncode == 0 and [r[:6] for r in rows] == [
                [i, "db", a, "alive", "passing", "external:file"] for i, (a, _, _) in sorted(good.items())], cli
            assert [client.match("db", k).id for k in keys] == expected_owners(path.read_text(), "db", keys)

            # corrupt: the last good services stay, one line names the file and the problem
            write(path, '{"services": [')
            wait_for(lambda: "not valid JSON" in child.text(), 30, what="the corrupt file's log line")
            deadline = time.monotonic() + 1.0  # ten polls of the same bad file: still one line
            while time.monotonic() < deadline:
                assert members(client, "db") == good
            lines = [x for x in child.log if "not valid JSON" in x]
            assert len(lines) == 1 and str(path) in lines[0] and "keeping the last good" in lines[0], lines
            write(path, {"services": [svc("db", "pg1", "10.0.0.9:5432", typo="x")]})  # a second problem: said too
            wait_for(lambda: "unknown key 'typo'" in child.text(), 30, what="the typo's log line")
            assert members(client, "db") == good

            # fixed: loaded
            write(path, {"services": [svc("db", "pg3", "10.0.0.3:5432")]})
            wait_for(lambda: members(client, "db") == {"pg3": ("10.0.0.3:5432", ext, "file")}, 30, what="fixed")
            assert {client.match("db", k).id for k in keys} == {"pg3"}
            assert "registry.adapters.host" in child.modules()
        finally:
            client.close()


def test_a_file_over_max_bytes_is_a_bad_file(tmp_path: Path) -> None:
    """Checked by stat before reading: a bigger file (valid JSON, more services) keeps the last good
    services and logs one line naming the file and the bound, however long it stays (and grows)."""
    path = tmp_path / "services.json"
    write(path, {"services": [svc("db", "pg1", "10.0.0.1:5432")]})
    with modules_child(*BASE, "-adapter", f"file:path={path},poll=0.05,max_bytes=1000") as child:
        client = RpcClient(child.started["grpc"], timeout=10.0)
        try:
            wait_for(lambda: set(members(client, "db")) == {"pg1"}, 30, what="loaded")
            big = {"services": [svc("db", f"pg{i}", f"10.0.0.{i}:5432") for i in range(40)]}
            for pad in range(5):  # still growing: the same problem, one line
                write(path, {**big, "pad": "x" * pad})
                assert path.stat().st_size > 1000
                wait_for(lambda: "larger than max_bytes=1000" in child.text(), 30, what="the log line")
            deadline = time.monotonic() + 0.5  # ten polls of the same big file: the last good kept, one line
            while time.monotonic() < deadline:
                assert set(members(client, "db")) == {"pg1"}
            lines = [x for x in child.log if "larger than max_bytes" in x]
            assert len(lines) == 1 and str(path) in lines[0] and "keeping the last good" in lines[0], lines
            write(path, {"services": [svc("db", "pg2", "10.0.0.2:5432")]})  # fits again: loaded
            wait_for(lambda: set(members(client, "db")) == {"pg2"}, 30, what="fixed")
        finally:
            client.close()


def test_http_lists_imported_services_with_their_origin(tmp_path: Path) -> None:
    path = tmp_path / "services.json"
    write(path, {"services": [svc("db", "pg1", "10.0.0.1:5432", tags={"zone": "a"})]})
    with modules_child(*BASE, "-http-addr", "127.0.0.1:0", "-adapter", f"file:path={path},poll=0.1") as child:
        url = f"http://{child.started['http']}/db"

        def listed() -> Any:
            with urllib.request.urlopen(url, timeout=10) as r:
                return json.loads(r.read())

        got = wait_for(listed, 30, what="GET /db")
        assert got == {"pg1": {"addr": "10.0.0.1:5432", "kind": "external", "origin": "file",
                               "tags": {"addr": "10.0.0.1:5432", "group": "db", "zone": "a"}}}, got


def test_registry_adapters_not_imported_without_the_flag() -> None:
    with modules_child(*BASE) as child:
        loaded = child.modules()
        assert not any(m.startswith("registry.adapters") for m in loaded), sorted(loaded)
        assert "adapters" not in child.started


@pytest.mark.parametrize(("args", "words"), [
    (["-adapter", "nope"], "-adapter nope: no such adapter (installed: "),
    (["-adapter", "file"], "-adapter file: path=FILE is required"),
    (["-adapter", "file:path"], "-adapter file: 'path' is not key=value"),
    (["-adapter", "file:pth=x"], "unexpected keyword argument 'pth'"),
    (["-adapter", "file:path=a,path=b"], "-adapter file: path given twice"),
    (["-adapter", "file:path=a,poll=soon"], "-adapter file: poll='soon' is not a number of seconds"),
    (["-adapter", "file:path=a,max_bytes=big"], "-adapter file: max_bytes='big' is not a number of bytes"),
    (["-adapter", "file:path=a", "-adapter", "file:path=b"], "-adapter file: given twice"),
], ids=["unknown", "no-path", "no-value", "unknown-key", "key-twice", "bad-poll", "bad-max-bytes", "adapter-twice"])
def test_bad_adapter_flags_are_one_line_exit_2(args: list[str], words: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*BASE, *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err, err


@pytest.mark.skipif(sys.version_info < (3, 11), reason="TOML needs tomllib (3.11+) or tomli on 3.10")
def test_toml_file(tmp_path: Path) -> None:
    path = tmp_path / "services.toml"
    path.write_text('[[services]]\ngroup = "db"\nid = "pg1"\naddr = "10.0.0.1:5432"\ntags = { zone = "b" }\n'
                    'replicas = 50\n')
    [s] = parse_services(path.read_text(), toml=True)
    assert (s.group, s.id, s.addr, dict(s.tags), s.replicas, s.weight) == ("db", "pg1", "10.0.0.1:5432", {"zone": "b"},
                                                                           50, None)
    with pytest.raises(ValueError, match="not valid TOML"):
        parse_services("[[services]\n", toml=True)


@pytest.mark.parametrize(("doc", "words"), [
    ({"services": [svc("registry-group", "x", "10.0.0.1:9800")]}, "registry-group is the registries' own group"),
    ({"services": [svc("db", "a", "h:1"), svc("db", "a", "h:2")]}, "services[1]: db/a given twice"),
    ({"services": [svc("db", "a", "h:1", weight=0)]}, "weight must be a positive integer"),
    ({"services": [svc("db", "a", "h:1", tags={"k": 1})]}, "tags must map strings to strings"),
    ({"services": [{"group": "db", "id": "a"}]}, "services[0]: addr must be a non-empty string"),
    ({"svc": []}, 'expected a top-level "services" list'),
], ids=["registry-group", "twice", "weight", "tags", "no-addr", "no-list"])
def test_file_problems_name_the_entry(doc: Any, words: str) -> None:
    with pytest.raises(ValueError) as e:
        parse_services(json.dumps(doc), toml=False)
    assert words in str(e.value) and "\n" not in str(e.value), e.value
