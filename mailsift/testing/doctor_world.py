"""A simulated internet as a healthy mail host sees it, for ``mailsift doctor``.

:func:`populate_doctor_world` adds to a :class:`~mailsift.testing.world.World`:

- three "well-known" mail domains whose MX hosts greet like the real ones (Gmail's
  ``at your service, [ip]``, Exchange Online's ``Hello [ip]``, and a Postfix that echoes
  nothing -- see :data:`~mailsift.testing.smtp_server.EHLO_ECHO_GREETINGS`);
- the host's reverse DNS: ``egress_ip`` PTR ``probe.mailsift.test`` (the world's HELO
  name), which resolves back to ``egress_ip`` (forward-confirmed);
- the sender domain ``mailsift.test`` (the world's MAIL FROM) with an MX and one SPF
  record;
- three DNS blocklists under ``.test`` names, each with the test entry RFC 5782 5
  requires of every IPv4 DNSBL (127.0.0.2 listed, 127.0.0.1 not listed).

Break one thing afterwards to get each broken setting (see tests/test_doctor.py), e.g.
:func:`list_on_dnsbl` for "our IP is listed". The egress IP is 127.0.0.1: the address the
MX hosts see when a client connects over loopback.
"""

from __future__ import annotations

import ipaddress

import dns.reversename

from mailsift.testing.smtp_server import EHLO_ECHO_GREETINGS, Behaviour
from mailsift.testing.world import World

__all__ = [
    "DNSBL_TEST_ZONES",
    "PROBE_DOMAINS",
    "dnsbl_name",
    "list_on_dnsbl",
    "populate_doctor_world",
]

#: Stand-ins for zen.spamhaus.org, bl.spamcop.net and b.barracudacentral.org.
DNSBL_TEST_ZONES = ("zen.spamhaus.test", "bl.spamcop.test", "b.barracudacentral.test")
#: Stand-ins for gmail.com, outlook.com and yahoo.com (settings.doctor_mx_domains).
PROBE_DOMAINS = ("gmail.test", "outlook.test", "yahoo.test")


def dnsbl_name(ip: str, zone: str) -> str:
    """The name a DNSBL lookup of ``ip`` asks for (RFC 5782 2.1: reversed octets)."""
    reverse = dns.reversename.from_address(str(ipaddress.ip_address(ip)))
    relative = reverse.relativize(dns.reversename.ipv4_reverse_domain)
    return f"{relative.to_text()}.{zone}"


def list_on_dnsbl(
    world: World, ip: str, zone: str, code: str = "127.0.0.2", reason: str | None = None
) -> None:
    """List ``ip`` on ``zone``: an A record ``code`` (and a TXT reason, as Spamhaus and
    SpamCop publish one) at the reversed-octet name."""
    name = dnsbl_name(ip, zone)
    world.dns.add_a(name, code)
    if reason:
        world.dns.add_txt(name, reason)


def populate_doctor_world(world: World, egress_ip: str = "127.0.0.1") -> dict[str, str]:
    """Make ``world`` what a well-set-up host sees; returns the ``MAILSIFT_*`` variables
    (besides ``world.env()``) that point the doctor's blocklists and MX domains at it."""
    greetings = ("gmail", "outlook", "postfix")
    for domain, style in zip(PROBE_DOMAINS, greetings, strict=True):
        world.add_domain(domain, Behaviour(ehlo_greeting=EHLO_ECHO_GREETINGS[style]))
    helo = "probe.mailsift.test"
    world.dns.add_a(helo, egress_ip)
    world.dns.add_ptr(egress_ip, helo)
    world.add_domain("mailsift.test")
    world.dns.add_txt("mailsift.test", f"v=spf1 ip4:{egress_ip} -all")
    for zone in DNSBL_TEST_ZONES:
        # RFC 5782 5: 127.0.0.2 is listed in every IPv4 DNSBL, 127.0.0.1 never is.
        list_on_dnsbl(world, "127.0.0.2", zone, reason="Test entry (RFC 5782 5)")
    return {
        "MAILSIFT_DNSBL_ZONES": ",".join(DNSBL_TEST_ZONES),
        "MAILSIFT_DOCTOR_MX_DOMAINS": ",".join(PROBE_DOMAINS),
    }
