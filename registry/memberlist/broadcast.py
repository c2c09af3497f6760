"""memberlist's TransmitLimitedQueue: how gossip decides what to piggyback.

Every queued message is sent a limited number of times (RetransmitMult x
ceil(log10(n+1))) so a state change reaches everyone with high probability
without flooding.  Items sent fewer times go first; within one tier the
largest item that still fits is taken, so packets fill up well.  Serf reuses
this queue for its own broadcasts.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass

from .config import retransmit_limit

__all__ = ["TransmitLimitedQueue", "retransmit_limit"]


@dataclass(eq=False, slots=True)
class _Item:
    key: str | None
    msg: bytes
    on_done: Callable[[], None] | None
    ident: int
    transmits: int = 0

    def sort_key(self) -> tuple[int, int, int]:
        # fewest transmits first, then largest, then newest (unique: ident is)
        return (self.transmits, -len(self.msg), -self.ident)


class TransmitLimitedQueue:
    """Queue of broadcasts with per-item retransmit counting.

    Items are kept sorted by `_Item.sort_key` (with the key alongside, for bisect), so taking
    broadcasts walks the list from the front instead of sorting the whole queue per packet."""

    def __init__(self, retransmit_mult: int = 4) -> None:
        self.retransmit_mult = retransmit_mult
        self._items: list[_Item] = []
        self._keys: list[tuple[int, int, int]] = []
        self._sizes: dict[int, int] = {}  # message length -> how many queued (smallest one ends a scan)
        self._by_key: dict[str, _Item] = {}
        self._next_id = 0

    def __len__(self) -> int:
        return len(self._items)

    def queue(self, key: str | None, msg: bytes, on_done: Callable[[], None] | None = None) -> None:
        """Add a message; a queued one with the same non-None key is replaced (and its on_done fired)."""
        if key is not None:
            old = self._by_key.pop(key, None)
            if old is not None:
                self._unlink(old)
                self._forget_size(old)
                if old.on_done is not None:
                    old.on_done()
        self._next_id += 1
        item = _Item(key, msg, on_done, self._next_id)
        self._link(item)
        self._sizes[len(msg)] = self._sizes.get(len(msg), 0) + 1
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
        sent: list[_Item] = []
        smallest = min(self._sizes) + overhead
        for item in self._items:
            size = len(item.msg) + overhead
            if size > free:
                if free < smallest:
                    break  # nothing further can fit either
                continue
            free -= size
            taken.append(item.msg)
            sent.append(item)
            if free <= overhead:
                break
        for item in sent:
            self._unlink(item)
            item.transmits += 1
            if item.transmits >= cap:
                finished.append(item)
                self._forget_size(item)
                if item.key is not None and self._by_key.get(item.key) is item:
                    del self._by_key[item.key]
            else:
                self._link(item)
        for item in finished:
            if item.on_done is not None:
                item.on_done()
        return taken

    def prune(self, max_retain: int) -> None:
        """Drop the most-transmitted items beyond `max_retain` (Serf bounds its queues this way)."""
        if len(self._items) <= max_retain:
            return
        for item in self._items[max_retain:]:
            self._remove(item)
            if item.on_done is not None:
                item.on_done()

    def reset(self) -> None:
        """Forget everything without notifying (shutdown)."""
        self._items.clear()
        self._keys.clear()
        self._sizes.clear()
        self._by_key.clear()

    def _link(self, item: _Item) -> None:
        k = item.sort_key()
        i = bisect.bisect_left(self._keys, k)
        self._keys.insert(i, k)
        self._items.insert(i, item)

    def _unlink(self, item: _Item) -> None:
        i = bisect.bisect_left(self._keys, item.sort_key())
        del self._keys[i]
        del self._items[i]

    def _forget_size(self, item: _Item) -> None:
        ln = len(item.msg)
        left = self._sizes[ln] - 1
        if left:
            self._sizes[ln] = left
        else:
            del self._sizes[ln]

    def _remove(self, item: _Item) -> None:
        self._unlink(item)
        self._forget_size(item)
        if item.key is not None and self._by_key.get(item.key) is item:
            del self._by_key[item.key]
