"""Query bookkeeping (docs/wire.md §14.2): parameters, filters, the default timeout, and the
originator's collection of acks and responses."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from . import messages as msgs

__all__ = [
    "QueryHandle",
    "QueryItem",
    "QueryParams",
    "default_query_timeout",
    "encode_filters",
    "filters_pass",
]


def default_query_timeout(gossip_interval: float, mult: int, n_members: int) -> float:
    """GossipInterval x QueryTimeoutMult x ceil(log10(N + 1)), N = alive memberlist members."""
    return gossip_interval * mult * math.ceil(math.log10(n_members + 1))


@dataclass
class QueryParams:
    filter_nodes: list[str] = field(default_factory=list)
    #: tag -> regular expression (searched, like Go's regexp.MatchString) the tag's value must match
    filter_tags: dict[str, str] = field(default_factory=dict)
    request_ack: bool = False
    relay_factor: int = 0
    #: seconds; 0 = the default formula
    timeout: float = 0.0


def encode_filters(params: QueryParams) -> list[bytes]:
    out: list[bytes] = []
    if params.filter_nodes:
        out.append(msgs.encode_node_filter(params.filter_nodes))
    for tag, expr in params.filter_tags.items():
        out.append(msgs.encode_tag_filter(tag, expr))
    return out


def filters_pass(filters: list[bytes], name: str, tags: Mapping[str, str]) -> bool:
    """All filters must pass; an unreadable filter or a bad regexp fails (as in Go)."""
    for raw in filters:
        try:
            kind, arg = msgs.decode_filter(raw)
        except msgs.SerfDecodeError:
            return False
        if kind == msgs.FilterType.NODE:
            if name not in arg:
                return False
        else:
            tag, expr = arg
            try:
                if re.search(expr, tags.get(tag, "")) is None:
                    return False
            except re.error:
                return False
    return True


@dataclass(frozen=True)
class QueryItem:
    """One ack (`ack=True`, no payload) or response from node `from_`."""

    from_: str
    payload: bytes
    ack: bool = False


class QueryHandle:
    """The originator's side of one query: open until `deadline` (core clock), then closed.

    Acks and responses are de-duplicated per sender; `listener` (set by the driver) is called
    with each new item and with None once when the query closes.
    """

    def __init__(
        self, ltime: int, qid: int, name: str, deadline: float, expected: int
    ) -> None:
        self.ltime = ltime
        self.id = qid
        self.name = name
        self.deadline = deadline
        #: members in the cluster when the query started (Go's numNodes for key commands)
        self.expected = expected
        self.acks: list[str] = []
        self.responses: list[QueryItem] = []
        self.closed = False
        self.listener: Callable[[QueryItem | None], None] | None = None
        self._ack_from: set[str] = set()
        self._resp_from: set[str] = set()

    def add(self, resp: msgs.QueryResponseMsg) -> bool:
        """Record a response; False if closed, mismatched or a duplicate."""
        if self.closed or resp.id != self.id:
            return False
        if resp.ack:
            if resp.from_ in self._ack_from:
                return False
            self._ack_from.add(resp.from_)
            self.acks.append(resp.from_)
            item = QueryItem(resp.from_, b"", True)
        else:
            if resp.from_ in self._resp_from:
                return False
            self._resp_from.add(resp.from_)
            item = QueryItem(resp.from_, resp.payload or b"")
            self.responses.append(item)
        if self.listener is not None:
            self.listener(item)
        return True

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.listener is not None:
            self.listener(None)
