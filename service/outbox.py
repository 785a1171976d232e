"""Per-address webhooks of bulk jobs, as the integration guide's receiver reads them.

One POST per result, as each completes::

    POST <webhook_url>
    Content-Type: application/json
    X-Webhook-Signature: <hex HMAC-SHA256 of the raw body, keyed with webhook_secret>
    X-Mailsift-Delivery: <delivery id: stable per job and address, an idempotency key>

    {"email": ..., "status": ..., "score": ..., "reason": ..., "checks": {...}, ...,
     "cached": false, "job_id": "..."}

The body is built and signed once, when the result is recorded, and stored in the
outbox (:mod:`service.state`) together with its signature; the secret itself is kept only
in memory while the job runs, never stored or logged. A delivery is done on any 2xx;
anything else (non-2xx, connection error, timeout) is retried after the waits
``MAILSIFT_SERVE_WEBHOOK_WAITS`` (1, 2, 4, 8 minutes: 5 attempts, at 0, 1, 3, 7 and 15
minutes). The guide's "1, 2, 4, 8, 16" lists the backoff after each of 5 failures; the
16 minutes after the fifth failure lead to no sixth attempt, so they are not waited:
the delivery is marked failed (and counted in ``GET /api/v1/bulk/{job_id}``).

Because the outbox is on disk, deliveries that were pending when the service stopped go
out after it starts again, on their schedule. Every attempt is also loaded into the
warehouse's ``webhook_deliveries`` (``run_id`` = the job's run id, ``batch_index`` = the
address's index in the job, URL credentials redacted).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

import httpx

from mailsift import __version__, webhooks
from mailsift.webhooks import DELIVERY_HEADER, SIGNATURE_HEADER, sign
from service.settings import ServeSettings
from service.state import ServiceState

__all__ = ["Outbox", "bulk_run_id", "delivery_id", "per_address_body", "signed"]

log = logging.getLogger("mailsift.serve")
_NS = uuid.UUID("0f4b3b7e-56c1-4c59-9a57-3f1f0a2d6e11")


def bulk_run_id(job_id: str) -> str:
    """``verifications.run_id`` / ``webhook_deliveries.run_id`` of a bulk job's rows."""
    return f"api-bulk-{job_id}"


def delivery_id(job_id: str, index: int) -> str:
    return str(uuid.uuid5(_NS, f"{job_id}\x00{index}"))


def per_address_body(result: dict[str, Any], job_id: str) -> bytes:
    """The exact bytes POSTed: the contract's fields at the top level, plus ``job_id``
    (:func:`mailsift.webhooks.per_address_body`, the shape ``mailsift run
    --webhook-format per-address`` sends too)."""
    return webhooks.per_address_body(result, job_id=job_id)


def signed(result: dict[str, Any], job_id: str, index: int, url: str, secret: str) -> tuple[str, str, bytes, str]:
    body = per_address_body(result, job_id)
    return delivery_id(job_id, index), url, body, sign(body, secret)


class Outbox:
    """Sends due deliveries in the background; :meth:`wake` after adding some."""

    def __init__(self, state: ServiceState, serve: ServeSettings) -> None:
        self.state = state
        self.waits = tuple(serve.webhook_waits)
        self.timeout = serve.webhook_timeout
        self.concurrency = serve.webhook_concurrency
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None

    @property
    def max_attempts(self) -> int:
        return len(self.waits) + 1

    def start(self) -> None:
        self._client = httpx.AsyncClient(
            headers={"User-Agent": f"mailsift/{__version__}"}, follow_redirects=False,
            timeout=self.timeout,
        )
        self._task = asyncio.create_task(self._run(), name="mailsift-webhooks")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()

    def wake(self) -> None:
        self._wake.set()

    async def _run(self) -> None:
        gate = asyncio.Semaphore(self.concurrency)
        sending: set[asyncio.Task[None]] = set()
        busy: set[str] = set()
        while True:
            try:
                now = time.time()
                due = [
                    d for d in await asyncio.to_thread(self.state.due_deliveries, now, self.concurrency * 4)
                    if d["delivery_id"] not in busy
                ]
                for delivery in due:
                    busy.add(delivery["delivery_id"])
                    task = asyncio.create_task(self._send(delivery, gate))
                    sending.add(task)
                    task.add_done_callback(lambda t, did=delivery["delivery_id"]: (sending.discard(t), busy.discard(did)))
                nxt = await asyncio.to_thread(self.state.next_due)
                pause = 0.5 if nxt is None else min(0.5, max(0.005, nxt - time.time()))
                if due and len(due) >= self.concurrency * 4:
                    pause = 0.005
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=pause)
                except TimeoutError:
                    pass
            except asyncio.CancelledError:
                for task in sending:
                    task.cancel()
                await asyncio.gather(*sending, return_exceptions=True)
                raise
            except Exception:  # the loop must survive anything (a locked state file...)
                log.exception("webhook outbox loop")
                await asyncio.sleep(1)

    async def _send(self, delivery: dict[str, Any], gate: asyncio.Semaphore) -> None:
        assert self._client is not None
        attempt = int(delivery["attempts"]) + 1
        body: bytes = delivery["body"]
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: delivery["signature"],
            DELIVERY_HEADER: delivery["delivery_id"],
        }
        attempted_at = time.time()
        status: int | None = None
        async with gate:
            try:
                response = await self._client.post(delivery["url"], content=body, headers=headers)
                status = response.status_code
                error = None if 200 <= status < 300 else f"HTTP {status}"
            except httpx.TimeoutException:
                error = f"timeout after {self.timeout:g}s"
            except httpx.HTTPError as exc:
                error = type(exc).__name__
        if error is None:
            state, next_at = "delivered", attempted_at
        elif attempt >= self.max_attempts:
            state, next_at = "failed", attempted_at
            log.warning("webhook %s failed %d times (last: %s); given up", delivery["delivery_id"], attempt, error)
        else:
            state, next_at = "pending", time.time() + self.waits[attempt - 1]
        await asyncio.to_thread(
            self._record, delivery, attempt=attempt, state=state, next_at=next_at, status=status,
            error=error, attempted_at=attempted_at,
        )

    def _record(self, delivery: dict[str, Any], *, attempt: int, state: str, next_at: float,
                status: int | None, error: str | None, attempted_at: float) -> None:
        from datetime import UTC, datetime

        self.state.record_delivery(delivery["delivery_id"], attempts=attempt, state=state,
                                   next_at=next_at, status=status, error=error)
        index = delivery.get("idx")
        self.state.spool_attempt({
            "delivery_id": delivery["delivery_id"],
            "run_id": bulk_run_id(delivery["job_id"]),
            "url": delivery["url"],
            "batch_index": -1 if index is None else int(index),
            "n_results": 1,
            "attempt": attempt,
            "is_delivered": state == "delivered",
            "payload": delivery["body"].decode("utf-8", "replace"),
            "status_code": status,
            "error": error,
            "attempted_at": datetime.fromtimestamp(attempted_at, UTC).isoformat(),
        })
