"""Joining a gossip pool, the same for every driver: reading the targets a person gave,
resolving them, and tallying each target's push/pull into a count, or into one `JoinError`
that names every address and why.

A join is judged per target: it succeeds if any target answered with a state that merged,
and otherwise the error must say, for each address, what went wrong (refused, timed out, a
name that does not resolve, a malformed address), because that is all the operator has to go
on.  The asyncio node (`node.MemberlistNode`, `serf.agent.SerfAgent`) and the thread-driven
`serf.threaded.ThreadedSerf` differ only in how they wait for the outcome; they share this.
No asyncio here: the thread driver uses it without paying for asyncio and ssl.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable

from registry.addresses import is_ip, lookup_ips, loopback_if_wildcard, parse_join_address

from .driver import StreamDone
from .types import Address

__all__ = ["JoinError", "JoinTally", "needs_lookup", "parse_address", "resolve_now", "resolve_targets_now"]

log = logging.getLogger(__name__)

#: One join target as the node dials it: the label the operator recognises, and an IP address.
Target = tuple[str, Address]


class JoinError(ConnectionError):
    """No address answered a join; `failures` maps each address text to why."""

    def __init__(self, failures: dict[str, str]) -> None:
        self.failures = dict(failures)
        detail = "; ".join(f"{addr}: {why}" for addr, why in self.failures.items()) or "no addresses given"
        super().__init__(f"failed to join any node ({detail})")


def parse_address(text: str, default_port: int) -> Address:
    """A join target ("host:port", "name/host:port", "[v6]:port", "host", a bare IPv6 literal
    or ":port"); see `registry.addresses.parse_join_address`.  ValueError when malformed."""
    hp = parse_join_address(text, default_port)
    return Address(hp.host, hp.port)


def resolve_now(addr: Address) -> list[Address]:
    """All A/AAAA records of a DNS name (an IP literal stands for itself), in resolver order;
    blocks while a name is looked up."""
    return [Address(ip, addr.port) for ip in lookup_ips(addr.host, addr.port)]


def _dial_target(item: str | Address, default_port: int) -> Address:
    """The address to resolve for one target; a wildcard host dials this machine."""
    if isinstance(item, Address):
        return item
    parsed = parse_address(item, default_port)
    return Address(loopback_if_wildcard(parsed.host), parsed.port)


def needs_lookup(items: Iterable[str | Address], default_port: int) -> bool:
    """Whether resolving `items` asks DNS (some target is a name): an event loop then resolves
    them off the loop."""
    for item in items:
        try:
            if not is_ip(_dial_target(item, default_port).host):
                return True
        except ValueError:
            continue
    return False


def resolve_targets_now(items: Iterable[str | Address], default_port: int) -> tuple[list[Target], dict[str, str]]:
    """Join targets as IP addresses, each labelled with its text (and its IP when a name has
    several), and the texts that gave none, with why.  Blocks while names are looked up."""
    failures: dict[str, str] = {}
    targets: list[Target] = []
    for item in items:
        text = str(item)
        try:
            found = resolve_now(_dial_target(item, default_port))
        except (ValueError, OSError) as exc:  # UsageError and UnicodeError are ValueErrors
            failures[text] = str(exc) or type(exc).__name__
            continue
        if not found:
            failures[text] = "no IP addresses found"
        targets.extend((text if len(found) == 1 else f"{text} ({a})", a) for a in found)
    return targets, failures


class JoinTally:
    """The outcome of one join: every target's push/pull, recorded as its stream ends (on the
    driver's turn), read at the end as a count or a `JoinError`.  `on_settled()` is called once
    every stream started has ended."""

    def __init__(self, failures: dict[str, str], on_settled: Callable[[], None]) -> None:
        self._failures = dict(failures)
        self._on_settled = on_settled
        self._labels: list[str] = []
        self._outcomes: list[tuple[bool, str] | None] = []
        self._pending = 0
        self._starting = False

    def begin(
        self, targets: Iterable[Target], join: Callable[[Address], list[int]], watch: Callable[[int, StreamDone], None]
    ) -> None:
        """Start a push/pull with every target: `join(address)` asks the machine (its stream
        ids back), `watch(stream_id, done)` has the driver report each one's end.  Call it on
        the machine's turn, before its outputs are drained."""
        self._starting = True
        try:
            for label, addr in targets:
                for sid in join(addr):
                    self._labels.append(label)
                    self._outcomes.append(None)
                    self._pending += 1
                    watch(sid, functools.partial(self._record, len(self._outcomes) - 1))
        finally:
            self._starting = False
        if self._pending == 0:
            self._on_settled()

    def _record(self, slot: int, accepted: bool, error: str) -> None:
        if self._outcomes[slot] is not None:
            return
        self._outcomes[slot] = (accepted, error)
        self._pending -= 1
        if self._pending == 0 and not self._starting:
            self._on_settled()

    def result(self, unanswered: str = "no answer") -> int:
        """How many targets answered with a state that merged; JoinError naming every target
        and why when none did.  A target whose stream has not ended is failed with `unanswered`."""
        failures = dict(self._failures)
        ok = 0
        for label, outcome in zip(self._labels, list(self._outcomes)):
            if outcome is None:
                failures[label] = unanswered
            elif outcome[0]:
                ok += 1
            else:
                failures[label] = outcome[1] or "refused"
        if ok == 0:
            raise JoinError(failures)
        for label, why in failures.items():
            log.info("join: %s failed: %s", label, why)
        return ok
