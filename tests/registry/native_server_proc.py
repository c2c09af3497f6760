"""A native gRPC front in a process of its own, for tests that measure it from outside (RSS, open
files, log size) or lower its limits: `python native_server_proc.py '{"idle_timeout": 1}'`.

Prints `PORT <n>` once serving; each line read on stdin is answered with the server's counters as
one JSON line ("change" instead: one catalog change, answered with the event-loop time it took). Logs go to stderr (INFO), as a registry's would."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout: `tests` and `registry`, whatever the cwd

from registry.catalog import Catalog
from registry.native import start_native
from tests.registry.rpc_fixtures import GROUP, populate, tags


async def main(options: dict[str, object]) -> None:
    catalog = Catalog()
    populate(catalog)
    kwargs: dict[str, object] = {}
    if options:
        from registry.native_limits import Limits

        kwargs["limits"] = Limits(**options)  # type: ignore[arg-type]
    server = await start_native(catalog, "127.0.0.1:0", **kwargs)  # type: ignore[arg-type]
    print(f"PORT {server.port}", flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    changes = 0
    while line := await reader.readline():
        if line.strip() == b"change":  # one catalog change; how long the event loop spent fanning it out
            changes += 1
            t0 = time.perf_counter()
            catalog.apply(f"extra-{changes}", tags(GROUP, f"10.9.0.{changes % 250}:80"))
            for _ in range(3):
                await asyncio.sleep(0)
            print(json.dumps({"change_s": time.perf_counter() - t0}), flush=True)
            continue
        stats = dataclasses.asdict(server.stats)
        stats["watchers"] = sum(len(w) for w in server.core._watchers.values())
        stats["budget_used"] = getattr(getattr(server, "budget", None), "used", 0)
        print(json.dumps(stats, default=str), flush=True)
    await server.stop(None)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    asyncio.run(main(json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}))
