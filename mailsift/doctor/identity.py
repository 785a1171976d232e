"""Who this host says it is: reverse DNS of the egress IP (forward-confirmed), the HELO
name against it, and the MAIL FROM domain's MX (RFC 5321 5.1) and SPF (RFC 7208)."""

from __future__ import annotations

import asyncio

import dns.reversename

from mailsift.doctor.lookups import Lookups, clean
from mailsift.doctor.report import Check
from mailsift.settings import Settings

__all__ = ["check_mail_from", "check_rdns_and_helo", "placeholder_helo", "placeholder_mail_from"]


async def check_rdns_and_helo(dnsq: Lookups, settings: Settings, ip: str) -> list[Check]:
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
    if _is_placeholder(helo):
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


def _spf_mechanism(ip: str | None) -> str:
    if ip is None:
        return "ip4:<egress IP>"
    return f"ip6:{ip}" if ":" in ip else f"ip4:{ip}"


_MAIL_FROM_FIX = ("set MAILSIFT_MAIL_FROM to an address at a domain you own that has MX "
                  "and SPF records")


def _is_placeholder(name: str) -> bool:
    """``localhost``, ``*.localhost`` (RFC 6761 6.3) or a bare label: no public name."""
    return name == "localhost" or name.endswith(".localhost") or "." not in name


def placeholder_helo(settings: Settings) -> Check | None:
    """The HELO-name check that needs no DNS: FAIL for a placeholder, else ``None``."""
    helo = settings.helo_hostname.rstrip(".").lower()
    if not _is_placeholder(helo):
        return None
    return Check("helo", None, "FAIL",
                 f"{helo} is a placeholder, not a public name: receivers refuse or distrust it",
                 "set MAILSIFT_HELO_HOSTNAME to this host's public name (the PTR name of its IP)",
                 {"helo_hostname": helo})


def placeholder_mail_from(settings: Settings) -> Check | None:
    """The MAIL FROM check that needs no DNS: FAIL for a non-address or the placeholder
    default, else ``None``."""
    address = settings.mail_from
    local, at, domain = address.rpartition("@")
    domain = domain.rstrip(".").lower()
    if not at or not local or not domain:
        return Check("mail_from_mx", None, "FAIL", f"{address!r} is not an address",
                     _MAIL_FROM_FIX)
    if _is_placeholder(domain):
        return Check("mail_from_mx", domain, "FAIL",
                     f"{address} is a placeholder: receivers refuse a sender domain that does "
                     "not exist", _MAIL_FROM_FIX)
    return None


async def check_mail_from(dnsq: Lookups, settings: Settings, ip: str | None) -> list[Check]:
    placeholder = placeholder_mail_from(settings)
    if placeholder is not None:
        return [placeholder]
    domain = settings.mail_from.rpartition("@")[2].rstrip(".").lower()
    fix = _MAIL_FROM_FIX
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
        spf_check = Check("mail_from_spf", domain, "PASS", f"\"{clean(spf[0], 100)}\"", None,
                          spf_details)
    return [mx_check, spf_check]
