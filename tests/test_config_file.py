"""``registry -config-file PATH`` (issue 18): the server's flags from a JSON or TOML file.

A file gives the same configuration as the same flags on the command line; the command line wins;
``adapter`` items (spec strings and tables) come before the command line's ``-adapter``s; every problem
is ONE line naming the file, exit 2. One real registry process started with nothing but the file (and
the test harness's logging flags) serves gRPC on the file's address and runs the file's adapter."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from registry.adapters.loader import parse_spec
from registry.cli import _server_parser, main, parse_server_args
from registry.client import RpcClient
from registry.config_file import with_config_file
from registry.server_config import ServerConfig
from tests.agentproc import free_port
from tests.e2e.helpers import env, wait_for
from tests.footprint import modules_child

HAS_TOML = sys.version_info >= (3, 11)
if not HAS_TOML:
    try:
        import tomli  # type: ignore[import-not-found,unused-ignore]  # noqa: F401

        HAS_TOML = True
    except ImportError:
        pass

#: Flags and the file keys that say the same (underscores, numbers, a switch, a list for a comma flag).
FLAGS = ["-id", "r1", "-bind", "127.0.0.1:7371", "-addr", "127.0.0.1:9801", "-http-addr", "127.0.0.1:8081",
         "-registries", "10.0.0.1:7370,10.0.0.2:7370", "-hash", "chash", "-leave-timeout", "2.5",
         "-ttl-default", "30", "-datacenter", "eu1", "-only-passing"]
DOC: dict[str, Any] = {"id": "r1", "bind": "127.0.0.1:7371", "addr": "127.0.0.1:9801", "http_addr": "127.0.0.1:8081",
                       "registries": ["10.0.0.1:7370", "10.0.0.2:7370"], "hash": "chash", "leave-timeout": 2.5,
                       "ttl_default": 30, "datacenter": "eu1", "only-passing": True}
TOML = """id = "r1"
bind = "127.0.0.1:7371"
addr = "127.0.0.1:9801"
http_addr = "127.0.0.1:8081"
registries = ["10.0.0.1:7370", "10.0.0.2:7370"]
hash = "chash"
leave-timeout = 2.5
ttl_default = 30
datacenter = "eu1"
only-passing = true
"""


def config_of(argv: list[str]) -> ServerConfig:
    return dataclasses.replace(parse_server_args(argv).config, adapters=[])


def write(tmp_path: Path, doc: Any, name: str = "registry.json") -> str:
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return str(path)


def test_json_file_is_the_flags(tmp_path: Path) -> None:
    path = write(tmp_path, DOC)
    assert config_of(["-config-file", path]) == config_of(FLAGS) != config_of(["-id", "r1"])
    assert config_of([f"--config-file={path}"]) == config_of(FLAGS)


@pytest.mark.skipif(not HAS_TOML, reason="TOML needs tomllib (3.11+) or tomli on 3.10")
def test_toml_file_is_the_flags(tmp_path: Path) -> None:
    path = write(tmp_path, TOML, "registry.toml")
    assert config_of(["-config-file", path]) == config_of(FLAGS)


def test_the_command_line_wins(tmp_path: Path) -> None:
    path = write(tmp_path, DOC)
    c = config_of(["-hash", "consistent", "-config-file", path, "-id", "r2", "-datacenter", "us1"])
    assert (c.id, c.hash, c.datacenter, c.only_passing, c.registries) == (
        "r2", "consistent", "us1", True, ["10.0.0.1:7370", "10.0.0.2:7370"])


def test_adapter_strings_and_tables(tmp_path: Path) -> None:
    path = write(tmp_path, {"adapter": [
        "file:path=/etc/s.json,poll=2",
        {"name": "etcd", "endpoints": ["10.0.0.1:2379", "10.0.0.2:2379"], "prefix": "/s/", "lease_ttl": 10,
         "import": False},
    ]})
    parser = _server_parser()
    specs = parser.parse_args(with_config_file(["-config-file", path, "-adapter", "x:a=1"], parser)).adapter
    assert specs == ["file:path=/etc/s.json,poll=2",
                     "etcd:endpoints=10.0.0.1:2379,10.0.0.2:2379,prefix=/s/,lease_ttl=10,import=false", "x:a=1"]
    assert parse_spec(specs[1]) == ("etcd", {"endpoints": "10.0.0.1:2379,10.0.0.2:2379", "prefix": "/s/",
                                             "lease_ttl": "10", "import": "false"})


def test_adapter_table_is_loaded(tmp_path: Path) -> None:
    path = write(tmp_path, {"adapter": [{"name": "file", "path": str(tmp_path / "s.json"), "poll": 0.5}]})
    [adapter] = parse_server_args(["-id", "r1", "-config-file", path]).config.adapters
    assert (adapter.name, getattr(adapter, "poll", None)) == ("file", 0.5)


@pytest.mark.parametrize(("doc", "words"), [
    ({"bnd": ":7370"}, "unknown key 'bnd' (keys are the server's flag names)"),
    ({"config-file": "other.json"}, "unknown key 'config-file'"),
    ({"help": True}, "unknown key 'help'"),
    ({"id": 5}, "id: expected a string, not the number 5"),
    ({"bind": None}, "bind: expected a string, not null"),
    ({"only_passing": "yes"}, "only_passing: expected true or false, not the string 'yes'"),
    ({"leave-timeout": [1]}, "leave-timeout: expected a string or a number, not a list"),
    ({"registries": ["a", 1]}, "registries: expected a string or a list of strings, not a list"),
    ({"adapter": "file:path=x"}, "adapter: expected a list"),
    ({"adapter": [5]}, "adapter[0]: expected \"NAME:key=value,...\" or a table with a name, not the number 5"),
    ({"adapter": ["file:path"]}, "adapter[0]: -adapter file: 'path' is not key=value"),
    ({"adapter": [{"path": "x"}]}, "adapter[0]: name must be the adapter's name"),
    ({"adapter": [{"name": "file", "path": {"a": 1}}]}, "adapter[0].path: expected a string, number, true/false"),
    ({"adapter": [{"name": "file", "bad-key": 1}]}, "adapter[0]: 'bad-key' is not an option name"),
    ({"adapter": [{"name": "x", "v": "a,b=c"}]}, "adapter[0].v: 'a,b=c' cannot be passed as one option"),
    ({"adapter": [{"name": "x", "v": ["a", ""]}]}, "adapter[0].v: 'a,' cannot be passed as one option"),
    ({"hash": "md5"}, "argument -hash/--hash: invalid choice: 'md5'"),
    ({"leave-timeout": 0}, "argument -leave-timeout/--leave-timeout: must be a positive number of seconds"),
    ({"http-addr": ":1", "http_addr": ":2"}, "'http-addr' and 'http_addr' are the same flag"),
    ('{"id": "a",\n "bind": }', "not valid JSON: Expecting value: line 2 column 10"),
    ('{"id": "a", "id": "b"}', "not valid JSON: key 'id' given twice"),
    ('["-id", "a"]', "expected a table of flag names to values at the top, not a list"),
    (b"\xff\xfe", "not UTF-8 text"),
], ids=["unknown", "nested", "help", "number-for-string", "null", "switch-string", "list-for-number",
        "list-of-non-strings", "adapter-not-list", "adapter-item", "adapter-bad-spec", "adapter-no-name",
        "adapter-nested-table", "adapter-bad-option", "adapter-comma-key", "adapter-empty-item", "choice",
        "bad-seconds", "same-flag-twice", "malformed", "duplicate-key", "top-level-list", "not-utf8"])
def test_file_problems_are_one_line_naming_it(tmp_path: Path, doc: Any, words: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "registry.json"
    if isinstance(doc, bytes):
        path.write_bytes(doc)
    else:
        path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    assert main(["-id", "x", "-config-file", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"-config-file {path}: " in err and words in err, err


@pytest.mark.skipif(not HAS_TOML, reason="TOML needs tomllib (3.11+) or tomli on 3.10")
def test_malformed_toml_names_the_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, 'id = "a"\nbind = \n', "registry.toml")
    assert main(["-config-file", path]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"-config-file {path}: not valid TOML: " in err and "line 2" in err, err


@pytest.mark.parametrize(("args", "words"), [
    (["-config-file", "/nonexistent/registry.json"], "-config-file /nonexistent/registry.json: cannot read: "
                                                     "No such file or directory"),
    (["-config-file", "registry.yaml"], "-config-file registry.yaml: expected a .json or .toml file"),
    (["-config-file", "a.json", "--config-file=b.json"], "-config-file given twice"),
    (["-config-file="], "-config-file: empty path"),
    (["-config-file"], "argument -config-file/--config-file: expected one argument"),
], ids=["missing", "suffix", "twice", "empty", "no-value"])
def test_flag_problems_are_one_line(args: list[str], words: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-id", "x", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err, err


def test_one_adapter_of_a_name_across_file_and_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, {"adapter": [{"name": "file", "path": "a.json"}]})
    assert main(["-id", "x", "-config-file", path, "-adapter", "file:path=b.json"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "-adapter file: given twice" in err, err


def test_a_registry_from_the_file_alone(tmp_path: Path) -> None:
    """A real registry process: id, addresses and the file adapter all from the file."""
    services = tmp_path / "services.json"
    services.write_text(json.dumps({"services": [{"group": "db", "id": "pg1", "addr": "10.0.0.1:5432"}]}))
    port = free_port()
    path = write(tmp_path, {"id": "from-file", "bind": "127.0.0.1:0", "addr": f"127.0.0.1:{port}",
                            "adapter": [{"name": "file", "path": str(services), "poll": 0.1}]})
    with modules_child("-config-file", path) as child:
        assert child.started["grpc"] == f"127.0.0.1:{port}", child.started
        assert (child.started["id"], child.started.get("adapters")) == ("from-file", "file"), child.started
        client = RpcClient(f"127.0.0.1:{port}", timeout=10.0)
        try:
            wait_for(lambda: [(s.id, s.addr, s.kind, s.origin) for s in client.members("db")]
                     == [("pg1", "10.0.0.1:5432", "external", "file")], 30, what="the file adapter's service")
            assert client.match("db", "any-key").id == "pg1"
        finally:
            client.close()


@pytest.mark.parametrize(("doc", "args", "words", "blamed"), [
    ({"bind": "foo:bar"}, [], "-bind: bad address", True),
    ({"bind": "foo:bar"}, ["-bind", "foo:bar"], "-bind: bad address", False),
    ({"tls-cert": "c.pem"}, [], "-tls-cert and -tls-key go together", True),
    ({"adapter": [{"name": "file", "path": "x", "poll": "soon"}]}, [], "-adapter file: poll='soon' is not a number", True),
    ({"datacenter": "dc1"}, ["-id", ""], "-id is required", False),
], ids=["file-only", "also-on-command-line", "pair", "adapter-option", "not-in-file"])
def test_a_later_check_names_the_file_when_only_it_gave_the_flag(
        tmp_path: Path, doc: Any, args: list[str], words: str, blamed: bool, capsys: pytest.CaptureFixture[str]) -> None:
    """Checks made after parsing (addresses, flags that go together, adapter options) name the flag; when
    only the file gave it, the line says where it came from."""
    path = write(tmp_path, {"id": "x", **doc})
    assert main(["-config-file", path, *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err and (f"(from -config-file {path})" in err) == blamed, err


@pytest.mark.skipif(sys.version_info >= (3, 11), reason="Python 3.11+ reads TOML with tomllib")
def test_toml_on_310_without_tomli_is_one_line(tmp_path: Path) -> None:
    """On 3.10 without tomli (hidden here: sys.modules["tomli"] = None makes its import fail)."""
    path = write(tmp_path, 'id = "a"\n', "registry.toml")
    code = "import sys; sys.modules['tomli'] = None; from registry.cli import main; sys.exit(main(sys.argv[1:]))"
    r = subprocess.run([sys.executable, "-c", code, "-config-file", path], capture_output=True, text=True,
                       env=env(), timeout=60)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert f"-config-file {path}: TOML needs Python 3.11+ or `pip install tomli`; use JSON" in r.stderr, r.stderr
