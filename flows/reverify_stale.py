"""Flow: re-verify every address whose newest verification is older than max_age_days.

Runs daily (deployments/) and never overlaps itself. The history keeps both checks:
verifications is append-only, latest_verifications shows the newest.
"""

from __future__ import annotations

import shutil
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
from mailsift.errors import MailsiftError, WarehouseError
from mailsift.result import utcnow
from mailsift.settings import BackendName
from pipeline.settings import DEFAULTS
from warehouse import Warehouse

__all__ = ["reverify_stale"]

FLOW_NAME = "reverify-stale"


@flow(name=FLOW_NAME, task_runner=ThreadPoolTaskRunner(max_workers=4), log_prints=False)
def reverify_stale(
    max_age_days: int = DEFAULTS.max_age_days,
    limit: int | None = None,
    db: str | None = None,
    max_unknown_share: float = DEFAULTS.max_unknown_share,
    backend: BackendName | None = None,
    batch_size: int = DEFAULTS.batch_size,
    webhook_url: str | None = None,
    webhook_secret_env: str | None = None,
    webhook_retry_minutes: list[float] = list(DEFAULTS.webhook_retry_minutes),  # noqa: B006, B008 (Prefect parameter)
) -> dict[str, Any]:
    """Re-verify the addresses whose newest check is older than max_age_days.

    Args:
        max_age_days: Re-check what was last verified longer ago than this.
        limit: At most this many addresses per run (oldest first); all when empty.
        db: The DuckDB warehouse file (default MAILSIFT_DB, else ./mailsift.duckdb).
        max_unknown_share: Quality gate: the largest share of 'unknown' results let out.
        backend: Verification backend: local, api or sandbox (default MAILSIFT_BACKEND).
        batch_size: Addresses per mapped verification task.
        webhook_url: POST the new results here in signed batches after the run.
        webhook_secret_env: Name of the environment variable that holds the webhook secret.
        webhook_retry_minutes: Waits between webhook delivery attempts (5 attempts by default).
    """
    logger = get_run_logger()
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
            stale = wh.stale_emails(max_age_days=max_age_days, limit=limit)
            logger.info("%d addresses last verified more than %d days ago", len(stale), max_age_days)
            wh.start_run(run_id, FLOW_NAME, ctx.backend, utcnow())
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
            except MailsiftError as exc:
                return fail_run(wh, run_id, exc, counters)
            summary = publish_summary(FLOW_NAME, counters, counts(results, "status"),
                                      counts(results, "reason"), gate, None)
            if webhook_url and results.height:
                summary["webhooks"] = push_webhooks(
                    wh, run_id, webhook_url, webhook_secret_env, webhook_retry_minutes, results
                )
            wh.finish_run(run_id, status="completed", finished_at=utcnow(), summary=summary,
                          **counters.as_counts())
        return summary
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
