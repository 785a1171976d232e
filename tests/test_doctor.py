"""``mailsift doctor`` in each broken setting of the simulated internet, and in a healthy one.

Every setting is built from real loopback servers (mailsift.testing): a resolver that lies
or fails, a closed port, a SYN-dropping firewall, port-25 middleboxes, a refusing banner,
blocklist zones, PTR records and sender domains. Nothing reaches the internet.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from mailsift.doctor import Check, DoctorReport, MxTarget, parse_mx_host, run_doctor
from mailsift.settings import Settings
from mailsift.testing import BEHAVIOURS, MxSpec, World
from mailsift.testing.doctor_world import (
    DNSBL_TEST_ZONES,
    PROBE_DOMAINS,
    list_on_dnsbl,
    populate_doctor_world,
)

EGRESS = "127.0.0.1"  # what the MX hosts see of a client on loopback


@pytest.fixture
def healthy(world: World) -> Iterator[World]:
    """A host with everything right: truthful resolver, open port 25, FCrDNS matching the
    HELO name, on no blocklist, a sender domain with MX and SPF."""
    populate_doctor_world(world, egress_ip=EGRESS)
    yield world
    # The doctor says EHLO and QUIT, never MAIL, RCPT or DATA.
    assert {line.split()[0].upper() for line in world.transcript} <= {"EHLO", "QUIT"}


def settings_for(world: World, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "dnsbl_zones": list(DNSBL_TEST_ZONES),
        "doctor_mx_domains": list(PROBE_DOMAINS),
        "dns_timeout": 0.5,
        "smtp_timeout": 1.0,
    }
    values.update(overrides)
    return world.settings(**values)


def doctor(world: World, mx_hosts: list[str] = (), **overrides: object) -> DoctorReport:  # type: ignore[assignment]
    settings = settings_for(world, **overrides)
    targets = [parse_mx_host(h, settings.smtp_port) for h in mx_hosts]
    return asyncio.run(run_doctor(settings, targets))


def check(report: DoctorReport, name: str) -> Check:
    matches = [c for c in report.checks if c.name == name]
    assert len(matches) == 1, [c.name for c in report.checks]
    return matches[0]


def statuses(report: DoctorReport) -> dict[str, str]:
    return {c.name: c.status for c in report.checks}


def cli(world: World, *args: str, **env_overrides: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILSIFT_")}
    env.update(world.env(dns_timeout=0.5, smtp_timeout=1))
    env.update(
        MAILSIFT_DNSBL_ZONES=",".join(DNSBL_TEST_ZONES),
        MAILSIFT_DOCTOR_MX_DOMAINS=",".join(PROBE_DOMAINS),
    )
    env.update(env_overrides)
    return subprocess.run(
        [sys.executable, "-m", "mailsift.cli", "doctor", *args],
        capture_output=True, text=True, env=env, timeout=60,
    )


# --------------------------------------------------------------------------- healthy


def test_healthy_world_passes_everything_through_the_real_cli(healthy: World) -> None:
    proc = cli(healthy)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("mailsift doctor: resolver 127.0.0.1:")
    body = lines[1:-1]
    assert body and all(line.startswith("PASS  ") for line in body)
    assert len(body) == 12  # resolver, 3 x port25, egress, rdns, helo, 3 x dnsbl, MX, SPF
    text = proc.stdout
    assert "NXDOMAIN for a made-up name" in text
    assert f"{EGRESS} -> probe.mailsift.test -> {EGRESS} (forward-confirmed)" in text
    assert f"{EGRESS}, as echoed in the EHLO reply of mx1.gmail.test" in text
    assert "-> fix:" not in text  # nothing to do
    assert lines[-1] == "12 PASS: this host can verify mail."
    assert "Traceback" not in proc.stderr


def test_json_report_structure_through_the_real_cli(healthy: World) -> None:
    healthy.dns.remove(f"{'.'.join(reversed(EGRESS.split('.')))}.in-addr.arpa")  # no PTR
    proc = cli(healthy, "--json")
    assert proc.returncode == 1
    report = json.loads(proc.stdout)
    assert set(report) == {"ok", "exit_code", "counts", "resolver", "helo_hostname",
                           "mail_from", "egress_ip", "checks"}
    assert (report["ok"], report["exit_code"], report["egress_ip"]) == (False, 1, EGRESS)
    assert report["counts"] == {"PASS": 10, "WARN": 1, "FAIL": 1}
    for item in report["checks"]:
        assert set(item) == {"name", "kind", "subject", "status", "finding", "action", "details"}
        assert item["status"] in ("PASS", "WARN", "FAIL")
        assert (item["action"] is None) == (item["status"] == "PASS")
    by_name = {c["name"]: c for c in report["checks"]}
    assert by_name["rdns"]["status"] == "FAIL"
    assert by_name["rdns"]["details"]["ptr"] == []
    assert by_name["dnsbl zen.spamhaus.test"]["details"]["query"] == "1.0.0.127.zen.spamhaus.test"
    assert [c["kind"] for c in report["checks"]][:2] == ["resolver", "port25"]


# --------------------------------------------------------------------------- resolver


def test_resolver_that_nxdomains_everything_fails_and_nothing_is_blamed_on_dns(healthy: World) -> None:
    healthy.dns.set_global_failure("nxdomain")
    report = doctor(healthy)
    resolver = check(report, "resolver")
    assert resolver.status == "FAIL"
    assert "NXDOMAIN for everything, even the root and 'test'" in resolver.finding
    assert "MAILSIFT_DNS_NAMESERVERS" in (resolver.action or "")
    # Only the resolver FAILs: no false "no PTR", "domain does not exist" or "listed".
    assert [c.name for c in report.checks if c.status == "FAIL"] == ["resolver"]
    assert all(c.finding.startswith("not checked") for c in report.checks[1:])
    assert report.exit_code == 1


def test_placeholders_are_named_even_without_a_sane_resolver(healthy: World) -> None:
    """The defaults (mailsift.localhost) need no DNS to be wrong."""
    healthy.dns.set_global_failure("servfail")
    report = doctor(healthy, helo_hostname="mailsift.localhost", mail_from="verify@mailsift.localhost")
    assert statuses(report)["helo"] == "FAIL"
    assert check(report, "helo").finding.startswith("mailsift.localhost is a placeholder")
    assert check(report, "mail_from_mx mailsift.localhost").status == "FAIL"
    assert [c.name for c in report.checks if c.status == "FAIL"] == [
        "resolver", "helo", "mail_from_mx mailsift.localhost"]


def test_resolver_that_servfails_everything_fails_and_names_itself(healthy: World) -> None:
    healthy.dns.set_global_failure("servfail")
    proc = cli(healthy)
    assert proc.returncode == 1
    first = proc.stdout.splitlines()[1]
    assert first.startswith("FAIL  resolver")
    assert f"{healthy.dns.nameserver} fails (SERVFAIL / refused / unreachable) for every query" in first
    assert "-> fix: point MAILSIFT_DNS_NAMESERVERS at a working resolver" in first


def test_resolver_that_never_answers(healthy: World) -> None:
    healthy.dns.set_global_failure("timeout")
    report = doctor(healthy, dns_timeout=0.3)
    resolver = check(report, "resolver")
    assert resolver.status == "FAIL"
    assert f"{healthy.dns.nameserver} times out for every query" in resolver.finding
    assert [c.name for c in report.checks if c.status == "FAIL"] == ["resolver"]


def test_resolver_that_answers_everything_is_caught(healthy: World) -> None:
    healthy.dns.set_global_failure("wildcard", wildcard_ip="127.0.0.1")
    resolver = check(doctor(healthy), "resolver")
    assert resolver.status == "FAIL"
    assert "answers a name that cannot exist" in resolver.finding
    assert "(A 127.0.0.1)" in resolver.finding


def test_port_25_is_still_tested_by_ip_under_a_lying_resolver(healthy: World) -> None:
    healthy.dns.set_global_failure("nxdomain")
    ip = healthy.hosts["mx1.gmail.test"]
    report = doctor(healthy, [f"{ip}:{healthy.smtp.port}"])
    assert check(report, f"port25 {ip}:{healthy.smtp.port}").status == "PASS"
    assert check(report, "egress_ip").status == "PASS"
    assert check(report, "rdns").finding.startswith("not checked")


# --------------------------------------------------------------------------- port 25


def test_port_25_refused(world: World) -> None:
    populate_doctor_world(world)
    for domain in ("closed1.test", "closed2.test"):
        world.add_domain(domain, mx=[MxSpec(10, None)])  # an A record, nothing listening
    report = doctor(world, doctor_mx_domains=["closed1.test", "closed2.test"])
    for domain in ("closed1.test", "closed2.test"):
        line = check(report, f"port25 mx1.{domain}:{world.smtp.port}")
        assert line.status == "FAIL"
        assert "connection refused" in line.finding and "outbound port 25 is blocked" in line.finding
        assert "open outbound port 25" in (line.action or "")
    # Without a banner nobody echoed our address: the IP-based checks say why they did not run.
    assert check(report, "egress_ip").status == "WARN"
    assert "MAILSIFT_EGRESS_IP" in (check(report, "egress_ip").action or "")
    assert check(report, "rdns").finding == (
        "not checked: the egress IP is unknown (see the egress_ip line)"
    )
    # Given the IP, they run.
    with_ip = doctor(world, doctor_mx_domains=["closed1.test"], egress_ip=EGRESS)
    assert statuses(with_ip)["rdns"] == statuses(with_ip)["helo"] == "PASS"
    assert statuses(with_ip)["dnsbl zen.spamhaus.test"] == "PASS"


@pytest.mark.parametrize(
    ("mode", "words"),
    [
        ("close", "accepted the connection, then closed it before any banner: a middlebox"),
        ("reset", "accepted the connection, then reset it before any banner: a middlebox"),
        ("silent", "connected, but no banner within 1 s"),
    ],
)
def test_port_25_middlebox_is_named(world: World, mode: str, words: str) -> None:
    populate_doctor_world(world)
    box = world.add_middlebox("boxed.test", mode=mode)  # type: ignore[arg-type]
    report = doctor(world, doctor_mx_domains=["boxed.test"])
    line = check(report, f"port25 mx1.boxed.test:{world.smtp.port}")
    assert line.status == "FAIL"
    assert words in line.finding
    assert box.connections == 1


def test_one_dead_mx_among_answering_ones_is_that_servers_fault(world: World) -> None:
    populate_doctor_world(world)
    world.add_middlebox("boxed.test")
    world.add_domain("closed.test", mx=[MxSpec(10, None)])
    report = doctor(world, doctor_mx_domains=["gmail.test", "boxed.test", "closed.test"])
    assert check(report, f"port25 mx1.gmail.test:{world.smtp.port}").status == "PASS"
    for name, said in (("boxed", "accepted, then closed before any banner"),
                       ("closed", "connection refused")):
        line = check(report, f"port25 mx1.{name}.test:{world.smtp.port}")
        assert line.status == "WARN"
        assert line.finding.startswith(said)
        assert "other MX hosts answered, so port 25 is open here" in line.finding


def test_port_25_middlebox_through_the_real_cli(world: World) -> None:
    populate_doctor_world(world)
    world.add_middlebox("boxed.test")
    proc = cli(world, "--mx-host", f"mx1.boxed.test:{world.smtp.port}", "--egress-ip", EGRESS)
    assert proc.returncode == 1
    (line,) = [x for x in proc.stdout.splitlines() if x.startswith("FAIL")]
    assert line.startswith(f"FAIL  port25 mx1.boxed.test:{world.smtp.port}")
    assert "intercepts port 25" in line and "-> fix:" in line


def test_port_25_connect_timeout_is_a_firewall(world: World) -> None:
    populate_doctor_world(world)
    ip = "127.0.250.19"
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
        report = doctor(world, [f"{ip}:{world.smtp.port}"], smtp_timeout=0.5)
    finally:
        for s in fillers:
            s.close()
        listener.close()
    line = check(report, f"port25 {ip}:{world.smtp.port}")
    assert line.status == "FAIL"
    assert "TCP connect timed out after 0.5 s" in line.finding
    assert "a firewall drops outbound port 25" in line.finding


def test_a_refusing_banner_is_about_us(world: World) -> None:
    populate_doctor_world(world)
    world.add_domain("strict.test", BEHAVIOURS["banner_554"])
    line = check(doctor(world, doctor_mx_domains=["strict.test"]),
                 f"port25 mx1.strict.test:{world.smtp.port}")
    assert line.status == "FAIL"
    assert "port 25 is open, but the server refuses this host" in line.finding
    assert "client host blocked using zen.spamhaus.org" in line.finding


def test_an_mx_on_a_private_address_is_not_connected_to(healthy: World) -> None:
    """As the verifier (issue 9): a public domain's MX on loopback/private space means a
    rewriting resolver, or an intranet; the doctor names it and does not connect."""
    report = doctor(healthy, doctor_mx_domains=["gmail.test"], allow_private_networks=False)
    line = check(report, f"port25 mx1.gmail.test:{healthy.smtp.port}")
    assert line.status == "FAIL"
    assert line.finding.startswith(
        f"mx1.gmail.test resolves to {healthy.hosts['mx1.gmail.test']}, a loopback address: not connected"
    )
    assert healthy.smtp.get(healthy.hosts["mx1.gmail.test"]).connections == 0
    egress = check(doctor(healthy, egress_ip=EGRESS, allow_private_networks=False), "egress_ip")
    assert egress.status == "WARN" and egress.finding.startswith(f"{EGRESS} is a loopback address")


# --------------------------------------------------------------------------- egress IP


def test_configured_egress_ip_that_differs_from_the_echo_warns(healthy: World) -> None:
    line = check(doctor(healthy, egress_ip="127.0.0.9"), "egress_ip")
    assert line.status == "WARN"
    assert line.finding == f"configured 127.0.0.9, but MX hosts saw {EGRESS}"
    assert line.action is not None and line.action.startswith(f"set MAILSIFT_EGRESS_IP={EGRESS}")


def test_no_echo_and_no_configured_ip(world: World) -> None:
    populate_doctor_world(world)
    report = doctor(world, doctor_mx_domains=["yahoo.test"])  # a Postfix: echoes nothing
    assert check(report, f"port25 mx1.yahoo.test:{world.smtp.port}").status == "PASS"
    egress = check(report, "egress_ip")
    assert egress.status == "WARN" and "no MX host tested echoed our address" in egress.finding
    assert check(report, "dnsbl").finding.startswith(
        "not checked (zen.spamhaus.test, bl.spamcop.test, b.barracudacentral.test)"
    )


# --------------------------------------------------------------------------- blocklists


def test_listed_on_a_dnsbl_fails_with_the_lists_reason(healthy: World) -> None:
    list_on_dnsbl(healthy, EGRESS, "zen.spamhaus.test", "127.0.0.4",
                  reason="https://check.spamhaus.org/query/ip/127.0.0.1")
    report = doctor(healthy)
    line = check(report, "dnsbl zen.spamhaus.test")
    assert line.status == "FAIL"
    assert f"{EGRESS} is LISTED (127.0.0.4 XBL: exploited host)" in line.finding
    assert "https://check.spamhaus.org/query/ip/127.0.0.1" in line.finding
    assert "request delisting" in (line.action or "")
    assert statuses(report)["dnsbl bl.spamcop.test"] == "PASS"
    assert report.exit_code == 1


def test_spamhaus_refusing_the_query_is_unknown_not_listed(healthy: World) -> None:
    """127.255.255.254: "query via public/open resolver" -- an error, not a listing."""
    list_on_dnsbl(healthy, EGRESS, "zen.spamhaus.test", "127.255.255.254")
    line = check(doctor(healthy), "dnsbl zen.spamhaus.test")
    assert line.status == "WARN"
    assert "unknown: the list refused the query (127.255.255.254: query via a public/open resolver)" in line.finding
    assert "LISTED" not in line.finding


def test_blocklist_zones_come_from_settings(healthy: World) -> None:
    report = doctor(healthy, dnsbl_zones=["bl.spamcop.test"])
    assert [c.name for c in report.checks if c.kind == "dnsbl"] == ["dnsbl bl.spamcop.test"]
    assert Settings().dnsbl_zones == ["zen.spamhaus.org", "bl.spamcop.net", "b.barracudacentral.org"]


# --------------------------------------------------------------------------- PTR and HELO


def test_missing_ptr_fails(healthy: World) -> None:
    healthy.dns.remove("1.0.0.127.in-addr.arpa")
    report = doctor(healthy)
    rdns = check(report, "rdns")
    assert rdns.status == "FAIL" and rdns.finding.startswith(f"{EGRESS} has no PTR record")
    assert "set its PTR to probe.mailsift.test" in (rdns.action or "")
    helo = check(report, "helo")
    assert helo.status == "WARN" and "HELO and reverse DNS disagree" in helo.finding


def test_ptr_that_does_not_match_the_helo_name(healthy: World) -> None:
    healthy.dns.remove("1.0.0.127.in-addr.arpa")
    healthy.dns.add_ptr(EGRESS, "host-127-0-0-1.isp.test")
    healthy.dns.add_a("host-127-0-0-1.isp.test", EGRESS)
    report = doctor(healthy)
    assert check(report, "rdns").status == "PASS"
    helo = check(report, "helo")
    assert helo.status == "WARN"
    assert helo.action == "set MAILSIFT_HELO_HOSTNAME=host-127-0-0-1.isp.test"


def test_ptr_that_does_not_resolve_back_fails(healthy: World) -> None:
    healthy.dns.remove("1.0.0.127.in-addr.arpa")
    healthy.dns.add_ptr(EGRESS, "elsewhere.isp.test")
    healthy.dns.add_a("elsewhere.isp.test", "127.0.0.66")
    rdns = check(doctor(healthy), "rdns")
    assert rdns.status == "FAIL"
    assert "does not resolve back to 127.0.0.1 (no forward-confirmed reverse DNS)" in rdns.finding


def test_helo_name_that_does_not_resolve_fails(healthy: World) -> None:
    helo = check(doctor(healthy, helo_hostname="nowhere.mailsift.test"), "helo")
    assert helo.status == "FAIL"
    assert "nowhere.mailsift.test does not resolve" in helo.finding
    assert helo.action == "set MAILSIFT_HELO_HOSTNAME to probe.mailsift.test"


# --------------------------------------------------------------------------- MAIL FROM


def test_mail_from_domain_without_mx_and_spf(healthy: World) -> None:
    healthy.dns.add_name("bare.test")  # exists, no MX, no A, no TXT
    report = doctor(healthy, mail_from="verify@bare.test")
    mx = check(report, "mail_from_mx bare.test")
    assert mx.status == "FAIL" and mx.finding.startswith("it has no MX and no address record")
    spf = check(report, "mail_from_spf bare.test")
    assert spf.status == "WARN" and spf.finding.startswith("no SPF record (TXT v=spf1)")
    assert spf.action == 'publish TXT "v=spf1 ip4:127.0.0.1 -all" for bare.test (or include your mail provider\'s)'


def test_mail_from_domain_that_does_not_exist_and_placeholder(healthy: World) -> None:
    gone = check(doctor(healthy, mail_from="verify@gone.test"), "mail_from_mx gone.test")
    assert gone.status == "FAIL" and gone.finding.startswith("the domain does not exist")
    placeholder = check(doctor(healthy, mail_from="verify@mailsift.localhost"),
                        "mail_from_mx mailsift.localhost")
    assert placeholder.status == "FAIL" and "is a placeholder" in placeholder.finding


def test_two_spf_records_are_a_permanent_error(healthy: World) -> None:
    healthy.dns.add_txt("mailsift.test", "v=spf1 -all")
    spf = check(doctor(healthy), "mail_from_spf mailsift.test")
    assert spf.status == "FAIL" and "RFC 7208 4.5" in spf.finding


# --------------------------------------------------------------------------- usage


@pytest.mark.parametrize(
    ("text", "target"),
    [
        ("mx.example.com", MxTarget("mx.example.com", 25)),
        ("MX.Example.com.:2525", MxTarget("mx.example.com", 2525)),
        ("127.0.0.1:2525", MxTarget("127.0.0.1", 2525)),
        ("[::1]:2525", MxTarget("::1", 2525)),
        ("::1", MxTarget("::1", 25)),
    ],
)
def test_parse_mx_host(text: str, target: MxTarget) -> None:
    assert parse_mx_host(text, 25) == target


@pytest.mark.parametrize("text", ["", "a b", "host:0", "host:x", "mx\r\n.test", "[::1]x"])
def test_bad_mx_host_is_one_line_and_exit_2(world: World, text: str) -> None:
    with pytest.raises(ValueError):
        parse_mx_host(text, 25)
    if text == "a b":
        proc = cli(world, "--mx-host", text)
        assert proc.returncode == 2
        assert proc.stderr.startswith("mailsift: bad --mx-host") and "Traceback" not in proc.stderr
