"""The probes: one blocking run of a check, returning (status, output).  No state between runs.

HTTP, TCP and gRPC probes bound their own time (socket timeouts from one deadline, a gRPC deadline),
so the runners call them directly; only a callable needs a thread it can abandon (`runner.Call`).
Heavy modules are imported only by the probe that needs them: ssl for an https URL, grpc for a gRPC
check, so a sync service with HTTP checks still loads neither (tests/e2e/test_register.py).

Outputs are short (`MAX_OUTPUT` characters): Consul keeps 4 KiB of a check's output, but ours ends
up in a 96-byte tag note, and what is kept for display need not be much longer.
"""

from __future__ import annotations

import socket
import time
from typing import Any

from registry.healthtags import Health

from .spec import Check, GrpcCheck, HttpCheck, TcpCheck

__all__ = ["MAX_OUTPUT", "Outcome", "interpret", "probe"]

MAX_OUTPUT = 256
#: bytes of an HTTP answer read: the status line, headers and the start of the body
_HTTP_READ = 4096

Outcome = tuple[Health, str]


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_OUTPUT else text[: MAX_OUTPUT - 3] + "..."


def _error(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def probe(check: Check) -> Outcome:
    """Run `check` once (HTTP, TCP or gRPC), within its timeout."""
    try:
        if isinstance(check, HttpCheck):
            return _http(check)
        if isinstance(check, TcpCheck):
            return _tcp(check)
        if isinstance(check, GrpcCheck):
            return _grpc(check)
    except Exception as exc:  # noqa: BLE001 - every way a probe fails is a critical result with its reason
        return Health.CRITICAL, _short(_error(exc))
    raise TypeError(f"no probe for {type(check).__name__}")


def _tcp(check: TcpCheck) -> Outcome:
    with socket.create_connection((check.host, check.port), timeout=check.timeout):
        pass
    return Health.PASSING, f"TCP connect {check.describe()}: Success"


def _http(check: HttpCheck) -> Outcome:
    """GET with `Connection: close`, reading at most `_HTTP_READ` bytes, all within the timeout."""
    deadline = time.monotonic() + check.timeout
    sock = socket.create_connection((check.host, check.port), timeout=check.timeout)
    try:
        if check.https:
            import ssl  # only for https URLs

            ctx = ssl.create_default_context()
            if check.tls_skip_verify:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            sock = ctx.wrap_socket(sock, server_hostname=check.host)
        host = f"[{check.host}]" if ":" in check.host else check.host
        default = 443 if check.https else 80
        lines = [f"GET {check.path} HTTP/1.1", f"Host: {host}" + ("" if check.port == default else f":{check.port}"),
                 "User-Agent: registry-health-check", "Accept: text/plain, text/*, */*", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in check.headers.items()]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        data = b""
        while len(data) < _HTTP_READ:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError()
            sock.settimeout(left)
            chunk = sock.recv(_HTTP_READ - len(data))
            if not chunk:
                break
            data += chunk
            if b"\r\n\r\n" in data and _body_enough(data):
                break
    finally:
        sock.close()
    return _http_outcome(data)


def _body_enough(data: bytes) -> bool:
    """Whether enough of the answer is in: headers and either the whole body or a note's worth."""
    head, _, body = data.partition(b"\r\n\r\n")
    status = head.split(b" ", 2)[1:2]
    if status and status[0] in (b"204", b"304"):
        return True  # no body, whatever the headers say
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length" and v.strip().isdigit():
            return len(body) >= min(int(v.strip()), MAX_OUTPUT)
    return len(body) >= MAX_OUTPUT


def _http_outcome(data: bytes) -> Outcome:
    head, _, body = data.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        return Health.CRITICAL, _short(f"not an HTTP answer: {status_line[:60]!r}")
    code = int(parts[1])
    if b"transfer-encoding: chunked" in head.lower():
        size, _, rest = body.partition(b"\r\n")
        body = rest[: int(size.split(b";")[0] or b"0", 16)] if size.strip() else rest
    text = body.decode("utf-8", "replace").strip()
    output = _short(f"HTTP {code} {parts[2] if len(parts) > 2 else ''}".rstrip() + (f": {text}" if text else ""))
    if 200 <= code < 300:
        return Health.PASSING, output
    if code == 429:
        return Health.WARNING, output
    return Health.CRITICAL, output


def _grpc(check: GrpcCheck) -> Outcome:
    """A fresh channel per run, as Consul dials per check: a reused channel would wait out its
    reconnect backoff after the server came back, delaying failback by up to its 2 minutes."""
    import grpc
    from grpc_health.v1 import health_pb2

    target = f"{check.host}:{check.port}" if ":" not in check.host else f"[{check.host}]:{check.port}"
    channel = grpc.secure_channel(target, grpc.ssl_channel_credentials()) if check.tls else grpc.insecure_channel(target)
    try:
        call = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        try:
            reply: Any = call(health_pb2.HealthCheckRequest(service=check.service), timeout=check.timeout,
                              wait_for_ready=False)
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            detail = exc.details() if hasattr(exc, "details") else str(exc)
            return Health.CRITICAL, _short(f"gRPC {getattr(code, 'name', code)}: {detail}")
        name = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        if reply.status == health_pb2.HealthCheckResponse.SERVING:
            return Health.PASSING, f"gRPC {check.describe()}: {name}"
        return Health.CRITICAL, f"gRPC {check.describe()}: {name}"
    finally:
        channel.close()


def interpret(value: object) -> Outcome:
    """What a `CallableCheck`'s return value means (see its docstring); anything else is critical,
    saying what came back."""
    note = ""
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], str):
        value, note = value
    if value is None or value is True:
        return Health.PASSING, _short(note)
    if value is False:
        return Health.CRITICAL, _short(note or "returned False")
    if isinstance(value, Health):
        return value, _short(note)
    if isinstance(value, str):
        try:
            return Health.from_word(value), _short(note)
        except ValueError:
            pass
    return Health.CRITICAL, _short(f"returned {value!r} (expected a status word, Health, bool or None)")

