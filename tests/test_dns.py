"""DNS layer through a real authoritative server on loopback (mailsift.testing.DnsServer).

Nothing is mocked: the resolver sends real UDP/TCP queries to the server, and the
assertions look at what the resolver answers and at which queries the server saw.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import dns.asyncquery
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from mailsift.dns import FAILURE_TTL, DnsResolver, MxResult
from mailsift.settings import Settings
from mailsift.testing.dns_server import DnsServer


@pytest.fixture
def server():
    with DnsServer() as dns_server:
        yield dns_server


def make_resolver(server: DnsServer, timeout: float = 1.0) -> DnsResolver:
    return DnsResolver(Settings(dns_nameservers=[server.nameserver], dns_timeout=timeout))


@pytest.fixture
def resolver(server):
    return make_resolver(server)


def seen(server: DnsServer, name: str, qtype: str = "MX") -> int:
    return server.queries.count((name, qtype))


# -- MX semantics -------------------------------------------------------------------------


async def test_mx_hosts_sorted_by_preference_lowercase_without_dot(server, resolver):
    server.add_mx(
        "acme.test",
        [
            (30, "MX3.Acme.Test."),
            (10, "mx1.acme.test"),
            (20, "mx2.acme.test"),
            (10, "mx1b.acme.test"),
        ],
    )
    result = await resolver.mx("acme.test")
    assert result == MxResult(
        "acme.test",
        "ok",
        ("mx1.acme.test", "mx1b.acme.test", "mx2.acme.test", "mx3.acme.test"),
        False,
    )


async def test_implicit_mx_from_a_record(server, resolver):
    server.add_a("a-only.test", "127.0.0.9")
    result = await resolver.mx("a-only.test")
    assert (result.outcome, result.hosts, result.implicit) == ("ok", ("a-only.test",), True)


async def test_implicit_mx_from_aaaa_record_only(server, resolver):
    server.add_aaaa("v6-only.test", "2001:db8::25")
    result = await resolver.mx("v6-only.test")
    assert (result.outcome, result.hosts, result.implicit) == ("ok", ("v6-only.test",), True)


async def test_null_mx_means_no_mail(server, resolver):
    server.add_null_mx("nomail.test")
    server.add_a("nomail.test", "127.0.0.9")  # an A record must not revive it (RFC 7505 3)
    result = await resolver.mx("nomail.test")
    assert (result.outcome, result.hosts, result.implicit) == ("null_mx", (), False)
    assert "7505" in (result.message or "")


async def test_null_mx_beside_real_mx_is_ignored(server, resolver):
    server.add_null_mx("mixed.test")
    server.add_mx("mixed.test", [(10, "mx.mixed.test")])
    assert (await resolver.mx("mixed.test")).hosts == ("mx.mixed.test",)


async def test_name_without_mx_or_address_receives_no_mail(server, resolver):
    server.add_name("bare.test")
    result = await resolver.mx("bare.test")
    assert (result.outcome, result.hosts) == ("no_mail", ())


async def test_name_with_only_txt_receives_no_mail(server, resolver):
    server.add_txt("spf-only.test", "v=spf1 -all")
    assert (await resolver.mx("spf-only.test")).outcome == "no_mail"


async def test_nxdomain(server, resolver):
    server.add_mx("exists.test", [(10, "mx.exists.test")])
    result = await resolver.mx("does-not-exist.test")
    assert (result.outcome, result.hosts) == ("nxdomain", ())


async def test_servfail_is_kept_apart(server, resolver):
    server.add_mx("broken.test", [(10, "mx.broken.test")])
    server.set_failure("broken.test", "servfail")
    result = await resolver.mx("broken.test")
    assert (result.outcome, result.hosts) == ("servfail", ())
    assert result.message


async def test_timeout_is_honoured(server):
    server.add_mx("slow.test", [(10, "mx.slow.test")])
    server.set_failure("slow.test", "timeout")
    resolver = make_resolver(server, timeout=0.5)
    started = time.monotonic()
    result = await resolver.mx("slow.test")
    assert time.monotonic() - started < 5  # generous bound: dns_timeout is 0.5 s
    assert result.outcome == "timeout"
    assert seen(server, "slow.test") >= 1


async def test_unreachable_nameserver_is_a_fault_not_an_answer():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    resolver = DnsResolver(Settings(dns_nameservers=[f"127.0.0.1:{closed_port}"], dns_timeout=0.5))
    result = await resolver.mx("acme.test")
    assert result.outcome in ("servfail", "timeout")


@pytest.mark.parametrize("garbage", ["", ".", "a..b.test", "x" * 64 + ".test", "bad\r\nname.test"])
async def test_impossible_names_give_a_result_not_an_exception(resolver, server, garbage):
    result = await resolver.mx(garbage)
    assert result.outcome == "nxdomain"
    assert result.hosts == ()
    assert server.queries == []  # nothing impossible is sent on the wire


# -- names --------------------------------------------------------------------------------


async def test_names_are_case_insensitive_and_share_a_cache_entry(server, resolver):
    server.add_mx("Case.Test", [(10, "MX.Case.Test")])
    first = await resolver.mx("CASE.test.")
    second = await resolver.mx("case.test")
    assert first == second == MxResult("case.test", "ok", ("mx.case.test",), False)
    assert seen(server, "case.test") == 1


async def test_idn_domain_as_a_label(server, resolver):
    server.add_mx("bücher.test", [(10, "mx.bücher.test")])  # the server IDNA-encodes
    result = await resolver.mx("xn--bcher-kva.test")
    assert result == MxResult("xn--bcher-kva.test", "ok", ("mx.xn--bcher-kva.test",), False)


# -- caching and coalescing ---------------------------------------------------------------


async def test_answers_are_cached_for_their_ttl(server, resolver):
    server.add_mx("cached.test", [(10, "mx.cached.test")], ttl=300)
    first = await resolver.mx("cached.test")
    second = await resolver.mx("cached.test")
    assert first == second
    assert seen(server, "cached.test") == 1


async def test_cache_expires_with_the_ttl(server, resolver):
    server.add_mx("short.test", [(10, "mx1.short.test")], ttl=1)
    assert (await resolver.mx("short.test")).hosts == ("mx1.short.test",)
    server.remove("short.test", "MX")
    server.add_mx("short.test", [(10, "mx2.short.test")], ttl=1)
    await asyncio.sleep(1.2)
    assert (await resolver.mx("short.test")).hosts == ("mx2.short.test",)
    assert seen(server, "short.test") == 2


async def test_negative_answers_are_cached(server, resolver):
    server.add_name("other.test")
    assert (await resolver.mx("ghost.test")).outcome == "nxdomain"
    assert (await resolver.mx("ghost.test")).outcome == "nxdomain"
    assert seen(server, "ghost.test") == 1


async def test_concurrent_lookups_of_one_domain_share_one_query(server, resolver):
    server.add_mx("busy.test", [(10, "mx.busy.test")])
    results = await asyncio.gather(*(resolver.mx("busy.test") for _ in range(10)))
    assert {r.hosts for r in results} == {("mx.busy.test",)}
    assert seen(server, "busy.test") == 1


async def test_concurrent_timeouts_share_one_lookup(server):
    server.set_failure("stuck.test", "timeout")
    resolver = make_resolver(server, timeout=0.3)
    results = await asyncio.gather(*(resolver.mx("stuck.test") for _ in range(5)))
    assert {r.outcome for r in results} == {"timeout"}
    # one lookup; dnspython may retry its one query within the lifetime
    assert seen(server, "stuck.test") <= 2


async def test_a_cancelled_caller_does_not_break_the_others(server, resolver):
    server.add_mx("shared.test", [(10, "mx.shared.test")])
    doomed = asyncio.ensure_future(resolver.mx("shared.test"))
    survivor = asyncio.ensure_future(resolver.mx("shared.test"))
    await asyncio.sleep(0)
    doomed.cancel()
    assert (await survivor).hosts == ("mx.shared.test",)


async def test_servfail_is_not_cached_long(server, resolver):
    assert FAILURE_TTL <= 5
    server.add_mx("flaky.test", [(10, "mx.flaky.test")])
    server.set_failure("flaky.test", "servfail")
    resolver.failure_ttl = 0.2  # the default is a few seconds; keep the test short
    assert (await resolver.mx("flaky.test")).outcome == "servfail"
    server.set_failure("flaky.test", None)
    await asyncio.sleep(0.3)
    assert (await resolver.mx("flaky.test")).hosts == ("mx.flaky.test",)


def test_one_resolver_serves_several_event_loops(server):
    """Prefect runs tasks in worker threads, each with its own loop."""
    server.add_mx("loops.test", [(10, "mx.loops.test")])
    server.add_a("mx.loops.test", "127.0.0.7")
    resolver = make_resolver(server)
    assert asyncio.run(resolver.mx("loops.test")).hosts == ("mx.loops.test",)
    results: list[object] = []

    def worker(name: str) -> None:
        async def both() -> tuple[MxResult, tuple[str, ...]]:
            return await resolver.mx(name), await resolver.host_addresses("mx.loops.test")

        results.append(asyncio.run(both()))

    threads = [threading.Thread(target=worker, args=(n,)) for n in ("loops.test", "none.test")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    outcomes = sorted((mx.outcome, addresses) for mx, addresses in results)  # type: ignore[misc]
    assert outcomes == [("nxdomain", ("127.0.0.7",)), ("ok", ("127.0.0.7",))]


# -- host addresses -----------------------------------------------------------------------


async def test_host_addresses_ipv4_then_ipv6(server, resolver):
    server.add_aaaa("mx.dual.test", "2001:db8::25")
    server.add_a("mx.dual.test", "127.0.0.25")
    assert await resolver.host_addresses("MX.dual.test.") == ("127.0.0.25", "2001:db8::25")


async def test_host_addresses_of_an_ip_literal_need_no_dns(server, resolver):
    assert await resolver.host_addresses("127.0.0.5") == ("127.0.0.5",)
    assert await resolver.host_addresses("[IPv6:::1]") == ("::1",)
    assert await resolver.host_addresses("[192.0.2.1]") == ("192.0.2.1",)
    assert server.queries == []


async def test_host_addresses_empty_on_failure(server):
    server.set_failure("mx.down.test", "timeout")
    server.set_failure("mx.sick.test", "servfail")
    resolver = make_resolver(server, timeout=0.5)
    started = time.monotonic()
    assert await resolver.host_addresses("mx.down.test") == ()
    assert time.monotonic() - started < 5
    assert await resolver.host_addresses("mx.sick.test") == ()
    assert await resolver.host_addresses("mx.nowhere.test") == ()
    assert await resolver.host_addresses("") == ()


async def test_host_addresses_are_cached(server, resolver):
    server.add_a("mx.once.test", "127.0.0.8")
    await asyncio.gather(*(resolver.host_addresses("mx.once.test") for _ in range(5)))
    assert await resolver.host_addresses("mx.once.test") == ("127.0.0.8",)
    assert seen(server, "mx.once.test", "A") == 1


# -- the server itself --------------------------------------------------------------------


async def test_server_answers_over_tcp(server):
    server.add_mx("tcp.test", [(10, "mx.tcp.test")])
    query = dns.message.make_query("tcp.test", "MX")
    response = await dns.asyncquery.tcp(query, "127.0.0.1", port=server.port, timeout=2)
    assert response.rcode() == dns.rcode.NOERROR
    assert [rd.to_text() for rd in response.answer[0]] == ["10 mx.tcp.test."]


async def test_large_mx_set_falls_back_to_tcp(server, resolver):
    exchanges = [(n, f"mx{n:02d}.a-rather-long-mail-exchanger-name.big.test") for n in range(40)]
    server.add_mx("big.test", exchanges)
    udp = dns.query.udp(
        dns.message.make_query("big.test", "MX"), "127.0.0.1", port=server.port, timeout=2
    )
    assert udp.flags & dns.flags.TC  # too big for 512 octets: truncated (RFC 1035 4.2.1)
    result = await resolver.mx("big.test")
    assert result.hosts == tuple(name for _, name in exchanges)


def test_server_nxdomain_versus_nodata(server):
    """RFC 2308: NODATA is NOERROR with an empty answer; NXDOMAIN only for names that
    do not exist -- including empty non-terminals (RFC 8020)."""
    server.add_mx("mail.sub.zone.test", [(10, "mx.zone.test")])

    def ask(name: str, rdtype: str) -> dns.message.Message:
        query = dns.message.make_query(name, rdtype)
        return dns.query.udp(query, "127.0.0.1", port=server.port, timeout=2)

    nodata = ask("mail.sub.zone.test", "A")
    assert (nodata.rcode(), nodata.answer) == (dns.rcode.NOERROR, [])
    assert nodata.authority and nodata.authority[0].rdtype == dns.rdatatype.SOA
    assert ask("sub.zone.test", "MX").rcode() == dns.rcode.NOERROR  # empty non-terminal
    assert ask("nothing.zone.test", "MX").rcode() == dns.rcode.NXDOMAIN
    assert ask("MAIL.SUB.ZONE.TEST", "MX").answer  # case-insensitive
    assert ("mail.sub.zone.test", "A") in server.queries


def test_records_added_while_running_are_served(server):
    resolver = make_resolver(server)
    assert asyncio.run(resolver.mx("late.test")).outcome == "nxdomain"
    adder = threading.Thread(target=server.add_mx, args=("late.test", [(10, "mx.late.test")]))
    adder.start()
    adder.join()
    resolver.clear_cache()
    assert asyncio.run(resolver.mx("late.test")).hosts == ("mx.late.test",)


def test_stop_leaves_no_thread_and_frees_the_port():
    before = set(threading.enumerate())
    server = DnsServer().start()
    port = server.port
    server.stop()
    server.stop()  # idempotent
    assert set(threading.enumerate()) <= before
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", port))  # the port is free again


def test_explicit_port_and_nameserver_string():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with DnsServer("127.0.0.1", port) as server:
        assert server.nameserver == f"127.0.0.1:{port}"
        assert Settings(dns_nameservers=[server.nameserver]).nameservers == [("127.0.0.1", port)]


def test_server_rejects_bad_records(server):
    with pytest.raises(ValueError):
        server.add_a("x.test", "::1")
    with pytest.raises(ValueError):
        server.add_aaaa("x.test", "127.0.0.1")
    with pytest.raises(ValueError):
        server.add_mx("x.test", [(70000, "mx.x.test")])
    with pytest.raises(ValueError):
        server.set_failure("x.test", "explode")  # type: ignore[arg-type]
