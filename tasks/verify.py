"""Verify one batch of addresses through the configured backend (pure, no Prefect).

A batch is a few domains' addresses (see :func:`tasks.normalize.batches_by_domain`), so
one SMTP connection checks many of them. Prefect runs several batches at once in worker
threads; they all hand their batch to ONE engine per settings, running on ONE event loop
in a background thread of this process. So the engine's limits are process-wide
(concurrency is bounded globally and per domain, as ethical probing asks): four worker threads
do not make four times ``MAILSIFT_PER_DOMAIN_CONCURRENCY`` connections to gmail.com, and
DNS answers and catch-all probes are cached across batches.
"""

from __future__ import annotations

import asyncio
import atexit
import gc
import os
import threading
from collections.abc import Sequence
from typing import Any

from mailsift import reputation
from mailsift.backends import Backend, get_backend
from mailsift.dns import ResolverHealth
from mailsift.result import VerificationResult
from mailsift.settings import Settings

__all__ = ["domain_stats_sync", "engine_for", "prepare_engine", "freeze_heap", "resolver_health_sync", "stats_between", "run_on_engine_loop", "settings_with", "verify_batch_sync"]


_SETTINGS: dict[str, Settings] = {}  # what settings_with built, by its inputs
_SETTINGS_LOCK = threading.Lock()


def settings_with(overrides: dict[str, Any] | None = None) -> Settings:
    """Settings from the environment (``MAILSIFT_*``), with explicit overrides on top.

    Tasks rebuild their settings this way instead of receiving a Settings object, so no
    secret (the API key) ever travels as a task parameter. Settings are frozen and read
    only ``MAILSIFT_*`` variables, so the same variables and overrides give the settings
    built before (building them reads and validates the whole environment: 5-8 ms, paid
    by every batch of a run; the key holds the values only inside this process).
    """
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    key = repr((sorted((k.upper(), v) for k, v in os.environ.items() if k.upper().startswith("MAILSIFT_")),
                sorted(given.items(), key=lambda kv: kv[0])))
    with _SETTINGS_LOCK:
        cached = _SETTINGS.get(key)
    if cached is not None:
        return cached
    settings = Settings(**given)  # a validation error is raised each time, never cached
    with _SETTINGS_LOCK:
        if len(_SETTINGS) >= 16:  # a long-lived worker whose environment changes: stay small
            _SETTINGS.clear()
        _SETTINGS[key] = settings
    return settings


_HEAP_FROZEN = False


def freeze_heap() -> None:
    """Move every object alive now to the garbage collector's permanent generation
    (:func:`gc.freeze`), once per process; called when the engine's loop first starts.

    By then the process holds Prefect, pydantic, SQLAlchemy and FastAPI: several hundred
    thousand objects the collector would otherwise walk in every full collection, holding
    the GIL. The engine allocates fast, so in a flow's process its loop stopped for
    0.3-0.5 s at a time, about 1 s of a 10,000-address run (py-spy --gil,
    ``benchmarks/bench_pipeline.py``), which the engine alone (``mailsift verify``, no
    Prefect) never pays. Once only: a later freeze would keep the garbage of earlier runs
    of a long-lived worker alive for good."""
    global _HEAP_FROZEN
    if not _HEAP_FROZEN:
        _HEAP_FROZEN = True
        gc.freeze()


class _EngineLoop:
    """One event loop in a daemon thread, shared by every batch of this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._engines: dict[str, Backend] = {}

    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._loop.is_closed():
                freeze_heap()
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="mailsift-engine", daemon=True)
                thread.start()
                self._loop = loop
            return self._loop

    def engine(self, settings: Settings) -> Backend:
        key = settings.model_dump_json() + repr(settings.api_key and settings.api_key.get_secret_value())
        with self._lock:
            engine = self._engines.get(key)
            if engine is None:
                engine = self._engines[key] = get_backend(settings)
            return engine

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop()).result()

    def close(self) -> None:
        with self._lock:
            loop, engines = self._loop, list(self._engines.values())
            self._loop, self._engines = None, {}
        if loop is None or loop.is_closed():
            return
        for engine in engines:
            try:
                asyncio.run_coroutine_threadsafe(engine.aclose(), loop).result(timeout=5)
            except Exception:  # closing is best effort at exit
                pass
        loop.call_soon_threadsafe(loop.stop)


_ENGINES = _EngineLoop()
atexit.register(_ENGINES.close)


def engine_for(settings: Settings) -> Backend:
    """The process-wide engine for these settings."""
    return _ENGINES.engine(settings)


def prepare_engine(overrides: dict[str, Any] | None = None) -> threading.Thread:
    """Build the process-wide engine for these settings and read the reputation data,
    in a background thread, now: a flow calls it as it starts, so that its first batch
    does not pay them (~70 ms) after the extract and the warehouse load. The engine's
    loop still starts with the first batch: it freezes the heap then
    (:func:`freeze_heap`), and frozen at the flow's start, the objects of its extract and
    load stayed for the collector to walk during the verify step (measured: slower).
    A failure here (bad settings) is left for the first batch to raise."""

    def run() -> None:
        try:
            engine_for(settings_with(overrides))
            reputation.load()
        except Exception:  # noqa: S110 (see the docstring)
            pass

    thread = threading.Thread(target=run, name="mailsift-engine-prepare", daemon=True)
    thread.start()
    return thread


async def _collect(backend: Backend, emails: Sequence[str]) -> list[VerificationResult]:
    return [result async for result in backend.verify_many(emails)]


def verify_batch_sync(
    emails: Sequence[str], overrides: dict[str, Any] | None = None, settings: Settings | None = None
) -> list[VerificationResult]:
    """Verify ``emails`` (one result each, input order) on the shared engine loop, with
    ``settings`` (else :func:`settings_with` ``overrides``)."""
    backend = engine_for(settings if settings is not None else settings_with(overrides))
    return _ENGINES.run(_collect(backend, emails))


def run_on_engine_loop(coro: Any) -> Any:
    """Schedule ``coro`` on the process's engine loop; returns a
    :class:`concurrent.futures.Future` (``asyncio.wrap_future`` it to await from another
    loop). ``mailsift serve`` sends its single lookups here, so they share the engine, its
    DNS cache and its per-domain SMTP limits with the bulk jobs' batches."""
    return asyncio.run_coroutine_threadsafe(coro, _ENGINES.loop())
def domain_stats_sync(settings: Settings) -> dict[str, dict[str, Any]]:
    """A copy of what each domain has cost the process's engine for ``settings`` so far
    (see :class:`mailsift.smtp.pacing.DomainStats`); empty for backends without SMTP."""
    prober = getattr(engine_for(settings), "prober", None)
    stats = getattr(prober, "domain_stats", None)
    if not stats:
        return {}
    # read on the engine's loop, where the stats are written
    return _ENGINES.run(_copy_stats(stats))


async def _copy_stats(stats: Any) -> dict[str, dict[str, Any]]:
    return {domain: st.as_dict() for domain, st in list(stats.items())}


def stats_between(
    before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]], top: int = 10
) -> list[dict[str, Any]]:
    """What each domain cost between two :func:`domain_stats_sync` snapshots, the
    ``top`` largest (by addresses) first."""
    rows = []
    for domain, now in after.items():
        was = before.get(domain, {})
        row = dict(now)
        for key in ("addresses", "connections", "rcpts", "refusals_421"):
            row[key] = now[key] - was.get(key, 0)
        row["seconds"] = round(now["seconds"] - was.get("seconds", 0.0), 3)
        if row["addresses"] > 0:
            rows.append(row)
    rows.sort(key=lambda r: (-r["addresses"], r["domain"]))
    return rows[:top]


def resolver_health_sync(settings: Settings) -> ResolverHealth | None:
    """The health of the resolver the engine for ``settings`` uses (root check; cached by
    the engine), or ``None`` for backends that resolve nothing themselves."""
    resolver = getattr(engine_for(settings), "resolver", None)
    if resolver is None:
        return None
    return _ENGINES.run(resolver.resolver_health("."))
