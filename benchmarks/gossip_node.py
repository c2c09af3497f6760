#!/usr/bin/env python3
"""One Python gossip node for the benchmarks, observable without interfering.

    python benchmarks/gossip_node.py --name n1 --bind 127.0.0.1:7946 [--join 127.0.0.1:7947] [--impl auto]

It prints one line per membership change in the same words `serf agent` logs, so the
harness parses both alike (lines are time-stamped by the harness on arrival):

    serf: EventMemberJoin: <name> <addr>      serf: EventMemberFailed: <name> <addr>
    serf: EventMemberLeave: <name> <addr>     READY <name> <host:port> <impl>

Commands are read from stdin, one per line: `join host:port`, `leave`, `quit`.
`--impl auto` uses registry.serf.agent.SerfAgent when it imports, else
registry.memberlist.node.MemberlistNode.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def split_hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


async def run_serf(args: argparse.Namespace) -> None:
    from registry.memberlist.config import Config
    from registry.serf.agent import SerfAgent
    from registry.serf.config import SerfConfig
    from registry.serf.events import EventType, MemberEvent

    host, port = split_hostport(args.bind)
    ml = Config.profile(args.profile).replace(name=args.name, bind_addr=host, bind_port=port)
    agent: Any = SerfAgent(SerfConfig(name=args.name, memberlist=ml))
    words = {
        EventType.MEMBER_JOIN: "EventMemberJoin",
        EventType.MEMBER_FAILED: "EventMemberFailed",
        EventType.MEMBER_LEAVE: "EventMemberLeave",
        EventType.MEMBER_REAP: "EventMemberReap",
    }

    def on_event(ev: Any) -> None:
        if isinstance(ev, MemberEvent) and ev.type in words:
            for m in ev.members:
                say(f"serf: {words[ev.type]}: {m.name} {m.addr}")

    agent.add_handler(on_event)
    await agent.start()
    say(f"READY {args.name} {args.bind} serf")

    async def do_join(addr: str) -> Any:
        return await agent.join([addr])

    await command_loop(args, do_join, lambda: agent.leave(5.0), agent.shutdown)


async def run_memberlist(args: argparse.Namespace) -> None:
    from registry.memberlist.config import Config
    from registry.memberlist.delegate import Delegate
    from registry.memberlist.node import MemberlistNode
    from registry.memberlist.types import Node, NodeState

    class Printer(Delegate):
        def notify_join(self, node: Node) -> None:
            say(f"serf: EventMemberJoin: {node.name} {node.addr}")

        def notify_leave(self, node: Node) -> None:
            word = "EventMemberLeave" if node.state == NodeState.LEFT else "EventMemberFailed"
            say(f"serf: {word}: {node.name} {node.addr}")

    host, port = split_hostport(args.bind)
    cfg = Config.profile(args.profile).replace(name=args.name, bind_addr=host, bind_port=port)
    node: Any = await MemberlistNode.create(cfg, Printer())
    say(f"READY {args.name} {args.bind} memberlist")

    async def do_join(addr: str) -> Any:
        return await node.join([addr])

    await command_loop(args, do_join, lambda: node.leave(5.0), node.shutdown)


async def command_loop(args: argparse.Namespace, join: Any, leave: Any, shutdown: Any) -> None:
    if args.join:
        await join(args.join)
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:  # stdin closed: keep running until killed
            await asyncio.Event().wait()
        cmd, _, arg = line.strip().partition(" ")
        try:
            if cmd == "join":
                n = await join(arg)
                say(f"JOINED {n}")
            elif cmd == "leave":
                await leave()
                say("LEFT")
            elif cmd == "quit":
                await shutdown()
                return
        except Exception as e:  # noqa: BLE001 - report and keep serving
            say(f"ERROR {cmd}: {type(e).__name__}: {e}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--name", required=True)
    p.add_argument("--bind", required=True, help="host:port")
    p.add_argument("--join", default="")
    p.add_argument("--profile", default="lan")
    p.add_argument("--impl", choices=["auto", "serf", "memberlist"], default="auto")
    args = p.parse_args()
    impl = args.impl
    if impl == "auto":
        try:
            import registry.serf.agent  # noqa: F401

            impl = "serf"
        except Exception:  # noqa: BLE001 - fall back to plain memberlist
            impl = "memberlist"
    try:
        asyncio.run(run_serf(args) if impl == "serf" else run_memberlist(args))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
