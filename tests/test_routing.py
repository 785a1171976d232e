"""No probing of internal networks (issue 9): MX/A records that point at loopback,
private, link-local or other non-public addresses are refused before any connection.

Every range is tested on the decision itself; the only connections tried are to the
loopback servers of mailsift.testing, and they must see none while the switch is off.
"""

from __future__ import annotations

import pytest

from mailsift import Verifier
from mailsift.routing import is_ip_text, unroutable_reason, url_unroutable_reason
from mailsift.testing.world import World

REFUSED = {
    "127.0.0.1": "loopback",
    "127.255.0.9": "loopback",
    "::1": "loopback",
    "0.0.0.0": "unspecified",
    "::": "unspecified",
    "169.254.169.254": "link-local",  # cloud instance metadata
    "fe80::1": "link-local",
    "10.0.0.5": "private",
    "172.16.3.4": "private",
    "172.31.255.255": "private",
    "192.168.1.1": "private",
    "fd00::25": "private",
    "fc00::1": "private",
    "100.64.0.1": "shared address space (CGNAT)",
    "100.127.255.254": "shared address space (CGNAT)",
    "192.0.2.10": "documentation",
    "198.51.100.7": "documentation",
    "203.0.113.99": "documentation",
    "2001:db8::25": "documentation",
    "198.18.0.1": "benchmarking",
    "224.0.0.251": "multicast",
    "ff02::1": "multicast",
    "240.0.0.1": "reserved",
    "255.255.255.255": "broadcast",
    "::ffff:127.0.0.1": "loopback (embedded in ::ffff:7f00:1)",
    "::ffff:169.254.169.254": "link-local (embedded in ::ffff:a9fe:a9fe)",
    "64:ff9b::a00:5": "private (embedded in 64:ff9b::a00:5)",  # NAT64 of 10.0.0.5
    "2002:c0a8:101::1": "private (embedded in 2002:c0a8:101::1)",  # 6to4 of 192.168.1.1
    "not-an-ip": "not an IP address",
}
PUBLIC = ["8.8.8.8", "1.1.1.1", "142.250.27.26", "2a00:1450:4013:c00::1a", "::ffff:8.8.8.8"]


@pytest.mark.parametrize(("ip", "why"), sorted(REFUSED.items()))
def test_every_non_public_range_is_refused(ip: str, why: str) -> None:
    assert unroutable_reason(ip) == why


@pytest.mark.parametrize("ip", PUBLIC)
def test_public_unicast_is_allowed(ip: str) -> None:
    assert unroutable_reason(ip) is None


@pytest.mark.parametrize(
    ("host", "expected"),
    [("10.0.0.5", True), ("[10.0.0.5]", True), ("[IPv6:::1]", True), ("::1", True),
     ("mx.example.com", False), ("10.0.0.5.example.com", False), ("", False)],
)
def test_ip_text_is_told_from_host_names(host: str, expected: bool) -> None:
    assert is_ip_text(host) is expected


async def test_with_the_switch_off_nothing_is_connected_to(world: World) -> None:
    servers = world.add_domain("inside.test", "accept", mailboxes=["jane@inside.test"])
    async with Verifier(world.settings(allow_private_networks=False)) as v:
        result = await v.verify("jane@inside.test")
    assert (result.status, result.reason) == ("invalid", "mx_unroutable")
    assert result.checks.smtp_reachable is False
    assert "loopback" in (result.smtp_message or "")
    assert servers[0].connections == 0 and world.transcript == []
    # the switch on (what the simulated worlds do): the same server is probed
    async with Verifier(world.settings(allow_private_networks=True)) as v:
        result = await v.verify("jane@inside.test")
    assert (result.status, result.reason) == ("valid", "accepted")
    assert servers[0].connections == 1


async def test_an_mx_written_as_ip_text_is_resolved_no_further(world: World) -> None:
    # The exchange "127.0.0.9" is a DNS name here (four labels) with an A record; an MX
    # must name a host, so with the switch off it is refused without a lookup.
    world.add_domain("literal.test", "accept", mx_names=["127.0.0.9"])
    world.dns.queries.clear()
    async with Verifier(world.settings(allow_private_networks=False)) as v:
        result = await v.verify("jane@literal.test")
    assert (result.status, result.reason) == ("invalid", "mx_unroutable")
    assert "is an IP address" in (result.smtp_message or "")
    assert ("127.0.0.9", "A") not in world.dns.queries
    assert world.transcript == []


def test_the_settings_switch_reads_the_environment(monkeypatch) -> None:
    from mailsift.settings import Settings

    assert Settings().allow_private_networks is False
    monkeypatch.setenv("MAILSIFT_ALLOW_PRIVATE_NETWORKS", "true")
    assert Settings().allow_private_networks is True


@pytest.mark.parametrize(
    ("url", "why"),
    [("http://169.254.169.254/latest/meta-data", "link-local"),
     ("http://10.0.0.5/hook", "private"),
     ("https://[fd00::25]:8443/x", "private"),
     ("http://[::ffff:127.0.0.1]/x", "loopback (embedded in ::ffff:7f00:1)"),
     ("http://198.51.100.7/x", "documentation"),
     ("ftp://", "no host")],
)
async def test_webhook_urls_with_ip_hosts_are_decided_without_a_lookup(url: str, why: str) -> None:
    # decided from the URL alone: nothing is resolved or dialled
    assert await url_unroutable_reason(url) == why


async def test_a_public_ip_webhook_url_is_allowed() -> None:
    assert await url_unroutable_reason("https://8.8.8.8/hook") is None
