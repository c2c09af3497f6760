#!/usr/bin/env python3
"""A web service whose health check decides whether it owns keys: break it, its keys fail over; mend it,
they come back (issue 14's worked example; the walk-through is README.md beside this file).

    python examples/failover/service.py -id web-1 -bind :7381 -registries 127.0.0.1:7370 \
        -group web -addr 127.0.0.1:8081

It serves HTTP on -addr and registers with `Register(..., checks=[HttpCheck(<its own /health>)])`:

    GET /         the service id (who owns the key you matched)
    GET /health   200 "ok", or 500 once broken: what the check probes every -interval seconds
    POST /break   /health answers 500 from now on (one request)
    POST /mend    /health answers 200 again

Why an HTTP check on its own /health, and not only gossip: the gossip thread keeps answering pings while the
application behind it is broken, so without a check the pool would keep routing keys to it.  After
-failures-before-critical failed probes in a row the service publishes "critical" in its tags and every
registry takes it off its ring (it stays a member, listed with the reason); after -success-before-passing good
probes it is back, and its keys with it.  Health changes are logged ("health of web-1: critical (...)").
Port 0 in -addr or -bind picks a free port; the line printed once registered shows both.
SIGINT/SIGTERM: leave the pool gracefully, then stop serving.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a checkout too

from registry.register import CheckError, HttpCheck, Register, RegisterError


class App:
    """What the handlers share: the id shown on / and whether /health is broken."""

    def __init__(self, ident: str) -> None:
        self.ident = ident
        self.broken = threading.Event()


def handler_for(app: App) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _answer(self, code: int, text: str) -> None:
            body = f"{text}\n".encode()
            self.send_response(code)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path == "/health":
                if app.broken.is_set():
                    self._answer(500, "broken (POST /mend to fix)")
                else:
                    self._answer(200, "ok")
            elif self.path == "/":
                self._answer(200, app.ident)
            else:
                self._answer(404, "not found: GET / or /health, POST /break or /mend")

        def do_POST(self) -> None:
            if self.path == "/break":
                app.broken.set()
                self._answer(200, f"{app.ident}: /health now answers 500")
            elif self.path == "/mend":
                app.broken.clear()
                self._answer(200, f"{app.ident}: /health now answers 200")
            else:
                self._answer(404, "not found: POST /break or /mend")

        def log_message(self, fmt: str, *args: object) -> None:
            pass  # the check's GET every interval would flood the output

    return Handler


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-id", "--id", required=True)
    p.add_argument("-bind", "--bind", default=":7381", help="gossip bind address")
    p.add_argument("-advertise", "--advertise", default="", help="gossip advertise address")
    p.add_argument("-registries", "--registries", default="127.0.0.1:7370", help="registry gossip addresses")
    p.add_argument("-group", "--group", default="web")
    p.add_argument("-addr", "--addr", default="127.0.0.1:8081", help="HTTP listen address, told to clients")
    p.add_argument("-profile", "--profile", default="lan")
    p.add_argument("-interval", "--interval", type=float, default=1.0, help="seconds between health probes (default 1)")
    p.add_argument("-timeout", "--timeout", type=float, default=1.0, help="seconds a probe may take (default 1)")
    p.add_argument("-failures-before-critical", "--failures-before-critical", type=int, default=2,
                   help="failed probes in a row that make the service critical (default 2; Consul's default is 0)")
    p.add_argument("-success-before-passing", "--success-before-passing", type=int, default=2,
                   help="good probes in a row that make it passing again (default 2; Consul's default is 0)")
    a = p.parse_args()

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s", stream=sys.stdout)
    logging.getLogger("registry.register").setLevel(logging.INFO)  # "health of web-1: ..." lines

    host, _, port = a.addr.rpartition(":")
    app = App(a.id)

    # handlers first: a SIGTERM that arrives while joining still ends in a graceful leave
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())

    try:
        httpd = ThreadingHTTPServer((host or "0.0.0.0", int(port)), handler_for(app))
    except (OSError, ValueError) as exc:
        print(f"failover service: cannot serve HTTP on {a.addr}: {exc}", file=sys.stderr)
        return 1
    httpd.daemon_threads = True
    addr = f"{host or '127.0.0.1'}:{httpd.server_address[1]}"  # port 0 = the kernel picked one: advertise that

    try:  # a bad flag (-interval 0, a bad -bind ...) is a usage error: one line, exit 2, as argparse does
        check = HttpCheck(f"http://{addr}/health", interval=a.interval, timeout=a.timeout,
                          failures_before_critical=a.failures_before_critical,
                          success_before_passing=a.success_before_passing)
        reg = Register(a.id, a.bind, a.advertise, a.registries, a.group, addr, profile=a.profile, checks=[check])
    except (CheckError, RegisterError) as exc:
        httpd.server_close()
        p.error(str(exc))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        reg.start()
    except RegisterError as exc:  # no registry answered, our id is taken, the gossip port is taken
        print(f"failover service: {exc}", file=sys.stderr)
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
