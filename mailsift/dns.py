"""DNS for mail: MX lookup with RFC 5321 semantics, and host addresses for the SMTP probe.

:meth:`DnsResolver.mx` turns a domain into an :class:`MxResult` whose ``outcome`` keeps
apart what the verdict must keep apart:

======== ================================================================================
ok       MX hosts by preference (RFC 5321 5.1), or the implicit MX: no MX records but
         an A or AAAA record, so the domain itself is the mail host (``implicit=True``)
null_mx  the domain publishes ``MX 0 .``: it accepts no mail (RFC 7505)
no_mail  the name exists but has neither MX nor A/AAAA: there is nowhere to deliver
nxdomain the name does not exist (RCODE 3, RFC 1035 4.1.1 / RFC 8020); also a string
         that cannot be a DNS name at all (empty label, label over 63 octets)
servfail the servers failed (SERVFAIL, refused, unreachable, no DNS configuration)
timeout  no answer within ``settings.dns_timeout`` seconds
======== ================================================================================

``servfail`` and ``timeout`` are faults on the way, never facts about the domain: the
verifier turns them into ``unknown``. Nothing here raises for any input or network fault.

A negative answer (``nxdomain``, ``no_mail``) is a fact only if the resolver tells the
truth. Captive portals, DNS filters and broken sandboxes answer NXDOMAIN for every name;
others invent an answer for every name (NXDOMAIN rewriting). Before the first negative
answer under a top-level domain is believed, :meth:`DnsResolver.resolver_health` checks
the resolver once (cached for the run): the root must resolve (NOERROR, RFC 1035), the
TLD must resolve or be truly absent from a root that resolves, and a random name that
cannot exist must be NXDOMAIN (RFC 8020). A resolver that fails this turns every
negative answer into ``servfail`` ("not trusted"), and says so once, naming itself.

Answers are cached per domain for their TTL (RFC 1035 3.2.1), negative answers for the
negative TTL of the zone's SOA (RFC 2308 5), failures only for a few seconds, and
concurrent lookups of one name share a single query. A :class:`DnsResolver` may be used
from several event loops (threads) in turn: nothing is bound to a loop at construction.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import secrets
import threading
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

import dns.asyncresolver
import dns.exception
import dns.message
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver

from mailsift.settings import Settings

__all__ = ["DnsResolver", "MxOutcome", "MxResult", "ResolverHealth"]

log = logging.getLogger("mailsift.dns")

MxOutcome = Literal["ok", "nxdomain", "no_mail", "null_mx", "servfail", "timeout"]

#: Seconds a SERVFAIL or timeout is remembered: long enough to spare the other
#: addresses of a burst, short enough that a passing fault does not stick.
FAILURE_TTL = 3.0
#: Negative-caching TTL when a negative answer carries no SOA (RFC 2308 5 suggests
#: using the SOA values; without one, a short default as most resolvers do).
DEFAULT_NEGATIVE_TTL = 300.0
#: Longest we keep anything, whatever the TTL says (RFC 8767 caps at one week; a
#: verification run wants fresher data than that).
MAX_TTL = 3600.0
#: After the A answer arrives, how long the AAAA query may still take (the
#: "Resolution Delay" of Happy Eyeballs, RFC 8305 3, made generous).
AAAA_GRACE = 0.3

#: DNS queries in flight at once per event loop: each holds a socket, and file
#: descriptor limits are low on some systems (256 on macOS by default).
MAX_INFLIGHT_QUERIES = 128

_PRUNE_EVERY = 1024

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class MxResult:
    """Where mail for ``domain`` goes, or why it goes nowhere (see the module table)."""

    domain: str
    outcome: MxOutcome
    hosts: tuple[str, ...]  # by preference; ascii, lower-case, no trailing dot
    implicit: bool  # True when hosts == (domain,) from A/AAAA (RFC 5321 5.1)
    message: str | None = None


@dataclass(frozen=True, slots=True)
class ResolverHealth:
    """Whether the configured resolver tells the truth about ``zone`` (``"."``: the root).

    ``ok`` is False when it denies what must exist, confirms what cannot exist, or fails
    to answer; ``problem`` says which, in words a user can act on."""

    zone: str
    ok: bool
    nameservers: str  # what was asked, e.g. "127.0.0.53:53 (system resolver)"
    problem: str | None = None
    latency_ms: float | None = None  # of the slowest check query


#: Top-level domains that exist: a resolver that denies all of them is lying.
KNOWN_TLDS = ("com", "net", "org")
#: Label prefix of the names the health check asks for, which cannot exist.
SANITY_LABEL = "mailsift-sanity-check-"


class _Deadline:
    """``dns_timeout`` for one lookup (all its queries), started when its first query
    gets a slot, so time queued behind :data:`MAX_INFLIGHT_QUERIES` does not count."""

    __slots__ = ("_ends", "seconds")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._ends: float | None = None

    def remaining(self) -> float:
        now = time.monotonic()
        if self._ends is None:
            self._ends = now + self.seconds
        return self._ends - now


class _Invalid(ValueError):
    """A string that cannot be a DNS name."""


def _normalize(name: str) -> tuple[str, dns.name.Name]:
    """``(text, absolute Name)``: lower-case, without the trailing dot, A-label ASCII.

    The syntax layer hands us A-labels already; a Unicode name is IDNA-encoded here
    (IDNA 2008 via dnspython) rather than refused.
    """
    if not isinstance(name, str):
        raise _Invalid(f"not a string: {type(name).__name__}")
    text = name.strip().lower()
    text = text.removesuffix(".")
    if not text or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in text):
        raise _Invalid(f"not a valid domain name: {name[:100]!r}")
    try:
        parsed = dns.name.from_text(text)
    except (dns.exception.DNSException, UnicodeError, ValueError) as exc:
        raise _Invalid(f"not a valid domain name: {name[:100]!r} ({exc})") from None
    return parsed.to_text(omit_final_dot=True).lower(), parsed


def _exchange_text(name: dns.name.Name) -> str:
    return name.to_text(omit_final_dot=True).lower()


def _negative_ttl(exc: dns.exception.DNSException) -> float:
    """The negative-caching TTL of an NXDOMAIN / NODATA answer: min(SOA TTL, SOA
    MINIMUM) from the authority section (RFC 2308 5), as dnspython computes it."""
    try:
        if isinstance(exc, dns.resolver.NXDOMAIN):
            responses = list(exc.responses().values())
        elif isinstance(exc, dns.resolver.NoAnswer):
            responses = [exc.response()]
        else:
            return DEFAULT_NEGATIVE_TTL
        ttls = [
            r.resolve_chaining().minimum_ttl
            for r in responses
            if isinstance(r, dns.message.QueryMessage)
        ]
        return float(min(ttls)) if ttls else DEFAULT_NEGATIVE_TTL
    except Exception:  # noqa: BLE001 -- a TTL is an optimisation, never an error
        return DEFAULT_NEGATIVE_TTL


def _has_soa(exc: dns.resolver.NoAnswer) -> bool:
    """A real "no data" answer carries the zone's SOA in its authority section (RFC 2308
    2.2); an empty answer without one (an empty TCP retry of a truncated answer, a
    mangling middlebox) proves nothing."""
    try:
        response = exc.response()
    except Exception:  # noqa: BLE001 -- no response kept: trust the NoAnswer as before
        return True
    return any(rrset.rdtype == dns.rdatatype.SOA for rrset in response.authority)


def _answer_ttl(answer: dns.resolver.Answer) -> float:
    return max(0.0, answer.expiration - time.time())


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text[:300]


class DnsResolver:
    """MX and address lookups through dnspython's asyncio resolver.

    Nameservers come from ``settings.nameservers`` (``[(ip, port)]``), or the system
    configuration (``/etc/resolv.conf``) when that list is empty; ``settings.dns_timeout``
    bounds each lookup, all tries and servers included.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.timeout = float(settings.dns_timeout)
        #: Seconds a servfail/timeout result stays cached (see :data:`FAILURE_TTL`).
        self.failure_ttl = FAILURE_TTL
        #: DNS queries sent over the network so far (cache hits and coalesced callers
        #: do not count).
        self.queries_sent = 0
        self._config_error: str | None = None
        self._resolver = self._make_resolver(settings)
        self._lock = threading.RLock()
        self._cache: dict[tuple[str, str], tuple[float, object]] = {}
        self._puts = 0
        self._inflight: dict[tuple[asyncio.AbstractEventLoop, str, str], asyncio.Task] = {}
        self._limits: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore]
        self._limits = weakref.WeakKeyDictionary()
        #: The first failed health check of this resolver, if any (see the module doc).
        self.unhealthy: ResolverHealth | None = None
        self.check_health = bool(getattr(settings, "dns_sanity_check", True))

    @property
    def nameservers_text(self) -> str:
        """The resolver as a user knows it: its addresses, and where they came from."""
        if self._resolver is None:
            return self._config_error or "no resolver"
        servers = ", ".join(
            f"{ns.address}:{ns.port}" if hasattr(ns, "port") else str(ns)
            for ns in self._resolver.nameservers
        )
        origin = "MAILSIFT_DNS_NAMESERVERS" if self.settings.nameservers else "/etc/resolv.conf"
        return f"{servers or 'none'} (from {origin})"

    def _make_resolver(self, settings: Settings) -> dns.asyncresolver.Resolver | None:
        nameservers = settings.nameservers
        try:
            if nameservers:
                resolver = dns.asyncresolver.Resolver(configure=False)
                resolver.nameservers = [
                    dns.nameserver.Do53Nameserver(ns.ip, ns.port) for ns in nameservers
                ]
            else:
                resolver = dns.asyncresolver.Resolver(configure=True)
        except (dns.resolver.NoResolverConfiguration, OSError, ValueError) as exc:
            self._config_error = f"no usable DNS configuration: {_describe(exc)}"
            return None
        resolver.lifetime = self.timeout
        # One try may take the whole lookup's time: MAILSIFT_DNS_TIMEOUT is honoured
        # whatever it is (a per-try cap below it made slow resolvers always time out).
        resolver.timeout = self.timeout
        resolver.cache = None  # we cache whole results, per domain, below
        resolver.use_edns(0, 0, 1232)  # big MX sets fit in UDP (RFC 6891, flag day 2020)
        return resolver

    # -- public API -------------------------------------------------------------------

    async def mx(self, domain: str) -> MxResult:
        """Where mail for ``domain`` goes (RFC 5321 5.1, RFC 7505); never raises."""
        try:
            text, name = _normalize(domain)
        except _Invalid as exc:
            shown = domain.strip().lower() if isinstance(domain, str) else repr(domain)
            return MxResult(shown[:255], "nxdomain", (), False, str(exc))
        try:
            result = await self._coalesced("mx", text, lambda: self._lookup_mx(text, name))
            return await self._trusted(result)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 -- "never raise": a fault is a result
            return MxResult(text, "servfail", (), False, f"DNS lookup failed: {_describe(exc)}")

    async def resolver_health(self, zone: str = ".") -> ResolverHealth:
        """Check, once per zone and run (cached), that the resolver tells the truth.

        ``zone`` is ``"."`` or a top-level domain. The root must exist; a TLD must
        exist, or be NXDOMAIN from a resolver whose root check passed (a domain under a
        TLD that does not exist really does not exist); and a random name under the zone
        must be NXDOMAIN. Never raises."""
        label = zone.strip().strip(".").lower()
        key = label or "."
        try:
            return await self._coalesced("health", key, lambda: self._check_zone(label))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001
            return ResolverHealth(key, False, self.nameservers_text, f"check failed: {_describe(exc)}")

    async def _check_zone(self, label: str) -> tuple[ResolverHealth, float]:
        zone = label or "."
        servers = self.nameservers_text
        if label:
            root = await self.resolver_health(".")
            if not root.ok:
                return ResolverHealth(zone, False, servers, root.problem, root.latency_ms), MAX_TTL
        name = dns.name.from_text(label) if label else dns.name.root
        random_name = dns.name.from_text(f"{SANITY_LABEL}{secrets.token_hex(6)}", origin=name)
        slowest = 0.0

        async def ask(qname: dns.name.Name, rdtype: dns.rdatatype.RdataType) -> object:
            nonlocal slowest
            started = time.monotonic()
            try:
                return await self._query(qname, rdtype, _Deadline(self.timeout))
            except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer) as exc:
                return exc
            except Exception as exc:  # noqa: BLE001 -- servfail, timeout: a failed check
                return exc
            finally:
                slowest = max(slowest, time.monotonic() - started)

        known: list[object] = []
        if not label:  # the root holds the TLDs everyone uses; a liar denies them too
            known = list(
                await asyncio.gather(
                    *(ask(dns.name.from_text(tld), dns.rdatatype.SOA) for tld in KNOWN_TLDS)
                )
            )
        exists, made_up = await asyncio.gather(
            ask(name, dns.rdatatype.SOA), ask(random_name, dns.rdatatype.A)
        )
        latency = round(slowest * 1000, 1)
        where = "the root zone" if not label else f"the top-level domain {label!r}"
        random_text = random_name.to_text(omit_final_dot=True)

        def bad(problem: str, ttl: float = MAX_TTL) -> tuple[ResolverHealth, float]:
            return ResolverHealth(zone, False, servers, problem, latency), ttl

        for outcome in (exists, made_up, *known):
            if isinstance(outcome, dns.exception.Timeout):
                return bad(f"no answer within {self.timeout:g} s about {where}", self.failure_ttl)
            if isinstance(outcome, Exception) and not isinstance(
                outcome, dns.resolver.NXDOMAIN | dns.resolver.NoAnswer
            ):
                return bad(f"it fails to resolve {where} ({_describe(outcome)})", self.failure_ttl)
        if known and all(isinstance(k, dns.resolver.NXDOMAIN) for k in known):
            return bad(f"it answers NXDOMAIN for {', '.join(KNOWN_TLDS)}, which exist")
        if isinstance(exists, dns.resolver.NXDOMAIN):
            if not label:
                return bad("it answers NXDOMAIN for the root zone, which always exists")
            # A TLD that the (sane) root does not know: its names really do not exist.
            return ResolverHealth(zone, True, servers, None, latency), MAX_TTL
        if not isinstance(made_up, dns.resolver.NXDOMAIN):
            what = "an address" if isinstance(made_up, dns.resolver.Answer) else "NOERROR"
            return bad(f"it answers {what} for {random_text}, a name that cannot exist")
        return ResolverHealth(zone, True, servers, None, latency), MAX_TTL

    async def _trusted(self, result: MxResult) -> MxResult:
        """``result`` as is, unless it is a negative answer from a resolver that fails its
        health check: then ``servfail``, saying why."""
        if result.outcome not in ("nxdomain", "no_mail", "servfail", "timeout"):
            return result
        if not self.check_health:
            return result
        tld = result.domain.rsplit(".", 1)[-1] if "." in result.domain else ""
        health = await self.resolver_health(tld)
        if health.ok:
            return result
        if self.unhealthy is None:
            self.unhealthy = health
            log.warning(
                "The DNS resolver %s failed its health check: %s. Its negative answers "
                "(no such domain, no MX) are not trusted: those addresses are 'unknown' "
                "(dns_error), not invalid. Run `mailsift doctor`, or point "
                "MAILSIFT_DNS_NAMESERVERS at a working resolver.",
                health.nameservers, health.problem,
            )
        if result.outcome in ("servfail", "timeout"):
            return result  # unknown already; the warning above names the cause
        message = f"{result.outcome} not trusted: the resolver fails its check ({health.problem})"
        return MxResult(result.domain, "servfail", (), False, message)

    async def host_addresses(self, host: str) -> tuple[str, ...]:
        """IPv4 then IPv6 addresses of an MX host; an IP literal (``192.0.2.1``,
        ``[IPv6:2001:db8::1]``) is returned as is; ``()`` on any failure."""
        literal = _ip_literal(host)
        if literal is not None:
            return (literal,)
        try:
            text, name = _normalize(host)
        except _Invalid:
            return ()
        try:
            return await self._coalesced("host", text, lambda: self._lookup_host(name))
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 -- () on any failure, by contract
            return ()

    def clear_cache(self) -> None:
        """Forget every cached answer (in-flight lookups are not affected)."""
        with self._lock:
            self._cache.clear()

    # -- cache and coalescing ---------------------------------------------------------

    async def _coalesced(
        self, kind: str, key: str, lookup: Callable[[], Awaitable[tuple[T, float]]]
    ) -> T:
        """The cached value, or the result of the one lookup in flight on this event
        loop for ``(kind, key)``, or of a new one. Callers being cancelled does not
        cancel the shared lookup (others may be waiting on it)."""
        loop = asyncio.get_running_loop()
        flight = (loop, kind, key)
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get((kind, key))
            if cached is not None and cached[0] > now:
                return cached[1]  # type: ignore[return-value]
            task = self._inflight.get(flight)
        if task is None:
            # No await between the look-up above and the registration below, so no
            # other coroutine of this loop can slip in; other loops use other keys.
            task = loop.create_task(self._run(flight, lookup))
            if not task.done():  # an eager task factory may have finished it already
                with self._lock:
                    self._inflight[flight] = task
        return await asyncio.shield(task)

    async def _run(
        self,
        flight: tuple[asyncio.AbstractEventLoop, str, str],
        lookup: Callable[[], Awaitable[tuple[T, float]]],
    ) -> T:
        _, kind, key = flight
        try:
            value, ttl = await lookup()
            ttl = min(ttl, MAX_TTL)
            with self._lock:
                if ttl > 0:
                    self._cache[(kind, key)] = (time.monotonic() + ttl, value)
                    self._puts += 1
                    if self._puts % _PRUNE_EVERY == 0:
                        self._prune()
                self._inflight.pop(flight, None)
            return value
        finally:
            with self._lock:
                self._inflight.pop(flight, None)

    def _prune(self) -> None:
        now = time.monotonic()
        for cache_key in [k for k, (expires, _) in self._cache.items() if expires <= now]:
            del self._cache[cache_key]

    # -- lookups ----------------------------------------------------------------------

    async def _query(
        self, name: dns.name.Name, rdtype: dns.rdatatype.RdataType, deadline: _Deadline
    ) -> dns.resolver.Answer:
        if self._resolver is None:
            raise dns.resolver.NoNameservers(self._config_error or "no nameservers")
        loop = asyncio.get_running_loop()
        with self._lock:
            limit = self._limits.get(loop)
            if limit is None:
                limit = self._limits[loop] = asyncio.Semaphore(MAX_INFLIGHT_QUERIES)
        async with limit:
            remaining = deadline.remaining()
            if remaining <= 0:
                raise dns.resolver.LifetimeTimeout(timeout=self.timeout, errors=[])
            self.queries_sent += 1
            return await self._resolver.resolve(
                name, rdtype, lifetime=remaining, search=False, raise_on_no_answer=True
            )

    async def _lookup_mx(self, domain: str, name: dns.name.Name) -> tuple[MxResult, float]:
        """One MX lookup within ``dns_timeout``; returns the result and its cache TTL."""
        deadline = _Deadline(self.timeout)
        try:
            answer = await self._query(name, dns.rdatatype.MX, deadline)
        except dns.resolver.NXDOMAIN as exc:
            # RFC 1035 4.1.1 RCODE 3: the name does not exist (nor anything below it,
            # RFC 8020).
            result = MxResult(domain, "nxdomain", (), False, "the domain does not exist")
            return result, _negative_ttl(exc)
        except dns.resolver.NoAnswer as exc:
            if not _has_soa(exc):
                return self._empty_without_soa(domain), self.failure_ttl
            return await self._implicit_mx(domain, name, deadline, _negative_ttl(exc))
        except Exception as exc:  # noqa: BLE001
            return self._failure(domain, exc), self.failure_ttl

        records = sorted(answer, key=lambda rd: rd.preference)  # stable: ties keep order
        if all(rd.exchange == dns.name.root for rd in records):
            # RFC 7505 3: a single MX with preference 0 and exchange "." -- "this domain
            # accepts no mail". Several root records are read the same way.
            message = "null MX (RFC 7505): the domain accepts no mail"
            return MxResult(domain, "null_mx", (), False, message), _answer_ttl(answer)
        hosts: list[str] = []
        for rd in records:
            # RFC 7505 3: a null MX must be alone; if it is not, it is ignored.
            if rd.exchange == dns.name.root:
                continue
            host = _exchange_text(rd.exchange)
            if host not in hosts:
                hosts.append(host)
        return MxResult(domain, "ok", tuple(hosts), False), _answer_ttl(answer)

    async def _implicit_mx(
        self, domain: str, name: dns.name.Name, deadline: _Deadline, mx_negative_ttl: float
    ) -> tuple[MxResult, float]:
        """RFC 5321 5.1: with no MX records, "the address is treated as if it was
        associated with an implicit MX RR, with a preference of 0, pointing to that
        host" -- when the name has an A or AAAA record. A and AAAA are asked at once;
        the first positive answer settles it."""
        outcomes = await _first_positive(
            [
                self._query(name, dns.rdatatype.A, deadline),
                self._query(name, dns.rdatatype.AAAA, deadline),
            ]
        )
        positives = [o for o in outcomes if isinstance(o, dns.resolver.Answer)]
        if positives:
            ttl = min([mx_negative_ttl] + [_answer_ttl(a) for a in positives])
            message = "no MX records: implicit MX from the address records (RFC 5321 5.1)"
            return MxResult(domain, "ok", (domain,), True, message), ttl
        negatives = [
            o
            for o in outcomes
            if isinstance(o, dns.resolver.NXDOMAIN)
            or (isinstance(o, dns.resolver.NoAnswer) and _has_soa(o))
        ]
        if len(negatives) == len(outcomes):
            ttl = min([mx_negative_ttl] + [_negative_ttl(o) for o in negatives])
            if all(isinstance(o, dns.resolver.NXDOMAIN) for o in negatives):
                message = "the domain does not exist"
                return MxResult(domain, "nxdomain", (), False, message), ttl
            message = "the domain has no MX and no A/AAAA records: it receives no mail"
            return MxResult(domain, "no_mail", (), False, message), ttl
        failures = [o for o in outcomes if isinstance(o, BaseException) and o not in negatives]
        timeouts = [o for o in failures if isinstance(o, dns.exception.Timeout)]
        return self._failure(domain, (timeouts or failures)[0]), self.failure_ttl

    @staticmethod
    def _empty_without_soa(domain: str) -> MxResult:
        message = (
            "an empty answer without the zone's SOA (RFC 2308 2.2): not a 'no data' "
            "answer, e.g. a truncated reply that came back empty over TCP"
        )
        return MxResult(domain, "servfail", (), False, message)

    def _failure(self, domain: str, exc: BaseException) -> MxResult:
        if isinstance(exc, dns.exception.Timeout):
            message = f"no DNS answer within {self.timeout:g} s"
            return MxResult(domain, "timeout", (), False, message)
        if isinstance(exc, dns.resolver.NoNameservers):
            return MxResult(domain, "servfail", (), False, f"DNS servers failed: {_describe(exc)}")
        return MxResult(domain, "servfail", (), False, f"DNS lookup failed: {_describe(exc)}")

    async def _lookup_host(self, name: dns.name.Name) -> tuple[tuple[str, ...], float]:
        """A then AAAA addresses (both asked at once); AAAA gets :data:`AAAA_GRACE`
        seconds after a positive A answer, so a server that drops AAAA queries does not
        cost every probe the whole timeout."""
        deadline = _Deadline(self.timeout)
        a_task = asyncio.ensure_future(self._query(name, dns.rdatatype.A, deadline))
        aaaa_task = asyncio.ensure_future(self._query(name, dns.rdatatype.AAAA, deadline))
        try:
            await asyncio.wait([a_task])
            if _answered(a_task):
                await asyncio.wait([aaaa_task], timeout=AAAA_GRACE)
            else:
                await asyncio.wait([aaaa_task])
        finally:
            for task in (a_task, aaaa_task):
                if not task.done():
                    task.cancel()
            await asyncio.gather(a_task, aaaa_task, return_exceptions=True)
        addresses: list[str] = []
        ttls: list[float] = []
        negative = 0
        for task in (a_task, aaaa_task):
            if _answered(task):
                answer = task.result()
                ttls.append(_answer_ttl(answer))
                addresses.extend(rd.address for rd in answer if rd.address not in addresses)
            elif not task.cancelled() and isinstance(
                task.exception(), dns.resolver.NXDOMAIN | dns.resolver.NoAnswer
            ):
                negative += 1
                ttls.append(_negative_ttl(task.exception()))  # type: ignore[arg-type]
        if addresses:
            return tuple(addresses), min(ttls)
        if negative == 2:
            return (), min(ttls)
        return (), self.failure_ttl


def _answered(task: asyncio.Future) -> bool:
    return task.done() and not task.cancelled() and task.exception() is None


async def _first_positive(coros: list) -> list[object]:
    """Run ``coros`` at once; stop when one returns (the others are cancelled).

    Returns each one's outcome (its value or exception) in the order given;
    cancelled ones are left out.
    """
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        pending = set(tasks)
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if any(_answered(t) for t in done):
                break
    finally:
        for task in tasks:
            if not task.done():
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    outcomes: list[object] = []
    for task in tasks:
        if task.cancelled():
            continue
        exc = task.exception()
        outcomes.append(exc if exc is not None else task.result())
    return outcomes


def _ip_literal(host: str) -> str | None:
    """The address when ``host`` is an IP literal (``[...]`` and ``IPv6:`` forms of
    RFC 5321 4.1.3 accepted), else ``None``."""
    if not isinstance(host, str):
        return None
    text = host.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if text[:5].lower() == "ipv6:":
        text = text[5:]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None
