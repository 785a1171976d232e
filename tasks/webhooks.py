"""Webhook delivery of a run's results, with every attempt recorded in the warehouse
(pure: no Prefect). Signing, batching and the retry schedule are in :mod:`mailsift.webhooks`."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl

from mailsift import urlsecrets, webhooks
from mailsift.errors import ConfigError
from tasks.extract.sources import resolve_secret_block
from warehouse import Warehouse
from warehouse.frames import results_from_frame
from warehouse.redaction import REDACTED

__all__ = ["push_results", "retry_failed"]


def _recorder(wh: Warehouse, run_id: str):
    def record(attempt: webhooks.DeliveryAttempt) -> None:
        wh.record_webhook_attempt(
            delivery_id=attempt.delivery_id,
            run_id=run_id,
            url=attempt.url,
            batch_index=attempt.batch_index if attempt.batch_index is not None else -1,
            n_results=attempt.n_results or 0,
            attempt=attempt.attempt,
            is_delivered=attempt.is_delivered,
            payload=attempt.payload,
            status_code=attempt.status_code,
            error=attempt.error,
            attempted_at=attempt.attempted_at,
        )

    return record


def push_results(
    wh: Warehouse,
    *,
    run_id: str,
    url: str,
    secret_env: str,
    results: pl.DataFrame,
    schedule_seconds: Sequence[float],
    batch_size: int = webhooks.DEFAULT_BATCH_SIZE,
    per_address: bool = False,
) -> dict[str, Any]:
    """POST ``results`` in signed batches (or one signed POST per result with
    ``per_address``); returns delivered/failed counts (``batches``: bodies sent)."""
    secret = webhooks.secret_from_env(secret_env)
    webhooks.check_url(url)
    url = urlsecrets.expand(url, resolve_secret_block)  # ${ENV} / ${secret:block}: for the POST only
    items = results_from_frame(results)
    if per_address:
        payloads = webhooks.build_per_address_payloads(items, run_id=run_id)
    else:
        payloads = webhooks.build_payloads(items, run_id=run_id, batch_size=batch_size)
    attempts = asyncio.run(
        webhooks.deliver(url, secret, payloads, schedule=schedule_seconds, on_attempt=_recorder(wh, run_id))
    )
    delivered = {a.delivery_id for a in attempts if a.is_delivered}
    return {
        "batches": len(payloads),
        "delivered": len(delivered),
        "failed": len(payloads) - len(delivered),
        "attempts": len(attempts),
    }


def retry_failed(
    db: Path,
    secret_env: str,
    *,
    run_id: str | None = None,
    url: str | None = None,
    schedule_seconds: Sequence[float] = (0,),
) -> tuple[int, int]:
    """Re-send every delivery whose last attempt failed (same body, same signature).
    Returns (re-sent, still failing)."""
    secret = webhooks.secret_from_env(secret_env)
    sent = still_failing = 0
    with Warehouse.open(db, create=False) as wh:
        failed = wh.failed_webhook_deliveries(run_id)
        by_target: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for row in failed:
            target = url or row["url"]
            if REDACTED in target and not url:
                raise ConfigError(
                    f"the recorded URL of delivery {row['delivery_id']} was redacted; pass --url"
                )
            by_target.setdefault((row["run_id"], target), []).append(row)
        for (rid, target), rows in by_target.items():
            attempts = asyncio.run(
                webhooks.redeliver(
                    target,
                    secret,
                    [(r["delivery_id"], r["payload"]) for r in rows],
                    schedule=schedule_seconds,
                    on_attempt=_recorder(wh, rid),
                    previous_attempts={r["delivery_id"]: int(r["attempt"]) for r in rows},
                )
            )
            delivered = {a.delivery_id for a in attempts if a.is_delivered}
            sent += len(rows)
            still_failing += len(rows) - len(delivered)
    return sent, still_failing
