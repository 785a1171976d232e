"""The SMTP probe against real SMTP servers on loopback (mailsift.testing.SmtpFarm).

Nothing is mocked: the prober opens real TCP connections to servers that answer,
stall, block, greylist or misbehave, and the assertions look at the outcomes and at the
servers' own transcripts. Every test checks on teardown that DATA never reached a server.
"""

from __future__ import annotations

import asyncio
import re
import time
import tracemalloc
from collections.abc import Iterator

import pytest
from aiosmtplib import SMTPResponse, SMTPResponseException, SMTPServerDisconnected
from smtp_fixtures import INJECTED, Net

from mailsift.dns import DnsResolver
from mailsift.settings import Settings
from mailsift.smtp import DomainProbe, RcptOutcome, SmtpProber, classify_reply
from mailsift.smtp.wire import ReplyReader
from mailsift.testing.dns_server import DnsServer
from mailsift.testing.smtp_server import BEHAVIOURS, SmtpFarm

RANDOM_PROBE = re.compile(r"^RCPT TO:<mailsift-probe-[0-9a-f]{12}@[^>]+>$")


@pytest.fixture(scope="module")
def farm() -> Iterator[SmtpFarm]:
    with SmtpFarm() as smtp_farm:
        yield smtp_farm


@pytest.fixture
def net(farm: SmtpFarm) -> Iterator[Net]:
    helper = Net(farm)
    yield helper
    helper.check_never_data()


def kinds(probe: DomainProbe) -> list[str]:
    return [o.kind for o in probe.outcomes]


def rcpts(lines: list[str]) -> list[str]:
    return [line for line in lines if line.upper().startswith("RCPT")]


# -- verdicts from replies ----------------------------------------------------------------


async def test_existing_and_unknown_mailboxes(net: Net):
    server = net.server("accept", mailboxes={"Jane@acme.test"})
    prober = net.prober()
    probe = await prober.probe("acme.test", [server.host], ["jane@acme.test", "bob@acme.test"])

    jane, bob = probe.outcomes
    assert jane == RcptOutcome("jane@acme.test", "accepted", 250, "2.1.5 Ok", server.host)
    assert (bob.kind, bob.code, bob.mx_host) == ("not_found", 550, server.host)
    assert bob.message is not None and "5.1.1" in bob.message
    assert probe.catch_all is False
    assert probe.connections == 1 and prober.connections_opened == 1
    lines = server.transcript
    assert lines[0] == "EHLO probe.mailsift.test"
    assert "MAIL FROM:<verify@mailsift.test>" in lines
    assert lines[-1] == "QUIT"
    assert [line for line in rcpts(lines) if not RANDOM_PROBE.match(line)] == [
        "RCPT TO:<jane@acme.test>",
        "RCPT TO:<bob@acme.test>",
    ]


async def test_catch_all_detected_once_per_domain(net: Net):
    server = net.server("catch_all")
    prober = net.prober()

    first = await prober.probe("wild.test", [server.host], ["anyone@wild.test"])
    assert first.catch_all is True
    assert kinds(first) == ["accepted"]
    random_rcpts = [line for line in rcpts(server.transcript) if RANDOM_PROBE.match(line)]
    assert len(random_rcpts) == 1
    # the random RCPT goes first on the first connection
    assert RANDOM_PROBE.match(rcpts(server.transcript)[0])

    second = await prober.probe("wild.test", [server.host], ["other@wild.test"])
    assert second.catch_all is True
    assert len([line for line in rcpts(server.transcript) if RANDOM_PROBE.match(line)]) == 1


async def test_catch_all_check_can_be_switched_off(net: Net):
    server = net.server("catch_all")
    probe = await net.prober(catch_all_check=False).probe(
        "wild.test", [server.host], ["a@wild.test"]
    )
    assert probe.catch_all is None
    assert not any(RANDOM_PROBE.match(line) for line in server.transcript)


async def test_undetermined_catch_all_is_not_cached(net: Net):
    server = net.server("greylist")
    prober = net.prober()
    for _ in range(2):
        probe = await prober.probe("grey.test", [server.host], ["a@grey.test"])
        assert probe.catch_all is None
    assert len([line for line in server.transcript if RANDOM_PROBE.match(line)]) == 2


async def test_role_address_is_just_accepted_at_smtp_level(net: Net):
    server = net.server("accept", mailboxes={"info@acme.test"})
    probe = await net.prober().probe("acme.test", [server.host], ["info@acme.test"])
    assert kinds(probe) == ["accepted"]


@pytest.mark.parametrize(
    ("preset", "kind", "code"),
    [
        ("full", "full", 552),
        ("disabled", "disabled", 550),
        ("greylist", "temporary", 450),
        ("reject_all", "not_found", 550),
    ],
)
async def test_rcpt_reply_presets(net: Net, preset: str, kind: str, code: int):
    server = net.server(preset)
    probe = await net.prober().probe("acme.test", [server.host], ["jane@acme.test"])
    assert [(o.kind, o.code) for o in probe.outcomes] == [(kind, code)]


async def test_per_address_replies(net: Net):
    server = net.server(
        "accept",
        mailboxes={"ok@acme.test"},
        rcpt_replies={
            "FULL@acme.test": (452, "4.2.2 Mailbox full"),
            "gone@acme.test": (550, "5.2.1 This account has been disabled"),
        },
    )
    probe = await net.prober().probe(
        "acme.test", [server.host], ["ok@acme.test", "full@acme.test", "gone@acme.test"]
    )
    assert kinds(probe) == ["accepted", "full", "disabled"]


async def test_server_text_is_sanitized_and_truncated(net: Net):
    noisy = "5.1.1 no such user \x07\x1b[31m" + "x" * 2000
    server = net.server("accept", rcpt_replies={"a@acme.test": (550, noisy)})
    (outcome,) = (await net.prober().probe("acme.test", [server.host], ["a@acme.test"])).outcomes
    assert outcome.kind == "not_found"
    assert outcome.message is not None and len(outcome.message) <= 500
    assert not any(ord(ch) < 32 or ord(ch) == 127 for ch in outcome.message)


# -- being turned away ----------------------------------------------------------------------


async def test_banner_421_is_blocked(net: Net):
    server = net.server("banner_421")
    probe = await net.prober().probe("acme.test", [server.host], ["a@acme.test", "b@acme.test"])
    assert [(o.kind, o.code) for o in probe.outcomes] == [("blocked", 421)] * 2
    assert server.transcript == []  # we never spoke after the 421


async def test_banner_421_falls_back_to_the_next_mx(net: Net):
    primary = net.server("banner_421")
    secondary = net.server("accept", mailboxes={"a@acme.test"})
    probe = await net.prober().probe("acme.test", [primary.host, secondary.host], ["a@acme.test"])
    (outcome,) = probe.outcomes
    assert (outcome.kind, outcome.mx_host) == ("accepted", secondary.host)
    assert probe.connections == 2


async def test_banner_554_is_blocked(net: Net):
    server = net.server("banner_554")
    (outcome,) = (await net.prober().probe("acme.test", [server.host], ["a@acme.test"])).outcomes
    assert (outcome.kind, outcome.code) == ("blocked", 554)
    assert outcome.message is not None and "spamhaus" in outcome.message


async def test_block_at_mail_from_blocks_every_address_and_quits(net: Net):
    server = net.server("block_mail_from", mailboxes={"a@acme.test"})
    probe = await net.prober().probe("acme.test", [server.host], ["a@acme.test", "b@acme.test"])
    assert [(o.kind, o.code) for o in probe.outcomes] == [("blocked", 550)] * 2
    assert all("Spamhaus" in (o.message or "") for o in probe.outcomes)
    assert rcpts(server.transcript) == []
    assert server.transcript[-1] == "QUIT"
    assert probe.catch_all is None


async def test_temporary_failure_at_mail_from_backs_off(net: Net):
    server = net.server("accept", mail_from_reply=(451, "4.3.2 Try again later"))
    probe = await net.prober().probe(
        "acme.test", [server.host], [f"u{i}@acme.test" for i in range(12)]
    )
    assert set(kinds(probe)) == {"temporary"}
    assert probe.connections == 1  # no reconnect to hammer the server
    assert rcpts(server.transcript) == []
    assert server.commands("MAIL") == ["MAIL FROM:<verify@mailsift.test>"]
    assert server.transcript[-1] == "QUIT"


@pytest.mark.parametrize("pipelining", [False, True])
async def test_421_mid_session_stops_that_connection(net: Net, pipelining: bool):
    server = net.server(
        "catch_all",
        rcpt_replies={"u0@acme.test": (421, "4.7.0 Too many messages, closing")},
        pipelining=pipelining,
    )
    emails = [f"u{i}@acme.test" for i in range(4)]
    probe = await net.prober(catch_all_check=False).probe("acme.test", [server.host], emails)
    assert probe.outcomes[0].kind == "temporary" and probe.outcomes[0].code == 421
    assert set(kinds(probe)[1:]) == {"temporary"}
    if pipelining:  # the group was on the wire before the 421 came back
        assert rcpts(server.transcript) == [f"RCPT TO:<{e}>" for e in emails]
    else:
        assert rcpts(server.transcript) == ["RCPT TO:<u0@acme.test>"]  # nothing after the 421
    if pipelining:  # QUIT went with the group (RFC 2920 3.1), before the 421 came back
        assert server.commands("QUIT") == ["QUIT"] and server.transcript[-1] == "QUIT"
    else:
        assert server.transcript[-1].startswith("RCPT")  # no QUIT to a server that is closing
    assert probe.connections == 1


# -- slow, broken and missing servers --------------------------------------------------


async def test_tarpit_costs_its_domain_the_timeout_and_stalls_nothing_else(net: Net):
    tarpit = net.server("tarpit", banner_delay=5.0)
    fine = net.server("accept", mailboxes={"a@fine.test"})
    prober = net.prober(smtp_timeout=0.5)
    finished: list[str] = []

    async def probe(domain: str, host: str) -> DomainProbe:
        result = await prober.probe(domain, [host], [f"a@{domain}"])
        finished.append(domain)
        return result

    started = time.monotonic()
    slow, quick = await asyncio.gather(
        probe("slow.test", tarpit.host), probe("fine.test", fine.host)
    )
    elapsed = time.monotonic() - started

    assert kinds(slow) == ["timeout"]
    assert kinds(quick) == ["accepted"]
    assert finished == ["fine.test", "slow.test"]
    assert elapsed < 2.5  # generous bound: the timeout (0.5 s) was honoured, not the 5 s banner
    assert tarpit.connections == 1  # one connection, not one per address or per worker


async def test_timeout_then_fallback_to_next_mx(net: Net):
    tarpit = net.server("tarpit", banner_delay=5.0)
    good = net.server("accept", mailboxes={"a@acme.test"})
    started = time.monotonic()
    probe = await net.prober(smtp_timeout=0.4).probe(
        "acme.test", [tarpit.host, good.host], ["a@acme.test"]
    )
    assert time.monotonic() - started < 2.5
    assert [(o.kind, o.mx_host) for o in probe.outcomes] == [("accepted", good.host)]


@pytest.mark.parametrize(
    "preset", ["drop", "drop_at_rcpt", "garbage", "endless_line", "close_mid_reply"]
)
async def test_misbehaving_server_is_an_error_not_a_hang(net: Net, preset: str):
    server = net.server(preset, mailboxes={"a@acme.test"})
    started = time.monotonic()
    probe = await net.prober(smtp_timeout=1.0).probe(
        "acme.test", [server.host], ["a@acme.test", "b@acme.test"]
    )
    assert time.monotonic() - started < 5
    assert kinds(probe) == ["error", "error"]
    assert all(o.code is None and o.message for o in probe.outcomes)


async def test_endless_line_does_not_blow_up_memory(net: Net):
    server = net.server("endless_line")
    prober = net.prober()
    tracemalloc.start()
    try:
        probe = await prober.probe("acme.test", [server.host], ["a@acme.test"])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert kinds(probe) == ["error"]
    assert "too long" in (probe.outcomes[0].message or "").lower()
    assert peak < 4 * 1024 * 1024  # the server offered 8 MB without a line ending


async def test_misbehaving_primary_falls_back_to_secondary(net: Net):
    broken = net.server("garbage")
    good = net.server("accept", mailboxes={"a@acme.test"})
    probe = await net.prober().probe(
        "acme.test", [broken.host, good.host], ["a@acme.test", "b@acme.test"]
    )
    assert kinds(probe) == ["accepted", "not_found"]
    assert {o.mx_host for o in probe.outcomes} == {good.host}


async def test_refused_primary_uses_secondary(net: Net):
    dead = net.dead_ip()
    good = net.server("accept", mailboxes={"a@acme.test"})
    probe = await net.prober().probe("acme.test", [dead, good.host], ["a@acme.test", "b@acme.test"])
    assert kinds(probe) == ["accepted", "not_found"]
    assert probe.connections == 1  # a refused connection was never opened
    assert good.connections == 1


async def test_all_hosts_refused_is_unreachable(net: Net):
    probe = await net.prober().probe("acme.test", [net.dead_ip(), net.dead_ip()], ["a@acme.test"])
    assert kinds(probe) == ["unreachable"]
    assert probe.connections == 0
    assert probe.catch_all is None


async def test_no_mx_hosts_is_unreachable(net: Net):
    probe = await net.prober().probe("acme.test", [], ["a@acme.test"])
    assert kinds(probe) == ["unreachable"]


async def test_mx_names_resolved_through_dns(net: Net):
    good = net.server("accept", mailboxes={"a@acme.test"})
    dead = net.dead_ip()
    with DnsServer() as dns:
        dns.add_a("mx1.acme.test", dead)
        dns.add_a("mx2.acme.test", good.host)
        settings = net.settings(dns_nameservers=[dns.nameserver])
        prober = SmtpProber(settings, DnsResolver(settings))
        probe = await prober.probe(
            "acme.test", ["mx1.acme.test", "nowhere.acme.test", "mx2.acme.test"], ["a@acme.test"]
        )
    (outcome,) = probe.outcomes
    assert (outcome.kind, outcome.mx_host) == ("accepted", "mx2.acme.test")


# -- STARTTLS --------------------------------------------------------------------------


async def test_starttls_with_self_signed_certificate(net: Net):
    server = net.server("starttls", mailboxes={"a@acme.test"})
    probe = await net.prober().probe("acme.test", [server.host], ["a@acme.test", "b@acme.test"])
    assert kinds(probe) == ["accepted", "not_found"]
    assert server.tls_sessions == 1
    lines = server.transcript
    # after the handshake the conversation starts again, encrypted (RFC 3207 4.2)
    assert lines[:3] == ["EHLO probe.mailsift.test", "STARTTLS", "EHLO probe.mailsift.test"]
    assert "RCPT TO:<a@acme.test>" in lines[3:]


async def test_helo_when_ehlo_is_not_understood(net: Net):
    server = net.server("accept", mailboxes={"a@acme.test"}, ehlo=False)
    probe = await net.prober().probe("acme.test", [server.host], ["a@acme.test", "b@acme.test"])
    assert kinds(probe) == ["accepted", "not_found"]
    assert server.transcript[:2] == ["EHLO probe.mailsift.test", "HELO probe.mailsift.test"]


async def test_starttls_can_be_switched_off(net: Net):
    server = net.server("starttls", mailboxes={"a@acme.test"})
    probe = await net.prober(smtp_starttls=False).probe("acme.test", [server.host], ["a@acme.test"])
    assert kinds(probe) == ["accepted"]
    assert server.commands("STARTTLS") == [] and server.tls_sessions == 0


# -- connections and concurrency --------------------------------------------------------


async def test_many_addresses_share_few_connections(net: Net):
    boxes = {f"user{i}@big.test" for i in range(0, 40, 2)}
    server = net.server("accept", mailboxes=boxes)
    emails = [f"user{i}@big.test" for i in range(40)]
    probe = await net.prober(per_domain_concurrency=2).probe("big.test", [server.host], emails)
    assert kinds(probe) == ["accepted" if e in boxes else "not_found" for e in emails]
    assert probe.connections <= 2
    assert server.connections == probe.connections
    assert server.max_concurrent <= 2


async def test_rcpt_limit_per_connection_and_per_domain_concurrency(net: Net):
    server = net.server("catch_all", latency=0.005)
    emails = [f"u{i}@big.test" for i in range(30)]
    prober = net.prober(max_per_domain_concurrency=2, max_rcpt_per_connection=5)
    probe = await prober.probe("big.test", [server.host], emails)
    assert set(kinds(probe)) == {"accepted"}
    assert probe.connections >= 6  # 30 addresses, at most 5 RCPT each
    assert server.max_concurrent <= 2
    assert len(rcpts(server.transcript)) == 30 + 1  # each address once, plus the random one


async def test_connection_limit_of_a_host_only_reduces_parallelism(net: Net):
    boxes = {f"u{i}@acme.test" for i in range(0, 40, 3)}
    server = net.server("accept", mailboxes=boxes, max_connections=1, latency=0.005)
    emails = [f"u{i}@acme.test" for i in range(40)]
    prober = net.prober(per_domain_concurrency=2, max_rcpt_per_connection=10)
    probe = await prober.probe("acme.test", [server.host], emails)
    assert kinds(probe) == ["accepted" if e in boxes else "not_found" for e in emails]


async def test_concurrent_calls_for_one_domain_share_its_limit(net: Net):
    server = net.server("catch_all", latency=0.01)
    prober = net.prober(max_per_domain_concurrency=2, max_rcpt_per_connection=3)
    batches = [[f"b{b}u{i}@big.test" for i in range(9)] for b in range(3)]
    probes = await asyncio.gather(
        *(prober.probe("big.test", [server.host], batch) for batch in batches)
    )
    assert all(set(kinds(p)) == {"accepted"} for p in probes)
    assert server.max_concurrent <= 2
    assert prober.connections_opened == sum(p.connections for p in probes) == server.connections


async def test_global_connection_cap(net: Net):
    server = net.server("catch_all", latency=0.01)  # one MX host for many domains
    prober = net.prober(concurrency=1, per_domain_concurrency=2, max_rcpt_per_connection=2)
    domains = [f"d{n}.test" for n in range(4)]
    probes = await asyncio.gather(
        *(prober.probe(d, [server.host], [f"u{i}@{d}" for i in range(4)]) for d in domains)
    )
    assert all(set(kinds(p)) == {"accepted"} for p in probes)
    assert server.max_concurrent == 1


@pytest.mark.parametrize("pipelining", [False, True])
async def test_too_many_recipients_starts_a_new_transaction(net: Net, pipelining: bool):
    boxes = {f"u{i}@acme.test" for i in range(0, 12, 2)}
    server = net.server("accept", mailboxes=boxes, max_rcpts=4, pipelining=pipelining)
    emails = [f"u{i}@acme.test" for i in range(12)]
    probe = await net.prober(per_domain_concurrency=1).probe("acme.test", [server.host], emails)
    assert kinds(probe) == ["accepted" if e in boxes else "not_found" for e in emails]
    assert probe.connections == 1
    assert len(server.commands("RSET")) == 3  # 1 random + 12 RCPT, 4 per transaction
    assert len(server.commands("MAIL")) == len(server.commands("RSET")) + 1


async def test_duplicate_addresses_are_asked_once(net: Net):
    server = net.server("accept", mailboxes={"a@acme.test"})
    probe = await net.prober().probe("acme.test", [server.host], ["a@acme.test", "a@acme.test"])
    assert kinds(probe) == ["accepted", "accepted"]
    assert rcpts(server.transcript).count("RCPT TO:<a@acme.test>") == 1


def test_one_prober_serves_several_event_loops(net: Net):
    server = net.server("accept", mailboxes={"a@acme.test"})
    prober = net.prober()
    for _ in range(2):
        probe = asyncio.run(prober.probe("acme.test", [server.host], ["a@acme.test"]))
        assert kinds(probe) == ["accepted"]
    assert prober.connections_opened == 2


def test_farm_serves_hosts_added_before_start_and_swapped_behaviours():
    farm = SmtpFarm()
    server = farm.add("127.42.250.1", BEHAVIOURS["reject_all"])
    settings = Settings(
        dns_nameservers=["127.0.0.1:9"],
        smtp_port=farm.port,
        smtp_timeout=1.0,
        catch_all_check=False,
        allow_private_networks=True,
    )
    prober = SmtpProber(settings, DnsResolver(settings))
    with farm:
        first = asyncio.run(prober.probe("acme.test", [server.host], ["a@acme.test"]))
        server.behaviour = BEHAVIOURS["catch_all"]
        second = asyncio.run(prober.probe("acme.test", [server.host], ["a@acme.test"]))
        late = farm.add("127.42.250.2", BEHAVIOURS["greylist"])
        third = asyncio.run(prober.probe("acme.test", [late.host], ["a@acme.test"]))
        farm.remove(late.host)
        fourth = asyncio.run(prober.probe("acme.test", [late.host], ["a@acme.test"]))
    assert [kinds(p) for p in (first, second, third, fourth)] == [
        ["not_found"],
        ["accepted"],
        ["temporary"],
        ["unreachable"],
    ]
    assert server.connections == 2 and server.max_concurrent == 1
    assert (server.transcript + late.transcript).count("QUIT") == 3


# -- pipelining (RFC 2920) ----------------------------------------------------------------


def comparable(probe: DomainProbe, roles: dict[str, str]) -> list[tuple[object, ...]]:
    """Outcomes with each server's address replaced by its role (two runs, two servers)."""
    return [
        (o.email, o.kind, o.code, o.message, roles.get(o.mx_host or "", o.mx_host))
        for o in probe.outcomes
    ]


async def test_pipelined_rcpts_take_one_round_trip_per_group(net: Net):
    boxes = {f"user{i}@big.test" for i in range(0, 40, 3)}
    emails = [f"user{i}@big.test" for i in range(40)]
    server = net.server("accept", mailboxes=boxes, latency=0.2)
    started = time.monotonic()
    pipelined = await net.prober(per_domain_concurrency=1).probe("big.test", [server.host], emails)
    elapsed = time.monotonic() - started

    # banner, EHLO, MAIL, two groups (a sample of ten with the random probe first, which
    # tells that the server answers a group together, then the other 31), QUIT: about 6
    # round trips of 0.2 s, where one RCPT per round trip takes 45
    assert elapsed < 40 * 0.2 / 4
    assert pipelined.connections == 1
    # each RCPT but each group's first left before a reply, and QUIT went with the last
    assert server.pipelined == 40
    lines = rcpts(server.transcript)
    assert RANDOM_PROBE.match(lines[0])
    assert lines[1:] == [f"RCPT TO:<{e}>" for e in emails]
    assert server.transcript[-1] == "QUIT"
    assert kinds(pipelined) == ["accepted" if e in boxes else "not_found" for e in emails]

    plain = net.server("accept", mailboxes=boxes, pipelining=False)  # no latency: same verdicts
    one_by_one = await net.prober(per_domain_concurrency=1).probe("big.test", [plain.host], emails)
    assert plain.pipelined == 0
    assert rcpts(plain.transcript)[1:] == lines[1:]
    assert comparable(pipelined, {server.host: "mx"}) == comparable(one_by_one, {plain.host: "mx"})
    assert pipelined.catch_all is False and one_by_one.catch_all is False


async def test_latency_is_a_round_trip_per_awaited_reply(net: Net):
    emails = [f"u{i}@acme.test" for i in range(8)]
    timings = {}
    for pipelining in (False, True):
        server = net.server("catch_all", latency=0.1, pipelining=pipelining)
        started = time.monotonic()
        probe = await net.prober(per_domain_concurrency=1).probe("acme.test", [server.host], emails)
        timings[pipelining] = time.monotonic() - started
        assert set(kinds(probe)) == {"accepted"}
    # one by one: banner, EHLO, MAIL, probe, 8 RCPT, QUIT = 13 replies, each awaited
    assert timings[False] >= 13 * 0.1 * 0.95
    # pipelined: banner, EHLO, MAIL, one group, QUIT = 5
    assert timings[True] < timings[False] / 2


@pytest.mark.parametrize("pipelining", [False, True])
async def test_421_in_a_group_sends_the_unanswered_to_the_next_mx(net: Net, pipelining: bool):
    boxes = {"u0@acme.test", "u3@acme.test"}
    closing = {"u2@acme.test": (421, "4.7.0 Too many messages, closing")}
    primary = net.server("accept", mailboxes=boxes, rcpt_replies=closing, pipelining=pipelining)
    secondary = net.server("accept", mailboxes=boxes, pipelining=pipelining)
    emails = [f"u{i}@acme.test" for i in range(6)]
    probe = await net.prober(per_domain_concurrency=1).probe(
        "acme.test", [primary.host, secondary.host], emails
    )
    assert [(o.kind, o.code, o.mx_host) for o in probe.outcomes] == [
        ("accepted", 250, primary.host),
        ("not_found", 550, primary.host),
        ("temporary", 421, primary.host),
        # not answered before the 421: asked at the next MX host
        ("accepted", 250, secondary.host),
        ("not_found", 550, secondary.host),
        ("not_found", 550, secondary.host),
    ]
    # The primary answered three recipients before its 421, so it gets a fresh session
    # (a per-session limit, maybe) that starts with u2; u2 gets 421 again at once, so
    # the primary is given up and the rest go to the next MX host.
    first = emails if pipelining else emails[:3]  # the group was on the wire already
    second = emails[2:5] if pipelining else emails[2:3]  # at most 3 (what it answered)
    assert [line for line in rcpts(primary.transcript) if not RANDOM_PROBE.match(line)] == [
        f"RCPT TO:<{e}>" for e in first + second
    ]
    # nothing is sent after a 421; with pipelining, the second session's QUIT went with
    # its group (its last, by the session cap: RFC 2920 3.1), before the 421 came back
    assert primary.commands("QUIT") == (["QUIT"] if pipelining else [])
    # the catch-all verdict came from the primary: no second probe
    assert rcpts(secondary.transcript) == [f"RCPT TO:<{e}>" for e in emails[3:]]
    assert probe.catch_all is False
    assert probe.connections == 3


@pytest.mark.parametrize("pipelining", [False, True])
async def test_too_many_recipients_in_long_groups(net: Net, pipelining: bool):
    boxes = {f"u{i}@acme.test" for i in range(0, 30, 2)}
    server = net.server("accept", mailboxes=boxes, max_rcpts=4, pipelining=pipelining)
    emails = [f"u{i}@acme.test" for i in range(30)]
    prober = net.prober(per_domain_concurrency=1, max_per_domain_concurrency=1)
    probe = await prober.probe("acme.test", [server.host], emails)
    assert kinds(probe) == ["accepted" if e in boxes else "not_found" for e in emails]
    assert {o.code for o in probe.outcomes} == {250, 550}  # no 452 left as a verdict
    real = [line for line in rcpts(server.transcript) if not RANDOM_PROBE.match(line)]
    assert set(real) == {f"RCPT TO:<{e}>" for e in emails}
    if pipelining:
        # the first group learns the limit (4); the rest go 4 per transaction, and a
        # later call starts with it: no RCPT refused as "too many" any more
        assert probe.connections <= 2
        server.reset_counters()
        again = await prober.probe(
            "acme.test", [server.host], [f"v{i}@acme.test" for i in range(9)]
        )
        assert kinds(again) == ["not_found"] * 9
        assert len(rcpts(server.transcript)) == 9
        assert len(server.commands("MAIL")) == 3 and len(server.commands("RSET")) == 2
    else:
        assert probe.connections == 1


@pytest.mark.parametrize("pipelining", [False, True])
async def test_greylisting_in_a_group(net: Net, pipelining: bool):
    server = net.server("greylist", pipelining=pipelining)
    emails = [f"u{i}@grey.test" for i in range(10)]
    probe = await net.prober().probe("grey.test", [server.host], emails)
    assert [(o.kind, o.code) for o in probe.outcomes] == [("temporary", 450)] * 10
    assert probe.catch_all is None
    assert len(rcpts(server.transcript)) == 11  # each address once, and the random one


MIXED = {
    "full@acme.test": (552, "5.2.2 Mailbox full"),
    "gone@acme.test": (550, "5.2.1 This account has been disabled"),
    "grey@acme.test": (450, "4.2.0 Greylisted, try again later"),
    "spam@acme.test": (550, "5.7.1 Client host blocked using Spamhaus"),
    "fwd@acme.test": (251, "2.1.5 User not local; will forward"),
    "quota@acme.test": (452, "4.2.2 Over quota"),
    "syntax@acme.test": (501, "5.5.4 Syntax error"),
}


async def test_per_address_replies_mixed_in_one_group(net: Net):
    emails = ["ok@acme.test", "nobody@acme.test", *MIXED]
    expected = [
        "accepted",
        "not_found",
        "full",
        "disabled",
        "temporary",
        "blocked",
        "accepted",
        "full",
        "error",
    ]
    results = {}
    for pipelining in (True, False):
        server = net.server(
            "accept", mailboxes={"ok@acme.test"}, rcpt_replies=MIXED, pipelining=pipelining
        )
        probe = await net.prober(per_domain_concurrency=1).probe("acme.test", [server.host], emails)
        assert kinds(probe) == expected
        # pipelined: the random probe and five addresses (a sample of how the server
        # answers a group), then the other four and QUIT; each group's first waits
        assert server.pipelined == (len(emails) if pipelining else 0)
        results[pipelining] = comparable(probe, {server.host: "mx"})
    assert results[True] == results[False]


@pytest.mark.parametrize("pipelining", [False, True])
async def test_connection_dropped_mid_group(net: Net, pipelining: bool):
    boxes = {f"u{i}@acme.test" for i in range(0, 10, 2)}
    emails = [f"u{i}@acme.test" for i in range(10)]
    # it answers the random probe, u0 and u1, then hangs up at u2
    # A server that answered some recipients is alive: the answers are kept, and fresh
    # sessions (each asking at most what the first one got answered) ask the rest.
    lone = net.server("accept", mailboxes=boxes, drop_after_rcpts=3, pipelining=pipelining)
    probe = await net.prober(per_domain_concurrency=1).probe("acme.test", [lone.host], emails)
    assert kinds(probe) == ["accepted" if e in boxes else "not_found" for e in emails]
    assert [o.mx_host for o in probe.outcomes] == [lone.host] * 10
    asked = [line for line in rcpts(lone.transcript) if not RANDOM_PROBE.match(line)]
    assert sorted(set(asked)) == sorted(f"RCPT TO:<{e}>" for e in emails)
    assert probe.connections == 4  # probe, u0, u1, drop at u2; then u2-u4, u5-u7, u8-u9
    assert "DATA" not in lone.transcript

    # a server that drops before answering anything is dead: the next MX host takes all
    dead = net.server("accept", mailboxes=boxes, drop_after_rcpts=0, pipelining=pipelining)
    secondary = net.server("accept", mailboxes=boxes, pipelining=pipelining)
    probe = await net.prober(per_domain_concurrency=1).probe(
        "acme.test", [dead.host, secondary.host], emails
    )
    assert kinds(probe) == ["accepted" if e in boxes else "not_found" for e in emails]
    assert [o.mx_host for o in probe.outcomes] == [secondary.host] * 10


async def test_catch_all_probe_rides_in_the_first_group(net: Net):
    server = net.server("catch_all", latency=0.05)
    emails = [f"u{i}@wild.test" for i in range(6)]
    probe = await net.prober().probe("wild.test", [server.host], emails)
    assert probe.catch_all is True
    assert kinds(probe) == ["accepted"] * 6
    lines = rcpts(server.transcript)
    assert RANDOM_PROBE.match(lines[0]) and lines[1:] == [f"RCPT TO:<{e}>" for e in emails]
    assert server.pipelined == 6  # sent with the probe, before its reply
    assert probe.connections == 1


async def test_pipelining_after_starttls(net: Net):
    server = net.server("starttls", mailboxes={"a@acme.test"})
    probe = await net.prober().probe("acme.test", [server.host], ["a@acme.test", "b@acme.test"])
    assert kinds(probe) == ["accepted", "not_found"]
    assert server.tls_sessions == 1
    assert server.pipelined == 2  # learnt from the EHLO reply after the handshake


async def test_server_losing_pipelined_commands_gets_smaller_sessions_not_a_hang(net: Net):
    server = net.server("accept", mailboxes={"a@acme.test"}, fault="drop_pipelined")
    started = time.monotonic()
    probe = await net.prober(smtp_timeout=0.5).probe(
        "acme.test", [server.host], ["a@acme.test", "b@acme.test"]
    )
    assert time.monotonic() - started < 3
    # The first session's group is lost after the first reply; later sessions ask one
    # recipient at a time (what the first got answered), which such a server handles.
    assert kinds(probe) == ["accepted", "not_found"]


def test_reply_reader_splits_and_bounds_replies():
    class Inner(asyncio.Protocol):
        lost = False

        def connection_lost(self, exc: Exception | None) -> None:
            self.lost = True

    async def scenario() -> None:
        inner = Inner()
        reader = ReplyReader(inner, expected=3)
        # several replies in one segment, a multi-line one, one split across segments,
        # and one more than was asked for (dropped)
        reader.data_received(b"250 2.1.5 Ok\r\n550-5.1.1 no such\r\n550 5.1.1 user\r\n45")
        reader.data_received(b"0 4.2.0 greylisted\r\n250 unsolicited\r\n")
        assert [await reader.read(1) for _ in range(3)] == [
            SMTPResponse(250, "2.1.5 Ok"),
            SMTPResponse(550, "5.1.1 no such\n5.1.1 user"),
            SMTPResponse(450, "4.2.0 greylisted"),
        ]
        assert not reader.replies

        # replies that came before the connection broke are still read, then the break
        reader = ReplyReader(inner, expected=3)
        reader.data_received(b"250 Ok\r\n")
        reader.connection_lost(None)
        assert inner.lost  # aiosmtplib's protocol is told
        assert (await reader.read(1)).code == 250
        with pytest.raises(SMTPServerDisconnected):
            await reader.read(1)

        for garbage, text in [
            (b"250-" + b"x" * 70_000, "too long"),  # no line ending: bounded
            (b"250-ok\r\n" * 5_000, "too long"),  # a reply that never ends: bounded
            (b"HTTP/1.1 400 Bad Request\r\n", "malformed"),
        ]:
            reader = ReplyReader(Inner(), expected=1)
            reader.data_received(garbage)
            with pytest.raises(SMTPResponseException) as caught:
                await reader.read(1)
            assert text in caught.value.message.lower()
            assert len(reader.buffer) == 0

        reader = ReplyReader(Inner(), expected=1)
        with pytest.raises(TimeoutError):
            await reader.read(0.05)

    asyncio.run(scenario())


# -- what never reaches a command line ---------------------------------------------------


async def test_crlf_injection_never_reaches_the_wire(net: Net):
    server = net.server("catch_all")
    emails = [INJECTED, "ok@x.test", "tab\t@x.test", "nul\x00@x.test", "<a@x.test>"]
    probe = await net.prober().probe("x.test", [server.host], emails)
    assert kinds(probe) == ["error", "accepted", "error", "error", "error"]
    injected = probe.outcomes[0]
    assert injected.code is None and injected.mx_host is None
    assert "\r" not in injected.email and "\n" not in injected.email
    assert "DATA" not in [line.strip().upper() for line in server.transcript]
    real = [line for line in rcpts(server.transcript) if not RANDOM_PROBE.match(line)]
    assert real == ["RCPT TO:<ok@x.test>"]


async def test_unsafe_settings_are_refused_before_connecting(net: Net):
    server = net.server("catch_all")
    good = net.settings()
    unsafe = Settings.model_construct(
        **{**good.model_dump(), "mail_from": "v@mailsift.test>\r\nDATA\r\nRCPT TO:<x"}
    )
    prober = SmtpProber(unsafe, DnsResolver(good))
    probe = await prober.probe("x.test", [server.host], ["a@x.test"])
    assert kinds(probe) == ["error"]
    assert server.connections == 0


async def test_non_ascii_mailbox_needs_smtputf8(net: Net):
    plain = net.server("catch_all", smtputf8=False)
    probe = await net.prober().probe("x.test", [plain.host], ["jöe@x.test", "joe@x.test"])
    assert kinds(probe) == ["error", "accepted"]
    assert probe.outcomes[0].message == "server lacks SMTPUTF8"
    assert not any("jöe" in line for line in plain.transcript)

    modern = net.server("accept", mailboxes={"jöe@y.test"})
    probe = await net.prober().probe("y.test", [modern.host], ["jöe@y.test"])
    assert kinds(probe) == ["accepted"]
    assert "MAIL FROM:<verify@mailsift.test> SMTPUTF8" in modern.transcript


async def test_any_input_gets_an_outcome(net: Net):
    server = net.server("accept")
    weird = ["", "@", "no-at-sign", "a@", "x" * 400 + "@x.test", "\udcff@x.test", None]
    probe = await net.prober().probe("x.test", [server.host], weird)  # type: ignore[list-item]
    assert len(probe.outcomes) == len(weird)
    assert set(kinds(probe)) == {"error"}
    assert server.connections == 0


# -- reply classification (pure function, real-world replies) ---------------------------


@pytest.mark.parametrize(
    ("code", "text", "stage", "kind"),
    [
        (250, "2.1.5 Ok", "rcpt", "accepted"),
        (251, "User not local; will forward", "rcpt", "accepted"),
        (
            550,
            "5.1.1 The email account that you tried to reach does not exist",
            "rcpt",
            "not_found",
        ),
        # qmail's relay refusal: the domain is not served here, nothing about the mailbox
        (553, "sorry, that domain isn't in my list of allowed rcpthosts", "rcpt", "rejected"),
        (
            550,
            "5.7.1 Service unavailable; client [192.0.2.1] blocked using Spamhaus",
            "rcpt",
            "blocked",
        ),
        (550, "Mail rejected: your IP has a poor reputation", "rcpt", "blocked"),
        (554, "5.7.1 Relay access denied", "rcpt", "blocked"),
        (550, "5.1.1 sender is on our block list", "rcpt", "blocked"),
        (552, "5.2.2 Mailbox full", "rcpt", "full"),
        (452, "4.2.2 The email account is over quota", "rcpt", "full"),
        (550, "5.2.1 The email account that you tried to reach is disabled", "rcpt", "disabled"),
        (450, "4.2.0 Greylisted", "rcpt", "temporary"),
        (451, "4.7.1 Greylisting in action, please come back later", "rcpt", "temporary"),
        (421, "4.7.0 Try again later, closing connection", "rcpt", "temporary"),
        (501, "5.5.4 Syntax error", "rcpt", "error"),
        (421, "Service not available", "banner", "blocked"),
        (554, "No SMTP service here", "banner", "blocked"),
        (550, "5.7.1 Sender rejected", "mail", "blocked"),
        (553, "Sender address rejected", "mail", "blocked"),
        (451, "4.3.0 Temporary lookup failure", "mail", "temporary"),
    ],
)
def test_classify_reply(code: int, text: str, stage: str, kind: str):
    assert classify_reply(code, text, stage) == kind  # type: ignore[arg-type]
