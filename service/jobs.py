"""Bulk jobs: ``POST /api/v1/bulk/verify`` -> a job verified in the background.

A job's addresses are deduplicated by their warehouse identity (trimmed, lower-cased);
``total`` counts the distinct ones, and each gets one result and (with a
``webhook_url``) one webhook. Addresses the warehouse knows fresh are answered from it
(``cached: true``); the others are verified in batches grouped by domain:

- with a Prefect API (``PREFECT_API_URL`` set, or ``MAILSIFT_SERVE_PREFECT=true``) as a
  run of the ``verify-address-list`` flow (mapped, retried ``verify-batch`` tasks, a
  summary artifact), visible in the Prefect UI; its id is ``flow_run_id`` in the job;
- otherwise on the service's engine directly, the same batches.

Either way results are recorded as each batch completes: job results and webhook bodies
in one transaction (:meth:`service.state.ServiceState.add_job_results`), the history in
the warehouse spool under ``run_id`` ``api-bulk-<job_id>``. A test key's job gets the
sandbox's answers, stores no history and touches no network but the webhook's.

Restarts: the job list is durable. A job that was running without a webhook is resumed
(its missing addresses only); one with a webhook cannot be (its secret was only in
memory), so it ends ``interrupted`` with what it had; the webhooks of the results it
recorded are still delivered.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mailsift.result import Checks, VerificationResult
from mailsift.verdict import SCORES
from mailsift.webhooks import check_url
from service.keys import ApiKey
from service.lookups import Lookups, email_key, storable
from service.outbox import Outbox, bulk_run_id, signed
from service.settings import ServeSettings
from service.state import ServiceState
from tasks.address_list import plan_batches, read_new_batches, write_batch

__all__ = ["Jobs", "QueueFull"]

log = logging.getLogger("mailsift.serve")


class QueueFull(RuntimeError):
    """Too many jobs wait already (the route answers 503)."""


class Jobs:
    def __init__(self, state: ServiceState, serve: ServeSettings, lookups: Lookups, outbox: Outbox,
                 work_dir: Path) -> None:
        self.state = state
        self.serve = serve
        self.lookups = lookups
        self.outbox = outbox
        self.work_dir = work_dir
        self._secrets: dict[str, tuple[str, str]] = {}  # job_id -> (url, secret), memory only
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._workers: list[asyncio.Task[None]] = []

    @property
    def use_prefect(self) -> bool:
        if self.serve.prefect is not None:
            return self.serve.prefect
        return bool(os.environ.get("PREFECT_API_URL"))

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        for job_id in await asyncio.to_thread(self.state.jobs_with_status, "queued", "running"):
            job = self.state.job(job_id)
            if job and job["has_webhook"]:
                counts = self.state.job_counts(job_id)
                self.state.update_job(
                    job_id, status="interrupted", finished_at=time.time(),
                    error=f"the service restarted after {counts['done']} of {job['total']} "
                    "addresses; their webhooks are delivered; submit the rest again",
                )
            else:
                self._queue.put_nowait(job_id)
        self._workers = [
            asyncio.create_task(self._work(), name=f"mailsift-job-worker-{n}")
            for n in range(self.serve.max_running_jobs)
        ]

    async def stop(self) -> None:
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)

    # -- submitting -----------------------------------------------------------------------

    def submit(self, key: ApiKey, emails: Sequence[str], webhook_url: str | None,
               webhook_secret: str | None) -> dict[str, Any]:
        """Record a job and queue it; returns ``{job_id, status, total}``.
        Raises ``ValueError`` (a bad webhook) or :class:`QueueFull`."""
        if webhook_url is not None:
            check_url(webhook_url)
            if not webhook_secret:
                raise ValueError("webhook_secret is required with webhook_url (the webhooks are signed with it)")
        if self._queue.qsize() >= self.serve.max_queued_jobs:
            raise QueueFull(f"{self._queue.qsize()} bulk jobs are waiting already")
        distinct: dict[str, str] = {}
        for raw in emails:
            distinct.setdefault(email_key(raw) if storable(raw) else raw, raw)
        job_id = str(uuid.uuid4())
        self.state.create_job(job_id, key_id=key.key_id, is_test=key.is_test,
                              emails=list(distinct.values()), n_submitted=len(emails),
                              has_webhook=webhook_url is not None)
        if webhook_url is not None and webhook_secret:
            self._secrets[job_id] = (webhook_url, webhook_secret)
        self._queue.put_nowait(job_id)
        return {"job_id": job_id, "status": "queued", "total": len(distinct)}

    def describe(self, job_id: str) -> dict[str, Any] | None:
        job = self.state.job(job_id)
        if job is None:
            return None
        counts = self.state.job_counts(job_id)
        hooks = self.state.outbox_counts(job_id) if job["has_webhook"] else {}

        def iso(t: float | None) -> str | None:
            from datetime import UTC, datetime

            return None if t is None else datetime.fromtimestamp(t, UTC).isoformat()

        return {
            "job_id": job_id,
            "status": job["status"],
            "total": job["total"],
            "submitted": job["n_submitted"],
            "done": counts["done"],
            "cached": counts["cached"],
            "by_status": counts["by_status"],
            "webhooks": {s: hooks.get(s, 0) for s in ("pending", "delivered", "failed")}
            if job["has_webhook"] else None,
            "created_at": iso(job["created_at"]),
            "started_at": iso(job["started_at"]),
            "finished_at": iso(job["finished_at"]),
            "run_id": bulk_run_id(job_id),
            "flow_run_id": job["flow_run_id"],
            "error": job["error"],
            "key_id": job["key_id"],
        }

    # -- running --------------------------------------------------------------------------

    async def _work(self) -> None:
        while True:
            job_id = await self._queue.get()
            try:
                await self._run(job_id)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("bulk job %s failed", job_id)
                self.state.update_job(job_id, status="failed", finished_at=time.time(),
                                      error=f"{type(exc).__name__}: {exc}")
            finally:
                self._secrets.pop(job_id, None)

    async def _run(self, job_id: str) -> None:
        job = self.state.job(job_id)
        if job is None:
            return
        self.state.update_job(job_id, status="running", started_at=time.time())
        items = await asyncio.to_thread(self.state.job_items, job_id, missing_only=True)
        index_of = {}
        for idx, raw in items:
            index_of.setdefault(email_key(raw) if storable(raw) else raw, (idx, raw))
        if job["is_test"]:
            sandbox = self.lookups.sandbox
            for start in range(0, len(items), 1000):
                chunk = items[start : start + 1000]
                await self._record(job_id, [(i, sandbox.check(raw), False) for i, raw in chunk], test=True)
                await asyncio.sleep(0)
        else:
            keys = [k for k in index_of if storable(k)]
            n_cached = 0
            for start in range(0, len(keys), 10_000):
                chunk = keys[start : start + 10_000]
                found = await self.lookups.stored(chunk)
                if found:
                    await self._record(job_id, [(index_of[k][0], r, True) for k, r in found.items()])
                    for k in found:
                        index_of.pop(k)
                    n_cached += len(found)
            if index_of:
                await self._verify(job_id, index_of, n_cached)
        self.state.update_job(job_id, status="completed", finished_at=time.time())
        shutil.rmtree(self.work_dir / job_id, ignore_errors=True)

    async def _verify(self, job_id: str, index_of: dict[str, tuple[int, str]], n_cached: int) -> None:
        batches = plan_batches(list(index_of), self.serve.bulk_batch_size)
        results_dir = self.work_dir / job_id / "results"
        shutil.rmtree(results_dir, ignore_errors=True)  # a run cut short by a restart
        seen: set[str] = set()
        got: set[str] = set()

        async def ingest() -> None:
            for rows in await asyncio.to_thread(read_new_batches, results_dir, seen):
                rows = [r for r in rows if r["email"] in index_of and r["email"] not in got]
                await self._record(
                    job_id, [(index_of[r["email"]][0], VerificationResult.from_dict(r), False) for r in rows]
                )
                got.update(r["email"] for r in rows)

        if self.use_prefect:
            batches_path = self.work_dir / job_id / "batches.json"
            batches_path.parent.mkdir(parents=True, exist_ok=True)
            batches_path.write_text(json.dumps(batches))
            flow_done = asyncio.ensure_future(asyncio.to_thread(
                self._run_flow, job_id, str(batches_path), str(results_dir), n_cached))
            while not flow_done.done():
                await asyncio.wait({flow_done}, timeout=0.2)
                await ingest()
            flow_done.result()
        else:
            gate = asyncio.Semaphore(4)  # as many batches at once as the flow's task runner

            async def one(n: int, batch: list[str]) -> None:
                async with gate:
                    results = await self.lookups.verify_batch(batch)
                await asyncio.to_thread(write_batch, results_dir, f"{n:06d}",
                                        [{**r.to_row(), "email": e} for e, r in zip(batch, results, strict=True)])
                await ingest()

            await asyncio.gather(*(one(n, b) for n, b in enumerate(batches)))
        await ingest()
        missing = [k for k in index_of if k not in got]
        if missing:  # batches that failed after their retries: unknown, never invalid
            await self._record(job_id, [
                (index_of[k][0], VerificationResult(email=k, status="unknown", score=SCORES["smtp_error"],
                                                    reason="smtp_error", checks=Checks(syntax_valid=True)), False)
                for k in missing
            ], store=False)

    def _run_flow(self, job_id: str, batches_path: str, results_dir: str, n_cached: int) -> None:
        from flows.verify_address_list import verify_address_list
        from pipeline.runtime import local_flow_runs

        with local_flow_runs():
            state = verify_address_list(
                job_id=job_id, batches_path=batches_path, results_dir=results_dir,
                backend=self.lookups.settings.backend, n_cached=n_cached, return_state=True,
            )
        flow_run_id = getattr(state.state_details, "flow_run_id", None)
        if flow_run_id:
            self.state.update_job(job_id, flow_run_id=str(flow_run_id))

    async def _record(self, job_id: str, results: list[tuple[int, VerificationResult, bool]], *,
                      test: bool = False, store: bool = True) -> None:
        hook = self._secrets.get(job_id)
        contracts = [(idx, {**r.to_dict(), "cached": cached}, cached) for idx, r, cached in results]
        deliveries = [signed(c, job_id, idx, hook[0], hook[1]) for idx, c, _ in contracts] if hook else []
        fresh_rows = [
            {**r.to_row(), "email": r.email} for _idx, r, cached in results
            if not cached and not test and store and storable(r.email)
        ]

        def write() -> None:
            self.state.add_job_results(job_id, contracts, deliveries)
            if fresh_rows:
                self.state.spool_results(bulk_run_id(job_id), self.lookups.backend_name, fresh_rows)

        await asyncio.to_thread(write)
        for _idx, r, cached in results:
            if not cached and not test and store:
                self.lookups.remember(r.email, r)
        if deliveries:
            self.outbox.wake()
