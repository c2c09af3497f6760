"""Go-style durations ("300ms", "30s", "5m", "1h", "1m30s", or a bare number of seconds), as the
HTTP API's `ttl` field and `wait` parameter and the `-ttl-default` flag take them.

Pure (no aiohttp): the command parses `-ttl-default` with it before anything heavy is imported.
Integer milliseconds out, as `registry.ttl` counts time; a fraction of a millisecond is rounded up
so "0.5ms" is not silently 0."""

from __future__ import annotations

import math
import re

__all__ = ["parse_duration_ms"]

_UNITS_MS = {"ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h)")
_MAX_TEXT = 64


def parse_duration_ms(text: str) -> int:
    """`text` in whole milliseconds (>= 0); ValueError naming the problem in one line."""
    if not isinstance(text, str):
        raise ValueError(f"duration {text!r} is not a string")
    raw = text.strip()
    if not raw or len(raw) > _MAX_TEXT:
        raise ValueError(f"duration {text!r}: use a number of seconds or Go's form (300ms, 30s, 5m, 1h)")
    try:
        seconds = float(raw)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"duration {text!r} must be a non-negative number of seconds")
        return math.ceil(seconds * 1000)
    pos, total = 0, 0.0
    while pos < len(raw):
        m = _PART.match(raw, pos)
        if m is None:
            raise ValueError(f"duration {text!r}: use a number of seconds or Go's form (300ms, 30s, 5m, 1h)")
        total += float(m.group(1)) * _UNITS_MS[m.group(2)]
        pos = m.end()
    if not math.isfinite(total):
        raise ValueError(f"duration {text!r} is too long")
    return math.ceil(total)
