"""Request limits: requests per minute per key, and the size of a request body.

The rate limit is a token bucket per key (capacity = the per-minute limit, refilled
continuously), so a key may burst up to its minute's allowance and then gets ``429`` with
``Retry-After`` (RFC 9110 section 10.2.3, whole seconds) until a token is back.
The body limit is enforced while the body streams in (an ASGI middleware), so a 10 MB
body is refused after the first ``max_body_bytes`` without being buffered; a
``Content-Length`` above the limit is refused before any byte is read.
"""

from __future__ import annotations

import json
import math
import threading
import time
from dataclasses import dataclass
from typing import Any

__all__ = ["BodyLimit", "BodyTooLarge", "RateLimiter", "error_body"]


def error_body(error: str, detail: Any) -> bytes:
    return json.dumps({"error": error, "detail": detail}).encode()


@dataclass
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    """Token buckets by key id. ``check`` returns 0 when allowed, else seconds to wait."""

    def __init__(self) -> None:
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def check(self, key_id: str, per_minute: int) -> float:
        if per_minute <= 0:
            return 0.0
        now = time.monotonic()
        rate = per_minute / 60.0
        with self._lock:
            bucket = self._buckets.get(key_id)
            if bucket is None:
                bucket = self._buckets[key_id] = _Bucket(float(per_minute), now)
            bucket.tokens = min(float(per_minute), bucket.tokens + (now - bucket.at) * rate)
            bucket.at = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return 0.0
            return (1.0 - bucket.tokens) / rate

    @staticmethod
    def retry_after(wait: float) -> str:
        return str(max(1, math.ceil(wait)))


class BodyLimit:
    """ASGI middleware: 413 with a JSON error for a body over ``max_bytes``."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        detail = f"the request body is larger than {limit} bytes"
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    too_big = int(value) > limit
                except ValueError:
                    too_big = False
                if too_big:
                    await _send_413(send, detail)
                    return
        seen = 0
        responded = False

        async def limited_receive() -> dict[str, Any]:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(detail)
            return message

        async def guarded_send(message: dict[str, Any]) -> None:
            nonlocal responded
            if message["type"] == "http.response.start":
                responded = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except BodyTooLarge:
            if not responded:
                await _send_413(send, detail)


class BodyTooLarge(ValueError):
    """Raised while reading a body past the limit (the app answers 413)."""


async def _send_413(send: Any, detail: str) -> None:
    body = error_body("payload_too_large", detail)
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
