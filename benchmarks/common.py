"""Shared helpers for the benchmark scripts (benchmarks/bench_*.py).

Convention (see benchmarks/README.md): every script is runnable standalone, accepts
`--quick` (small sizes, the whole quick suite fits in a few minutes) and `--json PATH`
(write the list of records there), prints how each figure was measured and on what, and
exits 3 with a one-line "MISSING: ..." message when a product piece it needs is absent.
A record is {figure, value, unit, how_measured, date, machine} (+ optional "reference").
Scripts import this file as `common` (benchmarks/ is not a package; the scripts put their
own directory and the repository root on sys.path through `setup_path()`).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
EXIT_MISSING = 3
NOISE_NOTE = (
    "NOTE: figures taken on a shared machine while other jobs run are noisy; "
    "compare ratios measured in the same invocation rather than absolute values."
)

Record = dict[str, Any]


def setup_path() -> None:
    """Make `import common` and `import registry` work when a script runs standalone."""
    for p in (str(BENCH_DIR), str(REPO_ROOT)):
        if p not in sys.path:
            sys.path.insert(0, p)


# -- what we run on ------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, Any]:
    try:
        load = os.getloadavg()
    except OSError:
        load = (0.0, 0.0, 0.0)
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_1m": round(load[0], 2),
    }


def today() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")  # datetime.UTC is 3.11+


def print_header(title: str, quick: bool) -> None:
    m = machine_info()
    print(f"== {title} ({'quick' if quick else 'full'} mode) {today()}")
    print(f"   on: nproc={m['nproc']} cpu={m['cpu']!r} python={m['python']} load1m={m['loadavg_1m']}")
    print(f"   {NOISE_NOTE}")
    sys.stdout.flush()


# -- records -------------------------------------------------------------------------------


def record(figure: str, value: float | str | None, unit: str, how: str, **extra: Any) -> Record:
    r: Record = {
        "figure": figure,
        "value": value,
        "unit": unit,
        "how_measured": how,
        "date": today(),
        "machine": machine_info(),
    }
    r.update(extra)
    return r


def fmt_value(v: Any) -> str:
    if isinstance(v, float):
        if v == 0:
            return "0"
        if abs(v) >= 100:
            return f"{v:,.0f}"
        if abs(v) >= 1:
            return f"{v:.2f}"
        return f"{v:.4f}"
    return str(v)


def print_table(records: Sequence[Record], *, show_how: bool = True) -> None:
    if not records:
        print("(no figures)")
        return
    w = max(len(str(r.get("figure"))) for r in records)
    for r in records:
        ref = f"   [ref {r['reference']}]" if r.get("reference") not in (None, "") else ""
        print(f"  {r.get('figure')!s:<{w}}  {fmt_value(r.get('value')):>12} {r.get('unit', '')}{ref}")
        if show_how and r.get("how_measured"):
            print(f"  {'':<{w}}    how: {r['how_measured']}")
    sys.stdout.flush()


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so `finally` blocks stop the child processes
    (run_all sends SIGTERM to a script that overran its time limit)."""

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def base_parser(description: str) -> argparse.ArgumentParser:
    exit_on_sigterm()
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="small sizes; a few tens of seconds")
    p.add_argument("--json", metavar="PATH", help="write the list of records to PATH")
    return p


def emit(records: Sequence[Record], args: argparse.Namespace) -> None:
    """Print the figures (with how each was measured) and write them to --json if asked."""
    print()
    print_table(records)
    path = getattr(args, "json", None)
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(list(records), indent=1))


def missing(what: str, args: argparse.Namespace | None = None) -> NoReturn:
    """A product piece is absent: one line, an empty record list, exit 3."""
    print(f"MISSING: {what}")
    sys.stdout.flush()
    if args is not None and getattr(args, "json", None):
        Path(args.json).write_text("[]")
    sys.exit(EXIT_MISSING)


def require_import(module: str, args: argparse.Namespace | None = None) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except Exception as e:  # noqa: BLE001 - any import failure means the piece is not usable
        missing(f"cannot import {module} ({type(e).__name__}: {e})", args)


# -- numbers -------------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """Linear-interpolated percentile, p in [0, 100]."""
    if not values:
        return float("nan")
    s = sorted(values)
    if len(s) == 1:
        return float(s[0])
    k = (len(s) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return float(s[lo] + (s[hi] - s[lo]) * (k - lo))


def ratio(ours: float | None, theirs: float | None) -> float | None:
    if ours is None or theirs is None or theirs == 0:
        return None
    return ours / theirs


# -- ports, waiting ------------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    """A port free for both TCP and UDP on `host` right now (gossip binds both)."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(200):
        with socket.socket(fam, socket.SOCK_STREAM) as t:
            t.bind((host, 0))
            port = t.getsockname()[1]
            try:
                with socket.socket(fam, socket.SOCK_DGRAM) as u:
                    u.bind((host, port))
            except OSError:
                continue
            return int(port)
    raise RuntimeError("no free TCP+UDP port found")


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    out: list[int] = []
    while len(out) < n:
        p = free_port(host)
        if p not in out:
            out.append(p)
    return out


def wait_for(pred: Callable[[], Any], timeout: float, interval: float = 0.02, what: str = "condition") -> float:
    """Poll `pred` until truthy; return the seconds waited.  Raises TimeoutError."""
    t0 = time.monotonic()
    while True:
        if pred():
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def wait_port(host: str, port: int, timeout: float = 20.0) -> None:
    def up() -> bool:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return True
        return False

    wait_for(up, timeout, 0.05, f"{host}:{port} to accept TCP")


def wait_server(proc: Proc, host: str, port: int, timeout: float = 30.0) -> None:
    """Wait for `proc` to accept TCP on host:port; RuntimeError (with its output) if it exits first."""

    def up() -> bool:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited (status {proc.popen.returncode if proc.popen else '?'}):\n{proc.tail()}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return True
        return False

    wait_for(up, timeout, 0.05, f"{proc.name} to accept TCP on {host}:{port}")


# -- processes -----------------------------------------------------------------------------


@dataclass
class Proc:
    """A child process whose stdout+stderr lines are read by a thread and time-stamped
    (time.monotonic()) on arrival; `on_line(proc, t, line)` is called from that thread."""

    name: str
    argv: list[str]
    env: dict[str, str] | None = None
    on_line: Callable[[Proc, float, str], None] | None = None
    keep_lines: int = 200
    stdin: bool = False
    popen: subprocess.Popen[str] | None = None
    lines: list[tuple[float, str]] = field(default_factory=list)
    _thread: threading.Thread | None = None

    def start(self) -> Proc:
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        if self.env:
            env.update(self.env)
        self.popen = subprocess.Popen(
            self.argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.PIPE if self.stdin else subprocess.DEVNULL,
            text=True,
            bufsize=1,
            env=env,
            start_new_session=True,
        )
        self._thread = threading.Thread(target=self._read, name=f"read-{self.name}", daemon=True)
        self._thread.start()
        return self

    def _read(self) -> None:
        assert self.popen is not None and self.popen.stdout is not None
        for raw in self.popen.stdout:
            t = time.monotonic()
            line = raw.rstrip("\n")
            self.lines.append((t, line))
            if len(self.lines) > self.keep_lines:
                del self.lines[: len(self.lines) - self.keep_lines]
            if self.on_line is not None:
                try:
                    self.on_line(self, t, line)
                except Exception as e:  # noqa: BLE001 - a harness bug must not kill the reader
                    print(f"[harness] on_line error for {self.name}: {e!r}", file=sys.stderr)

    def send(self, line: str) -> None:
        """Write one command line to the child's stdin (needs `stdin=True`)."""
        assert self.popen is not None and self.popen.stdin is not None
        self.popen.stdin.write(line + "\n")
        self.popen.stdin.flush()

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL, no goodbye (the failure case)."""
        if self.alive():
            assert self.popen is not None
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.popen.pid, signal.SIGKILL)
            self.popen.wait(5)

    def stop(self, timeout: float = 10.0, sig: int = signal.SIGTERM) -> None:
        """Graceful stop (SIGTERM by default), SIGKILL after `timeout`."""
        if not self.alive():
            return
        assert self.popen is not None
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.popen.pid, sig)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def tail(self, n: int = 15) -> str:
        return "\n".join(f"    {line}" for _, line in self.lines[-n:])


class ProcGroup:
    """Processes started by a benchmark; all are SIGKILLed (by pid) on exit."""

    def __init__(self) -> None:
        self.procs: list[Proc] = []

    def add(self, p: Proc) -> Proc:
        self.procs.append(p)
        return p.start()

    def close(self) -> None:
        for p in self.procs:
            if p.alive():
                p.stop(timeout=3.0)

    def __enter__(self) -> ProcGroup:  # noqa: PYI034 - not subclassed
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- /proc readings ------------------------------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc/<pid>/stat."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    rest = raw[raw.rindex(")") + 2 :].split()
    # fields after ")" start at field 3 (state); utime is field 14, stime 15
    return (int(rest[11]) + int(rest[12])) / CLK_TCK


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def lo_bytes() -> tuple[int, int] | None:
    """(rx, tx) bytes of the loopback interface in this network namespace."""
    try:
        for line in Path("/proc/net/dev").read_text().splitlines():
            name, _, rest = line.partition(":")
            if name.strip() == "lo":
                f = rest.split()
                return int(f[0]), int(f[8])
    except OSError:
        pass
    return None


NETNS_ENV = "REGISTRY_BENCH_NETNS"


def in_private_netns() -> bool:
    return os.environ.get(NETNS_ENV) == "1"


def reexec_in_private_netns(argv: Sequence[str]) -> None:
    """Re-run this script in a fresh network namespace (`unshare -rn`) so the loopback
    interface's byte counters count only this benchmark's traffic.  Returns (without
    re-executing) when that is impossible; never returns otherwise."""
    if in_private_netns() or not Path("/usr/bin/unshare").exists():
        return
    probe = subprocess.run(
        ["unshare", "-rn", "sh", "-c", "ip link set lo up 2>/dev/null || true; cat /proc/net/dev"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        return
    env = dict(os.environ)
    env[NETNS_ENV] = "1"
    script = "ip link set lo up && exec \"$@\""
    cmd = ["unshare", "-rn", "sh", "-c", script, "sh", sys.executable, *argv]
    sys.stdout.flush()
    child = subprocess.Popen(cmd, env=env)  # unshare and sh exec: child.pid is the inner python

    def forward(signum: int, frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    sys.exit(child.wait())


def python_argv(script: str | Path, *args: str) -> list[str]:
    return [sys.executable, str(script), *args]


def drain_queue(q: queue.Queue[Any]) -> Iterator[Any]:
    while True:
        try:
            yield q.get_nowait()
        except queue.Empty:
            return


def chunks(items: Iterable[Any], n: int) -> Iterator[list[Any]]:
    buf: list[Any] = []
    for x in items:
        buf.append(x)
        if len(buf) == n:
            yield buf
            buf = []
    if buf:
        yield buf


# -- a service process embedding register.Register (bench_discovery, bench_memory) ---------

#: Source of a tiny service: argv = id, gossip bind, registries, group, addr, profile.
#: Prints `BASE rss=..`, `IMPORTED rss=.. modules=<json>`, `T_START <monotonic>`,
#: `STARTED <monotonic> rss=.. modules=<json>`; then obeys stdin: `stop` (graceful).
SERVICE_SRC = r'''
import json, os, sys, time
sys.path.insert(0, os.environ.get("REGISTRY_REPO", "."))
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0
def tops(names):
    return sorted({n.split(".")[0] for n in names})
sid, bind, registries, group, addr, profile = sys.argv[1:7]
before = set(sys.modules)
print("BASE rss=%d" % rss(), flush=True)
from registry.register import Register
imported = set(sys.modules)
print("IMPORTED rss=%d modules=%s" % (rss(), json.dumps(tops(imported - before))), flush=True)
reg = Register(sid, bind, "", registries, group, addr, profile=profile)
t = time.monotonic()
print("T_START %.6f" % t, flush=True)
n = reg.start()
print("STARTED %.6f rss=%d n=%d modules=%s" % (time.monotonic(), rss(), n,
      json.dumps(tops(set(sys.modules) - imported))), flush=True)
print("ALLMODULES " + json.dumps(tops(set(sys.modules) - before)), flush=True)
for line in sys.stdin:
    if line.strip() == "stop":
        print("STOPPING %.6f" % time.monotonic(), flush=True)
        reg.stop()
        print("STOPPED %.6f" % time.monotonic(), flush=True)
        break
'''


def service_argv(sid: str, bind: str, registries: str, group: str, addr: str, profile: str = "lan") -> list[str]:
    return [sys.executable, "-c", SERVICE_SRC, sid, bind, registries, group, addr, profile]


def registry_argv(rid: str, gossip_port: int, rpc_port: int, join: str = "", profile: str = "lan") -> list[str]:
    """A `registry` server process (W7's CLI), run as `python -m registry.cli`."""
    argv = [sys.executable, "-m", "registry.cli", "-id", rid, "-bind", f"127.0.0.1:{gossip_port}",
            "-addr", f"127.0.0.1:{rpc_port}", "-profile", profile, "-log-level", "warning"]
    if join:
        argv += ["-registries", join]
    return argv


def repo_env() -> dict[str, str]:
    """Environment for child processes that import the product from this checkout."""
    pp = os.environ.get("PYTHONPATH", "")
    return {"PYTHONPATH": str(REPO_ROOT) + (os.pathsep + pp if pp else ""), "REGISTRY_REPO": str(REPO_ROOT)}
