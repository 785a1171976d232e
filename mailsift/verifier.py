"""The local engine: syntax -> reputation -> DNS -> SMTP -> verdict, for many addresses.

Addresses are grouped by domain: one DNS lookup per domain (cached for its TTL) and one
SMTP conversation checks many mailboxes of that domain (see :mod:`mailsift.smtp`).
Results stream back in input order. Nothing here raises for an address: a bad string is
``invalid``/``syntax``, a network fault is ``unknown``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import weakref
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field

from mailsift import reputation
from mailsift.diagnosis import PORT25_HELP, Diagnosis, PathDiagnostics
from mailsift.dns import DnsResolver, MxResult
from mailsift.result import Checks, VerificationResult, utcnow
from mailsift.settings import Settings
from mailsift.smtp import DomainProbe, SmtpProber
from mailsift.syntax import Address, SyntaxProblem, parse_address
from mailsift.verdict import SCORES, Evidence, decide, syntax_result

__all__ = ["Verifier", "VerifierStats", "PORT25_HELP"]

log = logging.getLogger("mailsift")

#: Domains whose MX records are looked up at once: enough to keep SMTP fed, few enough
#: that the first (largest) domains' host lookups are not queued behind hundreds.
DNS_AT_ONCE = 25


@dataclass
class VerifierStats:
    addresses: int = 0
    domains: int = 0
    smtp_domains_tried: int = 0
    smtp_domains_reached: int = 0
    by_status: dict[str, int] = field(default_factory=lambda: defaultdict(int))


class Verifier:
    """Verify addresses with the local engine.

    >>> async with Verifier(Settings()) as v:          # doctest: +SKIP
    ...     result = await v.verify("jane@example.com", budget=3.0)

    ``budget`` bounds the wall time of one :meth:`verify` (a signup handler cannot wait
    for a tarpit); past it the result is ``unknown`` with the reason of the step that ran
    out (``dns_timeout`` or ``smtp_timeout``).
    """

    name = "local"

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.resolver = DnsResolver(self.settings)
        self.prober = SmtpProber(self.settings, self.resolver)
        self.stats = VerifierStats()
        self._dns_limits: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )
        self.path = PathDiagnostics(
            smtp_port=self.settings.smtp_port, helo_hostname=self.settings.helo_hostname
        )

    async def __aenter__(self) -> Verifier:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        close = getattr(self.prober, "aclose", None)
        if close is not None:
            await close()

    @property
    def smtp_connections(self) -> int:
        return self.prober.connections_opened

    def diagnoses(self) -> list[Diagnosis]:
        """Causes that the run's failures share so far: our resolver, port 25, a
        middlebox, our IP refused everywhere (see :mod:`mailsift.diagnosis`)."""
        self.path.note_resolver(self.resolver.unhealthy)
        return self.path.diagnoses()

    # -- public API -------------------------------------------------------------------

    async def verify(self, email: str, *, budget: float | None = None) -> VerificationResult:
        """Verify one address; never raises for any input string."""
        stage = {"step": "dns"}
        try:
            async with asyncio.timeout(budget):
                results = await self._verify_all([email], stage)
                return results[0]
        except TimeoutError:
            parsed = parse_address(email, allow_test_domains=self.settings.allow_test_domains)
            return _unknown(parsed.email, "smtp_timeout" if stage["step"] == "smtp" else "dns_timeout")

    async def verify_many(self, emails: Iterable[str]) -> AsyncIterator[VerificationResult]:
        """Yield one result per input, in input order, as soon as each is known."""
        items = list(emails)
        slots: list[asyncio.Future[VerificationResult]] = [
            asyncio.get_running_loop().create_future() for _ in items
        ]
        worker = asyncio.create_task(self._fill(items, slots))
        try:
            for slot in slots:
                yield await slot
        finally:
            if not worker.done():
                worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)

    # -- internals --------------------------------------------------------------------

    def _dns_limit(self) -> asyncio.Semaphore:
        """The engine's bound on MX lookups at once (DNS_AT_ONCE, at most
        ``concurrency``), shared by every call running on this loop: a flow's batches are
        concurrent ``verify_many`` calls on one engine, and a bound per call let ten
        batches send ten times as many queries at once to the resolver (and took the
        CPU the engine's first sessions needed). One per loop, as the prober keeps its
        scheduler (``SmtpProber._scheduler``)."""
        loop = asyncio.get_running_loop()
        limit = self._dns_limits.get(loop)
        if limit is None:
            limit = self._dns_limits[loop] = asyncio.Semaphore(min(self.settings.concurrency, DNS_AT_ONCE))
        return limit

    async def _verify_all(self, items: list[str], stage: dict[str, str] | None = None) -> list[VerificationResult]:
        loop = asyncio.get_running_loop()
        slots = [loop.create_future() for _ in items]
        await self._fill(items, slots, stage)
        return [slot.result() for slot in slots]

    async def _fill(
        self,
        items: list[str],
        slots: list[asyncio.Future[VerificationResult]],
        stage: dict[str, str] | None = None,
    ) -> None:
        by_domain: dict[str, list[tuple[int, Address]]] = defaultdict(list)
        for i, raw in enumerate(items):
            parsed = parse_address(raw, allow_test_domains=self.settings.allow_test_domains)
            self.stats.addresses += 1
            if isinstance(parsed, SyntaxProblem):
                self._settle(slots[i], syntax_result(parsed))
            else:
                by_domain[parsed.domain].append((i, parsed))
        self.stats.domains += len(by_domain)
        # DNS is looked up DNS_AT_ONCE domains at a time by the whole engine (every call
        # on it shares the bound, see _dns_limit); SMTP connections are paced
        # by the prober (global slots by critical path, a window per domain), so every
        # domain asks for them at once and the largest goes first.
        limit = self._dns_limit()

        async def one_domain(domain: str, members: list[tuple[int, Address]]) -> None:
            try:
                await self._verify_domain(domain, members, slots, stage, limit)
            except Exception as exc:  # a bug must not lose the other domains' results
                log.exception("verifying domain %s failed: %s", domain, exc)
                for i, address in members:
                    self._settle(slots[i], _unknown(address.email, "smtp_error"))

        largest_first = sorted(by_domain.items(), key=lambda item: -len(item[1]))
        await asyncio.gather(*(one_domain(d, m) for d, m in largest_first))

    async def _verify_domain(
        self,
        domain: str,
        members: list[tuple[int, Address]],
        slots: list[asyncio.Future[VerificationResult]],
        stage: dict[str, str] | None,
        dns_limit: asyncio.Semaphore | None = None,
    ) -> None:
        disposable = reputation.is_disposable(domain)
        free = reputation.is_free_provider(domain)
        suggestion = reputation.suggest_domain(domain)
        mx: MxResult | None = None
        provider: str | None = None
        accepts_all = False
        if not disposable:
            async with dns_limit or contextlib.nullcontext():
                mx = await self.resolver.mx(domain)
            if mx.outcome == "ok":
                provider = reputation.provider_from_mx(mx.hosts)
                accepts_all = reputation.provider_rule(provider).accepts_all

        evidence = {
            i: Evidence(
                address=address,
                disposable=disposable,
                role_based=reputation.is_role_account(address.local),
                free_provider=free,
                suggestion_domain=suggestion,
                mx=mx,
                provider=provider,
                accepts_all=accepts_all,
            )
            for i, address in members
        }
        if mx is None or mx.outcome != "ok" or not self.settings.smtp_enabled:
            for i, ev in evidence.items():
                self._settle(slots[i], decide(ev))
            return

        if stage is not None:
            stage["step"] = "smtp"
        emails = [address.email for _, address in members]
        probe = await self.prober.probe(domain, mx.hosts, emails)
        self._note_reached(probe)
        now = utcnow()
        for (i, _address), outcome in zip(members, probe.outcomes, strict=True):
            ev = dataclasses.replace(evidence[i], rcpt=outcome, catch_all=probe.catch_all)
            result = decide(ev, verified_at=now)
            for diagnosis in self.path.note_result(result):
                log.warning("%s", diagnosis.message)  # once per cause and run
            self._settle(slots[i], result)

    def _note_reached(self, probe: DomainProbe) -> None:
        self.stats.smtp_domains_tried += 1
        if any(o.kind != "unreachable" for o in probe.outcomes):
            self.stats.smtp_domains_reached += 1

    def _settle(self, slot: asyncio.Future[VerificationResult], result: VerificationResult) -> None:
        if not slot.done():
            self.stats.by_status[result.status] += 1
            slot.set_result(result)


def _unknown(email: str, reason: str) -> VerificationResult:
    return VerificationResult(
        email=email, status="unknown", score=SCORES[reason], reason=reason,
        checks=Checks(syntax_valid=True),
    )
