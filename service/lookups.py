"""One address through the service: memory, then the warehouse, then the engine.

- A result is *cached* when it came from the warehouse (or the service's memory of it):
  younger than ``max_age_days`` (30), or an ``unknown`` younger than
  ``retry_unknown_after_minutes`` (30), the pipeline's freshness rules.
- Otherwise the engine verifies it, on the process's one engine loop
  (:func:`tasks.verify.run_on_engine_loop`), so API lookups and bulk batches share the
  engine's global and per-domain SMTP limits and its DNS cache. Concurrent requests for
  the same address share one check.
- A request waits at most its budget; then it answers ``unknown`` (``dns_timeout`` or
  ``smtp_timeout``, the step still running) while the check goes on in the background and
  its result lands in the warehouse (and answers the next request).
- Every fresh result is spooled for the warehouse under ``run_id`` ``api`` (bulk jobs:
  their own run id) with the engine's backend name.
- A test key's address gets the sandbox's answer: no DNS, no SMTP, nothing stored.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from mailsift.backends import Backend
from mailsift.backends.sandbox import SandboxBackend
from mailsift.result import Checks, VerificationResult, utcnow
from mailsift.settings import Settings
from mailsift.verdict import SCORES
from service.settings import ServeSettings
from service.sharing import SharedWarehouse
from service.state import ServiceState
from tasks.verify import run_on_engine_loop

__all__ = ["API_RUN_ID", "Answer", "Lookups", "email_key", "storable"]

log = logging.getLogger("mailsift.serve")

#: ``verifications.run_id`` of results verified through ``POST /api/v1/verify``.
API_RUN_ID = "api"


def email_key(raw: str) -> str:
    """The warehouse identity of an address: trimmed and lower-cased, as the pipeline does."""
    return raw.strip().lower()


@dataclass(frozen=True, slots=True)
class Answer:
    result: VerificationResult
    cached: bool

    def to_dict(self) -> dict[str, Any]:
        return {**self.result.to_dict(), "cached": self.cached}


class Lookups:
    def __init__(
        self, engine_settings: Settings, serve: ServeSettings, shared: SharedWarehouse,
        state: ServiceState,
    ) -> None:
        self.settings = engine_settings
        self.serve = serve
        self.shared = shared
        self.state = state
        self.sandbox = SandboxBackend(engine_settings)
        self._engine: Backend | None = None
        self._memory: OrderedDict[str, tuple[VerificationResult, float]] = OrderedDict()
        self._inflight: dict[str, asyncio.Future[VerificationResult]] = {}
        self._background: set[asyncio.Future[Any]] = set()

    @property
    def engine(self) -> Backend:
        if self._engine is None:
            from tasks.verify import engine_for

            self._engine = engine_for(self.settings)
        return self._engine

    @property
    def backend_name(self) -> str:
        return self.settings.backend

    # -- freshness --------------------------------------------------------------------------

    def is_fresh(self, result: VerificationResult) -> bool:
        age = utcnow() - result.verified_at
        if age >= timedelta(days=self.serve.max_age_days):
            return False
        if result.status == "unknown":
            return age < timedelta(minutes=self.serve.retry_unknown_after_minutes)
        return True

    def remember(self, key: str, result: VerificationResult) -> None:
        if self.serve.memory_cache_size <= 0:
            return
        self._memory[key] = (result, time.monotonic() + self.serve.memory_cache_seconds)
        self._memory.move_to_end(key)
        while len(self._memory) > self.serve.memory_cache_size:
            self._memory.popitem(last=False)

    def recall(self, key: str) -> VerificationResult | None:
        hit = self._memory.get(key)
        if hit is None:
            return None
        result, until = hit
        if time.monotonic() >= until or not self.is_fresh(result):
            self._memory.pop(key, None)
            return None
        return result

    async def stored(self, keys: list[str]) -> dict[str, VerificationResult]:
        """Fresh results from memory or the warehouse, by key."""
        found: dict[str, VerificationResult] = {}
        missing = []
        for key in keys:
            hit = self.recall(key)
            if hit is not None:
                found[key] = hit
            else:
                missing.append(key)
        if missing:
            stored = await asyncio.to_thread(
                self.shared.fresh,
                missing,
                max_age_days=self.serve.max_age_days,
                retry_unknown_after_minutes=self.serve.retry_unknown_after_minutes,
            )
            for key, result in stored.items():
                if self.is_fresh(result):
                    self.remember(key, result)
                    found[key] = result
        return found

    # -- one address --------------------------------------------------------------------------

    async def verify(self, raw: str, *, test: bool, budget: float) -> Answer:
        if test:
            return Answer(self.sandbox.check(raw), cached=False)
        key = email_key(raw)
        hit = (await self.stored([key])).get(key) if _worth_looking_up(key) else None
        if hit is not None:
            return Answer(hit, cached=True)
        stage: dict[str, str] = {"step": "dns"}
        future = self._inflight.get(key)
        if future is None:
            future = self._start(key, raw, stage)
        done, _ = await asyncio.wait({future}, timeout=budget)
        if done and not future.cancelled() and future.exception() is None:
            return Answer(future.result(), cached=False)
        if done:  # a bug in a check must not become a 500 (nor an invalid)
            reason = "smtp_error"
        else:
            reason = "smtp_timeout" if stage["step"] == "smtp" else "dns_timeout"
            log.info("time budget of %.3gs spent; the check goes on in the background", budget)
        return Answer(
            VerificationResult(
                email=key, status="unknown", score=SCORES[reason], reason=reason,
                checks=Checks(syntax_valid=True),
            ),
            cached=False,
        )

    def _start(self, key: str, raw: str, stage: dict[str, str]) -> asyncio.Future[VerificationResult]:
        engine = self.engine
        inner = getattr(engine, "_verify_all", None)

        async def check() -> VerificationResult:
            if inner is not None:  # the local engine reports which step is running
                return (await inner([raw], stage))[0]
            async for result in engine.verify_many([raw]):
                return result
            raise RuntimeError("the backend gave no result")

        future = asyncio.wrap_future(run_on_engine_loop(check()))
        self._inflight[key] = future
        self._background.add(future)

        def landed(f: asyncio.Future[VerificationResult]) -> None:
            self._inflight.pop(key, None)
            self._background.discard(f)
            if f.cancelled() or f.exception() is not None:
                log.error("verification failed: %r", f.exception() if not f.cancelled() else "cancelled")
                return
            result = f.result()
            self.remember(key, result)
            if storable(key):
                self.state.spool_results(API_RUN_ID, self.backend_name, [{**result.to_row(), "email": key}])

        future.add_done_callback(landed)
        return future

    async def verify_batch(self, emails: list[str]) -> list[VerificationResult]:
        """Fresh results for a batch (one per address, input order) on the engine loop."""
        engine = self.engine

        async def collect() -> list[VerificationResult]:
            return [r async for r in engine.verify_many(emails)]

        return await asyncio.wrap_future(run_on_engine_loop(collect()))

    async def drain(self, timeout: float) -> None:
        """Wait for background checks (at shutdown), at most ``timeout`` seconds."""
        if self._background:
            await asyncio.wait(set(self._background), timeout=timeout)


def _worth_looking_up(key: str) -> bool:
    return 0 < len(key) <= 320 and "@" in key and not any(ord(c) < 32 for c in key) and storable(key)


def storable(text: str) -> bool:
    """Text the warehouse can hold (UTF-8: no lone surrogates). Such strings are always
    ``invalid``/``syntax`` and are answered, not stored."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True

