"""Serf queries on the sans-I/O core (docs/wire.md §14, serf.go's Query/handleQuery): asking,
answering, and relaying answers.

A query is gossiped like a user event (de-duplicated per Lamport time in a ring of
`query_buffer` slots, ordered by `clock`), but each node that passes its filters answers
straight to the asker, optionally through `relay_factor` other members.  Queries whose name
starts with `INTERNAL_QUERY_PREFIX` are Serf's own (name conflicts, key management): they go
to the handler registered for their operation instead of the application.
"""

from __future__ import annotations

import collections
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from registry.memberlist.core import Memberlist
from registry.memberlist.timers import TimerHeap
from registry.memberlist.types import Address, ip_from_bytes, ip_to_bytes

from . import messages as msgs
from .clock import LamportRing
from .config import SerfConfig
from .events import Event, QueryEvent
from .member import MemberStatus
from .membership import Membership
from .query import (
    QueryHandle,
    QueryParams,
    default_query_timeout,
    encode_filters,
    filters_pass,
)

__all__ = ["INTERNAL_QUERY_PREFIX", "Queries"]

INTERNAL_QUERY_PREFIX = "_serf_"


@dataclass
class _QuerySlot:
    """One slot of the query ring: the query ids seen at one Lamport time (dedup)."""

    ltime: int
    ids: list[int] = field(default_factory=list)


class Queries:
    """Queries asked and answered by one Serf node (see module docstring)."""

    def __init__(
        self,
        config: SerfConfig,
        memberlist: Memberlist,
        members: Membership,
        *,
        stats: collections.Counter[str],
        timers: TimerHeap,
        rng: random.Random,
        emit: Callable[[Event], None],
        wake: Callable[[], None],
        broadcast: Callable[[bytes], None],
        deliver_local: Callable[[bytes], None],
        tags: Callable[[], Mapping[str, str]],
        shut_down: Callable[[], bool],
        encrypted: Callable[[], bool],
    ) -> None:
        """`broadcast` gossips an encoded query, `deliver_local` takes an answer to a query we
        asked ourselves (as if it came from the network), `shut_down` says whether the node
        stopped (late answers are refused), `encrypted` whether gossip is encrypted (relays are
        then trusted)."""
        self.config = config
        self.memberlist = memberlist
        self.name = memberlist.config.name
        self._ring: LamportRing[_QuerySlot, int] = LamportRing(
            config.query_buffer, _QuerySlot, lambda slot: slot.ids, stats, "queries.too_old"
        )
        #: orders queries
        self.clock = self._ring.clock
        self._members = members
        self._stats = stats
        self._timers = timers
        self._rng = rng
        self._emit = emit
        self._wake = wake
        self._broadcast = broadcast
        self._deliver_local = deliver_local
        self._tags = tags
        self._shut_down = shut_down
        self._encrypted = encrypted
        self._open: dict[int, QueryHandle] = {}
        #: internal query operation (name after the prefix) -> its handler
        self.internal: dict[str, Callable[[QueryEvent], None]] = {}

    @property
    def now(self) -> float:
        return self.memberlist.now

    def close_all(self) -> None:
        """Close every open query (shutdown)."""
        for h in list(self._open.values()):
            h.close()
        self._open.clear()

    def default_query_timeout(self) -> float:
        return default_query_timeout(
            self.memberlist.config.gossip_interval,
            self.config.query_timeout_mult,
            self.memberlist.num_members(),
        )

    def query(
        self, name: str, payload: bytes, now: float, params: QueryParams | None = None
    ) -> QueryHandle:
        """Start a query; responses accumulate on the returned handle until its deadline."""
        self.memberlist.now = max(self.memberlist.now, now)
        if self.config.protocol_version < 4:
            raise ValueError("queries need Serf protocol 4 or newer")
        params = params or QueryParams()
        timeout = params.timeout if params.timeout > 0 else self.default_query_timeout()
        local = self.memberlist.local_node
        q = msgs.QueryMsg(
            ltime=self.clock.time(),
            id=self._rng.getrandbits(31),
            addr=ip_to_bytes(local.addr),
            port=local.port,
            source_node=self.name,
            filters=encode_filters(params),
            flags=msgs.QueryFlag.ACK if params.request_ack else 0,
            relay_factor=params.relay_factor,
            timeout=round(timeout * 1e9),
            name=name,
            payload=bytes(payload),
        )
        raw = msgs.encode(q)
        if len(raw) > self.config.query_size_limit:
            raise ValueError(
                f"query exceeds limit of {self.config.query_size_limit} bytes"
            )
        handle = QueryHandle(
            q.ltime, q.id, name, self.now + timeout, self.memberlist.num_members()
        )
        self._open[q.ltime] = handle

        def expire(_now: float) -> None:
            if self._open.get(handle.ltime) is handle:
                del self._open[handle.ltime]
            handle.close()
            self._wake()

        self._timers.schedule(handle.deadline, expire)
        self.handle(q)
        self._broadcast(raw)
        return handle

    def handle(self, q: msgs.QueryMsg) -> bool:
        """A query arrived (or we asked it): answer it if it is new and its filters pass.
        True when it is to be passed on (new, and not sent with NO_BROADCAST)."""
        if not self._ring.record(q.ltime, q.id):
            return False
        rebroadcast = not q.no_broadcast
        if not filters_pass(q.filters, self.name, self._tags()):
            return rebroadcast
        try:
            dest = Address(ip_from_bytes(q.addr), q.port)
        except ValueError:
            self._stats["serf.drop.bad_query_addr"] += 1
            return rebroadcast
        if not 0 < q.port <= 0xFFFF:  # no socket can send there: answering would only fail in the driver
            self._stats["serf.drop.bad_query_addr"] += 1
            return rebroadcast
        if q.ack:
            ack = msgs.encode(
                msgs.QueryResponseMsg(
                    q.ltime, q.id, self.name, msgs.QueryFlag.ACK, None
                )
            )
            self._send_response(dest, ack)
            self._relay_response(q.relay_factor, dest, q.source_node, ack)
        deadline = self.now + q.timeout / 1e9
        responded = [False]

        def respond(payload: bytes) -> bool:
            if self._shut_down() or self.now > deadline or responded[0]:
                self._stats["query.respond_refused"] += 1
                return False
            out = msgs.encode(
                msgs.QueryResponseMsg(q.ltime, q.id, self.name, 0, bytes(payload))
            )
            if len(out) > self.config.query_response_size_limit:
                self._stats["query.response_too_large"] += 1
                return False
            responded[0] = True
            self._send_response(dest, out)
            self._relay_response(q.relay_factor, dest, q.source_node, out)
            self._wake()  # a driver must flush now: the answer may come from a task, outside any input
            return True

        event = QueryEvent(
            q.ltime, q.id, q.name, q.payload, q.source_node, deadline, respond
        )
        if q.name.startswith(INTERNAL_QUERY_PREFIX):
            self._answer_internal(event)
        else:
            self._emit(event)
        return rebroadcast

    def _send_response(self, dest: Address, raw: bytes) -> None:
        if dest == self.memberlist.advertise:
            self._deliver_local(raw)  # a query we sent ourselves: no need for the network
        else:
            self.memberlist.send_best_effort(dest, raw, self.now)

    def _relay_response(
        self, factor: int, dest: Address, dest_name: str, raw: bytes
    ) -> None:
        if factor <= 0:
            return
        if len(self._members) < factor + 1:
            return
        ms = self._members.get(dest_name)
        if not self._encrypted() and (
            ms is None or ms.member.addr != dest.host or ms.member.port != dest.port
        ):
            # the asker is no member at that address: relaying would send relay_factor more
            # copies to an address anyone may have written into the query (reflection)
            self._stats["query.relay_unverified"] += 1
            return
        candidates = [
            ms.member
            for ms in self._members.states()
            if ms.member.status == MemberStatus.ALIVE
            and ms.member.name != self.name
            and (ms.member.vsn[1:2] or b"\0")[0] >= 5
        ]
        self._rng.shuffle(candidates)
        header = msgs.RelayHeader(ip_to_bytes(dest.host), dest.port, dest_name)
        frame = msgs.encode_relay(header, raw)
        for m in candidates[:factor]:
            self.memberlist.send_best_effort(Address(m.addr, m.port), frame, self.now)
            self._stats["query.relayed"] += 1

    def handle_relay(self, msg: bytes) -> None:
        header, inner = msgs.decode_relay(msg)
        try:
            dest = Address(ip_from_bytes(header.dest_ip), header.dest_port)
        except ValueError:
            self._stats["serf.drop.bad_relay_addr"] += 1
            return
        if not 0 < header.dest_port <= 0xFFFF:
            self._stats["serf.drop.bad_relay_addr"] += 1
            return
        self._send_response(dest, inner)

    def handle_response(self, resp: msgs.QueryResponseMsg) -> None:
        handle = self._open.get(resp.ltime)
        if handle is None:
            self._stats["query.response_unknown"] += 1
            return
        if handle.add(resp):
            self._wake()

    def _answer_internal(self, event: QueryEvent) -> None:
        handler = self.internal.get(event.name[len(INTERNAL_QUERY_PREFIX) :])
        if handler is None:
            self._stats["query.internal_unknown"] += 1
            return
        handler(event)
