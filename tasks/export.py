"""Write the verified rows back out, one CSV per status, original columns kept.

Files under the output directory (all written on every run, header-only when empty):

``valid.csv`` ``risky.csv`` ``invalid.csv`` ``unknown.csv``
    every source row whose address got that status;
``no_email.csv``
    every source row without any email (its result columns are empty).

All five share one header: the source's original columns in their original order (the
union, in first-seen order, when several sources differ), then ``status``, ``score``,
``reason``, ``suggestion``, ``verified_at`` (ISO 8601 UTC). When an original column already
carries one of those five names (case-insensitive), all five get a ``mailsift_`` prefix.
Rows are never dropped: the files together hold every input row exactly once, in input
order. A row whose address has no result is written to ``unknown.csv`` with reason
``not_verified``.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path

import polars as pl

from mailsift.result import STATUSES
from tasks.normalize import KEY, normalize

__all__ = ["NOT_VERIFIED", "OUTPUT_FILES", "RESULT_COLUMNS", "export_by_status"]

RESULT_COLUMNS: tuple[str, ...] = ("status", "score", "reason", "suggestion", "verified_at")
OUTPUT_FILES: tuple[str, ...] = (*STATUSES, "no_email")
#: Reason written for a row whose address has no verification result.
NOT_VERIFIED = "not_verified"

_RESULT_KEY = "__ms_result_key"


def export_by_status(rows: pl.DataFrame, results: pl.DataFrame, out_dir: Path) -> dict[str, Path]:
    """Write ``valid.csv``, ``risky.csv``, ``invalid.csv``, ``unknown.csv`` and
    ``no_email.csv`` under ``out_dir``; return ``{"valid": path, ..., "no_email": path}``.

    ``rows``: the source rows (original columns plus ``__ms_*``; ``__ms_key`` is computed
    when missing). ``results``: one row per address with ``status``, ``score``, ``reason``,
    ``suggestion``, ``verified_at``, keyed by ``__ms_key`` or ``key`` when present, else by
    ``email`` compared lower-cased (the ``email`` of :func:`tasks.normalize.dedupe`).
    Each file is written to a temporary file in ``out_dir`` and renamed into place only
    once all five are complete, so a crash never leaves a half-written file.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if KEY not in rows.columns:
        rows = normalize(rows)
    originals = [c for c in rows.columns if not c.startswith("__ms_")]
    taken = {c.casefold() for c in originals}
    prefix = "mailsift_" if any(name in taken for name in RESULT_COLUMNS) else ""
    out_names = {name: f"{prefix}{name}" for name in RESULT_COLUMNS}

    joined = rows.select([*originals, KEY]).join(
        _prepared_results(results),
        left_on=KEY,
        right_on=_RESULT_KEY,
        how="left",
        maintain_order="left",
    )
    has_email = pl.col(KEY).is_not_null()
    missing = has_email & pl.col("status").is_null()
    joined = joined.with_columns(
        pl.when(missing).then(pl.lit("unknown")).otherwise(pl.col("status")).alias("status"),
        pl.when(missing).then(pl.lit(NOT_VERIFIED)).otherwise(pl.col("reason")).alias("reason"),
    )
    bucket = (
        pl.when(~has_email)
        .then(pl.lit("no_email"))
        .when(pl.col("status").is_in(list(STATUSES)))
        .then(pl.col("status"))
        .otherwise(pl.lit("unknown"))
    )
    joined = joined.with_columns(bucket.alias("__ms_bucket"))
    columns = [*originals, *(pl.col(n).alias(out_names[n]) for n in RESULT_COLUMNS)]

    frames = {
        name: joined.filter(pl.col("__ms_bucket") == name).select(columns) for name in OUTPUT_FILES
    }
    return _write_all(frames, out_dir)


def _prepared_results(results: pl.DataFrame) -> pl.DataFrame:
    """Results keyed for the join, one row per key (the last one wins), types for CSV."""
    if "__ms_key" in results.columns:
        key = pl.col("__ms_key")
    elif "key" in results.columns:
        key = pl.col("key")
    elif "email" in results.columns:
        key = pl.col("email").str.to_lowercase()
    else:
        raise ValueError("results need an `email` (or `key` / `__ms_key`) column")
    missing = [c for c in ("status",) if c not in results.columns]
    if missing:
        raise ValueError(f"results lack columns: {', '.join(missing)}")
    exprs = [key.cast(pl.String).alias(_RESULT_KEY)]
    for name in RESULT_COLUMNS:
        if name not in results.columns:
            exprs.append(pl.lit(None, dtype=pl.String).alias(name))
        elif name == "verified_at":
            exprs.append(_iso_utc(results.schema[name]).alias(name))
        elif name == "score":
            exprs.append(pl.col(name).cast(pl.Float64, strict=False))
        else:
            exprs.append(pl.col(name).cast(pl.String))
    return (
        results.select(exprs)
        .filter(pl.col(_RESULT_KEY).is_not_null())
        .unique(_RESULT_KEY, keep="last", maintain_order=True)
    )


def _iso_utc(dtype: pl.DataType) -> pl.Expr:
    column = pl.col("verified_at")
    if isinstance(dtype, pl.Datetime):
        if dtype.time_zone is not None:
            column = column.dt.convert_time_zone("UTC")
        return column.dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    return column.cast(pl.String)


def _write_all(frames: dict[str, pl.DataFrame], out_dir: Path) -> dict[str, Path]:
    temps: dict[str, Path] = {}
    try:
        for name, frame in frames.items():
            # Not mkstemp: its 0600 mode would stick to the output; "x" still never
            # clobbers another writer's file.
            tmp = out_dir / f".{name}.csv.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp"
            temps[name] = tmp
            with tmp.open("xb") as fh:
                frame.write_csv(fh)
                fh.flush()
                os.fsync(fh.fileno())
        paths: dict[str, Path] = {}
        for name, tmp in temps.items():
            target = out_dir / f"{name}.csv"
            os.replace(tmp, target)
            paths[name] = target
        return paths
    finally:
        for tmp in temps.values():
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
