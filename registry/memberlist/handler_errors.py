"""What happens when a message handler raises: counted, logged once per kind, raised if strict.

By the time a handler runs, the codec has already refused malformed input and counted it as
"drop.<reason>" (garbage is never a handler error).  An exception *inside* a handler is a bug:
ours, or a delegate's (Serf's handlers run as memberlist's delegate).  A running node must not
stop for it (one bad message, repeated by every peer, would take the whole pool down), so it is
counted as "drop.handler_error"; but a counter alone hides the bug, so the first failure of each
kind is logged with its traceback.  A kind is the message type, the exception type and the line
that raised: a flood of the same failure logs once while the counter keeps counting, and a
second, different bug still gets its own log line.  Kinds are bounded by the code, not the input.

In `strict` mode (Config.strict: the simulator and the tests) the exception is raised to the
caller instead, so a test cannot pass on a handler bug.

Timers are handlers of time: a timer or gossip round that raises is counted under its own key
("timer.errors", "gossip.errors"; the other timers still run), logged once per kind and raised
when strict, by the same rules.
"""

from __future__ import annotations

import collections
import logging
import types

__all__ = ["HANDLER_ERROR", "HandlerErrors"]

#: The stats key every handler failure is counted under.
HANDLER_ERROR = "drop.handler_error"


def _raise_site(tb: types.TracebackType | None) -> tuple[str, int]:
    """File and line of the innermost frame of `tb`: where the bug is."""
    if tb is None:
        return ("?", 0)
    while tb.tb_next is not None:
        tb = tb.tb_next
    return (tb.tb_frame.f_code.co_filename, tb.tb_lineno)


class HandlerErrors:
    """Counts, logs (once per kind) and, when `strict`, re-raises handler exceptions."""

    def __init__(self, stats: collections.Counter[str], log: logging.Logger, *, strict: bool) -> None:
        self.stats = stats
        self.log = log
        #: raise instead of counting and logging (tests and the simulator set it)
        self.strict = strict
        self._logged: set[tuple[str, type[BaseException], tuple[str, int]]] = set()

    @property
    def count(self) -> int:
        return self.stats[HANDLER_ERROR]

    def failed(self, exc: Exception, kind: str, source: object) -> None:
        """Call from the `except` block around a handler: `kind` names the message handled,
        `source` where it came from.  Raises `exc` again when strict."""
        self._count(exc, f"handler for {kind}", f" from {source}", HANDLER_ERROR)

    def periodic_failed(self, exc: Exception, kind: str, counter: str) -> None:
        """Call from the `except` block around due timers or a gossip round: `kind` names it
        ("memberlist timer"), `counter` is the stats key it is counted under."""
        self._count(exc, kind, "", counter)

    def _count(self, exc: Exception, kind: str, detail: str, counter: str) -> None:
        self.stats[counter] += 1
        if self.strict:
            raise exc
        key = (kind, type(exc), _raise_site(exc.__traceback__))
        if key in self._logged:
            return
        self._logged.add(key)
        self.log.error(
            "%s%s failed: %s: %s (counted in %s; later failures of this kind are only counted)",
            kind,
            detail,
            type(exc).__name__,
            exc,
            counter,
            exc_info=exc,
        )
