"""Shared causes named from the results of a run (mailsift/diagnosis.py), fed result by
result as the pipeline does. The end-to-end cases (a blocked port 25, a middlebox, a
refusal of our IP, through the simulated internet) are in test_own_faults.py."""

from __future__ import annotations

from mailsift.diagnosis import PathDiagnostics


def refused(d: PathDiagnostics, site: int) -> list[str]:
    return [x.cause for x in d.note("smtp_unreachable", "connection refused", None, f"mx.site{site}.test")]


def test_port_25_is_named_once_when_every_site_tried_refused_the_connection() -> None:
    d = PathDiagnostics(smtp_port=25)
    assert refused(d, 1) == [] and refused(d, 2) == []  # two sites: not yet a pattern
    assert refused(d, 3) == ["port25_blocked"]
    assert refused(d, 4) == []  # said once
    assert [x.cause for x in d.diagnoses()] == ["port25_blocked"]
    assert d.diagnoses()[0].sites == 4


def test_a_site_that_was_reached_is_not_counted_and_port_25_is_open() -> None:
    d = PathDiagnostics()
    for site in (1, 2, 3):
        refused(d, site)
    # site 1 answered a later address: its refusals were that server's, and port 25 is open
    d.note("accepted", "2.1.5 Ok", 250, "mx.site1.test")
    assert d.diagnoses() == []


def test_a_few_dead_servers_in_a_healthy_run_are_not_a_diagnosis() -> None:
    d = PathDiagnostics()
    for site in range(20):
        d.note("accepted", "2.1.5 Ok", 250, f"mx.ok{site}.test")
    for site in range(3):
        d.note("smtp_blocked", "554 5.7.1 client host rejected", 554, f"mx.bad{site}.test")
    assert d.diagnoses() == []  # 3 of 23 sites: under the share


def test_the_client_refused_everywhere_is_named_with_an_example() -> None:
    d = PathDiagnostics(helo_hostname="probe.example.test")
    d.note("accepted", "2.1.5 Ok", 250, "mx.ok.test")  # reached, then refused elsewhere
    msg = "550 5.7.1 Service unavailable; client [203.0.113.9] blocked using zen.spamhaus.org"
    said = [x for site in range(5) for x in d.note("smtp_blocked", msg, 550, f"mx.site{site}.test")]
    assert [x.cause for x in said] == ["client_refused"]
    # named at the 4th refusing site: 4 of the 5 sites tried
    assert "zen.spamhaus.org" in said[0].message and (said[0].sites, said[0].tried) == (4, 5)


def test_companies_under_a_two_label_public_suffix_are_sites_of_their_own() -> None:
    # mx.acme.co.uk and mx.bolt.co.uk are two companies, not one site "co.uk": four UK
    # companies refusing the connection are four sites, enough to name the block
    d = PathDiagnostics()
    for name in ("acme", "bolt", "crane"):
        d.note("smtp_unreachable", "connection refused", None, f"mx.{name}.co.uk")
    assert d.diagnoses() and d.diagnoses()[0].sites == 3
    # ...while the MX hosts of one provider stay one site
    p = PathDiagnostics()
    for host in ("aspmx.l.google.com", "alt1.aspmx.l.google.com", "alt2.aspmx.l.google.com"):
        p.note("smtp_unreachable", "connection refused", None, host)
    assert p.diagnoses() == []
