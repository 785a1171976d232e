"""The public address-syntax suites (isemail, hapi/address) against ``parse_address``.

Data: ``tests/data/syntax/`` (copied from the project's shared data; see its README for
sources, licences and columns). Every row is a test, id ``<suite>-<test id>``. Where mailsift decides a case
differently *on purpose*, the case is listed in :data:`DIFFERENCES` with the reason; the
test then asserts that it really differs, so the list cannot rot. Every other row must
match the suite's verdict.

We parse with ``allow_test_domains=True`` so that no row is judged on special-use names
(the suites predate that question); special-use handling has its own tests in
``test_syntax.py``.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from mailsift.syntax import Address, SyntaxProblem, parse_address

DATA_DIR = Path(__file__).resolve().parent / "data" / "syntax"
ISEMAIL = DATA_DIR / "isemail_tests.jsonl"
HAPI = DATA_DIR / "hapi_address_email_tests.jsonl"


@dataclass(frozen=True)
class Case:
    id: str
    address: str
    expected_valid: bool
    options: dict[str, Any] = field(default_factory=dict)
    note: str = ""


def _isemail_cases() -> list[Case]:
    cases = []
    for line in ISEMAIL.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        version = row["suite"].rsplit(" v", 1)[1]  # "tests.xml v3.05" -> "3.05"
        cases.append(
            Case(
                id=f"isemail-{version}-{row['test_id']}",
                address=json.loads(row["address_json"]),
                expected_valid=row["expected_valid"] == "true",
                note=f"{row['category']} {row['diagnosis']}",
            )
        )
    return cases


def _hapi_cases() -> list[Case]:
    cases = []
    for line in HAPI.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        group = "analyze" if row["group"].startswith("analyzeEmail") else "valid"
        cases.append(
            Case(
                id=f"hapi-{group}-{row['index']}",
                address=json.loads(row["address_json"]),
                expected_valid=row["expected_valid"] == "true",
                options=json.loads(row["options_json"]) if row["options_json"] else {},
                note=row["expected_error"] or "",
            )
        )
    return cases


def _load() -> list[Case]:
    if not DATA_DIR.is_dir():
        return []
    return _isemail_cases() + _hapi_cases()


CASES = _load()

# --- deliberate differences ------------------------------------------------------------
# Grouped by reason; the key is the case id. Keep this list as small as the truth allows.

QUOTED = (
    "quoted local part: valid in RFC 5321 4.1.2, refused on purpose (almost never a real "
    "mailbox, usually a paste error in a CRM field)"
)
IP_LITERAL = (
    "IP-literal domain: valid in RFC 5321 4.1.3, refused on purpose (no real mailbox; "
    "probing arbitrary IPs would make the prober a port scanner)"
)
DOTLESS = "single-label domain: refused on purpose (no dotless mail on the public internet)"
DOTLESS_OPTION = DOTLESS + "; hapi ran this row with minDomainSegments=1, we have no such switch"
NUMERIC_TLD = (
    "top-level label ends in a digit: no such TLD can exist (RFC 3696 2), so the address "
    "can never be delivered; isemail rates it RFC5321-valid"
)
NUMERIC_TLD_DNSWARN = NUMERIC_TLD + " (isemail DNSWARN row, verdict came from live DNS)"
BAD_A_LABEL = (
    "'xn--example' is not a valid A-label (IDNA 2008, RFC 5891 5.4); isemail DNSWARN row "
    "whose verdict came from live DNS"
)
TRIMMED = (
    "surrounding spaces are trimmed on purpose (CRM exports carry them); the suites read "
    "them as folding whitespace"
)
EMOJI_DOMAIN = "emoji are DISALLOWED in IDNA 2008 labels (RFC 5892); hapi accepts them"
IGNORE_LENGTH = (
    "length limits are always enforced (RFC 5321 4.5.3.1); hapi ran this row with ignoreLength=true"
)

# fmt: off
_GROUPS: dict[str, list[str]] = {
    QUOTED: [
        "isemail-3.05-42", "isemail-3.05-43", "isemail-3.05-45", "isemail-3.05-46",
        "isemail-3.05-48", "isemail-3.05-55",
        "isemail-3.04-4", "isemail-3.04-6", "isemail-3.04-7", "isemail-3.04-28",
        "isemail-3.04-31", "isemail-3.04-53", "isemail-3.04-54", "isemail-3.04-55",
        "isemail-3.04-56", "isemail-3.04-57", "isemail-3.04-68", "isemail-3.04-91",
        "isemail-3.04-93", "isemail-3.04-95", "isemail-3.04-109", "isemail-3.04-121",
        "isemail-3.04-122", "isemail-3.04-125", "isemail-3.04-134", "isemail-3.04-136",
        "isemail-3.04-137", "isemail-3.04-147", "isemail-3.04-148", "isemail-3.04-150",
        "isemail-3.04-210", "isemail-3.04-211", "isemail-3.04-217", "isemail-3.04-221",
    ],
    IP_LITERAL: [
        "isemail-3.05-61", "isemail-3.05-68", "isemail-3.05-72", "isemail-3.05-75",
        "isemail-3.05-77", "isemail-3.05-79", "isemail-3.05-81",
        "isemail-3.04-10", "isemail-3.04-11", "isemail-3.04-12", "isemail-3.04-13",
        "isemail-3.04-14", "isemail-3.04-15", "isemail-3.04-16", "isemail-3.04-17",
        "isemail-3.04-39", "isemail-3.04-45", "isemail-3.04-98", "isemail-3.04-197",
        "isemail-3.04-230", "isemail-3.04-231", "isemail-3.04-233", "isemail-3.04-236",
        "isemail-3.04-239", "isemail-3.04-241", "isemail-3.04-244", "isemail-3.04-247",
        "isemail-3.04-249", "isemail-3.04-250", "isemail-3.04-251", "isemail-3.04-252",
        "isemail-3.04-253", "isemail-3.04-254", "isemail-3.04-258", "isemail-3.04-260",
        "isemail-3.04-262", "isemail-3.04-264", "isemail-3.04-270",
    ],
    DOTLESS: [
        "isemail-3.05-5", "isemail-3.05-166",
        "isemail-3.04-49", "isemail-3.04-116", "isemail-3.04-190", "isemail-3.04-201",
    ],
    DOTLESS_OPTION: [
        "hapi-valid-5", "hapi-valid-198", "hapi-valid-216", "hapi-valid-217", "hapi-valid-218",
    ],
    NUMERIC_TLD: [
        "isemail-3.05-23", "isemail-3.05-24",
        "isemail-3.04-48", "isemail-3.04-97", "isemail-3.04-216",
    ],
    NUMERIC_TLD_DNSWARN: ["isemail-3.04-8", "isemail-3.04-96"],
    BAD_A_LABEL: ["isemail-3.04-279"],
    TRIMMED: ["isemail-3.05-157", "isemail-3.05-158", "hapi-valid-185", "hapi-valid-186"],
    EMOJI_DOMAIN: ["hapi-valid-32"],
    IGNORE_LENGTH: ["hapi-valid-220"],
}
# fmt: on

DIFFERENCES: dict[str, str] = {case: reason for reason, ids in _GROUPS.items() for case in ids}

#: hapi options the test applies on top of our verdict; any other option must be listed.
_APPLIED_OPTIONS = {"allowUnicode", "tlds"}
_UNAPPLIED_OPTIONS = {"minDomainSegments", "ignoreLength"}


def _verdict(case: Case) -> tuple[bool, Address | SyntaxProblem]:
    result = parse_address(case.address, allow_test_domains=True)
    valid = isinstance(result, Address)
    if valid and case.options.get("allowUnicode") is False:
        valid = case.address.isascii()
    if valid and "tlds" in case.options:
        allowed = {tld.lower() for tld in case.options["tlds"]["allow"]["__set__"]}
        valid = result.domain.rsplit(".", 1)[-1] in allowed
    return valid, result


def test_suites_are_present() -> None:
    assert DATA_DIR.is_dir(), f"syntax suites not found at {DATA_DIR}"
    counts = Counter(case.id.split("-", 1)[0] for case in CASES)
    assert counts == {"isemail": 443, "hapi": 248}
    assert len({case.id for case in CASES}) == len(CASES), "case ids must be unique"


def test_difference_list_names_real_cases() -> None:
    ids = {case.id for case in CASES}
    assert set(DIFFERENCES) <= ids
    assert sum(len(v) for v in _GROUPS.values()) == len(DIFFERENCES), "a case listed twice"


def test_every_hapi_option_is_applied_or_listed() -> None:
    for case in CASES:
        unknown = set(case.options) - _APPLIED_OPTIONS - _UNAPPLIED_OPTIONS
        assert not unknown, f"{case.id}: option {unknown} neither applied nor listed"
        if set(case.options) & _UNAPPLIED_OPTIONS:
            # we cannot apply it, so the row either agrees anyway or is a listed difference
            ours, _ = _verdict(case)
            assert ours == case.expected_valid or case.id in DIFFERENCES, case.id


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_suite_case(case: Case) -> None:
    ours, result = _verdict(case)
    if isinstance(result, SyntaxProblem):
        # allow_test_domains is on: nothing in the suites may be refused as special-use
        assert result.reason == "syntax"
        assert "internal error" not in result.message
    else:
        # every accepted vector normalizes to a fixed point
        again = parse_address(result.email, allow_test_domains=True)
        assert isinstance(again, Address) and again.email == result.email
    if case.id in DIFFERENCES:
        assert ours != case.expected_valid, (
            f"{case.id} is listed as a deliberate difference ({DIFFERENCES[case.id]}) "
            "but now agrees with the suite: remove it from the list"
        )
    else:
        assert ours == case.expected_valid, (
            f"{case.address!r}: suite says valid={case.expected_valid} ({case.note}), "
            f"mailsift says {result!r}"
        )
