"""memberlist's TransmitLimitedQueue: how gossip decides what to piggyback.

Every queued message is sent a limited number of times (RetransmitMult x
ceil(log10(n+1))) so a state change reaches everyone with high probability
without flooding.  Items sent fewer times go first; within one tier the
largest item that still fits is taken, so packets fill up well.  Serf reuses
this queue for its own broadcasts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .config import retransmit_limit

__all__ = ["TransmitLimitedQueue", "retransmit_limit"]


@dataclass
class _Item:
    key: str | None
    msg: bytes
    on_done: Callable[[], None] | None
    ident: int
    transmits: int = 0

    def sort_key(self) -> tuple[int, int, int]:
        # fewest transmits first, then largest, then newest
        return (self.transmits, -len(self.msg), -self.ident)


class TransmitLimitedQueue:
    """Queue of broadcasts with per-item retransmit counting."""

    def __init__(self, retransmit_mult: int = 4) -> None:
        self.retransmit_mult = retransmit_mult
        self._items: list[_Item] = []
        self._by_key: dict[str, _Item] = {}
        self._next_id = 0

    def __len__(self) -> int:
        return len(self._items)

    def queue(self, key: str | None, msg: bytes, on_done: Callable[[], None] | None = None) -> None:
        """Add a message; a queued one with the same non-None key is replaced (and its on_done fired)."""
        if key is not None:
            old = self._by_key.pop(key, None)
            if old is not None:
                self._items.remove(old)
                if old.on_done is not None:
                    old.on_done()
        self._next_id += 1
        item = _Item(key, msg, on_done, self._next_id)
        self._items.append(item)
        if key is not None:
            self._by_key[key] = item

    def get_broadcasts(self, overhead: int, limit: int, n_nodes: int) -> list[bytes]:
        """Take messages whose sizes plus `overhead` each fit in `limit` bytes."""
        if not self._items:
            return []
        cap = retransmit_limit(self.retransmit_mult, n_nodes)
        free = limit
        taken: list[bytes] = []
        finished: list[_Item] = []
        for item in sorted(self._items, key=_Item.sort_key):
            size = len(item.msg) + overhead
            if size > free:
                continue
            free -= size
            taken.append(item.msg)
            item.transmits += 1
            if item.transmits >= cap:
                finished.append(item)
            if free <= overhead:
                break
        for item in finished:
            self._remove(item)
            if item.on_done is not None:
                item.on_done()
        return taken

    def prune(self, max_retain: int) -> None:
        """Drop the most-transmitted items beyond `max_retain` (Serf bounds its queues this way)."""
        if len(self._items) <= max_retain:
            return
        ordered = sorted(self._items, key=_Item.sort_key)
        for item in ordered[max_retain:]:
            self._remove(item)
            if item.on_done is not None:
                item.on_done()

    def reset(self) -> None:
        """Forget everything without notifying (shutdown)."""
        self._items.clear()
        self._by_key.clear()

    def _remove(self, item: _Item) -> None:
        self._items.remove(item)
        if item.key is not None and self._by_key.get(item.key) is item:
            del self._by_key[item.key]
