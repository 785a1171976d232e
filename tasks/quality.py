"""The quality gate: Great Expectations checks that block bad output.

Pure: no Prefect here (the flow wraps :func:`run_gate` in a task, the CLI's ``mailsift gate``
calls it over ``latest_verifications``). Great Expectations 1.x is imported inside
:func:`run_gate` only: the import costs seconds (GX loads its whole expectation registry), so nothing
else in mailsift pays for it. Its analytics are turned off before the import
(``GX_ANALYTICS_ENABLED=false`` and ``analytics_enabled=False`` in the context config), the
context is ephemeral (in-memory stores), and nothing is written to disk unless data docs
are asked for with ``docs_dir``.

The suite, one expectation per rule, each declared once in :data:`RULES` (name, GX
expectation, arguments, offending-row mask, note); the stable name is what reports,
artifacts, the ``quality_runs`` table and CI logs show:

==================================  =================================================
name                                rule
==================================  =================================================
``email_not_null``                  every row has an address (empty string = null)
``email_unique``                    one row per address (exact match, as stored)
``status_in_set``                   status is valid / invalid / risky / unknown
``score_in_range``                  0 <= score <= 1
``score_in_status_band``            the score sits in its status's band (SCORE_BANDS)
``reason_in_set``                   reason is one of mailsift.result.REASONS
``verified_at_not_null``            every row has a check time
``verified_at_not_future``          no check time after now (+ a small clock skew)
``verified_at_within_max_age``      no check older than max_age_days (when set)
``syntax_invalid_implies_invalid``  syntax_valid false -> status invalid
``disposable_implies_not_valid``    disposable true -> status not valid
``unknown_share_within_threshold``  share of unknown <= max_unknown_share (20%)
==================================  =================================================

Each problem is named once: a null status/reason/score is "not in the set/range" (nulls
are replaced by a visible sentinel, ``<null>`` or ``-1.0``, so GX counts them as unexpected
instead of skipping them); the band rule looks only at rows whose status is known and
whose score is a number in [0, 1], and the syntax rule only at rows whose status is known
-- the others already fail ``status_in_set`` or ``score_in_range``. Many ``invalid`` results are a dirty list, not a failure; many
``unknown`` ones mean our DNS or SMTP path is broken (port 25 blocked, resolver down), and
such output must not go out as if verified.

Cross-column rules run as GX expectations too, on helper columns computed with vectorized
pandas: the band rule checks a boolean column, and each implication checks a copy of
``status`` that is null outside the rows its condition selects (GX skips nulls, so it
judges those rows only; the report's ``element_count`` for them is GX's non-null count).
They were conditional expectations (``row_condition``): GX then filtered the frame with
``DataFrame.query`` for each metric of the two expectations: a warm gate over 10,000 rows
took 121 ms, now 95 (medians of 60 runs alternating old and new; a million rows: 874 ms,
now 839, 14 runs). The unknown share is
``expect_column_values_to_not_be_in_set(status, ["unknown"], mostly=1 - max_unknown_share)``
(so GX counts the unknown rows itself; ``expect_column_mean_to_be_between`` scans every
value in Python for Decimals, about a second per million rows). Example rows for a failed
rule are picked with pandas masks (GX's COMPLETE result format is far too slow on a
million rows).

An empty frame passes: there is nothing to export and nothing to be wrong. GX is not
even imported then, and no data docs are built.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mailsift.errors import ConfigError, WarehouseError
from mailsift.result import REASONS, SCORE_BANDS, STATUSES
from pipeline.settings import DEFAULTS

__all__ = [
    "EXPECTATION_NAMES",
    "RULES",
    "Rule",
    "REQUIRED_COLUMNS",
    "ExpectationResult",
    "GateConfig",
    "GateReport",
    "gate_exit_code",
    "render_table",
    "run_gate",
]

#: Columns the gate reads; the others of the contract may be present and are ignored.
REQUIRED_COLUMNS: tuple[str, ...] = (
    "email",
    "status",
    "score",
    "reason",
    "syntax_valid",
    "disposable",
    "verified_at",
)

#: Stand-ins for nulls in string / score columns, so GX counts a null as unexpected.
_NULL_TEXT = "<null>"
_NULL_SCORE = -1.0
#: Helper columns of the frame GX sees.
_BAND_COLUMN = "_score_in_status_band"
#: The status of the rows an implication applies to, null elsewhere (_GateData.build).
_SYNTAX_INVALID_STATUS = "_status_if_syntax_invalid"
_DISPOSABLE_STATUS = "_status_if_disposable"
_SUITE_NAME = "mailsift_gate"
_DOCS_SITE = "mailsift"
_MAX_EXAMPLES = 5
_EXAMPLE_COLUMNS: tuple[str, ...] = ("email", "status", "score", "reason", "verified_at")


@dataclass(frozen=True)
class GateConfig:
    """What the gate tolerates.

    ``max_unknown_share``: the largest share of ``unknown`` results (0..1) that may go
    out. ``max_age_days``: the oldest check that may be exported (``None``: no limit).
    ``now``: the reference time for the age and future rules (default: when the gate
    runs; naive values are taken as UTC). ``future_tolerance``: clock skew allowed
    between the machine that verified (e.g. a verification API) and this one.
    """

    max_unknown_share: float = DEFAULTS.max_unknown_share
    max_age_days: int | None = DEFAULTS.max_age_days
    now: datetime | None = None
    future_tolerance: timedelta = timedelta(minutes=5)

    def __post_init__(self) -> None:
        share = self.max_unknown_share
        if (
            isinstance(share, bool)
            or not isinstance(share, (int, float))
            or math.isnan(share)
            or not 0.0 <= share <= 1.0
        ):
            raise ConfigError(f"max_unknown_share must be a number in [0, 1], not {share!r}")
        days = self.max_age_days
        if days is not None and (isinstance(days, bool) or not isinstance(days, int) or days < 0):
            raise ConfigError(f"max_age_days must be a whole number >= 0 or None, not {days!r}")
        if self.now is not None:
            if not isinstance(self.now, datetime):
                raise ConfigError(f"now must be a datetime, not {self.now!r}")
            if self.now.tzinfo is None:
                object.__setattr__(self, "now", self.now.replace(tzinfo=UTC))
        if not isinstance(self.future_tolerance, timedelta) or self.future_tolerance < timedelta(0):
            raise ConfigError(
                f"future_tolerance must be a timedelta >= 0, not {self.future_tolerance!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_unknown_share": float(self.max_unknown_share),
            "max_age_days": self.max_age_days,
            "now": self.now.isoformat() if self.now else None,
            "future_tolerance_seconds": self.future_tolerance.total_seconds(),
        }


@dataclass(frozen=True)
class ExpectationResult:
    """The outcome of one expectation.

    ``element_count``: rows the expectation applies to (for the two implications, the
    rows whose condition holds). ``unexpected_count``: rows breaking it (for the unknown
    share: the number of ``unknown`` rows). ``observed``: a short figure for people (the
    share, the newest/oldest check, the offending values). ``examples``: up to five
    offending rows (email, status, score, reason, verified_at as strings; null as None),
    only for a failed expectation.
    """

    name: str
    expectation: str
    success: bool
    element_count: int
    unexpected_count: int
    observed: str | float | None = None
    examples: list[dict[str, str | None]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "expectation": self.expectation,
            "success": self.success,
            "element_count": self.element_count,
            "unexpected_count": self.unexpected_count,
            "observed": self.observed,
            "examples": [dict(row) for row in self.examples],
        }


@dataclass(frozen=True)
class GateReport:
    """The gate's verdict over one frame: every expectation, passed or not."""

    is_passed: bool
    results: tuple[ExpectationResult, ...]
    n_rows: int
    unknown_share: float
    checked_at: datetime
    config: GateConfig
    docs_index: str | None = None  # data docs index.html, when docs were built

    @property
    def failed(self) -> tuple[ExpectationResult, ...]:
        return tuple(result for result in self.results if not result.success)

    @property
    def failed_names(self) -> list[str]:
        return [result.name for result in self.failed]

    def result(self, name: str) -> ExpectationResult:
        """The result of the expectation called ``name`` (KeyError when not in the suite)."""
        for result in self.results:
            if result.name == name:
                return result
        raise KeyError(name)

    @property
    def message(self) -> str:
        """One line for a log, a failed flow run or an exception."""
        if self.is_passed:
            return (
                f"quality gate passed: {len(self.results)} expectations over {self.n_rows:,} "
                f"rows (unknown share {self.unknown_share:.1%})"
            )
        parts = [f"{r.name} ({_failure_figure(r)})" for r in self.failed]
        return (
            f"quality gate failed over {self.n_rows:,} rows, {len(parts)} of "
            f"{len(self.results)} expectations: " + "; ".join(parts)
        )

    def summary_lines(self) -> list[str]:
        """The verdict, the table, then example rows of each failed expectation."""
        lines = [self.message, "", *render_table(self).splitlines()]
        for result in self.failed:
            if result.examples:
                lines += ["", f"examples for {result.name}:"]
                lines += [f"  {_example_text(row)}" for row in result.examples]
        if self.docs_index:
            lines += ["", f"data docs: {self.docs_index}"]
        return lines

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (``json.dumps`` works as is), in the shape of ``quality_runs``."""
        return {
            "is_passed": self.is_passed,
            "n_rows": self.n_rows,
            "unknown_share": self.unknown_share,
            "max_unknown_share": float(self.config.max_unknown_share),
            "max_age_days": self.config.max_age_days,
            "checked_at": self.checked_at.isoformat(),
            "failed_expectations": self.failed_names,
            "results": [result.to_dict() for result in self.results],
            "config": self.config.to_dict(),
            "docs_index": self.docs_index,
        }


def gate_exit_code(report: GateReport) -> int:
    """0 when the gate passed, 1 when it failed (2, "cannot run", is the caller's)."""
    return 0 if report.is_passed else 1


def render_table(report: GateReport) -> str:
    """A plain-text table: expectation, PASS/FAIL, unexpected / rows, observed."""
    header = ("expectation", "result", "unexpected / rows", "observed")
    rows = [
        (
            r.name,
            "PASS" if r.success else "FAIL",
            f"{r.unexpected_count:,} / {r.element_count:,}",
            _observed_text(r.observed),
        )
        for r in report.results
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(3)]

    def line(cells: tuple[str, str, str, str]) -> str:
        first = "  ".join(
            cell.rjust(w) if i == 2 else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(cells[:3], widths, strict=False))
        )
        return f"{first}  {cells[3]}".rstrip()

    body = [line(header), *(line(row) for row in rows)]
    rule = "-" * max(len(text) for text in body)
    return "\n".join([body[0], rule, *body[1:]])


# --------------------------------------------------------------------------- the gate


def run_gate(
    df: pd.DataFrame,
    config: GateConfig = GateConfig(),
    *,
    docs_dir: Path | str | None = None,
) -> GateReport:
    """Validate verification results with the Great Expectations suite.

    ``df``: a pandas frame with at least :data:`REQUIRED_COLUMNS` (DuckDB ``.df()`` of
    ``latest_verifications`` or of a run's results, or polars ``.to_pandas()``; a polars
    frame is converted here). ``docs_dir``: build GX data docs there (``index.html``);
    without it nothing is written anywhere.

    Raises :class:`~mailsift.errors.WarehouseError` when a required column is missing
    (a wrong schema: the gate cannot run) and ``TypeError`` for something that is not a
    frame. A failed expectation is not an exception: see ``GateReport.is_passed``.
    """
    frame = _as_pandas(df)
    missing = [name for name in REQUIRED_COLUMNS if name not in frame.columns]
    if missing:
        raise WarehouseError(
            f"cannot run the quality gate: the results lack column(s) {', '.join(missing)} "
            f"(has: {', '.join(map(str, frame.columns))})"
        )
    now = config.now or datetime.now(UTC)
    n_rows = len(frame)
    if n_rows == 0:
        return _empty_report(config, now)

    data = _GateData.build(frame, config, now)
    outcomes = _validate(data, config, docs_dir)
    results = tuple(_result(name, outcomes[name], data) for name in data.names)
    docs_index = outcomes.get("__docs_index__")
    return GateReport(
        is_passed=all(r.success for r in results),
        results=results,
        n_rows=n_rows,
        unknown_share=data.unknown_share,
        checked_at=now,
        config=config,
        docs_index=docs_index,
    )


def _as_pandas(df: Any) -> pd.DataFrame:
    if isinstance(df, pd.DataFrame):
        return df
    if type(df).__module__.split(".")[0] == "polars" and hasattr(df, "to_pandas"):
        return df.to_pandas()  # GX's pandas datasource takes pandas frames only
    raise TypeError(f"the quality gate takes a pandas (or polars) DataFrame, not {type(df)!r}")


def _empty_report(config: GateConfig, now: datetime) -> GateReport:
    names = [
        n
        for n in EXPECTATION_NAMES
        if not RULE_BY_NAME[n].needs_max_age or config.max_age_days is not None
    ]
    results = tuple(
        ExpectationResult(
            name=name,
            expectation=RULE_BY_NAME[name].expectation,
            success=True,
            element_count=0,
            unexpected_count=0,
            observed="no rows",
        )
        for name in names
    )
    return GateReport(True, results, 0, 0.0, now, config)


# ------------------------------------------------------------------- the frame GX sees


@dataclass
class _GateData:
    """The source frame, the slim frame handed to GX, and the masks for examples."""

    source: pd.DataFrame
    gx_frame: pd.DataFrame
    names: tuple[str, ...]
    now: datetime
    not_future_max: datetime
    max_age_min: datetime | None
    unknown_share: float
    n_unknown: int
    syntax_rows: np.ndarray  # syntax_valid false and a known status
    disposable_rows: np.ndarray  # disposable true

    @classmethod
    def build(cls, source: pd.DataFrame, config: GateConfig, now: datetime) -> _GateData:
        email = source["email"]
        if not (pd.api.types.is_string_dtype(email) or email.dtype == object):
            email = email.astype("str")
        empty = email.eq("").fillna(False).to_numpy(dtype=bool)
        if empty.any():
            email = email.mask(empty)  # a blank address is no address

        status = _text_column(source["status"])
        reason = _text_column(source["reason"])
        score = pd.to_numeric(source["score"], errors="coerce").astype("float64")
        score_np = score.to_numpy(dtype="float64", na_value=np.nan)
        status_np = status.to_numpy(dtype=object)

        in_band = np.ones(len(source), dtype=bool)
        known = np.zeros(len(source), dtype=bool)  # one of the four statuses
        n_unknown = 0
        in_range = (score_np >= 0.0) & (score_np <= 1.0)  # NaN compares False
        for name, (low, high) in SCORE_BANDS.items():
            is_name = status_np == name
            known |= is_name
            if name == "unknown":
                n_unknown = int(is_name.sum())
            rows = is_name & in_range
            top_ok = score_np <= high if name == "valid" else score_np < high
            in_band[rows] = (score_np[rows] >= low) & top_ok[rows]
        syntax_valid = _bool_column(source["syntax_valid"])
        disposable = _bool_column(source["disposable"])
        # The two implications' rows, as GX's row conditions selected them (a null check
        # selects nothing). Their status goes to GX in a column of its own, null
        # elsewhere: GX skips the nulls, so the rule sees only those rows and the report
        # takes its element_count as GX's non-null count (Rule.applies_to_nonnull). A
        # row_condition made GX filter the frame with DataFrame.query for each metric
        # of the expectation: ~10 queries, about a fifth of a warm gate at 10,000 rows.
        syntax_rows = syntax_valid.eq(False).to_numpy(dtype=bool, na_value=False) & known
        disposable_rows = disposable.eq(True).to_numpy(dtype=bool, na_value=False)
        gx_frame = pd.DataFrame(
            {
                "email": email,
                "status": status,
                "score": score.fillna(_NULL_SCORE),
                "reason": reason,
                "verified_at": _utc_datetimes(source["verified_at"]),
                _BAND_COLUMN: in_band,
                _SYNTAX_INVALID_STATUS: status.where(syntax_rows),
                _DISPOSABLE_STATUS: status.where(disposable_rows),
            },
            index=source.index,
        )
        names = tuple(
            n
            for n in EXPECTATION_NAMES
            if not RULE_BY_NAME[n].needs_max_age or config.max_age_days is not None
        )
        return cls(
            source=source,
            gx_frame=gx_frame,
            names=names,
            now=now,
            not_future_max=now + config.future_tolerance,
            max_age_min=(
                now - timedelta(days=config.max_age_days)
                if config.max_age_days is not None
                else None
            ),
            unknown_share=n_unknown / len(source),
            n_unknown=n_unknown,
            syntax_rows=syntax_rows,
            disposable_rows=disposable_rows,
        )

def _text_column(series: pd.Series) -> pd.Series:
    """Strings with nulls replaced by :data:`_NULL_TEXT` (GX skips nulls in set checks)."""
    if isinstance(series.dtype, pd.CategoricalDtype) or not (
        pd.api.types.is_string_dtype(series) or series.dtype == object
    ):
        series = series.astype(object)
    if series.isna().any():
        series = series.fillna(_NULL_TEXT)
    return series


def _bool_column(series: pd.Series) -> pd.Series:
    """Tri-state checks as pandas' nullable ``boolean`` (True / False / <NA>)."""
    if series.dtype == "boolean":
        return series
    try:
        return series.astype("boolean")
    except (TypeError, ValueError):
        # Not booleans (e.g. "yes"): only an explicit True / False counts.
        return pd.Series(
            pd.array(
                [v if isinstance(v, (bool, np.bool_)) else None for v in series], dtype="boolean"
            ),
            index=series.index,
        )


def _utc_datetimes(series: pd.Series) -> pd.Series:
    """Check times as tz-aware UTC; naive values are taken as UTC, unparseable ones null."""
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        return series if str(series.dtype.tz) == "UTC" else series.dt.tz_convert("UTC")
    if pd.api.types.is_datetime64_dtype(series):
        return series.dt.tz_localize("UTC")
    return pd.to_datetime(series, utc=True, errors="coerce", format="ISO8601")


# ------------------------------------------------------------------------------- GX


def _import_gx() -> Any:
    """Great Expectations, imported with its analytics off (set before the import)."""
    os.environ["GX_ANALYTICS_ENABLED"] = "false"
    import great_expectations as gx

    return gx


def _suite_expectations(data: _GateData, config: GateConfig) -> dict[str, Any]:
    """name -> GX expectation (from :data:`RULES`), each carrying its mailsift name in
    ``meta`` and its note."""
    import great_expectations.expectations as gxe

    return {
        rule.name: getattr(gxe, rule.gx_class)(
            meta={"mailsift_name": rule.name}, notes=rule.note, **rule.arguments(data, config)
        )
        for rule in RULES
        if rule.name in data.names
    }


def _validate(data: _GateData, config: GateConfig, docs_dir: Path | str | None) -> dict[str, Any]:
    """Run the suite through an ephemeral context; name -> (success, result dict, error)."""
    gx = _import_gx()
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    docs_path = Path(docs_dir).resolve() if docs_dir is not None else None
    sites: dict[str, Any] = {}
    if docs_path is not None:
        docs_path.mkdir(parents=True, exist_ok=True)
        sites[_DOCS_SITE] = {
            "class_name": "SiteBuilder",
            "show_how_to_buttons": False,
            "store_backend": {
                "class_name": "TupleFilesystemStoreBackend",
                "base_directory": str(docs_path),
            },
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        }
    project_config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
        data_docs_sites=sites,
    )
    context = gx.get_context(mode="ephemeral", project_config=project_config)
    datasource = context.data_sources.add_pandas("mailsift")
    asset = datasource.add_dataframe_asset("verification_results")
    batch_definition = asset.add_batch_definition_whole_dataframe("whole_frame")

    expectations = _suite_expectations(data, config)
    suite = context.suites.add(
        gx.ExpectationSuite(
            name=_SUITE_NAME, expectations=[expectations[name] for name in data.names]
        )
    )
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name="mailsift_results", data=batch_definition, suite=suite)
    )
    batch_parameters = {"dataframe": data.gx_frame}
    if docs_path is None:
        # One batch load (GX fingerprints every cell of a batch it loads, ~1 s per
        # million rows; Batch.validate would load it a second time), in-memory stores only.
        validation = definition.run(
            batch_parameters=batch_parameters,
            result_format={"result_format": "BASIC", "partial_unexpected_count": 0},
        )
    else:
        # Data docs are rendered from stored validation results by a checkpoint action.
        # SUMMARY with a few partial values gives the docs their examples.
        from great_expectations.checkpoint import UpdateDataDocsAction

        checkpoint = context.checkpoints.add(
            gx.Checkpoint(
                name="mailsift_gate",
                validation_definitions=[definition],
                actions=[UpdateDataDocsAction(name="data_docs", site_names=[_DOCS_SITE])],
                result_format={
                    "result_format": "SUMMARY",
                    "partial_unexpected_count": _MAX_EXAMPLES,
                },
            )
        )
        run = checkpoint.run(batch_parameters=batch_parameters)
        (validation,) = run.run_results.values()

    outcomes: dict[str, Any] = {}
    for item in validation.results:
        config_ = item.expectation_config
        name = (config_.meta or {})["mailsift_name"]
        error = None
        info = item.exception_info or {}
        if isinstance(info, dict) and info.get("raised_exception"):
            error = str(info.get("exception_message") or "error")
        outcomes[name] = (bool(item.success), dict(item.result or {}), error)
    if docs_path is not None:
        outcomes["__docs_index__"] = str(docs_path / "index.html")
    return outcomes


# ---------------------------------------------------------------------------- results


def _result(
    name: str, outcome: tuple[bool, dict[str, Any], str | None], data: _GateData
) -> ExpectationResult:
    success, gx_result, error = outcome
    element_count = int(gx_result.get("element_count") or 0)
    if RULE_BY_NAME[name].applies_to_nonnull:
        # The two implications apply to the rows their helper column has a value for.
        element_count -= int(gx_result.get("missing_count") or 0)
    unexpected_count = int(gx_result.get("unexpected_count") or 0)
    if error is not None:
        success = False  # fail closed: an expectation that could not run blocks export

    mask: np.ndarray | None = None
    if not success and error is None:
        mask = RULE_BY_NAME[name].mask(data)
        unexpected_count = max(unexpected_count, int(mask.sum()))
    observed = f"error: {error}" if error is not None else RULE_BY_NAME[name].observed(data, mask)
    examples: list[dict[str, str | None]] = []
    if mask is not None:
        positions = np.flatnonzero(mask)
        if name == "email_unique":  # show the repeated rows side by side
            emails = data.gx_frame["email"].to_numpy(dtype=object)[positions]
            positions = positions[np.argsort(emails.astype(str), kind="stable")]
        examples = _examples(data.source, positions)
    return ExpectationResult(
        name=name,
        expectation=RULE_BY_NAME[name].expectation,
        success=success,
        element_count=element_count,
        unexpected_count=unexpected_count,
        observed=observed,
        examples=examples,
    )


def _top_values(values: pd.Series, limit: int = 3) -> str:
    counts = values.astype(object).where(values.notna(), _NULL_TEXT).value_counts()
    shown = [f"{value!s} ({count:,})" for value, count in counts.head(limit).items()]
    more = len(counts) - limit
    return ", ".join(shown) + (f", +{more:,} more" if more > 0 else "")


def _iso(value: Any) -> str | None:
    if value is None or pd.isna(value):
        return None
    return pd.Timestamp(value).isoformat()


def _observed_share(data: _GateData, mask: np.ndarray | None) -> float:
    return round(float(data.unknown_share), 6)


def _observed_values(column: str) -> Callable[[_GateData, np.ndarray | None], str | None]:
    def observed(data: _GateData, mask: np.ndarray | None) -> str | None:
        if mask is None:
            return None
        return _top_values(data.gx_frame[column][mask])

    return observed


def _observed_repeats(data: _GateData, mask: np.ndarray | None) -> str | None:
    if mask is None:
        return None
    repeated = data.gx_frame["email"][mask].nunique()
    return f"{repeated:,} address(es) repeated"


def _observed_bands(data: _GateData, mask: np.ndarray | None) -> str | None:
    if mask is None:
        return None
    f = data.gx_frame[mask]
    return _top_values(f["status"].astype(str) + " " + f["score"].map("{:.3g}".format))


def _observed_newest(data: _GateData, mask: np.ndarray | None) -> str | None:
    newest = _iso(data.gx_frame["verified_at"].max())
    return None if newest is None else f"newest {newest}"


def _observed_oldest(data: _GateData, mask: np.ndarray | None) -> str | None:
    oldest = _iso(data.gx_frame["verified_at"].min())
    return None if oldest is None else f"oldest {oldest}"


def _observed_none(data: _GateData, mask: np.ndarray | None) -> None:
    return None


def _example_value(value: Any) -> str | None:
    if value is None:
        return None
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    if isinstance(value, (datetime, pd.Timestamp)):
        return pd.Timestamp(value).isoformat()
    return str(value)


def _examples(source: pd.DataFrame, positions: np.ndarray) -> list[dict[str, str | None]]:
    """Up to :data:`_MAX_EXAMPLES` rows of ``source`` at ``positions``, as strings."""
    if len(positions) == 0:
        return []
    picked = source.iloc[positions[:_MAX_EXAMPLES]]
    return [
        {column: _example_value(row[column]) for column in _EXAMPLE_COLUMNS}
        for _, row in picked.iterrows()
    ]


def _failure_figure(result: ExpectationResult) -> str:
    if result.name == "unknown_share_within_threshold" and isinstance(result.observed, float):
        return f"{result.observed:.1%} unknown"
    text = f"{result.unexpected_count:,} of {result.element_count:,} rows"
    if isinstance(result.observed, str) and result.observed:
        text += f": {result.observed}"
    return text


def _observed_text(observed: str | float | None) -> str:
    if observed is None:
        return ""
    if isinstance(observed, float):
        return f"{observed:.2%}"
    return observed


def _example_text(row: dict[str, str | None]) -> str:
    return "  ".join(f"{key}={row.get(key)}" for key in _EXAMPLE_COLUMNS)


# ------------------------------------------------------------------------------ rules

Mask = Callable[[_GateData], np.ndarray]
Observed = Callable[[_GateData, np.ndarray | None], str | float | None]
Arguments = Callable[[_GateData, GateConfig], dict[str, Any]]


@dataclass(frozen=True)
class Rule:
    """One expectation of the gate, declared once.

    ``name``: the stable name reports, artifacts, ``quality_runs`` and CI logs show.
    ``expectation``: the GX expectation type (snake case, as data docs show it).
    ``arguments``: the GX expectation's keyword arguments for this frame and config.
    ``mask``: the offending rows, with pandas (computed for a failed rule only, for its
    count and examples). ``observed``: a short figure for people. ``note``: why the rule
    exists (GX ``notes``). ``needs_max_age``: only in the suite when max_age_days is set.
    ``applies_to_nonnull``: the rule's column is a helper that is null outside the rows
    the rule applies to, so its ``element_count`` is GX's count of non-null values.
    """

    name: str
    expectation: str
    arguments: Arguments
    mask: Mask
    observed: Observed
    note: str
    needs_max_age: bool = False
    applies_to_nonnull: bool = False

    @property
    def gx_class(self) -> str:
        """``expect_column_values_to_be_in_set`` -> ``ExpectColumnValuesToBeInSet``."""
        return "".join(part.capitalize() for part in self.expectation.split("_"))


def _np(series: pd.Series) -> np.ndarray:
    return series.to_numpy(dtype=bool)


#: The suite, in the order it is reported.
RULES: tuple[Rule, ...] = (
    Rule(
        "email_not_null",
        "expect_column_values_to_not_be_null",
        lambda d, c: {"column": "email"},
        lambda d: _np(d.gx_frame["email"].isna()),
        _observed_none,
        "Every result names its address.",
    ),
    Rule(
        "email_unique",
        "expect_column_values_to_be_unique",
        lambda d, c: {"column": "email"},
        lambda d: _np(d.gx_frame["email"].duplicated(keep=False) & d.gx_frame["email"].notna()),
        _observed_repeats,
        "One result per normalized address.",
    ),
    Rule(
        "status_in_set",
        "expect_column_values_to_be_in_set",
        lambda d, c: {"column": "status", "value_set": list(STATUSES)},
        lambda d: _np(~d.gx_frame["status"].isin(STATUSES)),
        _observed_values("status"),
        "Status is valid, invalid, risky or unknown (null counts as <null>).",
    ),
    Rule(
        "score_in_range",
        "expect_column_values_to_be_between",
        lambda d, c: {"column": "score", "min_value": 0.0, "max_value": 1.0},
        lambda d: _np(~d.gx_frame["score"].between(0.0, 1.0)),
        _observed_values("score"),
        "Score is within 0..1 (a null score counts as -1.0).",
    ),
    Rule(
        "score_in_status_band",
        "expect_column_values_to_be_in_set",
        lambda d, c: {"column": _BAND_COLUMN, "value_set": [True]},
        lambda d: ~d.gx_frame[_BAND_COLUMN].to_numpy(dtype=bool),
        _observed_bands,
        "The score sits in its status's band: valid >= 0.7, risky and unknown in "
        "[0.3, 0.7), invalid < 0.3 (rows with an unknown status or an out-of-range "
        "score are left to the rules above).",
    ),
    Rule(
        "reason_in_set",
        "expect_column_values_to_be_in_set",
        lambda d, c: {"column": "reason", "value_set": sorted(REASONS)},
        lambda d: _np(~d.gx_frame["reason"].isin(tuple(REASONS))),
        _observed_values("reason"),
        "The reason is one of mailsift's reason words (null counts as <null>).",
    ),
    Rule(
        "verified_at_not_null",
        "expect_column_values_to_not_be_null",
        lambda d, c: {"column": "verified_at"},
        lambda d: _np(d.gx_frame["verified_at"].isna()),
        _observed_none,
        "Every result says when it was checked.",
    ),
    Rule(
        "verified_at_not_future",
        "expect_column_values_to_be_between",
        lambda d, c: {"column": "verified_at", "max_value": d.not_future_max},
        lambda d: _np((d.gx_frame["verified_at"] > d.not_future_max).fillna(False)),
        _observed_newest,
        "No check time lies in the future (beyond a small clock skew).",
    ),
    Rule(
        "verified_at_within_max_age",
        "expect_column_values_to_be_between",
        lambda d, c: {"column": "verified_at", "min_value": d.max_age_min},
        lambda d: _np((d.gx_frame["verified_at"] < d.max_age_min).fillna(False)),
        _observed_oldest,
        "No exported result is older than max_age_days.",
        needs_max_age=True,
    ),
    Rule(
        "syntax_invalid_implies_invalid",
        "expect_column_values_to_be_in_set",
        # Rows with a status outside the four are status_in_set's to name.
        lambda d, c: {"column": _SYNTAX_INVALID_STATUS, "value_set": ["invalid"]},
        lambda d: d.syntax_rows & _np(d.gx_frame["status"].ne("invalid")),
        _observed_values("status"),
        "An address with bad syntax is invalid.",
        applies_to_nonnull=True,
    ),
    Rule(
        "disposable_implies_not_valid",
        "expect_column_values_to_not_be_in_set",
        lambda d, c: {"column": _DISPOSABLE_STATUS, "value_set": ["valid"]},
        lambda d: d.disposable_rows & _np(d.gx_frame["status"].eq("valid")),
        _observed_values("status"),
        "A disposable address is never valid.",
        applies_to_nonnull=True,
    ),
    Rule(
        "unknown_share_within_threshold",
        "expect_column_values_to_not_be_in_set",
        # "status is not unknown for at least 1 - max_unknown_share of the rows". Rounded
        # so that a share exactly at the limit passes: GX compares (n - unknown) / n >=
        # mostly, and 1 - 0.059 is 0.9410000000000001.
        lambda d, c: {
            "column": "status",
            "value_set": ["unknown"],
            "mostly": round(1.0 - float(c.max_unknown_share), 12),
        },
        lambda d: _np(d.gx_frame["status"].eq("unknown")),
        _observed_share,
        "Many unknown results mean our DNS or SMTP path is broken (port 25 blocked, "
        "resolver down); such output must not go out as if verified.",
    ),
)

RULE_BY_NAME: dict[str, Rule] = {rule.name: rule for rule in RULES}

#: The stable names of the suite's expectations, in the order they are reported.
EXPECTATION_NAMES: tuple[str, ...] = tuple(rule.name for rule in RULES)
