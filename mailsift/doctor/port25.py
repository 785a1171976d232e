"""Outbound port 25 and the egress IP: connect, banner (RFC 5321 3.1), EHLO, QUIT -- never
MAIL, RCPT or DATA -- against a few MX hosts, naming each way it fails (refused, connect
timeout, accepted then closed / reset / silent before the banner, not SMTP, a refusing
banner), and the client address the MX hosts echo in their EHLO reply."""

from __future__ import annotations

import asyncio
import ipaddress
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import dns.exception
import dns.name

from mailsift.doctor.lookups import Lookups, clean, elapsed_ms
from mailsift.doctor.report import Check, Status, skipped
from mailsift.routing import unroutable_reason
from mailsift.settings import Settings

__all__ = [
    "MxTarget",
    "Probe",
    "egress_check",
    "only_this_host",
    "parse_mx_host",
    "port25_check",
    "probe",
    "targets_for",
]


_BRACKETED_IP = re.compile(r"\[(?:IPv6:)?([0-9A-Fa-f:.]+)\]")


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


@dataclass(frozen=True, slots=True)
class Probe:
    target: MxTarget
    address: str | None
    outcome: Literal[
        "ok", "no_address", "not_public", "refused", "timeout", "unreachable", "closed",
        "reset", "silent", "rejected", "not_smtp", "ehlo_refused",
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
                raise ValueError(f"not an SMTP reply: {clean(line, 60)!r}")
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


async def probe(target: MxTarget, dnsq: Lookups, settings: Settings) -> Probe:
    """Connect, read the banner, EHLO, QUIT. Never MAIL, RCPT or DATA."""
    addresses = await dnsq.engine.host_addresses(target.host)
    if not addresses:
        return Probe(target, None, "no_address", error=f"{target.host} has no A/AAAA record")
    address = addresses[0]
    reason = None if settings.allow_private_networks else unroutable_reason(address)
    if reason is not None:
        # Never connect where the verifier would not (issue 9: no probing inside networks).
        return Probe(target, address, "not_public", error=f"a {reason} address")
    timeout = float(settings.smtp_timeout)
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(address, target.port, limit=8192)
    except TimeoutError:
        return Probe(target, address, "timeout", ms=elapsed_ms(started),
                      error=f"TCP connect timed out after {timeout:g} s")
    except ConnectionRefusedError:
        return Probe(target, address, "refused", ms=elapsed_ms(started), error="connection refused")
    except ConnectionResetError:  # the handshake completed, then RST (seen as early as here)
        return Probe(target, address, "reset", ms=elapsed_ms(started),
                      error="connection accepted, then reset before any banner")
    except OSError as exc:
        return Probe(target, address, "unreachable", ms=elapsed_ms(started),
                      error=clean(exc.strerror or str(exc)))
    try:
        try:
            code, lines = await _read_reply(reader, timeout)
        except TimeoutError:
            return Probe(target, address, "silent", ms=elapsed_ms(started),
                          error=f"connected, but no banner within {timeout:g} s")
        except (EOFError, asyncio.IncompleteReadError):
            return Probe(target, address, "closed", ms=elapsed_ms(started),
                          error="connection accepted, then closed before any banner")
        except ConnectionResetError:
            return Probe(target, address, "reset", ms=elapsed_ms(started),
                          error="connection accepted, then reset before any banner")
        except (ValueError, asyncio.LimitOverrunError) as exc:
            return Probe(target, address, "not_smtp", ms=elapsed_ms(started), error=clean(str(exc)))
        banner = clean(f"{code} {lines[0] if lines else ''}")
        if code != 220:
            return Probe(target, address, "rejected", banner=banner, ms=elapsed_ms(started))
        writer.write(f"EHLO {settings.helo_hostname}\r\n".encode("ascii", "replace"))
        try:
            await writer.drain()
            ehlo_code, ehlo_lines = await _read_reply(reader, timeout)
        except (TimeoutError, EOFError, OSError, ValueError, asyncio.IncompleteReadError,
                asyncio.LimitOverrunError) as exc:
            return Probe(target, address, "ehlo_refused", banner=banner, ms=elapsed_ms(started),
                          error=clean(f"no EHLO reply: {exc or type(exc).__name__}"))
        ehlo = clean(f"{ehlo_code} {ehlo_lines[0] if ehlo_lines else ''}")
        writer.write(b"QUIT\r\n")
        try:
            await writer.drain()
            await _read_reply(reader, min(timeout, 2.0))
        except Exception:  # noqa: BLE001 -- a server that hangs up on QUIT is fine
            pass
        if ehlo_code != 250:
            return Probe(target, address, "ehlo_refused", banner=banner, ehlo=ehlo, ms=elapsed_ms(started))
        echoed = _echoed_ip(ehlo_lines[0]) if ehlo_lines else None
        return Probe(target, address, "ok", banner=banner, ehlo=ehlo, echoed_ip=echoed,
                      ms=elapsed_ms(started))
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


def port25_check(p: Probe) -> Check:
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
        "not_public": ("FAIL", f"{p.target.host} resolves to {p.address}, {p.error}: not "
                       "connected (the verifier never probes inside networks); an MX of a "
                       "public domain there means the resolver rewrites answers",
                       "use a resolver that does not rewrite answers (MAILSIFT_DNS_NAMESERVERS), "
                       "or MAILSIFT_ALLOW_PRIVATE_NETWORKS=true if this is an intranet on "
                       "purpose"),
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


def only_this_host(check: Check) -> Check:
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


async def targets_for(
    mx_hosts: Sequence[MxTarget], settings: Settings, dnsq: Lookups
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


def egress_check(
    settings: Settings, probes: Sequence[Probe], tested: bool
) -> tuple[Check, str | None]:
    echoes: dict[str, str] = {}
    for p in probes:
        if p.echoed_ip:
            echoes.setdefault(p.echoed_ip, str(p.target))
    details: dict[str, Any] = {"configured": settings.egress_ip, "echoed": dict(echoes)}
    candidate = settings.egress_ip or (sorted(echoes)[0] if echoes else None)
    reason = None if settings.allow_private_networks or candidate is None else (
        unroutable_reason(candidate))
    if reason is not None:
        return Check("egress_ip", None, "WARN",
                     f"{candidate} is a {reason} address, not what receivers on the internet "
                     "see; PTR and blocklists cannot be checked with it",
                     "set MAILSIFT_EGRESS_IP=<this host's public IP> (or --egress-ip)",
                     details), None
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
        return skipped("egress_ip", None, "no MX host could be tested, and MAILSIFT_EGRESS_IP "
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
