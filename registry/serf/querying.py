"""Serf queries on the sans-I/O core: asking, answering, relaying answers, and the internal
queries (name conflicts, key management) -- docs/wire.md §14 and §15.

`QueryRules` is a mixin of `Serf` (split out of core.py to keep modules small); it uses the
node's clocks, tables and queues, declared below, and never touches a socket.
"""

from __future__ import annotations

import collections
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from registry.memberlist.broadcast import TransmitLimitedQueue
from registry.memberlist.core import Memberlist
from registry.memberlist.timers import TimerHeap
from registry.memberlist.types import Address, Node, ip_from_bytes, ip_to_bytes

from . import keyring as keys
from . import messages as msgs
from .clock import LamportClock
from .config import SerfConfig
from .events import Event, QueryEvent
from .member import MemberState, MemberStatus, SerfState
from .query import (
    QueryHandle,
    QueryParams,
    default_query_timeout,
    encode_filters,
    filters_pass,
)

__all__ = ["INTERNAL_QUERY_PREFIX", "QueryRules"]

INTERNAL_QUERY_PREFIX = "_serf_"


@dataclass
class _QuerySlot:
    """One slot of the query ring: the query ids seen at one Lamport time (dedup)."""

    ltime: int
    ids: list[int] = field(default_factory=list)


class QueryRules:
    """Queries for `Serf` (see module docstring)."""

    config: SerfConfig
    memberlist: Memberlist
    stats: collections.Counter[str]
    rng: random.Random
    state: SerfState
    name: str
    query_clock: LamportClock
    keyring_file: str | None
    conflict_lost: bool
    name_taken_by: Node | None
    _members: dict[str, MemberState]
    _tags: dict[str, str]
    _timers: TimerHeap
    _queries: dict[int, QueryHandle]
    _query_buffer: list[_QuerySlot | None]
    _query_min_time: int
    _query_broadcasts: TransmitLimitedQueue
    _conflict_query: QueryHandle | None

    if TYPE_CHECKING:  # provided by Serf

        @property
        def now(self) -> float: ...

        def shutdown(self) -> None: ...

        def encryption_enabled(self) -> bool: ...

        def notify_msg(self, msg: bytes) -> None: ...

        def _wake(self) -> None: ...

        def _emit(self, event: Event) -> None: ...

        def _queue(
            self, q: TransmitLimitedQueue, raw: bytes, on_done: Callable[[], None] | None = None
        ) -> None: ...

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
            ltime=self.query_clock.time(),
            id=self.rng.getrandbits(31),
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
        self._queries[q.ltime] = handle

        def expire(_now: float) -> None:
            if self._queries.get(handle.ltime) is handle:
                del self._queries[handle.ltime]
            handle.close()
            self._wake()

        self._timers.schedule(handle.deadline, expire)
        self._handle_query(q, raw)
        self._queue(self._query_broadcasts, raw)
        return handle



    def _handle_query(self, q: msgs.QueryMsg, raw: bytes) -> bool:
        self.query_clock.witness(q.ltime)
        if q.ltime < self._query_min_time:
            return False
        size = len(self._query_buffer)
        cur = self.query_clock.time()
        if cur > size and q.ltime < cur - size:
            self.stats["queries.too_old"] += 1
            return False
        idx = q.ltime % size
        slot = self._query_buffer[idx]
        if slot is not None and slot.ltime == q.ltime:
            if q.id in slot.ids:
                return False
        else:
            slot = _QuerySlot(q.ltime)
            self._query_buffer[idx] = slot
        slot.ids.append(q.id)
        rebroadcast = not q.no_broadcast
        if not filters_pass(q.filters, self.name, self._tags):
            return rebroadcast
        try:
            dest = Address(ip_from_bytes(q.addr), q.port)
        except ValueError:
            self.stats["serf.drop.bad_query_addr"] += 1
            return rebroadcast
        if not 0 < q.port <= 0xFFFF:  # no socket can send there: answering would only fail in the driver
            self.stats["serf.drop.bad_query_addr"] += 1
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
            if self.state == SerfState.SHUTDOWN or self.now > deadline or responded[0]:
                self.stats["query.respond_refused"] += 1
                return False
            out = msgs.encode(
                msgs.QueryResponseMsg(q.ltime, q.id, self.name, 0, bytes(payload))
            )
            if len(out) > self.config.query_response_size_limit:
                self.stats["query.response_too_large"] += 1
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
            self._handle_internal_query(event)
        else:
            self._emit(event)
        return rebroadcast

    def _send_response(self, dest: Address, raw: bytes) -> None:
        if dest == self.memberlist.advertise:
            self.notify_msg(raw)  # a query we sent ourselves: no need for the network
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
        if not self.encryption_enabled() and (
            ms is None or ms.member.addr != dest.host or ms.member.port != dest.port
        ):
            # the asker is no member at that address: relaying would send relay_factor more
            # copies to an address anyone may have written into the query (reflection)
            self.stats["query.relay_unverified"] += 1
            return
        candidates = [
            ms.member
            for ms in self._members.values()
            if ms.member.status == MemberStatus.ALIVE
            and ms.member.name != self.name
            and (ms.member.vsn[1:2] or b"\0")[0] >= 5
        ]
        self.rng.shuffle(candidates)
        header = msgs.RelayHeader(ip_to_bytes(dest.host), dest.port, dest_name)
        frame = msgs.encode_relay(header, raw)
        for m in candidates[:factor]:
            self.memberlist.send_best_effort(Address(m.addr, m.port), frame, self.now)
            self.stats["query.relayed"] += 1

    def _handle_relay(self, msg: bytes) -> None:
        header, inner = msgs.decode_relay(msg)
        try:
            dest = Address(ip_from_bytes(header.dest_ip), header.dest_port)
        except ValueError:
            self.stats["serf.drop.bad_relay_addr"] += 1
            return
        if not 0 < header.dest_port <= 0xFFFF:
            self.stats["serf.drop.bad_relay_addr"] += 1
            return
        self._send_response(dest, inner)

    def _handle_query_response(self, resp: msgs.QueryResponseMsg) -> None:
        handle = self._queries.get(resp.ltime)
        if handle is None:
            self.stats["query.response_unknown"] += 1
            return
        if handle.add(resp):
            self._wake()

    def _handle_internal_query(self, event: QueryEvent) -> None:
        op = event.name[len(INTERNAL_QUERY_PREFIX) :]
        if op == "ping":
            return
        if op == "conflict":
            node = event.payload.decode("utf-8", errors="replace")
            if node == self.name:
                return
            ms = self._members.get(node)
            cm = None
            if ms is not None:
                m = ms.member
                cm = msgs.ConflictMember(
                    m.name,
                    ip_to_bytes(m.addr),
                    m.port,
                    dict(m.tags),
                    int(m.status),
                    m.vsn,
                )
            event.respond(msgs.encode_conflict_response(cm))
            return
        key_ops = {
            "install-key": "install",
            "use-key": "use",
            "remove-key": "remove",
            "list-keys": "list",
        }
        if op not in key_ops:
            self.stats["query.internal_unknown"] += 1
            return
        kr = self.memberlist.codec.keyring if self.encryption_enabled() else None
        resp = keys.answer_key_query(key_ops[op], event.payload, kr, self.keyring_file)
        if key_ops[op] == "list" and resp.result:

            def wrapped(p: bytes) -> int:
                return len(
                    msgs.encode(
                        msgs.QueryResponseMsg(event.ltime, event.id, self.name, 0, p)
                    )
                )

            resp = keys.fit_list_response(
                resp, self.config.query_response_size_limit, wrapped
            )
        event.respond(msgs.encode_key_response(resp))
        self._wake()

    def _resolve_conflict(self) -> None:
        self.stats["conflict.resolving"] += 1
        handle = self.query(
            INTERNAL_QUERY_PREFIX + "conflict", self.name.encode(), self.now
        )
        self._conflict_query = handle
        local = self.memberlist.local_node

        def on_item(item: object) -> None:
            if item is not None:
                return
            self._conflict_query = None
            responses = matching = 0
            for r in handle.responses:
                try:
                    cm = msgs.decode_conflict_response(r.payload)
                except msgs.SerfDecodeError:
                    continue
                if cm is None:
                    continue
                responses += 1
                if cm.addr == ip_to_bytes(local.addr) and cm.port == local.port:
                    matching += 1
            if matching >= responses // 2 + 1:
                self.stats["conflict.won"] += 1
                return
            if responses == 0 and self.name_taken_by is None:
                # Nobody could vote: claimants never answer about their own name, so in a pool of two
                # (two registries, say) only the two claimants exist.  Go's serf then shuts down both,
                # and a misconfigured newcomer takes the gossip of the healthy incumbent with it.  No
                # vote against us is no majority against us: the incumbent keeps its name.  The
                # newcomer knows it is the newcomer (its join's reply showed the holder alive:
                # name_taken_by), and loses as in Go.
                self.stats["conflict.unopposed"] += 1
                return
            self.stats["conflict.lost"] += 1
            self.conflict_lost = True
            self.shutdown()

        handle.listener = on_item
