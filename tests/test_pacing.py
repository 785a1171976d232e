"""Politeness and pace of the SMTP probe (mailsift/smtp/pacing.py), against real servers
on loopback: the window per destination grows on a server that takes it, halves and
stays under the cap after a 421, tarpits hold a bounded share of the slots, and a
domain's time budget makes what is left unknown (smtp_timeout).

No assertion on wall time: on order of completion, on what the servers saw, and on
verdicts."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from smtp_fixtures import Net

from mailsift.smtp import DomainProbe
from mailsift.smtp.pacing import is_rate_reply
from mailsift.testing.smtp_server import SmtpFarm
from mailsift.testing.world import World
from mailsift.verifier import Verifier


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


async def test_window_grows_on_a_server_that_takes_it(net: Net):
    # A server that judges each RCPT in turn: more sessions are what make it faster.
    boxes = {f"u{i}@big.test" for i in range(0, 300, 2)}
    server = net.server("accept", mailboxes=boxes, latency=0.01, latency_model="serial")
    emails = [f"u{i}@big.test" for i in range(300)]
    prober = net.prober(per_domain_concurrency=2, max_per_domain_concurrency=8)
    probe = await prober.probe("big.test", [server.host], emails)

    assert kinds(probe) == ["accepted" if e in boxes else "not_found" for e in emails]
    stats = prober.domain_stats["big.test"]
    assert server.max_concurrent > 2  # grew past where it started
    assert server.max_concurrent <= 8  # never past its ceiling
    assert stats.window == server.max_concurrent
    assert stats.refusals == 0 and stats.cap is None
    assert stats.connections == server.connections == probe.connections
    assert stats.rcpts == len(server.commands("RCPT"))


async def test_a_provider_ceiling_from_data_bounds_the_window(net: Net):
    prober = net.prober(max_per_domain_concurrency=20)
    # data/providers.json: the big providers 20, a company's own server 10
    assert prober.ceiling(["gmail-smtp-in.l.google.com"]) == 20
    assert prober.ceiling(["mx.company.test"]) == 10
    assert net.prober(max_per_domain_concurrency=3).ceiling(["gmail-smtp-in.l.google.com"]) == 3


async def test_after_a_421_for_too_many_connections_the_window_stays_under_the_cap(net: Net):
    boxes = {f"u{i}@capped.test" for i in range(0, 240, 3)}
    server = net.server("accept", mailboxes=boxes, latency=0.02, max_connections=3)
    emails = [f"u{i}@capped.test" for i in range(240)]
    prober = net.prober(
        per_domain_concurrency=2, max_rcpt_per_connection=10, smtp_reconnect_delay=0.05
    )
    probe = await prober.probe("capped.test", [server.host], emails)

    # every address answered, none given up because of the refusals
    assert kinds(probe) == ["accepted" if e in boxes else "not_found" for e in emails]
    stats = prober.domain_stats["capped.test"]
    assert server.refused_busy >= 1  # it did grow into the server's limit
    assert stats.cap is not None and stats.cap <= 3
    # at least 24 sessions (10 RCPTs each), yet the server refused only the one session
    # that crossed its limit: new sessions go one beyond what the server has shown it
    # takes, and never beyond the cap once it is known
    assert server.connections >= 24
    assert server.refused_busy == 1
    assert server.max_concurrent_after_refusal <= 3
    assert stats.refusals == server.refused_busy


async def test_rate_replies_at_rcpt_are_asked_again_not_given_up(net: Net):
    # The first two sessions get "451 4.7.1 rate limited" for their last RCPTs (a
    # provider throttling a client); later sessions are answered.
    boxes = {f"u{i}@rate.test" for i in range(40)}
    throttled = {f"u{i}@rate.test": (451, "4.7.1 Rate limit exceeded, slow down") for i in range(30, 40)}
    server = net.server("accept", mailboxes=boxes, rcpt_replies=throttled)
    emails = sorted(boxes, key=lambda e: int(e[1:].split("@")[0]))
    prober = net.prober(smtp_reconnect_delay=0.05, smtp_domain_budget=1.5)
    probe = await prober.probe("rate.test", [server.host], emails)
    # the server never stops throttling them: asked again until the budget ran out,
    # then unknown (a timeout), never a verdict on the mailbox
    assert kinds(probe)[:30] == ["accepted"] * 30
    assert kinds(probe)[30:] == ["timeout"] * 10
    assert len([c for c in server.commands("RCPT") if "u35@" in c]) >= 2
    assert prober.domain_stats["rate.test"].refusals >= 2
    assert prober.domain_stats["rate.test"].budget_spent


def test_which_replies_are_rate_pressure():
    assert is_rate_reply(421, "4.7.0 Too many concurrent connections, try again later")
    assert is_rate_reply(451, "4.7.1 Rate limit exceeded, slow down")
    assert is_rate_reply(450, "4.2.1 The user you are trying to contact is receiving mail at a rate")
    assert not is_rate_reply(450, "4.2.0 Greylisted, please try again later")
    assert not is_rate_reply(452, "4.5.3 Too many recipients")
    assert not is_rate_reply(421, "4.7.0 mx.example Error: too many errors")
    assert not is_rate_reply(550, "5.7.1 Too many connections")  # permanent: not "later"


async def test_tarpit_domains_do_not_hold_the_others(net: Net):
    """Six tarpits (they never send a banner) with more addresses than anyone, so they
    are first in line, and twenty healthy domains, for 4 connection slots: the healthy
    domains all finish before any tarpit's budget runs out."""
    tarpits = [net.server("tarpit") for _ in range(6)]
    healthy = [net.server("accept", mailboxes={f"a@h{n}.test"}) for n in range(20)]
    prober = net.prober(
        concurrency=4,
        smtp_slow_share=0.5,
        smtp_slow_after=0.2,
        smtp_timeout=5.0,
        smtp_domain_budget=3.0,
    )
    finished: list[str] = []

    async def probe(domain: str, host: str, emails: list[str]) -> DomainProbe:
        result = await prober.probe(domain, [host], emails)
        finished.append(domain)
        return result

    jobs = [
        probe(f"t{n}.test", server.host, [f"u{i}@t{n}.test" for i in range(30)])
        for n, server in enumerate(tarpits)
    ] + [
        probe(f"h{n}.test", server.host, [f"a@h{n}.test", f"b@h{n}.test"])
        for n, server in enumerate(healthy)
    ]
    results = await asyncio.gather(*jobs)

    assert set(finished[:20]) == {f"h{n}.test" for n in range(20)}
    for result in results[6:]:
        assert kinds(result) == ["accepted", "not_found"]
    for result in results[:6]:
        assert set(kinds(result)) == {"timeout"}
        assert prober.domain_stats[result.domain].slow
    # the tarpits held at most the slow share (2) of the slots after the first 0.2 s
    assert sum(s.max_concurrent for s in tarpits) <= 4 + 2 * len(tarpits)


async def test_domain_budget_makes_the_rest_unknown_smtp_timeout(world: World) -> None:
    boxes = [f"u{i}@slow.test" for i in range(0, 40, 2)]
    world.add_domain(
        "slow.test", "accept", mailboxes=boxes, latency=0.1, latency_model="serial",
        pipelining=False,
    )
    emails = [f"u{i}@slow.test" for i in range(40)]
    settings = world.settings(smtp_domain_budget=1.5, max_per_domain_concurrency=1)
    async with Verifier(settings) as verifier:
        results = [r async for r in verifier.verify_many(emails)]
        stats = verifier.prober.domain_stats["slow.test"]

    answered = [r for r in results if r.status != "unknown"]
    rest = [r for r in results if r.status == "unknown"]
    assert answered and rest  # some answered within the budget, the rest not
    assert {r.reason for r in rest} == {"smtp_timeout"}
    for r in answered:  # what was answered keeps its verdict
        assert r.status == ("valid" if r.email in boxes else "invalid")
    assert stats.budget_spent


def test_cli_verify_json_summary_reports_what_each_domain_cost(world: World) -> None:
    world.add_domain("acme.test", "accept", mailboxes=[f"u{i}@acme.test" for i in range(0, 30, 2)])
    world.add_domain("globex.test", "catch_all")
    emails = [f"u{i}@acme.test" for i in range(30)] + ["x@globex.test", "not-an-address"]
    env = {**os.environ, **world.env()}
    plain = subprocess.run(
        [sys.executable, "-m", "mailsift.cli", "verify", "--json", *emails[:2]],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert [json.loads(line)["email"] for line in plain.stdout.splitlines()] == emails[:2]

    proc = subprocess.run(
        [sys.executable, "-m", "mailsift.cli", "verify", "--json", "--summary", "-"],
        input="\n".join(emails) + "\n", capture_output=True, text=True, env=env, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)  # one object: the results and the summary
    assert [r["email"] for r in out["results"]] == emails
    summary = out["summary"]
    assert summary["addresses"] == 32
    assert summary["by_status"] == {"valid": 15, "invalid": 16, "risky": 1}
    acme, globex = summary["domains"]  # largest first
    assert (acme["domain"], acme["addresses"], globex["domain"]) == ("acme.test", 30, "globex.test")
    assert acme["connections"] >= 1 and acme["rcpts"] == 31  # and the catch-all probe
    assert acme["window"] >= 1 and acme["refusals_421"] == 0 and acme["seconds"] >= 0
    assert summary["smtp_connections"] == acme["connections"] + globex["connections"]
