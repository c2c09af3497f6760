"""Network namespaces for the chaos suite: one namespace per process, a bridge, iptables faults.

Layout of one `NetLab` (every name carries the owning pid, so runs never collide and a later
run can tell a crashed run's leftovers from a live one's):

    root namespace (the test process, observer and clients)
      rc<pid>-<k>  10.123.X.1/24 ----.
                                      |  veth
    rchaos-<pid>-<k>-hub:  br0 ---- up0, p0, p1, ...        (the switch; no address, no rules)
                                     |   veth
    rchaos-<pid>-<k>-n<i>: eth0 10.123.X.(10+i)/24, lo       (one registry or service each)

The bridge lives in its own namespace so nothing is added to the root namespace's iptables
(where br_netfilter may send bridged frames through a FORWARD chain we do not own): faults are
rules in each node namespace's own INPUT chain, which dies with the namespace.  Only INPUT is
used: a DROP on OUTPUT would hand the sender an EPERM, which no real partition does.

Cleanup: `close()` deletes every namespace (that removes the veth pairs with them) after
killing whatever still runs inside; `sweep_stale()` does the same for namespaces and links left
by a run whose pid is gone (a crashed or SIGKILLed pytest).
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

PREFIX = "rchaos"
_NS_RE = re.compile(rf"^{PREFIX}-(\d+)-\d+-")
_LINK_RE = re.compile(r"^rc(\d+)-\d+$")
_SUBNET_BASE = "10.123"
_CHAIN = "CHAOS"  # our rules go here, jumped to from INPUT: one flush clears every fault
_labs = itertools.count()


class NetLabError(RuntimeError):
    """A namespace, link or rule could not be made (names the command and its stderr)."""


def run(argv: Sequence[str], stdin: str | None = None, check: bool = True) -> str:
    """Run one ip/iptables command; raise NetLabError with its stderr when it fails."""
    p = subprocess.run(list(argv), check=False, input=stdin, capture_output=True, text=True, timeout=30)
    if check and p.returncode != 0:
        raise NetLabError(f"{' '.join(argv)} -> {p.returncode}: {p.stderr.strip()}")
    return p.stdout


def _pid_alive(pid: int) -> bool:
    """Whether the run that owns a name still runs (a zombie, never reaped, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def namespaces() -> list[str]:
    """Names of every network namespace `ip netns` knows."""
    return [line.split()[0] for line in run(["ip", "netns", "list"]).splitlines() if line.strip()]


def _delete_namespace(ns: str) -> None:
    """Kill what runs in `ns` (our own children: registries, services), then delete it."""
    for _ in range(3):
        pids = [int(p) for p in run(["ip", "netns", "pids", ns], check=False).split()]
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in pids:  # reap those that are our children, so no zombie pins the namespace
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
    run(["ip", "netns", "delete", ns], check=False)


def sweep_stale() -> list[str]:
    """Delete namespaces and root links left by chaos runs whose process is gone; returns them."""
    swept: list[str] = []
    for ns in namespaces():
        m = _NS_RE.match(ns)
        if m and not _pid_alive(int(m.group(1))):
            _delete_namespace(ns)
            swept.append(ns)
    for line in run(["ip", "-o", "link", "show"]).splitlines():
        name = line.split(":", 2)[1].strip().split("@", 1)[0]
        m = _LINK_RE.match(name)
        if m and not _pid_alive(int(m.group(1))):
            run(["ip", "link", "delete", name], check=False)
            swept.append(name)
    return swept


def _pick_subnet(seed: int) -> str:
    """A 10.123.X.0/24 that no address of the root namespace is in (another lab's, say)."""
    used = run(["ip", "-4", "-o", "addr", "show"])
    for step in range(250):
        third = (seed + step) % 250 + 1
        prefix = f"{_SUBNET_BASE}.{third}."
        if f" {prefix}" not in used:
            return prefix
    raise NetLabError("no free 10.123.X.0/24 subnet")


@dataclass(frozen=True)
class Node:
    """One namespace with one address on the lab's bridge."""

    name: str  # logical name given by the test: "r0", "s1"
    ns: str
    ip: str

    def argv(self, *command: str) -> list[str]:
        """`command` run inside this namespace (`ip netns exec` execs it: same pid, signals reach it)."""
        return ["ip", "netns", "exec", self.ns, *command]

    def python(self, *args: str) -> list[str]:
        return self.argv(sys.executable, *args)

    def iptables(self, rules: Iterable[str]) -> None:
        """Apply `rules` (iptables-restore lines for the filter table) atomically, in one exec."""
        body = "\n".join(["*filter", *rules, "COMMIT", ""])
        run(self.argv("iptables-restore", "--noflush"), stdin=body)


class NetLab:
    """Namespaces joined by one bridge.  Call close() once start() was called, pass or fail."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.k = next(_labs)
        self.tag = f"{PREFIX}-{self.pid}-{self.k}"
        self.hub = f"{self.tag}-hub"
        self.root_link = f"rc{self.pid}-{self.k}"
        self.nodes: dict[str, Node] = {}
        self._made: list[str] = []
        self.prefix = ""
        self.observer_ip = ""

    def start(self) -> None:
        """Make the hub namespace, its bridge and the root namespace's link to it."""
        self._made.append("")  # close() is due from here on, even if a step below fails
        self.prefix = _pick_subnet(self.pid + 17 * self.k)
        self.observer_ip = f"{self.prefix}1"
        self._add_ns(self.hub)
        run(["ip", "-n", self.hub, "link", "add", "br0", "type", "bridge"])
        run(["ip", "-n", self.hub, "link", "set", "br0", "up"])
        run(["ip", "link", "add", self.root_link, "type", "veth", "peer", "name", "up0", "netns", self.hub])
        run(["ip", "-n", self.hub, "link", "set", "up0", "master", "br0", "up"])
        run(["ip", "addr", "add", f"{self.observer_ip}/24", "dev", self.root_link])
        run(["ip", "link", "set", self.root_link, "up"])

    def _add_ns(self, ns: str) -> None:
        run(["ip", "netns", "add", ns])
        self._made.append(ns)
        run(["ip", "-n", ns, "link", "set", "lo", "up"])

    def add(self, name: str) -> Node:
        """A new namespace `name` with an address on the bridge and an empty CHAOS chain."""
        i = len(self.nodes)
        node = Node(name, f"{self.tag}-n{i}", f"{self.prefix}{10 + i}")
        self._add_ns(node.ns)
        run(["ip", "-n", self.hub, "link", "add", f"p{i}", "type", "veth", "peer", "name", "eth0", "netns", node.ns])
        run(["ip", "-n", self.hub, "link", "set", f"p{i}", "master", "br0", "up"])
        run(["ip", "-n", node.ns, "addr", "add", f"{node.ip}/24", "dev", "eth0"])
        run(["ip", "-n", node.ns, "link", "set", "eth0", "up"])
        node.iptables([f":{_CHAIN} - [0:0]", f"-A INPUT -j {_CHAIN}"])
        self.nodes[name] = node
        return node

    # -- faults ----------------------------------------------------------------------------

    def partition(self, side_a: Sequence[str], side_b: Sequence[str]) -> None:
        """Drop every packet between the two sides (each side drops what comes from the other)."""
        for here, there in ((side_a, side_b), (side_b, side_a)):
            for name in here:
                self.nodes[name].iptables(f"-A {_CHAIN} -s {self.nodes[o].ip} -j DROP" for o in there)

    def loss(self, probability: float, names: Iterable[str] | None = None) -> None:
        """Drop each packet a node receives with `probability` (all sources, the observer's too)."""
        for name in self.nodes if names is None else names:
            self.nodes[name].iptables(
                [f"-A {_CHAIN} -m statistic --mode random --probability {probability} -j DROP"]
            )

    def heal(self) -> None:
        """Remove every fault (flush each node's CHAOS chain)."""
        for node in self.nodes.values():
            node.iptables([f"-F {_CHAIN}"])

    def drops(self, name: str) -> int:
        """Packets node `name`'s CHAOS rules dropped so far (proves a fault really bit)."""
        out = run(self.nodes[name].argv("iptables", "-nvxL", _CHAIN))
        total = 0
        for line in out.splitlines()[2:]:
            fields = line.split()
            if len(fields) > 2 and fields[2] == "DROP":
                total += int(fields[0])
        return total

    # -- cleanup ---------------------------------------------------------------------------

    def close(self) -> None:
        """Delete every namespace made (killing what still runs in it) and the root link."""
        for ns in reversed(self._made):
            if ns:
                _delete_namespace(ns)
        self._made.clear()
        run(["ip", "link", "delete", self.root_link], check=False)

    def leftovers(self) -> list[str]:
        """Namespaces and links of this lab that still exist (empty after close())."""
        left = [ns for ns in namespaces() if ns.startswith(self.tag + "-")]
        if run(["ip", "link", "show", self.root_link], check=False):
            left.append(self.root_link)
        return left
