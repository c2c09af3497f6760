"""The `registry` command's ops subcommands: members, groups, match, keygen, version.

Apart from `registry.cli` (the server's flags and the entry point) because they share nothing
with running a server but the flag conventions: each talks gRPC to a running registry through
`registry.client`, imported only when a subcommand runs, so starting a server never loads it.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from collections.abc import Sequence
from typing import Any

from registry.addresses import (
    HostPort,
    UsageError,
    loopback_if_wildcard,
    parse_hostport,
)
from registry.catalog import REGISTRY_GROUP, ServiceKind
from registry.cliargs import (
    DEFAULT_RPC_PORT,
    EXIT_OK,
    EXIT_RUNTIME,
    PROG,
    Parser,
    add_flag,
    dialable,
    positive_seconds,
    print_error,
    readable_file,
)
from registry.datacenter import datacenter_problem
from registry.healthtags import TAG_HEALTH, TAG_HEALTH_NOTE, Health

__all__ = ["HEALTHS", "KINDS", "MAX_MATCH_N", "MEMBER_STATUSES", "rpc_targets", "run"]

# Not imported from registry.api: that imports asyncio, which must be loaded after the command
# decides whether to hide ssl from it (cli._import_asyncio_without_ssl). A test checks they agree.
MAX_MATCH_N = 1000  # the server's limit, checked before calling it
#: Serf's member statuses, as `serf members` prints them (registry.serf.member.MemberStatus).
MEMBER_STATUSES = ("alive", "leaving", "left", "failed")
#: A service's health, as its checks set it.
HEALTHS = tuple(h.word for h in Health)
#: How a service is in the pool: it gossips, or the registries hold it for a TTL (HTTP registrations).
KINDS = tuple(k.value for k in ServiceKind)


_OPS_HELP = {
    "members": (
        "List every member of every group (or of -group G) that the registry's gossip pool knows, "
        "as `serf members` does: one line each, ID GROUP ADDR STATUS HEALTH KIND TAGS, sorted by group and "
        "id. STATUS is alive, leaving (it announced its departure), left (it departed) or failed (it "
        "stopped answering); left and failed members stay listed until the pool reaps them. HEALTH is "
        "what the service's checks say: passing, warning or critical (a service without checks, or a "
        "Go one, is passing); a service that is not passing has its reason at the end of its line, "
        "note=\"...\". Only alive members are in the rings, and of those not the critical ones (nor "
        "warning ones on a registry run with -only-passing): Match never returns the others. KIND is "
        "gossip (the service gossips: a Register, a Go service) or ttl (it registered over HTTP and the "
        "registries hold it while it refreshes its TTL; always alive: it is gone when its TTL lapses) or "
        "external:ADAPTER (imported by the -adapter of that name: a file, etcd, ...; gone when its source "
        "drops it). TAGS "
        "omits the health tags (they are the HEALTH column and the note). The registries themselves "
        f"are the members of the group {REGISTRY_GROUP!r}; pool members whose tags name no group are "
        "not services and are not listed."
    ),
    "groups": f"List the groups that have live members, {REGISTRY_GROUP!r} (the registries) included.",
    "match": "Print the service owning KEY in GROUP (with -n N, the N distinct owners in ring order): "
             "ID GROUP ADDR TAGS.",
}


def _ops_parser(name: str) -> argparse.ArgumentParser:
    p = Parser(prog=f"{PROG} {name}", allow_abbrev=False, description=_OPS_HELP.get(name))
    add_flag(p, "rpc", default=f"127.0.0.1:{DEFAULT_RPC_PORT}",
          help="gRPC address of a registry, or several separated by commas to fail over (default 127.0.0.1:9800)")
    add_flag(p, "timeout", default=5.0, type=positive_seconds, help="seconds per call (default 5)")
    add_flag(p, "tls-ca", default="", help="verify the registry's certificate with this CA bundle")
    add_flag(p, "tls-cert", default="", help="client certificate (PEM), for servers started with -tls-ca")
    add_flag(p, "tls-key", default="", help="client key (PEM)")
    if name in ("members", "groups", "match"):
        add_flag(p, "dc", default="",
                 help="answer for this datacenter, from the registry's copy of it over the WAN pool "
                      "(default: the registry's own)")
    return p


def _datacenter(ns: argparse.Namespace) -> str:
    """-dc, checked now: a name that cannot be a datacenter is a usage error, not NOT_FOUND."""
    dc: str = ns.dc
    if dc:
        problem = datacenter_problem(dc)
        if problem is not None:
            raise UsageError(f"-dc {problem}")
    return dc


def _say_datacenter(name: str, services: Sequence[Any], always: bool) -> None:
    """On stderr (stdout keeps its columns): which datacenter answered when it may not be the one
    asked (-failover), and how stale the registry's copy of it is when it is."""
    if not services:
        return
    dc, stale = getattr(services[0], "datacenter", ""), getattr(services[0], "stale_seconds", 0.0)
    if dc and always:
        print(f"{PROG} {name}: answered by datacenter {dc}", file=sys.stderr)
    if dc and stale > 0:
        print(f"{PROG} {name}: datacenter {dc}: the registry's copy is {stale:.1f}s stale "
              f"(its registries unreachable)", file=sys.stderr)


def rpc_targets(text: str) -> list[str]:
    """-rpc: `host:port`, `host` (port 9800) or `:port` (this machine), comma-separated to fail over."""
    out = []
    for part in text.split(","):
        if not part.strip():
            continue
        # resolved now, as -bind and -addr are: a typo is a usage error naming it, not UNAVAILABLE
        hp = parse_hostport(part, "-rpc", default_port=DEFAULT_RPC_PORT, resolve=True)
        hp = dialable(hp, "-rpc", part.strip())
        out.append(str(HostPort(loopback_if_wildcard(hp.host), hp.port)))
    if not out:
        raise UsageError("-rpc: empty address")
    return out


def _client(ns: argparse.Namespace) -> Any:
    targets = rpc_targets(ns.rpc)
    for flag, path in (("-tls-ca", ns.tls_ca), ("-tls-cert", ns.tls_cert), ("-tls-key", ns.tls_key)):
        if path:
            readable_file(path, flag)
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
    """ID GROUP ADDR STATUS HEALTH KIND TAGS, columns aligned (`serf members` prints NAME ADDR STATUS
    TAGS), and a non-passing service's note last, quoted (it is free text: spaces, commas)."""
    rows = [(s.id, s.group, s.addr, s.status or "alive", _health(s), _kind_text(s), _tags_text(s, health=False))
            for s in services]
    if not rows:
        return
    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    for r, s in zip(rows, services):
        line = "  ".join(c.ljust(w) for c, w in zip(r[:6], widths)) + "  " + r[6]
        note = getattr(s, "health_note", "")
        if r[4] != "passing" and note:
            line += "  note=" + json.dumps(note, ensure_ascii=False)
        print(line)


def _health(s: Any) -> str:
    """The service's health word; "passing" from a registry older than health routing."""
    return getattr(s, "health", "") or "passing"


def _kind(s: Any) -> str:
    """The service's kind; "gossip" from a registry older than TTL services (it has no other kind)."""
    return getattr(s, "kind", "") or ServiceKind.GOSSIP.value


def _kind_text(s: Any) -> str:
    """The KIND column: the kind, and for an imported service the adapter it came from (external:file)."""
    origin = getattr(s, "origin", "")
    return f"{_kind(s)}:{origin}" if origin else _kind(s)


def _all_members(c: Any, group: str, dc: str = "") -> list[Any]:
    """Members(group, all=True): every member with its status.

    A registry older than the `all` field ignores it and answers with the live ring members,
    status empty (printed as alive, which they are), and refuses the group "" that means
    "every group": then each group it names is asked in turn."""
    from registry.client import InvalidArgument, NotFound

    kw = {"datacenter": dc} if dc else {}
    try:
        return list(c.members(group, all=True, **kw))
    except InvalidArgument:
        if group:
            raise
    services: list[Any] = []
    for g in c.groups(**kw):
        try:
            services.extend(c.members(g, all=True, **kw))
        except NotFound:  # emptied since Groups answered
            continue
    return services


def _tags_text(s: Any, health: bool = True) -> str:
    tags = dict(getattr(s, "tags", None) or {})
    if not health:
        tags.pop(TAG_HEALTH, None)
        tags.pop(TAG_HEALTH_NOTE, None)
    if not tags:
        tags = {"group": getattr(s, "group", ""), "addr": s.addr}
    return ",".join(f"{k}={v}" for k, v in sorted(tags.items()))


def run(name: str, argv: Sequence[str]) -> int:
    if name == "keygen":
        Parser(prog=f"{PROG} keygen", allow_abbrev=False).parse_args(list(argv))
        import secrets  # here, not at the top: it loads hashlib and OpenSSL's libcrypto

        print(base64.b64encode(secrets.token_bytes(32)).decode("ascii"))
        return EXIT_OK
    if name == "version":
        Parser(prog=f"{PROG} version", allow_abbrev=False).parse_args(list(argv))
        from registry import __version__

        print(f"registry {__version__}")
        return EXIT_OK
    p = _ops_parser(name)
    if name == "members":
        add_flag(p, "group", default="", help="only this group (default: every group)")
        add_flag(p, "status", default="", choices=MEMBER_STATUSES, help="only members with this status")
        add_flag(p, "health", default="", choices=HEALTHS, help="only services with this health")
        add_flag(p, "kind", default="", choices=KINDS, help="only services of this kind")
    elif name == "match":
        p.add_argument("group")
        p.add_argument("key")
        add_flag(p, "n", default=1, type=int,
              help=f"how many distinct services, in ring order (1 to {MAX_MATCH_N}, default 1)")
        add_flag(p, "failover", action="store_true",
                 help="when the datacenter has no service of GROUP to route to, answer from the nearest "
                      "datacenter that has (which one is said on stderr)")
    ns = p.parse_args(list(argv))
    dc = _datacenter(ns)
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
        print_error(f"the gRPC client is not available: {exc}")
        return EXIT_RUNTIME
    try:
        with _client(ns) as c:
            if name == "groups":
                for g in c.groups(datacenter=dc):
                    print(g)
            elif name == "members":
                services = _all_members(c, ns.group, dc)
                _print_members([s for s in services if (not ns.status or (s.status or "alive") == ns.status)
                                and (not ns.health or _health(s) == ns.health)
                                and (not ns.kind or _kind(s) == ns.kind)])
                _say_datacenter(name, services, False)
            else:
                found = list(c.match_n(ns.group, ns.key, ns.n, datacenter=dc, failover=ns.failover))
                _print_services(found)
                _say_datacenter(name, found, ns.failover)
    except RegistryError as exc:
        print_error(f"{name}: {exc}")
        return EXIT_RUNTIME
    return EXIT_OK
