"""The ``api`` backend: an HTTP verification API client (httpx, async).

Protocol (the integration guide's)::

    POST {MAILSIFT_API_URL}/verify
    X-API-Key: <MAILSIFT_API_KEY, or a Prefect Secret block>
    Content-Type: application/json

    {"email": "jane@example.com"}

The answer (MailValid-style JSON, field names of common verification APIs accepted) is
mapped onto the result contract by :func:`result_from_api`; fields it lacks are null.

Behaviour, decided here:

* Syntax first: an address the syntax layer refuses (and anything with CR/LF or other
  control characters) is answered locally as ``invalid``/``syntax`` and never sent.
* Retries (``MAILSIFT_API_RETRIES`` tries, default 3) on connection errors, timeouts and
  5xx, with exponential backoff ``backoff_base * 2**n`` (0.5, 1, 2 s by default).
* ``429 Too Many Requests`` counts as a try and honours ``Retry-After`` (delta-seconds or
  HTTP-date, RFC 9110 10.2.3; capped at ``max_retry_after``): the whole client pauses, not
  just that address. Without the header the normal backoff applies.
* ``MAILSIFT_API_TIMEOUT`` bounds each try (connect, send, wait, read); when the last try
  runs out the address is ``unknown``/``api_timeout``. Any other failure of the last try
  is ``unknown``/``api_error``. Neither raises.
* ``401``/``403`` raise :class:`~mailsift.errors.BackendAuthError` once, stopping the whole
  :meth:`ApiBackend.verify_many` (requests in flight are cancelled): a wrong key must not
  turn a whole list ``unknown``.
* Other 4xx (and 3xx) are not retried: ``unknown``/``api_error``, logged once per run.
* Rate limit: at most ``MAILSIFT_API_RATE_LIMIT`` requests a minute, evenly spaced, shared
  by every backend of this process that talks to the same URL (Prefect tasks in threads);
  at most ``MAILSIFT_API_CONCURRENCY`` requests in flight per backend and event loop.
* The key is sent only in the ``X-API-Key`` header. It is never logged, never part of an
  exception message, a ``repr`` or a result.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import ipaddress
import logging
import math
import re
import threading
import time
import weakref
from collections.abc import AsyncIterator, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Self

import httpx
from pydantic import SecretStr

from mailsift.errors import BackendAuthError, ConfigError
from mailsift.result import CHECK_NAMES, REASONS, SCORE_BANDS, Checks, VerificationResult, utcnow
from mailsift.settings import Settings
from mailsift.syntax import SyntaxProblem, parse_address
from mailsift.verdict import SCORES, syntax_result

__all__ = [
    "CHECK_ALIASES",
    "DEFAULT_REASONS",
    "REASON_ALIASES",
    "STATUS_WORDS",
    "ApiBackend",
    "RateLimiter",
    "parse_retry_after",
    "result_from_api",
]

log = logging.getLogger("mailsift.backends.api")

# --------------------------------------------------------------------------------------
# Response mapping tables (data, not code): extend them to accept another API's words.
# --------------------------------------------------------------------------------------

#: API status word -> (contract status, the reason it implies or None).
STATUS_WORDS: dict[str, tuple[str, str | None]] = {
    "valid": ("valid", None),
    "deliverable": ("valid", None),
    "ok": ("valid", None),
    "safe": ("valid", None),
    "good": ("valid", None),
    "verified": ("valid", None),
    "invalid": ("invalid", None),
    "undeliverable": ("invalid", None),
    "bad": ("invalid", None),
    "bounce": ("invalid", None),
    "bounced": ("invalid", None),
    "rejected": ("invalid", None),
    "disposable": ("invalid", "disposable"),
    "risky": ("risky", None),
    "catch_all": ("risky", "catch_all"),
    "catchall": ("risky", "catch_all"),
    "accept_all": ("risky", "catch_all"),
    "acceptall": ("risky", "catch_all"),
    "role": ("risky", "role_based"),
    "role_based": ("risky", "role_based"),
    "unknown": ("unknown", None),
    "unverifiable": ("unknown", None),
    "error": ("unknown", None),
    "timeout": ("unknown", "smtp_timeout"),
}

#: API reason word -> contract reason (words already in ``REASONS`` map to themselves).
REASON_ALIASES: dict[str, str] = {
    "accepted_email": "accepted",
    "deliverable": "accepted",
    "valid": "accepted",
    "valid_mailbox": "accepted",
    "mailbox_exists": "accepted",
    "ok": "accepted",
    "invalid_syntax": "syntax",
    "bad_syntax": "syntax",
    "syntax_error": "syntax",
    "invalid_format": "syntax",
    "format": "syntax",
    "invalid_domain": "nxdomain",
    "domain_not_found": "nxdomain",
    "unknown_domain": "nxdomain",
    "no_dns_entries": "nxdomain",
    "no_mx_record": "no_mx",
    "no_mx_records": "no_mx",
    "mx_not_found": "no_mx",
    "rejected_email": "mailbox_not_found",
    "invalid_mailbox": "mailbox_not_found",
    "invalid_email": "mailbox_not_found",
    "mailbox_does_not_exist": "mailbox_not_found",
    "no_such_user": "mailbox_not_found",
    "user_unknown": "mailbox_not_found",
    "undeliverable": "mailbox_not_found",
    "disabled": "mailbox_disabled",
    "inactive": "mailbox_disabled",
    "disposable_email": "disposable",
    "is_disposable": "disposable",
    "accept_all": "catch_all",
    "catchall": "catch_all",
    "role": "role_based",
    "role_account": "role_based",
    "role_email": "role_based",
    "full_mailbox": "mailbox_full",
    "inbox_full": "mailbox_full",
    "over_quota": "mailbox_full",
    "greylisting": "greylisted",
    "temporary_failure": "greylisted",
    "timeout": "smtp_timeout",
    "connection_timeout": "smtp_timeout",
    "unavailable_smtp": "smtp_unreachable",
    "smtp_unavailable": "smtp_unreachable",
    "no_connect": "smtp_unreachable",
    "connection_error": "smtp_unreachable",
    "blocked": "smtp_blocked",
    "unexpected_error": "smtp_error",
    "error": "smtp_error",
}

#: Reason used when the API gives none that fits its status (after the checks, see below).
DEFAULT_REASONS: dict[str, str] = {
    "valid": "accepted",
    "invalid": "mailbox_not_found",
    "risky": "catch_all",
    "unknown": "smtp_error",
}

#: Contract check -> field names accepted for it (nested under ``checks`` or top level).
CHECK_ALIASES: dict[str, tuple[str, ...]] = {
    "syntax_valid": ("syntax_valid", "valid_syntax", "format_valid", "is_valid_format", "syntax"),
    "domain_exists": ("domain_exists", "domain_valid", "has_domain", "valid_domain"),
    "mx_found": ("mx_found", "has_mx", "mx_records", "valid_mx"),
    "smtp_reachable": ("smtp_reachable", "smtp_check", "smtp_valid", "smtp"),
    "disposable": ("disposable", "is_disposable"),
    "role_based": ("role_based", "is_role", "role", "is_role_account", "role_account"),
    "catch_all": ("catch_all", "is_catch_all", "catchall", "accept_all", "is_accept_all"),
    "free_provider": ("free_provider", "is_free", "free", "is_free_email", "free_email"),
}
assert set(CHECK_ALIASES) == set(CHECK_NAMES)

_FIELD_ALIASES: dict[str, tuple[str, ...]] = {
    "status": ("status", "result", "state", "verdict"),
    "score": ("score", "quality_score", "confidence"),
    "reason": ("reason", "sub_status", "substatus", "status_reason"),
    "suggestion": ("suggestion", "did_you_mean", "didyoumean", "suggested_correction"),
    "provider": ("provider", "mailbox_provider", "esp"),
    "mx_host": ("mx_host", "mx_record", "mx"),
    "smtp_code": ("smtp_code", "smtp_status"),
    "smtp_message": ("smtp_message", "smtp_response"),
}

_TRUE = {"true", "yes", "y", "1", "t"}
_FALSE = {"false", "no", "n", "0", "f"}
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_MAX_TEXT = 500


def _word(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    word = re.sub(r"[\s\-]+", "_", value.strip().lower())
    return word or None


def _text(value: Any, limit: int = _MAX_TEXT) -> str | None:
    if isinstance(value, (list, tuple)) and value:
        value = value[0]
    if not isinstance(value, str):
        return None
    text = _CONTROL.sub(" ", value).strip()
    return text[:limit] or None


def _flag(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        return True if word in _TRUE else False if word in _FALSE else None
    if isinstance(value, (list, tuple)):
        return len(value) > 0
    return None


def _first(data: Mapping[str, Any], names: Iterable[str]) -> Any:
    for name in names:
        if name in data and data[name] is not None:
            return data[name]
    return None


def _score(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        score = float(value)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(score) or score < 0 or score > 100:
        return None
    return score / 100 if score > 1 else score


def _clamp(score: float, status: str) -> float:
    low, high = SCORE_BANDS[status]
    top = 1.0 if status == "valid" else high - 0.01
    return round(min(max(score, low), top), 4)


def _reason(status: str, implied: str | None, given: Any, checks: Checks) -> str:
    for candidate in (_word(given), implied):
        if candidate is None:
            continue
        reason = candidate if candidate in REASONS else REASON_ALIASES.get(candidate)
        if reason is not None and REASONS[reason] == status:
            return reason
    if status == "invalid":
        if checks.syntax_valid is False:
            return "syntax"
        if checks.disposable:
            return "disposable"
        if checks.domain_exists is False:
            return "nxdomain"
        if checks.mx_found is False:
            return "no_mx"
    if status == "risky":
        if checks.catch_all:
            return "catch_all"
        if checks.role_based:
            return "role_based"
    return DEFAULT_REASONS[status]


def _unwrap(data: Any) -> Mapping[str, Any]:
    if isinstance(data, list) and len(data) == 1:
        data = data[0]
    if isinstance(data, Mapping) and "status" not in data:
        for key in ("result", "data"):
            inner = data.get(key)
            if isinstance(inner, Mapping):
                return inner
    if not isinstance(data, Mapping):
        raise TypeError(f"expected a JSON object, got {type(data).__name__}")
    return data


def result_from_api(
    data: Any, email: str, *, allow_test_domains: bool = False, verified_at: datetime | None = None
) -> VerificationResult:
    """Map one API answer onto the contract for ``email`` (our normalized address).

    The status word goes through :data:`STATUS_WORDS`; the score is taken as 0-1, or 0-100
    when above 1, then clamped into the status's band (``SCORE_BANDS``); a reason outside
    ``REASONS`` is translated by :data:`REASON_ALIASES`, and one that does not fit the
    status is replaced using the checks, then :data:`DEFAULT_REASONS`. Checks come from a
    nested ``checks`` object or flat booleans (:data:`CHECK_ALIASES`). A suggestion is kept
    only if it is itself a valid address (a bare domain is joined to the local part).
    Missing fields are null. Raises :class:`ValueError` when there is no usable status.
    """
    obj = _unwrap(data)
    status_word = _word(_first(obj, _FIELD_ALIASES["status"]))
    if status_word not in STATUS_WORDS:
        raise ValueError(f"no known status in the answer (got {status_word!r})")
    status, implied = STATUS_WORDS[status_word]  # type: ignore[index]

    nested = obj.get("checks") if isinstance(obj.get("checks"), Mapping) else {}
    values: dict[str, bool | None] = {}
    for name, aliases in CHECK_ALIASES.items():
        value = _flag(_first(nested, aliases))
        if value is None:
            value = _flag(_first(obj, aliases))
        values[name] = value
    checks = Checks(**values)

    reason = _reason(status, implied, _first(obj, _FIELD_ALIASES["reason"]), checks)
    score = _score(_first(obj, _FIELD_ALIASES["score"]))
    if score is None:
        low, high = SCORE_BANDS[status]
        score = SCORES.get(reason, 0.9 if status == "valid" else (low + high) / 2)
    score = _clamp(score, status)

    suggestion = None
    suggested = _text(_first(obj, _FIELD_ALIASES["suggestion"]), 320)
    if suggested:
        if "@" not in suggested:
            suggested = f"{email.rpartition('@')[0]}@{suggested}"
        parsed = parse_address(suggested, allow_test_domains=allow_test_domains)
        if not isinstance(parsed, SyntaxProblem) and parsed.email != email:
            suggestion = parsed.email

    code = _first(obj, _FIELD_ALIASES["smtp_code"])
    smtp_code = code if isinstance(code, int) and not isinstance(code, bool) and 200 <= code < 600 else None
    provider = _text(_first(obj, _FIELD_ALIASES["provider"]), 100)
    mx_host = _text(_first(obj, _FIELD_ALIASES["mx_host"]), 255)
    return VerificationResult(
        email=email,
        status=status,  # type: ignore[arg-type]
        score=score,
        reason=reason,
        checks=checks,
        suggestion=suggestion,
        provider=provider.lower() if provider else None,
        mx_host=mx_host.lower().rstrip(".") if mx_host else None,
        smtp_code=smtp_code,
        smtp_message=_text(_first(obj, _FIELD_ALIASES["smtp_message"])),
        verified_at=verified_at or utcnow(),
    )


def _unknown(email: str, reason: str) -> VerificationResult:
    return VerificationResult(email=email, status="unknown", score=0.5, reason=reason)


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (RFC 9110 10.2.3): delta-seconds or
    an HTTP-date. ``None`` when absent or unreadable; never negative."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


# --------------------------------------------------------------------------------------
# Rate limiting
# --------------------------------------------------------------------------------------


class RateLimiter:
    """At most ``per_minute`` acquisitions a minute, evenly spaced (no bursts).

    Each :meth:`acquire` reserves the next free time slot under a thread lock and then
    sleeps until it, so one limiter works across event loops and threads (aiolimiter's
    limiters are bound to one loop). :meth:`defer` pushes every later slot back (429).
    """

    def __init__(self, per_minute: float) -> None:
        if per_minute <= 0:
            raise ConfigError("the API rate limit must be positive (requests per minute)")
        self.interval = 60.0 / per_minute
        self._next = 0.0
        self._lock = threading.Lock()

    def reserve(self) -> float:
        """Reserve a slot; return the seconds to wait for it."""
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next)
            self._next = slot + self.interval
            return slot - now

    async def acquire(self) -> None:
        delay = self.reserve()
        if delay > 0:
            await asyncio.sleep(delay)

    def defer(self, seconds: float) -> None:
        with self._lock:
            self._next = max(self._next, time.monotonic() + seconds)


_limiters: dict[tuple[str, float], RateLimiter] = {}
_limiters_lock = threading.Lock()


def _shared_limiter(endpoint: str, per_minute: float) -> RateLimiter:
    with _limiters_lock:
        key = (endpoint, float(per_minute))
        limiter = _limiters.get(key)
        if limiter is None:
            limiter = _limiters[key] = RateLimiter(per_minute)
        return limiter


# --------------------------------------------------------------------------------------
# The backend
# --------------------------------------------------------------------------------------


class _Run:
    """State of one verify_many call: its client, its key, whether the key was refused."""

    def __init__(self, client: httpx.AsyncClient, key: SecretStr) -> None:
        self.client = client
        self.key = key
        self.auth_error: BackendAuthError | None = None
        self.warned_4xx = False
        self.failures = 0


class ApiBackend:
    """Verify addresses with an HTTP verification API (``MAILSIFT_BACKEND=api``).

    ``api_key_block`` names a Prefect ``Secret`` block holding the key; it is loaded
    (lazily, once) instead of ``MAILSIFT_API_KEY``. ``backoff_base`` scales the retry
    backoff (tests make it small); ``max_retry_after`` caps a server's ``Retry-After``.
    """

    name = "api"

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        api_key_block: str | None = None,
        backoff_base: float = 0.5,
        max_retry_after: float = 60.0,
    ) -> None:
        self.settings = settings = settings or Settings()
        if not settings.api_url:
            raise ConfigError(
                "MAILSIFT_API_URL is not set: the api backend needs the verification API's "
                "base URL (requests go to {MAILSIFT_API_URL}/verify)"
            )
        try:
            url = httpx.URL(settings.api_url.strip())
        except (httpx.InvalidURL, TypeError) as exc:
            raise ConfigError(f"MAILSIFT_API_URL is not a URL: {exc}") from None
        if url.scheme not in ("http", "https") or not url.host:
            raise ConfigError("MAILSIFT_API_URL must be an http:// or https:// URL with a host")
        # never keep user:password from the URL in anything we print
        self.endpoint = str(url.copy_with(username=None, password=None, query=None, fragment=None))
        self.endpoint = self.endpoint.rstrip("/") + "/verify"
        self.host = url.host if url.port is None else f"{url.host}:{url.port}"
        self._url = url
        self._key_block = api_key_block
        self._key: SecretStr | None = None
        if api_key_block is None:
            key = settings.api_key
            if key is None or not key.get_secret_value().strip():
                raise ConfigError(
                    "MAILSIFT_API_KEY is not set: the api backend needs the verification "
                    "API's key (or name a Prefect Secret block that holds it)"
                )
            self._key = self._checked_key(key.get_secret_value(), "MAILSIFT_API_KEY")
        self.backoff_base = backoff_base
        self.max_retry_after = max_retry_after
        self.limiter = _shared_limiter(self.endpoint, settings.api_rate_limit)
        self._semaphores: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )
        if url.scheme == "http" and not _is_loopback(url.host):
            log.warning("MAILSIFT_API_URL uses plain http: the API key crosses the network unencrypted")

    def __repr__(self) -> str:
        return f"ApiBackend(endpoint={self.endpoint!r}, api_key='**********')"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Nothing to release: each call owns its HTTP client (loop-safe)."""

    # -- the key ------------------------------------------------------------------------

    @property
    def _key_source(self) -> str:
        return f"the Prefect Secret block {self._key_block!r}" if self._key_block else "MAILSIFT_API_KEY"

    @staticmethod
    def _checked_key(value: str, source: str) -> SecretStr:
        value = value.strip()
        if not value or _CONTROL.search(value) or not value.isascii():
            raise ConfigError(f"{source} must be a non-empty ASCII string without control characters")
        return SecretStr(value)

    async def _api_key(self) -> SecretStr:
        if self._key is None:
            from prefect.blocks.system import Secret  # only when a block is configured

            try:
                block = await Secret.aload(self._key_block)
                value = block.get()
            except Exception as exc:  # noqa: BLE001 - any failure: one clear message
                detail = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
                raise ConfigError(
                    f"could not load the Prefect Secret block {self._key_block!r}: {detail}"
                ) from None
            if not isinstance(value, str):
                raise ConfigError(f"the Prefect Secret block {self._key_block!r} must hold a string")
            self._key = self._checked_key(value, f"the Prefect Secret block {self._key_block!r}")
        return self._key

    # -- public API -----------------------------------------------------------------------

    async def verify(self, email: str) -> VerificationResult:
        """Verify one address (see :meth:`verify_many`)."""
        async with contextlib.aclosing(self.verify_many([email])) as results:
            async for result in results:
                return result
        raise AssertionError("unreachable: one result per input")

    async def verify_many(self, emails: Iterable[str]) -> AsyncIterator[VerificationResult]:
        """Yield one result per input, in input order, verifying up to
        ``MAILSIFT_API_CONCURRENCY`` at once. Raises :class:`BackendAuthError` (and stops
        every request in flight) when the API refuses the key."""
        key = await self._api_key()
        semaphore = self._semaphore()
        window = max(4 * self.settings.api_concurrency, 32)
        timeout = httpx.Timeout(self.settings.api_timeout)
        limits = httpx.Limits(max_connections=self.settings.api_concurrency)
        headers = {"User-Agent": _user_agent(), "Accept": "application/json"}
        async with httpx.AsyncClient(
            timeout=timeout, limits=limits, headers=headers, follow_redirects=False
        ) as client:
            run = _Run(client, key)
            source = iter(emails)
            exhausted = False
            pending: dict[asyncio.Task[VerificationResult], int] = {}
            ready: dict[int, VerificationResult] = {}
            next_in = next_out = 0
            try:
                while True:
                    while not exhausted and len(pending) + len(ready) < window:
                        try:
                            raw = next(source)
                        except StopIteration:
                            exhausted = True
                            break
                        task = asyncio.ensure_future(self._verify_one(run, semaphore, raw))
                        pending[task] = next_in
                        next_in += 1
                    if next_out in ready:
                        yield ready.pop(next_out)
                        next_out += 1
                        continue
                    if not pending:
                        break
                    done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                    for task in done:
                        index = pending.pop(task)
                        exc = task.exception()
                        if exc is not None:
                            if run.auth_error is not None:
                                raise run.auth_error
                            raise exc
                        ready[index] = task.result()
            finally:
                for task in pending:
                    task.cancel()
                if pending:
                    await asyncio.gather(*pending, return_exceptions=True)
            if run.failures:
                log.warning(
                    "%d address(es) could not be verified by the API at %s (unknown: api_timeout/api_error)",
                    run.failures, self.host,
                )

    # -- internals ------------------------------------------------------------------------

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        semaphore = self._semaphores.get(loop)
        if semaphore is None:
            semaphore = self._semaphores[loop] = asyncio.Semaphore(self.settings.api_concurrency)
        return semaphore

    def _backoff(self, attempt: int) -> float:
        return self.backoff_base * (2 ** (attempt - 1))

    def _auth_error(self, status: int) -> BackendAuthError:
        return BackendAuthError(
            f"API key rejected by {self.host} (HTTP {status}): check {self._key_source}"
        )

    async def _verify_one(self, run: _Run, semaphore: asyncio.Semaphore, raw: Any) -> VerificationResult:
        try:
            parsed = parse_address(raw, allow_test_domains=self.settings.allow_test_domains)
            if isinstance(parsed, SyntaxProblem):
                return syntax_result(parsed)
            email = parsed.email
        except Exception:  # noqa: BLE001 - parse_address never raises; belt and braces
            return _unknown(str(raw)[:320], "api_error")
        try:
            result = await self._ask(run, semaphore, email)
        except BackendAuthError:
            raise
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the contract: never raise for one address
            log.warning("unexpected %s while verifying through the API", type(exc).__name__)
            result = _unknown(email, "api_error")
        if result.reason in ("api_timeout", "api_error"):
            run.failures += 1
        return result

    async def _ask(self, run: _Run, semaphore: asyncio.Semaphore, email: str) -> VerificationResult:
        tries = self.settings.api_retries
        outcome = "api_error"
        for attempt in range(1, tries + 1):
            wait = 0.0
            async with semaphore:
                if run.auth_error is not None:
                    raise run.auth_error
                await self.limiter.acquire()
                if run.auth_error is not None:
                    raise run.auth_error
                try:
                    async with asyncio.timeout(self.settings.api_timeout):
                        response = await run.client.post(
                            self.endpoint,
                            json={"email": email},
                            headers={"X-API-Key": run.key.get_secret_value()},
                        )
                except (TimeoutError, httpx.TimeoutException):
                    outcome, wait = "api_timeout", self._backoff(attempt)
                    log.debug("API try %d/%d timed out after %.1fs", attempt, tries, self.settings.api_timeout)
                except httpx.TransportError as exc:
                    outcome, wait = "api_error", self._backoff(attempt)
                    log.debug("API try %d/%d failed: %s", attempt, tries, type(exc).__name__)
                else:
                    status = response.status_code
                    log.debug("API try %d/%d: HTTP %d", attempt, tries, status)
                    if 200 <= status < 300:
                        try:
                            return result_from_api(
                                response.json(), email,
                                allow_test_domains=self.settings.allow_test_domains,
                            )
                        except (ValueError, TypeError) as exc:  # JSONDecodeError: ValueError
                            log.warning("unusable answer from the API at %s: %s", self.host, _short(exc))
                            return _unknown(email, "api_error")
                    if status in (401, 403):
                        if run.auth_error is None:
                            run.auth_error = self._auth_error(status)
                        raise run.auth_error
                    outcome = "api_error"
                    if status == 429:
                        retry_after = parse_retry_after(response.headers.get("Retry-After"))
                        pause = min(
                            retry_after if retry_after is not None else self._backoff(attempt),
                            self.max_retry_after,
                        )
                        if attempt < tries:
                            self.limiter.defer(pause)  # everyone waits, we too (at acquire)
                    elif status >= 500:
                        wait = self._backoff(attempt)
                    else:
                        if not run.warned_4xx:
                            run.warned_4xx = True
                            log.warning(
                                "the API at %s answered HTTP %d (not retried): check MAILSIFT_API_URL",
                                self.host, status,
                            )
                        return _unknown(email, "api_error")
            if attempt < tries and wait > 0:
                await asyncio.sleep(wait)
        return _unknown(email, outcome)


def _short(exc: Exception) -> str:
    return str(exc)[:200]


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _user_agent() -> str:
    from mailsift import __version__

    return f"mailsift/{__version__}"
