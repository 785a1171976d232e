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
streams. The modules: ``report`` (the lines and their rendering), ``lookups`` (DNS),
``resolver``, ``port25`` (with the egress IP), ``identity`` (rDNS, HELO, MAIL FROM) and
``blocklists``; this one runs them in order, skipping what a failed check makes
meaningless.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from mailsift.doctor.blocklists import check_dnsbl
from mailsift.doctor.identity import (
    check_mail_from,
    check_rdns_and_helo,
    placeholder_helo,
    placeholder_mail_from,
)
from mailsift.doctor.lookups import Lookups, is_ip, tld_of
from mailsift.doctor.port25 import (
    MxTarget,
    egress_check,
    only_this_host,
    parse_mx_host,
    port25_check,
    probe,
    targets_for,
)
from mailsift.doctor.report import Check, DoctorReport, Status, skipped
from mailsift.doctor.resolver import check_resolver
from mailsift.settings import Settings

__all__ = [
    "Check",
    "DoctorReport",
    "MxTarget",
    "Status",
    "parse_mx_host",
    "run_doctor",
]


_NEEDS_RESOLVER = ("the resolver is not sane (see the resolver line)",
                   "fix the resolver first, then run mailsift doctor again")
_NEEDS_IP = ("the egress IP is unknown (see the egress_ip line)",
             "set MAILSIFT_EGRESS_IP=<public IP> or --egress-ip")


async def run_doctor(settings: Settings, mx_hosts: Sequence[MxTarget] = ()) -> DoctorReport:
    """Run every check against ``settings`` (and ``mx_hosts`` for port 25 instead of the
    MX hosts of ``settings.doctor_mx_domains``). Never raises for a network fault."""
    dnsq = Lookups(settings)
    names = [t.host for t in mx_hosts] or list(settings.doctor_mx_domains)
    tlds = list(dict.fromkeys(t for t in (tld_of(n) for n in names) if t))
    resolver = await check_resolver(dnsq, tlds)
    checks: list[Check] = [resolver.check]

    needs_dns = not all(is_ip(t.host) for t in mx_hosts) if mx_hosts else True
    if resolver.sane or not needs_dns:
        targets, problems = await targets_for(mx_hosts, settings, dnsq)
        probes = list(await asyncio.gather(*(probe(t, dnsq, settings) for t in targets)))
        port25 = [port25_check(p) for p in probes]
        if any(p.outcome == "ok" for p in probes):
            port25 = [only_this_host(c) for c in port25]
        checks += problems + port25
    else:
        probes = []
        subjects = [str(t) for t in mx_hosts] or list(settings.doctor_mx_domains)
        checks.append(skipped("port25", None, *_NEEDS_RESOLVER, subjects=subjects))

    egress, ip = egress_check(settings, probes, tested=bool(probes))
    checks.append(egress)

    # What needs no DNS is still said: a placeholder HELO name or sender.
    helo_placeholder = placeholder_helo(settings)
    if not resolver.sane:
        checks += [skipped("rdns", None, *_NEEDS_RESOLVER),
                   helo_placeholder or skipped("helo", None, *_NEEDS_RESOLVER)]
        checks.append(skipped("dnsbl", None, *_NEEDS_RESOLVER, subjects=settings.dnsbl_zones))
        sender_placeholder = placeholder_mail_from(settings)
        checks += [sender_placeholder] if sender_placeholder else [
            skipped("mail_from_mx", None, *_NEEDS_RESOLVER),
            skipped("mail_from_spf", None, *_NEEDS_RESOLVER)]
    else:
        if ip is None:
            rest: list[Check] = [skipped("rdns", None, *_NEEDS_IP),
                                 helo_placeholder or skipped("helo", None, *_NEEDS_IP)]
            rest.append(skipped("dnsbl", None, *_NEEDS_IP, subjects=settings.dnsbl_zones))
            tail = await check_mail_from(dnsq, settings, None)
            checks += rest + tail
        else:
            parts = await asyncio.gather(
                check_rdns_and_helo(dnsq, settings, ip),
                asyncio.gather(*(check_dnsbl(dnsq, ip, z) for z in settings.dnsbl_zones)),
                check_mail_from(dnsq, settings, ip),
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
