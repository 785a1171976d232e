"""Our own faults are never a customer's `invalid` (issue 8).

A lying or broken resolver, a blocked or intercepted port 25, our IP refused everywhere,
a server that hangs up part-way: each must leave the addresses `unknown` (or get them
their true verdicts) and be named once, loudly, on stderr. Every world here is real
servers on loopback (mailsift.testing); nothing is mocked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from mailsift import Verifier
from mailsift.testing.smtp_server import Behaviour
from mailsift.testing.world import MxSpec, World

#: Invalid for reasons that need no network at all: these stay invalid whatever happens.
OFFLINE_INVALID = {"syntax", "special_use", "disposable"}


def cli_verify(world: World, *emails: str, **env_overrides: str) -> tuple[list[dict], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILSIFT_")}
    env.update(world.env(**env_overrides))
    proc = subprocess.run(
        [sys.executable, "-m", "mailsift.cli", "verify", "--json", *emails],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()], proc.stderr


def healthy_world(world: World) -> None:
    world.add_domain("acme.test", mailboxes=["jane@acme.test"])
    world.add_domain("dead.test", dns="nxdomain")
    world.add_domain("nomail.test", dns="no_mail")


# -- the resolver ------------------------------------------------------------------------


@pytest.mark.parametrize("lie", ["nxdomain", "servfail"])
def test_a_resolver_that_fails_everything_makes_nothing_invalid(world: World, lie: str) -> None:
    healthy_world(world)
    world.dns.set_global_failure(lie)
    emails = ["jane@acme.test", "x@dead.test", "y@nomail.test", "z@gmail.com",
              "not an address", "a@mailinator.com"]
    results, stderr = cli_verify(world, *emails)
    verdicts = {r["email"]: (r["status"], r["reason"]) for r in results}
    for email in ("jane@acme.test", "x@dead.test", "y@nomail.test", "z@gmail.com"):
        assert verdicts[email] == ("unknown", "dns_error"), email
    assert all(r["reason"] in OFFLINE_INVALID for r in results if r["status"] == "invalid")
    assert verdicts["a@mailinator.com"] == ("invalid", "disposable")
    # said once, naming the resolver
    assert stderr.count("failed its health check") == 1
    assert world.dns.nameserver in stderr
    assert "MAILSIFT_DNS_NAMESERVERS" in stderr


async def test_a_truthful_resolver_keeps_its_negative_answers(world: World) -> None:
    healthy_world(world)
    async with Verifier(world.settings()) as v:
        dead = await v.verify("x@dead.test")
        nomail = await v.verify("y@nomail.test")
        sent = v.resolver.queries_sent
        again = await v.verify("z@dead2.test")  # same TLD: the check is not asked again
        assert v.diagnoses() == []
    assert (dead.status, dead.reason) == ("invalid", "nxdomain")
    assert (nomail.status, nomail.reason) == ("invalid", "no_mx")
    assert (again.status, again.reason) == ("invalid", "nxdomain")
    assert v.resolver.queries_sent - sent <= 3  # the MX (+ A/AAAA) of dead2.test only
    health = await v.resolver.resolver_health("test")
    assert health.ok and health.problem is None


async def test_resolver_health_names_the_cause(world: World) -> None:
    healthy_world(world)
    async with Verifier(world.settings()) as v:
        assert (await v.resolver.resolver_health("test")).ok
    world.dns.set_global_failure("servfail")
    async with Verifier(world.settings()) as v:
        health = await v.resolver.resolver_health("test")
        assert not health.ok and "root zone" in (health.problem or "")
        assert v.diagnoses() == []  # nothing verified yet: nothing to say
        result = await v.verify("x@dead.test")
        assert (result.status, result.reason) == ("unknown", "dns_error")
        assert [d.cause for d in v.diagnoses()] == ["dns_resolver"]
    world.dns.set_global_failure(None)
    async with Verifier(world.settings(dns_sanity_check=False)) as v:  # the old behaviour
        assert (await v.verify("x@dead.test")).status == "invalid"


def test_a_tld_that_does_not_exist_is_still_nxdomain(world: World) -> None:
    healthy_world(world)
    results, stderr = cli_verify(world, "someone@nowhere.invalidtld")
    assert (results[0]["status"], results[0]["reason"]) == ("invalid", "nxdomain")
    assert "health check" not in stderr


# -- our path to port 25 -----------------------------------------------------------------


def add_sites(world: World, n: int, behaviour: Behaviour | str | None) -> list[str]:
    emails = []
    for i in range(n):
        domain = f"site{i}.test"
        world.add_domain(domain, mx=[MxSpec(10, behaviour)])
        emails += [f"a@{domain}", f"b@{domain}"]
    return emails


def test_port_25_refused_everywhere_is_named(world: World) -> None:
    emails = add_sites(world, 4, None)  # nothing listens: connection refused
    results, stderr = cli_verify(world, *emails)
    assert {(r["status"], r["reason"]) for r in results} == {("unknown", "smtp_unreachable")}
    assert stderr.count("outbound port 25 is most likely blocked") == 1
    assert "middlebox" not in stderr and "refused this client" not in stderr


def test_a_port_25_middlebox_is_named(world: World) -> None:
    emails = add_sites(world, 4, "close_on_connect")
    results, stderr = cli_verify(world, *emails)
    assert {r["status"] for r in results} == {"unknown"}
    assert stderr.count("a middlebox on this network") == 1
    assert "outbound port 25 is most likely blocked" not in stderr


@pytest.mark.parametrize("where", ["rcpt", "banner", "mail_from"])
def test_our_ip_refused_everywhere_is_named(world: World, where: str) -> None:
    behaviour = {"rcpt": "rbl_listed", "banner": "banner_554", "mail_from": "block_mail_from"}
    emails = add_sites(world, 4, behaviour[where])
    results, stderr = cli_verify(world, *emails)
    assert {(r["status"], r["reason"]) for r in results} == {("unknown", "smtp_blocked")}
    assert stderr.count("refused this client itself") == 1
    assert "Spamhaus" in stderr or "spamhaus" in stderr  # the example reply is quoted


async def test_a_few_dead_servers_in_a_healthy_run_are_not_a_diagnosis(world: World) -> None:
    emails = add_sites(world, 6, "accept")
    for i in range(6, 8):
        world.add_domain(f"site{i}.test", mx=[MxSpec(10, None)])
        emails.append(f"a@site{i}.test")
    world.add_domain("listed.test", "rbl_listed")
    emails.append("a@listed.test")
    async with Verifier(world.settings()) as v:
        results = [r async for r in v.verify_many(emails)]
        assert v.diagnoses() == []
    assert sum(r.status == "unknown" for r in results) == 3


# -- sessions that recover ---------------------------------------------------------------


async def test_a_hard_error_limit_server_gets_every_true_verdict(world: World) -> None:
    """Postfix with smtpd_hard_error_limit=2 hangs up (421) after two refused RCPTs, the
    catch-all probe counting as one. Fresh sessions ask what is left."""
    known = [f"user{i}@strict.test" for i in range(0, 12, 3)]
    emails = [f"user{i}@strict.test" for i in range(12)]
    servers = world.add_domain("strict.test", "hard_error_limit", mailboxes=known)
    async with Verifier(world.settings(per_domain_concurrency=1)) as v:
        results = [r async for r in v.verify_many(emails)]
    assert [(r.email, r.status) for r in results] == [
        (e, "valid" if e in known else "invalid") for e in emails
    ]
    assert all(r.reason in ("accepted", "mailbox_not_found") for r in results)
    transcript = servers[0].transcript
    assert not any(line.upper().startswith("DATA") for line in transcript)
    assert sum(line.upper().startswith("MAIL FROM") for line in transcript) > 2


async def test_a_dropped_session_keeps_its_answers(world: World) -> None:
    known = ["a@drop.test", "c@drop.test"]
    emails = ["a@drop.test", "b@drop.test", "c@drop.test", "d@drop.test", "e@drop.test"]
    servers = world.add_domain("drop.test", "accept", mailboxes=known, drop_after_rcpts=2)
    async with Verifier(world.settings(per_domain_concurrency=1)) as v:
        results = [r async for r in v.verify_many(emails)]
    assert [r.status for r in results] == ["valid", "invalid", "valid", "invalid", "invalid"]
    # each address asked until answered, none asked twice once answered
    rcpts = [line for line in servers[0].transcript if line.upper().startswith("RCPT")]
    for email in emails:
        assert sum(f"<{email}>" in line for line in rcpts) <= 2


# -- the session as evidence -------------------------------------------------------------

GENERIC = (550, "Requested action not taken")


async def test_a_generic_refusal_beside_accepted_recipients_is_a_missing_mailbox(
    world: World,
) -> None:
    world.add_domain("judge.test", "accept", mailboxes=["real@judge.test"],
                     rcpt_reply=None, rcpt_replies={"gone@judge.test": GENERIC,
                                                    "also-gone@judge.test": GENERIC})
    async with Verifier(world.settings(catch_all_check=False)) as v:
        results = [r async for r in v.verify_many(
            ["real@judge.test", "gone@judge.test", "also-gone@judge.test"])]
    assert [(r.status, r.reason) for r in results] == [
        ("valid", "accepted"),
        ("invalid", "mailbox_not_found"),
        ("invalid", "mailbox_not_found"),
    ]


async def test_the_same_generic_refusal_for_everyone_is_not_proof(world: World) -> None:
    world.add_domain("wall.test", Behaviour(rcpt_reply=GENERIC))
    async with Verifier(world.settings()) as v:
        results = [r async for r in v.verify_many(["a@wall.test", "b@wall.test"])]
    assert {(r.status, r.reason) for r in results} == {("unknown", "smtp_rejected")}


# -- a server out of step ----------------------------------------------------------------


async def test_replies_sent_before_their_commands_are_never_a_verdict(world: World) -> None:
    early = ((250, "mx greets you"), (250, "2.1.0 Ok"), (250, "2.1.5 Ok"), (250, "2.1.5 Ok"))
    world.add_domain("early.test", "reject_all", unsolicited=early)
    async with Verifier(world.settings()) as v:
        results = [r async for r in v.verify_many(["a@early.test", "b@early.test"])]
    # without the check, "250 2.1.5 Ok" would be read as the RCPT's reply: catch-all/valid
    assert {(r.status, r.reason) for r in results} == {("unknown", "smtp_error")}
    assert all("out of step" in (r.smtp_message or "") for r in results)


# -- the pipeline says it too ------------------------------------------------------------


def test_mailsift_run_behind_a_middlebox_says_so_and_exports_nothing(
    world: World, cli_env: dict[str, str], tmp_path
) -> None:
    emails = add_sites(world, 4, "close_on_connect")
    (tmp_path / "list.csv").write_text("email\n" + "\n".join(emails) + "\n", encoding="utf-8")
    env = {k: v for k, v in cli_env.items() if not k.startswith("MAILSIFT_")}
    env.update(world.env())
    proc = subprocess.run(
        [sys.executable, "-m", "mailsift.cli", "run", "list.csv", "--db", "wh.duckdb",
         "--out", "out"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 1, proc.stderr  # the gate fails on the unknown share
    assert "a middlebox on this network" in proc.stderr
    assert not (tmp_path / "out").exists()
    import duckdb

    con = duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True)
    try:
        statuses = con.sql("SELECT DISTINCT status FROM latest_verifications").fetchall()
    finally:
        con.close()
    assert statuses == [("unknown",)]


# -- DNS answers that prove nothing --------------------------------------------------------


async def test_a_truncated_answer_that_comes_back_empty_over_tcp_is_not_no_mx(
    world: World,
) -> None:
    world.add_domain("tc.test", "accept", mailboxes=["a@tc.test"])
    world.dns.set_failure("tc.test", "truncated_empty")
    async with Verifier(world.settings()) as v:
        result = await v.verify("a@tc.test")
    assert (result.status, result.reason) == ("unknown", "dns_error")
    assert ("tc.test", "MX") in world.dns.queries


async def test_the_dns_timeout_is_honoured_for_a_slow_resolver(world: World) -> None:
    """A resolver whose answers take 2.5 s: within MAILSIFT_DNS_TIMEOUT=5 it answers
    (no per-try cap below the setting), within 1 s it is a timeout (unknown)."""
    world.add_domain("slowdns.test", "accept", mailboxes=["a@slowdns.test"])
    world.dns.delays["slowdns.test"] = 2.5
    async with Verifier(world.settings(dns_timeout=5.0)) as v:
        result = await v.verify("a@slowdns.test")
    assert (result.status, result.reason) == ("valid", "accepted")
    async with Verifier(world.settings(dns_timeout=1.0)) as v:
        result = await v.verify("a@slowdns.test")
    assert (result.status, result.reason) == ("unknown", "dns_timeout")
