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
import math
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

from registry.addresses import HostPort, UsageError, parse_hostport
from registry.catalog import REGISTRY_GROUP
from registry.logs import LOG_FORMATS, LOG_LEVELS, default_format

# Not imported from registry.api: that imports asyncio, which must be loaded after the command
# decides whether to hide ssl from it (_import_asyncio_without_ssl). A test checks they agree.
MAX_MATCH_N = 1000  # the server's limit, checked before calling it

if TYPE_CHECKING:
    from registry.server import ServerConfig

__all__ = ["main", "UsageError", "HostPort", "parse_hostport", "parse_server_args", "raise_fd_limit", "SUBCOMMANDS"]

PROG = "registry"
EXIT_OK, EXIT_RUNTIME, EXIT_USAGE = 0, 1, 2
DEFAULT_GOSSIP_PORT = 7370
DEFAULT_RPC_PORT = 9800
PROFILES = ("lan", "wan", "local", "fast")
HASHES = ("consistent", "chash")
RPC_ENGINES = ("native", "grpcio")
SUBCOMMANDS = ("members", "groups", "match", "keygen", "version")
#: Serf's member statuses, as `serf members` prints them (registry.serf.member.MemberStatus).
MEMBER_STATUSES = ("alive", "leaving", "left", "failed")


def decode_key(text: str) -> bytes:
    """A Serf keygen key: standard base64 of 16, 24 or 32 bytes."""
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise UsageError("-encrypt: key is not valid base64 (make one with `registry keygen`)") from None
    if len(key) not in (16, 24, 32):
        raise UsageError(f"-encrypt: key must decode to 16, 24 or 32 bytes, not {len(key)}")
    return key


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing usage and exiting, so errors stay one line."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _flag(parser: argparse.ArgumentParser, name: str, **kwargs: Any) -> None:
    """Accept `-name`, `--name` and (argparse does it) `-name=value`, like Go's flag package."""
    parser.add_argument(f"-{name}", f"--{name}", dest=name.replace("-", "_"), **kwargs)


def _seconds(text: str) -> float:
    """argparse type of the duration flags: a positive, finite number of seconds.

    Checked at parse time: `-timeout 0` used to be accepted and then fail every call with
    DEADLINE_EXCEEDED ("no registry answered"), which sends the operator looking at the network."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text!r}")
    return value


def _server_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog=PROG,
        allow_abbrev=False,
        description="Run a registry server. Subcommands (first argument): " + ", ".join(SUBCOMMANDS) + ".",
    )
    _flag(p, "id", default="", help="server id, unique in the pool (required)")
    _flag(p, "bind", default=f":{DEFAULT_GOSSIP_PORT}", help="gossip bind address (default :7370)")
    _flag(p, "bind-advertise", default="", help="gossip address told to the pool (default: derived from -bind)")
    _flag(p, "addr", default=f":{DEFAULT_RPC_PORT}", help="gRPC listen address (default :9800)")
    _flag(p, "advertise", default="", help="gRPC address told to clients (default: derived from -addr)")
    _flag(p, "registries", default="", help="comma-separated gossip addresses of other registries")
    _flag(p, "hash", default="consistent", choices=HASHES, help="ring algorithm (chash = Go original's)")
    _flag(p, "encrypt", default="", help="gossip encryption key (base64, from `registry keygen`)")
    _flag(p, "log-format", default=None, choices=LOG_FORMATS,
          help="log format (default: console when stderr is a terminal, json otherwise)")
    _flag(p, "log-level", default="info", type=str.lower, choices=LOG_LEVELS, help="default info")
    _flag(p, "metrics-addr", default="", help="serve Prometheus metrics on this address")
    _flag(p, "tls-cert", default="", help="gRPC server certificate (PEM)")
    _flag(p, "tls-key", default="", help="gRPC server private key (PEM)")
    _flag(p, "tls-ca", default="", help="CA bundle: require and verify client certificates")
    _flag(p, "rpc-engine", default="native", choices=RPC_ENGINES,
          help="gRPC server: native (default: no grpcio in the process, faster) or grpcio (grpc.aio)")
    _flag(p, "profile", default="lan", choices=PROFILES, help="gossip timing profile (default lan)")
    _flag(p, "leave-timeout", default=5.0, type=_seconds, help="seconds to spend leaving on SIGTERM (default 5)")
    return p


@dataclass
class ServerArgs:
    """Validated server flags (what `registry.server.ServerConfig` is built from)."""

    id: str
    bind: HostPort
    bind_advertise: HostPort | None
    addr: HostPort
    advertise: HostPort | None
    registries: list[str]
    hash: str = "consistent"
    encrypt_key: str | None = None
    log_format: str = "json"
    log_level: str = "info"
    metrics_addr: HostPort | None = None
    tls_cert: str = ""
    tls_key: str = ""
    tls_ca: str = ""
    rpc_engine: str = "native"
    profile: str = "lan"
    leave_timeout: float = 5.0


def _readable(path: str, flag: str) -> str:
    if not os.path.isfile(path) or not os.access(path, os.R_OK):
        raise UsageError(f"{flag}: cannot read {path!r}")
    return path


def _dialable(hp: HostPort, flag: str, text: str) -> HostPort:
    """An address given to others to dial: no wildcard host, no port 0 (both mean "here, any")."""
    if hp.port == 0:
        raise UsageError(f"{flag}: {text!r}: port 0 cannot be dialled; give the real port")
    if hp.host and _is_wildcard(hp.host):
        raise UsageError(f"{flag}: {text!r}: {hp.host} means every interface and cannot be dialled; "
                         "give an address the others can reach")
    return hp


def _is_wildcard(host: str) -> bool:
    return host in ("0.0.0.0", "::", "0:0:0:0:0:0:0:0")


# The longest gRPC address a registry can advertise when -advertise does not say it: [IPv6]:port.
_LONGEST_ADDR = "[ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255]:65535"


def _check_id_fits(ident: str, advertise: str) -> None:
    """The id must fit the registry's gossip metadata (tags id, group and addr: 512 bytes).

    Found here, naming -id, rather than at start as "gossip: encoded tags take N bytes" (exit 1).
    Without -advertise the address is taken at its longest, so the verdict does not depend on
    the interface the registry ends up advertising."""
    from registry.memberlist.types import META_MAX_SIZE
    from registry.serf.tags import encode_tags

    def size(name: str) -> int:
        return len(encode_tags({"group": REGISTRY_GROUP, "addr": advertise or _LONGEST_ADDR, "id": name}))

    try:
        used = size(ident)
    except UnicodeEncodeError:
        raise UsageError(f"-id: {ident!r} is not valid text") from None
    if used > META_MAX_SIZE:
        most = next(n for n in range(META_MAX_SIZE, -1, -1) if size("x" * n) <= META_MAX_SIZE)
        raise UsageError(f"-id is too long ({len(ident.encode())} bytes): with the group and address tags it "
                         f"would take {used} of the {META_MAX_SIZE} bytes of gossip metadata; at most {most} bytes")


def parse_server_args(argv: Sequence[str]) -> ServerArgs:
    """Parse and validate every server flag; raises UsageError with a one-line message."""
    ns = _server_parser().parse_args(list(argv))
    if not ns.id.strip():
        raise UsageError("-id is required (the server's unique name in the pool)")
    if any(c.isspace() for c in ns.id):
        raise UsageError(f"-id: {ns.id!r} must not contain spaces")
    _check_id_fits(ns.id.strip(), ns.advertise)
    bind = parse_hostport(ns.bind, "-bind", default_port=DEFAULT_GOSSIP_PORT, resolve=True)
    bind_adv = (
        parse_hostport(ns.bind_advertise, "-bind-advertise", default_port=bind.port, resolve=True)
        if ns.bind_advertise
        else None
    )
    if bind_adv is not None and bind_adv.host and _is_wildcard(bind_adv.host):
        _dialable(bind_adv, "-bind-advertise", ns.bind_advertise)
    if bind_adv is not None and not bind_adv.host:
        bind_adv = None if bind_adv.port == bind.port else bind_adv
    addr = parse_hostport(ns.addr, "-addr", default_port=DEFAULT_RPC_PORT, resolve=True)
    adv = None
    if ns.advertise:
        # used verbatim as the address clients dial: it needs a host and a real port
        adv = _dialable(parse_hostport(ns.advertise, "-advertise", default_port=addr.port), "-advertise", ns.advertise)
        if not adv.host:
            raise UsageError(f"-advertise: {ns.advertise!r} has no host; give the address clients dial (host:port)")
    seeds: list[str] = []
    for part in ns.registries.split(","):
        if part.strip():
            hp = parse_hostport(part, "-registries", default_port=DEFAULT_GOSSIP_PORT)
            seeds.append(str(_dialable(hp, "-registries", part.strip())))
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
            _readable(path, flag)
    return ServerArgs(
        id=ns.id.strip(),
        bind=bind,
        bind_advertise=bind_adv,
        addr=addr,
        advertise=adv,
        registries=seeds,
        hash=ns.hash,
        encrypt_key=key,
        log_format=ns.log_format or default_format(),
        log_level=ns.log_level,
        metrics_addr=metrics,
        tls_cert=ns.tls_cert,
        tls_key=ns.tls_key,
        tls_ca=ns.tls_ca,
        rpc_engine=ns.rpc_engine,
        profile=ns.profile,
        leave_timeout=ns.leave_timeout,
    )


def _server_config(args: ServerArgs) -> "ServerConfig":
    from registry.server import ServerConfig

    return ServerConfig(
        id=args.id,
        bind=(args.bind.host, args.bind.port),
        bind_advertise=(args.bind_advertise.host, args.bind_advertise.port) if args.bind_advertise else None,
        addr=(args.addr.host, args.addr.port),
        advertise=str(args.advertise) if args.advertise else "",
        registries=list(args.registries),
        hash=args.hash,
        encrypt_key=args.encrypt_key,
        metrics_addr=(args.metrics_addr.host, args.metrics_addr.port) if args.metrics_addr else None,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_ca=args.tls_ca,
        rpc_engine=args.rpc_engine,
        profile=args.profile,
        leave_timeout=args.leave_timeout,
    )


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
    server = RegistryServer(_server_config(args))
    try:
        await server.start()
    except BaseException:
        await server.close()
        raise
    log.info("registry started", id=args.id, gossip=server.gossip_address, grpc=server.grpc_address,
             rpc_engine=server.rpc_engine)
    failed = asyncio.ensure_future(server.failed.wait())
    stopped = asyncio.ensure_future(stop.wait())
    await asyncio.wait({failed, stopped}, return_when=asyncio.FIRST_COMPLETED)
    failed.cancel()
    stopped.cancel()
    if server.failed.is_set():  # no leave: our name is another node's
        await server.close()
        raise StartError(server.failure)
    log.info("leaving the pool", timeout=args.leave_timeout)
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
    if not args.tls_cert:  # with TLS the native front needs asyncio's ssl support
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
        _fail(str(exc))
        return EXIT_RUNTIME
    except KeyboardInterrupt:  # a signal before the handlers were installed
        return EXIT_OK


# -- ops subcommands ----------------------------------------------------------------------


_OPS_HELP = {
    "members": (
        "List every member of every group (or of -group G) that the registry's gossip pool knows, "
        "as `serf members` does: one line each, ID GROUP ADDR STATUS TAGS, sorted by group and id. "
        "STATUS is alive, leaving (it announced its departure), left (it departed) or failed (it "
        "stopped answering); left and failed members stay listed until the pool reaps them. Only "
        "alive members are in the rings: Match never returns the others. The registries themselves "
        f"are the members of the group {REGISTRY_GROUP!r}; pool members whose tags name no group are "
        "not services and are not listed."
    ),
    "groups": f"List the groups that have live members, {REGISTRY_GROUP!r} (the registries) included.",
    "match": "Print the service owning KEY in GROUP (with -n N, the N distinct owners in ring order): "
             "ID GROUP ADDR TAGS.",
}


def _ops_parser(name: str) -> argparse.ArgumentParser:
    p = _Parser(prog=f"{PROG} {name}", allow_abbrev=False, description=_OPS_HELP.get(name))
    _flag(p, "rpc", default=f"127.0.0.1:{DEFAULT_RPC_PORT}",
          help="gRPC address of a registry, or several separated by commas to fail over (default 127.0.0.1:9800)")
    _flag(p, "timeout", default=5.0, type=_seconds, help="seconds per call (default 5)")
    _flag(p, "tls-ca", default="", help="verify the registry's certificate with this CA bundle")
    _flag(p, "tls-cert", default="", help="client certificate (PEM), for servers started with -tls-ca")
    _flag(p, "tls-key", default="", help="client key (PEM)")
    return p


def rpc_targets(text: str) -> list[str]:
    """-rpc: `host:port`, `host` (port 9800) or `:port` (this machine), comma-separated to fail over."""
    out = []
    for part in text.split(","):
        if not part.strip():
            continue
        # resolved now, as -bind and -addr are: a typo is a usage error naming it, not UNAVAILABLE
        hp = parse_hostport(part, "-rpc", default_port=DEFAULT_RPC_PORT, resolve=True)
        hp = _dialable(hp, "-rpc", part.strip())
        out.append(str(HostPort(hp.host or "127.0.0.1", hp.port)))
    if not out:
        raise UsageError("-rpc: empty address")
    return out


def _client(ns: argparse.Namespace) -> Any:
    targets = rpc_targets(ns.rpc)
    for flag, path in (("-tls-ca", ns.tls_ca), ("-tls-cert", ns.tls_cert), ("-tls-key", ns.tls_key)):
        if path:
            _readable(path, flag)
    if bool(ns.tls_cert) != bool(ns.tls_key):
        raise UsageError("-tls-cert and -tls-key go together")
    from registry.client import InvalidArgument, RpcClient

    try:
        return RpcClient(targets, timeout=ns.timeout, tls_ca=ns.tls_ca or None, tls_cert=ns.tls_cert or None,
                         tls_key=ns.tls_key or None)
    except InvalidArgument as exc:  # what the client checks before any call: a TLS file that is not PEM, ...
        raise UsageError(str(exc)) from None


def _print_services(services: Sequence[Any]) -> None:
    """ID GROUP ADDR TAGS, columns aligned. No status column: every service a registry answers
    with is live in its ring (see the members -h), and a constant "alive" told nothing."""
    rows = [(s.id, getattr(s, "group", ""), s.addr, _tags_text(s)) for s in services]
    if not rows:
        return
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:3], widths)) + "  " + r[3])


def _print_members(services: Sequence[Any]) -> None:
    """ID GROUP ADDR STATUS TAGS, columns aligned (`serf members` prints NAME ADDR STATUS TAGS)."""
    rows = [(s.id, s.group, s.addr, s.status or "alive", _tags_text(s)) for s in services]
    if not rows:
        return
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + "  " + r[4])


def _all_members(c: Any, group: str) -> list[Any]:
    """Members(group, all=True): every member with its status.

    A registry older than the `all` field ignores it and answers with the live ring members,
    status empty (printed as alive, which they are), and refuses the group "" that means
    "every group": then each group it names is asked in turn."""
    from registry.client import InvalidArgument, NotFound

    try:
        return list(c.members(group, all=True))
    except InvalidArgument:
        if group:
            raise
    services: list[Any] = []
    for g in c.groups():
        try:
            services.extend(c.members(g, all=True))
        except NotFound:  # emptied since Groups answered
            continue
    return services


def _tags_text(s: Any) -> str:
    tags = dict(getattr(s, "tags", None) or {})
    if not tags:
        tags = {"group": getattr(s, "group", ""), "addr": s.addr}
    return ",".join(f"{k}={v}" for k, v in sorted(tags.items()))


def _run_ops(name: str, argv: Sequence[str]) -> int:
    if name == "keygen":
        _Parser(prog=f"{PROG} keygen", allow_abbrev=False).parse_args(list(argv))
        import secrets  # here, not at the top: it loads hashlib and OpenSSL's libcrypto

        print(base64.b64encode(secrets.token_bytes(32)).decode("ascii"))
        return EXIT_OK
    if name == "version":
        _Parser(prog=f"{PROG} version", allow_abbrev=False).parse_args(list(argv))
        from registry import __version__

        print(f"registry {__version__}")
        return EXIT_OK
    p = _ops_parser(name)
    if name == "members":
        _flag(p, "group", default="", help="only this group (default: every group)")
        _flag(p, "status", default="", choices=MEMBER_STATUSES, help="only members with this status")
    elif name == "match":
        p.add_argument("group")
        p.add_argument("key")
        _flag(p, "n", default=1, type=int,
              help=f"how many distinct services, in ring order (1 to {MAX_MATCH_N}, default 1)")
    ns = p.parse_args(list(argv))
    if name == "match":
        # the client's and the server's limits, said before any call
        if ns.n < 1:
            raise UsageError("-n must be at least 1")
        if ns.n > MAX_MATCH_N:
            raise UsageError(f"-n must be at most {MAX_MATCH_N} (the server's limit)")
        for what, value in (("GROUP", ns.group), ("KEY", ns.key)):
            if not value:
                raise UsageError(f"match: {what} is empty")
    try:
        from registry.client import RegistryError
    except ImportError as exc:
        _fail(f"the gRPC client is not available: {exc}")
        return EXIT_RUNTIME
    try:
        with _client(ns) as c:
            if name == "groups":
                for g in c.groups():
                    print(g)
            elif name == "members":
                services = _all_members(c, ns.group)
                _print_members([s for s in services if not ns.status or (s.status or "alive") == ns.status])
            else:
                if ns.n == 1:
                    found = [c.match(ns.group, ns.key)]
                else:
                    found = list(c.match_n(ns.group, ns.key, ns.n))
                _print_services(found)
    except RegistryError as exc:
        _fail(f"{name}: {exc}")
        return EXIT_RUNTIME
    return EXIT_OK


# -- entry point ---------------------------------------------------------------------------


def _fail(message: str) -> None:
    line = " ".join(message.split())
    print(f"{PROG}: {line}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if args and not args[0].startswith("-"):
            if args[0] not in SUBCOMMANDS:
                raise UsageError(f"unknown subcommand {args[0]!r} (one of: {', '.join(SUBCOMMANDS)})")
            return _run_ops(args[0], args[1:])
        return _run_server(args)
    except UsageError as exc:
        _fail(f"{exc} (see `registry -h`)")
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_OK
    except Exception as exc:  # last resort: still one line, never a traceback
        _fail(f"{type(exc).__name__}: {exc}")
        return EXIT_RUNTIME


if __name__ == "__main__":
    sys.exit(main())
