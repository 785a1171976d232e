"""Run the benchmarks, one after another, each in its own interpreter.

    .venv/bin/python -m benchmarks                   # all: engine pipeline normalize gate warehouse replies
    .venv/bin/python -m benchmarks --quick           # smaller sizes (a few minutes in all)
    .venv/bin/python -m benchmarks engine            # one (or several) by name
    .venv/bin/python -m benchmarks engine -- --naive-sample 2000   # extra flags for the script(s)
    .venv/bin/python -m benchmarks --list

Each benchmark is a standalone script in this directory (``bench_<name>.py``) that prints
its own figures; see ``benchmarks/README.md``. Exit status: 0 when every one exited 0.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

#: name -> (what it measures, flags for --quick)
BENCHMARKS: dict[str, tuple[str, list[str]]] = {
    "engine": (
        "mailsift's engine vs one SMTP connection per address: round-trip, serial and 421-cap worlds (5,000 addresses)",
        ["--quick"],
    ),
    "pipeline": (
        "`mailsift run` vs the engine alone: orchestration share, memory, second run",
        ["--quick"],
    ),
    "normalize": ("normalize + dedupe + batching of 1M messy CRM rows", ["--rows", "100000"]),
    "gate": ("the Great Expectations quality gate over 1M results", ["--rows", "100000", "--repeat", "1"]),
    "warehouse": ("DuckDB loads and freshness look-ups at 1M rows", ["--rows", "100000", "--objects", "10000"]),
    "serve": (
        "`mailsift serve`: /verify latency fresh and cached, cached lookups/s under 50 clients",
        ["--addresses", "100", "--seconds", "5"],
    ),
    "shared_warehouse": (
        "the shared warehouse: DuckDB file vs PostgreSQL (pgserver) at 1M rows, two writers",
        ["--rows", "100000"],
    ),
    "scale_out": (
        "1, 2, 3 probe hosts (Dask workers on 127.0.0.2-4) on one flow run, per-IP-capped world",
        ["--addresses", "600"],
    ),
    "hostile": (
        "peak RSS of `mailsift run` on 300 MB of blank lines, a 5M-row CSV, a gzip bomb URL, an XLSX bomb",
        ["--quick"],
    ),
    "replies": ("classify_reply over 100,000 real SMTP replies (tests/data/smtp_replies.csv)", ["--calls", "20000"]),
    "report": ("the list-health report's queries and page at 1M addresses, 12 runs", ["--addresses", "100000"]),
}


def _stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM the benchmark's process group, SIGKILL it after 10 s."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.splitlines()[0],
        epilog="benchmarks: " + ", ".join(BENCHMARKS),
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help="benchmarks to run (default: all)")
    parser.add_argument("--quick", action="store_true", help="smaller sizes where a script has them")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per benchmark at most")
    args = parser.parse_args(argv)

    if args.list:
        for name, (what, quick) in BENCHMARKS.items():
            print(f"{name:<10} {what}  (--quick: {' '.join(quick)})")
        return 0
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; one of {', '.join(BENCHMARKS)}")
    names = args.names or list(BENCHMARKS)

    env = dict(os.environ)
    for key, value in {
        "DO_NOT_TRACK": "1",
        "GX_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    }.items():
        env.setdefault(key, value)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)

    outcomes: list[tuple[str, int | str, float]] = []
    for name in names:
        what, quick = BENCHMARKS[name]
        cmd = [sys.executable, str(HERE / f"bench_{name}.py"), *(quick if args.quick else []), *extra]
        shown = " ".join(["python", f"benchmarks/bench_{name}.py", *cmd[2:]])
        print(f"\n{'#' * 88}\n# {name}: {what}\n# {shown}\n{'#' * 88}", flush=True)
        t0 = time.perf_counter()
        # its own process group, so that a timeout also ends what it started (Prefect's server)
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True)
        try:
            code: int | str = proc.wait(timeout=args.timeout)
        except subprocess.TimeoutExpired:
            _stop_group(proc)
            code = f"timed out after {args.timeout:.0f} s"
        except KeyboardInterrupt:
            _stop_group(proc)
            print(f"\ninterrupted during {name}")
            return 130
        outcomes.append((name, code, time.perf_counter() - t0))

    print(f"\n{'#' * 88}")
    for name, code, seconds in outcomes:
        print(f"{name:<10} {'ok' if code == 0 else f'FAILED ({code})':<28} {seconds:8.1f} s")
    return 0 if all(code == 0 for _, code, _ in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
