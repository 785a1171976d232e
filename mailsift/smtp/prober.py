"""The prober's public API: :class:`SmtpProber`, one instance per run."""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections import deque
from collections.abc import Sequence

from mailsift import reputation
from mailsift.settings import Settings
from mailsift.smtp.outcomes import DomainProbe, HostResolver, ProbeFailure, RcptOutcome
from mailsift.smtp.pacing import MAX_PER_HOST, DomainStats, Scheduler
from mailsift.smtp.session import DomainRun, Failure
from mailsift.smtp.wire import (
    address_problem,
    client_tls_context,
    display,
    has_control,
    settings_problem,
)

__all__ = ["SmtpProber"]

log = logging.getLogger("mailsift.smtp")


class SmtpProber:
    """Probe mailboxes over SMTP. One instance serves a whole run, from any number of
    event loops (its semaphores are kept per loop)."""

    def __init__(self, settings: Settings, resolver: HostResolver) -> None:
        self.settings = settings
        self.resolver = resolver
        #: SMTP connections opened so far (TCP connected), over all calls.
        self.connections_opened = 0
        self._catch_all: dict[str, bool] = {}
        self._catch_all_pending: set[str] = set()
        #: Recipients per transaction of an MX address, learnt from 452 4.5.3 replies.
        self._txn_limits: dict[str, int] = {}
        self._per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Scheduler] = (
            weakref.WeakKeyDictionary()
        )
        self._tls = client_tls_context()
        self._problem = settings_problem(settings)
        #: What each domain cost so far (connections, RCPTs, window, refusals, time).
        self.domain_stats: dict[str, DomainStats] = {}

    def _scheduler(self) -> Scheduler:
        loop = asyncio.get_running_loop()
        scheduler = self._per_loop.get(loop)
        if scheduler is None:
            settings = self.settings
            scheduler = self._per_loop[loop] = Scheduler(
                settings.concurrency, settings.smtp_slow_share, settings.smtp_slow_after
            )
        return scheduler

    def ceiling(self, mx_hosts: Sequence[str]) -> int:
        """The most connections the window of ``mx_hosts`` may reach: the provider's
        ``max_concurrency`` (data/providers.json), never above the setting."""
        provider = reputation.provider_from_mx(list(mx_hosts))
        data = reputation.provider_rule(provider).max_concurrency if provider != "other" else None
        if data is None:
            data = reputation.default_max_concurrency()
        ceiling = self.settings.max_per_domain_concurrency
        if data is not None:
            ceiling = min(ceiling, data)
        return max(1, min(ceiling, MAX_PER_HOST))

    def stats_of(self, domain: str) -> DomainStats:
        stats = self.domain_stats.get(domain)
        if stats is None:
            stats = self.domain_stats[domain] = DomainStats(domain)
        return stats

    def catch_all(self, domain: str) -> bool | None:
        """The cached catch-all verdict of ``domain``, if one was determined."""
        return self._catch_all.get(domain.lower())

    async def aclose(self) -> None:
        """Nothing is kept open between calls; here for symmetry with other backends."""

    async def probe(
        self, domain: str, mx_hosts: Sequence[str], emails: Sequence[str]
    ) -> DomainProbe:
        """Check ``emails`` (all of ``domain``) against ``mx_hosts`` (by preference).

        Never raises for bad input or network faults: every email gets an outcome.
        """
        emails = list(emails)
        outcomes: list[RcptOutcome | None] = [None] * len(emails)
        key = domain.lower() if isinstance(domain, str) else ""
        problem = self._problem
        if problem is None and (not isinstance(domain, str) or has_control(domain)):
            problem = "domain contains control characters"
        todo: dict[str, list[int]] = {}
        for i, email in enumerate(emails):
            why = problem or address_problem(email)
            if why is not None:
                outcomes[i] = RcptOutcome(display(email), "error", None, why, None)
            else:
                todo.setdefault(email, []).append(i)
        hosts = [h for h in mx_hosts if isinstance(h, str) and h and not has_control(h)]
        run: DomainRun | None = None
        results: dict[str, RcptOutcome] = {}
        if todo and not hosts:
            failure = Failure("unreachable", None, "no usable MX host", None)
            results = {email: failure.outcome(email) for email in todo}
        elif todo:
            want = (
                self.settings.catch_all_check
                and key.isascii()  # an A-label; a U-label would need SMTPUTF8 for the probe
                and address_problem(f"x@{key}") is None
                and key not in self._catch_all
                and key not in self._catch_all_pending
            )
            if want:
                self._catch_all_pending.add(key)
            scheduler = self._scheduler()
            window_key = tuple(h.lower().rstrip(".") for h in hosts)
            window = scheduler.window(
                window_key, self.settings.per_domain_concurrency, self.ceiling(hosts)
            )
            stats = self.stats_of(key)
            stats.addresses += len(todo)
            run = DomainRun(
                prober=self,
                domain=key,
                mx_hosts=hosts,
                queue=deque(todo),
                want_catch_all=want,
                needs_utf8=any(not e.isascii() for e in todo),
                scheduler=scheduler,
                window=window,
                stats=stats,
            )
            try:
                await run.execute()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("smtp probe of %s failed", key)
                failure = Failure("error", None, f"internal error: {type(exc).__name__}", None)
                for email in todo:
                    run.results.setdefault(email, failure.outcome(email))
            finally:
                if want:
                    self._catch_all_pending.discard(key)
                stats.window = max(stats.window, window.peak)
                stats.slow = stats.slow or window.slow
                stats.cap = window.cap
            results = run.results
        for email, indexes in todo.items():
            outcome = results.get(email) or RcptOutcome(email, "error", None, "not probed", None)
            for i in indexes:
                outcomes[i] = outcome
        catch_all = run.catch_all if run is not None and run.catch_all is not None else None
        if catch_all is None:
            catch_all = self._catch_all.get(key)
        failure = run.failure if run is not None else None
        return DomainProbe(
            domain=key,
            outcomes=tuple(o for o in outcomes if o is not None),
            catch_all=catch_all,
            connections=run.connections if run is not None else 0,
            failure=None
            if failure is None
            else ProbeFailure(
                failure.kind, failure.stage, failure.code, failure.message, failure.host
            ),
        )

