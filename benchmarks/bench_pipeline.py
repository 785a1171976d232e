"""Pipeline overhead: ``mailsift run`` vs the engine alone, on the same addresses.

    .venv/bin/python benchmarks/bench_pipeline.py [--addresses 10000] [--latency 0.05]
        [--batch-size 1000] [--repeat 3] [--quick] [--no-subprocess] [--verbose]
        [--world-in-process]

Builds the benchmark world (``benchmarks/world.py``) and serves it from a forked process
(:class:`benchmarks.world.WorldProcess`: real mail servers do not share the verifier's
GIL; ``--world-in-process`` serves it from this process, as before 2026-12-02, where the
flow's own Python work also delays the servers' replies), writes its addresses as a CRM
export (CSV) in a temporary directory, and times, in this order:

1. the engine alone: ``Verifier.verify_many`` over the unique addresses (no Prefect,
   no DuckDB), settings from the world's ``MAILSIFT_*`` environment (smtp_timeout 5 s),
   ``--repeat`` times (before Prefect is imported, as ``mailsift verify`` never imports it);
2. Prefect's ephemeral API server start-up: a trivial flow run (paid once per process,
   reported apart and NOT in the pipeline's wall time);
3. the pipeline in-process: ``flows.verify_crm_exports.verify_crm_exports`` (what
   ``mailsift run`` calls, inside the same :func:`pipeline.runtime.local_flow_runs`) on a
   fresh DuckDB warehouse, ``--repeat`` times, each as a new ``mailsift run`` would start:
   a new engine (cold DNS and catch-all caches) and a new gate worker (Great Expectations
   imported afresh); the figures compare the medians;
   orchestration share = (pipeline wall - engine wall) / pipeline wall;
   each pipeline run is also paired with an engine-alone run and a trivial flow run just
   before it (same process, its heap frozen as the flow's engine freezes it): this shared
   machine's speed drifts by 10-20 % over a minute, and a pair sees the same machine, so
   the median of the pairs' shares is the steadier figure; issue 10 counts the share
   beyond "the engine alone plus one Prefect start-up", the trivial flow run's wall;
4. the same flow again on the same warehouse: everything fresh, nothing verified;
   Every batch runs on ONE engine (tasks/verify.py: one event loop, one scheduler), so
   the engine alone is the fair comparison; the share of the flow outside its verify step
   and its own step timings say where the rest goes;
5. unless ``--no-subprocess``: ``mailsift run`` as a subprocess on another fresh
   warehouse, end to end (interpreter, imports, its own API server), after a warm-up run
   on a one-address export so that its PREFECT_HOME is not a fresh one.

SMTP connections are counted on the server side. Peak memory: ``ru_maxrss`` of this
process (RUSAGE_SELF, monotonic: it includes earlier steps, and the world with
``--world-in-process``), the Prefect API server subprocess (VmHWM), and for ``mailsift
run`` RUSAGE_CHILDREN (the largest process of its tree, its own API server included)
plus its own RUSAGE_SELF.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import gc
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_engine import (  # noqa: E402
    _warm_reputation,
    max_concurrent,
    reset_servers,
    run_engine,
    server_counts,
)
from benchmarks.world import WorldProcess, describe, plan_world, populate  # noqa: E402
from mailsift.testing.world import World  # noqa: E402
from pipeline.settings import DEFAULTS  # noqa: E402

__all__ = ["main", "write_crm_export"]

HEADER = ["Record ID", "First Name", "Last Name", "Email", "Company", "Lifecycle Stage"]
_STAGES = ("Lead", "Customer", "Churned", "Opportunity")


def write_crm_export(path: Path, emails: list[str]) -> Path:
    """A CRM-like CSV (UTF-8 with BOM, as CRMs export it), one row per address."""
    with path.open("w", encoding="utf-8-sig", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(HEADER)
        for i, email in enumerate(emails, start=1):
            local, _, domain = email.partition("@")
            first, _, last = local.partition(".")
            w.writerow([100000 + i, first.title(), last.rstrip("0123456789").title(), email,
                        domain.split(".")[0].title(), _STAGES[i % len(_STAGES)]])
    return path


def _mb(kib: int) -> float:
    return kib / 1024  # Linux reports ru_maxrss in KiB


def _self_rss() -> float:
    return _mb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def _children_rss() -> float:
    return _mb(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)


def _child_processes() -> list[tuple[int, str, float]]:
    """(pid, command, VmHWM MB) of this process's live children (Linux /proc)."""
    me, found = os.getpid(), []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid != me:
                continue
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            hwm = next((ln for ln in (entry / "status").read_text().splitlines()
                        if ln.startswith("VmHWM:")), "VmHWM: 0 kB")
            found.append((int(entry.name), cmd.strip()[:80], int(hwm.split()[1]) / 1024))
        except (OSError, ValueError, IndexError):
            continue
    return found


def _cpu_seconds() -> dict[str, float]:
    """CPU seconds (user + system) used so far by this process and by each live child
    (Linux /proc), keyed by a short name: where the pipeline's CPU goes on a small machine."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {"this process": sum(os.times()[:2])}
    for pid, cmd, _ in _child_processes():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        name = ("Prefect API server" if "uvicorn" in cmd else
                "gate worker" if "spawn_main" in cmd else cmd.split()[-1][:30])
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def _warehouse_counts(db: Path) -> dict[str, int]:
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    try:
        out = {}
        for name in ("contacts", "verifications", "latest_verifications"):
            out[name] = con.sql(f"select count(*) from {name}").fetchall()[0][0]
        return out
    finally:
        con.close()


def _reset(world: World | WorldProcess) -> None:
    if isinstance(world, WorldProcess):
        world.reset_servers()
    else:
        reset_servers(world)


def _counts(world: World | WorldProcess) -> dict[str, int]:
    return world.server_counts() if isinstance(world, WorldProcess) else server_counts(world)


def _maxc(world: World | WorldProcess, domain: str) -> int:
    return world.max_concurrent(domain) if isinstance(world, WorldProcess) else max_concurrent(world, domain)


def _set_environment(tmp: Path, world: World | WorldProcess, smtp_timeout: float, verbose: bool) -> None:
    """Before Prefect is imported: a private PREFECT_HOME, no telemetry, the world's DNS
    and SMTP servers through MAILSIFT_*."""
    os.environ.update(
        DO_NOT_TRACK="1",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120",
        GX_ANALYTICS_ENABLED="false",
        PREFECT_HOME=str(tmp / "prefect-home"),
    )
    if not verbose:
        os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
    if os.environ.pop("PREFECT_API_URL", None):
        print("(PREFECT_API_URL unset for this benchmark: it measures the ephemeral server)")
    os.environ.update(world.env(smtp_timeout=smtp_timeout))


def _run_subprocess(args: list[str], env: dict[str, str], timeout: float) -> tuple[float, int, float, str]:
    """``mailsift <args>`` in a new interpreter; (wall, exit code, its own peak RSS MB, stderr tail)."""
    code = (
        "import atexit, resource, sys\n"
        "atexit.register(lambda: print('BENCH_MAXRSS_KB', "
        "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr))\n"
        f"sys.argv = ['mailsift', *{args!r}]\n"
        "from mailsift.cli import main\n"
        "main()\n"
    )
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=timeout)
    wall = time.perf_counter() - t0
    rss = 0.0
    for line in proc.stderr.splitlines():
        if line.startswith("BENCH_MAXRSS_KB"):
            rss = _mb(int(line.split()[1]))
    tail = "\n".join(ln for ln in proc.stderr.splitlines()[-15:] if not ln.startswith("BENCH_"))
    return wall, proc.returncode, rss, tail


def memory_check(n: int, factor: int, args: argparse.Namespace) -> int:
    """Peak RSS of ``mailsift run`` (its own process) on ``n`` and ``factor * n``
    addresses over the same number of domains: memory should grow with the list far less
    than the list does (issue 10: 100,000 within 1.5x of 10,000)."""
    tmp = Path(tempfile.mkdtemp(prefix="mailsift-bench-memory-"))
    rows = []
    try:
        print(f"mailsift pipeline memory: `mailsift run` on {n:,} and {factor * n:,} addresses, "
              f"{args.memory_domains} domains each, {args.latency * 1000:.0f} ms per SMTP reply")
        env_base = dict(os.environ)
        for size in (n, factor * n):
            plan = plan_world(size, latency=args.latency, seed=args.seed,
                              n_domains=args.memory_domains)
            world = populate(World(), plan)
            world.start()
            try:
                _set_environment(tmp, world, args.smtp_timeout, args.verbose)
                env = dict(os.environ)
                env["PREFECT_HOME"] = str(tmp / "prefect-home-cli")
                env["PREFECT_LOGGING_LEVEL"] = "WARNING"
                src = write_crm_export(tmp / f"export-{size}.csv", list(plan.emails))
                if not rows:  # a warm-up, so that neither pays a fresh PREFECT_HOME
                    one = write_crm_export(tmp / "one.csv", [plan.emails[0]])
                    _run_subprocess(["run", str(one), "--db", str(tmp / "warm.duckdb"),
                                     "--out", str(tmp / "out-warm")], env, args.max_seconds)
                wall, code, rss, tail = _run_subprocess(
                    ["run", str(src), "--db", str(tmp / f"wh-{size}.duckdb"),
                     "--out", str(tmp / f"out-{size}"), "--batch-size", str(args.batch_size)],
                    env, args.max_seconds,
                )
                print(f"  {size:>9,} addresses: {wall:6.1f} s, exit {code}, peak RSS {rss:.0f} MB",
                      flush=True)
                if code != 0:
                    print("  mailsift run said:\n" + tail)
                rows.append((size, rss))
            finally:
                world.stop()
                os.environ.clear()
                os.environ.update(env_base)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    (small, r_small), (big, r_big) = rows
    print(f"peak RSS {big:,} / {small:,}: {r_big:.0f} / {r_small:.0f} MB = {r_big / r_small:.2f}x "
          f"(issue 10's target: at most 1.5x)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addresses", type=int, default=None, help="list size (default 10,000)")
    parser.add_argument("--quick", action="store_true", help="1,000 addresses")
    parser.add_argument("--latency", type=float, default=0.05, help="seconds before every SMTP reply")
    parser.add_argument("--smtp-timeout", type=float, default=5.0)
    parser.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size, help="the flow's batch_size")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs of the engine alone and of the pipeline; medians compared (default 3)")
    parser.add_argument("--no-subprocess", action="store_true", help="skip `mailsift run` as a subprocess")
    parser.add_argument("--verbose", action="store_true", help="Prefect's INFO logs (progress per batch)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--max-seconds", type=float, default=1800, help="bound on each step")
    parser.add_argument("--world-in-process", action="store_true",
                        help="serve the simulated DNS and SMTP servers from this process (they "
                        "then share its GIL with the flow's own work) instead of a forked one")
    parser.add_argument("--memory", action="store_true",
                        help="only: peak RSS of `mailsift run` on N and 10 x N addresses")
    parser.add_argument("--memory-domains", type=int, default=200,
                        help="--memory: domains in both lists (default 200)")
    args = parser.parse_args(argv)
    n = args.addresses or (1_000 if args.quick else 10_000)
    if args.memory:
        return memory_check(n, 10, args)

    plan = plan_world(n, latency=args.latency, seed=args.seed)
    emails = list(plan.emails)
    big = plan.largest.domain
    tmp = Path(tempfile.mkdtemp(prefix="mailsift-bench-pipeline-"))
    if args.world_in_process:
        world: World | WorldProcess = populate(World(), plan)
        world.start()
    else:  # forked now, before this process starts any thread
        world = WorldProcess(plan)
    figures: dict[str, Any] = {}
    try:
        _set_environment(tmp, world, args.smtp_timeout, args.verbose)
        src = write_crm_export(tmp / "crm_export.csv", emails)
        print("mailsift pipeline benchmark")
        print(describe(plan))
        print(f"export: {src} ({n:,} rows); temp dir {tmp}")

        from mailsift.settings import Settings

        settings = Settings()  # from the MAILSIFT_* variables, as the flow's tasks build theirs
        print(f"engine settings: concurrency {settings.concurrency}, per_domain_concurrency "
              f"{settings.per_domain_concurrency}, smtp_timeout {settings.smtp_timeout} s; "
              f"flow batch_size {args.batch_size}")
        _warm_reputation()

        # -- 1. the engine alone
        repeat = max(1, args.repeat)
        print(f"\n[1/5] engine alone: Verifier.verify_many over {n:,} addresses, {repeat} run(s)",
              flush=True)
        engine_walls = []
        for _ in range(repeat):
            _reset(world)
            engine = asyncio.run(run_engine(settings, emails, args.max_seconds))
            engine_walls.append(engine["wall"])
            print(f"  done in {engine['wall']:.2f} s", flush=True)
        figures["engine"] = {"wall": statistics.median(engine_walls), "walls": engine_walls,
                             **_counts(world), "maxc": _maxc(world, big),
                             "rss": _self_rss()}

        # -- 2. Prefect's API server
        print("\n[2/5] Prefect: import and ephemeral API server start-up (trivial flow run)", flush=True)
        t0 = time.perf_counter()
        from prefect import flow

        from flows.verify_crm_exports import verify_crm_exports
        from pipeline.runtime import local_flow_runs, warm_imports
        from tasks.steps import gate_worker_ready, start_gate_worker, stop_gate_worker
        from tasks.verify import _ENGINES
        t_import = time.perf_counter() - t0

        @flow(name="bench-warm-up")
        def warm_up() -> int:
            return 1

        with local_flow_runs():
            t0 = time.perf_counter()
            warm_up()
            t_server = time.perf_counter() - t0
            t0 = time.perf_counter()
            warm_up()
            t_trivial = time.perf_counter() - t0
        warm_imports().join()  # `mailsift run` does it during Prefect's start-up
        figures["prefect"] = {"import": t_import, "first_flow": t_server, "trivial_flow": t_trivial}
        print(f"  imports {t_import:.1f} s; first flow run (API server start) {t_server:.1f} s; "
              f"a trivial flow run after that {t_trivial:.2f} s", flush=True)

        def pipeline(db: Path, out: Path) -> tuple[float, dict[str, Any]]:
            t0 = time.perf_counter()
            with local_flow_runs():  # as `mailsift run` calls it
                state = verify_crm_exports(sources=[str(src)], out_dir=str(out), db=str(db),
                                           batch_size=args.batch_size, return_state=True)
            wall = time.perf_counter() - t0
            if not state.is_completed():
                raise SystemExit(f"the flow did not complete: {state.type} {state.message}")
            return wall, state.result()

        # -- 3. the pipeline, cold warehouse, each run as a new `mailsift run` starts
        print(f"\n[3/5] pipeline in-process: verify_crm_exports on {n:,} rows, fresh warehouse, "
              f"{repeat} run(s)", flush=True)
        runs = []
        # (engine alone, a trivial flow run, pipeline), run one after the other
        paired: list[tuple[float, float, float]] = []
        gc.freeze()  # as the flow's engine loop does (tasks/verify.py): Prefect's heap left alone
        for i in range(repeat):
            # the engine alone again, just before this pipeline run: the machine (shared,
            # noisy) drifts between [1/5] and here; a pair sees the same machine
            _reset(world)
            alone = asyncio.run(run_engine(settings, emails, args.max_seconds))["wall"]
            _ENGINES.close()  # a new engine: cold DNS and catch-all caches
            stop_gate_worker()  # a new gate worker: Great Expectations imported afresh,
            t0 = time.perf_counter()  # while Prefect starts, as `mailsift run` does
            start_gate_worker()
            ready = gate_worker_ready()
            print(f"  gate worker {'ready' if ready else 'NOT ready'} in {time.perf_counter() - t0:.1f} s "
                  "(in `mailsift run`: during Prefect's start-up)", flush=True)
            with local_flow_runs():  # one Prefect start-up, as the machine is now
                t0 = time.perf_counter()
                warm_up()
                trivial = time.perf_counter() - t0
            db = tmp / f"warehouse-{i}.duckdb"
            _reset(world)
            cpu_before = _cpu_seconds()
            wall, summary = pipeline(db, tmp / f"out-1-{i}")
            cpu = {k: v - cpu_before.get(k, 0.0) for k, v in _cpu_seconds().items()}
            print("  CPU s: " + ", ".join(f"{k} {v:.2f}" for k, v in cpu.items()), flush=True)
            runs.append({"wall": wall, **_counts(world), "maxc": _maxc(world, big),
                         "rss": _self_rss(), "summary": summary, "rows": _warehouse_counts(db)})
            t = summary.get("timings_s", {})
            paired.append((alone, trivial, wall))
            print(f"  done in {wall:.2f} s (verify step {t.get('verify_s', 0):.2f} s); the engine alone "
                  f"just before: {alone:.2f} s ({wall / alone - 1:+.1%}); a trivial flow run "
                  f"{trivial:.2f} s", flush=True)
        median_wall = statistics.median(r["wall"] for r in runs)
        figures["pipeline"] = {**min(runs, key=lambda r: abs(r["wall"] - median_wall)),
                               "wall": median_wall, "walls": [r["wall"] for r in runs],
                               "paired": paired}

        # -- 4. again: everything from the warehouse
        print("\n[4/5] pipeline again on the same warehouse (all results fresh)", flush=True)
        _reset(world)
        wall, summary = pipeline(db, tmp / "out-2")
        figures["again"] = {"wall": wall, **_counts(world), "summary": summary,
                            "rows": _warehouse_counts(db)}
        print(f"  done in {wall:.1f} s", flush=True)
        figures["server_procs"] = _child_processes()

        # -- 6. `mailsift run` as a subprocess
        if not args.no_subprocess:
            print("\n[5/5] `mailsift run` as a subprocess, fresh warehouse", flush=True)
            env = dict(os.environ)
            env["PREFECT_HOME"] = str(tmp / "prefect-home-cli")  # not shared with this process's server
            env.pop("PREFECT_LOGGING_LEVEL", None)
            env["PREFECT_LOGGING_LEVEL"] = "WARNING"
            one = write_crm_export(tmp / "one.csv", [emails[0]])
            w_wall, w_code, _, w_tail = _run_subprocess(
                ["run", str(one), "--db", str(tmp / "cli-warm.duckdb"), "--out", str(tmp / "out-cli-warm")],
                env, args.max_seconds,
            )
            print(f"  warm-up on a 1-address export (fresh PREFECT_HOME): {w_wall:.1f} s, exit {w_code}",
                  flush=True)
            _reset(world)
            children_before = _children_rss()
            cli_db = tmp / "cli.duckdb"
            s_wall, s_code, s_rss, s_tail = _run_subprocess(
                ["run", str(src), "--db", str(cli_db), "--out", str(tmp / "out-cli"),
                 "--batch-size", str(args.batch_size)],
                env, args.max_seconds,
            )
            figures["cli"] = {"warm_wall": w_wall, "wall": s_wall, "code": s_code, "rss": s_rss,
                              "children_rss": _children_rss(), "children_before": children_before,
                              **_counts(world), "maxc": _maxc(world, big),
                              "rows": _warehouse_counts(cli_db) if cli_db.exists() else {}}
            print(f"  done in {s_wall:.1f} s, exit {s_code}", flush=True)
            if s_code != 0 or w_code != 0:
                print("  mailsift run said:\n" + (s_tail or w_tail))
    finally:
        world.stop()
        if args.keep:
            print(f"(kept {tmp})")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    _report(n, big, figures)
    return 0


def _report(n: int, big: str, f: dict[str, Any]) -> None:
    e, p, a = f["engine"], f["pipeline"], f["again"]
    share = (p["wall"] - e["wall"]) / p["wall"]
    s = p["summary"]
    print("\n" + "=" * 78)
    print(f"{'':<46} {'wall s':>9} {'conn/addr':>10} {'max conn':>10}")
    print(f"{'':<46} {'':>9} {'':>10} {big:>10}")
    print(f"{'engine alone (Verifier.verify_many)':<46} {e['wall']:>9.1f} "
          f"{e['connections'] / n:>10.3f} {e['maxc']:>10}")
    print(f"{'pipeline in-process (verify_crm_exports)':<46} {p['wall']:>9.1f} "
          f"{p['connections'] / n:>10.3f} {p['maxc']:>10}")
    print(f"{'pipeline again, same warehouse':<46} {a['wall']:>9.1f} "
          f"{a['connections'] / n:>10.3f} {'-':>10}")
    if "cli" in f:
        c = f["cli"]
        print(f"{'`mailsift run` subprocess, end to end':<46} {c['wall']:>9.1f} "
              f"{c['connections'] / n:>10.3f} {c['maxc']:>10}")
    print("=" * 78)
    print(f"runs (s): engine alone {', '.join(f'{w:.2f}' for w in e['walls'])}; pipeline "
          f"{', '.join(f'{w:.2f}' for w in p['walls'])} (the table: medians)")
    print(f"orchestration share = (pipeline - engine) / pipeline = "
          f"({p['wall']:.1f} - {e['wall']:.1f}) / {p['wall']:.1f} = {share:.1%}")
    print(f"pipeline beyond the engine alone (Prefect's start-up paid once before, in [2/5]): "
          f"{p['wall'] / e['wall'] - 1:+.1%} (issue 10's target: at most +20%)")
    pairs = p.get("paired", [])
    if pairs:
        print(f"paired runs (each pipeline run right after an engine-alone run, same process, heap "
              f"frozen): median {statistics.median(w / a - 1 for a, _, w in pairs):+.1%} beyond the "
              f"engine alone (pairs: {', '.join(f'{w / a - 1:+.0%}' for a, _, w in pairs)}; engine "
              f"alone {', '.join(f'{a:.2f}' for a, _, _ in pairs)} s)")
        beyond = statistics.median((w - t) / a - 1 for a, t, w in pairs)
        print(f"issue 10's figure, paired: the pipeline beyond the engine alone plus one Prefect "
              f"start-up (a trivial flow run just before it, {statistics.median(t for _, t, _ in pairs):.2f} s "
              f"median): median {beyond:+.1%} (pairs: "
              f"{', '.join(f'{(w - t) / a - 1:+.0%}' for a, t, w in pairs)}; target: at most +20%)")
    t = s.get("timings_s", {})
    if "verify_s" in t:
        print(f"  outside the flow's verify step: ({p['wall']:.1f} - {t['verify_s']:.1f}) / {p['wall']:.1f} = "
              f"{(p['wall'] - t['verify_s']) / p['wall']:.1%}; its verify step vs the engine "
              f"alone: {t['verify_s']:.1f} s vs {e['wall']:.1f} s")
        rest = {k: v for k, v in t.items() if k != "verify_s"}
        print(f"  where the rest goes (s): {json.dumps(rest)}; Prefect task runs and the "
              f"flow's own bookkeeping: {p['wall'] - sum(t.values()):.1f} s")
    pf = f["prefect"]
    print(f"not in the pipeline figure: Prefect imports {pf['import']:.1f} s, API server start-up "
          f"(first flow run) {pf['first_flow']:.1f} s; a trivial flow run costs {pf['trivial_flow']:.2f} s")
    print(f"flow's own step timings (s): {json.dumps(s.get('timings_s', {}))}")
    print(f"SMTP connections (server side): engine {e['connections']:,}, pipeline {p['connections']:,}, "
          f"second run {a['connections']:,}; RCPT: engine {e['rcpt']:,}, pipeline {p['rcpt']:,}")
    print(f"statuses: {json.dumps(s.get('by_status', {}), sort_keys=True)}; gate {s.get('gate')}, "
          f"unknown share {s.get('unknown_share')}")
    print(f"warehouse rows after run 1: {json.dumps(p['rows'])}")
    print(f"warehouse rows after run 2: {json.dumps(a['rows'])}  (second run: "
          f"{a['summary'].get('from_warehouse'):,} from the warehouse, "
          f"{a['summary'].get('verified_now'):,} verified)")
    print(f"peak RSS of this process (ru_maxrss, monotonic): after the engine {e['rss']:.0f} MB, "
          f"after the pipeline {p['rss']:.0f} MB")
    for pid, cmd, hwm in f.get("server_procs", []):
        print(f"  child process {pid} ({cmd}): peak {hwm:.0f} MB")
    if "cli" in f:
        c = f["cli"]
        print(f"`mailsift run`: {c['wall']:.1f} s end to end (exit {c['code']}; warm-up run on a "
              f"1-address export with a fresh PREFECT_HOME {c['warm_wall']:.1f} s); peak RSS: its own "
              f"{c['rss']:.0f} MB, RUSAGE_CHILDREN {c['children_rss']:.0f} MB (largest process of "
              f"the `mailsift run` trees, their API servers included); warehouse rows {json.dumps(c['rows'])}")


if __name__ == "__main__":
    sys.exit(main())
