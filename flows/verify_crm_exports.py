"""Flow: CRM exports in; verified, gated, per-status CSVs out; every check kept in DuckDB.

    extract -> normalize -> dedupe -> freshness -> verify (mapped batches) -> load
            -> quality gate -> export -> webhooks
"""

from __future__ import annotations

import shutil
import time
from typing import Any

import polars as pl
from prefect import flow, get_run_logger
from prefect.states import Failed
from prefect.task_runners import ThreadPoolTaskRunner

from flows.common import (
    RunCounters,
    counts,
    fail_run,
    gate_results,
    publish_summary,
    push_webhooks,
    run_context,
    verify_and_load,
    write_results,
)
from mailsift.errors import MailsiftError
from mailsift.result import utcnow
from mailsift.settings import BackendName
from pipeline.settings import DEFAULTS
from tasks.steps import extract_contacts, write_exports
from warehouse import Warehouse

__all__ = ["verify_crm_exports"]

FLOW_NAME = "verify-crm-exports"


@flow(name=FLOW_NAME, task_runner=ThreadPoolTaskRunner(max_workers=4), log_prints=False)
def verify_crm_exports(
    sources: list[str],
    email_column: str | None = None,
    max_age_days: int = DEFAULTS.max_age_days,
    out_dir: str = "mailsift-out",
    db: str | None = None,
    retry_unknown_after_minutes: int = DEFAULTS.retry_unknown_after_minutes,
    max_unknown_share: float = DEFAULTS.max_unknown_share,
    backend: BackendName | None = None,
    batch_size: int = DEFAULTS.batch_size,
    webhook_url: str | None = None,
    webhook_secret_env: str | None = None,
    webhook_retry_minutes: list[float] = list(DEFAULTS.webhook_retry_minutes),  # noqa: B006, B008 (Prefect parameter)
) -> dict[str, Any]:
    """Verify CRM exports and export one CSV per status, behind the quality gate.

    Args:
        sources: Files, globs or http(s) URLs of CRM exports (CSV, TSV, XLSX, JSON, NDJSON, Parquet).
        email_column: The email column's name; found by header or content when empty.
        max_age_days: Reuse warehouse results younger than this many days.
        out_dir: Where valid.csv, risky.csv, invalid.csv, unknown.csv (and no_email.csv) go.
        db: The DuckDB warehouse file (default MAILSIFT_DB, else ./mailsift.duckdb).
        retry_unknown_after_minutes: Check 'unknown' results again once older than this.
        max_unknown_share: Quality gate: the largest share of 'unknown' results let out.
        backend: Verification backend: local, api or sandbox (default MAILSIFT_BACKEND).
        batch_size: Addresses per mapped verification task.
        webhook_url: POST the results here in signed batches after the run.
        webhook_secret_env: Name of the environment variable that holds the webhook secret.
        webhook_retry_minutes: Waits between webhook delivery attempts (5 attempts by default).
    """
    ctx = run_context(backend, db, prefix="mailsift-run-")
    run_id, work_dir = ctx.run_id, ctx.work_dir
    counters = RunCounters()
    try:
        t0 = time.perf_counter()
        extracted = extract_contacts(sources, email_column, work_dir, return_state=True)
        if extracted.is_failed():  # one readable line naming the source; the warehouse is untouched
            error = extracted.result(raise_on_failure=False)
            return Failed(message=str(error), data=error)
        info = extracted.result()
        counters.n_source_rows = info["n_rows"]
        counters.n_without_email = info["n_without_email"]
        counters.n_unique = info["n_unique"]
        counters.timings["extract_s"] = round(time.perf_counter() - t0, 3)

        with Warehouse.open(ctx.db_path) as wh:
            wh.start_run(run_id, FLOW_NAME, ctx.backend, utcnow())
            try:
                result, results = _run(wh, info, run_id, ctx.backend, ctx.overrides, counters, work_dir,
                              max_age_days, retry_unknown_after_minutes, max_unknown_share,
                              batch_size, out_dir)
            except MailsiftError as exc:
                return fail_run(wh, run_id, exc, counters)
            if webhook_url:
                result["webhooks"] = push_webhooks(
                    wh, run_id, webhook_url, webhook_secret_env, webhook_retry_minutes, results
                )
            wh.finish_run(run_id, status="completed", finished_at=utcnow(), summary=result,
                          **counters.as_counts())
        return result
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


def _run(wh: Warehouse, info: dict[str, Any], run_id: str, backend: str, overrides: dict[str, Any],
         counters: RunCounters, work_dir: str, max_age_days: int, retry_unknown_after_minutes: int,
         max_unknown_share: float, batch_size: int, out_dir: str
         ) -> tuple[dict[str, Any], pl.DataFrame]:
    """Load, verify, gate and export; returns the summary and the run's results."""
    t0 = time.perf_counter()
    rows = pl.scan_parquet(info["rows"])  # only the five columns the warehouse keeps
    wh.upsert_contacts(
        rows.select(
            pl.col("__ms_source").alias("source"),
            pl.col("__ms_row").alias("row_number"),
            pl.col("__ms_record_id").alias("record_id"),
            pl.col("__ms_key").alias("email"),
            pl.col("__ms_domain").alias("domain"),
        ).collect(),
        run_id=run_id,
        seen_at=utcnow(),
    )
    unique = pl.read_parquet(info["unique"]).select("email", "domain")
    fresh = wh.fresh_results(
        unique.get_column("email"),
        max_age_days=max_age_days,
        retry_unknown_after_minutes=retry_unknown_after_minutes,
    )
    counters.n_from_warehouse = fresh.height
    to_verify = unique.join(fresh.select("email"), on="email", how="anti")
    counters.timings["load_contacts_s"] = round(time.perf_counter() - t0, 3)
    get_run_logger().info(
        "%d addresses have a fresh result in the warehouse, %d to verify",
        counters.n_from_warehouse, to_verify.height,
    )
    verify_and_load(wh, to_verify, run_id=run_id, backend=backend, overrides=overrides,
                    batch_size=batch_size, counters=counters)

    results = wh.latest(unique.get_column("email"))
    results_path = write_results(results, work_dir)
    t0 = time.perf_counter()
    gate = gate_results(wh, results_path, run_id=run_id, scope="run",
                        max_unknown_share=max_unknown_share, max_age_days=max_age_days)
    counters.timings["gate_s"] = round(time.perf_counter() - t0, 3)
    t0 = time.perf_counter()
    exports = write_exports(info["rows"], results_path, out_dir)
    counters.timings["export_s"] = round(time.perf_counter() - t0, 3)
    summary = publish_summary(FLOW_NAME, counters, counts(results, "status"),
                              counts(results, "reason"), gate, exports)
    return summary, results
