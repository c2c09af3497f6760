"""h2spec 2.6.0 (summerwind/h2spec, 146 cases) against a real native server, when the tool is here:
$H2SPEC or ../shared/tools/h2spec. Never required: test_conformance.py covers every case without it."""

from __future__ import annotations

import os
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.h2.wirepeer import ServerProcess

_CANDIDATES = [os.environ.get("H2SPEC", ""), str(Path(__file__).resolve().parents[3] / "shared" / "tools" / "h2spec")]
H2SPEC = next((p for p in _CANDIDATES if p and os.access(p, os.X_OK)), None)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    s = ServerProcess(tmp_path / "native.log")
    yield s
    s.stop()


@pytest.mark.skipif(H2SPEC is None, reason="h2spec not found: set $H2SPEC or put it in ../shared/tools/h2spec")
def test_h2spec_passes_every_case(server: ServerProcess, tmp_path: Path) -> None:
    assert H2SPEC is not None
    report = tmp_path / "h2spec.xml"
    run = subprocess.run([H2SPEC, "-h", "127.0.0.1", "-p", str(server.port), "-o", "5", "-j", str(report)],
                         capture_output=True, text=True, timeout=600, check=False)
    cases = list(ET.parse(report).iter("testcase"))
    bad = [f"{c.get('package')} {c.get('classname')}: {c.get('name')}" for c in cases
           if c.find("failure") is not None or c.find("error") is not None or c.find("skipped") is not None]
    assert len(cases) == 146 and not bad and run.returncode == 0, "\n".join(bad) + run.stdout[-3000:]
