"""Which IP addresses the prober may connect to: public unicast only.

Anyone can publish an MX or A record pointing at ``127.0.0.1``, ``10.0.0.5`` or the cloud
metadata service ``169.254.169.254``. A verifier that follows it probes its own host's
or network's internal services on the list owner's behalf (server-side request forgery)
and stores their replies. So, before any SMTP connection, the target is checked here:
loopback, unspecified, private (RFC 1918, RFC 4193 fc00::/7), link-local (RFC 3927,
RFC 4291), shared address space (CGNAT, RFC 6598), documentation (RFC 5737, RFC 3849),
benchmarking (RFC 2544), multicast, reserved and other non-global ranges (the IANA
special-purpose registries, RFC 6890) are refused, and so are IPv4-mapped, NAT64
(RFC 6052) and 6to4 (RFC 3056) forms of them. A domain whose mail can go only there has
mail that goes nowhere public: ``invalid``/``mx_unroutable``.

``MAILSIFT_ALLOW_PRIVATE_NETWORKS=true`` turns the rule off (an intranet deployment
verifying its own domains); :mod:`mailsift.testing`'s worlds turn it on themselves,
since their servers live on loopback.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

__all__ = ["is_ip_text", "unroutable_reason", "url_unroutable_reason"]

_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_BENCHMARK = ipaddress.ip_network("198.18.0.0/15")
_DOCUMENTATION = tuple(
    ipaddress.ip_network(n)
    for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def is_ip_text(host: str) -> bool:
    """``host`` is an address written as text (``10.0.0.1``, ``[::1]``,
    ``[IPv6:::1]``), not a host name. An MX record must name a host (RFC 5321 5.1)."""
    text = host.strip().rstrip(".")
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if text[:5].lower() == "ipv6:":
        text = text[5:]
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def unroutable_reason(ip: str) -> str | None:
    """Why ``ip`` is no public unicast address (``"loopback"``, ``"private"``...), or
    ``None`` when the prober may connect to it. Text that is no IP address is refused."""
    try:
        address = ipaddress.ip_address(ip.strip().strip("[]").split("%", 1)[0])
    except ValueError:
        return "not an IP address"
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            inner = unroutable_reason(str(embedded))
            return None if inner is None else f"{inner} (embedded in {address})"
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if address in _CGNAT:
        return "shared address space (CGNAT)"
    if any(address in net for net in _DOCUMENTATION if net.version == address.version):
        return "documentation"
    if address in _BENCHMARK:
        return "benchmarking"
    if str(address) == "255.255.255.255":
        return "broadcast"
    if address.is_reserved:
        return "reserved"
    if address.is_private:
        return "private"
    if not address.is_global:
        return "not globally routable"
    return None


async def url_unroutable_reason(url: str) -> str | None:
    """Why an http(s) URL must not be called on an untrusted client's behalf (its host
    is, or resolves to, a non-public address; or it does not resolve), else ``None``.

    For webhook URLs that arrive through ``mailsift serve``'s API: an API client is not
    the operator, and must not make the service POST into the operator's network. URLs
    the operator gives (command line, flow parameters) are the operator's choice."""
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        return "not a valid URL"
    if not host:
        return "no host"
    if is_ip_text(host):
        return unroutable_reason(host)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError as exc:
        return f"{host} does not resolve ({exc.strerror or exc})"
    for info in infos:
        reason = unroutable_reason(str(info[4][0]))
        if reason is not None:
            return f"{host} resolves to {info[4][0]}: {reason}"
    return None
