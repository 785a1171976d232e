"""The engine end to end: every verdict path through real DNS and SMTP servers on loopback."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import time

import pytest

from mailsift import Verifier
from mailsift.result import REASONS, SCORE_BANDS
from mailsift.testing.world import MxSpec, World


async def check(world: World, email: str, **settings):
    async with Verifier(world.settings(**settings)) as v:
        return await v.verify(email)


def assert_contract(result) -> None:
    assert REASONS[result.reason] == result.status
    low, high = SCORE_BANDS[result.status]
    assert low <= result.score <= high


@pytest.fixture
def corp(world: World) -> World:
    world.add_domain(
        "acme.test",
        mailboxes=["jane@acme.test", "info@acme.test", "full@acme.test", "gone@acme.test"],
        rcpt_replies={
            "full@acme.test": (552, "5.2.2 Mailbox full"),
            "gone@acme.test": (550, "5.2.1 Mailbox disabled"),
        },
    )
    return world


@pytest.mark.parametrize(
    ("email", "status", "reason"),
    [
        ("jane@acme.test", "valid", "accepted"),
        ("JANE@ACME.TEST", "valid", "accepted"),
        ("nobody@acme.test", "invalid", "mailbox_not_found"),
        ("info@acme.test", "risky", "role_based"),
        ("full@acme.test", "risky", "mailbox_full"),
        ("gone@acme.test", "invalid", "mailbox_disabled"),
    ],
)
async def test_mailbox_verdicts(corp: World, email: str, status: str, reason: str) -> None:
    result = await check(corp, email)
    assert (result.status, result.reason) == (status, reason)
    assert_contract(result)
    assert result.checks.mx_found and result.checks.domain_exists and result.checks.syntax_valid
    assert result.mx_host == "mx1.acme.test"
    assert result.smtp_code is not None


async def test_normalized_email_keeps_local_part_and_lowercases_domain(corp: World) -> None:
    result = await check(corp, "Jane@Acme.TEST")
    assert result.email == "Jane@acme.test"


@pytest.mark.parametrize(
    ("behaviour", "status", "reason"),
    [
        ("catch_all", "risky", "catch_all"),
        ("greylist", "unknown", "greylisted"),
        ("banner_421", "unknown", "smtp_blocked"),
        ("banner_554", "unknown", "smtp_blocked"),
        ("block_mail_from", "unknown", "smtp_blocked"),
        ("drop", "unknown", "smtp_error"),
        ("garbage", "unknown", "smtp_error"),
        ("endless_line", "unknown", "smtp_error"),
        ("close_mid_reply", "unknown", "smtp_error"),
        ("starttls", "valid", "accepted"),
    ],
)
async def test_server_behaviours(world: World, behaviour: str, status: str, reason: str) -> None:
    world.add_domain("x.test", behaviour, mailboxes=["bob@x.test"])
    result = await check(world, "bob@x.test", smtp_timeout=1.0)
    assert (result.status, result.reason) == (status, reason), result
    assert_contract(result)
    if behaviour == "catch_all":
        assert result.checks.catch_all is True


async def test_catch_all_detected_once_per_domain(world: World) -> None:
    (server,) = world.add_domain("globex.test", "catch_all")
    async with Verifier(world.settings()) as v:
        results = [r async for r in v.verify_many([f"user{i}@globex.test" for i in range(5)])]
        again = await v.verify("one.more@globex.test")
    assert {r.reason for r in results + [again]} == {"catch_all"}
    random_probes = [line for line in server.transcript if line.upper().startswith("RCPT") and "mailsift-probe" in line.lower()]
    assert len(random_probes) == 1


async def test_accept_all_provider_is_catch_all_by_rule(world: World) -> None:
    world.add_domain("yahoo.com", "catch_all", mx_names=["mta5.am0.yahoodns.net"])
    result = await check(world, "someone@yahoo.com", catch_all_check=False)
    assert (result.status, result.reason, result.provider) == ("risky", "catch_all", "yahoo")
    assert result.checks.free_provider is True


async def test_provider_from_mx_hosts(world: World) -> None:
    world.add_domain("bigco.test", mailboxes=["a@bigco.test"], mx_names=["aspmx.l.google.com"])
    result = await check(world, "a@bigco.test")
    assert (result.status, result.provider) == ("valid", "google")


async def test_primary_mx_down_falls_back_to_secondary(world: World) -> None:
    world.add_domain("stark.test", mailboxes=["tony@stark.test"], mx=[MxSpec(10, None), MxSpec(20, "accept")])
    result = await check(world, "tony@stark.test")
    assert (result.status, result.reason, result.mx_host) == ("valid", "accepted", "mx2.stark.test")


async def test_tarpit_costs_its_domain_the_timeout_and_stalls_nothing_else(world: World) -> None:
    world.add_domain("slow.test", "tarpit")
    world.add_domain("fast.test", mailboxes=["ann@fast.test"])
    started = time.perf_counter()
    async with Verifier(world.settings(smtp_timeout=0.5)) as v:
        results = [r async for r in v.verify_many(["tom@slow.test", "ann@fast.test"])]
    elapsed = time.perf_counter() - started
    assert [(r.status, r.reason) for r in results] == [("unknown", "smtp_timeout"), ("valid", "accepted")]
    assert elapsed < 5, "the tarpit must cost about the SMTP timeout, not the banner delay"


@pytest.mark.parametrize(
    ("dns", "status", "reason", "domain_exists", "mx_found"),
    [
        ("implicit", "valid", "accepted", True, True),
        ("null_mx", "invalid", "null_mx", True, False),
        ("no_mail", "invalid", "no_mx", True, False),
        ("nxdomain", "invalid", "nxdomain", False, False),
        ("servfail", "unknown", "dns_error", None, None),
        ("timeout", "unknown", "dns_timeout", None, None),
    ],
)
async def test_dns_paths(world: World, dns, status, reason, domain_exists, mx_found) -> None:
    world.add_domain("d.test", mailboxes=["ann@d.test"], dns=dns)
    result = await check(world, "ann@d.test", dns_timeout=0.5)
    assert (result.status, result.reason) == (status, reason)
    assert (result.checks.domain_exists, result.checks.mx_found) == (domain_exists, mx_found)
    assert_contract(result)


async def test_disposable_domain_is_invalid_without_any_network(world: World) -> None:
    result = await check(world, "freebie@mailinator.com")
    assert (result.status, result.reason, result.checks.disposable) == ("invalid", "disposable", True)
    assert not any("mailinator" in q for q, _ in world.dns.queries)


async def test_typo_suggestion_only_for_a_domain_that_takes_no_mail(world: World) -> None:
    world.add_domain("gmail.com", mailboxes=["jane@gmail.com"], mx_names=["gmail-smtp-in.l.google.com"])
    typo = await check(world, "jane@gmai.com")
    assert (typo.status, typo.reason, typo.suggestion) == ("invalid", "nxdomain", "jane@gmail.com")
    # typo-squats on the disposable lists get the suggestion too
    squat = await check(world, "jane@gmial.com")
    assert (squat.status, squat.reason, squat.suggestion) == ("invalid", "disposable", "jane@gmail.com")
    # a look-alike domain that exists and takes mail on its own is never "corrected"
    world.add_domain("gmai.com", mailboxes=["jane@gmai.com"])
    async with Verifier(world.settings()) as v:  # a fresh resolver: no cached NXDOMAIN
        real = await v.verify("jane@gmai.com")
    assert (real.status, real.suggestion) == ("valid", None)


async def test_idn_domain_is_checked_in_its_a_label_form(world: World) -> None:
    world.add_domain("xn--bcher-kva.test", mailboxes=["anna@xn--bcher-kva.test"])
    result = await check(world, "anna@bücher.test")
    assert (result.status, result.email) == ("valid", "anna@xn--bcher-kva.test")


async def test_crlf_injection_never_reaches_the_server(corp: World) -> None:
    result = await check(corp, "jane@acme.test\r\nDATA")
    assert (result.status, result.reason) == ("invalid", "syntax")
    result = await check(corp, "jane@acme.test>\r\nRCPT TO:<victim@acme.test")
    assert result.status == "invalid"
    assert not any("victim" in line or line.upper().startswith("DATA") for line in corp.transcript)


@pytest.mark.parametrize("junk", ["", "   ", "@", "a@", "@b.test", "a b@c.test", "\x00", "\ud800@x.test", "x" * 100_000])
async def test_any_string_gives_a_result(corp: World, junk: str) -> None:
    result = await check(corp, junk)
    assert (result.status, result.reason) == ("invalid", "syntax")
    assert result.checks.syntax_valid is False


async def test_special_use_domains_refused_unless_allowed(corp: World) -> None:
    result = await check(corp, "jane@acme.test", allow_test_domains=False)
    assert (result.status, result.reason) == ("invalid", "special_use")


async def test_verify_many_keeps_input_order_and_shares_connections(corp: World) -> None:
    emails = ["jane@acme.test", "bad", "nobody@acme.test", "info@acme.test", "jane@acme.test"] * 8
    async with Verifier(corp.settings()) as v:
        results = [r async for r in v.verify_many(emails)]
        connections = v.smtp_connections
    assert [r.email for r in results] == emails
    assert [r.reason for r in results[:5]] == ["accepted", "syntax", "mailbox_not_found", "role_based", "accepted"]
    assert connections <= corp.settings().per_domain_concurrency


async def test_budget_bounds_a_signup_check(world: World) -> None:
    world.add_domain("slow.test", "tarpit")
    started = time.perf_counter()
    async with Verifier(world.settings(smtp_timeout=30)) as v:
        result = await v.verify("tom@slow.test", budget=0.5)
    assert time.perf_counter() - started < 3
    assert (result.status, result.reason) == ("unknown", "smtp_timeout")


async def test_smtp_disabled_checks_dns_only(corp: World) -> None:
    result = await check(corp, "jane@acme.test", smtp_enabled=False)
    assert (result.status, result.reason, result.checks.smtp_reachable) == ("unknown", "smtp_disabled", None)
    assert corp.transcript == []


async def test_port_25_blocked_is_said_once_and_loudly(world: World, caplog) -> None:
    for n in range(4):
        world.add_domain(f"d{n}.test", mx=[MxSpec(10, None)])  # nothing listens: refused
    caplog.set_level(logging.WARNING, logger="mailsift")
    async with Verifier(world.settings()) as v:
        results = [r async for r in v.verify_many([f"a@d{n}.test" for n in range(4)] + ["b@d0.test"])]
        assert [d.cause for d in v.diagnoses()] == ["port25_blocked"]
    assert {(r.status, r.reason) for r in results} == {("unknown", "smtp_unreachable")}
    warnings = [r for r in caplog.records if "port 25" in r.getMessage()]
    assert len(warnings) == 1


def test_cli_verify_json_against_a_world(corp: World) -> None:
    corp.add_domain("globex.test", "catch_all")
    env = {**os.environ, **corp.env()}
    proc = subprocess.run(
        [sys.executable, "-m", "mailsift.cli", "verify", "--json", "jane@acme.test", "-"],
        input="nobody@acme.test\nx@globex.test\nnot-an-address\n",
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [(d["email"], d["status"], d["reason"]) for d in lines] == [
        ("jane@acme.test", "valid", "accepted"),
        ("nobody@acme.test", "invalid", "mailbox_not_found"),
        ("x@globex.test", "risky", "catch_all"),
        ("not-an-address", "invalid", "syntax"),
    ]
    assert set(lines[0]) >= {"email", "status", "score", "reason", "checks", "suggestion", "provider",
                             "mx_host", "smtp_code", "smtp_message", "verified_at"}
    assert set(lines[0]["checks"]) == {"syntax_valid", "domain_exists", "mx_found", "smtp_reachable",
                                       "disposable", "role_based", "catch_all", "free_provider"}


def test_cli_usage_errors_exit_2() -> None:
    proc = subprocess.run([sys.executable, "-m", "mailsift.cli", "verify", "a@b.test"],
                          capture_output=True, text=True, env={**os.environ, "MAILSIFT_DNS_NAMESERVERS": "not-an-ip"})
    assert proc.returncode == 2
    assert "bad nameserver" in proc.stderr and "Traceback" not in proc.stderr


def test_connect_timeout_is_unreachable_as_with_port_25_blocked(world: World) -> None:
    """A firewall that drops SYNs (what a blocked port 25 does) makes the connect time
    out: unknown/smtp_unreachable, not a tarpit's smtp_timeout."""
    import socket

    ip = "127.0.250.9"
    listener = socket.socket()
    listener.bind((ip, world.smtp.port))
    listener.listen(0)  # never accepted: once the backlog is full, SYNs are dropped
    fillers = []
    try:
        for _ in range(3):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex((ip, world.smtp.port))
            fillers.append(s)
        time.sleep(0.2)
        world.dns.add_a("mx.dropped.test", ip)
        world.dns.add_mx("dropped.test", [(10, "mx.dropped.test")])
        started = time.perf_counter()
        result = asyncio.run(check(world, "ann@dropped.test", smtp_timeout=0.5))
        assert (result.status, result.reason) == ("unknown", "smtp_unreachable")
        assert "timed out connecting" in (result.smtp_message or "")
        assert time.perf_counter() - started < 5
    finally:
        for s in fillers:
            s.close()
        listener.close()


async def test_mx_lookups_at_once_are_bounded_by_the_engine_not_by_each_call(world: World) -> None:
    """A flow's batches are concurrent ``verify_many`` calls on one engine: together they
    ask the resolver at most DNS_AT_ONCE MX lookups at once, as one call does (a bound
    per call let ten batches send ten times as many)."""
    from mailsift.verifier import DNS_AT_ONCE

    domains = [f"batch{i:02d}.test" for i in range(2 * DNS_AT_ONCE)]
    for domain in domains:
        world.add_domain(domain, mailboxes=[f"ann@{domain}"])
        world.dns.delays[domain] = 2.0  # every MX answer held back: the lookups pile up

    def mx_asked() -> set[str]:
        return {name for name, qtype in list(world.dns.queries) if qtype == "MX"}

    async def collect(emails: list[str]) -> list:
        return [r async for r in v.verify_many(emails)]

    half = len(domains) // 2
    async with Verifier(world.settings(dns_timeout=15, smtp_enabled=False)) as v:
        calls = [asyncio.create_task(collect([f"ann@{d}" for d in part]))
                 for part in (domains[:half], domains[half:])]
        async with asyncio.timeout(10):
            while len(mx_asked()) < DNS_AT_ONCE:
                await asyncio.sleep(0.02)
        await asyncio.sleep(0.5)  # a bound per call would let the other call's lookups out now
        assert len(mx_asked()) == DNS_AT_ONCE
        results = [r for call in calls for r in await call]
    assert len(results) == 2 * DNS_AT_ONCE
    assert all(r.checks.mx_found for r in results)
    assert mx_asked() == set(domains)
