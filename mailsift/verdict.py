"""Verdict and score: the layers' evidence turned into one contract result.

Precedence (first match wins), as ``docs/contract.md`` "Verdicts, in brief" states it:

1. syntax (or a special-use domain)                         -> invalid
2. disposable domain                                        -> invalid
3. DNS: NXDOMAIN, no MX and no A/AAAA, null MX (RFC 7505)   -> invalid
   DNS: every MX address non-public (loopback, private...)   -> invalid  (mx_unroutable)
   DNS: SERVFAIL, timeout                                   -> unknown
4. SMTP: mailbox unknown (5.1.x) or disabled (5.2.1)        -> invalid
   SMTP: accepted on a catch-all domain or an accept-all
         provider (provider rules are data)                 -> risky  (catch_all)
   SMTP: accepted role account (info@, admin@...)           -> risky  (role_based)
   SMTP: mailbox full (552, x.2.2)                          -> risky
   SMTP: accepted                                           -> valid
   SMTP: 4xx, blocked, timeout, refused, garbage            -> unknown, never invalid
   SMTP: a 5xx that proves nothing about the mailbox          -> unknown  (smtp_rejected)

Scores sit inside the status's band (valid >= 0.7; risky and unknown in [0.3, 0.7);
invalid < 0.3), so a score alone can be thresholded.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from mailsift.result import Checks, VerificationResult, utcnow

if TYPE_CHECKING:
    from mailsift.dns import MxResult
    from mailsift.smtp import RcptOutcome
    from mailsift.syntax import Address, SyntaxProblem

__all__ = ["Evidence", "decide", "syntax_result", "SCORES"]

#: One score per reason: where inside its band a verdict of that kind sits.
SCORES: dict[str, float] = {
    "accepted": 0.95,
    "syntax": 0.0,
    "special_use": 0.0,
    "nxdomain": 0.02,
    "null_mx": 0.02,
    "mx_unroutable": 0.03,
    "no_mx": 0.05,
    "disposable": 0.1,
    "mailbox_not_found": 0.05,
    "mailbox_disabled": 0.08,
    "catch_all": 0.55,
    "role_based": 0.6,
    "mailbox_full": 0.4,
    "greylisted": 0.5,
    "smtp_disabled": 0.5,
    "dns_timeout": 0.4,
    "dns_error": 0.4,
    "smtp_timeout": 0.4,
    "smtp_unreachable": 0.4,
    "smtp_blocked": 0.4,
    "smtp_rejected": 0.35,
    "smtp_error": 0.4,
}

_SMTP_KIND: dict[str, tuple[str, str]] = {
    # RcptOutcome.kind -> (status, reason); "accepted" is decided with the signals below
    "not_found": ("invalid", "mailbox_not_found"),
    "disabled": ("invalid", "mailbox_disabled"),
    "full": ("risky", "mailbox_full"),
    "temporary": ("unknown", "greylisted"),
    "blocked": ("unknown", "smtp_blocked"),
    "rejected": ("unknown", "smtp_rejected"),
    "timeout": ("unknown", "smtp_timeout"),
    "unreachable": ("unknown", "smtp_unreachable"),
    "unroutable": ("invalid", "mx_unroutable"),
    "error": ("unknown", "smtp_error"),
}

_DNS_OUTCOME: dict[str, tuple[str, str]] = {
    "nxdomain": ("invalid", "nxdomain"),
    "no_mail": ("invalid", "no_mx"),
    "null_mx": ("invalid", "null_mx"),
    "servfail": ("unknown", "dns_error"),
    "timeout": ("unknown", "dns_timeout"),
}


@dataclass(frozen=True, slots=True)
class Evidence:
    """What the layers found out about one syntactically valid address."""

    address: Address
    disposable: bool
    role_based: bool
    free_provider: bool
    suggestion_domain: str | None  # a candidate; offered only if the domain takes no mail
    mx: MxResult | None = None  # None: DNS not consulted (disposable)
    provider: str | None = None
    accepts_all: bool = False  # provider rule: every RCPT gets 250 there
    rcpt: RcptOutcome | None = None  # None: SMTP not run
    catch_all: bool | None = None


def _result(email: str, status: str, reason: str, checks: Checks, **extra: object) -> VerificationResult:
    return VerificationResult(
        email=email, status=status, score=SCORES[reason], reason=reason, checks=checks, **extra  # type: ignore[arg-type]
    )


def syntax_result(problem: SyntaxProblem, verified_at: datetime | None = None) -> VerificationResult:
    return _result(
        problem.email,
        "invalid",
        problem.reason,
        Checks(syntax_valid=False),
        verified_at=verified_at or utcnow(),
    )


def decide(ev: Evidence, verified_at: datetime | None = None) -> VerificationResult:
    address, mx, rcpt = ev.address, ev.mx, ev.rcpt
    takes_mail = mx is not None and mx.outcome == "ok"
    dns_known = mx is not None and mx.outcome in ("ok", "nxdomain", "no_mail", "null_mx")
    catch_all = True if (ev.accepts_all and takes_mail) else ev.catch_all
    smtp_reachable: bool | None = None
    if rcpt is not None:
        smtp_reachable = rcpt.kind not in (
            "timeout", "unreachable", "unroutable", "error", "blocked"
        )
    checks = Checks(
        syntax_valid=True,
        domain_exists=(mx.outcome != "nxdomain") if dns_known and mx is not None else None,
        mx_found=takes_mail if dns_known else None,
        smtp_reachable=smtp_reachable,
        disposable=ev.disposable,
        role_based=ev.role_based,
        catch_all=catch_all if rcpt is not None or ev.accepts_all else None,
        free_provider=ev.free_provider,
    )
    suggestion = None
    # A typo is offered only for a domain that takes no mail of its own, or a disposable
    # one (the disposable lists hold typo-squats such as gmial.com and hotmial.com).
    if ev.suggestion_domain and (ev.disposable or (dns_known and not takes_mail)):
        suggestion = f"{address.local}@{ev.suggestion_domain}"
    extra: dict[str, object] = {
        "suggestion": suggestion,
        "provider": ev.provider,
        "verified_at": verified_at or utcnow(),
    }
    if rcpt is not None:
        extra.update(mx_host=rcpt.mx_host, smtp_code=rcpt.code, smtp_message=rcpt.message)

    def out(status: str, reason: str) -> VerificationResult:
        return _result(address.email, status, reason, checks, **extra)

    if ev.disposable:
        return out("invalid", "disposable")
    if mx is None or mx.outcome != "ok":
        status, reason = _DNS_OUTCOME[mx.outcome if mx is not None else "servfail"]
        return out(status, reason)
    if rcpt is None:
        return out("risky", "role_based") if ev.role_based else out("unknown", "smtp_disabled")
    if rcpt.kind == "accepted":
        if catch_all:
            return out("risky", "catch_all")
        if ev.role_based:
            return out("risky", "role_based")
        return out("valid", "accepted")
    status, reason = _SMTP_KIND[rcpt.kind]
    return out(status, reason)
