"""`registry` as an installed console script (`pip install -e .`); from a bare checkout the same
checks run against `python cmd/registry/main.py`, so this never skips."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from registry import __version__

from .helpers import ROOT, Proc, env, free_port, procs, wait_for


def _entry() -> list[str]:
    exe = shutil.which("registry")
    return [exe] if exe else [sys.executable, str(ROOT / "cmd" / "registry" / "main.py")]


def _env() -> dict[str, str]:
    """The installed script must work without PYTHONPATH pointing at the checkout."""
    e = env()
    if shutil.which("registry"):
        e.pop("PYTHONPATH", None)
    return e


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    # run from an unrelated directory: an installed script must not depend on the cwd
    return subprocess.run([*_entry(), *args], capture_output=True, text=True, env=_env(), cwd=cwd, timeout=120)


def test_console_script_errors_and_version(tmp_path: Path) -> None:
    bad = _run("-id", "x", "-frobnicate", cwd=tmp_path)
    assert bad.returncode == 2, bad
    assert bad.stdout == "" and bad.stderr.count("\n") == 1, bad
    assert bad.stderr.startswith("registry: unrecognized arguments: -frobnicate"), bad
    noid = _run("-bind", ":0", cwd=tmp_path)
    assert noid.returncode == 2 and noid.stderr.startswith("registry: -id is required"), noid
    v = _run("version", cwd=tmp_path)
    assert v.returncode == 0 and v.stdout == f"registry {__version__}\n" and v.stderr == "", v
    h = _run("-h", cwd=tmp_path)
    assert h.returncode == 0 and "-bind-advertise" in h.stdout and "-tls-ca" in h.stdout, h


def test_console_script_serves(tmp_path: Path) -> None:
    from registry.client import RpcClient

    gossip, rpc = free_port(), free_port()
    with procs() as ps:
        p = Proc([*_entry(), "-id", "reg-console", "-bind", f"127.0.0.1:{gossip}", "-addr", f"127.0.0.1:{rpc}",
                  "-profile", "fast", "-log-format", "json"], tmp_path / "console.log")
        ps.append(p)

        def serving() -> bool:
            p.check_running()
            with RpcClient(f"127.0.0.1:{rpc}", timeout=10) as c:
                return [s.id for s in c.members("registry-group")] == ["reg-console"]

        wait_for(serving, 60, interval=0.1, what="the console script serving")
        m = _run("members", "-rpc", f"127.0.0.1:{rpc}", cwd=tmp_path)
        assert m.returncode == 0 and m.stdout.split()[:3] == ["reg-console", "registry-group", f"127.0.0.1:{rpc}"], m
        assert m.stdout.split()[3] == "alive", m  # ID GROUP ADDR STATUS HEALTH TAGS
        p.signal(15)
        assert p.wait(30) == 0, p.output()
        assert "registry stopped" in p.output()
