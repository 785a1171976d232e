"""API keys: ``ms_live_<token>`` and ``ms_test_<token>``.

A key is 32 random bytes from :mod:`secrets` (URL-safe base64). The warehouse keeps only
its SHA-256 (a slow password hash buys nothing for a 256-bit random token) plus a hint
(prefix and last four characters) to tell keys apart; the key is shown once, by
``mailsift keys create``. The service compares the SHA-256 of a presented key with every
active key's in constant time (:func:`hmac.compare_digest`) and never logs either.

A test key (``ms_test_``) gets the sandbox's answers (:mod:`mailsift.backends.sandbox`)
and never touches DNS, SMTP or the warehouse's verification history.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = ["ApiKey", "KeyRing", "LIVE_PREFIX", "TEST_PREFIX", "hash_key", "new_key"]

LIVE_PREFIX = "ms_live_"
TEST_PREFIX = "ms_test_"


@dataclass(frozen=True, slots=True)
class ApiKey:
    """One key as the service knows it (no secret: the hash only)."""

    key_id: str
    name: str
    is_test: bool
    key_hash: str
    key_hint: str
    rate_limit_per_minute: int | None = None
    created_at: datetime | None = None
    revoked_at: datetime | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> ApiKey:
        return cls(**{k: row.get(k) for k in cls.__slots__})  # type: ignore[attr-defined]


def hash_key(key: str) -> str:
    """Hex SHA-256 of the key's UTF-8 bytes (surrogates replaced: any header text works)."""
    return hashlib.sha256(key.encode("utf-8", "replace")).hexdigest()


def new_key(*, test: bool = False) -> tuple[str, str, str, str]:
    """A new key: ``(key, key_id, key_hash, key_hint)``. Show ``key`` once; store the rest."""
    prefix = TEST_PREFIX if test else LIVE_PREFIX
    key = prefix + secrets.token_urlsafe(32)
    key_id = "key_" + secrets.token_hex(6)
    return key, key_id, hash_key(key), f"{prefix}...{key[-4:]}"


class KeyRing:
    """The active keys, reloaded from the warehouse every ``refresh_seconds`` (so a key
    created or revoked by ``mailsift keys`` takes effect without a restart).

    ``load`` returns every key row; it may raise (warehouse locked): the old ring stays.
    """

    def __init__(self, load: Callable[[], list[dict[str, Any]]], refresh_seconds: float) -> None:
        self._load = load
        self._refresh = refresh_seconds
        self._keys: tuple[ApiKey, ...] = ()
        self._loaded_at = float("-inf")
        self._lock = threading.Lock()

    def reload(self) -> bool:
        """Read the keys now; False (keeping the old ones) when the warehouse could not be read."""
        try:
            rows = self._load()
        except Exception:  # a locked or missing warehouse: keep serving with what we know
            return False
        with self._lock:
            self._keys = tuple(ApiKey.from_row(r) for r in rows if r.get("revoked_at") is None)
            self._loaded_at = time.monotonic()
        return True

    def stale(self) -> bool:
        return time.monotonic() - self._loaded_at >= self._refresh

    def find(self, presented: str | None) -> ApiKey | None:
        """The active key ``presented`` is, or None; every active key is compared."""
        if not presented:
            return None
        digest = hash_key(presented.strip())
        found = None
        for key in self._keys:
            if hmac.compare_digest(digest, key.key_hash):
                found = key
        return found

    def __len__(self) -> int:
        return len(self._keys)
