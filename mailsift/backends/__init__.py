"""Verification backends: where a verdict comes from.

Every backend answers with the same contract (:class:`mailsift.result.VerificationResult`)
and its ``name`` is stored with every verification (``verifications.backend``):

``local``
    the engine in this package (syntax, DNS, SMTP probe, reputation): :class:`mailsift.verifier.Verifier`
``api``
    an HTTP verification API: :class:`mailsift.backends.api.ApiBackend`
``sandbox``
    no network, deterministic test verdicts: :class:`mailsift.backends.sandbox.SandboxBackend`

Chosen with ``MAILSIFT_BACKEND`` / ``--backend`` (``Settings.backend``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Protocol, get_args, runtime_checkable

from mailsift.errors import ConfigError
from mailsift.result import VerificationResult
from mailsift.settings import BackendName, Settings

__all__ = ["BACKEND_NAMES", "Backend", "BackendName", "get_backend"]

BACKEND_NAMES: tuple[str, ...] = get_args(BackendName)


@runtime_checkable
class Backend(Protocol):
    """What the pipeline needs from a backend."""

    name: str

    def verify_many(self, emails: Iterable[str]) -> AsyncIterator[VerificationResult]:
        """Yield exactly one result per input, in input order. Never raises for an
        address or a network fault (those are results); may raise for conditions that
        must stop a run (:class:`mailsift.errors.BackendAuthError`)."""
        ...

    async def aclose(self) -> None:
        """Release connections; the backend may not be used afterwards."""
        ...


def get_backend(settings: Settings, *, api_key_block: str | None = None) -> Backend:
    """The backend ``settings.backend`` names.

    ``api_key_block`` names a Prefect ``Secret`` block holding the API key (used by the
    ``api`` backend instead of ``MAILSIFT_API_KEY``; loaded only when set).
    Raises :class:`ConfigError` for an unknown name or an ``api`` backend without a URL
    or key.
    """
    name = settings.backend
    if name == "local":
        from mailsift.verifier import Verifier

        return Verifier(settings)
    if name == "api":
        from mailsift.backends.api import ApiBackend

        return ApiBackend(settings, api_key_block=api_key_block or settings.api_key_block)
    if name == "sandbox":
        from mailsift.backends.sandbox import SandboxBackend

        return SandboxBackend(settings)
    raise ConfigError(f"unknown backend {name!r}: choose one of {', '.join(BACKEND_NAMES)}")
