"""Verify one address from a Python app: a ``requests.Session`` that retries.

The integration guide's client, unchanged but for the base URL and the key::

    export MAILSIFT_API_URL=http://127.0.0.1:8080   # where `mailsift serve` listens
    export MAILSIFT_API_KEY=ms_live_...              # from `mailsift keys create --name signup`
    python examples/api/verify_client.py jane@example.com

Retries: connection errors, 429 (honouring ``Retry-After``) and 5xx, with exponential
backoff. POST is retried too: a verification changes nothing, so repeating it is safe.
"""

from __future__ import annotations

import os
import sys

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

__all__ = ["make_session", "verify_email"]


def make_session(api_key: str | None = None) -> requests.Session:
    session = requests.Session()
    retry = Retry(
        total=3,
        backoff_factor=0.5,
        status_forcelist=[429, 500, 502, 503, 504],
        allowed_methods=["GET", "POST"],
        respect_retry_after_header=True,
    )
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers.update({"X-API-Key": api_key or os.environ["MAILSIFT_API_KEY"]})
    return session


def verify_email(email: str, *, session: requests.Session | None = None,
                 base_url: str | None = None, timeout: float = 10) -> dict:
    """The result: ``status`` (valid, invalid, risky, unknown), ``score``, ``reason``,
    ``checks``, ``suggestion``, ``cached``..."""
    session = session or make_session()
    base_url = (base_url or os.environ.get("MAILSIFT_API_URL", "http://127.0.0.1:8080")).rstrip("/")
    response = session.post(
        f"{base_url}/api/v1/verify",
        json={"email": email},
        params={"timeout": timeout},
        timeout=timeout + 5,  # the server answers 'unknown' when its budget is spent
    )
    response.raise_for_status()
    return response.json()


if __name__ == "__main__":
    for address in sys.argv[1:]:
        result = verify_email(address)
        print(f"{address}: {result['status']} ({result['reason']}, score {result['score']})")
