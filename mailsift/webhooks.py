"""Signed webhooks: after a run, POST its results to the user's URL.

Wire format
-----------
Results go in batches (500 a request by default), one JSON object each, compact UTF-8::

    {"run_id": "...", "batch_index": 0, "n_batches": 3, "results": [<contract dicts>]}

Headers::

    Content-Type: application/json
    User-Agent: mailsift/<version>
    X-Mailsift-Delivery: <delivery id>        stable per (run_id, batch_index): an idempotency key
    X-Webhook-Signature: <hex HMAC-SHA256 of the raw body, keyed with the secret>

The body is built once (:func:`build_payloads`) and stored byte for byte, so a
redelivery carries the same body and the same signature.

A receiver checks the signature over the raw bytes, before parsing the JSON::

    import hashlib, hmac, os

    def is_authentic(raw_body: bytes, signature: str) -> bool:
        secret = os.environ["MAILSIFT_WEBHOOK_SECRET"].encode()
        expected = hmac.new(secret, raw_body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, signature)

Retries
-------
A delivery is *delivered* when the receiver answers 2xx. Anything else — a network error,
a timeout, any non-2xx status including 4xx (as Stripe and Svix do: a 4xx from a
receiver is usually a deployment or configuration slip that gets fixed) — is a failed
attempt. With the default ``schedule=(60, 120, 240, 480, 960)``:

* a delivery makes at most ``len(schedule)`` = 5 attempts;
* attempt 1 is made at once; after failed attempt *n* the next one waits ``schedule[n-1]``:
  attempts at 0, 1, 3, 7 and 15 minutes (waits of 1, 2, 4 and 8 minutes);
* the backoff after the fifth failure (16 minutes) is not waited in-process: the delivery
  is left failed, every attempt recorded, for ``mailsift webhooks retry`` (:func:`redeliver`).

Tests pass a fast schedule (e.g. ``(0.01,) * 5``). Batches are delivered concurrently
(a few at a time), each on its own schedule. Every attempt is reported to ``on_attempt``
as it happens (the pipeline records them in ``webhook_deliveries``). The secret is used
only to sign; it is never logged, stored or put into an error.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import httpx

from mailsift.errors import ConfigError
from mailsift.result import VerificationResult, utcnow

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_SCHEDULE",
    "MAX_RESPONSE_BYTES",
    "SIGNATURE_HEADER",
    "DeliveryAttempt",
    "WEBHOOK_FORMATS",
    "build_payloads",
    "build_per_address_payloads",
    "per_address_body",
    "check_url",
    "deliver",
    "delivery_id",
    "redeliver",
    "secret_from_env",
    "sign",
    "verify_signature",
]

log = logging.getLogger("mailsift.webhooks")

SIGNATURE_HEADER = "X-Webhook-Signature"
DELIVERY_HEADER = "X-Mailsift-Delivery"
DEFAULT_BATCH_SIZE = 500
#: Bytes of a receiver's response body read at most (the body is not used).
MAX_RESPONSE_BYTES = 64 * 1024
#: Backoff after each failed attempt, seconds (1, 2, 4, 8, 16 minutes); attempts = len.
DEFAULT_SCHEDULE: tuple[float, ...] = (60, 120, 240, 480, 960)
_PARALLEL_BATCHES = 4
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DELIVERY_NS = uuid.UUID("5d3c6a52-8a4e-4c1b-9d55-0b8a1f6c7e21")


# -- signing ----------------------------------------------------------------------------


def _key(secret: str | bytes) -> bytes:
    key = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
    if not key:
        raise ConfigError("the webhook secret is empty")
    return key


def sign(body: bytes, secret: str | bytes) -> str:
    """Hex HMAC-SHA256 (RFC 2104, FIPS 180-4) of the raw ``body`` keyed with ``secret``."""
    return hmac.new(_key(secret), body, hashlib.sha256).hexdigest()


def verify_signature(body: bytes, secret: str | bytes, signature: str | None) -> bool:
    """True when ``signature`` is the hex HMAC-SHA256 of ``body`` (constant-time compare)."""
    if not signature:
        return False
    return hmac.compare_digest(sign(body, secret), signature.strip().lower())


def secret_from_env(name: str) -> str:
    """The webhook secret from the environment variable ``name`` (``--webhook-secret-env``).

    Raises :class:`ConfigError` naming the variable, never showing its value.
    """
    if not name or not _ENV_NAME.match(name):
        raise ConfigError(f"{name!r} is not an environment variable name")
    value = os.environ.get(name)
    if value is None:
        raise ConfigError(f"environment variable {name} is not set (it should hold the webhook secret)")
    if not value.strip():
        raise ConfigError(f"environment variable {name} is empty (it should hold the webhook secret)")
    return value


def check_url(url: str) -> str:
    """Validate a webhook URL (http or https with a host); returns it stripped. The
    error shows the URL redacted (:func:`mailsift.urlsecrets.redact`)."""
    from mailsift.urlsecrets import redact

    url = (url or "").strip()
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        raise ConfigError(f"webhook URL {redact(url)} is not a valid URL") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ConfigError(f"webhook URL {redact(url)} must be http:// or https:// with a host")
    return url


def _display_url(url: str) -> str:
    """Scheme, host and port only: paths and queries often carry tokens."""
    try:
        parsed = httpx.URL(url)
        return f"{parsed.scheme}://{parsed.host}" + (f":{parsed.port}" if parsed.port else "")
    except (httpx.InvalidURL, TypeError):
        return "<webhook url>"


# -- payloads -----------------------------------------------------------------------------


def delivery_id(run_id: str, batch_index: int) -> str:
    """Stable id of one batch of one run (a UUID 5): receivers can drop duplicates."""
    return str(uuid.uuid5(_DELIVERY_NS, f"{run_id}\x00{batch_index}"))


def _json_default(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _contract(item: VerificationResult | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(item, VerificationResult):
        return item.to_dict()
    return VerificationResult.from_dict(dict(item)).to_dict()


def build_payloads(
    results: Sequence[VerificationResult] | Sequence[Mapping[str, Any]],
    *,
    run_id: str,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> list[tuple[str, bytes]]:
    """Split a run's results into signed-ready bodies: ``[(delivery_id, body), ...]``.

    Items are :class:`VerificationResult` or dicts in contract or flat-row form
    (normalized through :meth:`VerificationResult.from_dict`). Deterministic: the same
    input gives the same bytes. No results -> no payloads.
    """
    if batch_size < 1:
        raise ConfigError("webhook batch size must be at least 1")
    items = [_contract(item) for item in results]
    n_batches = (len(items) + batch_size - 1) // batch_size
    payloads = []
    for index in range(n_batches):
        body = {
            "run_id": str(run_id),
            "batch_index": index,
            "n_batches": n_batches,
            "results": items[index * batch_size : (index + 1) * batch_size],
        }
        data = json.dumps(
            body, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_json_default
        ).encode("utf-8")
        payloads.append((delivery_id(str(run_id), index), data))
    return payloads


#: ``batch``: :func:`build_payloads` (the default of ``mailsift run``); ``per-address``:
#: :func:`build_per_address_payloads`, the integration guide's shape (``mailsift serve``).
WEBHOOK_FORMATS: tuple[str, ...] = ("batch", "per-address")


def per_address_body(result: Mapping[str, Any], **extra: Any) -> bytes:
    """One result as the integration guide's receiver reads it: the contract's fields at
    the top level (``data["email"]``, ``data["status"]``), plus ``extra`` (``run_id`` or
    ``job_id``). Compact, ASCII-escaped JSON (any string is an address, lone surrogates
    included), the bytes that are signed and stored."""
    return json.dumps(
        {**result, **extra}, separators=(",", ":"), ensure_ascii=True, allow_nan=False,
        default=_json_default,
    ).encode("ascii")


def build_per_address_payloads(
    results: Sequence[VerificationResult] | Sequence[Mapping[str, Any]], *, run_id: str
) -> list[tuple[str, bytes]]:
    """One body per result (:func:`per_address_body` with ``run_id``), delivery ids stable
    per run and position: ``[(delivery_id, body), ...]``."""
    return [
        (delivery_id(f"{run_id}\x00per-address", i), per_address_body(_contract(item), run_id=str(run_id)))
        for i, item in enumerate(results)
    ]


# -- delivery -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeliveryAttempt:
    """One POST of one batch, as recorded in ``webhook_deliveries``."""

    delivery_id: str
    batch_index: int | None
    n_results: int | None
    attempt: int  #: 1-based, counting earlier attempts passed to :func:`redeliver`
    attempted_at: datetime  #: UTC, when the request was started
    status_code: int | None  #: None when no HTTP answer came (network error, timeout)
    error: str | None  #: None when delivered; e.g. "HTTP 500" or "ConnectError"
    is_delivered: bool
    url: str
    payload: str  #: the exact body (UTF-8), kept so a redelivery re-sends the same bytes


def _describe(body: bytes) -> tuple[int | None, int | None]:
    try:
        data = json.loads(body)
        if "email" in data:  # one result (per-address format)
            return None, 1
        return int(data["batch_index"]), len(data["results"])
    except (ValueError, KeyError, TypeError):
        return None, None


async def _post(
    client: httpx.AsyncClient, url: str, key: bytes, did: str, body: bytes, timeout: float
) -> tuple[int | None, str | None]:
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: hmac.new(key, body, hashlib.sha256).hexdigest(),
        DELIVERY_HEADER: did,
    }
    try:
        async with (
            asyncio.timeout(timeout),
            client.stream("POST", url, content=body, headers=headers) as response,
        ):
            # The receiver's body is not used: read at most MAX_RESPONSE_BYTES of it (a
            # hostile receiver can answer gigabytes), then drop the connection.
            seen = 0
            async for chunk in response.aiter_raw():
                seen += len(chunk)
                if seen >= MAX_RESPONSE_BYTES:
                    break
    except (TimeoutError, httpx.TimeoutException):
        return None, f"timeout after {timeout:g}s"
    except httpx.HTTPError as exc:
        return None, type(exc).__name__
    if 200 <= response.status_code < 300:
        return response.status_code, None
    return response.status_code, f"HTTP {response.status_code}"


async def redeliver(
    url: str,
    secret: str | bytes,
    deliveries: Sequence[tuple[str, bytes | str]],
    *,
    schedule: Sequence[float] = DEFAULT_SCHEDULE,
    on_attempt: Callable[[DeliveryAttempt], None | Awaitable[None]] | None = None,
    timeout: float = 10.0,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    previous_attempts: Mapping[str, int] | None = None,
) -> list[DeliveryAttempt]:
    """(Re-)send stored bodies ``[(delivery_id, body), ...]`` with the retry schedule of
    :func:`deliver` (at most ``len(schedule)`` attempts each in this call); attempt
    numbers continue from ``previous_attempts[delivery_id]``. Returns every attempt made,
    in the order made. ``on_attempt`` (sync or async) sees each attempt as it happens.
    """
    url = check_url(url)
    key = _key(secret)
    if not schedule:
        raise ConfigError("the webhook retry schedule needs at least one entry")
    previous = previous_attempts or {}
    attempts: list[DeliveryAttempt] = []
    gate = asyncio.Semaphore(_PARALLEL_BATCHES)
    shown = _display_url(url)

    async def record(attempt: DeliveryAttempt) -> None:
        attempts.append(attempt)
        if on_attempt is not None:
            outcome = on_attempt(attempt)
            if asyncio.iscoroutine(outcome) or isinstance(outcome, asyncio.Future):
                await outcome

    async def one(client: httpx.AsyncClient, did: str, raw: bytes | str) -> None:
        body = raw.encode("utf-8") if isinstance(raw, str) else bytes(raw)
        batch_index, n_results = _describe(body)
        payload = body.decode("utf-8", "replace")
        for n in range(1, len(schedule) + 1):
            async with gate:
                attempted_at = utcnow()
                status, error = await _post(client, url, key, did, body, timeout)
            await record(
                DeliveryAttempt(
                    delivery_id=did,
                    batch_index=batch_index,
                    n_results=n_results,
                    attempt=previous.get(did, 0) + n,
                    attempted_at=attempted_at,
                    status_code=status,
                    error=error,
                    is_delivered=error is None,
                    url=url,
                    payload=payload,
                )
            )
            if error is None:
                log.debug("webhook %s delivered to %s (attempt %d)", did, shown, n)
                return
            if n < len(schedule):
                log.info(
                    "webhook %s to %s failed (%s); retry %d in %gs", did, shown, error, n + 1, schedule[n - 1]
                )
                await sleep(schedule[n - 1])
        log.warning(
            "webhook %s to %s failed %d times (last: %s); `mailsift webhooks retry` re-sends it",
            did, shown, len(schedule), error,
        )

    from mailsift import __version__

    async with httpx.AsyncClient(
        headers={"User-Agent": f"mailsift/{__version__}"}, follow_redirects=False, timeout=timeout
    ) as client:
        tasks = [asyncio.ensure_future(one(client, did, body)) for did, body in deliveries]
        try:
            await asyncio.gather(*tasks)
        except BaseException:  # on_attempt failed (or we were cancelled): stop the others
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
    return attempts


async def deliver(
    url: str,
    secret: str | bytes,
    payloads: Sequence[tuple[str, bytes]],
    *,
    schedule: Sequence[float] = DEFAULT_SCHEDULE,
    on_attempt: Callable[[DeliveryAttempt], None | Awaitable[None]] | None = None,
    timeout: float = 10.0,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
) -> list[DeliveryAttempt]:
    """POST each payload of :func:`build_payloads` to ``url``, signed with ``secret``,
    retrying failures on ``schedule`` (module docstring: at most ``len(schedule)``
    attempts, the first at once, then after ``schedule[0]``, ``schedule[1]``... seconds).
    Never raises for a failed delivery: the outcome is in the returned attempts (and was
    passed to ``on_attempt``); raises :class:`ConfigError` for a bad URL or empty secret.
    """
    return await redeliver(
        url, secret, payloads, schedule=schedule, on_attempt=on_attempt, timeout=timeout, sleep=sleep
    )
