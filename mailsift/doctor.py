"""``mailsift doctor``: is this host fit to verify mail? The first thing to run on a new host.

A verifier's worst fault is blaming the mailbox for its own network: a resolver that
lies, a port 25 that is blocked or intercepted, an IP that receivers refuse. Each check
here looks at one link of the prober's own path and says PASS, WARN or FAIL, what it
found, and what to do:

============== ===========================================================================
resolver       the resolver is sane -- it answers what must exist (the root, the TLDs of
               the domains asked about) and answers a made-up name under a real TLD with
               NXDOMAIN (RFC 8020) -- and how fast it is. A resolver that NXDOMAINs or
               SERVFAILs everything, or answers everything (NXDOMAIN rewriting, captive
               portals, ICANN SSAC SAC 032), FAILs; the checks that need DNS are then
               skipped rather than reported wrongly.
port25         for each MX host tested (``--mx-host``, or the first MX of each of
               ``settings.doctor_mx_domains``): TCP connect, banner (RFC 5321 3.1), EHLO,
               QUIT -- never MAIL, RCPT or DATA. Refused, connect timeout, accepted then
               closed or reset before the banner (a middlebox), silent, and refusing
               banners are each named.
egress_ip      this host's public address for mail: ``settings.egress_ip`` or the address
               the MX hosts echo in their EHLO reply (Gmail "at your service, [ip]",
               Exchange Online "Hello [ip]", Exim/Sendmail "Hello name [ip]").
rdns           the egress IP has a PTR record whose name resolves back to it (forward-
               confirmed reverse DNS); Gmail and Outlook refuse or throttle clients without.
helo           ``settings.helo_hostname`` is that PTR name and resolves to the egress IP.
dnsbl          the egress IP on each of ``settings.dnsbl_zones`` (RFC 5782: query the
               reversed octets under the zone; an A answer in 127.0.0.0/8 means listed).
               Spamhaus answers 127.255.255.x when it refuses the query (public resolver,
               excess volume, bad zone name): that is WARN "unknown", never "listed".
mail_from_mx   ``settings.mail_from``'s domain receives mail (MX, RFC 5321 5.1): receivers
               check it (Postfix ``reject_unknown_sender_domain``).
mail_from_spf  that domain publishes exactly one SPF record (RFC 7208 4.5).
============== ===========================================================================

:func:`run_doctor` returns a :class:`DoctorReport`; it never raises for a network fault
(a fault is a finding). No Prefect here; DNS through dnspython, SMTP through asyncio
streams.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import secrets
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver
import dns.reversename

from mailsift.dns import DnsResolver
from mailsift.settings import Settings

__all__ = [
    "Check",
    "DoctorReport",
    "MxTarget",
    "Status",
    "parse_mx_host",
    "run_doctor",
]

Status = Literal["PASS", "WARN", "FAIL"]

#: A resolver slower than this (median, milliseconds) gets a WARN: every address of a
#: list costs one or more lookups.
SLOW_RESOLVER_MS = 300.0
#: Longest server text quoted in a finding.
_QUOTE = 160
#: Spamhaus ZEN return codes (https://www.spamhaus.org/faq/section/DNSBL%20Usage).
_ZEN_CODES = {
    "127.0.0.2": "SBL: spam source",
    "127.0.0.3": "SBL CSS: snowshoe spam",
    "127.0.0.4": "XBL: exploited host",
    "127.0.0.9": "SBL DROP: hijacked range",
    "127.0.0.10": "PBL: the ISP says this range must not send mail directly",
    "127.0.0.11": "PBL: an end-user range that should not send mail directly",
}
#: Where to ask for removal from the default blocklists.
_REMOVAL = {
    "zen.spamhaus.org": "https://check.spamhaus.org/",
    "bl.spamcop.net": "https://www.spamcop.net/bl.shtml",
    "b.barracudacentral.org": "https://www.barracudacentral.org/rbl/removal-request",
}
_BRACKETED_IP = re.compile(r"\[(?:IPv6:)?([0-9A-Fa-f:.]+)\]")
_SPAMHAUS_ERRORS = {
    # https://www.spamhaus.org/news/article/788/ (DNSBL return codes: technical update)
    "127.255.255.252": "typing error in the DNSBL name",
    "127.255.255.254": "query via a public/open resolver",
    "127.255.255.255": "excessive number of queries",
}


@dataclass(frozen=True, slots=True)
class Check:
    """One line of the report. ``name`` is ``kind`` plus its subject (an MX host, a
    zone), ``action`` is what to do (``None`` on PASS)."""

    kind: str
    subject: str | None
    status: Status
    finding: str
    action: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.kind} {self.subject}" if self.subject else self.kind

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "subject": self.subject,
            "status": self.status,
            "finding": self.finding,
            "action": self.action,
            "details": dict(self.details),
        }


@dataclass(frozen=True, slots=True)
class DoctorReport:
    checks: tuple[Check, ...]
    resolver: str
    helo_hostname: str
    mail_from: str
    egress_ip: str | None

    @property
    def ok(self) -> bool:
        return all(c.status == "PASS" for c in self.checks)

    @property
    def exit_code(self) -> int:
        """0 when every check passed, 1 on any WARN or FAIL."""
        return 0 if self.ok else 1

    def counts(self) -> dict[str, int]:
        return {s: sum(c.status == s for c in self.checks) for s in ("PASS", "WARN", "FAIL")}

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "exit_code": self.exit_code,
            "counts": self.counts(),
            "resolver": self.resolver,
            "helo_hostname": self.helo_hostname,
            "mail_from": self.mail_from,
            "egress_ip": self.egress_ip,
            "checks": [c.to_dict() for c in self.checks],
        }

    def render(self) -> str:
        """One line per check: status, name, finding, and ``-> fix:`` what to do."""
        width = max((len(c.name) for c in self.checks), default=0)
        lines = [
            f"mailsift doctor: resolver {self.resolver}, HELO {self.helo_hostname}, "
            f"MAIL FROM {self.mail_from}"
        ]
        for c in self.checks:
            line = f"{c.status}  {c.name:<{width}}  {c.finding}"
            if c.action and c.status != "PASS":
                line += f"  -> fix: {c.action}"
            lines.append(line)
        counts = self.counts()
        tail = ", ".join(f"{counts[s]} {s}" for s in ("FAIL", "WARN", "PASS") if counts[s])
        if self.ok:
            lines.append(f"{tail}: this host can verify mail.")
        elif counts["FAIL"]:
            lines.append(f"{tail}: fix the FAIL lines first; until then SMTP-dependent "
                         "verdicts come back 'unknown'.")
        else:
            lines.append(f"{tail}: usable, but read the WARN lines.")
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class MxTarget:
    """An SMTP host to test port 25 against: a name or an IP literal, and a port."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_mx_host(text: str, default_port: int) -> MxTarget:
    """``host``, ``host:port``, ``ip``, ``ip:port`` or ``[v6]:port``; ``ValueError`` on
    anything else (spaces, control characters, a port out of range)."""
    raw = text.strip()
    if not raw or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in raw):
        raise ValueError(f"bad --mx-host {text[:80]!r}: use host or host:port")
    host, port = raw, default_port
    if raw.startswith("["):
        host, _, rest = raw[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"bad --mx-host {text[:80]!r}")
            port = _port(rest[1:], text)
    elif raw.count(":") == 1:
        host, _, p = raw.partition(":")
        port = _port(p, text)
    elif raw.count(":") > 1:
        ipaddress.ip_address(raw)  # a bare IPv6 address
    host = host.rstrip(".").lower()
    if not host:
        raise ValueError(f"bad --mx-host {text[:80]!r}: no host")
    try:
        dns.name.from_text(host)
    except (dns.exception.DNSException, UnicodeError, ValueError) as exc:
        raise ValueError(f"bad --mx-host {text[:80]!r}: {exc}") from None
    return MxTarget(host, port)


def _port(text: str, original: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise ValueError(f"bad --mx-host {original[:80]!r}: port {text!r}") from None
    if not 0 < port < 65536:
        raise ValueError(f"bad --mx-host {original[:80]!r}: port {port} out of range")
    return port


# --------------------------------------------------------------------------- DNS


@dataclass(frozen=True, slots=True)
class _Answer:
    """One raw query's outcome: ``ok`` (records), ``nodata``, ``nxdomain``,
    ``servfail`` or ``timeout``."""

    outcome: Literal["ok", "nodata", "nxdomain", "servfail", "timeout"]
    records: tuple[str, ...] = ()
    ms: float = 0.0
    error: str | None = None


class _Dns:
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

    async def ask(self, name: str, rdtype: str) -> _Answer:
        if self.resolver is None:
            return _Answer("servfail", error=self.config_error)
        started = time.perf_counter()
        try:
            answer = await self.resolver.resolve(
                name, rdtype, search=False, raise_on_no_answer=False
            )
        except dns.resolver.NXDOMAIN:
            return _Answer("nxdomain", ms=_ms(started))
        except dns.exception.Timeout:
            return _Answer("timeout", ms=_ms(started), error=f"no answer within {self.timeout:g} s")
        except dns.resolver.NoNameservers as exc:
            return _Answer("servfail", ms=_ms(started), error=_clean(str(exc)))
        except (dns.exception.DNSException, OSError, ValueError) as exc:
            return _Answer("servfail", ms=_ms(started), error=_clean(str(exc) or type(exc).__name__))
        if answer.rrset is None:
            return _Answer("nodata", ms=_ms(started))
        return _Answer("ok", tuple(_rdata_text(rd) for rd in answer.rrset), ms=_ms(started))


def _rdata_text(rd: Any) -> str:
    if rd.rdtype == dns.rdatatype.TXT:
        return b"".join(rd.strings).decode("utf-8", "replace")
    if rd.rdtype in (dns.rdatatype.PTR, dns.rdatatype.CNAME, dns.rdatatype.NS):
        return rd.target.to_text(omit_final_dot=True).lower()
    if rd.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
        return str(rd.address)
    return rd.to_text()


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


def _clean(text: str, limit: int = _QUOTE) -> str:
    """Server or library text made safe for one terminal line."""
    out = "".join(c if c.isprintable() else " " for c in text)
    out = " ".join(out.split())
    return out if len(out) <= limit else out[: limit - 3] + "..."


def _tld(name: str) -> str | None:
    labels = [label for label in name.strip().rstrip(".").lower().split(".") if label]
    if len(labels) < 2:
        return None
    try:
        ipaddress.ip_address(name.strip("[]"))
        return None
    except ValueError:
        return labels[-1]


# --------------------------------------------------------------------------- checks


@dataclass(frozen=True, slots=True)
class _ResolverVerdict:
    check: Check
    sane: bool


async def _check_resolver(dnsq: _Dns, tlds: Sequence[str]) -> _ResolverVerdict:
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

    def fail(finding: str, action: str) -> _ResolverVerdict:
        details["problem"] = finding
        return _ResolverVerdict(Check("resolver", None, "FAIL", finding, action, details), False)

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
        return _ResolverVerdict(
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
        return _ResolverVerdict(
            Check("resolver", None, "WARN", f"sane but slow: {finding}",
                  "use a caching resolver close to this host (a local unbound) for large lists",
                  details),
            True,
        )
    return _ResolverVerdict(Check("resolver", None, "PASS", f"sane: {finding}", None, details), True)


@dataclass(frozen=True, slots=True)
class _Probe:
    target: MxTarget
    address: str | None
    outcome: Literal[
        "ok", "no_address", "refused", "timeout", "unreachable", "closed", "reset",
        "silent", "rejected", "not_smtp", "ehlo_refused",
    ]
    banner: str | None = None
    ehlo: str | None = None
    echoed_ip: str | None = None
    ms: float = 0.0
    error: str | None = None


async def _read_reply(reader: asyncio.StreamReader, timeout: float) -> tuple[int, list[str]]:
    """One SMTP reply (RFC 5321 4.2: ``ddd-`` continues, ``ddd `` ends); raises
    ``EOFError`` on end of file, ``ValueError`` on something that is not SMTP."""
    lines: list[str] = []
    async with asyncio.timeout(timeout):
        while True:
            raw = await reader.readline()
            if not raw:
                raise EOFError("connection closed")
            if not raw.endswith(b"\n"):
                raise ValueError("reply line too long or cut")
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if len(line) < 3 or not line[:3].isdigit() or (len(line) > 3 and line[3] not in " -"):
                raise ValueError(f"not an SMTP reply: {_clean(line, 60)!r}")
            lines.append(line[4:])
            if len(line) == 3 or line[3] == " ":
                return int(line[:3]), lines
            if len(lines) > 100:
                raise ValueError("endless multi-line reply")


def _echoed_ip(text: str) -> str | None:
    """The client address an MTA echoes in its EHLO greeting line, if any."""
    match = _BRACKETED_IP.search(text)
    if match is None:
        return None
    try:
        return str(ipaddress.ip_address(match.group(1)))
    except ValueError:
        return None


async def _probe(target: MxTarget, dnsq: _Dns, settings: Settings) -> _Probe:
    """Connect, read the banner, EHLO, QUIT. Never MAIL, RCPT or DATA."""
    addresses = await dnsq.engine.host_addresses(target.host)
    if not addresses:
        return _Probe(target, None, "no_address", error=f"{target.host} has no A/AAAA record")
    address = addresses[0]
    timeout = float(settings.smtp_timeout)
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(address, target.port, limit=8192)
    except TimeoutError:
        return _Probe(target, address, "timeout", ms=_ms(started),
                      error=f"TCP connect timed out after {timeout:g} s")
    except ConnectionRefusedError:
        return _Probe(target, address, "refused", ms=_ms(started), error="connection refused")
    except ConnectionResetError:  # the handshake completed, then RST (seen as early as here)
        return _Probe(target, address, "reset", ms=_ms(started),
                      error="connection accepted, then reset before any banner")
    except OSError as exc:
        return _Probe(target, address, "unreachable", ms=_ms(started),
                      error=_clean(exc.strerror or str(exc)))
    try:
        try:
            code, lines = await _read_reply(reader, timeout)
        except TimeoutError:
            return _Probe(target, address, "silent", ms=_ms(started),
                          error=f"connected, but no banner within {timeout:g} s")
        except (EOFError, asyncio.IncompleteReadError):
            return _Probe(target, address, "closed", ms=_ms(started),
                          error="connection accepted, then closed before any banner")
        except ConnectionResetError:
            return _Probe(target, address, "reset", ms=_ms(started),
                          error="connection accepted, then reset before any banner")
        except (ValueError, asyncio.LimitOverrunError) as exc:
            return _Probe(target, address, "not_smtp", ms=_ms(started), error=_clean(str(exc)))
        banner = _clean(f"{code} {lines[0] if lines else ''}")
        if code != 220:
            return _Probe(target, address, "rejected", banner=banner, ms=_ms(started))
        writer.write(f"EHLO {settings.helo_hostname}\r\n".encode("ascii", "replace"))
        try:
            await writer.drain()
            ehlo_code, ehlo_lines = await _read_reply(reader, timeout)
        except (TimeoutError, EOFError, OSError, ValueError, asyncio.IncompleteReadError,
                asyncio.LimitOverrunError) as exc:
            return _Probe(target, address, "ehlo_refused", banner=banner, ms=_ms(started),
                          error=_clean(f"no EHLO reply: {exc or type(exc).__name__}"))
        ehlo = _clean(f"{ehlo_code} {ehlo_lines[0] if ehlo_lines else ''}")
        writer.write(b"QUIT\r\n")
        try:
            await writer.drain()
            await _read_reply(reader, min(timeout, 2.0))
        except Exception:  # noqa: BLE001 -- a server that hangs up on QUIT is fine
            pass
        if ehlo_code != 250:
            return _Probe(target, address, "ehlo_refused", banner=banner, ehlo=ehlo, ms=_ms(started))
        echoed = _echoed_ip(ehlo_lines[0]) if ehlo_lines else None
        return _Probe(target, address, "ok", banner=banner, ehlo=ehlo, echoed_ip=echoed,
                      ms=_ms(started))
    finally:
        writer.transport.abort()


_PORT25_ACTION = (
    "ask your provider to open outbound port 25 (most clouds and home ISPs block it), or run "
    "mailsift from a host that may; until then MAILSIFT_SMTP_ENABLED=false"
)
_MIDDLEBOX_ACTION = (
    "find what intercepts port 25 (the network's firewall or transparent proxy, or an "
    "antivirus mail shield on this host) and let it through, or run mailsift from another host"
)
#: Outcomes that, on every host, mean this host's port 25 is blocked or intercepted; on
#: some hosts only (others answered), that those servers are down or refuse connections.
_PATH_FAULTS = ("refused", "timeout", "unreachable", "closed", "reset", "silent", "not_smtp")


def _port25_check(p: _Probe) -> Check:
    where = f"{p.address}:{p.target.port}" if p.address else str(p.target)
    details: dict[str, Any] = {"address": p.address, "port": p.target.port, "outcome": p.outcome,
                               "banner": p.banner, "ehlo": p.ehlo, "echoed_ip": p.echoed_ip,
                               "ms": p.ms, "error": p.error}
    subject = str(p.target)
    if p.outcome == "ok":
        echo = f"; echoed our address {p.echoed_ip}" if p.echoed_ip else ""
        return Check("port25", subject, "PASS",
                     f"banner \"{p.banner}\", EHLO accepted in {p.ms:.0f} ms{echo}", None, details)
    findings: dict[str, tuple[Status, str, str]] = {
        "no_address": ("WARN", f"{p.error}: nothing to test",
                       "check the name, or give --mx-host host[:port] of a reachable MX"),
        "refused": ("FAIL", f"connection refused by {where}: outbound port 25 is blocked "
                    "(or nothing listens there)", _PORT25_ACTION),
        "timeout": ("FAIL", f"{p.error} to {where}: a firewall drops outbound port 25",
                    _PORT25_ACTION),
        "unreachable": ("FAIL", f"cannot connect to {where}: {p.error}",
                        "check this host's network route and firewall for outbound port 25"),
        "closed": ("FAIL", f"{where} accepted the connection, then closed it before any "
                   "banner: a middlebox intercepts port 25", _MIDDLEBOX_ACTION),
        "reset": ("FAIL", f"{where} accepted the connection, then reset it before any banner: "
                  "a middlebox intercepts port 25", _MIDDLEBOX_ACTION),
        "silent": ("FAIL", f"{p.error} from {where}: a middlebox holds port 25, or the server "
                   "tarpits", "raise MAILSIFT_SMTP_TIMEOUT if this is one slow server; if every "
                   "host does this, port 25 is intercepted: " + _MIDDLEBOX_ACTION),
        "not_smtp": ("FAIL", f"{where} does not speak SMTP ({p.error}): something intercepts "
                     "port 25", _MIDDLEBOX_ACTION),
        "ehlo_refused": ("WARN", f"banner \"{p.banner}\" but EHLO failed: "
                         f"{p.ehlo or p.error}", "check MAILSIFT_HELO_HOSTNAME (see the helo line)"),
    }
    if p.outcome == "rejected":
        code = (p.banner or "0")[:1]
        if code == "5":
            return Check("port25", subject, "FAIL",
                         f"port 25 is open, but the server refuses this host: \"{p.banner}\"",
                         "see the dnsbl and rdns lines: receivers refuse our IP; get it "
                         "delisted / give it a PTR, or verify from another IP", details)
        return Check("port25", subject, "WARN",
                     f"port 25 is open, but the server turns us away for now: \"{p.banner}\"",
                     "run again later; if every host says so, our IP is rate-limited", details)
    status, finding, action = findings[p.outcome]
    return Check("port25", subject, status, finding, action, details)


def _only_this_host(check: Check) -> Check:
    """Other MX hosts answered, so this host's port 25 works: a connection fault of one
    server is that server's, a WARN, not a blocked port."""
    if check.status != "FAIL" or check.details.get("outcome") not in _PATH_FAULTS:
        return check
    said = {
        "refused": "connection refused", "timeout": "TCP connect timed out",
        "unreachable": "cannot connect", "closed": "accepted, then closed before any banner",
        "reset": "accepted, then reset before any banner", "silent": "connected, but no banner",
        "not_smtp": "does not speak SMTP",
    }[check.details["outcome"]]
    where = f"{check.details.get('address')}:{check.details.get('port')}"
    return Check(
        check.kind, check.subject, "WARN",
        f"{said} ({where}); other MX hosts answered, so port 25 is open here: this server "
        "is down or refuses connections",
        "nothing to fix on this host if it is only this server; test another with --mx-host",
        check.details,
    )


async def _targets(
    mx_hosts: Sequence[MxTarget], settings: Settings, dnsq: _Dns
) -> tuple[list[MxTarget], list[Check]]:
    if mx_hosts:
        return list(mx_hosts), []
    targets: list[MxTarget] = []
    problems: list[Check] = []
    results = await asyncio.gather(*(dnsq.engine.mx(d) for d in settings.doctor_mx_domains))
    for domain, mx in zip(settings.doctor_mx_domains, results, strict=True):
        if mx.outcome == "ok" and mx.hosts:
            targets.append(MxTarget(mx.hosts[0], settings.smtp_port))
        else:
            said = f"{mx.outcome}: {mx.message}" if mx.message else mx.outcome
            problems.append(Check(
                "port25", domain, "WARN", f"could not find the MX of {domain} to test ({said})",
                "give --mx-host host[:port] of an MX host to test port 25 against",
                {"mx_outcome": mx.outcome},
            ))
    return targets, problems


def _egress_check(
    settings: Settings, probes: Sequence[_Probe], tested: bool
) -> tuple[Check, str | None]:
    echoes: dict[str, str] = {}
    for p in probes:
        if p.echoed_ip:
            echoes.setdefault(p.echoed_ip, str(p.target))
    details: dict[str, Any] = {"configured": settings.egress_ip, "echoed": dict(echoes)}
    if settings.egress_ip:
        ip = settings.egress_ip
        others = sorted(e for e in echoes if e != ip)
        if others:
            return Check("egress_ip", None, "WARN",
                         f"configured {ip}, but MX hosts saw {', '.join(others)}",
                         f"set MAILSIFT_EGRESS_IP={others[0]} (what receivers see), or check "
                         "which interface/NAT mail leaves through", details), ip
        seen = " (MX hosts echoed the same)" if echoes else ""
        return Check("egress_ip", None, "PASS", f"{ip}, configured (MAILSIFT_EGRESS_IP){seen}",
                     None, details), ip
    if not tested:
        return _skip("egress_ip", None, "no MX host could be tested, and MAILSIFT_EGRESS_IP "
                     "is not set", "set MAILSIFT_EGRESS_IP=<this host's public IP> (or "
                     "--egress-ip)"), None
    if not echoes:
        return Check("egress_ip", None, "WARN",
                     "unknown: no MX host tested echoed our address in its EHLO reply, and "
                     "MAILSIFT_EGRESS_IP is not set; PTR and blocklists cannot be checked",
                     "set MAILSIFT_EGRESS_IP=<this host's public IP> (or --egress-ip) and run "
                     "again", details), None
    if len(echoes) > 1:
        shown = ", ".join(f"{ip} (by {by})" for ip, by in sorted(echoes.items()))
        first = sorted(echoes)[0]
        return Check("egress_ip", None, "WARN",
                     f"MX hosts saw different addresses: {shown}: mail leaves through a NAT "
                     "pool, so PTR and listings differ per connection",
                     "send from one fixed public IP; set MAILSIFT_EGRESS_IP to check one",
                     details), first
    ip, by = next(iter(echoes.items()))
    return Check("egress_ip", None, "PASS", f"{ip}, as echoed in the EHLO reply of {by}", None,
                 details), ip


def _skip(
    kind: str, subject: str | None, why: str, action: str, subjects: Sequence[str] = ()
) -> Check:
    """A check that could not run; ``subjects`` (MX domains, zones) share one line."""
    which = f" ({', '.join(subjects)})" if subjects else ""
    details = {"skipped": True, "subjects": list(subjects)}
    return Check(kind, subject, "WARN", f"not checked{which}: {why}", action, details)


_NEEDS_RESOLVER = ("the resolver is not sane (see the resolver line)",
                   "fix the resolver first, then run mailsift doctor again")
_NEEDS_IP = ("the egress IP is unknown (see the egress_ip line)",
             "set MAILSIFT_EGRESS_IP=<public IP> or --egress-ip")


async def _rdns_and_helo(dnsq: _Dns, settings: Settings, ip: str) -> list[Check]:
    helo = settings.helo_hostname.rstrip(".").lower()
    reverse = dns.reversename.from_address(ip).to_text()
    ptr, helo_addresses = await asyncio.gather(
        dnsq.ask(reverse, "PTR"), dnsq.engine.host_addresses(helo)
    )
    names = list(ptr.records)
    confirmed: list[str] = []
    for name, addresses in zip(
        names, await asyncio.gather(*(dnsq.engine.host_addresses(n) for n in names)), strict=True
    ):
        if ip in addresses:
            confirmed.append(name)
    details = {"ip": ip, "ptr": names, "forward_confirmed": confirmed, "ptr_outcome": ptr.outcome}
    set_ptr = (f"ask whoever owns {ip} (your hosting provider) to set its PTR to {helo}, and "
               f"publish {helo} A {ip}")
    if ptr.outcome in ("servfail", "timeout"):
        rdns = Check("rdns", None, "WARN", f"could not look up the PTR of {ip} ({ptr.outcome})",
                     "run again; if it persists, check the resolver", details)
    elif not names:
        rdns = Check("rdns", None, "FAIL",
                     f"{ip} has no PTR record: Gmail, Outlook and many others refuse or throttle "
                     "clients without reverse DNS", set_ptr, details)
    elif not confirmed:
        rdns = Check("rdns", None, "FAIL",
                     f"PTR of {ip} is {', '.join(names)}, which does not resolve back to {ip} "
                     "(no forward-confirmed reverse DNS)",
                     f"publish {names[0]} A {ip}, or have the PTR changed to a name that does",
                     details)
    else:
        rdns = Check("rdns", None, "PASS", f"{ip} -> {confirmed[0]} -> {ip} (forward-confirmed)",
                     None, details)

    helo_details = {"helo_hostname": helo, "addresses": list(helo_addresses), "ptr": names}
    if helo == "localhost" or helo.endswith(".localhost") or "." not in helo:
        check = Check("helo", None, "FAIL",
                      f"{helo} is a placeholder, not a public name: receivers refuse or "
                      "distrust it",
                      f"set MAILSIFT_HELO_HOSTNAME={confirmed[0]}" if confirmed else set_ptr,
                      helo_details)
    elif helo in names and ip in helo_addresses:
        check = Check("helo", None, "PASS",
                      f"{helo} is the PTR name of {ip} and resolves to it", None, helo_details)
    elif not helo_addresses:
        check = Check("helo", None, "FAIL",
                      f"{helo} does not resolve: receivers that check the HELO name refuse it "
                      "(Postfix reject_unknown_helo_hostname: \"Helo command rejected: Host "
                      "not found\")",
                      f"set MAILSIFT_HELO_HOSTNAME to {confirmed[0]}" if confirmed else set_ptr,
                      helo_details)
    elif ip not in helo_addresses:
        check = Check("helo", None, "WARN",
                      f"{helo} resolves to {', '.join(helo_addresses)}, not to {ip}",
                      f"set MAILSIFT_HELO_HOSTNAME to {confirmed[0]}" if confirmed
                      else f"publish {helo} A {ip} and make it the PTR of {ip}", helo_details)
    else:
        check = Check("helo", None, "WARN",
                      f"{helo} resolves to {ip}, but the PTR of {ip} is "
                      f"{', '.join(names) or 'missing'}: HELO and reverse DNS disagree",
                      f"set MAILSIFT_HELO_HOSTNAME={confirmed[0]}" if confirmed else set_ptr,
                      helo_details)
    return [rdns, check]


def _dnsbl_query(ip: str, zone: str) -> str:
    """RFC 5782 2.1 (IPv4: reversed octets) and 2.4 (IPv6: reversed nibbles)."""
    reverse = dns.reversename.from_address(ip)
    return reverse.relativize(dns.reversename.ipv4_reverse_domain if ":" not in ip
                              else dns.reversename.ipv6_reverse_domain).to_text() + f".{zone}."


async def _dnsbl(dnsq: _Dns, ip: str, zone: str) -> Check:
    query = _dnsbl_query(ip, zone)
    answer = await dnsq.ask(query, "A")
    details: dict[str, Any] = {"query": query.rstrip("."), "outcome": answer.outcome,
                               "answers": list(answer.records)}
    if answer.outcome in ("nxdomain", "nodata"):
        return Check("dnsbl", zone, "PASS", f"{ip} is not listed", None, details)
    if answer.outcome in ("servfail", "timeout"):
        return Check("dnsbl", zone, "WARN",
                     f"could not query ({answer.outcome}{': ' + answer.error if answer.error else ''})",
                     "run again; the list may be down or blocking your resolver", details)
    codes = [ipaddress.ip_address(a) for a in answer.records if _is_ipv4(a)]
    errors = [str(c) for c in codes if c in ipaddress.ip_network("127.255.255.0/24")]
    listed = [str(c) for c in codes if c in ipaddress.ip_network("127.0.0.0/8") and str(c) not in errors]
    strange = [a for a in answer.records if a not in errors and a not in listed]
    if listed:
        if zone.startswith("zen.spamhaus."):
            listed = [f"{c} {_ZEN_CODES[c]}" if c in _ZEN_CODES else c for c in listed]
        text = await dnsq.ask(query, "TXT")
        reason = f": \"{_clean(text.records[0], 120)}\"" if text.records else ""
        details["reason"] = text.records[0] if text.records else None
        return Check("dnsbl", zone, "FAIL",
                     f"{ip} is LISTED ({', '.join(listed)}){reason}: receivers using {zone} "
                     "refuse this host",
                     f"request delisting at {_REMOVAL.get(zone, zone + chr(39) + 's removal page')}, "
                     "or verify from another IP",
                     details)
    if errors:
        meaning = "; ".join(f"{e}: {_SPAMHAUS_ERRORS.get(e, 'query refused')}" for e in errors)
        return Check("dnsbl", zone, "WARN",
                     f"unknown: the list refused the query ({meaning}), which says nothing "
                     "about the IP",
                     "query through your own resolver (not a public one such as 8.8.8.8 or "
                     "1.1.1.1), or use the list's registered query service", details)
    return Check("dnsbl", zone, "WARN",
                 f"unknown: answer {', '.join(strange)} is not a blocklist code (127.0.0.x): "
                 "the resolver rewrites answers",
                 "use a resolver that does not rewrite answers", details)


def _spf_mechanism(ip: str | None) -> str:
    if ip is None:
        return "ip4:<egress IP>"
    return f"ip6:{ip}" if ":" in ip else f"ip4:{ip}"


def _is_ipv4(text: str) -> bool:
    try:
        return ipaddress.ip_address(text).version == 4
    except ValueError:
        return False


async def _mail_from(dnsq: _Dns, settings: Settings, ip: str | None) -> list[Check]:
    address = settings.mail_from
    local, at, domain = address.rpartition("@")
    domain = domain.rstrip(".").lower()
    fix = ("set MAILSIFT_MAIL_FROM to an address at a domain you own that has MX and SPF "
           "records")
    if not at or not local or not domain:
        return [Check("mail_from_mx", None, "FAIL", f"{address!r} is not an address", fix)]
    if domain == "localhost" or domain.endswith(".localhost"):
        return [Check("mail_from_mx", domain, "FAIL",
                      f"{address} is the placeholder default: receivers refuse a sender "
                      "domain that does not exist", fix)]
    mx, txt = await asyncio.gather(dnsq.engine.mx(domain), dnsq.ask(f"{domain}.", "TXT"))
    details = {"outcome": mx.outcome, "hosts": list(mx.hosts), "implicit": mx.implicit}
    if mx.outcome == "ok" and not mx.implicit:
        mx_check = Check("mail_from_mx", domain, "PASS", f"MX {', '.join(mx.hosts[:3])}",
                         None, details)
    elif mx.outcome == "ok":
        mx_check = Check("mail_from_mx", domain, "WARN",
                         "no MX record, only an address record (implicit MX, RFC 5321 5.1): "
                         "some receivers want an MX for the sender domain",
                         f"publish an MX record for {domain}", details)
    elif mx.outcome in ("servfail", "timeout"):
        mx_check = Check("mail_from_mx", domain, "WARN",
                         f"could not look up its MX ({mx.outcome})", "run again", details)
    else:
        said = {"nxdomain": "the domain does not exist",
                "null_mx": "it publishes a null MX (RFC 7505): it accepts no mail",
                "no_mail": "it has no MX and no address record"}[mx.outcome]
        mx_check = Check("mail_from_mx", domain, "FAIL",
                         f"{said}: receivers refuse MAIL FROM such a domain (Postfix "
                         "reject_unknown_sender_domain: \"Sender address rejected: Domain not "
                         "found\")", fix, details)
    spf = [t for t in txt.records if t.lower() == "v=spf1" or t.lower().startswith("v=spf1 ")]
    spf_details = {"records": spf, "outcome": txt.outcome}
    if txt.outcome in ("servfail", "timeout"):
        spf_check = Check("mail_from_spf", domain, "WARN",
                          f"could not look up its TXT records ({txt.outcome})", "run again",
                          spf_details)
    elif not spf:
        spf_check = Check("mail_from_spf", domain, "WARN",
                          "no SPF record (TXT v=spf1): receivers score or refuse unauthenticated "
                          "senders",
                          f"publish TXT \"v=spf1 {_spf_mechanism(ip)} -all\" for {domain} (or "
                          "include your mail provider's)", spf_details)
    elif len(spf) > 1:
        spf_check = Check("mail_from_spf", domain, "FAIL",
                          f"{len(spf)} SPF records: that is a permanent error for every receiver "
                          "(RFC 7208 4.5)", f"merge them into one TXT v=spf1 record for {domain}",
                          spf_details)
    else:
        spf_check = Check("mail_from_spf", domain, "PASS", f"\"{_clean(spf[0], 100)}\"", None,
                          spf_details)
    return [mx_check, spf_check]


# --------------------------------------------------------------------------- entry point


async def run_doctor(settings: Settings, mx_hosts: Sequence[MxTarget] = ()) -> DoctorReport:
    """Run every check against ``settings`` (and ``mx_hosts`` for port 25 instead of the
    MX hosts of ``settings.doctor_mx_domains``). Never raises for a network fault."""
    dnsq = _Dns(settings)
    names = [t.host for t in mx_hosts] or list(settings.doctor_mx_domains)
    tlds = list(dict.fromkeys(t for t in (_tld(n) for n in names) if t))
    resolver = await _check_resolver(dnsq, tlds)
    checks: list[Check] = [resolver.check]

    needs_dns = not all(_is_ip(t.host) for t in mx_hosts) if mx_hosts else True
    if resolver.sane or not needs_dns:
        targets, problems = await _targets(mx_hosts, settings, dnsq)
        probes = list(await asyncio.gather(*(_probe(t, dnsq, settings) for t in targets)))
        port25 = [_port25_check(p) for p in probes]
        if any(p.outcome == "ok" for p in probes):
            port25 = [_only_this_host(c) for c in port25]
        checks += problems + port25
    else:
        probes = []
        subjects = [str(t) for t in mx_hosts] or list(settings.doctor_mx_domains)
        checks.append(_skip("port25", None, *_NEEDS_RESOLVER, subjects=subjects))

    egress, ip = _egress_check(settings, probes, tested=bool(probes))
    checks.append(egress)

    if not resolver.sane:
        checks += [_skip("rdns", None, *_NEEDS_RESOLVER), _skip("helo", None, *_NEEDS_RESOLVER)]
        checks.append(_skip("dnsbl", None, *_NEEDS_RESOLVER, subjects=settings.dnsbl_zones))
        checks += [_skip("mail_from_mx", None, *_NEEDS_RESOLVER),
                   _skip("mail_from_spf", None, *_NEEDS_RESOLVER)]
    else:
        if ip is None:
            rest: list[Any] = [_skip("rdns", None, *_NEEDS_IP), _skip("helo", None, *_NEEDS_IP)]
            rest.append(_skip("dnsbl", None, *_NEEDS_IP, subjects=settings.dnsbl_zones))
            tail = await _mail_from(dnsq, settings, None)
            checks += rest + tail
        else:
            parts = await asyncio.gather(
                _rdns_and_helo(dnsq, settings, ip),
                asyncio.gather(*(_dnsbl(dnsq, ip, z) for z in settings.dnsbl_zones)),
                _mail_from(dnsq, settings, ip),
            )
            for part in parts:
                checks += list(part)
    return DoctorReport(
        checks=tuple(checks),
        resolver=dnsq.description,
        helo_hostname=settings.helo_hostname,
        mail_from=settings.mail_from,
        egress_ip=ip,
    )


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip("[]"))
        return True
    except ValueError:
        return False
