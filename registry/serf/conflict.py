"""Name conflicts (docs/wire.md §14.4; serf.go's handleNodeConflict/resolveNodeConflict, conflict_delegate.go).

memberlist refuses a second node claiming a name it already holds alive and reports it
here (it is memberlist's `ConflictDelegate`).  When the name is ours, Serf asks the pool (`_serf_conflict`) which address each
member holds for it, and the claimant without a majority shuts down.  The same part answers
that query for others.
"""

from __future__ import annotations

import collections
from collections.abc import Callable

from registry.memberlist.types import Node, ip_to_bytes

from . import messages as msgs
from .config import SerfConfig
from .events import QueryEvent
from .member import SerfState
from .membership import Membership
from .query import QueryHandle

__all__ = ["NameConflicts"]


class NameConflicts:
    """Detects, resolves and answers name conflicts (see module docstring)."""

    def __init__(
        self,
        config: SerfConfig,
        local: Callable[[], Node],
        members: Membership,
        *,
        stats: collections.Counter[str],
        local_state: Callable[[], SerfState],
        during_join: Callable[[], bool],
        ask: Callable[[str, bytes], QueryHandle],
        shutdown: Callable[[], None],
    ) -> None:
        """`local` is memberlist's node for us; `during_join` says whether a join's reply is
        being merged; `ask(name, payload)` starts a query; `shutdown` stops the node when it
        lost."""
        self.config = config
        self._local = local
        self._members = members
        self._stats = stats
        self._local_state = local_state
        self._during_join = during_join
        self._ask = ask
        self._shutdown = shutdown
        self._pending: QueryHandle | None = None
        #: set when a name conflict was lost (Go shuts the node down)
        self.lost = False
        #: the node holding our name alive at another address, as a join's reply showed it: that
        #: peer kept the holder and refused our alive (the join still counts, as in Go, and the
        #: conflict query decides; an embedding SDK can refuse to start instead)
        self.taken_by: Node | None = None

    def notify_conflict(self, existing: Node, other: Node) -> None:
        """memberlist refused `other`, which claims `existing`'s name."""
        self._stats["conflict.seen"] += 1
        name = self._local().name
        if existing.name == name and self._during_join():
            # A join's reply lists our name alive at another address: that peer (like every
            # member that knows the holder) refused our alive.  Known before the join returns,
            # where the conflict query below takes a query timeout to say so.
            self._stats["conflict.on_join"] += 1
            self.taken_by = other
        if existing.name != name or not self.config.enable_name_conflict_resolution:
            return
        if self._local_state() != SerfState.ALIVE or self._pending is not None:
            return
        self._resolve()

    def answer(self, event: QueryEvent) -> None:
        """Answer another node's `_serf_conflict`: the member we hold under that name."""
        node = event.payload.decode("utf-8", errors="replace")
        if node == self._local().name:
            return
        ms = self._members.get(node)
        cm = None
        if ms is not None:
            m = ms.member
            cm = msgs.ConflictMember(m.name, ip_to_bytes(m.addr), m.port, dict(m.tags), int(m.status), m.vsn)
        event.respond(msgs.encode_conflict_response(cm))

    def _resolve(self) -> None:
        self._stats["conflict.resolving"] += 1
        local = self._local()
        handle = self._ask("conflict", local.name.encode())
        self._pending = handle

        def on_item(item: object) -> None:
            if item is not None:
                return
            self._pending = None
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
                self._stats["conflict.won"] += 1
                return
            if responses == 0 and self.taken_by is None:
                # Nobody could vote: claimants never answer about their own name, so in a pool of two
                # (two registries, say) only the two claimants exist.  Go's serf then shuts down both,
                # and a misconfigured newcomer takes the gossip of the healthy incumbent with it.  No
                # vote against us is no majority against us: the incumbent keeps its name.  The
                # newcomer knows it is the newcomer (its join's reply showed the holder alive:
                # name_taken_by), and loses as in Go.
                self._stats["conflict.unopposed"] += 1
                return
            self._stats["conflict.lost"] += 1
            self.lost = True
            self._shutdown()

        handle.listener = on_item
