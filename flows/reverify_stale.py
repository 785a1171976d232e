"""Flow: re-verify every address whose newest verification is older than max_age_days.

Runs daily (deployments/) and never overlaps itself. The history keeps both checks:
verifications is append-only, latest_verifications shows the newest.
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
    preload_gate,
    push_webhooks,
    refuse_bad_urls,
    run_context,
    summarize,
    verify_and_load,
    write_results,
)
from mailsift.errors import MailsiftError, WarehouseError
from pipeline.settings import DEFAULTS
from warehouse import Warehouse

__all__ = ["reverify_stale"]

FLOW_NAME = "reverify-stale"


@flow(name=FLOW_NAME, task_runner=ThreadPoolTaskRunner(max_workers=VERIFY_WORKERS), log_prints=False)
def reverify_stale(
    max_age_days: Annotated[int, Field(ge=0)] = DEFAULTS.max_age_days,
    limit: Annotated[int, Field(ge=0)] = 0,
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
    """Re-verify the addresses whose newest check is older than max_age_days.

    Args:
        max_age_days: Re-check what was last verified longer ago than this many days.
        limit: At most this many addresses per run (oldest first); 0 for all.
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
            mailsift-report.html beside the warehouse.
    """
    logger = get_run_logger()
    if (refused := refuse_bad_urls(None, webhook_url)) is not None:
        return refused
    preload_gate()
    ctx = run_context(backend, db, prefix="mailsift-reverify-")
    run_id, work_dir = ctx.run_id, ctx.work_dir
    counters = RunCounters()
    try:
        try:
            wh = Warehouse.open(ctx.db_path, create=False)
        except WarehouseError as exc:  # no warehouse yet: one line, no traceback
            logger.error("%s", exc)
            return Failed(message=str(exc), data=exc)
        with wh:
            stale = wh.stale_emails(max_age_days=max_age_days, limit=limit or None)
            logger.info("%d addresses last verified more than %d days ago", len(stale), max_age_days)
            begin_run(wh, run_id, FLOW_NAME, ctx.backend)
            emails = pl.DataFrame({"email": stale}, schema={"email": pl.String}).with_columns(
                pl.col("email").str.split("@").list.last().alias("domain")
            )
            counters.n_unique = emails.height
            try:
                verify_and_load(wh, emails, run_id=run_id, backend=ctx.backend,
                                overrides=ctx.overrides, batch_size=batch_size, counters=counters)
                results = wh.latest(emails.get_column("email"))
                gate = None
                if results.height:
                    gate = gate_results(wh, write_results(results, work_dir), run_id=run_id,
                                        scope="run", max_unknown_share=max_unknown_share,
                                        max_age_days=max_age_days)
                summary = summarize(FLOW_NAME, counters, counts(results, "status"),
                                    counts(results, "reason"), gate, None, ctx=ctx,
                                    max_age_days=max_age_days, max_unknown_share=max_unknown_share)
                if webhook_url and results.height:
                    summary["webhooks"] = push_webhooks(
                        wh, run_id, webhook_url, webhook_secret_env, webhook_retry_waits_minutes, results,
                        webhook_format,
                    )
                beside = ctx.db_path if isinstance(ctx.db_path, Path) else Path("mailsift.duckdb")
                report_path = Path(report) if report else beside.with_name("mailsift-report.html")
                return complete_run(wh, run_id, summary, counters, report_path)
            except (MailsiftError, OSError, MemoryError) as exc:  # one line, the run closed
                return fail_run(wh, run_id, exc, counters)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
