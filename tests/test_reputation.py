"""``mailsift.reputation``: disposable, role, free-provider, provider and typo signals."""

from __future__ import annotations

import dataclasses
import json
from importlib import resources

import disposable_email_domains
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailsift.reputation import (
    ProviderRule,
    is_disposable,
    is_free_provider,
    is_role_account,
    known_providers,
    provider_from_mx,
    provider_rule,
    suggest_domain,
)
from mailsift.syntax import Address, parse_address


def _data(name: str) -> str:
    return resources.files("mailsift.data").joinpath(name).read_text(encoding="utf-8")


def _data_list(name: str) -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in _data(name).splitlines())
    return [line for line in lines if line]


def _iana_tlds() -> set[str]:
    # hypothesis vendors the IANA root zone list (tlds-alpha-by-domain.txt)
    text = resources.files("hypothesis.vendor").joinpath("tlds-alpha-by-domain.txt").read_text()
    return {line.strip().lower() for line in text.splitlines() if line and line[0] != "#"}


# --- disposable ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "domain",
    [
        "mailinator.com",
        "MAILINATOR.COM",
        "mailinator.com.",
        "x.mailinator.com",
        "a.b.yopmail.com",
        "guerrillamail.com",
        "10minutemail.com",
    ],
)
def test_disposable_domains_and_their_subdomains(domain: str) -> None:
    assert is_disposable(domain)


@pytest.mark.parametrize(
    "domain",
    [
        "gmail.com",
        "example.com",
        "acme.test",
        "com",
        "",
        "acmemailinator.com",
        "mailinator.com.evil.org",
    ],
)
def test_not_disposable(domain: str) -> None:
    assert not is_disposable(domain)


def test_every_listed_domain_is_disposable_and_the_allowlist_wins() -> None:
    block = disposable_email_domains.blocklist
    assert len(block) > 1000
    sample = sorted(block)[::250]
    assert all(is_disposable(d) for d in sample)
    assert all(is_disposable("sub." + d) for d in sample)
    for domain in getattr(disposable_email_domains, "allowlist", ()):
        assert not is_disposable(domain)


def test_no_free_provider_is_disposable() -> None:
    free = _data_list("free_providers.txt")
    assert len(free) > 100 and all(is_free_provider(d) for d in free)
    assert not [d for d in free if is_disposable(d)]


# --- role accounts ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "local",
    [
        "info",
        "INFO",
        "Info",
        "admin",
        "sales",
        "support",
        "postmaster",
        "hostmaster",
        "webmaster",
        "abuse",
        "contact",
        "hello",
        "billing",
        "office",
        "team",
        "marketing",
        "hr",
        "jobs",
        "careers",
        "help",
        "security",
        "privacy",
        "press",
        "noreply",
        "no-reply",
        "no.reply",
        "no_reply",
        "No.Reply",
        "do-not-reply",
        "donotreply",
        "info+newsletter",
        "sales+eu",
        "mailer-daemon",
        "customer.service",
        "customer_care",
    ],
)
def test_role_accounts(local: str) -> None:
    assert is_role_account(local)


@pytest.mark.parametrize(
    "local",
    ["jane", "jane.doe", "info.jane", "infojane", "salesman", "j.smith+info", "", "+info", "..."],
)
def test_people_are_not_role_accounts(local: str) -> None:
    assert not is_role_account(local)


def test_role_accounts_from_parsed_addresses() -> None:
    result = parse_address("No-Reply+Bounce@Example.com")
    assert isinstance(result, Address) and is_role_account(result.local)


# --- free providers --------------------------------------------------------------------


@pytest.mark.parametrize(
    "domain",
    [
        "gmail.com",
        "googlemail.com",
        "yahoo.com",
        "yahoo.co.uk",
        "hotmail.com",
        "hotmail.fr",
        "outlook.com",
        "live.com",
        "msn.com",
        "aol.com",
        "icloud.com",
        "me.com",
        "mac.com",
        "proton.me",
        "protonmail.com",
        "gmx.de",
        "gmx.net",
        "web.de",
        "yandex.ru",
        "mail.ru",
        "zoho.com",
        "fastmail.com",
        "tutanota.com",
        "qq.com",
        "163.com",
        "GMAIL.COM",
        "gmail.com.",
    ],
)
def test_free_providers(domain: str) -> None:
    assert is_free_provider(domain)


@pytest.mark.parametrize(
    "domain", ["acme.com", "mail.gmail.com", "google.com", "example.com", "", "com"]
)
def test_not_free_providers(domain: str) -> None:
    assert not is_free_provider(domain)


# --- provider from MX ------------------------------------------------------------------


@pytest.mark.parametrize(
    "hosts, provider",
    [
        (["aspmx.l.google.com", "alt1.aspmx.l.google.com"], "google"),
        (["ASPMX.L.GOOGLE.COM."], "google"),
        (["aspmx2.googlemail.com"], "google"),
        (["smtp.google.com"], "google"),
        (["acme-com.mail.protection.outlook.com"], "microsoft"),
        (["hotmail-com.olc.protection.outlook.com"], "microsoft"),
        (["acme-com.r-v1.mx.microsoft"], "microsoft"),
        (["mta5.am0.yahoodns.net", "mta6.am0.yahoodns.net"], "yahoo"),
        (["mx-aol.mail.gm0.yahoodns.net"], "yahoo"),
        (["mx.zoho.com", "mx2.zoho.com"], "zoho"),
        (["mx.zoho.eu"], "zoho"),
        (["mail.protonmail.ch", "mailsec.protonmail.ch"], "proton"),
        (["mx01.mail.icloud.com"], "apple"),
        (["in1-smtp.messagingengine.com"], "fastmail"),
        (["eu-smtp-inbound-1.mimecast.com"], "mimecast"),
        (["mx0a-00123401.pphosted.com"], "proofpoint"),
        (["mx1-us1.ppe-hosted.com"], "proofpoint"),
        (["d123456a.ess.barracudanetworks.com"], "barracuda"),
        (["mx.yandex.net"], "yandex"),
        (["mx00.emig.gmx.net"], "gmx"),
        (["mx00.ionos.de"], "ionos"),
        (["inbound-smtp.us-east-1.amazonaws.com"], "amazon"),
        (["mx1.emailsrvr.com"], "rackspace"),
        (["mx.acme.com", "aspmx.l.google.com"], "google"),  # first host that matches decides
        (["mx.acme.com"], "other"),
        (["ec2-1-2-3-4.compute-1.amazonaws.com"], "other"),
        (["notgoogle.com"], "other"),
        (["google.com.evil.org"], "other"),
        (["127.0.0.5"], "other"),
        ([], "other"),
        (["", "."], "other"),
    ],
)
def test_provider_from_mx(hosts: list[str], provider: str) -> None:
    assert provider_from_mx(hosts) == provider
    assert provider_from_mx(tuple(hosts)) == provider


def test_provider_from_mx_takes_the_most_preferred_known_host() -> None:
    assert provider_from_mx(["eu-smtp-inbound-1.mimecast.com", "aspmx.l.google.com"]) == "mimecast"


def test_provider_rules_are_data() -> None:
    assert provider_rule("yahoo") == ProviderRule(accepts_all=True)
    assert provider_rule("yahoo").notes  # documented in the data file
    assert provider_rule("google") == ProviderRule(accepts_all=False)
    # Microsoft 365: accept-all is per tenant, left to the catch-all probe (see providers.json)
    assert provider_rule("microsoft").accepts_all is False
    assert provider_rule("other") == ProviderRule()
    assert provider_rule("no-such-provider") == ProviderRule()
    with pytest.raises(dataclasses.FrozenInstanceError):
        provider_rule("yahoo").accepts_all = False  # type: ignore[misc]


def test_every_provider_in_the_data_file_is_recognisable() -> None:
    data = json.loads(_data("providers.json"))["providers"]
    assert set(known_providers()) == {*data, "other"}
    for name, spec in data.items():
        assert isinstance(spec["accepts_all"], bool), name
        for suffix in spec["mx_suffixes"]:
            assert provider_from_mx([f"mx1.{suffix}"]) == name, suffix


# --- typo suggestions ------------------------------------------------------------------


@pytest.mark.parametrize(
    "typed, intended",
    [
        ("gmial.com", "gmail.com"),
        ("gmai.com", "gmail.com"),
        ("gnail.com", "gmail.com"),
        ("GMIAL.COM.", "gmail.com"),
        ("gmail.con", "gmail.com"),
        ("gmial.con", "gmail.com"),
        ("gmail.cmo", "gmail.com"),
        ("gmail.co", "gmail.com"),
        ("gmail.cm", "gmail.com"),
        ("gmail.om", "gmail.com"),
        ("gmailcom", "gmail.com"),
        ("hotmial.com", "hotmail.com"),
        ("hotmal.com", "hotmail.com"),
        ("hotmaul.com", "hotmail.com"),
        ("yaho.com", "yahoo.com"),
        ("yahooo.com", "yahoo.com"),
        ("outlok.com", "outlook.com"),
        ("outllok.com", "outlook.com"),
        ("icloud.con", "icloud.com"),
        ("iclould.com", "icloud.com"),
        ("hotmail.co.uk.", None),
        ("hotmial.co.uk", "hotmail.co.uk"),
        ("yahoo.fr", None),
        ("acme.con", "acme.com"),  # .con is no TLD: fixed for any domain
        ("acme.cmo", "acme.com"),
        ("acme.ogr", "acme.org"),
        ("acme.co", None),  # .co is a real TLD
        ("acme.cm", None),
        ("acme.com", None),
    ],
)
def test_suggest_domain(typed: str, intended: str | None) -> None:
    assert suggest_domain(typed) == intended


@pytest.mark.parametrize(
    "domain",
    [
        "gmail.com",
        "googlemail.com",
        "ymail.com",
        "mail.com",
        "email.com",
        "gmx.com",
        "gmx.net",
        "me.com",
        "mac.com",
        "msn.com",
        "live.com",
        "aol.com",
        "qq.com",
        "hotmail.com",
        "outlook.com",
    ],
)
def test_no_suggestion_for_real_popular_domains(domain: str) -> None:
    assert suggest_domain(domain) is None


@pytest.mark.parametrize(
    "domain", ["mee.com", "qqq.com", "q.com", "aok.com", "acme.test", "", "com"]
)
def test_short_names_and_unrelated_domains_get_no_guess(domain: str) -> None:
    assert suggest_domain(domain) is None


def test_tld_typos_are_not_real_tlds() -> None:
    tld_typos = json.loads(_data("typo_domains.json"))["tld_typos"]
    assert not set(tld_typos) & _iana_tlds()


def test_typo_map_points_at_known_domains_and_never_from_one() -> None:
    data = json.loads(_data("typo_domains.json"))
    popular = set(data["popular"])
    free = set(_data_list("free_providers.txt"))
    for typo, target in data["typos"].items():
        assert target in popular | free, target
        assert typo not in popular | free, typo
    assert popular <= free  # popular mailbox domains are all real providers


@settings(deadline=None, max_examples=200)
@given(st.text(max_size=40))
def test_suggest_domain_is_total_and_never_echoes(domain: str) -> None:
    suggestion = suggest_domain(domain)
    if suggestion is not None:
        assert suggestion != domain.lower().rstrip(".")
        assert suggestion.isascii() and suggestion == suggestion.lower()
        assert suggest_domain(suggestion) is None  # a suggestion is final


@settings(deadline=None, max_examples=200)
@given(st.text(max_size=40))
def test_signals_are_total(text: str) -> None:
    assert isinstance(is_disposable(text), bool)
    assert isinstance(is_role_account(text), bool)
    assert isinstance(is_free_provider(text), bool)
    assert isinstance(provider_from_mx([text]), str)


def test_load_reads_every_data_file_so_that_first_use_reads_none() -> None:
    """A flow reads the data files as it starts (``load``), off the verify step's path."""
    from mailsift import reputation

    caches = [reputation._disposable_lists, reputation._role_accounts, reputation._free_providers,
              reputation._typo_data, reputation._rules, reputation._providers]
    for cache in caches:
        cache.cache_clear()
    reputation.load()
    read = [cache.cache_info().misses for cache in caches]
    assert read == [1] * len(caches)
    assert reputation.is_disposable("mailinator.com")
    assert reputation.is_role_account("info")
    assert reputation.is_free_provider("gmail.com")
    assert reputation.suggest_domain("gmial.com") == "gmail.com"
    assert reputation.provider_rule(reputation.provider_from_mx(["gmail-smtp-in.l.google.com"]))
    assert [cache.cache_info().misses for cache in caches] == read  # nothing read again
