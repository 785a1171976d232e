"""polars frames the warehouse reads and writes, with their exact schemas.

A *results frame* holds :meth:`mailsift.result.VerificationResult.to_row` rows: the
contract's fields with the checks flattened under their own names. A *history frame* is a
results frame plus where each row came from (``run_id``, ``backend``, ``verification_id``),
as :meth:`warehouse.store.Warehouse.latest` and ``fresh_results`` return it.
"""

from __future__ import annotations

from collections.abc import Iterable

import polars as pl

from mailsift.result import VerificationResult

from .schema import CHECK_COLUMNS

__all__ = [
    "CONTACT_ROWS_SCHEMA",
    "HISTORY_COLUMNS",
    "HISTORY_SCHEMA",
    "RESULT_COLUMNS",
    "RESULT_SCHEMA",
    "coerce_contact_rows",
    "coerce_results",
    "results_frame",
    "results_from_frame",
    "utc_datetimes",
]

UTC_MICROS = pl.Datetime("us", "UTC")

#: ``VerificationResult.to_row()`` keys, in table order, with their polars types.
RESULT_SCHEMA: dict[str, pl.DataType] = {
    "email": pl.String(),
    "status": pl.String(),
    "score": pl.Float64(),
    "reason": pl.String(),
    **{name: pl.Boolean() for name in CHECK_COLUMNS},
    "suggestion": pl.String(),
    "provider": pl.String(),
    "mx_host": pl.String(),
    "smtp_code": pl.Int32(),
    "smtp_message": pl.String(),
    "verified_at": UTC_MICROS,
}
RESULT_COLUMNS: tuple[str, ...] = tuple(RESULT_SCHEMA)

#: A results frame plus provenance, as read back from the ``verifications`` table.
HISTORY_SCHEMA: dict[str, pl.DataType] = {
    **RESULT_SCHEMA,
    "run_id": pl.String(),
    "backend": pl.String(),
    "verification_id": pl.String(),
}
HISTORY_COLUMNS: tuple[str, ...] = tuple(HISTORY_SCHEMA)

#: What :meth:`Warehouse.upsert_contacts` takes; ``domain`` may be left out (derived).
CONTACT_ROWS_SCHEMA: dict[str, pl.DataType] = {
    "source": pl.String(),
    "row_number": pl.Int64(),
    "record_id": pl.String(),
    "email": pl.String(),
    "domain": pl.String(),
}


def results_frame(results: Iterable[VerificationResult]) -> pl.DataFrame:
    """A results frame (:data:`RESULT_SCHEMA`) from results; empty input gives an empty
    frame with the same schema."""
    columns: dict[str, list] = {name: [] for name in RESULT_COLUMNS}
    for result in results:
        row = result.to_row()
        for name, values in columns.items():
            values.append(row[name])
    return pl.DataFrame(columns, schema=RESULT_SCHEMA)


def results_from_frame(frame: pl.DataFrame) -> list[VerificationResult]:
    """The inverse of :func:`results_frame` (extra columns are ignored)."""
    return [VerificationResult.from_dict(row) for row in frame.iter_rows(named=True)]


def utc_datetimes(expr: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    """``expr`` as UTC microsecond datetimes; naive values are taken as UTC, as
    :meth:`VerificationResult.from_dict` does."""
    if isinstance(dtype, pl.Datetime):
        if dtype.time_zone is None:
            expr = expr.dt.replace_time_zone("UTC")
        elif dtype.time_zone != "UTC":
            expr = expr.dt.convert_time_zone("UTC")
        return expr.dt.cast_time_unit("us")
    if dtype == pl.String:
        return expr.str.to_datetime(time_unit="us", time_zone="UTC")
    return expr.cast(UTC_MICROS)


def _require(frame: pl.DataFrame, names: Iterable[str], what: str) -> None:
    missing = [name for name in names if name not in frame.columns]
    if missing:
        raise ValueError(f"{what} lacks column(s) {', '.join(missing)}; has {frame.columns}")


def coerce_results(frame: pl.DataFrame) -> pl.DataFrame:
    """Exactly the :data:`RESULT_SCHEMA` columns, cast; raise ``ValueError`` when one is
    missing or cannot be cast."""
    _require(frame, RESULT_COLUMNS, "a results frame")
    exprs = []
    for name, dtype in RESULT_SCHEMA.items():
        if name == "verified_at":
            exprs.append(utc_datetimes(pl.col(name), frame.schema[name]).alias(name))
        else:
            exprs.append(pl.col(name).cast(dtype, strict=True))
    try:
        return frame.select(exprs)
    except pl.exceptions.PolarsError as exc:
        raise ValueError(f"a results frame does not fit the results schema: {exc}") from exc


def coerce_contact_rows(frame: pl.DataFrame) -> pl.DataFrame:
    """Exactly the :data:`CONTACT_ROWS_SCHEMA` columns, cast (``domain`` null if absent)."""
    _require(frame, ("source", "row_number", "record_id", "email"), "a contact rows frame")
    if "domain" not in frame.columns:
        frame = frame.with_columns(pl.lit(None, dtype=pl.String).alias("domain"))
    try:
        return frame.select(
            pl.col(name).cast(dtype, strict=True) for name, dtype in CONTACT_ROWS_SCHEMA.items()
        )
    except pl.exceptions.PolarsError as exc:
        raise ValueError(f"a contact rows frame does not fit its schema: {exc}") from exc
