"""The simulated internet's broken networks: lying resolvers, reverse DNS, EHLO echoes
of the client's address and port-25 middleboxes -- the settings ``mailsift doctor`` and
the verifier must recognise. Real sockets on loopback only."""

from __future__ import annotations

import asyncio
import socket
import threading

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.reversename
import pytest

from mailsift.dns import DnsResolver
from mailsift.settings import Settings
from mailsift.testing import BEHAVIOURS, DnsServer, Middlebox
from mailsift.testing.smtp_server import EHLO_ECHO_GREETINGS, Behaviour


@pytest.fixture
def server():
    with DnsServer() as s:
        yield s


def ask(server: DnsServer, name: str, rdtype: str) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype)
    return dns.query.udp(query, "127.0.0.1", port=server.port, timeout=2)


def test_root_and_tld_are_empty_non_terminals(server):
    """As on the real internet: the root and com/net/org always exist; a TLD above a held
    name exists with no data (RFC 8020); a name under it that nobody added does not."""
    server.add_mx("acme.test", [(10, "mx.acme.test")])
    root = ask(server, ".", "NS")
    assert (root.rcode(), root.answer) == (dns.rcode.NOERROR, [])
    assert root.authority and root.authority[0].rdtype == dns.rdatatype.SOA
    assert ask(server, "test", "SOA").rcode() == dns.rcode.NOERROR
    assert ask(server, "no-such-name.test", "A").rcode() == dns.rcode.NXDOMAIN
    assert ask(server, "com", "NS").rcode() == dns.rcode.NOERROR  # a real TLD, always there
    assert ask(server, "no-such-tld", "NS").rcode() == dns.rcode.NXDOMAIN


@pytest.mark.parametrize(
    ("mode", "rcode"), [("nxdomain", dns.rcode.NXDOMAIN), ("servfail", dns.rcode.SERVFAIL)]
)
def test_global_failure_answers_every_name_the_same(server, mode, rcode):
    server.add_mx("acme.test", [(10, "mx.acme.test")])
    server.add_a("mx.acme.test", "127.0.0.5")
    server.set_global_failure(mode)
    for name, rdtype in ((".", "NS"), ("test", "SOA"), ("acme.test", "MX"), ("x.test", "A")):
        assert ask(server, name, rdtype).rcode() == rcode, (name, rdtype)
    server.set_global_failure(None)
    assert ask(server, "acme.test", "MX").answer


def test_global_failure_reaches_the_engine_as_its_outcomes(server):
    server.add_mx("acme.test", [(10, "mx.acme.test")])
    results = {}
    for mode in ("nxdomain", "servfail", "timeout"):
        server.set_global_failure(mode)
        resolver = DnsResolver(Settings(dns_nameservers=[server.nameserver], dns_timeout=0.5))
        results[mode] = asyncio.run(resolver.mx("acme.test"))
    # A resolver that NXDOMAINs everything fails the engine's health check: not trusted.
    assert results["nxdomain"].outcome == "servfail"
    assert "not trusted" in (results["nxdomain"].message or "")
    assert {m: r.outcome for m, r in results.items() if m != "nxdomain"} == {
        "servfail": "servfail", "timeout": "timeout"}


def test_wildcard_mode_rewrites_only_names_that_do_not_exist(server):
    """NXDOMAIN rewriting (SAC 032): what exists answers truly, the rest gets an address."""
    server.add_a("real.acme.test", "127.0.0.9")
    server.set_global_failure("wildcard", wildcard_ip="127.0.0.77")
    made_up = ask(server, "zz-made-up-7f3a.test", "A")
    assert made_up.rcode() == dns.rcode.NOERROR
    assert [rd.address for rd in made_up.answer[0]] == ["127.0.0.77"]
    assert [rd.address for rd in ask(server, "real.acme.test", "A").answer[0]] == ["127.0.0.9"]
    assert ask(server, "zz-made-up-7f3a.test", "MX").answer == []  # NODATA, not NXDOMAIN
    with pytest.raises(ValueError):
        server.set_global_failure("lie")  # type: ignore[arg-type]


def test_ptr_records_for_ipv4_and_ipv6(server):
    server.add_ptr("127.0.0.1", "Probe.Mailsift.Test")
    server.add_ptr("::1", "six.mailsift.test")
    v4 = ask(server, dns.reversename.from_address("127.0.0.1").to_text(), "PTR")
    assert [rd.target.to_text() for rd in v4.answer[0]] == ["probe.mailsift.test."]
    v6 = ask(server, dns.reversename.from_address("::1").to_text(), "PTR")
    assert [rd.target.to_text() for rd in v6.answer[0]] == ["six.mailsift.test."]
    missing = ask(server, dns.reversename.from_address("127.0.0.2").to_text(), "PTR")
    assert missing.rcode() == dns.rcode.NXDOMAIN


def _ehlo(host: str, port: int) -> str:
    with socket.create_connection((host, port), timeout=2) as sock:
        reader = sock.makefile("rb")
        reader.readline()  # banner
        sock.sendall(b"EHLO client.mailsift.test\r\n")
        first = reader.readline().decode()
        while reader.readline()[3:4] == b"-":
            pass
        sock.sendall(b"QUIT\r\n")
        return first


@pytest.mark.parametrize("style", sorted(EHLO_ECHO_GREETINGS))
def test_ehlo_greeting_echoes_the_client_address_like_real_mtas(world, style):
    (server,) = world.add_domain("echo.test", Behaviour(ehlo_greeting=EHLO_ECHO_GREETINGS[style]))
    first = _ehlo(server.host, world.smtp.port)
    if style == "postfix":
        assert "[" not in first
    else:
        assert "[127.0.0.1]" in first
    if style in ("exim", "sendmail"):
        assert "client.mailsift.test" in first


def test_default_ehlo_greeting_is_unchanged(world):
    (server,) = world.add_domain("plain.test", BEHAVIOURS["accept"])
    assert _ehlo(server.host, world.smtp.port) == "250-mx.mailsift.test greets client.mailsift.test\r\n"


def test_middlebox_modes_as_a_client_sees_them():
    with Middlebox(["127.0.0.1"], mode="close") as box:
        with socket.create_connection(("127.0.0.1", box.port), timeout=2) as sock:
            assert sock.recv(100) == b""  # end of file where the banner should be
    with Middlebox(["127.0.0.1"], mode="reset") as box:
        # the reset reaches the client at its first read, or (a loaded machine: the box
        # accepted and aborted before connect() returned) at the connect itself
        with pytest.raises(ConnectionResetError):
            with socket.create_connection(("127.0.0.1", box.port), timeout=2) as sock:
                sock.recv(100)
    with Middlebox(["127.0.0.1"], mode="silent") as box:
        with socket.create_connection(("127.0.0.1", box.port), timeout=0.3) as sock:
            with pytest.raises(TimeoutError):
                sock.recv(100)
        assert box.connections == 1
    with pytest.raises(ValueError):
        Middlebox(["192.0.2.1"])


def test_middlebox_stop_leaves_no_thread():
    before = set(threading.enumerate())
    box = Middlebox(["127.0.0.1"], mode="silent").start()
    socket.create_connection(("127.0.0.1", box.port), timeout=2).close()
    box.stop()
    box.stop()
    assert set(threading.enumerate()) <= before


def test_a_domain_behind_a_middlebox_is_unknown_never_invalid(world):
    """What a blocked network looks like to the verifier: its fault, not the mailbox's."""
    from mailsift.verifier import Verifier

    world.add_middlebox("boxed.test")
    verifier = Verifier(world.settings())

    async def check():
        try:
            return await verifier.verify("someone@boxed.test")
        finally:
            await verifier.aclose()

    result = asyncio.run(check())
    assert result.status == "unknown"
    assert world.middleboxes[0].connections >= 1
