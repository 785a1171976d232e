"""Throughput of normalize + dedupe (and domain batching, and CSV extract) on messy rows.

    .venv/bin/python benchmarks/bench_normalize.py [--rows 1000000] [--seed 7]

Generates a CRM-like list: Zipf-distributed domains, 20 % of rows case-variant
duplicates of other rows, some ``Name <addr>``, ``mailto:``, NBSP / zero-width padding,
trailing punctuation and blank cells. Prints rows/s per step and the peak RSS.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

try:
    from tasks.extract import EMAIL_RAW, ROW, SOURCE, read_source
except ImportError:  # run as a script from a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tasks.extract import EMAIL_RAW, ROW, SOURCE, read_source
from tasks.normalize import batches_by_domain, dedupe, normalize

__all__ = ["main", "messy_rows"]


def messy_rows(n: int, seed: int = 7) -> pl.DataFrame:
    """``n`` rows shaped like :func:`tasks.extract.read_source` output."""
    rng = np.random.default_rng(seed)
    n_domains = max(10, n // 50)
    ranks = np.arange(1, n_domains + 1)
    weights = 1.0 / ranks**1.1  # Zipf-ish: a few huge providers, a long tail
    domain_idx = rng.choice(n_domains, size=n, p=weights / weights.sum())
    dup = rng.random(n) < 0.20
    # a duplicate row copies the person of an earlier row (case-varied below)
    person = np.where(dup, rng.integers(0, n, size=n), np.arange(n))
    domain_idx = domain_idx[person]
    style = rng.random(n)
    df = pl.DataFrame({"person": person, "domain_idx": domain_idx, "dup": dup, "style": style})
    local = pl.format("first{}.last", pl.col("person"))
    domain = pl.format("company{}.test", pl.col("domain_idx"))
    addr = pl.concat_str([local, pl.lit("@"), domain])
    varied = (
        pl.when(pl.col("person") % 2 == 0)
        .then(addr.str.to_uppercase())
        .otherwise(
            pl.concat_str([local.str.to_titlecase(), pl.lit("@"), domain.str.to_uppercase()])
        )
    )
    addr = pl.when(pl.col("dup")).then(varied).otherwise(addr)
    s = pl.col("style")
    raw = (
        pl.when(s < 0.05)
        .then(pl.format("First Last <{}>", addr))
        .when(s < 0.07)
        .then(pl.format("mailto:{}?subject=Hi", addr))
        .when(s < 0.10)
        .then(pl.format("\u00a0{} \u200b", addr))
        .when(s < 0.12)
        .then(pl.format("{},", addr))
        .when(s < 0.14)
        .then(pl.lit(None, dtype=pl.String))
        .otherwise(addr)
    )
    return df.select(
        pl.format("Person {}", pl.col("person")).alias("Name"),
        raw.alias("Email"),
        pl.lit("bench.csv").alias(SOURCE),
        pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias(ROW),
        pl.lit(None, dtype=pl.String).alias("__ms_record_id"),
        raw.alias(EMAIL_RAW),
    )


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--skip-extract", action="store_true", help="skip the CSV read step")
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    rows = messy_rows(args.rows, args.seed)
    print(
        f"generated {rows.height:,} rows in {time.perf_counter() - t0:.2f} s "
        f"(peak RSS so far {peak_rss_mb():.0f} MB)"
    )

    t0 = time.perf_counter()
    normalized = normalize(rows)
    t_norm = time.perf_counter() - t0
    t0 = time.perf_counter()
    unique = dedupe(normalized)
    t_dedupe = time.perf_counter() - t0
    t0 = time.perf_counter()
    batches = batches_by_domain(unique, args.batch_size)
    t_batch = time.perf_counter() - t0

    n = rows.height
    total = t_norm + t_dedupe
    print(f"normalize          {t_norm:6.2f} s  {n / t_norm:12,.0f} rows/s")
    print(f"dedupe             {t_dedupe:6.2f} s  {n / t_dedupe:12,.0f} rows/s")
    print(f"normalize+dedupe   {total:6.2f} s  {n / total:12,.0f} rows/s")
    print(
        f"batches_by_domain  {t_batch:6.2f} s  {unique.height / t_batch:12,.0f} addresses/s "
        f"-> {len(batches):,} batches of <= {args.batch_size}, "
        f"{unique['domain'].n_unique():,} domains"
    )
    print(
        f"unique addresses {unique.height:,} of {n:,} rows "
        f"({normalized['__ms_key'].null_count():,} without email)"
    )

    if not args.skip_extract:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "bench.csv"
            rows.select("Name", "Email").write_csv(path)
            t0 = time.perf_counter()
            extracted = read_source(str(path))
            t_read = time.perf_counter() - t0
            size_mb = path.stat().st_size / 2**20
        print(
            f"read_source (CSV)  {t_read:6.2f} s  {extracted.height / t_read:12,.0f} rows/s "
            f"({size_mb:.0f} MB file)"
        )
    print(f"peak RSS {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
