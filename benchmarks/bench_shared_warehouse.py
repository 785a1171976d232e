"""The shared warehouse: DuckDB file vs PostgreSQL, the figures behind choosing the engine.

Run: ``.venv/bin/python benchmarks/bench_shared_warehouse.py [--rows 1000000] [--pg URL]``

Without ``--pg`` a throw-away PostgreSQL is started with ``pgserver`` (a dev dependency;
loopback Unix socket, deleted at the end). For each engine, one line per step with wall
time and rows per second:

1. ``append_verifications`` of ``--rows`` results (DuckDB: Arrow scan; PostgreSQL: ADBC
   binary COPY into a temp table, then ``INSERT ... ON CONFLICT DO NOTHING``), then the
   same rows again (idempotent: 0 new)
2. ``fresh_results`` for every email plus as many never verified (the run's look-up)
3. ``latest_pandas()``: the quality gate's read of ``latest_verifications``
4. ``upsert_contacts`` of one source row per email
5. ``query()`` of a DuckDB-SQL recipe (on PostgreSQL: over a snapshot)
6. PostgreSQL only: two writers loading half the rows each at the same time
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_warehouse import synthetic_results, timed  # noqa: E402
from warehouse import Warehouse  # noqa: E402

__all__ = ["main"]

RECIPE = "SELECT status, reason, count(*) AS n FROM latest_verifications GROUP BY ALL ORDER BY n DESC"


def steps(target: str, frame: pl.DataFrame, now: datetime) -> None:
    n = frame.height
    emails = frame.get_column("email")
    with Warehouse.open(target) as wh:
        timed("append_verifications (first load)", n,
              lambda: wh.append_verifications(frame, run_id="bench-1", backend="sandbox"))
        again = timed("append_verifications again (0 new)", n,
                      lambda: wh.append_verifications(frame, run_id="bench-1", backend="sandbox"))
        assert again == 0, again
        never = pl.select(pl.format("never{}@x.test", pl.int_range(0, n))).to_series()
        asked = pl.concat([emails, never.alias("email")])
        fresh = timed(f"fresh_results for {asked.len():,} emails", asked.len(),
                      lambda: wh.fresh_results(asked, now=now + timedelta(hours=1)))
        assert fresh.height == n - frame.filter(pl.col("status") == "unknown").height
        gate = timed("latest_pandas() (the gate's read)", n, wh.latest_pandas)
        assert len(gate) == n
        rows = pl.DataFrame({
            "source": ["bench.csv"] * n,
            "row_number": pl.int_range(1, n + 1, eager=True),
            "record_id": [None] * n,
            "email": emails,
        }, schema={"source": pl.String, "row_number": pl.Int64, "record_id": pl.String, "email": pl.String})
        timed("upsert_contacts (new contacts)", n, lambda: wh.upsert_contacts(rows, run_id="bench-1", seen_at=now))
        timed("upsert_contacts (same emails, next run)", n, lambda: wh.upsert_contacts(rows, run_id="bench-2"))
        timed("query(): a DuckDB SQL recipe", n, lambda: wh.query(RECIPE))


def two_writers(target: str, frame: pl.DataFrame) -> None:
    halves = [frame.head(frame.height // 2), frame.tail(frame.height - frame.height // 2)]
    counts = [0, 0]

    def load(i: int) -> None:
        with Warehouse.open(target) as wh:
            counts[i] = wh.append_verifications(halves[i], run_id=f"bench-w{i}", backend="sandbox")

    def both() -> int:
        threads = [threading.Thread(target=load, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return sum(counts)

    total = timed("two writers at once, half the rows each", frame.height, both)
    assert total == frame.height, total


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--pg", default=None, help="postgresql:// URL of an empty database (default: pgserver)")
    args = parser.parse_args(argv)
    now = datetime.now(UTC)
    frame = synthetic_results(args.rows, now)
    tmp = Path(tempfile.mkdtemp(prefix="mailsift-bench-"))
    tmp.chmod(0o755)
    server = None
    try:
        print(f"== DuckDB file, {args.rows:,} verifications")
        steps(str(tmp / "bench.duckdb"), frame, now)
        url = args.pg
        if url is None:
            import pgserver

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                started = time.perf_counter()
                server = pgserver.get_server(tmp / "pg", cleanup_mode="delete")
                print(f"(pgserver started in {time.perf_counter() - started:.2f} s)")
            url = server.get_uri()
        print(f"== PostgreSQL, {args.rows:,} verifications")
        steps(url, frame, now)
        if server is not None:
            server.psql("CREATE SCHEMA writers;")
            two_writers(f"{url}&options=-csearch_path%3Dwriters", frame)
    finally:
        if server is not None:
            server.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
