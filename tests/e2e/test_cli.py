"""The `registry` command as an operator meets it: flags, one-line errors, exit codes, signals."""

from __future__ import annotations

import signal
import socket
import subprocess
from pathlib import Path

import pytest

from registry.cli import HostPort, UsageError, parse_hostport, parse_server_args

from .helpers import Proc, env, free_port, procs, registry_cmd, wait_for


def run(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(registry_cmd(*args), capture_output=True, text=True, env=env(), timeout=timeout)


@pytest.mark.parametrize(
    "args, needle",
    [
        ([], "-id is required"),
        (["-id", ""], "-id is required"),
        (["-id", "a", "-bind", "foo:bar"], "-bind: bad address"),
        (["-id", "a", "-bind", "127.0.0.1:70000"], "out of range"),
        (["-id", "a", "-bind", "[::1"], "missing ']'"),
        (["-id", "a", "-bind", "1:2:3:4"], "IPv6"),
        (["-id", "a", "-addr", "bad host:1"], "-addr: bad address"),
        (["-id", "a", "-bind", "nosuchhost.invalid:7370"], "cannot resolve"),
        (["-id", "a", "-registries", "127.0.0.1:7370,h:x"], "-registries: bad address"),
        (["-id", "a", "-encrypt", "not*base64"], "not valid base64"),
        (["-id", "a", "-encrypt", "AAAA"], "16, 24 or 32 bytes"),
        (["-id", "a", "-profile", "moon"], "invalid choice"),
        (["-id", "a", "-hash", "md5"], "invalid choice"),
        (["-id", "a", "-log-format", "xml"], "invalid choice"),
        (["-id", "a", "-tls-cert", "/nonexistent.pem"], "go together"),
        (["-id", "a", "-tls-cert", "/nonexistent.pem", "-tls-key", "/x"], "cannot read"),
        (["-id", "a", "-rpc-engine", "fast"], "invalid choice"),
        (["-id", "a", "-rpc-engine", "auto"], "invalid choice"),
        (["-id", "a", "-frobnicate"], "unrecognized arguments"),
        (["frobnicate"], "unknown subcommand"),
        (["match", "onlygroup"], "required"),
        (["match", "g", "k", "-n", "0"], "-n must be at least 1"),
    ],
)
def test_usage_errors_one_line_exit_2(args: list[str], needle: str) -> None:
    r = run(*args)
    assert r.returncode == 2, r
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("registry: ")
    assert needle in lines[0]
    assert "Traceback" not in r.stderr and r.stdout == ""


def test_flag_spellings_go_style() -> None:
    """Single dash, double dash and -flag=value all parse to the same thing."""
    a = parse_server_args(["-id", "s1", "-bind", ":7371", "-registries", "10.0.0.1:7370,10.0.0.2"])
    b = parse_server_args(["--id", "s1", "--bind=:7371", "-registries=10.0.0.1:7370,10.0.0.2:7370"])
    assert a == b
    assert a.config.bind == ("", 7371)
    assert a.config.registries == ["10.0.0.1:7370", "10.0.0.2:7370"]
    assert a.config.addr == ("", 9800)
    d = parse_server_args(["-id", "s"])
    assert (d.config.bind, d.config.profile, d.config.hash, d.log_level) == (("", 7370), "lan", "consistent", "info")


def test_parse_hostport_forms() -> None:
    assert parse_hostport("[::1]:80", "-x") == HostPort("::1", 80)
    assert parse_hostport("localhost:1", "-x", resolve=True) == HostPort("localhost", 1)
    assert parse_hostport("h", "-x", default_port=5) == HostPort("h", 5)
    with pytest.raises(UsageError):
        parse_hostport("h", "-x")
    assert str(HostPort("::1", 9)) == "[::1]:9"


def test_help_and_keygen_exit_0() -> None:
    r = run("-h")
    assert r.returncode == 0 and "-registries" in r.stdout
    k = run("keygen")
    assert k.returncode == 0
    parse_server_args(["-id", "x", "-encrypt", k.stdout.strip()])


def test_cmd_dir_is_not_a_package() -> None:
    root = Path(__file__).resolve().parents[2] / "cmd"
    assert root.is_dir()
    assert not list(root.rglob("__init__.py"))


def _server_args(tmp: Path, gossip: int, rpc: int, *extra: str) -> list[str]:
    return registry_cmd(
        "-id", "reg-cli", "-bind", f"127.0.0.1:{gossip}", "-addr", f"127.0.0.1:{rpc}",
        "-profile", "fast", "-log-format", "json", *extra,
    )


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_taken_gossip_port_exits_1(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, socket.socket() as t:
        u.bind(("127.0.0.1", 0))
        port = u.getsockname()[1]
        t.bind(("127.0.0.1", port))
        t.listen()
        r = subprocess.run(_server_args(tmp_path, port, free_port()), capture_output=True, text=True, env=env(), timeout=60)
    assert r.returncode == 1, r
    errs = [ln for ln in r.stderr.splitlines() if ln.startswith("registry: ")]
    assert len(errs) == 1 and "Traceback" not in r.stderr, r.stderr
    assert str(port) in errs[0]


def test_taken_grpc_port_exits_1(tmp_path: Path) -> None:
    with socket.socket() as t:
        t.bind(("127.0.0.1", 0))
        t.listen()
        port = t.getsockname()[1]
        r = subprocess.run(_server_args(tmp_path, free_port(), port), capture_output=True, text=True, env=env(), timeout=60)
    assert r.returncode == 1, r
    errs = [ln for ln in r.stderr.splitlines() if ln.startswith("registry: ")]
    assert len(errs) == 1 and "Traceback" not in r.stderr, r.stderr
    assert str(port) in errs[0]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_leaves_and_exits_0(tmp_path: Path, sig: int) -> None:
    gossip, rpc, metrics = free_port(), free_port(), free_port()
    with procs() as ps:
        p = Proc(_server_args(tmp_path, gossip, rpc, "-metrics-addr", f"127.0.0.1:{metrics}"), tmp_path / "r.log")
        ps.append(p)
        wait_for(lambda: _listening(rpc) and _listening(metrics), 60, what="gRPC and metrics listening")
        import urllib.request

        def scrape() -> str | None:
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=10) as r:
                text = str(r.read().decode())
            return text if 'registry_members{group="registry-group"} 1' in text else None

        body = wait_for(scrape, 30, what="the server counted itself in the metrics")
        assert "# TYPE registry_members gauge" in body
        assert 'registry_gossip_members{status="alive"} 1' in body
        assert "# TYPE registry_grpc_calls_total counter" in body  # the native gRPC front's counters
        assert "registry_grpc_protocol_errors_total 0" in body
        assert 'registry_grpc_refusals_total{reason="preface_timeout"} 0' in body
        p.signal(sig)
        assert p.wait(30) == 0, p.output()
        out = p.output()
        assert "leaving the pool" in out and "registry stopped" in out
        assert "Traceback" not in out


def test_metrics_render_text_format() -> None:
    from registry.metrics import Metric, render

    text = render(
        [
            Metric("registry_members", "Live services.", "gauge", [({"group": 'a"b\\'}, 3.0), ({"group": "c"}, 0.5)]),
            Metric("registry_groups", "Groups.", "gauge", [({}, 2)]),
        ]
    )
    assert text.splitlines() == [
        "# HELP registry_members Live services.",
        "# TYPE registry_members gauge",
        'registry_members{group="a\\"b\\\\"} 3',
        'registry_members{group="c"} 0.5',
        "# HELP registry_groups Groups.",
        "# TYPE registry_groups gauge",
        "registry_groups 2",
    ]


def test_json_logs_one_object_per_line() -> None:
    import io
    import json
    import logging

    import structlog

    from registry.logs import setup_logging

    buf = io.StringIO()
    try:
        setup_logging("json", "info", stream=buf)
        structlog.get_logger("t").info("hello", n=1)
        logging.getLogger("lib").warning("from %s", "stdlib")
        logging.getLogger("lib").debug("hidden")
    finally:
        logging.getLogger().handlers.clear()
        structlog.reset_defaults()
    rows = [json.loads(line) for line in buf.getvalue().splitlines()]
    assert [(r["event"], r["level"]) for r in rows] == [("hello", "info"), ("from stdlib", "warning")]
    assert rows[0]["n"] == 1


def _write_certs(d: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "registry test CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(1).not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(2)
        .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = d / "ca.pem", d / "server.pem", d / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


def test_tls_grpc_and_ops_client(tmp_path: Path) -> None:
    ca, cert, key = _write_certs(tmp_path)
    gossip, rpc = free_port(), free_port()
    with procs() as ps:
        p = Proc(_server_args(tmp_path, gossip, rpc, "-tls-cert", str(cert), "-tls-key", str(key)), tmp_path / "t.log")
        ps.append(p)
        wait_for(lambda: _listening(rpc), 60, what="gRPC listening")

        def groups(*extra: str) -> subprocess.CompletedProcess[str]:
            return run("groups", "-rpc", f"127.0.0.1:{rpc}", "-timeout", "3", *extra)

        def tls_ok() -> bool:
            r = groups("-tls-ca", str(ca))
            return r.returncode == 0 and "registry-group" in r.stdout.split()

        wait_for(tls_ok, 30, what="groups over TLS")
        plain = groups()
        assert plain.returncode == 1 and len(plain.stderr.strip().splitlines()) == 1, plain


@pytest.mark.parametrize("engine", ["native", "grpcio"])
def test_unusable_tls_files_exit_1_naming_them(tmp_path: Path, engine: str) -> None:
    bad = tmp_path / "not-a-cert.pem"
    bad.write_text("this is not PEM\n")
    r = subprocess.run(_server_args(tmp_path, free_port(), free_port(), "-tls-cert", str(bad), "-tls-key", str(bad),
                                    "-rpc-engine", engine), capture_output=True, text=True, env=env(), timeout=60)
    assert r.returncode == 1, r
    errs = [ln for ln in r.stderr.splitlines() if ln.startswith("registry: ")]
    assert len(errs) == 1 and "Traceback" not in r.stderr, r.stderr
    assert "TLS" in errs[0] or "tls" in errs[0].lower() or "certificate" in errs[0].lower(), errs[0]
