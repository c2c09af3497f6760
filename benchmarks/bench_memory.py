#!/usr/bin/env python3
"""Memory: RSS of a `registry` server process idle and after an RPC run, and what
embedding `register.Register` costs a service process (RSS, imported top-level modules,
and whether grpc is among them — it must not be).

RSS is VmRSS from /proc/<pid>/status.  Reference (the project owners, Go): 21 MB per
registry, 17 MB per service process.
"""

from __future__ import annotations

import compileall
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

common.setup_path()
MiB = float(1 << 20)


def field(line: str, key: str) -> str:
    for part in line.split():
        if part.startswith(key + "="):
            return part[len(key) + 1 :]
    raise KeyError(key)


def composition(pid: int) -> dict[str, float]:
    """Where a process's RSS is (MiB): anonymous (its own heap, Python objects, thread
    stacks) vs file-backed (pages of shared libraries it has touched: clean, shared with
    any other process mapping the same file, dropped by the kernel under pressure), PSS,
    threads, and the biggest file mappings by resident size."""
    out: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("RssAnon", "RssFile"):
            out[key] = int(rest.split()[0]) / 1024
        elif key == "Threads":
            out[key] = float(rest.split()[0])
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                out["Pss"] = int(line.split()[1]) / 1024
    except OSError:
        pass
    files: dict[str, int] = {}
    name = ""
    try:
        for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
            head = line.split()
            if head and "-" in head[0] and not head[0].endswith(":"):
                name = Path(head[5]).name if len(head) > 5 and head[5].startswith("/") else ""
            elif name and head and head[0] == "Rss:":
                files[name] = files.get(name, 0) + int(head[1])
    except OSError:
        pass
    for f, kib in sorted(files.items(), key=lambda kv: -kv[1])[:4]:
        out["file " + f] = kib / 1024
    return out


#: Shared objects whose presence means OpenSSL came in through Python (asyncio's ssl, hashlib)
#: or `cryptography` (only -encrypt needs it): none of them should be mapped in a plain server.
OPENSSL_OBJECTS = ("libssl.so", "libcrypto.so", "_ssl.cpython", "_hashlib.cpython", "cryptography")


def mapped_openssl(pid: int) -> list[str]:
    """Names of OPENSSL_OBJECTS files mapped into the process (from /proc/<pid>/maps)."""
    found: set[str] = set()
    try:
        for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
            path = line.split()[-1] if len(line.split()) > 5 else ""
            if any(o in path for o in OPENSSL_OBJECTS):
                found.add(path.split("site-packages/")[-1] if "site-packages/" in path else Path(path).name)
    except OSError:
        pass
    return sorted(found)


def bare_interpreter_rss(env: dict[str, str], *flags: str) -> float:
    """MiB of `python [flags] -c pass` at exit time, same environment (median of 3): the part
    of the server's figure that is the interpreter plus what site/.pth files load at start."""
    code = "print([l for l in open('/proc/self/status') if l.startswith('VmRSS')][0].split()[1])"
    runs = []
    for _ in range(3):
        out = subprocess.run([sys.executable, *flags, "-c", code], capture_output=True, text=True,
                             env={**os.environ, **env}, timeout=60)
        runs.append(int(out.stdout.strip() or 0) / 1024)
    return sorted(runs)[1]


def byte_compile_checkout() -> None:
    """Write the .pyc files of our packages, as `pip install` does for an installed package.

    An editable checkout gets them on first import, except where PYTHONDONTWRITEBYTECODE is set
    (this sandbox sets it): every process then compiles our modules from source at start, and
    the compiler's leftovers count in its RSS (0.2-0.5 MiB), which no deployed server pays."""
    root = Path(__file__).resolve().parent.parent
    for pkg in ("registry",):
        compileall.compile_dir(str(root / pkg), quiet=1)
    print("   note: byte-compiled registry/ first (__pycache__, git-ignored), as an "
          "installed package is; --no-compile to measure without", flush=True)


def main() -> int:
    p = common.base_parser(__doc__ or "")
    p.add_argument("--calls", type=int, default=0, help="Match calls in the RPC run (default 20000; quick 3000)")
    p.add_argument("--profile", default="lan")
    p.add_argument("--no-compile", action="store_true",
                   help="do not byte-compile the checkout first (modules then compile from source at every start "
                        "when PYTHONDONTWRITEBYTECODE is set)")
    args = p.parse_args()
    if not args.no_compile:
        byte_compile_checkout()
    for mod in ("registry.cli", "registry.server", "registry.register", "registry.client"):
        common.require_import(mod, args)
    calls = args.calls or (3000 if args.quick else 20000)
    common.print_header("memory: registry server RSS, Register cost in a service", args.quick)
    env = common.repo_env()
    records: list[common.Record] = []
    with common.ProcGroup() as group:
        g1, r1 = common.free_ports(2)
        reg = group.add(common.Proc("R1", common.registry_argv("mem-r1", g1, r1, profile=args.profile), env=env))
        try:
            common.wait_server(reg, "127.0.0.1", r1, 30)
        except (TimeoutError, RuntimeError):
            print(f"   registry did not serve gRPC:\n{reg.tail()}")
            common.missing("the registry server did not start (see its output above)", args)
        time.sleep(3.0)  # idle: let start-up allocations settle
        idle = common.rss_bytes(reg.pid)
        records.append(common.record("memory: registry server RSS, idle", idle / MiB, "MiB",
                                     "VmRSS of one `python -m registry.cli` process 3 s after its gRPC port opened, alone in its pool",
                                     reference="Go 21 MB (owners)"))
        parts = composition(reg.pid)
        for key, value in parts.items():
            if key == "Threads":
                records.append(common.record("memory: registry server threads, idle", value, "threads",
                                             "Threads in /proc/<pid>/status (asyncio loop, gRPC poller, event engine, timer)"))
            else:
                what = {"RssAnon": "anonymous part of the idle RSS (heap, Python objects, stacks): memory only it uses",
                        "RssFile": "file-backed part of the idle RSS (library pages touched so far, mostly at import "
                                   "and start-up; clean, shareable, reclaimable)",
                        "Pss": "proportional set size (file pages shared with other processes counted pro rata)"}
                records.append(common.record(f"memory: registry server {key}, idle", value, "MiB",
                                             what.get(key, "resident pages of this mapped file (/proc/<pid>/smaps)")))
        print("   idle RSS composition: " + ", ".join(f"{k} {v:.1f}" for k, v in parts.items()), flush=True)
        openssl_idle = mapped_openssl(reg.pid)

        # a service embedding Register: RSS before import, after import, after start
        svc = group.add(common.Proc("svc", common.service_argv("mem-svc", f"127.0.0.1:{common.free_port()}",
                                                                f"127.0.0.1:{g1}", "mem-group", "127.0.0.1:8080",
                                                                args.profile), env=env, stdin=True))
        try:
            common.wait_for(lambda: any(line.startswith("ALLMODULES") for _, line in list(svc.lines)) or not svc.alive(),
                            60, 0.01, "the service to start")
        except TimeoutError:
            pass
        lines = {line.split()[0]: line for _, line in list(svc.lines) if line and line.split()[0].isupper()}
        if "ALLMODULES" not in lines:
            print(f"   service did not start:\n{svc.tail()}")
        else:
            base = int(field(lines["BASE"], "rss"))
            imported = int(field(lines["IMPORTED"], "rss"))
            started = int(field(lines["STARTED"], "rss"))
            mods = json.loads(lines["ALLMODULES"].split(" ", 1)[1])
            grpc_loaded = any(m == "grpc" or m.startswith("grpc") for m in mods)
            records += [
                common.record("memory: service process RSS with Register started", started / MiB, "MiB",
                              "VmRSS of a bare `python -c` service after Register.start() returned",
                              reference="Go 17 MB per service (owners)"),
                common.record("memory: RSS added by `from registry.register import Register`", (imported - base) / MiB, "MiB",
                              "VmRSS after the import minus before it, in the service process"),
                common.record("memory: RSS added by Register.start()", (started - imported) / MiB, "MiB",
                              "VmRSS after start() (joined, gossiping) minus after the import"),
                common.record("memory: RSS added by Register in total", (started - base) / MiB, "MiB",
                              "VmRSS after start() minus a bare interpreter's at the same point"),
                common.record("memory: top-level modules Register loads", len(mods), "modules",
                              "new top-level names in sys.modules after import + start: " + " ".join(mods)),
                common.record("memory: grpc loaded by Register", "YES (bad)" if grpc_loaded else "no", "",
                              "whether any grpc* top-level module is in sys.modules after import + start"),
            ]
            print(f"   Register loads {len(mods)} top-level modules: {' '.join(mods)}")
            print(f"   ASSERT grpc not loaded by Register: {'FAILED - grpc is loaded' if grpc_loaded else 'ok'}")

        # RPC run: Match (and Members) calls against the registry, then RSS again
        from registry.client import RegistryError, RpcClient

        with RpcClient(f"127.0.0.1:{r1}") as c:
            try:
                common.wait_for(lambda: len(c.members("mem-group")) >= 1, 30, 0.05, "the service in Members")
            except (TimeoutError, RegistryError) as e:
                print(f"   note: service not listed ({e}); Match calls will answer NotFound")
            t0 = time.monotonic()
            errors = 0
            for i in range(calls):
                try:
                    c.match("mem-group", f"user-{i}")
                    if i % 10 == 0:
                        c.members("mem-group")
                except RegistryError:
                    errors += 1
            dt = time.monotonic() - t0
        time.sleep(1.0)
        after = common.rss_bytes(reg.pid)
        records.append(common.record("memory: registry server RSS after an RPC run", after / MiB, "MiB",
                                     f"VmRSS 1 s after {calls} sequential Match (+{calls // 10} Members) calls over one "
                                     f"connection ({dt:.1f} s, {errors} errors), one service registered",
                                     reference="Go 21 MB (owners)"))
        records.append(common.record("memory: registry RSS growth over the RPC run", (after - idle) / MiB, "MiB",
                                     "the two figures above, subtracted"))
        openssl = sorted(set(openssl_idle) | set(mapped_openssl(reg.pid)))
        records.append(common.record("memory: OpenSSL / cryptography mapped in the registry server",
                                     " ".join(openssl) if openssl else "no", "",
                                     "files of " + ", ".join(OPENSSL_OBJECTS) + " in /proc/<pid>/maps, idle and after "
                                     "the RPC run (a plain server needs none: gRPC's TLS is grpcio's own BoringSSL, "
                                     "asyncio is imported without ssl, cryptography only for -encrypt)"))
        print(f"   ASSERT no OpenSSL/cryptography in the plain registry: "
              f"{'FAILED - ' + ' '.join(openssl) if openssl else 'ok'}", flush=True)
        if svc.alive():
            try:
                svc.send("stop")
                common.wait_for(lambda: not svc.alive(), 15, 0.05, "the service to leave")
            except (OSError, TimeoutError):
                pass
    # the same server on the grpc.aio front (-rpc-engine grpcio), idle: what the native front saves
    with common.ProcGroup() as group:
        g2, r2 = common.free_ports(2)
        argv = common.registry_argv("mem-grpcio", g2, r2, profile=args.profile) + ["-rpc-engine", "grpcio"]
        alt = group.add(common.Proc("R2", argv, env=env))
        try:
            common.wait_server(alt, "127.0.0.1", r2, 30)
            time.sleep(3.0)
            alt_idle = common.rss_bytes(alt.pid)
            records += [
                common.record("memory: registry server RSS, idle, -rpc-engine grpcio", alt_idle / MiB, "MiB",
                              "the same measurement with the grpc.aio front instead of the native one"),
                common.record("memory: RSS the native front saves against grpcio, idle", (alt_idle - idle) / MiB,
                              "MiB", "the two idle figures above, same run"),
            ]
        except (TimeoutError, RuntimeError):
            print(f"   the grpcio-front registry did not serve gRPC:\n{alt.tail()}")
    # the interpreter alone in this environment: what the server figure starts from
    bare = bare_interpreter_rss(env)
    nosite = bare_interpreter_rss(env, "-S")
    records += [
        common.record("memory: bare interpreter RSS (python -c pass)", bare, "MiB",
                      "VmRSS of `python -c` doing nothing, same environment as the server (median of 3): "
                      "interpreter + site + every site-packages .pth file's start-up imports"),
        common.record("memory: bare interpreter RSS without site (python -S -c pass)", nosite, "MiB",
                      "the same with -S: the difference is what site and the environment's .pth files load"),
    ]
    if args.no_compile and os.environ.get("PYTHONDONTWRITEBYTECODE"):
        print("   note: PYTHONDONTWRITEBYTECODE is set and --no-compile given: this checkout's modules are compiled "
              "from source at every start (an installed package has .pyc files; ~0.2-0.5 MiB of the server's RSS)")
    common.emit(records, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
