"""Benchmark: the quality gate (tasks/quality.py) over a million verification results.

    .venv/bin/python benchmarks/bench_gate.py [--rows 1000000] [--repeat 2] [--no-warehouse]

Builds realistic results (55% valid, 25% invalid, 12% risky, 8% unknown; every reason of
mailsift.result.REASONS; checks consistent with the verdicts; checks up to 29 days old),
optionally loads them into a DuckDB warehouse in a temporary directory and reads
``latest_verifications`` back (what ``mailsift gate`` does), then times:

- ``import great_expectations`` (paid once per process; it compiles every module when
  bytecode is not cached, e.g. with PYTHONDONTWRITEBYTECODE=1),
- ``run_gate`` end to end, the first call (GX's lazy set-up) and warm calls,
- its parts: building the frame GX sees (vectorized pandas) and the GX validation,
- a failing gate (examples picked with pandas masks).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import polars as pl

from mailsift.result import REASONS, SCORE_BANDS
from warehouse.frames import RESULT_SCHEMA

SHARES = {"valid": 0.55, "invalid": 0.25, "risky": 0.12, "unknown": 0.08}


def realistic_results(n: int, *, now: datetime, seed: int = 7) -> pl.DataFrame:
    """``n`` contract-conforming results as a polars results frame (RESULT_SCHEMA)."""
    rng = np.random.default_rng(seed)
    statuses = np.array(list(SHARES))
    status = rng.choice(statuses, size=n, p=list(SHARES.values()))
    reason = np.empty(n, dtype=object)
    score = np.empty(n, dtype="float64")
    for name in statuses:
        rows = status == name
        words = [w for w, s in REASONS.items() if s == name]
        weights = np.array(
            [
                8.0 if w in ("accepted", "mailbox_not_found", "catch_all", "greylisted") else 1.0
                for w in words
            ]
        )
        reason[rows] = rng.choice(words, size=int(rows.sum()), p=weights / weights.sum())
        low, high = SCORE_BANDS[name]
        score[rows] = np.round(rng.uniform(low, high - 0.001, size=int(rows.sum())), 3)
    syntax_ok = reason != "syntax"
    domain_ok = syntax_ok & ~np.isin(reason, ["nxdomain", "special_use"])
    mx_ok = domain_ok & ~np.isin(reason, ["no_mx", "null_mx"])
    smtp_checked = mx_ok & ~np.isin(
        reason, ["disposable", "dns_timeout", "dns_error", "smtp_disabled", "unverifiable"]
    )
    ids = np.arange(n)
    providers = np.array(["google", "microsoft", "yahoo", "other"])

    def when(mask: np.ndarray, values: np.ndarray) -> pl.Series:
        """``values`` where ``mask``, null elsewhere (a check that was not made)."""
        return pl.select(pl.when(pl.Series(mask)).then(pl.Series(values))).to_series()

    frame = pl.DataFrame(
        {
            "i": ids,
            "d": ids % 25_000,
            "status": status,
            "score": score,
            "reason": reason.astype(str),
            "syntax_valid": syntax_ok,
            "domain_exists": when(syntax_ok, domain_ok),
            "mx_found": when(domain_ok, mx_ok),
            "smtp_reachable": when(
                smtp_checked, ~np.isin(reason, ["smtp_timeout", "smtp_unreachable", "smtp_blocked"])
            ),
            "disposable": reason == "disposable",
            "role_based": reason == "role_based",
            "catch_all": when(smtp_checked, reason == "catch_all"),
            "free_provider": rng.random(n) < 0.3,
            "provider": providers[rng.integers(0, 4, n)],
            "smtp_code": when(smtp_checked, np.where(status == "invalid", 550, 250)),
            "age_s": rng.integers(0, 29 * 86_400, n),
        }
    )
    frame = frame.with_columns(
        pl.format("first.last{}@company-{}.test", pl.col("i"), pl.col("d")).alias("email"),
        pl.lit(None, pl.String).alias("suggestion"),
        pl.format("mx{}.company-{}.test", pl.col("i") % 2, pl.col("d")).alias("mx_host"),
        pl.when(pl.col("smtp_code") == 550)
        .then(pl.lit("5.1.1 no such user"))
        .when(pl.col("smtp_code") == 250)
        .then(pl.lit("2.1.5 OK"))
        .alias("smtp_message"),
        (pl.lit(now) - pl.duration(seconds=pl.col("age_s"))).alias("verified_at"),
    )
    return frame.select(pl.col(name).cast(dtype) for name, dtype in RESULT_SCHEMA.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=2, help="warm run_gate calls")
    parser.add_argument(
        "--no-warehouse",
        action="store_true",
        help="skip the DuckDB round trip (gate the frame as built)",
    )
    args = parser.parse_args()

    now = datetime.now(UTC)
    t = time.perf_counter()
    results = realistic_results(args.rows, now=now)
    print(f"rows: {results.height:,}  (built in {time.perf_counter() - t:.2f} s)")
    print("status mix:", dict(results["status"].value_counts().sort("status").iter_rows()))

    if args.no_warehouse:
        df = results.to_pandas()
    else:
        from warehouse import Warehouse

        with tempfile.TemporaryDirectory() as tmp, Warehouse.open(Path(tmp) / "w.duckdb") as wh:
            t = time.perf_counter()
            wh.append_verifications(results, run_id="bench", backend="sandbox")
            load_s = time.perf_counter() - t
            t = time.perf_counter()
            df = wh.latest_pandas()
            read_s = time.perf_counter() - t
        print(f"warehouse: append {load_s:.2f} s, latest_verifications -> pandas {read_s:.2f} s")

    from tasks import quality

    bytecode = "off (PYTHONDONTWRITEBYTECODE)" if sys.dont_write_bytecode else "on"
    already = "great_expectations" in sys.modules
    t = time.perf_counter()
    quality._import_gx()
    import_s = time.perf_counter() - t
    print(
        f"import great_expectations: {import_s:.2f} s (bytecode cache {bytecode}"
        f"{', already imported' if already else ''})"
    )

    config = quality.GateConfig(now=now + timedelta(seconds=1))
    t = time.perf_counter()
    report = quality.run_gate(df, config)
    first_s = time.perf_counter() - t
    assert report.is_passed, report.message
    print(f"run_gate, first call: {first_s:.2f} s   (with the import: {import_s + first_s:.2f} s)")

    warm = []
    for _ in range(args.repeat):
        t = time.perf_counter()
        quality.run_gate(df, config)
        warm.append(time.perf_counter() - t)
    if warm:
        print(
            f"run_gate, warm: median {statistics.median(warm) * 1000:.1f} ms, "
            f"best {min(warm) * 1000:.1f} ms of {len(warm)}"
        )

    t = time.perf_counter()
    data = quality._GateData.build(df, config, config.now)
    build_s = time.perf_counter() - t
    t = time.perf_counter()
    quality._validate(data, config, None)
    validate_s = time.perf_counter() - t
    print(f"  parts: gate frame {build_s:.2f} s, GX validation {validate_s:.2f} s")

    broken = df.copy()
    broken.loc[broken.index[:1000], "status"] = "deliverable"
    broken.loc[broken.index[1000:2000], "reason"] = "mailbox_gone"
    t = time.perf_counter()
    failing = quality.run_gate(broken, config)
    fail_s = time.perf_counter() - t
    assert failing.failed_names == ["status_in_set", "reason_in_set"], failing.message
    print(f"run_gate, failing (2 expectations, examples): {fail_s:.2f} s")
    print()
    print(quality.render_table(report))
    print(f"\npython {sys.version.split()[0]}, {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
