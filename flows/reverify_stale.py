"""Flow: re-verify the addresses whose newest verification is older than older_than_days
(optionally only some statuses, domains, sources or addresses).

What to re-check (``older_than_days`` and the lists) is separate from what the quality
gate lets out (``max_age_days``, the same freshness limit as ``verify_crm_exports``): a
re-check of everything (``older_than_days=0``) passes a gate that still refuses results
older than 30 days. Runs daily (deployments/) and never overlaps itself. The history
keeps both checks: verifications is append-only, latest_verifications shows the newest.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated, Any, Literal

import polars as pl
from prefect import flow, get_run_logger
from prefect.states import Failed
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import Field

from flows.common import (
    VERIFY_WORKERS,
    BackendChoice,
    RunCounters,
    begin_run,
    complete_run,
    counts,
    fail_run,
    gate_results,
    preload_engine,
    preload_gate,
    push_webhooks,
    refuse_bad_urls,
    run_context,
    summarize,
    verify_and_load,
    write_results,
)
from mailsift.errors import ConfigError, MailsiftError, WarehouseError
from pipeline.settings import DEFAULTS
from tasks.export import check_out_dir
from tasks.steps import write_exports
from warehouse import Warehouse

__all__ = ["reverify_stale"]

FLOW_NAME = "reverify-stale"


@flow(name=FLOW_NAME, task_runner=ThreadPoolTaskRunner(max_workers=VERIFY_WORKERS), log_prints=False)
def reverify_stale(
    older_than_days: Annotated[int, Field(ge=0)] = DEFAULTS.max_age_days,
    statuses: list[Literal["valid", "invalid", "risky", "unknown"]] = [],  # noqa: B006 (Prefect parameter)
    domains: list[str] = [],  # noqa: B006 (Prefect parameter)
    sources: list[str] = [],  # noqa: B006 (Prefect parameter)
    emails: list[str] = [],  # noqa: B006 (Prefect parameter)
    limit: Annotated[int, Field(ge=0)] = 0,
    max_age_days: Annotated[int, Field(ge=0)] = DEFAULTS.max_age_days,
    out_dir: str = "",
    excel: bool = False,
    db: str = "",
    max_unknown_share: Annotated[float, Field(ge=0.0, le=1.0)] = DEFAULTS.max_unknown_share,
    backend: BackendChoice = "default",
    batch_size: Annotated[int, Field(ge=1, le=5000)] = DEFAULTS.batch_size,
    webhook_url: str = "",
    webhook_secret_env: str = "",
    webhook_format: Literal["batch", "per-address"] = "batch",
    webhook_retry_waits_minutes: Annotated[list[float], Field(min_length=1)] = list(DEFAULTS.webhook_retry_waits_minutes),  # noqa: B006, B008 (Prefect parameter)
    report: str = "",
) -> dict[str, Any]:
    """Re-verify the addresses whose newest check is older than older_than_days.

    Args:
        older_than_days: Re-check what was last verified this many days ago or longer
            (0: whatever the age).
        statuses: Only addresses whose newest verdict is one of these; empty for any.
        domains: Only addresses at these domains; empty for any.
        sources: Only addresses a source holds now, by its full name or file name
            (e.g. crm_export.csv); empty for any.
        emails: Only these addresses; empty for any.
        limit: At most this many addresses per run (oldest first); 0 for all.
        max_age_days: Quality gate: refuse results older than this many days (the
            freshness limit of every run, not the selection above).
        out_dir: Write valid/risky/invalid/unknown CSVs and results.parquet of the
            re-checked addresses here (one row per source row holding them); leave empty
            for none.
        excel: Write the CSVs as UTF-8 with a byte order mark, for Excel.
        db: The DuckDB warehouse file; leave empty for MAILSIFT_DB, else ./mailsift.duckdb.
        max_unknown_share: Quality gate: the largest share of 'unknown' results let out (0.2 = 20 %).
        backend: Verification backend; 'default' is the worker's MAILSIFT_BACKEND, else local.
        batch_size: Addresses per mapped verification task.
        webhook_url: POST the new results here in signed batches after the run; leave empty for none.
        webhook_secret_env: Name of the environment variable that holds the webhook secret.
        webhook_format: "batch" (500 results a POST) or "per-address" (one POST per result,
            the contract at the top level plus run_id, as mailsift serve sends them).
        webhook_retry_waits_minutes: Minutes to wait before each retry of a failed webhook
            delivery: 4 waits, 5 attempts by default; what still fails waits for
            `mailsift webhooks retry`.
        report: Where to write the list-health report (HTML); leave empty for
            report.html in out_dir, else mailsift-report.html beside the warehouse.
    """
    logger = get_run_logger()
    if out_dir:
        try:
            check_out_dir(out_dir)
        except ConfigError as exc:  # before anything is read or written
            return Failed(message=str(exc), data=exc)
    if (refused := refuse_bad_urls(None, webhook_url)) is not None:
        return refused
    preload_gate()
    ctx = run_context(backend, db, prefix="mailsift-reverify-")
    preload_engine(ctx)  # its first batch finds the engine built
    run_id, work_dir = ctx.run_id, ctx.work_dir
    counters = RunCounters()
    try:
        try:
            wh = Warehouse.open(ctx.db_path, create=False)
        except WarehouseError as exc:  # no warehouse yet: one line, no traceback
            logger.error("%s", exc)
            return Failed(message=str(exc), data=exc)
        with wh:
            stale = wh.stale_emails(max_age_days=older_than_days, limit=limit or None,
                                    statuses=statuses, domains=domains, sources=sources,
                                    emails=emails)
            narrowed = ", ".join(f"{name} {', '.join(values)}" for name, values in (
                ("status", statuses), ("domain", domains), ("source", sources),
                ("email", emails)) if values)
            logger.info("%d addresses last verified %d days ago or longer%s", len(stale),
                        older_than_days, f" ({narrowed})" if narrowed else "")
            begin_run(wh, run_id, FLOW_NAME, ctx.backend)
            picked = pl.DataFrame({"email": stale}, schema={"email": pl.String}).with_columns(
                pl.col("email").str.split("@").list.last().alias("domain")
            )
            counters.n_unique = picked.height
            try:
                verify_and_load(wh, picked, run_id=run_id, backend=ctx.backend,
                                overrides=ctx.overrides, batch_size=batch_size, counters=counters)
                results = wh.latest(picked.get_column("email"))
                gate = None
                if results.height:
                    gate = gate_results(wh, write_results(results, work_dir), run_id=run_id,
                                        scope="run", max_unknown_share=max_unknown_share,
                                        max_age_days=max_age_days)
                exports = None
                if out_dir:
                    rows_path = Path(work_dir) / "rows.parquet"
                    _export_rows(wh, picked.get_column("email")).write_parquet(rows_path)
                    exported = write_exports(str(rows_path), write_results(results, work_dir),
                                             out_dir, excel, return_state=True)
                    if exported.is_failed():  # a full disk: the ResourceError it carries
                        raise exported.result(raise_on_failure=False)
                    exports = exported.result()
                summary = summarize(FLOW_NAME, counters, counts(results, "status"),
                                    counts(results, "reason"), gate, exports, ctx=ctx,
                                    max_age_days=max_age_days, max_unknown_share=max_unknown_share)
                if webhook_url and results.height:
                    summary["webhooks"] = push_webhooks(
                        wh, run_id, webhook_url, webhook_secret_env, webhook_retry_waits_minutes, results,
                        webhook_format,
                    )
                beside = ctx.db_path if isinstance(ctx.db_path, Path) else Path("mailsift.duckdb")
                report_path = (Path(report) if report else Path(out_dir) / "report.html" if out_dir
                               else beside.with_name("mailsift-report.html"))
                return complete_run(wh, run_id, summary, counters, report_path)
            except (MailsiftError, OSError, MemoryError) as exc:  # one line, the run closed
                return fail_run(wh, run_id, exc, counters)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


def _export_rows(wh: Warehouse, emails: pl.Series) -> pl.DataFrame:
    """The rows to export: every source row that holds a re-checked address now (its
    source, row number and CRM record id), shaped as the export expects (``__ms_key``)."""
    rows = wh.source_rows(emails)
    return rows.select(
        "email",
        pl.col("record_id"),
        pl.col("source"),
        pl.col("row_number"),
        pl.col("email").alias("__ms_key"),
    )
