"""Runs a `Replicator` (and its `TtlStore`) on the registry server's asyncio loop.

Why a driver of its own: the store and the replicator are sans-I/O (bytes, time and randomness in;
messages and catalog changes out) so they can be tested exhaustively without sockets. This module is
the thin part that gives them a clock, a timer, a transport and a catalog:

- **Clock**: wall-clock milliseconds (``time.time_ns() // 1_000_000``): stamps and expiry instants
  travel between registries, so every registry must read them on the same (wall) scale; the one timer
  is converted to the loop's monotonic clock when it is armed.
- **Timer**: one ``loop.call_at`` for `Replicator.next_deadline`, re-armed after every input (a local
  write, a peer's message, a member event, the timer itself), so pushes leave at most ``batch_ms`` after
  a write and an entry leaves the ring at its expiry instant, not at the next poll.
- **Transport**: the Serf "app message" channel (memberlist reliable user messages, TCP, encrypted with
  the pool's key when it has one), to the registries whose tags say they speak the replication
  (``repl == "1"``); what the replicator drains after each input is sent at once, the messages for
  one peer *bundled* into as few app messages as fit (`bundle`): each app message is a TCP stream of
  its own, and an anti-entropy answer is one message per group, so a registry joining a pool of 2,000
  entries in 200 groups was sent ~530 streams; memberlist's inbound stream table (128) shed 73 of them,
  lost until a later round. Bundled: 7 streams, none shed, whole 4.1 s after its join instead of 6.2 s
  (the rest is building the rings of 2,000 services of 4096 points; measured with registry processes
  on loopback, LAN profile, the joiner's entries counted from its /metrics).
- **Catalog**: every `Change` becomes ``catalog.apply_ttl`` (the live entry's tags, or None: off the ring).

What a lost message costs: a push that does not arrive (the peer's TCP connection failed, it was
partitioned away, ``send_app`` found it not alive) is repaired by anti-entropy: each registry sends
a digest of its groups to one random peer every ``anti_entropy_ms`` (1 s in the "fast" gossip profile
the tests use, 10 s otherwise), and the groups that differ are exchanged whole. With n registries a
given peer is picked about once per interval by someone, so a lost message delays an entry on one
registry by at most about one anti-entropy interval per peer. A peer newly seen (joined, restarted,
back from a partition) gets a digest at once, so a restarted registry is whole after one round trip.

Readiness (`wait_synced`, `synced`): a registry that joins (or restarts into) a pool holds no TTL
service until its peers' answers arrive, ~0.1 s to seconds after the join; the server says SERVING
only once every peer's first exchange (`Replicator.syncing`) is answered whole, so a Match in between
cannot miss a TTL service every other registry routes to. At once with no peer speaking the
replication (a pool of one, or only Go registries); after `sync_bound_s` whatever happens (a peer
killed without a leave is still "alive" until the failure detector says otherwise, and never
answers), with a warning naming the peers that did not answer.

Faults: an exception inside the timer or the message handler is a bug; it is counted
(``stats["errors"]``, the metric key ``driver.errors``) and logged at ERROR with its traceback, once per
kind (memberlist's `HandlerErrors`: a bug hit by every write logs once, not a thousand times a second,
and the test suite's log check fails on that line), and the timer is armed again regardless, so one bad
record or bug never stops replication or expiry.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

from registry.memberlist.handler_errors import HandlerErrors
from registry.ttl.entry import Entry, Limits, Refused, RefusedReason, entry_tags
from registry.ttl.replicator import ReplConfig, Replicator
from registry.ttl.store import Change, TtlStore

__all__ = ["BUNDLE_BYTES", "REPL_TAG", "AppChannel", "TtlCatalog", "TtlDriver", "bundle", "repl_config", "unbundle"]

log = logging.getLogger("registry.ttl")

#: The tag a registry sets (value "1") to say it holds and replicates TTL services: only such
#: members of the registry group are sent replication messages (a Go registry or an older one is not).
REPL_TAG = "repl"

#: Anti-entropy interval (ms) by gossip profile: the tests' "fast" profile repairs within a second.
_ANTI_ENTROPY_MS = {"fast": 1_000}
_DEFAULT_ANTI_ENTROPY_MS = 10_000


#: At most this many bytes of replication messages travel in one app message (memberlist refuses a
#: reliable user message over 1 MiB; a single message is at most `ReplConfig.max_message_bytes`).
BUNDLE_BYTES = 900 * 1024
_LEN = 4  # each message in a bundle: its length (4 bytes, big-endian), then its bytes


def bundle(messages: Iterable[bytes], limit: int = BUNDLE_BYTES) -> list[bytes]:
    """`messages` framed into app message payloads of at most `limit` bytes each (a message longer
    than that alone in its own), in order."""
    out: list[bytes] = []
    current = bytearray()
    for message in messages:
        if current and len(current) + _LEN + len(message) > limit:
            out.append(bytes(current))
            current = bytearray()
        current += len(message).to_bytes(_LEN, "big")
        current += message
    if current:
        out.append(bytes(current))
    return out


def unbundle(payload: bytes) -> list[bytes] | None:
    """The messages of one app message payload; None if it is not a well-formed bundle (hostile
    bytes: every length is checked against what is left)."""
    messages: list[bytes] = []
    view = memoryview(payload)
    pos = 0
    while pos < len(view):
        if len(view) - pos < _LEN:
            return None
        size = int.from_bytes(view[pos:pos + _LEN], "big")
        pos += _LEN
        if size > len(view) - pos:
            return None
        messages.append(bytes(view[pos:pos + size]))
        pos += size
    return messages


def wall_ms() -> int:
    """Wall-clock milliseconds since the epoch: the scale of every stamp and expiry instant."""
    return time.time_ns() // 1_000_000


def repl_config(profile: str) -> ReplConfig:
    """The replication settings for a registry of gossip profile `profile`."""
    return ReplConfig(anti_entropy_ms=_ANTI_ENTROPY_MS.get(profile, _DEFAULT_ANTI_ENTROPY_MS))


class _Member(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def tags(self) -> Mapping[str, str]: ...
    @property
    def status(self) -> object: ...


class AppChannel(Protocol):
    """What the driver needs of the Serf agent: the member table and the app message channel."""

    def members(self) -> Iterable[_Member]: ...
    def send_app(self, name: str, payload: bytes) -> bool: ...
    def set_app_handler(self, handler: Callable[[bytes], None] | None) -> None: ...


class TtlCatalog(Protocol):
    """What the driver needs of the catalog."""

    def apply_ttl(self, updates: Iterable[tuple[str, str, Mapping[str, str] | None]]) -> None: ...
    def holds_gossip(self, group: str, id: str) -> bool: ...


def _is_alive(status: object) -> bool:
    from registry.serf.member import MemberStatus

    return status == MemberStatus.ALIVE


class TtlDriver:
    """The TTL services of one registry: local writes (the HTTP front), replication, expiry.

    Every method runs on the server's loop (the HTTP front's handlers, the agent's callbacks)."""

    def __init__(self, name: str, catalog: TtlCatalog, agent: AppChannel, *, group: str,
                 config: ReplConfig | None = None, limits: Limits | None = None,
                 clock: Callable[[], int] = wall_ms, rng: random.Random | None = None) -> None:
        self.name = name
        self.limits = limits if limits is not None else Limits()
        self.stats: collections.Counter[str] = collections.Counter()
        # never strict: a bug in replication must not stop the registry's loop (it is still logged)
        self._errors = HandlerErrors(self.stats, log, strict=False)
        self.store = TtlStore(name, self.limits)
        self.replicator = Replicator(self.store, config if config is not None else ReplConfig(),
                                     rng if rng is not None else random.Random())
        self._catalog = catalog
        self._agent = agent
        self._group = group
        self._clock = clock
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_ms: int | None = None
        self._peers: frozenset[str] = frozenset()
        self._closed = False
        self._synced = False
        self._sync_wanted = False  # someone asked (synced_now): from then on `synced` latches
        self._sync_event = asyncio.Event()
        agent.set_app_handler(self._on_message)
        self.refresh_peers()

    # -- what the HTTP front calls ---------------------------------------------------------

    def write(self, group: str, id: str, *, addr: str, ttl_ms: int, tags: Mapping[str, str] | None = None,
              replicas: int | None = None, weight: int | None = None, doc: bytes = b"") -> Entry:
        """Register or refresh (group, id); the entry as stored (its stamp is the write's). `Refused`
        (nothing changed) if it is out of bounds, the group or the store is full, or the id is a
        gossiping member's in that group (that one owns the name: TAKEN)."""
        if self._catalog.holds_gossip(group, id):
            raise Refused(RefusedReason.TAKEN, f"id {id!r} is a gossiping member of group {group!r}")
        now = self._clock()
        entry, changes = self.store.write(group, id, addr=addr, ttl_ms=ttl_ms, now_ms=now, tags=tags,
                                          replicas=replicas, weight=weight, doc=doc)
        self.stats["writes"] += 1
        self._after_local(entry, changes, now)
        return entry

    def delete(self, group: str, id: str) -> bool:
        """Remove (group, id) everywhere (a tombstone replicated like a write); False if not held live."""
        now = self._clock()
        tombstone, changes = self.store.delete(group, id, now_ms=now)
        if tombstone is None:
            return False
        self.stats["deletes"] += 1
        self._after_local(tombstone, changes, now)
        return True

    def entries(self, group: str) -> list[Entry]:
        """The live entries of `group`, sorted by id."""
        return self.store.live(group, now_ms=self._clock())

    def entry(self, group: str, id: str) -> Entry | None:
        """The live entry (group, id), or None (unknown, deleted or expired)."""
        held = self.store.get(group, id)
        return held if held is not None and held.alive(self._clock()) else None

    # -- what the server calls -------------------------------------------------------------

    def refresh_peers(self) -> None:
        """Recompute the registries to replicate to from the member table (on every member event
        and on the server's reconcile loop): alive members of the registry group tagged repl=1."""
        if self._closed:
            return
        peers = frozenset(
            m.name for m in self._agent.members()
            if m.name != self.name and _is_alive(m.status)
            and m.tags.get("group") == self._group and m.tags.get(REPL_TAG) == "1"
        )
        if peers == self._peers:
            return
        self._peers = peers

        def step(now_ms: int) -> list[Change]:
            self.replicator.set_peers(sorted(peers), now_ms=now_ms)
            return []

        self._guarded("peers", step)

    def members_changed(self, members: Iterable[_Member]) -> None:
        """A member event: recompute the peers only if it concerns a registry (a pool of thousands of
        gossiping services must not cost a scan of the member table per service event)."""
        if any(m.name in self._peers or m.tags.get("group") == self._group for m in members):
            self.refresh_peers()

    @property
    def peers(self) -> frozenset[str]:
        return self._peers

    @property
    def synced(self) -> bool:
        """Whether the first exchange after the join is over (`wait_synced` returned); latched."""
        return self._synced

    @property
    def sync_bound_s(self) -> float:
        """How long `wait_synced` waits at most: two anti-entropy intervals, at least 5 s."""
        return max(2 * self.replicator.config.anti_entropy_ms, 5_000) / 1000.0

    def synced_now(self) -> bool:
        """`synced`, after looking at the member table (the one the join brought, whatever member
        events are still queued): True at once when no peer's first exchange is open (no peer)."""
        if not self._synced:
            self._sync_wanted = True
            self.refresh_peers()
            self._check_synced()
        return self._synced

    async def wait_synced(self, bound_s: float | None = None) -> bool:
        """Wait until this registry holds what its peers (the registries in the member table now)
        hold: every peer's first exchange answered whole. True then (at once without a peer); False
        after `bound_s` (default `sync_bound_s`) without it, logged with the peers that did not
        answer. `synced` is True from then on either way (a dead peer must never keep a registry
        NOT_SERVING)."""
        if self.synced_now():
            return True
        bound = self.sync_bound_s if bound_s is None else bound_s
        try:
            await asyncio.wait_for(self._sync_event.wait(), bound)
            return True
        except asyncio.TimeoutError:
            if self._synced:
                return True
            waiting = sorted(self.replicator.syncing())
            self.stats["sync.timeouts"] += 1
            log.warning("ttl: serving without the TTL services of peers that did not answer within %.1fs: %s",
                        bound, ", ".join(waiting))
            self._synced = True
            self._sync_event.set()
            return False

    def now_ms(self) -> int:
        """This driver's clock (wall ms): what `entries` and expiry compare against."""
        return self._clock()

    def counters(self) -> dict[str, int]:
        """The store's, the replicator's and the driver's counters in one mapping (the metric
        ``registry_ttl_events_total{key}``), each prefixed by its part so no two collide."""
        out: dict[str, int] = {}
        for prefix, stats in (("store.", self.store.stats), ("replicator.", self.replicator.stats),
                              ("driver.", self.stats)):
            for key, value in stats.items():
                out[prefix + key] = value
        return out

    def close(self) -> None:
        """Stop the timer and the handler; the store is dropped with the driver (nothing persists)."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        with contextlib.suppress(Exception):
            self._agent.set_app_handler(None)

    # -- inputs ----------------------------------------------------------------------------

    def _after_local(self, entry: Entry, changes: list[Change], now: int) -> None:
        """A local write or tombstone was stored: push it, show it, re-arm the timer. The write
        itself already succeeded, so a failure here is a bug to log, not the caller's error."""
        def step(now_ms: int) -> list[Change]:
            self.replicator.wrote(entry, now_ms=now_ms)
            return changes

        self._guarded("write", step, now)

    def _on_message(self, payload: bytes) -> None:
        """A peer's message (hostile bytes: the replicator checks everything). The agent calls this
        inside memberlist's handling of the stream; the work (a merge of thousands of entries, the
        answers it sends) runs in a callback of its own, so sending never re-enters the gossip core."""
        self.stats["messages.received"] += 1
        self._loop.call_soon(self._guarded, "message", lambda now: self._receive(payload, now))

    def _receive(self, payload: bytes, now: int) -> list[Change]:
        messages = unbundle(payload)
        if messages is None:
            self.stats["drop.malformed_bundle"] += 1
            return []
        unknown = self.replicator.stats["drop.unknown_sender"]
        changes: list[Change] = []
        for message in messages:
            changes += self.replicator.receive(message, now_ms=now)
        if self.replicator.stats["drop.unknown_sender"] != unknown:
            # a registry that spoke before its member event reached us: look again; if it is one now,
            # set_peers sends it a digest at once, which repairs what the dropped message carried
            self.refresh_peers()
        return changes

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_ms = None
        self._guarded("timer", lambda now: self.replicator.tick(now_ms=now))

    def _guarded(self, what: str, step: Callable[[int], list[Change]], now: int | None = None) -> None:
        """Run one input, apply its changes, send its output and re-arm the timer, whatever fails."""
        if self._closed:
            return
        try:
            changes = step(self._clock() if now is None else now)
            self._apply(changes)
        except Exception as exc:  # noqa: BLE001 - a bug is counted and logged, the timer still re-armed
            self._errors.periodic_failed(exc, f"ttl replication ({what})", "errors")
        try:
            self._send()
        except Exception as exc:  # noqa: BLE001 - a bug is counted and logged, the timer still re-armed
            self._errors.periodic_failed(exc, f"ttl replication send ({what})", "errors")
        self._check_synced()
        self._arm()

    def _check_synced(self) -> None:
        """Latch `synced` once someone waits and no peer's first exchange is open."""
        if self._sync_wanted and not self._synced and not self.replicator.syncing():
            self._synced = True
            self.stats["sync.done"] += 1
            self._sync_event.set()

    def _apply(self, changes: list[Change]) -> None:
        if changes:
            self._catalog.apply_ttl(
                [(c.group, c.id, entry_tags(c.entry) if c.entry is not None else None) for c in changes]
            )

    def _send(self) -> None:
        by_peer: dict[str, list[bytes]] = {}
        for peer, message in self.replicator.drain():
            by_peer.setdefault(peer, []).append(message)
        for peer, messages in by_peer.items():
            for payload in bundle(messages):
                if self._agent.send_app(peer, payload):
                    self.stats["messages.sent"] += 1
                else:  # gone since the last member event: anti-entropy repairs it when it is back
                    self.stats["messages.unsent"] += 1

    def _arm(self) -> None:
        """One timer, at the replicator's next deadline (wall ms, converted to loop time)."""
        if self._closed:
            return
        try:
            deadline = self.replicator.next_deadline()
        except Exception as exc:  # noqa: BLE001 - polled again in 1 s, so expiry and pushes go on
            self._errors.periodic_failed(exc, "ttl replication (next_deadline)", "errors")
            deadline = self._clock() + 1_000
        if deadline == self._timer_ms and self._timer is not None:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._timer_ms = None
        if deadline is None:
            return
        delay = max(0.0, (deadline - self._clock()) / 1000.0)
        self._timer = self._loop.call_at(self._loop.time() + delay, self._on_timer)
        self._timer_ms = deadline
