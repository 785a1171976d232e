"""Flow: CRM exports in; verified, gated, per-status CSVs out; every check kept in DuckDB.

    extract -> normalize -> dedupe -> freshness -> verify (mapped batches) -> load
            -> quality gate -> export -> webhooks -> list-health report -> summary artifact

Parameters are plain typed values as the Prefect run form shows them: an empty text
means "not set" (no ``None`` toggles), ``backend`` is a select.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import polars as pl
from prefect import flow, get_run_logger
from prefect.states import Failed
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import Field

from flows.common import (
    VERIFY_WORKERS,
    BackendChoice,
    RunContext,
    RunCounters,
    begin_run,
    complete_run,
    contact_chunks,
    counts,
    fail_run,
    gate_and_export,
    prefetch_run_report,
    preload_engine,
    preload_gate,
    push_webhooks,
    refuse_bad_urls,
    run_context,
    summarize,
    verify_and_load,
    write_results,
)
from mailsift.errors import ConfigError, MailsiftError
from mailsift.result import utcnow
from pipeline.settings import DEFAULTS
from tasks.export import check_out_dir
from tasks.steps import extract_contacts
from warehouse import Warehouse

if TYPE_CHECKING:
    from warehouse.report import Prefetched

__all__ = ["verify_crm_exports"]

FLOW_NAME = "verify-crm-exports"


@flow(name=FLOW_NAME, task_runner=ThreadPoolTaskRunner(max_workers=VERIFY_WORKERS), log_prints=False)
def verify_crm_exports(
    sources: list[str],
    email_column: str = "",
    max_age_days: Annotated[int, Field(ge=0)] = DEFAULTS.max_age_days,
    out_dir: str = "mailsift-out",
    excel: bool = False,
    db: str = "",
    retry_unknown_after_minutes: Annotated[int, Field(ge=0)] = DEFAULTS.retry_unknown_after_minutes,
    max_unknown_share: Annotated[float, Field(ge=0.0, le=1.0)] = DEFAULTS.max_unknown_share,
    backend: BackendChoice = "default",
    batch_size: Annotated[int, Field(ge=1, le=5000)] = DEFAULTS.batch_size,
    webhook_url: str = "",
    webhook_secret_env: str = "",
    webhook_format: Literal["batch", "per-address"] = "batch",
    webhook_retry_waits_minutes: Annotated[list[float], Field(min_length=1)] = list(DEFAULTS.webhook_retry_waits_minutes),  # noqa: B006, B008 (Prefect parameter)
) -> dict[str, Any]:
    """Verify CRM exports and export one CSV per status, behind the quality gate.

    Args:
        sources: Files, globs or http(s) URLs of CRM exports (CSV, TSV, XLSX, JSON, NDJSON, Parquet).
        email_column: The email column's name; leave empty to find it by header or content.
        max_age_days: Reuse warehouse results younger than this many days instead of checking again.
        out_dir: Where valid.csv, risky.csv, invalid.csv, unknown.csv, no_email.csv,
            results.parquet and report.html go (the exports replace the directory as a whole,
            so it must be new or hold only mailsift's files).
        excel: Write the CSVs as UTF-8 with a byte order mark, for Excel (also done when a
            source had one).
        db: The DuckDB warehouse file; leave empty for MAILSIFT_DB, else ./mailsift.duckdb.
        retry_unknown_after_minutes: Check an 'unknown' result again once it is older than this.
        max_unknown_share: Quality gate: the largest share of 'unknown' results let out (0.2 = 20 %).
        backend: Verification backend; 'default' is the worker's MAILSIFT_BACKEND, else local.
        batch_size: Addresses per mapped verification task.
        webhook_url: POST the results here in signed batches after the run; leave empty for none.
        webhook_secret_env: Name of the environment variable that holds the webhook secret.
        webhook_format: "batch" (500 results a POST) or "per-address" (one POST per result,
            the contract at the top level plus run_id, as mailsift serve sends them).
        webhook_retry_waits_minutes: Minutes to wait before each retry of a failed webhook
            delivery: 4 waits, 5 attempts by default; what still fails waits for
            `mailsift webhooks retry`.
    """
    try:
        check_out_dir(out_dir)
    except ConfigError as exc:  # before anything is read or written
        return Failed(message=str(exc), data=exc)
    if (refused := refuse_bad_urls(sources, webhook_url)) is not None:
        return refused
    preload_gate()  # the quality gate at the end finds Great Expectations imported
    ctx = run_context(backend, db, prefix="mailsift-run-")
    preload_engine(ctx)  # its first batch finds the engine built
    run_id, work_dir = ctx.run_id, ctx.work_dir
    counters = RunCounters()
    try:
        t0 = time.perf_counter()
        extracted = extract_contacts(sources, email_column or None, work_dir, return_state=True)
        if extracted.is_failed():  # one readable line naming the source; the warehouse is untouched
            error = extracted.result(raise_on_failure=False)
            return Failed(message=str(error), data=error)
        info = extracted.result()
        counters.n_source_rows = info["n_rows"]
        counters.n_without_email = info["n_without_email"]
        counters.n_unique = info["n_unique"]
        counters.timed("extract", t0)

        with Warehouse.open(ctx.db_path) as wh:
            begin_run(wh, run_id, FLOW_NAME, ctx.backend)
            try:
                result, results_path, prefetched = _run(wh, info, ctx, counters, sources, max_age_days,
                                            retry_unknown_after_minutes, max_unknown_share,
                                            batch_size, out_dir, excel)
                if webhook_url:
                    result["webhooks"] = push_webhooks(
                        wh, run_id, webhook_url, webhook_secret_env, webhook_retry_waits_minutes,
                        pl.read_parquet(results_path), webhook_format,
                    )
                return complete_run(wh, run_id, result, counters, Path(out_dir) / "report.html",
                                    prefetched)
            except (MailsiftError, OSError, MemoryError) as exc:  # one line, the run closed
                return fail_run(wh, run_id, exc, counters)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


def _run(wh: Warehouse, info: dict[str, Any], ctx: RunContext, counters: RunCounters,
         sources: list[str], max_age_days: int, retry_unknown_after_minutes: int,
         max_unknown_share: float, batch_size: int, out_dir: str, excel: bool
         ) -> tuple[dict[str, Any], str, Prefetched | None]:
    """Load, verify, gate and export; returns the summary, the run's results file and
    the list-health report's figures read while the gate ran."""
    run_id, work_dir = ctx.run_id, ctx.work_dir
    t0 = time.perf_counter()
    seen_at = utcnow()
    for chunk in contact_chunks(info["rows"]):  # memory: one chunk, not the whole list
        wh.upsert_contacts(chunk, run_id=run_id, seen_at=seen_at)
    unique = pl.read_parquet(info["unique"]).select("email", "domain")
    fresh = wh.fresh_results(
        unique.get_column("email"),
        max_age_days=max_age_days,
        retry_unknown_after_minutes=retry_unknown_after_minutes,
    )
    counters.n_from_warehouse = fresh.height
    to_verify = unique.join(fresh.select("email"), on="email", how="anti")
    counters.timed("load_contacts", t0)
    get_run_logger().info(
        "%d addresses have a fresh result in the warehouse, %d to verify",
        counters.n_from_warehouse, to_verify.height,
    )
    verify_and_load(wh, to_verify, run_id=run_id, backend=ctx.backend, overrides=ctx.overrides,
                    batch_size=batch_size, counters=counters)

    results = wh.latest(unique.get_column("email"))
    del unique
    results_path = write_results(results, work_dir)
    by_status, by_reason = counts(results, "status"), counts(results, "reason")
    del results  # the gate and the export read the file: one copy of the results at a time
    prefetched: Prefetched | None = None  # the report's figures, read while the gate runs

    def meanwhile() -> None:
        nonlocal prefetched
        prefetched = prefetch_run_report(wh)

    gate, exports = gate_and_export(wh, results_path, info["rows"], out_dir, excel=excel, run_id=run_id,
                                    max_unknown_share=max_unknown_share, max_age_days=max_age_days,
                                    counters=counters, meanwhile=meanwhile)
    summary = summarize(FLOW_NAME, counters, by_status, by_reason,
                        gate, exports, ctx=ctx, sources=sources, max_age_days=max_age_days,
                        max_unknown_share=max_unknown_share)
    return summary, results_path, prefetched
