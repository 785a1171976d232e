"""Scale-out: 1, 2 and 3 probe hosts (Dask workers on 127.0.0.2-4) on one flow run.

Run: ``.venv/bin/python benchmarks/bench_scale_out.py [--addresses 3000] [--workers 1,2,3]``

The world: ``--domains`` big domains whose servers allow 2 connections per client IP
(Postfix's per-client limit) and answer each command after ``--latency`` seconds (200 ms:
a slow, distant server), without PIPELINING, so one host's throughput is capped by the
remote side, as on the real internet, and not by this shared 2-core machine, where all
"hosts" run. Each host's window ceiling is set to the cap (2). ``BENCH_VERBOSE=1`` prints
each server's connections per client IP and the verify-batch task runs' timeline. For each worker count: a Dask scheduler and that many workers (one process
each, bound to its own 127.0.0.x), a Prefect test server, ``mailsift run`` of the same
export into a fresh schema of one PostgreSQL warehouse (pgserver). Prints the verify
step's addresses/s (``runs.summary`` timings), the scaling factor against one worker, and
checks: no wrong verdict, no lost or doubled row, no client IP over its cap.

``--addresses 1000000 --domains 30 --latency 0 --workers 3 --batch-size 5000 --pipelining``
is the million-address run: wall time and peak RSS of every process (the flow process,
its gate worker, each Dask worker; target: under 1.5 GB each).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mailsift.testing.smtp_server import Behaviour  # noqa: E402
from mailsift.testing.world import World  # noqa: E402

__all__ = ["main"]

PROBES = ("127.0.0.2", "127.0.0.3", "127.0.0.4")


class PeakRss:
    """Polls the RSS of the given processes and their children; keeps each one's peak."""

    def __init__(self) -> None:
        import psutil

        self._psutil = psutil
        self.peaks: dict[str, float] = {}
        self._watch: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def watch(self, label: str, pid: int) -> None:
        self._watch[label] = pid

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            for label, pid in list(self._watch.items()):
                try:
                    proc = self._psutil.Process(pid)
                    found = [(label, proc)] + [
                        (f"{label}: {self._name(child)}", child)
                        for child in proc.children(recursive=True)
                    ]
                except self._psutil.Error:
                    continue
                for name, p in found:  # the process and each of its children apart
                    try:
                        rss = p.memory_info().rss / 2**20
                    except self._psutil.Error:
                        continue
                    self.peaks[name] = max(self.peaks.get(name, 0.0), rss)

    def _name(self, proc: object) -> str:
        try:
            cmd = " ".join(proc.cmdline())  # type: ignore[attr-defined]
        except self._psutil.Error:
            return "child"
        if "spawn_main" in cmd:
            return "gate worker"
        if "resource_tracker" in cmd:
            return "resource tracker"
        if "uvicorn" in cmd:
            return "Prefect API server"
        return cmd[:40]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)


def export(path: Path, domains: int, addresses: int) -> dict[str, str]:
    """The export and the verdict each address must get (1 in 10 has no mailbox)."""
    expected: dict[str, str] = {}
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["Email"])
        for i in range(addresses):
            email = f"user{i}@big{i % domains}.test"
            writer.writerow([email])
            expected[email] = "invalid" if i % 10 == 9 else "valid"
    return expected


def run_once(workers: int, args: argparse.Namespace, world: World, src: Path, expected: dict[str, str],
             server: object, tmp: Path) -> dict[str, float]:
    from tests.cluster import dask_cluster
    from warehouse import Warehouse

    schema = f"bench_w{workers}_{int(time.time())}"
    server.psql(f"CREATE SCHEMA {schema};")  # type: ignore[attr-defined]
    url = f"{server.get_uri()}&options=-csearch_path%3D{schema}"  # type: ignore[attr-defined]
    for s in world.smtp.servers:
        s.reset_counters()
    env = {**os.environ, **world.env(per_domain_concurrency=2, max_per_domain_concurrency=2, smtp_timeout=10)}
    # a domain of the million-address run needs more than the default 300 s
    env["MAILSIFT_SMTP_DOMAIN_BUDGET"] = str(args.domain_budget)
    env["PREFECT_LOGGING_LEVEL"] = "WARNING"
    rss = PeakRss()
    with dask_cluster(PROBES[:workers], env, threads=args.threads, timeout=300) as address:
        import psutil

        for proc in psutil.Process().children():
            if "dask_worker" in " ".join(proc.cmdline()):
                rss.watch(f"worker {proc.cmdline()[proc.cmdline().index('--host') + 1]}", proc.pid)
        started = time.perf_counter()
        run = subprocess.Popen(
            [sys.executable, "-m", "mailsift.cli", "run", str(src), "--out", str(tmp / f"out{workers}"),
             "--batch-size", str(args.batch_size), "--max-unknown-share", "1"],
            env={**env, "MAILSIFT_DB": url, "MAILSIFT_DASK_SCHEDULER": address}, cwd=tmp,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        rss.watch("flow process", run.pid)
        out, err = run.communicate()
        wall = time.perf_counter() - started
    rss.stop()
    if run.returncode != 0:
        raise SystemExit(f"mailsift run failed ({run.returncode}): {err[-2000:]}")
    with Warehouse.open(url, read_only=True) as wh:
        (summary,) = wh.query("SELECT summary FROM runs").to_series().to_list()
        counts = wh.query("SELECT count(*) AS n, count(DISTINCT email) AS d FROM verifications").row(0)
        latest = dict(wh.query("SELECT email, status FROM latest_verifications").rows())
    summary = json.loads(summary)
    verify_s = summary["timings_s"]["verify_s"]
    wrong = sum(1 for e, s in expected.items() if latest.get(e) != s)
    over = max(max(s.max_concurrent_by_ip.values(), default=0) for s in world.smtp.servers)
    ips = sorted({ip for s in world.smtp.servers for ip in s.connections_by_ip})
    if os.environ.get("BENCH_VERBOSE"):
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName

        with get_client(sync_client=True) as client:
            runs = client.read_task_runs(task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_="verify-batch")), limit=200)
        spans = sorted((r.start_time, r.end_time) for r in runs if r.start_time and r.end_time)
        if spans:
            t0 = spans[0][0]
            print("    task runs (start..end s):", " ".join(f"{(a - t0).total_seconds():.1f}..{(b - t0).total_seconds():.1f}" for a, b in spans))
        for s in world.smtp.servers:
            print(f"    {s.host}: connections {s.connections_by_ip}, max at once {s.max_concurrent} "
                  f"(per IP {s.max_concurrent_by_ip})")
    return {
        "workers": workers, "wall_s": wall, "verify_s": verify_s, "rate": len(expected) / verify_s,
        "rows": counts[0], "distinct": counts[1], "wrong": wrong, "max_per_ip": over,
        "client_ips": len(ips), "peaks": dict(rss.peaks),
        "steps": summary["timings_s"], "step_rss": summary.get("peak_rss_mb", {}),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addresses", type=int, default=3000)
    parser.add_argument("--domains", type=int, default=3)
    parser.add_argument("--latency", type=float, default=0.2, help="seconds per SMTP reply")
    parser.add_argument("--workers", default="1,2,3", help="worker counts to measure, e.g. 1,2,3")
    parser.add_argument("--threads", type=int, default=12, help="Dask threads per worker")
    parser.add_argument("--batch-size", type=int, default=25)
    parser.add_argument("--pipelining", action="store_true",
                        help="the servers offer PIPELINING (the million-address run: the client, "
                             "not the round trips, is then what is measured)")
    parser.add_argument("--domain-budget", type=float, default=3600.0,
                        help="MAILSIFT_SMTP_DOMAIN_BUDGET for the run (s)")
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.workers.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="mailsift-bench-scale-"))
    tmp.chmod(0o755)
    os.environ.update(DO_NOT_TRACK="1", PREFECT_SERVER_ANALYTICS_ENABLED="false",
                      PREFECT_HOME=str(tmp / "prefect-home"), PREFECT_LOGGING_LEVEL="WARNING")
    import pgserver
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    world = World().start()
    behaviour = Behaviour(max_connections_per_ip=2, latency=args.latency, pipelining=args.pipelining)
    src = tmp / "export.csv"
    expected = export(src, args.domains, args.addresses)
    for d in range(args.domains):
        boxes = [e for e, s in expected.items() if s == "valid" and e.endswith(f"@big{d}.test")]
        world.add_domain(f"big{d}.test", behaviour, mailboxes=boxes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        server = pgserver.get_server(tmp / "pg", cleanup_mode="delete")
    print(f"{args.addresses:,} addresses on {args.domains} domains (2 connections per client IP, "
          f"{args.latency * 1000:.0f} ms per reply, {'' if args.pipelining else 'no '}PIPELINING); "
          f"batches of {args.batch_size}")
    results = []
    try:
        with prefect_test_harness(server_startup_timeout=180):
            os.environ["PREFECT_API_URL"] = PREFECT_API_URL.value()
            for n in counts:
                r = run_once(n, args, world, src, expected, server, tmp)
                results.append(r)
                base = results[0]["rate"] if results[0]["workers"] == 1 else None
                factor = f"{r['rate'] / base:4.2f}x" if base else "  -  "
                print(f"{n} worker(s): verify {r['verify_s']:7.1f} s = {r['rate']:8,.0f} addresses/s "
                      f"({factor}); run {r['wall_s']:6.1f} s; rows {r['rows']:,} ({r['distinct']:,} distinct), "
                      f"wrong verdicts {r['wrong']}, max connections per client IP {r['max_per_ip']}, "
                      f"client IPs seen {r['client_ips']}", flush=True)
                peaks = ", ".join(f"{k} {v:,.0f} MB" for k, v in sorted(r["peaks"].items()))
                print(f"    peak RSS: {peaks}", flush=True)
                print("    flow process by step (seconds, peak RSS so far MB): " + ", ".join(
                    f"{k.removesuffix('_s')} {v:.1f} s {r['step_rss'].get(k.removesuffix('_s'), 0):,.0f}"
                    for k, v in r["steps"].items()), flush=True)
    finally:
        world.stop()
        server.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
