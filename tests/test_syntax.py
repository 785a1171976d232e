"""``mailsift.syntax.parse_address``: properties (Hypothesis) and the decisions it makes."""

from __future__ import annotations

import dataclasses
import string

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mailsift.syntax import (
    MAX_ADDRESS_OCTETS,
    MAX_LOCAL_OCTETS,
    Address,
    SyntaxProblem,
    is_special_use,
    parse_address,
)

PROPERTY = settings(deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow])

CONTROL = {chr(c) for c in [*range(0x20), 0x7F, *range(0x80, 0xA0)]}
ATEXT = string.ascii_letters + string.digits + "!#$%&'*+-/=?^_`{|}~"

# --- strategies ------------------------------------------------------------------------

any_char = st.characters(exclude_categories=())  # everything, lone surrogates included
any_text = st.text(alphabet=any_char, max_size=300)
decoded_bytes = st.binary(max_size=300).map(lambda b: b.decode("utf-8", "surrogateescape"))

ascii_atom = st.text(alphabet=ATEXT, min_size=1, max_size=12)
ascii_local = st.lists(ascii_atom, min_size=1, max_size=3).map(".".join)
ldh_label = st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9-]{0,10}[A-Za-z0-9])?", fullmatch=True).filter(
    lambda label: label[2:4] != "--"
)
ascii_domain = st.tuples(
    st.lists(ldh_label, min_size=1, max_size=3),
    st.sampled_from(["com", "ORG", "net", "De", "io", "example", "test"]),
).map(lambda parts: ".".join([*parts[0], parts[1]]))
ascii_address = st.tuples(ascii_local, ascii_domain).map("@".join)

intl_atom = st.text(
    alphabet=st.one_of(st.sampled_from(ATEXT), st.characters(categories=["L", "N"])),
    min_size=1,
    max_size=8,
)
intl_label = st.text(alphabet=st.characters(categories=["Ll", "Lo", "Nd"]), min_size=1, max_size=8)
intl_address = st.tuples(
    st.lists(intl_atom, min_size=1, max_size=2).map(".".join),
    st.lists(st.one_of(ldh_label, intl_label), min_size=1, max_size=2).map(".".join),
    st.sampled_from(["com", "test", "xn--p1ai", "рф", "中国"]),
).map(lambda p: f"{p[0]}@{p[1]}.{p[2]}")

_TRICKY = list('@"<>.[]()\\,:; -_aAxné\u00fc0ｃ。\u0338\u0301\u200b')
tricky = st.tuples(
    st.text(alphabet=st.sampled_from(_TRICKY), max_size=24),
    st.sampled_from(["", "@example.com", "@Ex.TEST", "@mx.localhost", "@xn--bcher-kva.de", "@a"]),
).map("".join)
anything = st.one_of(any_text, decoded_bytes, ascii_address, intl_address, tricky)
injected = st.sampled_from(sorted(CONTROL - {"\t"}))  # a tab at either end is trimmed


def parse(text, **kw):
    return parse_address(text, allow_test_domains=kw.pop("allow", True), **kw)


# --- properties ------------------------------------------------------------------------


@PROPERTY
@given(anything)
@example("\ud800@example.com")
@example("a@b.com\x00")
@example("\udcff\udcfe")
@example("a@" + "a" * 70 + ".com")
def test_any_text_yields_a_value_never_an_exception(text: str) -> None:
    for allow in (False, True):
        result = parse_address(text, allow_test_domains=allow)
        assert isinstance(result, (Address, SyntaxProblem))
        assert result.original == text
        if isinstance(result, SyntaxProblem):
            assert result.reason in {"syntax", "special_use"}
            assert result.message and "internal error" not in result.message
            assert len(result.email) <= 320
            assert not CONTROL & set(result.email)
            result.email.encode("utf-8")  # no lone surrogates in the display form


@PROPERTY
@given(anything)
def test_valid_addresses_are_normalized_fixed_points(text: str) -> None:
    result = parse(text)
    if not isinstance(result, Address):
        return
    assert result.email == f"{result.local}@{result.domain}"
    assert result.domain.isascii() and result.domain == result.domain.lower()
    assert not result.domain.endswith(".") and "." in result.domain
    assert not CONTROL & set(result.email)
    assert "\r" not in result.email and "\n" not in result.email
    assert len(result.email.encode()) <= MAX_ADDRESS_OCTETS
    assert len(result.local.encode()) <= MAX_LOCAL_OCTETS
    assert result.smtputf8 == (not result.local.isascii())
    again = parse(result.email)
    assert isinstance(again, Address)
    assert again.email == result.email and again.domain_unicode == result.domain_unicode
    # the U-label form parses to the same address
    assert parse(f"{result.local}@{result.domain_unicode}").email == result.email


@PROPERTY
@given(ascii_address)
def test_plain_ascii_addresses_are_accepted_with_case_of_local_part_kept(text: str) -> None:
    result = parse(text)
    assert isinstance(result, Address), result
    local, _, domain = text.partition("@")
    assert result.local == local
    assert result.domain == domain.lower() == result.domain_unicode
    assert not result.smtputf8


@PROPERTY
@given(ascii_address, st.data())
def test_control_characters_anywhere_are_refused(text: str, data: st.DataObject) -> None:
    at = data.draw(st.integers(0, len(text)))
    char = data.draw(injected)
    result = parse(text[:at] + char + text[at:])
    assert isinstance(result, SyntaxProblem)
    assert result.reason == "syntax"


@PROPERTY
@given(st.one_of(ascii_address, intl_address), st.sampled_from(["\r", "\n", "\r\n"]), st.data())
def test_cr_lf_anywhere_is_refused(text: str, newline: str, data: st.DataObject) -> None:
    at = data.draw(st.integers(0, len(text)))
    for allow in (False, True):
        result = parse_address(text[:at] + newline + text[at:], allow_test_domains=allow)
        assert isinstance(result, SyntaxProblem) and result.reason == "syntax"
        assert "\r" not in result.email and "\n" not in result.email


@PROPERTY
@given(ascii_address, st.text(" \t", max_size=3), st.text(" \t", max_size=3))
def test_surrounding_spaces_and_tabs_are_trimmed(text: str, before: str, after: str) -> None:
    result = parse(before + text + after)
    assert isinstance(result, Address)
    assert result.email == parse(text).email
    assert result.original == before + text + after


# --- examples: normalization -----------------------------------------------------------


def test_domain_is_lowered_and_local_case_kept() -> None:
    result = parse_address("John.Doe@Example.COM")
    assert isinstance(result, Address)
    assert result.email == "John.Doe@example.com"
    assert (result.local, result.domain, result.smtputf8) == ("John.Doe", "example.com", False)


def test_rfc2142_names_keep_their_case_too() -> None:
    # python-email-validator lower-cases 'Info' and friends; the contract keeps the local part
    assert parse_address("Info@Example.com").email == "Info@example.com"


def test_idn_domain_becomes_a_label_and_unicode_local_needs_smtputf8() -> None:
    result = parse("jöhn@bücher.test")
    assert isinstance(result, Address)
    assert result.email == "jöhn@xn--bcher-kva.test"
    assert result.domain == "xn--bcher-kva.test"
    assert result.domain_unicode == "bücher.test"
    assert result.local == "jöhn" and result.smtputf8


def test_a_label_input_upper_case_is_accepted() -> None:
    result = parse_address("ann@XN--BCHER-KVA.com")
    assert isinstance(result, Address)
    assert (result.domain, result.domain_unicode) == ("xn--bcher-kva.com", "bücher.com")
    assert not result.smtputf8


def test_uts46_mapping_full_width_and_upper_case_unicode() -> None:
    # UTS #46: full-width letters and the ideographic full stop map to their plain forms
    result = parse_address("ann@ＢÜCHER\u3002com")
    assert isinstance(result, Address)
    assert result.email == "ann@xn--bcher-kva.com"


def test_local_part_is_put_in_nfc() -> None:
    result = parse_address("Jose\u0301@example.com")  # e + combining acute
    assert isinstance(result, Address)
    assert result.local == "Jos\u00e9" and result.smtputf8


def test_non_ascii_local_with_ascii_domain() -> None:
    result = parse_address("用户@example.com")
    assert isinstance(result, Address)
    assert result.email == "用户@example.com" and result.smtputf8


# --- examples: refusals ----------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "plainaddress",
        "@example.com",
        "ann@",
        "ann@@example.com",
        "ann@exa mple.com",
        "ann smith@example.com",
        "ann..smith@example.com",
        ".ann@example.com",
        "ann.@example.com",
        "ann@example..com",
        "ann@-example.com",
        "ann@example.com.",  # trailing dot: not in an SMTP path (RFC 5321 4.1.2)
        "ann@example.c0m1",  # top-level label must end in a letter
        "ann@123.123.123.123",
        '"ann smith"@example.com',  # quoted local part: refused on purpose
        "ann@[192.0.2.1]",  # IP literal: refused on purpose
        "ann@[IPv6:2001:db8::1]",
        "Ann <ann@example.com>",  # display names are the normalize task's job
        "mailto:ann@example.com",
        "(comment)ann@example.com",
        "ann@localhost",  # dotless, even with test domains allowed
        "ann@com",
        "ann@test",
        "ann＠example.com",  # full-width at-sign
        "ann@exam\u202eple.com",  # bidi override
        "ann\u2028@example.com",  # line separator
        "ann@😀.com",  # IDNA 2008 forbids emoji
        "ann@xn--example.com",  # not a valid A-label
        "ann\tsmith@example.com",  # a tab inside is a control character
    ],
)
def test_refused_as_syntax(text: str) -> None:
    for allow in (False, True):
        result = parse_address(text, allow_test_domains=allow)
        assert isinstance(result, SyntaxProblem), result
        assert result.reason == "syntax" and result.message


def test_quoted_and_ip_literal_messages_say_what_is_wrong() -> None:
    assert "Quot" in parse_address('"ann"@example.com').message
    assert "IP" in parse_address("ann@[192.0.2.1]").message


def test_cr_lf_injection_never_becomes_an_address() -> None:
    for text in [
        "ann@example.com\r\nRCPT TO:<victim@example.org>",
        "ann@example.com\n",
        "\rann@example.com",
        "ann\r@example.com",
        "ann@example.com\x00",
        "ann@exam\x85ple.com",  # C1 NEL
        "ann@example.com\x7f",
    ]:
        result = parse(text)
        assert isinstance(result, SyntaxProblem) and result.reason == "syntax"
        assert not CONTROL & set(result.email)
        assert "\ufffd" in result.email


def test_lone_surrogates_are_refused_and_displayed_safely() -> None:
    result = parse_address("ann\udce9@example.com")
    assert isinstance(result, SyntaxProblem) and result.reason == "syntax"
    assert result.email == "ann\ufffd@example.com"
    assert result.original == "ann\udce9@example.com"


def test_megabyte_input_is_refused_with_a_bounded_display_form() -> None:
    text = "a" * 1_000_000 + "@example.com"
    result = parse_address(text)
    assert isinstance(result, SyntaxProblem) and result.reason == "syntax"
    assert "too long" in result.message
    assert len(result.email) == 320 and result.original is text


def test_non_string_input() -> None:
    assert parse_address(b"ann@example.com").email == "ann@example.com"  # type: ignore[arg-type]
    assert isinstance(parse_address(b"ann\xff@example.com"), SyntaxProblem)  # type: ignore[arg-type]
    for value in (None, float("nan")):
        result = parse_address(value)  # type: ignore[arg-type]
        assert isinstance(result, SyntaxProblem) and result.message == "empty address"
    result = parse_address(42)  # type: ignore[arg-type]
    assert isinstance(result, SyntaxProblem) and result.original == "42"
    assert "not a string" in result.message


def test_results_are_frozen() -> None:
    result = parse_address("ann@example.com")
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.email = "other@example.com"  # type: ignore[misc]


# --- length limits (RFC 5321 4.5.3.1) ---------------------------------------------------


def _domain_of_length(n: int) -> str:
    """An ASCII domain of exactly ``n`` characters ending in ``.com``."""
    labels, remaining = [], n - len(".com")
    while remaining > 0:
        size = min(63, remaining)
        if remaining - size == 1:  # avoid leaving a lone dot's worth
            size -= 2
        labels.append("a" * size)
        remaining -= size + 1
    domain = ".".join(labels) + ".com"
    assert len(domain) == n, (len(domain), n)
    return domain


def test_local_part_limit_is_64_octets() -> None:
    assert isinstance(parse_address("a" * 64 + "@example.com"), Address)
    result = parse_address("a" * 65 + "@example.com")
    assert isinstance(result, SyntaxProblem) and result.reason == "syntax"


def test_local_part_limit_counts_utf8_octets() -> None:
    assert isinstance(parse_address("é" * 32 + "@example.com"), Address)  # 64 octets
    result = parse_address("é" * 33 + "@example.com")  # 33 characters, 66 octets
    assert isinstance(result, SyntaxProblem) and "64" in result.message


def test_address_limit_is_254_octets() -> None:
    at_limit = "a" * 64 + "@" + _domain_of_length(254 - 65)
    assert len(at_limit) == 254
    assert isinstance(parse_address(at_limit), Address)
    over = "a" * 64 + "@" + _domain_of_length(255 - 65)
    result = parse_address(over)
    assert isinstance(result, SyntaxProblem) and result.reason == "syntax"


def test_address_limit_applies_to_the_a_label_form() -> None:
    # 216 octets in UTF-8, but 264 once the domain is in A-labels (what RCPT TO carries
    # to a server without SMTPUTF8)
    def label(offset: int) -> str:  # Latin-1 letters and CJK ideographs, all distinct
        return "".join(
            chr(0xE0 + (offset + i) % 23) + chr(0x4E00 + 97 * (offset + i)) for i in range(3)
        )

    domain = ".".join(label(3 * n) for n in range(12)) + ".com"
    text = "a" * 20 + "@" + domain
    assert len(text.encode()) < 254
    result = parse_address(text)
    assert isinstance(result, SyntaxProblem) and result.reason == "syntax"
    shorter = "a" * 10 + "@" + ".".join(label(3 * n) for n in range(11)) + ".com"
    accepted = parse_address(shorter)
    assert isinstance(accepted, Address) and len(accepted.email) <= 254


def test_trimmed_spaces_do_not_count_towards_the_limit() -> None:
    at_limit = "a" * 64 + "@" + _domain_of_length(254 - 65)
    assert isinstance(parse_address("  " + at_limit + "\t "), Address)


# --- special-use domains (RFC 6761, 6762, 7686, 9476) -----------------------------------


@pytest.mark.parametrize(
    "text, domain",
    [
        ("ann@acme.test", "acme.test"),
        ("ann@mx.localhost", "mx.localhost"),
        ("ann@printer.local", "printer.local"),
        ("ann@hidden.onion", "hidden.onion"),
        ("ann@nothing.invalid", "nothing.invalid"),
        ("ann@router.home.arpa", "router.home.arpa"),
        ("ann@thing.alt", "thing.alt"),
        ("Ann@Bücher.Test", "xn--bcher-kva.test"),
        ("ann@MX.LOCALHOST", "mx.localhost"),
    ],
)
def test_special_use_domains(text: str, domain: str) -> None:
    refused = parse_address(text)
    assert isinstance(refused, SyntaxProblem)
    assert refused.reason == "special_use"
    assert "MAILSIFT_ALLOW_TEST_DOMAINS" in refused.message
    accepted = parse_address(text, allow_test_domains=True)
    assert isinstance(accepted, Address), accepted
    assert accepted.domain == domain
    assert accepted.email == text.partition("@")[0] + "@" + domain
    assert is_special_use(accepted.domain)


def test_syntax_errors_win_over_special_use() -> None:
    for text in ["ann smith@acme.test", "ann smith@mx.localhost", "ann@bad_label.local"]:
        for allow in (False, True):
            result = parse_address(text, allow_test_domains=allow)
            assert isinstance(result, SyntaxProblem) and result.reason == "syntax", text


def test_example_domains_are_not_special_use() -> None:
    # RFC 6761 6.5: software should not treat them specially; DNS shows their null MX
    for text in ["ann@example.com", "ann@example.org", "ann@mail.example"]:
        assert isinstance(parse_address(text), Address)
    assert not is_special_use("example.com")
    assert is_special_use("x.test") and is_special_use("TEST") and not is_special_use("test.com")


# --- agreement with python-email-validator ------------------------------------------------


def _validator_verdict(text: str):
    from email_validator import EmailNotValidError, validate_email

    try:
        return validate_email(
            text,
            check_deliverability=False,
            strict=True,
            allow_smtputf8=True,
            allow_quoted_local=False,
            allow_domain_literal=False,
            test_environment=False,
        )
    except EmailNotValidError:
        return None


@PROPERTY
@given(anything)
@example("Info@Example.com")
@example("ann@mx.localhost")
@example("ann@xn--zz.local")
@example("é" * 33 + "@example.com")
@example("a<b@example.com>")
@example("ann@b@example.com")
def test_same_verdict_as_the_whole_address_through_email_validator(text: str) -> None:
    """parse_address checks local part and (cached) domain apart; that must not change
    any verdict of python-email-validator on the whole address, except where we decide
    otherwise on purpose: trimming, and local parts counted in octets, not characters."""
    text = text.strip(" \t")
    ours = parse_address(text)
    theirs = _validator_verdict(text)
    expected_valid = theirs is not None and len(theirs.local_part.encode()) <= MAX_LOCAL_OCTETS
    assert isinstance(ours, Address) == expected_valid, (ours, theirs)
    if isinstance(ours, Address):
        assert ours.domain == theirs.ascii_domain
        assert ours.domain_unicode == theirs.domain
        assert ours.local.casefold() == theirs.local_part.casefold()  # it lower-cases 'Info'
        assert ours.smtputf8 == theirs.smtputf8
