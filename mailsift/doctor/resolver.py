"""The resolver check: is the configured resolver sane (RFC 8020), and how fast?

The root and the TLDs of the names the doctor asks about must exist; a made-up name
under the first TLD must be NXDOMAIN. A resolver that NXDOMAINs or SERVFAILs everything,
or answers names that cannot exist (NXDOMAIN rewriting, captive portals; ICANN SSAC
SAC 032), FAILs. The verdict also holds the verifier's own check
(:meth:`mailsift.dns.DnsResolver.resolver_health`), so the doctor never passes a
resolver whose negative answers the verifier would not trust."""

from __future__ import annotations

import asyncio
import secrets
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mailsift.doctor.lookups import Lookups
from mailsift.doctor.report import Check

__all__ = ["SLOW_RESOLVER_MS", "ResolverVerdict", "check_resolver"]


#: A resolver slower than this (median, milliseconds) gets a WARN: every address of a
#: list costs one or more lookups.
SLOW_RESOLVER_MS = 300.0


@dataclass(frozen=True, slots=True)
class ResolverVerdict:
    check: Check
    sane: bool


async def check_resolver(dnsq: Lookups, tlds: Sequence[str]) -> ResolverVerdict:
    """RFC 8020 sanity: the root and each TLD exist; a made-up name does not."""
    musts = ["."] + [f"{t}." for t in tlds]
    made_up_parent = tlds[0] if tlds else None
    label = f"mailsift-doctor-{secrets.token_hex(6)}"
    made_up = f"{label}.{made_up_parent}." if made_up_parent else f"{label}."
    answers, health = await asyncio.gather(
        asyncio.gather(*(dnsq.ask(name, "SOA") for name in musts), dnsq.ask(made_up, "A")),
        asyncio.gather(*(dnsq.engine.resolver_health(z) for z in ["."] + list(tlds))),
    )
    must_answers, fake = answers[:-1], answers[-1]
    # The verifier's own check (mailsift.dns): when it distrusts the resolver, every
    # negative answer of a run becomes 'unknown', so the doctor must not say PASS.
    engine_problem = next((h.problem or "failed" for h in health if not h.ok), None)
    latencies = [a.ms for a in answers if a.outcome not in ("timeout",)]
    median = statistics.median(latencies) if latencies else None
    details: dict[str, Any] = {
        "nameservers": dnsq.description,
        "asked": {n: a.outcome for n, a in zip(musts, must_answers, strict=True)}
        | {made_up: fake.outcome},
        "latency_ms": median,
        "latency_max_ms": max(latencies) if latencies else None,
        "verifier_check": engine_problem or "ok",
    }
    shown_musts = "the root" + (" and " + ", ".join(f"'{t}'" for t in tlds) if tlds else "")
    outcomes = {a.outcome for a in answers}

    def fail(finding: str, action: str) -> ResolverVerdict:
        details["problem"] = finding
        return ResolverVerdict(Check("resolver", None, "FAIL", finding, action, details), False)

    if dnsq.resolver is None:
        return fail(dnsq.config_error or "no resolver", "set MAILSIFT_DNS_NAMESERVERS=ip[:port] "
                    "or fix /etc/resolv.conf")
    if outcomes == {"nxdomain"}:
        return fail(
            f"{dnsq.description} answers NXDOMAIN for everything, even {shown_musts}: it lies "
            "(captive portal not logged in, DNS filter, broken sandbox); every domain would "
            "look non-existent",
            "use a resolver that tells the truth: MAILSIFT_DNS_NAMESERVERS=<ip of a local "
            "unbound, or your provider's resolver>, or log in to the network's portal",
        )
    if outcomes <= {"servfail", "timeout"}:
        what = "times out" if outcomes == {"timeout"} else "fails (SERVFAIL / refused / unreachable)"
        error = next((a.error for a in answers if a.error), None)
        return fail(
            f"{dnsq.description} {what} for every query, even {shown_musts}"
            + (f" ({error})" if error else ""),
            "point MAILSIFT_DNS_NAMESERVERS at a working resolver (a local unbound, or your "
            "provider's), or check outbound UDP/TCP 53",
        )
    bad_musts = [(n, a) for n, a in zip(musts, must_answers, strict=True) if a.outcome not in ("ok", "nodata")]
    if bad_musts:
        listed = ", ".join(f"'{n}' {a.outcome}" for n, a in bad_musts)
        return fail(
            f"{dnsq.description} does not resolve names that must exist ({listed})",
            "use another resolver (MAILSIFT_DNS_NAMESERVERS); NXDOMAIN from this one cannot "
            "be trusted",
        )
    if fake.outcome in ("ok", "nodata"):
        got = f" (A {', '.join(fake.records)})" if fake.records else " (NOERROR, no data)"
        return fail(
            f"{dnsq.description} answers a name that cannot exist, {made_up.rstrip('.')}{got}: "
            "NXDOMAIN rewriting, a wildcard or a captive portal; it hides non-existent domains",
            "use a resolver that returns NXDOMAIN (MAILSIFT_DNS_NAMESERVERS=<a local unbound>), "
            "or log in to the network's portal",
        )
    if engine_problem is not None:
        return fail(
            f"{dnsq.description} fails the verifier's resolver check: {engine_problem}",
            "use another resolver (MAILSIFT_DNS_NAMESERVERS); until then negative answers "
            "(no such domain, no MX) come back 'unknown'",
        )
    if fake.outcome != "nxdomain":
        return ResolverVerdict(
            Check(
                "resolver", None, "WARN",
                f"{dnsq.description} answers {shown_musts} but {fake.outcome} for a made-up "
                "name, so NXDOMAIN could not be confirmed",
                "run mailsift doctor again; if it persists, use another resolver",
                details,
            ),
            True,
        )
    timing = f"{median:.0f} ms median, {details['latency_max_ms']:.0f} ms max"
    finding = (
        f"{dnsq.description} answers {shown_musts}, and NXDOMAIN for a made-up name; {timing}"
    )
    if median is not None and median > SLOW_RESOLVER_MS:
        return ResolverVerdict(
            Check("resolver", None, "WARN", f"sane but slow: {finding}",
                  "use a caching resolver close to this host (a local unbound) for large lists",
                  details),
            True,
        )
    return ResolverVerdict(Check("resolver", None, "PASS", f"sane: {finding}", None, details), True)

