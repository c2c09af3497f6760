#!/usr/bin/env python3
"""Run every benchmarks/bench_*.py, each in its own process with a time limit, and
collect their figures into one table and benchmarks/results/<date>.json.

    python benchmarks/run_all.py --quick            # the whole quick suite, a few minutes
    python benchmarks/run_all.py --only sim,ring    # a subset (substring of the script name)

Each script gets `--json <tmpfile>` (and `--quick` when given); exit status 3 means a
product piece it needs is missing (reported, not a failure of the suite).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common


def supported_options(script: Path) -> str:
    """The script's --help text (to see whether it follows the --quick/--json convention)."""
    try:
        res = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=60, check=False,
                             cwd=str(common.REPO_ROOT), stdin=subprocess.DEVNULL)
        return res.stdout
    except (subprocess.TimeoutExpired, OSError):
        return "--json --quick"


def main(argv: list[str] | None = None) -> int:
    p = common.base_parser(__doc__ or "")
    p.add_argument("--only", default="", help="comma-separated substrings of script names to run")
    p.add_argument("--timeout", type=float, default=0.0, help="per-script limit in seconds (default 300 quick, 3600 full)")
    p.add_argument("--out", default="", help="results file (default benchmarks/results/<date>.json)")
    args = p.parse_args(argv)
    limit = args.timeout or (300.0 if args.quick else 3600.0)
    scripts = sorted(common.BENCH_DIR.glob("bench_*.py"))
    if args.only:
        wanted = [w.strip() for w in args.only.split(",") if w.strip()]
        scripts = [s for s in scripts if any(w in s.name for w in wanted)]
    common.print_header(f"run_all: {len(scripts)} scripts", args.quick)

    all_records: list[common.Record] = []
    status: list[tuple[str, str, float]] = []
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        for script in scripts:
            out = Path(tmp) / f"{script.stem}.json"
            opts = supported_options(script)
            cmd = [sys.executable, str(script)]
            notes = ""
            if "--json" in opts:
                cmd += ["--json", str(out)]
            else:
                notes += ", no --json option (figures not collected)"
            if args.quick:
                if "--quick" in opts:
                    cmd.append("--quick")
                else:
                    notes += ", no --quick option"
            print(f"\n---- {script.name} (limit {limit:.0f}s)", flush=True)
            t0 = time.monotonic()
            proc = subprocess.Popen(cmd, cwd=str(common.REPO_ROOT), stdin=subprocess.DEVNULL)
            try:
                rc = proc.wait(limit)
                state = {0: "ok", common.EXIT_MISSING: "missing piece"}.get(rc, f"failed (exit {rc})")
            except subprocess.TimeoutExpired:
                state = f"timed out after {limit:.0f}s"
                proc.terminate()  # SIGTERM: the script's finally blocks stop its child processes
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            dt = time.monotonic() - t0
            recs: list[common.Record] = []
            if out.exists():
                try:
                    loaded = json.loads(out.read_text() or "[]")
                    recs = [r for r in loaded if isinstance(r, dict) and "figure" in r]
                except ValueError:
                    state += ", unreadable JSON"
            for r in recs:
                r.setdefault("script", script.name)
            all_records.extend(recs)
            status.append((script.name, f"{state}, {len(recs)} figures{notes}", dt))

    print("\n==== summary")
    for name, state, dt in status:
        print(f"  {name:<28} {state:<40} {dt:6.1f}s")
    print("\n==== all figures")
    common.print_table(all_records, show_how=False)

    date = time.strftime("%Y-%m-%d_%H%M%S", time.gmtime())
    out_path = Path(args.out) if args.out else common.BENCH_DIR / "results" / f"{date}.json"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "date": common.today(),
        "quick": args.quick,
        "machine": common.machine_info(),
        "scripts": [{"script": n, "status": s, "seconds": round(d, 1)} for n, s, d in status],
        "records": all_records,
    }
    out_path.write_text(json.dumps(payload, indent=1))
    print(f"\nwrote {out_path}")
    if args.json:
        Path(args.json).write_text(json.dumps(all_records, indent=1))
    return 0 if all(s.startswith(("ok", "missing")) for _, s, _ in status) else 1


if __name__ == "__main__":
    sys.exit(main())
