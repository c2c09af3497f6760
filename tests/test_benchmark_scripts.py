"""Benchmark scripts are not run by the suite (they print figures, they do not assert them),
so a script broken by a refactor or by syntax the target Python lacks would go unseen until
someone runs it. This compiles each one and checks the run_all convention (--quick, --json)."""

from __future__ import annotations

import py_compile
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
SCRIPTS = sorted(BENCH.glob("bench_*.py"))


def test_there_are_benchmarks() -> None:
    assert len(SCRIPTS) >= 8


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_compiles_and_follows_the_convention(script: Path, tmp_path: Path) -> None:
    py_compile.compile(str(script), cfile=str(tmp_path / "x.pyc"), doraise=True)
    out = subprocess.run(
        [sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=60, cwd=BENCH.parent
    )
    assert out.returncode == 0, out.stderr
    assert "--quick" in out.stdout and "--json" in out.stdout, f"{script.name} lacks --quick/--json"


def test_the_shared_header_runs_on_this_python() -> None:
    """Every script prints `common.print_header` first (it used datetime.UTC, 3.11+: on 3.10 every one failed)."""
    code = "import common; common.print_header('check', True)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=BENCH, check=False)
    assert out.returncode == 0, out.stderr
    assert "== check (quick mode) 20" in out.stdout, out.stdout
