"""The `registry` command: a registry server (Go-style flags) plus a few ops subcommands.

`registry -id registry-1 -bind :7370 -addr :9800 -registries 10.0.0.1:7370` runs a
server exactly like the Go original; flags take one dash or two and `-flag=value`
works too.  When the first argument does not start with "-" it names a subcommand
that talks gRPC to a running server, in the spirit of `serf members`:

    registry members [-rpc ADDR] [-group G] [-status alive|leaving|left|failed]
    registry groups  [-rpc ADDR]
    registry match GROUP KEY [-n N] [-rpc ADDR]
    registry keygen

Every failure ends in ONE line on stderr and a non-zero status: 2 for a usage error
(missing -id, bad address, bad key), 1 for a runtime error (port taken, -id held by a
live node; for a subcommand, no registry answered at -rpc).  A server whose -registries
do not answer does not exit: it retries every few seconds for as long as it runs.
SIGINT/SIGTERM make a server leave the pool gracefully and exit 0.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from registry.addresses import (
    HostPort,
    UsageError,
    is_wildcard,
    parse_hostport,
)
from registry.catalog import REGISTRY_GROUP
from registry.cliargs import (
    DEFAULT_RPC_PORT,
    EXIT_OK,
    EXIT_RUNTIME,
    EXIT_USAGE,
    PROG,
    Parser,
    add_flag,
    dialable,
    positive_seconds,
    print_error,
    readable_file,
)
from registry.config_file import parse_with_config_file
from registry.datacenter import datacenter_problem
from registry.logs import LOG_FORMATS, LOG_LEVELS, default_format
from registry.server_config import HASHES, PROFILES, RPC_ENGINES, ServerConfig

if TYPE_CHECKING:
    from registry.adapters.base import Adapter

__all__ = ["SUBCOMMANDS", "HostPort", "UsageError", "main", "parse_hostport", "parse_server_args", "raise_fd_limit"]

DEFAULT_GOSSIP_PORT = 7370
DEFAULT_WAN_PORT = 7372  # beside the LAN's 7370 (Consul: serf_lan 8301, serf_wan 8302)
SUBCOMMANDS = ("members", "groups", "match", "keygen", "version")


def decode_key(text: str, flag: str = "-encrypt") -> bytes:
    """A Serf keygen key: standard base64 of 16, 24 or 32 bytes."""
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise UsageError(f"{flag}: key is not valid base64 (make one with `registry keygen`)") from None
    if len(key) not in (16, 24, 32):
        raise UsageError(f"{flag}: key must decode to 16, 24 or 32 bytes, not {len(key)}")
    return key


def _server_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog=PROG,
        allow_abbrev=False,
        description="Run a registry server. Subcommands (first argument): " + ", ".join(SUBCOMMANDS) + ".",
    )
    add_flag(p, "id", default="", help="server id, unique in the pool (required)")
    add_flag(p, "bind", default=f":{DEFAULT_GOSSIP_PORT}", help="gossip bind address (default :7370)")
    add_flag(p, "bind-advertise", default="", help="gossip address told to the pool (default: derived from -bind)")
    add_flag(p, "addr", default=f":{DEFAULT_RPC_PORT}", help="gRPC listen address (default :9800)")
    add_flag(p, "advertise", default="", help="gRPC address told to clients (default: derived from -addr)")
    add_flag(p, "registries", default="", help="comma-separated gossip addresses of other registries")
    add_flag(p, "hash", default="consistent", choices=HASHES, help="ring algorithm (chash = Go original's)")
    add_flag(p, "encrypt", default="", help="gossip encryption key (base64, from `registry keygen`)")
    add_flag(p, "log-format", default=None, choices=LOG_FORMATS,
          help="log format (default: console when stderr is a terminal, json otherwise)")
    add_flag(p, "log-level", default="info", type=str.lower, choices=LOG_LEVELS, help="default info")
    add_flag(p, "metrics-addr", default="", help="serve Prometheus metrics on this address")
    add_flag(p, "tls-cert", default="", help="gRPC server certificate (PEM)")
    add_flag(p, "tls-key", default="", help="gRPC server private key (PEM)")
    add_flag(p, "tls-ca", default="", help="CA bundle: require and verify client certificates")
    add_flag(p, "rpc-engine", default="native", choices=RPC_ENGINES,
          help="gRPC server: native (default: no grpcio in the process, faster) or grpcio (grpc.aio)")
    add_flag(p, "profile", default="lan", choices=PROFILES, help="gossip timing profile (default lan)")
    add_flag(p, "leave-timeout", default=5.0, type=positive_seconds, help="seconds to spend leaving on SIGTERM (default 5)")
    add_flag(p, "http-addr", default="", help="serve the HTTP/JSON API on this address (e.g. :8080; off unless given)")
    add_flag(p, "http-token", default="", help="token HTTP writes (PUT, DELETE) must carry; reads stay open")
    add_flag(p, "http-token-file", default="", help="read the HTTP write token from this file (once, at start)")
    add_flag(p, "ttl-default", default="300s",
             help="liveness of a TTL registration that names none (Go duration or seconds; default 300s, as hera)")
    add_flag(p, "datacenter", default="dc1", help="this registry's datacenter (default dc1; [a-z0-9_-], 1-64 chars)")
    add_flag(p, "wan-bind", default="", help="WAN pool gossip bind address: join the other datacenters (off unless given)")
    add_flag(p, "wan-advertise", default="", help="WAN gossip address told to the other datacenters (needs -wan-bind)")
    add_flag(p, "wan-join", default="", help="comma-separated WAN gossip addresses of other datacenters' registries")
    add_flag(p, "wan-encrypt", default="", help="the WAN pool's own encryption key (base64, from `registry keygen`)")
    add_flag(p, "wan-mirror-ttl", default="", help="drop another datacenter's mirror after it had no source this long "
             "(Go duration or seconds; default 72h)")
    add_flag(p, "wan-export", default="", help="comma-separated groups other datacenters may follow (default: all; "
             "registry-group never)")
    add_flag(p, "adapter", action="append", default=[],
             help="NAME:key=value,... an adapter to run (repeatable; installed: entry points registry.adapters, "
                  "e.g. file:path=services.json)")
    add_flag(p, "config-file", default="", help="read flags from this JSON or TOML file (keys: the flag names; "
             "the command line wins, -adapter adds to the file's)")
    add_flag(p, "only-passing", action="store_true",
             help="route to passing services only: a service whose checks say warning leaves the rings too "
                  "(critical ones always do; Consul's only_passing)")
    return p


@dataclass
class ServerArgs:
    """The validated server command line: the server's own configuration, built here at once
    (no mirror of its fields to keep in step), and how the command logs."""

    config: ServerConfig
    log_format: str = "json"
    log_level: str = "info"


# The longest gRPC address a registry can advertise when -advertise does not say it: [IPv6]:port.
_LONGEST_ADDR = "[ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255]:65535"


def _check_id_fits(ident: str, advertise: str, datacenter: str) -> None:
    """The id must fit the registry's gossip metadata (tags id, group, addr, repl and dc: 512 bytes).

    Found here, naming -id, rather than at start as "gossip: encoded tags take N bytes" (exit 1).
    Without -advertise the address is taken at its longest, so the verdict does not depend on
    the interface the registry ends up advertising."""
    from registry.memberlist.types import META_MAX_SIZE
    from registry.serf.tags import encode_tags

    def size(name: str) -> int:
        return len(encode_tags({"group": REGISTRY_GROUP, "addr": advertise or _LONGEST_ADDR, "id": name,
                                "repl": "1", "dc": datacenter}))

    try:
        used = size(ident)
    except UnicodeEncodeError:
        raise UsageError(f"-id: {ident!r} is not valid text") from None
    if used > META_MAX_SIZE:
        most = next(n for n in range(META_MAX_SIZE, -1, -1) if size("x" * n) <= META_MAX_SIZE)
        raise UsageError(f"-id is too long ({len(ident.encode())} bytes): with the group, address and datacenter tags it "
                         f"would take {used} of the {META_MAX_SIZE} bytes of gossip metadata; at most {most} bytes")


def _read_token_file(path: str) -> str:
    """The token in `path`, stripped (read once, here: a rotated file needs a restart)."""
    try:
        with open(path, encoding="utf-8") as f:
            token = f.read(65_536).strip()
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8 text"
        raise UsageError(f"-http-token-file: cannot read {path!r}: {why}") from None
    if not token:
        raise UsageError(f"-http-token-file: {path!r} is empty")
    return token


def _http_flags(ns: argparse.Namespace) -> tuple[tuple[str, int] | None, str, int]:
    """(-http-addr, the write token, -ttl-default in ms), checked: one line naming the flag."""
    from registry.http.durations import parse_duration_ms
    from registry.ttl.entry import Limits

    http = parse_hostport(ns.http_addr, "-http-addr", resolve=True) if ns.http_addr else None
    if ns.http_token and ns.http_token_file:
        raise UsageError("-http-token and -http-token-file: give one of them")
    token = _read_token_file(ns.http_token_file) if ns.http_token_file else ns.http_token.strip()
    flag = "-http-token-file" if ns.http_token_file else "-http-token"
    if (ns.http_token or ns.http_token_file) and http is None:
        raise UsageError(f"{flag} needs -http-addr (the token guards the HTTP API's writes)")
    if ns.http_token and not token:
        raise UsageError("-http-token is empty")
    if token and not (token.isascii() and token.isprintable() and " " not in token):
        raise UsageError(f"{flag}: the token must be printable ASCII without spaces (it travels in an HTTP header)")
    try:
        ttl_ms = parse_duration_ms(ns.ttl_default)
    except ValueError as exc:
        raise UsageError(f"-ttl-default: {exc}") from None
    limits = Limits()
    if not limits.min_ttl_ms <= ttl_ms <= limits.max_ttl_ms:
        raise UsageError(f"-ttl-default: {ns.ttl_default!r} out of range "
                         f"{limits.min_ttl_ms / 1000:g}s..{limits.max_ttl_ms / 1000:g}s")
    return ((http.host, http.port) if http else None), token, ttl_ms


@dataclass
class WanArgs:
    """The checked WAN flags (issue 17): all None/empty without -wan-bind."""

    bind: tuple[str, int] | None = None
    advertise: tuple[str, int] | None = None
    join: list[str] = field(default_factory=list)
    key: str | None = None
    mirror_ttl: float = 72 * 3600.0
    export: frozenset[str] | None = None


def _wan_federation_flags(ns: argparse.Namespace) -> tuple[float, frozenset[str] | None]:
    """(-wan-mirror-ttl in seconds, -wan-export's groups or None for all), checked: one line naming the flag."""
    from registry.http.durations import parse_duration_ms

    ttl = 72 * 3600.0
    if ns.wan_mirror_ttl:
        try:
            ttl = parse_duration_ms(ns.wan_mirror_ttl) / 1000
        except ValueError as exc:
            raise UsageError(f"-wan-mirror-ttl: {exc}") from None
        if ttl <= 0:
            raise UsageError(f"-wan-mirror-ttl: {ns.wan_mirror_ttl!r} must be more than 0")
    export = None
    if ns.wan_export:
        groups = [g.strip() for g in ns.wan_export.split(",")]
        if not all(groups):
            raise UsageError(f"-wan-export: {ns.wan_export!r} has an empty group name (comma-separated group names)")
        if REGISTRY_GROUP in groups:
            raise UsageError(f"-wan-export: {REGISTRY_GROUP} is never exported (other datacenters find the "
                             "registries through the WAN pool)")
        export = frozenset(groups)
    return ttl, export


def _wan_flags(ns: argparse.Namespace) -> WanArgs:
    """-wan-bind and the flags that need it, checked: one line naming the flag."""
    if not ns.wan_bind:
        for flag in ("wan_advertise", "wan_join", "wan_encrypt", "wan_mirror_ttl", "wan_export"):
            if getattr(ns, flag):
                raise UsageError(f"-{flag.replace('_', '-')} needs -wan-bind (the WAN pool is off without it)")
        return WanArgs()
    bind = parse_hostport(ns.wan_bind, "-wan-bind", default_port=DEFAULT_WAN_PORT, resolve=True)
    adv = None
    if ns.wan_advertise:
        hp = parse_hostport(ns.wan_advertise, "-wan-advertise", default_port=bind.port, resolve=True)
        if hp.host and is_wildcard(hp.host):
            dialable(hp, "-wan-advertise", ns.wan_advertise)
        adv = (hp.host, hp.port)
    seeds = [str(dialable(parse_hostport(part, "-wan-join", default_port=DEFAULT_WAN_PORT), "-wan-join", part.strip()))
             for part in ns.wan_join.split(",") if part.strip()]
    key = None
    if ns.wan_encrypt:
        decode_key(ns.wan_encrypt, "-wan-encrypt")
        key = ns.wan_encrypt.strip()
    ttl, export = _wan_federation_flags(ns)
    return WanArgs((bind.host, bind.port), adv, seeds, key, ttl, export)


def _adapters(specs: Sequence[str], tls: bool) -> list[Adapter]:
    """The -adapter flags' adapters, built now so a bad name or key is a usage error (one line, exit 2).
    Imported only with the flag: a registry without adapters loads nothing of registry.adapters."""
    if not tls:
        _import_asyncio_without_ssl()  # an adapter module may import asyncio: keep the server's choice
    from registry.adapters.base import AdapterError
    from registry.adapters.loader import load_all

    try:
        return load_all(specs)
    except AdapterError as exc:
        raise UsageError(str(exc)) from None


def parse_server_args(argv: Sequence[str]) -> ServerArgs:
    """Parse and validate every server flag (-config-file's too); raises UsageError with a one-line message."""
    return parse_with_config_file(argv, _server_parser(), _server_args)


def _server_args(ns: argparse.Namespace) -> ServerArgs:
    if not ns.id.strip():
        raise UsageError("-id is required (the server's unique name in the pool)")
    if any(c.isspace() for c in ns.id):
        raise UsageError(f"-id: {ns.id!r} must not contain spaces")
    why = datacenter_problem(ns.datacenter)
    if why is not None:
        raise UsageError(f"-datacenter {why}")
    _check_id_fits(ns.id.strip(), ns.advertise, ns.datacenter)
    bind = parse_hostport(ns.bind, "-bind", default_port=DEFAULT_GOSSIP_PORT, resolve=True)
    bind_adv = (
        parse_hostport(ns.bind_advertise, "-bind-advertise", default_port=bind.port, resolve=True)
        if ns.bind_advertise
        else None
    )
    if bind_adv is not None and bind_adv.host and is_wildcard(bind_adv.host):
        dialable(bind_adv, "-bind-advertise", ns.bind_advertise)
    if bind_adv is not None and not bind_adv.host:
        bind_adv = None if bind_adv.port == bind.port else bind_adv
    addr = parse_hostport(ns.addr, "-addr", default_port=DEFAULT_RPC_PORT, resolve=True)
    adv = None
    if ns.advertise:
        # used verbatim as the address clients dial: it needs a host and a real port
        adv = dialable(parse_hostport(ns.advertise, "-advertise", default_port=addr.port), "-advertise", ns.advertise)
        if not adv.host:
            raise UsageError(f"-advertise: {ns.advertise!r} has no host; give the address clients dial (host:port)")
    seeds: list[str] = []
    for part in ns.registries.split(","):
        if part.strip():
            hp = parse_hostport(part, "-registries", default_port=DEFAULT_GOSSIP_PORT)
            seeds.append(str(dialable(hp, "-registries", part.strip())))
    key = None
    if ns.encrypt:
        decode_key(ns.encrypt)
        key = ns.encrypt.strip()
    metrics = parse_hostport(ns.metrics_addr, "-metrics-addr", resolve=True) if ns.metrics_addr else None
    if bool(ns.tls_cert) != bool(ns.tls_key):
        raise UsageError("-tls-cert and -tls-key go together")
    if ns.tls_ca and not ns.tls_cert:
        raise UsageError("-tls-ca needs -tls-cert and -tls-key")
    for flag, path in (("-tls-cert", ns.tls_cert), ("-tls-key", ns.tls_key), ("-tls-ca", ns.tls_ca)):
        if path:
            readable_file(path, flag)
    http_addr, http_token, ttl_default_ms = _http_flags(ns)
    wan = _wan_flags(ns)
    adapters = _adapters(ns.adapter, tls=bool(ns.tls_cert)) if ns.adapter else []
    config = ServerConfig(
        id=ns.id.strip(),
        bind=(bind.host, bind.port),
        bind_advertise=(bind_adv.host, bind_adv.port) if bind_adv else None,
        addr=(addr.host, addr.port),
        advertise=str(adv) if adv else "",
        registries=seeds,
        hash=ns.hash,
        encrypt_key=key,
        metrics_addr=(metrics.host, metrics.port) if metrics else None,
        tls_cert=ns.tls_cert,
        tls_key=ns.tls_key,
        tls_ca=ns.tls_ca,
        rpc_engine=ns.rpc_engine,
        profile=ns.profile,
        leave_timeout=ns.leave_timeout,
        only_passing=ns.only_passing,
        http_addr=http_addr,
        http_token=http_token,
        ttl_default_ms=ttl_default_ms,
        datacenter=ns.datacenter,
        wan_bind=wan.bind,
        wan_advertise=wan.advertise,
        wan_join=wan.join,
        wan_encrypt_key=wan.key,
        wan_mirror_ttl=wan.mirror_ttl,
        wan_export=wan.export,
        adapters=adapters,
    )
    return ServerArgs(config, log_format=ns.log_format or default_format(), log_level=ns.log_level)


async def _serve(args: ServerArgs) -> int:
    """Run until SIGINT/SIGTERM, then leave gracefully within the leave timeout."""
    import asyncio

    import structlog

    from registry.server import RegistryServer, StartError

    log = structlog.get_logger("registry.cli")
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    config = args.config
    server = RegistryServer(config)
    try:
        await server.start()
    except BaseException:
        await server.close()
        raise
    freeze_startup_heap()
    http = {"http": server.http_address} if server.http_address else {}
    if server.wan_address:
        http["wan"] = server.wan_address
    if server.config.adapters:
        http["adapters"] = ",".join(a.name for a in server.config.adapters)
    log.info("registry started", id=config.id, gossip=server.gossip_address, grpc=server.grpc_address,
             rpc_engine=server.rpc_engine, **http)
    failed = asyncio.ensure_future(server.failed.wait())
    stopped = asyncio.ensure_future(stop.wait())
    await asyncio.wait({failed, stopped}, return_when=asyncio.FIRST_COMPLETED)
    failed.cancel()
    stopped.cancel()
    if server.failed.is_set():  # no leave: our name is another node's
        await server.close()
        raise StartError(server.failure)
    log.info("leaving the pool", timeout=config.leave_timeout)
    again = asyncio.Event()  # a second signal skips the graceful leave
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, again.set)
    leaving = asyncio.ensure_future(server.stop())
    forced = asyncio.ensure_future(again.wait())
    await asyncio.wait({leaving, forced}, return_when=asyncio.FIRST_COMPLETED)
    forced.cancel()
    if not leaving.done():
        log.warning("second signal: stopping without finishing the leave")
        leaving.cancel()
        with contextlib.suppress(BaseException):
            await leaving
        await server.close()
    log.info("registry stopped")
    return EXIT_OK


def _import_asyncio_without_ssl() -> None:
    """Import asyncio for the first time with Python's `ssl` module hidden from it.

    A registry server never uses Python's ssl: gRPC does its TLS with the BoringSSL inside
    grpcio, gossip encryption is `cryptography`, metrics are plain HTTP.  asyncio imports ssl
    only to offer TLS transports and is written to run without it (its ssl is then None and a
    TLS transport raises RuntimeError); that one import maps OpenSSL (libssl, libcrypto and
    their start-up state: with `secrets` kept to keygen as well, ~5 MiB of RSS).  Only
    asyncio's own view is affected: ssl is importable again as soon as asyncio is loaded.
    No-op when asyncio or ssl is already loaded (tests, an embedding process)."""
    if "asyncio" in sys.modules or "ssl" in sys.modules:
        return
    sys.modules["ssl"] = None  # type: ignore[assignment]  # makes `import ssl` raise ImportError
    try:
        import asyncio  # noqa: F401
    finally:
        if sys.modules.get("ssl", ...) is None:
            del sys.modules["ssl"]


def freeze_startup_heap() -> None:
    """Collect, then hide what start-up allocated (modules, the gRPC front, the first catalog)
    from the collector for good (gc.freeze).

    Why: the collector's first full pass otherwise walks all of it on the event loop, an ~80 ms
    stall seen as late membership changes.  Process-wide, so only the `registry` command does it:
    a server embedded in another program leaves that program's collector alone."""
    import gc

    gc.collect()
    gc.freeze()


def raise_fd_limit() -> tuple[int, int] | None:
    """Raise the soft RLIMIT_NOFILE to the hard one; (before, after) when it changed.

    Why: the common soft limit of 1,024 descriptors is a few hundred idle connections away from
    failing every accept() and every gossip stream, while the hard limit (set by the operator or
    systemd, often 524,288) says the process may have more. Only the `registry` command does
    this: a library must not change process-wide limits behind its host's back."""
    try:
        import resource
    except ImportError:  # not POSIX
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # macOS may report no hard limit but refuses an infinite soft one: aim at 10,240 (OPEN_MAX).
    target = hard if hard != resource.RLIM_INFINITY else 10_240
    if soft == resource.RLIM_INFINITY or soft >= target:
        return None
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        return None
    return soft, target


def _run_server(argv: Sequence[str]) -> int:
    args = parse_server_args(argv)
    if not args.config.tls_cert:  # with TLS the native front needs asyncio's ssl support
        _import_asyncio_without_ssl()
    import asyncio

    from registry.logs import setup_logging

    setup_logging(args.log_format, args.log_level)
    raised = raise_fd_limit()
    if raised is not None:
        import structlog

        structlog.get_logger("registry.cli").info("open-file limit raised", soft=raised[0], now=raised[1])
    from registry.server import StartError

    try:
        return asyncio.run(_serve(args))
    except StartError as exc:
        print_error(str(exc))
        return EXIT_RUNTIME
    except KeyboardInterrupt:  # a signal before the handlers were installed
        return EXIT_OK


# -- entry point ---------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if args and not args[0].startswith("-"):
            if args[0] not in SUBCOMMANDS:
                raise UsageError(f"unknown subcommand {args[0]!r} (one of: {', '.join(SUBCOMMANDS)})")
            from registry.ops import run

            return run(args[0], args[1:])
        return _run_server(args)
    except UsageError as exc:
        print_error(f"{exc} (see `registry -h`)")
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_OK
    except Exception as exc:  # noqa: BLE001 - last resort: still one line, never a traceback
        print_error(f"{type(exc).__name__}: {exc}")
        return EXIT_RUNTIME


if __name__ == "__main__":
    sys.exit(main())
