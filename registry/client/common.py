"""Pieces shared by the sync and asyncio clients: addresses, conversions, local checks."""

from __future__ import annotations

import math
from collections.abc import Sequence
from enum import Enum
from typing import Any

import grpc

from registry.addresses import UsageError, dial_problem, parse_hostport
from registry.client.errors import (
    InvalidAddress,
    InvalidArgument,
    RegistryError,
    Unavailable,
)
from registry.client.types import Service, TlsConfig
from registry.datacenter import datacenter_problem
from registry.v1 import registry_pb2 as pb

__all__ = [
    "CHANNEL_OPTIONS",
    "DEFAULT_TIMEOUT",
    "FAILOVER_CODES",
    "check_batch",
    "check_datacenter",
    "check_match",
    "check_timeout",
    "describe",
    "members_request",
    "parse_addresses",
    "tls_from",
    "to_service",
    "unavailable",
]

DEFAULT_TIMEOUT = 5.0
MAX_MATCH_N = 1000  # same limit as the server (registry.api.MAX_MATCH_N)
MAX_BATCH_KEYS = 100_000  # same limit as the server (registry.api.MAX_BATCH_KEYS)
FAILOVER_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})

CHANNEL_OPTIONS: Sequence[tuple[str, Any]] = (
    ("grpc.use_local_subchannel_pool", 1),  # own connection per client: failover is per client
    ("grpc.enable_retries", 0),  # we fail over ourselves, to another registry
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),  # keep pinging idle Watch streams
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 5_000),
)


_EXPECTED = "expected host:port, e.g. 127.0.0.1:9800, registry.example:9800 or [::1]:9800"


def parse_addresses(addrs: str | Sequence[str]) -> list[str]:
    """'h:p', 'h1:p1,h2:p2' or a list of those -> ['h:p', ...].

    Raises InvalidAddress naming the bad address and the expected form: grpcio would accept
    most typos as a target and then fail every call with UNAVAILABLE, far from the cause."""
    if isinstance(addrs, str):
        items = [addrs]
    elif isinstance(addrs, Sequence) and all(isinstance(a, str) for a in addrs):
        items = list(addrs)
    else:
        raise InvalidAddress(f"registry addresses must be strings ({_EXPECTED}), not {addrs!r}")
    out = [part.strip() for item in items for part in item.split(",") if part.strip()]
    if not out:
        raise InvalidAddress(f"no registry address given ({_EXPECTED})")
    for a in out:
        try:
            hp = parse_hostport(a, "registry")
        except UsageError as exc:  # "registry: bad address 'x': why"
            why = str(exc).removeprefix("registry: bad address ")
            raise InvalidAddress(f"bad registry address {why}; {_EXPECTED}") from None
        if not hp.host:
            raise InvalidAddress(f"bad registry address {a!r}: no host; {_EXPECTED}")
        problem = dial_problem(hp)
        if problem is not None:
            raise InvalidAddress(f"bad registry address {a!r}: {problem}; {_EXPECTED}")
    return out


def check_timeout(value: float, what: str = "timeout") -> float:
    """A positive, finite number of seconds: 0 or less fails every call at once with
    DEADLINE_EXCEEDED (reported as "no registry answered"), which hides the real mistake."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise InvalidArgument(f"{what} must be a positive number of seconds, not {value!r}")
    return float(value)


def _check_pem(role: str, path: str) -> None:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise InvalidArgument(f"TLS {role} {path!r}: {exc.strerror or exc}") from None
    if b"-----BEGIN " not in data:
        raise InvalidArgument(f"TLS {role} {path!r} is not a PEM file (no '-----BEGIN' line)")


def tls_from(tls: TlsConfig | None, tls_cert: str | None, tls_key: str | None,
             tls_ca: str | None) -> TlsConfig | None:
    """The client's TLS settings, with every file read once now: a missing or non-PEM file
    is an InvalidArgument naming it here, not an opaque handshake failure on every call."""
    if tls is not None:
        if tls_cert or tls_key or tls_ca:
            raise InvalidArgument("give either tls= or tls_cert/tls_key/tls_ca, not both")
    elif tls_cert or tls_key or tls_ca:
        tls = TlsConfig(ca=tls_ca, cert=tls_cert, key=tls_key)
    else:
        return None
    for role, path in (("CA bundle", tls.ca), ("client certificate", tls.cert), ("client key", tls.key)):
        if path:
            _check_pem(role, path)
    return tls


def channel_options(tls: TlsConfig | None) -> list[tuple[str, Any]]:
    opts = list(CHANNEL_OPTIONS)
    if tls is not None and tls.server_name:
        opts.append(("grpc.ssl_target_name_override", tls.server_name))
    return opts


def to_service(s: pb.Service, datacenter: str = "", stale: float = 0.0) -> Service:
    return Service(s.id, s.group, s.addr, dict(s.tags), s.status, s.health or "passing", s.health_note, s.kind,
                   datacenter, stale, s.origin)


def check_datacenter(method: str, group: str, datacenter: str) -> None:
    """A `datacenter=` argument that cannot name a datacenter fails here, naming the rule, rather
    than as NOT_FOUND from the registry; "" (the registry's own) is always fine."""
    if datacenter == "":
        return
    problem = datacenter_problem(datacenter)
    if problem is not None:
        where = f" (group {group!r})" if group else ""
        raise InvalidArgument(f"{method}{where}: datacenter {problem}", group=group)


def members_request(group: str, all: bool, datacenter: str = "") -> pb.MembersRequest:
    """The Members request, `all` checked first (a truthy string would otherwise pass as True)."""
    if type(all) is not bool:
        raise InvalidArgument(f"Members (group {group!r}): all={all!r} must be True or False", group=group)
    if not group and not all:
        raise InvalidArgument("Members: group is empty (all=True lists every group)", group=group)
    check_datacenter("Members", group, datacenter)
    return pb.MembersRequest(group=group, all=all, datacenter=datacenter)


def check_match(group: str, key: str, n: int) -> None:
    """The server's argument checks, made before any call (cached or not), so the verdict and
    its message are the same with and without the cache.

    `n` counts services and must be 1..MAX_MATCH_N. The server reads n=0 as 1 only because
    proto3 cannot tell 0 from "not set" (MatchRequest.n: "0 means 1"); a Python caller who
    writes n=0 asked for no service, which is a mistake, as `registry match -n 0` says too."""
    if type(n) is int and 0 < n <= MAX_MATCH_N and group and key:  # one test on the hot (cached) path
        return
    if not group:
        raise InvalidArgument("Match: group is empty", group=group)
    if not key:
        raise InvalidArgument(f"Match (group {group!r}): key is empty", group=group)
    if type(n) is not int or not 1 <= n <= MAX_MATCH_N:
        raise InvalidArgument(f"Match (group {group!r}): n={n!r} out of range 1..{MAX_MATCH_N}", group=group)


def check_batch(group: str, keys: Sequence[str]) -> None:
    """MatchBatch's argument checks (the server's, plus one string passed as `keys`, which
    would otherwise be matched character by character)."""
    if isinstance(keys, (str, bytes)):
        raise InvalidArgument(f"MatchBatch (group {group!r}): keys must be a list of keys, not one string "
                              f"(for one key use match)", group=group)
    if not group:
        raise InvalidArgument("MatchBatch: group is empty", group=group)
    if len(keys) > MAX_BATCH_KEYS:
        raise InvalidArgument(f"MatchBatch (group {group!r}): {len(keys)} keys, at most {MAX_BATCH_KEYS} per batch",
                              group=group)
    if keys and not all(keys):  # all(): one C-level pass; only a failure looks for the culprit
        i = next(i for i, k in enumerate(keys) if not k)
        raise InvalidArgument(f"MatchBatch (group {group!r}): key #{i} is empty", group=group)


def unavailable(method: str, group: str, tried: list[tuple[str, str]]) -> RegistryError:
    where = f" (group {group!r})" if group else ""
    detail = "; ".join(f"{addr}: {why}" for addr, why in tried)
    return Unavailable(f"{method}{where}: no registry answered ({detail})", group=group,
                       addresses=[a for a, _ in tried])


class TlsHint(Enum):
    """What a connection failure says about a TLS setting that does not match the registry's."""

    SERVER_USES_TLS = ("the registry may be serving TLS: give the client its CA with tls=TlsConfig(ca=...), "
                       "or -tls-ca on the registry command")
    SERVER_PLAINTEXT = "the registry is not serving TLS: connect without tls=, or without the -tls-* flags"
    CLIENT_CERT = ("the registry may require a client certificate: give one with TlsConfig(cert=..., key=...), "
                   "or -tls-cert and -tls-key")
    CLIENT_CERT_REFUSED = "the registry may not trust this client certificate (it accepts those its -tls-ca signed)"
    SERVER_UNTRUSTED = ("the registry's certificate is not signed by a CA the client trusts: give its CA with "
                        "TlsConfig(ca=...), or -tls-ca")


_CLOSED = ("Socket closed", "Connection reset by peer")  # the peer hung up during the handshake


def tls_hint(code: grpc.StatusCode, details: str, tls: TlsConfig | None) -> TlsHint | None:
    """Read grpcio's connection error for a TLS mismatch.

    grpcio reports a plaintext client on a TLS port as "Socket closed" (the server drops the
    connection when the bytes are not a TLS handshake; sometimes "Connection reset by peer"),
    and a TLS client on a plaintext port as a handshake failure with WRONG_VERSION_NUMBER.
    Only failures to connect are read (not a connection lost later), and a closed connection
    has other causes too (a registry stopping or shedding connections), hence "may"."""
    if code != grpc.StatusCode.UNAVAILABLE or "failed to connect" not in details:
        return None
    closed = any(c in details for c in _CLOSED)
    if tls is None:
        return TlsHint.SERVER_USES_TLS if closed else None
    if "WRONG_VERSION_NUMBER" in details or "HTTP_REQUEST" in details:
        return TlsHint.SERVER_PLAINTEXT
    if "CERTIFICATE_VERIFY_FAILED" in details:
        return TlsHint.SERVER_UNTRUSTED
    if closed:
        return TlsHint.CLIENT_CERT_REFUSED if tls.cert else TlsHint.CLIENT_CERT
    return None


def describe(err: grpc.RpcError, tls: TlsConfig | None = None) -> str:
    """One attempt's failure for an error message: status, details and, when the failure looks
    like a TLS mismatch, what to change."""
    code: grpc.StatusCode = err.code()
    details: str = err.details() or ""
    text = f"{code.name} {details}" if details else str(code.name)
    hint = tls_hint(code, details, tls)
    return f"{text} -- {hint.value}" if hint is not None else text
