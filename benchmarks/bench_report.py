"""The list-health report at scale: each query of ``warehouse/report.py`` and the page.

Run: ``.venv/bin/python benchmarks/bench_report.py [--addresses 1000000] [--runs 12]``

Builds a real DuckDB warehouse: every address verified by the first run, a tenth of them
re-verified (with a different verdict) by each later run, one source file per 100,000
addresses, a gate evaluation per run. Then times each report query (``QUERIES``), the
whole ``collect`` + ``render`` as ``mailsift report`` does it, the page's size, and the
split a flow run makes: ``prefetch`` while its quality gate runs, the rest after.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_warehouse import STATUSES, synthetic_results  # noqa: E402
from warehouse import Warehouse  # noqa: E402
from warehouse.report import QUERIES, SNAPSHOT, collect, prefetch, render  # noqa: E402

__all__ = ["main"]


def build(wh: Warehouse, n: int, runs: int) -> int:
    start = datetime.now(UTC) - timedelta(days=runs)
    frame = synthetic_results(n, start)
    wh.upsert_contacts(
        pl.DataFrame({
            "source": pl.select(pl.format("crm-{}.csv", pl.int_range(0, n) // 100_000)).to_series(),
            "row_number": pl.int_range(1, n + 1, eager=True),
            "record_id": pl.Series([None] * n, dtype=pl.String),
            "email": frame.get_column("email"),
        }),
        run_id="run-0", seen_at=start,
    )
    total = 0
    for r in range(runs):
        at = start + timedelta(days=r)
        wh.start_run(f"run-{r}", "verify-crm-exports", "local", at)
        if r == 0:
            batch = frame
        else:  # a tenth re-verified, the verdicts turned by one
            tenth = frame.slice(((r - 1) * n // 10) % n, n // 10)
            batch = tenth.with_columns(
                status=pl.col("status").replace_strict(dict(zip(STATUSES, STATUSES[1:] + STATUSES[:1], strict=True))),
                verified_at=pl.col("verified_at") + pl.duration(days=r),
            ).with_columns(score=pl.col("status").replace_strict(
                {"valid": 0.9, "invalid": 0.1, "risky": 0.5, "unknown": 0.4}, return_dtype=pl.Float64))
        total += wh.append_verifications(batch, run_id=f"run-{r}", backend="local")
        wh.finish_run(f"run-{r}", "completed", at + timedelta(hours=1))
        wh.record_quality_run(run_id=f"run-{r}", scope="run", checked_at=at + timedelta(hours=1),
                              is_passed=r % 5 != 4, n_rows=batch.height, unknown_share=0.25,
                              max_unknown_share=0.2)
    return total


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addresses", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=12)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mailsift-bench-report-") as tmp:
        db = Path(tmp) / "report.duckdb"
        with Warehouse.open(db) as wh:
            t0 = time.perf_counter()
            total = build(wh, args.addresses, args.runs)
            print(f"warehouse: {args.addresses:,} addresses, {args.runs} runs, {total:,} verifications "
                  f"(built in {time.perf_counter() - t0:.1f} s)")
        with Warehouse.open(db, read_only=True) as wh:
            for name, sql in {"snapshot": SNAPSHOT, **QUERIES}.items():
                t0 = time.perf_counter()
                rows = wh.query(sql).height
                if name == "snapshot":
                    rows = wh.query("SELECT count(*) AS n FROM report_latest").item()
                print(f"  query {name:<16} {time.perf_counter() - t0:7.2f} s  {rows:>9,} rows", flush=True)
            wh.query("DROP TABLE temp.report_latest")
            t0 = time.perf_counter()
            page = render(collect(wh))
            print(f"collect + render in one go (`mailsift report`) {time.perf_counter() - t0:7.2f} s; "
                  f"page {len(page.encode()) / 1024:.0f} KiB")
            t0 = time.perf_counter()
            early = prefetch(wh)
            t1 = time.perf_counter()
            render(collect(wh, early))
            t2 = time.perf_counter()
            print(f"as a flow run does it: prefetch {t1 - t0:7.2f} s while its quality gate runs, "
                  f"then collect + render {t2 - t1:7.2f} s once the run has ended (what it adds)")


if __name__ == "__main__":
    main()
