"""A native gRPC front in a process of its own, for tests that measure it from outside (RSS, open
files, log size) or lower its limits: `python native_server_proc.py '{"idle_timeout": 1}'`.

Prints `PORT <n>` once serving; each line read on stdin is answered with the server's counters as
one JSON line. Logs go to stderr (INFO), as a registry's would."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from rpc_fixtures import populate

from registry.catalog import Catalog
from registry.native import start_native


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
    while await reader.readline():
        stats = dataclasses.asdict(server.stats)
        stats["watchers"] = sum(len(w) for w in server.core._watchers.values())
        stats["budget_used"] = getattr(getattr(server, "budget", None), "used", 0)
        print(json.dumps(stats, default=str), flush=True)
    await server.stop(None)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    asyncio.run(main(json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}))
