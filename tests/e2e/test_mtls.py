"""Mutual TLS end to end: a `registry` started with -tls-cert -tls-key -tls-ca answers only
clients that present a certificate signed by that CA, through RpcClient and the ops subcommands,
with either gRPC front."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from .certs import write_pki
from .helpers import Proc, env, free_port, procs, registry_cmd, wait_for


def _ops(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(registry_cmd(*args), capture_output=True, text=True, env=env(), timeout=120)


@pytest.mark.parametrize("engine", ["native", "grpcio"])
def test_mutual_tls_end_to_end(tmp_path: Path, engine: str) -> None:
    from registry.client import RegistryError, RpcClient

    pki = write_pki(tmp_path)
    gossip, rpc = free_port(), free_port()
    target = f"127.0.0.1:{rpc}"
    mtls: dict[str, Any] = {"tls_cert": str(pki.client_cert), "tls_key": str(pki.client_key), "tls_ca": str(pki.ca)}
    with procs() as ps:
        p = Proc(registry_cmd("-id", "reg-mtls", "-bind", f"127.0.0.1:{gossip}", "-addr", target,
                              "-profile", "fast", "-log-format", "json",
                              "-tls-cert", str(pki.server_cert), "-tls-key", str(pki.server_key),
                              "-tls-ca", str(pki.ca), "-rpc-engine", engine), tmp_path / "mtls.log")
        ps.append(p)

        def serving() -> bool:
            p.check_running()
            with RpcClient(target, timeout=10, **mtls) as c:
                return "reg-mtls" in {s.id for s in c.members("registry-group")}

        wait_for(serving, 60, interval=0.1, what="the registry answering a client with a certificate")

        # the server certificate names both 127.0.0.1 (IP SAN) and localhost (DNS SAN)
        for addr in (target, f"localhost:{rpc}"):
            with RpcClient(addr, timeout=10, **mtls) as c:
                assert "registry-group" in c.groups()
                me = c.match("registry-group", "any-key")
                assert (me.id, me.addr) == ("reg-mtls", target)

        # refused: a TLS client without a certificate, one whose certificate another CA signed, plaintext
        refused: list[dict[str, Any]] = [
            {"tls_ca": str(pki.ca)},
            {"tls_cert": str(pki.rogue_cert), "tls_key": str(pki.rogue_key), "tls_ca": str(pki.ca)},
            {},
        ]
        for kw in refused:
            with RpcClient(target, timeout=5, **kw) as c, pytest.raises(RegistryError):
                c.groups()
        assert p.alive(), p.output()

        # the ops subcommands take the same three flags
        flags = ["-rpc", target, "-timeout", "10", "-tls-ca", str(pki.ca),
                 "-tls-cert", str(pki.client_cert), "-tls-key", str(pki.client_key)]
        g = _ops("groups", *flags)
        assert g.returncode == 0 and g.stdout.split() == ["registry-group"], g
        m = _ops("members", *flags)
        assert m.returncode == 0 and m.stdout.split()[0] == "reg-mtls" and target in m.stdout, m
        x = _ops("match", "registry-group", "k", *flags)
        assert x.returncode == 0 and x.stdout.split()[:3] == ["reg-mtls", "registry-group", target], x
        no_cert = _ops("groups", "-rpc", target, "-timeout", "5", "-tls-ca", str(pki.ca))
        assert no_cert.returncode == 1, no_cert
        assert len(no_cert.stderr.strip().splitlines()) == 1 and no_cert.stderr.startswith("registry: groups:")
        half = _ops("groups", "-rpc", target, "-tls-ca", str(pki.ca), "-tls-cert", str(pki.client_cert))
        assert half.returncode == 2 and "go together" in half.stderr, half
        assert "Traceback" not in p.output()
