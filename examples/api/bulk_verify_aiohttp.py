"""Verify a list concurrently with aiohttp: at most 20 requests in flight.

    MAILSIFT_API_URL=http://127.0.0.1:8080 MAILSIFT_API_KEY=ms_live_... \\
        python examples/api/bulk_verify_aiohttp.py addresses.txt

For very long lists prefer ``POST /api/v1/bulk/verify`` (one request, a webhook per
address); this is the guide's pattern for a few thousand addresses from a script.
"""

from __future__ import annotations

import asyncio
import os
import sys

import aiohttp

__all__ = ["verify_all"]

CONCURRENCY = 20


async def verify_all(emails: list[str], *, base_url: str | None = None, api_key: str | None = None,
                     concurrency: int = CONCURRENCY) -> list[dict]:
    """One result per address, in input order."""
    base_url = (base_url or os.environ.get("MAILSIFT_API_URL", "http://127.0.0.1:8080")).rstrip("/")
    headers = {"X-API-Key": api_key or os.environ["MAILSIFT_API_KEY"]}
    semaphore = asyncio.Semaphore(concurrency)

    async def one(session: aiohttp.ClientSession, email: str) -> dict:
        async with semaphore:
            for _attempt in range(4):
                async with session.post(f"{base_url}/api/v1/verify", json={"email": email}) as response:
                    if response.status == 429:  # over the key's rate limit: wait as told
                        await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
                        continue
                    response.raise_for_status()
                    return await response.json()
            raise RuntimeError(f"rate limited four times verifying {email!r}")

    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(headers=headers, timeout=timeout) as session:
        return await asyncio.gather(*(one(session, email) for email in emails))


if __name__ == "__main__":
    with open(sys.argv[1], encoding="utf-8") as handle:
        addresses = [line.strip() for line in handle if line.strip()]
    for result in asyncio.run(verify_all(addresses)):
        print(result["email"], result["status"], result["reason"], sep="\t")
