"""The egress IP on DNS blocklists (RFC 5782): reversed octets (nibbles for IPv6) under
the zone, an A answer in 127.0.0.0/8 means listed, NXDOMAIN means not listed. Spamhaus's
127.255.255.0/24 answers are errors about the query, never a listing."""

from __future__ import annotations

import ipaddress
from typing import Any

import dns.reversename

from mailsift.doctor.lookups import Lookups, clean, is_ipv4
from mailsift.doctor.report import Check

__all__ = ["check_dnsbl"]


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


_SPAMHAUS_ERRORS = {
    # https://www.spamhaus.org/news/article/788/ (DNSBL return codes: technical update)
    "127.255.255.252": "typing error in the DNSBL name",
    "127.255.255.254": "query via a public/open resolver",
    "127.255.255.255": "excessive number of queries",
}



def _dnsbl_query(ip: str, zone: str) -> str:
    """RFC 5782 2.1 (IPv4: reversed octets) and 2.4 (IPv6: reversed nibbles)."""
    reverse = dns.reversename.from_address(ip)
    return reverse.relativize(dns.reversename.ipv4_reverse_domain if ":" not in ip
                              else dns.reversename.ipv6_reverse_domain).to_text() + f".{zone}."


async def check_dnsbl(dnsq: Lookups, ip: str, zone: str) -> Check:
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
    codes = [ipaddress.ip_address(a) for a in answer.records if is_ipv4(a)]
    errors = [str(c) for c in codes if c in ipaddress.ip_network("127.255.255.0/24")]
    listed = [str(c) for c in codes if c in ipaddress.ip_network("127.0.0.0/8") and str(c) not in errors]
    strange = [a for a in answer.records if a not in errors and a not in listed]
    if listed:
        if zone.startswith("zen.spamhaus."):
            listed = [f"{c} {_ZEN_CODES[c]}" if c in _ZEN_CODES else c for c in listed]
        text = await dnsq.ask(query, "TXT")
        reason = f": \"{clean(text.records[0], 120)}\"" if text.records else ""
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
