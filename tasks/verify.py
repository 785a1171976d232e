"""Verify one batch of addresses through the configured backend (pure, no Prefect).

A batch is a few domains' addresses (see :func:`tasks.normalize.batches_by_domain`), so
one SMTP connection checks many of them. The engine is shared by every batch of the same
settings in this process, so DNS answers and catch-all probes are cached across batches.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

from mailsift.backends import Backend, get_backend
from mailsift.result import VerificationResult
from mailsift.settings import Settings

__all__ = ["settings_with", "verify_batch_sync", "engine_for"]

_engines: dict[str, Backend] = {}
_engines_lock = threading.Lock()


def settings_with(overrides: dict[str, Any] | None = None) -> Settings:
    """Settings from the environment (``MAILSIFT_*``), with explicit overrides on top.

    Tasks rebuild their settings this way instead of receiving a Settings object, so no
    secret (the API key) ever travels as a task parameter.
    """
    return Settings(**{k: v for k, v in (overrides or {}).items() if v is not None})


def engine_for(settings: Settings) -> Backend:
    key = settings.model_dump_json()
    with _engines_lock:
        engine = _engines.get(key)
        if engine is None:
            engine = _engines[key] = get_backend(settings)
        return engine


async def _collect(backend: Backend, emails: Sequence[str]) -> list[VerificationResult]:
    return [result async for result in backend.verify_many(emails)]


def verify_batch_sync(emails: Sequence[str], overrides: dict[str, Any] | None = None) -> list[VerificationResult]:
    """Verify ``emails`` (one result each, input order); runs its own event loop."""
    backend = engine_for(settings_with(overrides))
    return asyncio.run(_collect(backend, emails))
