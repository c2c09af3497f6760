#!/usr/bin/env python3
"""The asyncio flavour of webservice.py: `AsyncRegister` plus an asyncio HTTP responder.

    python examples/async_webservice.py -id webservice-2 -bind :7381 -registries 127.0.0.1:7370 \
        -group webservice -addr 127.0.0.1:8081
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout too

from registry.register import AsyncRegister, RegisterError


async def serve(a: argparse.Namespace) -> int:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            body = f"{a.id}\n".encode()
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()

    host, _, port = a.addr.rpartition(":")
    http = await asyncio.start_server(handle, host or None, int(port))
    addr = f"{host}:{http.sockets[0].getsockname()[1]}"  # port 0 = the kernel picked one: advertise that
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with AsyncRegister(a.id, a.bind, a.advertise, a.registries, a.group, addr, profile=a.profile) as reg:
            print(f"{a.id} registered in {a.group}, serving http://{addr}/ (gossip {reg.address})", flush=True)
            await stop.wait()
    except RegisterError as exc:
        print(f"async_webservice: {exc}", file=sys.stderr)
        return 1
    finally:
        http.close()
        await http.wait_closed()
    print(f"{a.id} left", flush=True)
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-id", "--id", required=True)
    p.add_argument("-bind", "--bind", default=":7381")
    p.add_argument("-advertise", "--advertise", default="")
    p.add_argument("-registries", "--registries", default="127.0.0.1:7370")
    p.add_argument("-group", "--group", default="webservice")
    p.add_argument("-addr", "--addr", default="127.0.0.1:8081")
    p.add_argument("-profile", "--profile", default="lan")
    return asyncio.run(serve(p.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
