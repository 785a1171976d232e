"""Warehouse throughput: bulk loads through Arrow and freshness look-ups at scale.

Run: ``.venv/bin/python benchmarks/bench_warehouse.py [--rows 1000000] [--db PATH]``

Prints one line per step with its wall time and rows per second, on a real DuckDB file
(a temporary directory unless ``--db`` is given). Steps:

1. build a results frame of ``--rows`` verifications (polars, vectorized)
2. ``append_verifications``: the first load, then the same rows again (idempotent, 0 new)
3. ``fresh_results`` for every email plus as many never-verified ones
4. ``latest()`` over the whole history, ``stale_emails`` after aging a tenth of it
5. ``upsert_contacts`` of one source row per email
6. ``results_frame`` from ``VerificationResult`` objects (``--objects``, default 100,000)
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from mailsift.result import VerificationResult
from warehouse import RESULT_SCHEMA, Warehouse, results_frame

__all__ = ["main", "synthetic_results"]

STATUSES = ["valid", "invalid", "risky", "unknown"]
LOW = {"valid": 0.7, "invalid": 0.0, "risky": 0.3, "unknown": 0.3}
REASON = {
    "valid": "accepted",
    "invalid": "mailbox_not_found",
    "risky": "catch_all",
    "unknown": "greylisted",
}


def synthetic_results(n: int, at: datetime) -> pl.DataFrame:
    """``n`` results over 5,000 domains, statuses in turn, a microsecond apart."""
    i = pl.int_range(0, n, eager=True)
    status = pl.Series(STATUSES).gather(i % 4)
    frame = pl.DataFrame({"i": i, "status": status}).with_columns(
        email=pl.format("user{}@domain{}.test", pl.col("i"), pl.col("i") % 5000),
        score=pl.col("status").replace_strict(LOW, return_dtype=pl.Float64)
        + (pl.col("i") % 1000) * 1e-4,
        reason=pl.col("status").replace_strict(REASON, return_dtype=pl.String),
        verified_at=pl.lit(at, dtype=pl.Datetime("us", "UTC"))
        + pl.duration(microseconds=pl.col("i")),
        smtp_code=pl.when(pl.col("status") == "valid").then(250).otherwise(None),
    )
    bools = {name: (pl.col("i") % 3 == 0) for name, t in RESULT_SCHEMA.items() if t == pl.Boolean}
    strings = {
        name: pl.lit(None, pl.String)
        for name in ("suggestion", "provider", "mx_host", "smtp_message")
    }
    return frame.with_columns(**bools, **strings).select(
        pl.col(name).cast(dtype) for name, dtype in RESULT_SCHEMA.items()
    )


def timed(label: str, rows: int, fn: Callable[[], Any]) -> Any:
    start = time.perf_counter()
    value = fn()
    seconds = time.perf_counter() - start
    rate = f"{rows / seconds:>12,.0f} rows/s" if seconds > 0 and rows else ""
    print(f"{label:<58} {seconds:8.2f} s {rate}", flush=True)
    return value


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--objects", type=int, default=100_000)
    parser.add_argument("--db", type=Path, default=None, help="warehouse file (default: temp)")
    args = parser.parse_args(argv)
    n = args.rows
    with tempfile.TemporaryDirectory(prefix="mailsift-bench-") as tmp:
        db = args.db or Path(tmp) / "bench.duckdb"
        print(f"warehouse {db}, {n:,} verifications")
        now = datetime.now(UTC)
        frame = timed("build results frame (polars)", n, lambda: synthetic_results(n, now))
        emails = frame.get_column("email")
        with Warehouse.open(db) as wh:
            inserted = timed(
                "append_verifications (Arrow, first load)",
                n,
                lambda: wh.append_verifications(frame, run_id="bench-1", backend="sandbox"),
            )
            assert inserted == n, inserted
            again = timed(
                "append_verifications again (idempotent: 0 new)",
                n,
                lambda: wh.append_verifications(frame, run_id="bench-1", backend="sandbox"),
            )
            assert again == 0, again
            never = pl.select(pl.format("never{}@x.test", pl.int_range(0, n))).to_series()
            asked = pl.concat([emails, never.alias("email")])
            fresh = timed(
                f"fresh_results for {asked.len():,} emails (1 in 2 never verified)",
                asked.len(),
                lambda: wh.fresh_results(asked, now=now + timedelta(hours=1)),
            )
            expected = n - frame.filter(pl.col("status") == "unknown").height
            assert fresh.height == expected, (fresh.height, expected)
            latest = timed("latest() over the whole history", n, wh.latest)
            assert latest.height == n
            tenth = emails.head(n // 10)
            timed(
                f"age_verifications(40 days) for {tenth.len():,} emails",
                tenth.len(),
                lambda: wh.age_verifications(40, tenth),
            )
            stale = timed("stale_emails()", n, wh.stale_emails)
            assert len(stale) == tenth.len()
            rows = pl.DataFrame(
                {
                    "source": pl.Series(["bench.csv"] * n),
                    "row_number": pl.int_range(1, n + 1, eager=True),
                    "record_id": pl.select(pl.format("crm-{}", pl.int_range(0, n))).to_series(),
                    "email": emails,
                }
            )
            timed(
                "upsert_contacts (new contacts)",
                n,
                lambda: wh.upsert_contacts(rows, run_id="bench-1", seen_at=now),
            )
            timed(
                "upsert_contacts (same emails, next run)",
                n,
                lambda: wh.upsert_contacts(rows, run_id="bench-2"),
            )
        print(f"{'file size':<58} {db.stat().st_size / 1e6:8.1f} MB")
        objects = [
            VerificationResult.from_dict(r) for r in frame.head(args.objects).iter_rows(named=True)
        ]
        timed(
            f"results_frame from {len(objects):,} VerificationResult",
            len(objects),
            lambda: results_frame(objects),
        )


if __name__ == "__main__":
    main()
