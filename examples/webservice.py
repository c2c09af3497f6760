#!/usr/bin/env python3
"""A web service that registers itself with the registry pool and serves HTTP on its addr.

    python examples/webservice.py -id webservice-1 -bind :7380 -registries 127.0.0.1:7370 \
        -group webservice -addr 127.0.0.1:8080

GET / answers with the service id, so a client that matched a key can see who owns it.
Port 0 in -addr or -bind picks a free port; the line printed once registered shows both.
SIGINT/SIGTERM: leave the pool gracefully, then stop serving.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout too

from registry.register import Register, RegisterError


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-id", "--id", required=True)
    p.add_argument("-bind", "--bind", default=":7380", help="gossip bind address")
    p.add_argument("-advertise", "--advertise", default="", help="gossip advertise address")
    p.add_argument("-registries", "--registries", default="127.0.0.1:7370", help="registry gossip addresses")
    p.add_argument("-group", "--group", default="webservice")
    p.add_argument("-addr", "--addr", default="127.0.0.1:8080", help="HTTP listen address, told to clients")
    p.add_argument("-profile", "--profile", default="lan")
    a = p.parse_args()

    host, _, port = a.addr.rpartition(":")
    ident = a.id

    class Hello(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = f"{ident}\n".encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, fmt: str, *args: object) -> None:
            pass

    # handlers first: a SIGTERM that arrives while joining still ends in a graceful leave
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())

    httpd = ThreadingHTTPServer((host or "0.0.0.0", int(port)), Hello)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    addr = f"{host}:{httpd.server_address[1]}"  # port 0 = the kernel picked one: advertise that

    reg = Register(a.id, a.bind, a.advertise, a.registries, a.group, addr, profile=a.profile)
    try:
        reg.start()
    except RegisterError as exc:
        print(f"webservice: {exc}", file=sys.stderr)
        httpd.shutdown()
        return 1
    print(f"{a.id} registered in {a.group}, serving http://{addr}/ (gossip {reg.address})", flush=True)

    done.wait()
    reg.stop()
    httpd.shutdown()
    print(f"{a.id} left", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
