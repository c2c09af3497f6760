"""Each example runs against a real registry: two services (sync and asyncio) and the client."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

from .helpers import ROOT, TOLERANT, Registry, Service, env, procs, wait_for


def test_examples_end_to_end(tmp_path: Path) -> None:
    with procs() as ps:
        # timing is not under test here: a tolerant profile, so a starved process is not declared dead
        reg = Registry(ps, tmp_path, "registry-ex", profile=TOLERANT).wait_ready()
        web = Service(ps, tmp_path, "example-sync", [reg.gossip], profile=TOLERANT)
        aweb = Service(ps, tmp_path, "example-async", [reg.gossip], script="async_webservice.py",
                       profile=TOLERANT)
        web.wait_registered()
        aweb.wait_registered()
        for s in (web, aweb):
            with urllib.request.urlopen(f"http://{s.addr}/", timeout=60) as r:
                body = r.read().decode().strip()
            assert body == s.id, s.proc.output()
        wait_for(lambda: reg.ids("webservice") == {"example-sync", "example-async"}, 60, what="both examples listed")
        out = subprocess.run(
            [sys.executable, str(ROOT / "examples" / "match_client.py"), "-registries", reg.rpc, "-fetch",
             "-timeout", "60"],
            capture_output=True, text=True, env=env(), timeout=120,
        )
        assert out.returncode == 0, out.stderr
        assert "total 1000 keys over 2 services" in out.stdout, (out.stdout, reg.proc.output())
        assert "GET / -> example-sync" in out.stdout and "GET / -> example-async" in out.stdout
        for s in (web, aweb):
            s.proc.signal(signal.SIGTERM)
            assert s.proc.wait(30) == 0, s.proc.output()
            assert "left" in s.proc.output()
        wait_for(lambda: not reg.ids("webservice"), 60, what="both examples gone from the registry")


def test_example_service_without_registry_fails(tmp_path: Path) -> None:
    # Hold the "registry" port (TCP bound but not listening: connections are refused; UDP
    # bound and silent) so the service's own `-bind :0` cannot be handed the same port and
    # join itself, which a merely "free" port allowed once.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        tcp.bind(("127.0.0.1", 0))
        port = tcp.getsockname()[1]
        udp.bind(("127.0.0.1", port))
        out = subprocess.run(
            [sys.executable, str(ROOT / "examples" / "webservice.py"), "-id", "x", "-bind", "127.0.0.1:0",
             "-registries", f"127.0.0.1:{port}", "-addr", "127.0.0.1:0", "-profile", "fast"],
            capture_output=True, text=True, env=env(), timeout=120,
        )
    assert out.returncode == 1 and "no registry answered" in out.stderr, out
