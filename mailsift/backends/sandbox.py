"""The sandbox backend: no network, deterministic verdicts, like a verification API's
test keys.

After the syntax layer (:func:`mailsift.syntax.parse_address`):

=====================  ========  =====================  =====
address                status    reason                 score
=====================  ========  =====================  =====
``*@valid.test``       valid     ``accepted``           0.95
``*@invalid.test``     invalid   ``mailbox_not_found``  0.05
anything else          risky     ``sandbox_risky``      0.5
bad syntax             invalid   ``syntax``             0.0
=====================  ========  =====================  =====

This is the integration guide's sandbox exactly: ``@valid.test`` valid, ``@invalid.test``
invalid, every other syntactically valid address risky, whatever its domain, special-use
ones (``elsewhere.test``, ``example.com``, ``.invalid``, ``.localhost``) included: the
sandbox never looks anything up, so ``MAILSIFT_ALLOW_TEST_DOMAINS`` does not apply. Only
the exact domains count (``a@x.valid.test`` is risky).

Use it for demos and for testing systems downstream of mailsift (CRM sync, webhooks)
without touching DNS or SMTP.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from typing import Self

from mailsift.result import Checks, VerificationResult, utcnow
from mailsift.settings import Settings
from mailsift.syntax import SyntaxProblem, parse_address
from mailsift.verdict import syntax_result

__all__ = ["SANDBOX_DOMAINS", "SandboxBackend"]

_CHECKED = {
    "syntax_valid": True,
    "domain_exists": True,
    "mx_found": True,
    "smtp_reachable": True,
    "disposable": False,
    "role_based": False,
    "free_provider": False,
}

#: domain -> (status, reason, score, checks) for the sandbox's fixed verdicts.
SANDBOX_DOMAINS: dict[str, tuple[str, str, float, Checks]] = {
    "valid.test": ("valid", "accepted", 0.95, Checks(**_CHECKED, catch_all=False)),
    "invalid.test": ("invalid", "mailbox_not_found", 0.05, Checks(**_CHECKED, catch_all=False)),
}
_RISKY = ("risky", "sandbox_risky", 0.5, Checks(**_CHECKED, catch_all=None))

_YIELD_EVERY = 256  # let other tasks run while streaming a long list


class SandboxBackend:
    """Deterministic verdicts without any network access (``MAILSIFT_BACKEND=sandbox``)."""

    name = "sandbox"

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()

    def __repr__(self) -> str:
        return "SandboxBackend()"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        pass

    def check(self, raw: str) -> VerificationResult:
        """The sandbox verdict for one string (synchronous; never raises)."""
        now = utcnow()
        parsed = parse_address(raw, allow_test_domains=True)
        if isinstance(parsed, SyntaxProblem):
            return syntax_result(parsed, now)
        fixed = SANDBOX_DOMAINS.get(parsed.domain)
        status, reason, score, checks = fixed or _RISKY
        return VerificationResult(
            email=parsed.email,
            status=status,  # type: ignore[arg-type]
            score=score,
            reason=reason,
            checks=checks,
            verified_at=now,
        )

    async def verify(self, email: str) -> VerificationResult:
        return self.check(email)

    async def verify_many(self, emails: Iterable[str]) -> AsyncIterator[VerificationResult]:
        """One result per input, in input order."""
        for i, raw in enumerate(emails, 1):
            yield self.check(raw)
            if i % _YIELD_EVERY == 0:
                await asyncio.sleep(0)
