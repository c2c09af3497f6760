"""A service for the chaos suite: embeds `register.Register`, nothing else.

    python service_main.py ID BIND REGISTRIES GROUP ADDR PROFILE

Prints "registered ID" once joined (the suite waits for that line), leaves gracefully on
SIGTERM.  No HTTP server: the suite only needs a gossip member with a group and an address.
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from typing import cast

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout, whatever the cwd

from registry.memberlist.config import Profile
from registry.register import Register


def main(argv: list[str]) -> int:
    ident, bind, registries, group, addr, profile = argv
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    reg = Register(ident, bind, "", registries, group, addr, profile=cast("Profile", profile))  # Register checks it
    reg.start()
    print(f"registered {ident}", flush=True)
    done.wait()
    reg.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
