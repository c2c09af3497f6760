#!/usr/bin/env python3
"""Match 1000 user ids to the web services that own them, and show the spread.

    python examples/match_client.py -registries 127.0.0.1:9800 -group webservice

With -cache the client keeps a local copy of each group's ring (kept fresh by Watch)
and answers Match without a round trip.  -fetch also GETs each owner's page once.
"""

from __future__ import annotations

import argparse
import collections
import sys
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout too

from registry.client import RegistryError, RpcClient


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-registries", "--registries", default="127.0.0.1:9800", help="registry gRPC addresses")
    p.add_argument("-group", "--group", default="webservice")
    p.add_argument("-count", "--count", type=int, default=1000)
    p.add_argument("-cache", "--cache", action="store_true")
    p.add_argument("-fetch", "--fetch", action="store_true", help="GET / from every owner once")
    p.add_argument("-timeout", "--timeout", type=float, default=5.0, help="seconds per call (default 5)")
    a = p.parse_args()

    owners: collections.Counter[str] = collections.Counter()
    addrs: dict[str, str] = {}
    try:
        with RpcClient(a.registries.split(","), cache=a.cache, timeout=a.timeout) as c:
            for i in range(a.count):
                svc = c.match(a.group, f"user-{i}")
                owners[svc.id] += 1
                addrs[svc.id] = svc.addr
    except RegistryError as exc:
        print(f"client: {exc}", file=sys.stderr)
        return 1
    for sid, n in sorted(owners.items()):
        line = f"{sid:<24} {addrs[sid]:<22} {n:>6} keys"
        if a.fetch:
            with urllib.request.urlopen(f"http://{addrs[sid]}/", timeout=a.timeout) as r:
                line += f"   GET / -> {r.read().decode().strip()}"
        print(line)
    print(f"total {sum(owners.values())} keys over {len(owners)} services")
    return 0


if __name__ == "__main__":
    sys.exit(main())
