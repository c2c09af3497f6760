"""A misbehaving adapter for the host's isolation tests, loaded by a real entry point
(``hang = tests.adapters.hang_adapter:HangAdapter``, declared by a dist-info the test writes).

``mode``: "sleep" (time.sleep forever on its own loop), "busy" (a pure-Python busy loop forever),
"raise" (raises at once, every run). Each run first imports one service, ``hang/<mode>-<run>``, so the
test sees it ran (and, for "raise", that it was run again)."""

from __future__ import annotations

import time

from registry.adapters.base import AdapterContext, ExternalService


class HangAdapter:
    def __init__(self, mode: str = "sleep") -> None:
        if mode not in ("sleep", "busy", "raise"):
            raise ValueError(f"mode={mode!r}: sleep, busy or raise")
        self.name = "hang"
        self.mode = mode
        self.runs = 0

    async def run(self, ctx: AdapterContext) -> None:
        self.runs += 1
        ctx.imports.upsert(ExternalService("hang", f"{self.mode}-{self.runs}", "127.0.0.1:1"))
        if self.mode == "raise":
            raise RuntimeError(f"hang adapter: run {self.runs} fails on purpose")
        if self.mode == "sleep":
            while True:
                time.sleep(3600)
        n = 0
        while True:  # busy: holds the GIL whenever the interpreter lets it
            n += 1
