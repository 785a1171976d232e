"""DNS for the doctor: raw queries (root, SOA, PTR, TXT, blocklist A) through the
configured resolver, next to the engine's :class:`~mailsift.dns.DnsResolver` (MX, host
addresses, and its resolver health check), plus small text helpers.

Each raw query gives an :class:`Answer` -- ``ok``, ``nodata``, ``nxdomain``,
``servfail`` or ``timeout`` -- and never raises."""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass
from typing import Any, Literal

import dns.asyncresolver
import dns.exception
import dns.nameserver
import dns.rdatatype
import dns.resolver

from mailsift.dns import DnsResolver
from mailsift.settings import Settings

__all__ = ["Answer", "Lookups", "clean", "elapsed_ms", "is_ip", "is_ipv4", "tld_of"]


#: Longest server text quoted in a finding.
QUOTE = 160


@dataclass(frozen=True, slots=True)
class Answer:
    """One raw query's outcome: ``ok`` (records), ``nodata``, ``nxdomain``,
    ``servfail`` or ``timeout``."""

    outcome: Literal["ok", "nodata", "nxdomain", "servfail", "timeout"]
    records: tuple[str, ...] = ()
    ms: float = 0.0
    error: str | None = None


class Lookups:
    """Raw queries (root, PTR, TXT, DNSBL A) through the configured resolver, plus the
    engine's own :class:`DnsResolver` for MX and host addresses."""

    def __init__(self, settings: Settings) -> None:
        self.engine = DnsResolver(settings)
        self.timeout = float(settings.dns_timeout)
        self.config_error: str | None = None
        try:
            if settings.nameservers:
                resolver = dns.asyncresolver.Resolver(configure=False)
                resolver.nameservers = [
                    dns.nameserver.Do53Nameserver(ns.ip, ns.port) for ns in settings.nameservers
                ]
                self.description = ", ".join(settings.dns_nameservers)
            else:
                resolver = dns.asyncresolver.Resolver(configure=True)
                shown = ", ".join(str(ns) for ns in resolver.nameservers) or "none"
                self.description = f"{shown} (system, /etc/resolv.conf)"
            resolver.lifetime = self.timeout
            resolver.timeout = min(2.0, self.timeout)
            resolver.cache = None
            self.resolver: dns.asyncresolver.Resolver | None = resolver
        except (dns.resolver.NoResolverConfiguration, OSError, ValueError) as exc:
            self.resolver = None
            self.config_error = f"no usable DNS configuration: {exc}"
            self.description = "none (no /etc/resolv.conf, no MAILSIFT_DNS_NAMESERVERS)"

    async def ask(self, name: str, rdtype: str) -> Answer:
        if self.resolver is None:
            return Answer("servfail", error=self.config_error)
        started = time.perf_counter()
        try:
            answer = await self.resolver.resolve(
                name, rdtype, search=False, raise_on_no_answer=False
            )
        except dns.resolver.NXDOMAIN:
            return Answer("nxdomain", ms=elapsed_ms(started))
        except dns.exception.Timeout:
            return Answer("timeout", ms=elapsed_ms(started), error=f"no answer within {self.timeout:g} s")
        except dns.resolver.NoNameservers as exc:
            return Answer("servfail", ms=elapsed_ms(started), error=clean(str(exc)))
        except (dns.exception.DNSException, OSError, ValueError) as exc:
            return Answer("servfail", ms=elapsed_ms(started), error=clean(str(exc) or type(exc).__name__))
        if answer.rrset is None:
            return Answer("nodata", ms=elapsed_ms(started))
        return Answer("ok", tuple(_rdata_text(rd) for rd in answer.rrset), ms=elapsed_ms(started))


def _rdata_text(rd: Any) -> str:
    if rd.rdtype == dns.rdatatype.TXT:
        return b"".join(rd.strings).decode("utf-8", "replace")
    if rd.rdtype in (dns.rdatatype.PTR, dns.rdatatype.CNAME, dns.rdatatype.NS):
        return rd.target.to_text(omit_final_dot=True).lower()
    if rd.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
        return str(rd.address)
    return rd.to_text()


def elapsed_ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


def clean(text: str, limit: int = QUOTE) -> str:
    """Server or library text made safe for one terminal line."""
    out = "".join(c if c.isprintable() else " " for c in text)
    out = " ".join(out.split())
    return out if len(out) <= limit else out[: limit - 3] + "..."


def tld_of(name: str) -> str | None:
    labels = [label for label in name.strip().rstrip(".").lower().split(".") if label]
    if len(labels) < 2:
        return None
    try:
        ipaddress.ip_address(name.strip("[]"))
        return None
    except ValueError:
        return labels[-1]



def is_ipv4(text: str) -> bool:
    try:
        return ipaddress.ip_address(text).version == 4
    except ValueError:
        return False


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip("[]"))
        return True
    except ValueError:
        return False

