"""The verification contract: one result per address, the same from every backend.

Documented in ``docs/contract.md`` (fields, every reason, score bands). Score bands:
``valid`` >= 0.7, ``risky`` and ``unknown`` in [0.3, 0.7), ``invalid`` < 0.3.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, get_args

__all__ = [
    "Status",
    "STATUSES",
    "REASONS",
    "SCORE_BANDS",
    "Checks",
    "VerificationResult",
    "utcnow",
]

Status = Literal["valid", "invalid", "risky", "unknown"]
STATUSES: tuple[str, ...] = get_args(Status)

#: Every reason word a result may carry, with the status it belongs to.
REASONS: dict[str, str] = {
    "accepted": "valid",
    "syntax": "invalid",
    "special_use": "invalid",
    "nxdomain": "invalid",
    "no_mx": "invalid",
    "null_mx": "invalid",
    "mx_unroutable": "invalid",  # the MX hosts are loopback/private/...: mail goes nowhere public
    "disposable": "invalid",
    "mailbox_not_found": "invalid",
    "mailbox_disabled": "invalid",
    "catch_all": "risky",
    "role_based": "risky",
    "mailbox_full": "risky",
    "sandbox_risky": "risky",
    "greylisted": "unknown",
    "dns_timeout": "unknown",
    "dns_error": "unknown",
    "smtp_timeout": "unknown",
    "smtp_unreachable": "unknown",
    "smtp_blocked": "unknown",
    "smtp_rejected": "unknown",  # a 5xx that names neither the mailbox nor us: not proof
    "smtp_error": "unknown",
    "smtp_disabled": "unknown",
    "api_timeout": "unknown",
    "api_error": "unknown",
    "not_verified": "unknown",  # export only: a row whose batch failed; the next run verifies it
}

#: Inclusive lower bound, exclusive upper bound (1.0 inclusive for valid).
SCORE_BANDS: dict[str, tuple[float, float]] = {
    "valid": (0.7, 1.0),
    "risky": (0.3, 0.7),
    "unknown": (0.3, 0.7),
    "invalid": (0.0, 0.3),
}

CHECK_NAMES: tuple[str, ...] = (
    "syntax_valid",
    "domain_exists",
    "mx_found",
    "smtp_reachable",
    "disposable",
    "role_based",
    "catch_all",
    "free_provider",
)


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Checks:
    """Tri-state signals: ``True`` / ``False``, or ``None`` where not checked."""

    syntax_valid: bool | None = None
    domain_exists: bool | None = None
    mx_found: bool | None = None
    smtp_reachable: bool | None = None
    disposable: bool | None = None
    role_based: bool | None = None
    catch_all: bool | None = None
    free_provider: bool | None = None

    def to_dict(self) -> dict[str, bool | None]:
        return {name: getattr(self, name) for name in CHECK_NAMES}


@dataclass(frozen=True, slots=True)
class VerificationResult:
    email: str
    status: Status
    score: float
    reason: str
    checks: Checks = field(default_factory=Checks)
    suggestion: str | None = None
    provider: str | None = None
    mx_host: str | None = None
    smtp_code: int | None = None
    smtp_message: str | None = None
    verified_at: datetime = field(default_factory=utcnow)

    def __post_init__(self) -> None:
        low, high = SCORE_BANDS[self.status]
        ok = low <= self.score < high or (self.status == "valid" and self.score == 1.0)
        if not ok:
            raise ValueError(f"score {self.score} outside the {self.status} band [{low}, {high})")

    def to_dict(self) -> dict[str, Any]:
        """The contract as JSON-ready data, ``checks`` nested (``mailsift verify --json``)."""
        return {
            "email": self.email,
            "status": self.status,
            "score": self.score,
            "reason": self.reason,
            "checks": self.checks.to_dict(),
            "suggestion": self.suggestion,
            "provider": self.provider,
            "mx_host": self.mx_host,
            "smtp_code": self.smtp_code,
            "smtp_message": self.smtp_message,
            "verified_at": self.verified_at.isoformat(),
        }

    def to_row(self) -> dict[str, Any]:
        """Flat columns for tables: checks become ``is_*`` / ``has_*`` names as stored."""
        row = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "checks"}
        row.update(self.checks.to_dict())
        return row

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VerificationResult:
        """Inverse of :meth:`to_dict` (also accepts flat rows from :meth:`to_row`)."""
        checks_src = data.get("checks") or {k: data.get(k) for k in CHECK_NAMES}
        verified_at = data.get("verified_at") or utcnow()
        if isinstance(verified_at, str):
            verified_at = datetime.fromisoformat(verified_at)
        if verified_at.tzinfo is None:
            verified_at = verified_at.replace(tzinfo=UTC)
        return cls(
            email=data["email"],
            status=data["status"],
            score=float(data["score"]),
            reason=data["reason"],
            checks=Checks(**{k: checks_src.get(k) for k in CHECK_NAMES}),
            suggestion=data.get("suggestion"),
            provider=data.get("provider"),
            mx_host=data.get("mx_host"),
            smtp_code=data.get("smtp_code"),
            smtp_message=data.get("smtp_message"),
            verified_at=verified_at,
        )
