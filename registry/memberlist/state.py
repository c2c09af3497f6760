"""The order of incarnation numbers, which the state rules (membership.py) compare.

Incarnation numbers order the claims about a node; only the node itself raises
its own (refutation), which is how a wrongly accused node clears its name.

Forged incarnations (issue 11, item 7).  memberlist compares incarnations as plain uint32s
and refutes at ``accused + 1``: one forged ``dead`` at 2**32-1 wedges its victim for good
(Go's refutation wraps to 0 and is ignored until the dead node is reaped; ours became 2**32,
which no decoder accepts).  We do better, in two ways that agree with Go on every
incarnation an honest cluster produces:

* Incarnations are compared in RFC 1982 serial-number order modulo 2**32 (`inc_newer`):
  ``a`` is newer than ``b`` when ``0 < (a - b) mod 2**32 < 2**31``.  Honest incarnations
  are small and only grow by one per refutation, so this is the plain order for them; but
  2**32-1 is now *older* than a live node's incarnation (ignored), and a node can always
  refute: ``accused + 1`` wraps past 2**32-1 (skipping 0) and is newer than the accusation.
* An accusation by someone else (suspect, dead with ``From != Node``) never raises the
  incarnation we record for a node: it applies at the incarnation the node itself last
  announced (its alive, or its own leave), and is passed on in that form.  So a forged
  accusation spreads at most at the victim's real incarnation, and the victim's ordinary
  refutation at ``known + 1`` beats it everywhere, Go peers included.  The cost: when our
  record is stale, an honest accusation at a newer incarnation applies to the older one;
  the node's newer alive (gossip, or the next push/pull) still overrides it.
"""

from __future__ import annotations

__all__ = ["inc_newer", "next_inc"]

_INC_SPACE = 1 << 32
_INC_HALF = 1 << 31


def inc_newer(a: int, b: int) -> bool:
    """Incarnation `a` is later than `b` in serial-number order mod 2**32 (module docstring)."""
    d = (a - b) % _INC_SPACE
    return 0 < d < _INC_HALF


def next_inc(inc: int) -> int:
    """The incarnation after `inc` (wrapping past 2**32-1 to 1: 0 means "never announced")."""
    return (inc + 1) % _INC_SPACE or 1
