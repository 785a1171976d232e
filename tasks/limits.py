"""Per-domain SMTP totals across probe hosts, through Prefect's global concurrency limits.

Each probe host's engine keeps its own per-domain window, which is what the remote server
counts per client IP. When several hosts verify batches of the same domain at once, the
domain sees the sum. ``MAILSIFT_DOMAIN_LIMIT_ACROSS_HOSTS`` bounds that sum: a batch that
holds addresses of a domain split over several batches (only those: a domain within one
batch is probed from one host) takes ``min(max_per_domain_concurrency, limit)`` slots of the
global concurrency limit ``mailsift-smtp-<domain>`` while it runs, so at most ``limit``
connections reach the domain from all hosts together. The limit is created (or its size
updated) on first use by each process; Prefect's server holds the slots.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from mailsift.settings import Settings

__all__ = ["LIMIT_PREFIX", "SLOT_LEASE_SECONDS", "domain_slots", "limit_name", "split_domains"]

LIMIT_PREFIX = "mailsift-smtp-"

#: How long a batch's slots outlive a probe host that died holding them.
SLOT_LEASE_SECONDS = 60.0

_made: set[tuple[str, int]] = set()
_lock = threading.Lock()


def limit_name(domain: str) -> str:
    """The global concurrency limit of one domain's SMTP connections."""
    return f"{LIMIT_PREFIX}{domain.lower()}"


def split_domains(batches: Sequence[Sequence[str]]) -> list[list[str]]:
    """For each batch, its domains that also appear in another batch (sorted)."""
    seen: dict[str, int] = {}
    per_batch = [sorted({e.rpartition("@")[2].lower() for e in batch if "@" in e}) for batch in batches]
    for domains in per_batch:
        for domain in domains:
            seen[domain] = seen.get(domain, 0) + 1
    return [[d for d in domains if seen[d] > 1] for domains in per_batch]


def _ensure(names: list[str], limit: int) -> None:
    from prefect.client.orchestration import get_client

    with _lock:
        missing = [n for n in names if (n, limit) not in _made]
    if not missing:
        return
    with get_client(sync_client=True) as client:
        for name in missing:
            client.upsert_global_concurrency_limit_by_name(name, limit)
    with _lock:
        _made.update((n, limit) for n in missing)


@contextmanager
def domain_slots(domains: Sequence[str], settings: Settings) -> Iterator[None]:
    """Hold this batch's share of each domain's cross-host limit while it runs (nothing
    when ``domain_limit_across_hosts`` is unset or no domain is shared)."""
    limit = settings.domain_limit_across_hosts
    if not limit or not domains:
        yield
        return
    from prefect.concurrency.sync import concurrency

    names = [limit_name(d) for d in domains]
    _ensure(names, limit)
    # as many slots as connections the host's adaptive window may open to the domain.
    # The slots are a lease the holder renews (every 3/4 of it); a probe host that dies
    # holding them cannot release them, so the server takes them back when the lease runs
    # out: 60 s (plus its repossessor's 15 s loop), not Prefect's default 300 s, during
    # which the other hosts would share a smaller total for that domain.
    with concurrency(names, occupy=min(settings.max_per_domain_concurrency, limit), strict=True,
                     lease_duration=SLOT_LEASE_SECONDS):
        yield
