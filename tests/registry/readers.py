"""Readers on other threads while the test's thread writes: what the lock-free read paths
(Catalog.match, a Ring snapshot's lookups) are tested with."""

from __future__ import annotations

import threading
from collections.abc import Callable


def reads_during(read: Callable[[], None], write: Callable[[], None], readers: int = 2) -> int:
    """Run `read` in a loop on `readers` threads while `write` runs here; fail with the readers'
    exceptions (an assert inside `read` is one), and return how many reads completed (> 0: the
    readers did run alongside the writer)."""
    stop = threading.Event()
    errors: list[BaseException] = []
    reads = [0]

    def reader() -> None:
        try:
            while not stop.is_set():
                read()
                reads[0] += 1
        except BaseException as exc:  # noqa: BLE001 - a reader thread's failure is reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(readers)]
    for t in threads:
        t.start()
    try:
        write()
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert not errors, errors
    assert reads[0] > 0
    return reads[0]
