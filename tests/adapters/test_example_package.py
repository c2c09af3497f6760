"""The example third-party adapter (examples/registry-adapter-dropdir) installed for real and run by a real
registry (issue 18: "ship an example third-party adapter in examples/ as its own installable package").

pip builds and installs the package into a temporary target (``--no-build-isolation`` when the venv has the
setuptools the test extra installs, so nothing is fetched at test time); a registry process
with that target on PYTHONPATH finds the adapter by its entry point alone. A dropped file -> Match answers
it; the out file lists the pool's services; the file removed -> gone; a bad file -> one log line. Without
the package: "no such adapter", one line, exit 2. A wrong entry point in pyproject.toml fails this test
(the registry cannot load ``dropdir``)."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from registry.cli import main
from registry.client import RpcClient
from tests.e2e.helpers import ROOT, env, registry_cmd, wait_for
from tests.footprint import modules_child

EXAMPLE = ROOT / "examples" / "registry-adapter-dropdir"
BASE = ["-id", "x", "-bind", "127.0.0.1:0", "-addr", "127.0.0.1:0"]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The example installed (no dependencies: registry is already here) into a fresh target directory."""
    tmp = tmp_path_factory.mktemp("dropdir")
    src = tmp / "src"  # a copy: the build's build/ and *.egg-info must not land in the checkout
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    target = tmp / "site"
    # The test extra brings setuptools>=70.1 (builds a wheel without the `wheel` package): then nothing is
    # fetched. An interpreter without it (3.12+ venvs have none, 3.10's bundled 65.5 cannot build wheels)
    # builds in pip's isolated environment, which needs the package index.
    isolation = ["--no-build-isolation"] if _setuptools_builds_wheels() else []
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", *isolation, "--no-compile",
                        "--no-cache-dir", "--target", str(target), str(src)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"pip install {' '.join(isolation)} failed:\n{r.stderr}"
    yield target


def _setuptools_builds_wheels() -> bool:
    try:
        version = importlib.metadata.version("setuptools")
    except importlib.metadata.PackageNotFoundError:
        return False
    major, minor = (int(x) for x in re.findall(r"\d+", version)[:2])
    return (major, minor) >= (70, 1)


def drop(directory: Path, group: str, id_: str, text: str) -> None:
    """Write as a careful writer does: a dotfile (ignored), renamed over the final name."""
    (directory / group).mkdir(exist_ok=True)
    tmp = directory / group / f".{id_}.tmp"
    tmp.write_text(text)
    os.replace(tmp, directory / group / id_)


def members(client: RpcClient, group: str) -> dict[str, tuple[str, str, str, str | None]]:
    return {s.id: (s.addr, s.kind, s.origin, s.tags.get("zone")) for s in client.members(group)}


def out_services(out: Path) -> dict[tuple[str, str], dict[str, Any]]:
    doc = json.loads(out.read_text())
    return {(s["group"], s["id"]): s for s in doc["services"]}


def test_dropdir_adapter_in_a_real_registry(site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    drops, out = tmp_path / "drop", tmp_path / "catalog.json"
    drops.mkdir()
    drop(drops, "db", "pg1", "127.0.0.1:5432\n# a comment\nzone=a\n")
    drop(drops, "db", "bad", "zone=b\n")  # no address: one log line, skipped
    monkeypatch.setenv("PYTHONPATH", f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    with modules_child(*BASE, "-adapter", f"dropdir:dir={drops},out={out},poll=0.1") as child:
        assert child.started.get("adapters") == "dropdir", child.started
        client = RpcClient(child.started["grpc"], timeout=10.0)
        try:
            ext = "external"
            wait_for(lambda: members(client, "db") == {"pg1": ("127.0.0.1:5432", ext, "dropdir", "a")},
                     30, what="the dropped file imported")
            assert client.match("db", "some-key").id == "pg1"

            # the out file: the pool's services (the registry itself in registry-group, the import)
            def out_is_the_catalog() -> bool:
                if not out.exists():
                    return False
                listed = out_services(out)
                live = {(g, s.id) for g in client.groups() for s in client.members(g)}
                return set(listed) == live
            wait_for(out_is_the_catalog, 30, what="the out file listing the catalog")
            row = out_services(out)["db", "pg1"]
            assert (row["addr"], row["kind"], row["origin"], row["tags"]["zone"]) == ("127.0.0.1:5432", ext, "dropdir",
                                                                                     "a"), row
            assert ("registry-group", "x") in out_services(out)

            drop(drops, "db", "pg2", "127.0.0.2:5432\n")
            wait_for(lambda: set(members(client, "db")) == {"pg1", "pg2"}, 30, what="a second file")
            (drops / "db" / "pg1").unlink()
            wait_for(lambda: members(client, "db") == {"pg2": ("127.0.0.2:5432", ext, "dropdir", None)}, 30,
                     what="the removed file's service gone")
            assert [client.match("db", f"k{i}").id for i in range(20)] == ["pg2"] * 20
            wait_for(lambda: set(out_services(out)) - {("registry-group", "x")} == {("db", "pg2")}, 30,
                     what="the out file without pg1")
            # a file turned bad keeps its service's last good content (one line) until it is fixed
            drop(drops, "db", "pg2", "127.0.0.3:5432\nno tag here\n")
            wait_for(lambda: any(f"{drops / 'db' / 'pg2'}: tag line 2" in ln for ln in child.log), 30,
                     what="the bad file's line")
            assert members(client, "db") == {"pg2": ("127.0.0.2:5432", ext, "dropdir", None)}
            drop(drops, "db", "pg2", "127.0.0.3:5432\nzone=c\n")
            wait_for(lambda: members(client, "db") == {"pg2": ("127.0.0.3:5432", ext, "dropdir", "c")}, 30,
                     what="the fixed file")
            said = [ln for ln in child.log if f"{drops / 'db' / 'bad'}" in ln]
            assert len(said) == 1 and "the first line must be the address" in said[0], said
            assert len([ln for ln in child.log if f"{drops / 'db' / 'pg2'}: tag line 2" in ln]) == 1
        finally:
            client.close()


def test_a_bad_option_of_the_installed_adapter_is_one_line(site: Path, tmp_path: Path) -> None:
    e = env()
    e["PYTHONPATH"] = f"{site}{os.pathsep}{e['PYTHONPATH']}"
    r = subprocess.run(registry_cmd(*BASE, "-adapter", f"dropdir:dir={tmp_path / 'nope'}"), capture_output=True,
                       text=True, env=e, timeout=60)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert f"-adapter dropdir: dir='{tmp_path / 'nope'}' is not a directory" in r.stderr, r.stderr


def test_without_the_package_no_such_adapter(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*BASE, "-adapter", f"dropdir:dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "-adapter dropdir: no such adapter (installed: " in err, err


def test_the_docs_hello_adapter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/adapters.md's "Writing an adapter" example as written there: its module, its entry point, its
    command line, run by a real registry (so the page cannot drift from what works)."""
    page = (ROOT / "docs" / "adapters.md").read_text()
    section = page[page.index("## Writing an adapter"):]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    entry = re.search(r'^(\w+) = "([\w.]+):(\w+)"$', section.split('[project.entry-points."registry.adapters"]\n', 1)[1],
                      re.M)
    assert entry is not None, "no entry point line under the pyproject snippet"
    name, module, attr = entry.groups()
    command = re.search(r"`registry -id r1 -adapter (\S+)`", section)
    assert command is not None, "no registry command line for the example"
    (tmp_path / f"{module}.py").write_text(code)
    dist = tmp_path / f"{module}-0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0\n")
    (dist / "entry_points.txt").write_text(f"[registry.adapters]\n{name} = {module}:{attr}\n")
    spec = command.group(1)
    options = dict(item.split("=", 1) for item in spec.split(":", 1)[1].split(","))
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    with modules_child(*BASE, "-adapter", spec) as child:
        client = RpcClient(child.started["grpc"], timeout=10.0)
        try:
            wait_for(lambda: [(s.id, s.addr, s.kind, s.origin) for s in client.members(options["group"])]
                     == [("hello", options["addr"], "external", name)], 30, what="the hello adapter's service")
            wait_for(lambda: any("hello: the catalog holds" in ln for ln in child.log), 30, what="the export log line")
        finally:
            client.close()
