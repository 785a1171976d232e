"""The sandbox backend: deterministic verdicts without any network."""

from __future__ import annotations

import pytest

from mailsift.backends import Backend, get_backend
from mailsift.backends.sandbox import SandboxBackend
from mailsift.result import REASONS
from mailsift.settings import Settings


async def _verify(emails: list[str], **settings: object) -> list:
    backend = SandboxBackend(Settings(**settings))
    return [r async for r in backend.verify_many(emails)]


def _without_time(results: list) -> list[dict]:
    return [{**r.to_dict(), "verified_at": None} for r in results]


async def test_the_three_verdicts() -> None:
    valid, invalid, risky = await _verify(
        ["jane@valid.test", "john@invalid.test", "someone@example.com"]
    )
    assert (valid.status, valid.reason) == ("valid", "accepted")
    assert (invalid.status, invalid.reason) == ("invalid", "mailbox_not_found")
    assert (risky.status, risky.reason) == ("risky", "sandbox_risky")
    for result in (valid, invalid, risky):
        assert REASONS[result.reason] == result.status
        assert result.checks.syntax_valid is True
    assert valid.score >= 0.7 and invalid.score < 0.3 and 0.3 <= risky.score < 0.7


async def test_test_domains_work_without_allow_test_domains() -> None:
    # the sandbox's own domains are accepted whatever MAILSIFT_ALLOW_TEST_DOMAINS says
    valid, invalid = await _verify(["a@valid.test", "b@invalid.test"], allow_test_domains=False)
    assert valid.status == "valid" and invalid.status == "invalid"


@pytest.mark.parametrize("allow_test_domains", [False, True])
async def test_every_other_valid_address_is_risky_whatever_its_domain(allow_test_domains) -> None:
    """The integration guide's sandbox: valid.test valid, invalid.test invalid, all else
    risky, special-use domains included (issue 8: c@elsewhere.test was invalid)."""
    emails = ["c@elsewhere.test", "a@example.com", "b@host.invalid", "d@box.localhost",
              "e@x.valid.test", "f@gmail.com"]
    results = await _verify(emails, allow_test_domains=allow_test_domains)
    assert [(r.email, r.status, r.reason) for r in results] == [
        (e, "risky", "sandbox_risky") for e in emails
    ]


async def test_syntax_layer_comes_first() -> None:
    results = await _verify(["not an address", "a@valid.test\r\nRCPT TO:<x@y.z>", "", "@valid.test"])
    assert [(r.status, r.reason) for r in results] == [("invalid", "syntax")] * 4
    assert all(r.checks.syntax_valid is False for r in results)


async def test_normalized_and_deterministic() -> None:
    emails = ["  Jane.Doe@VALID.Test ", "x@sub.valid.test"]
    first = await _verify(emails, allow_test_domains=True)
    again = await _verify(emails, allow_test_domains=True)
    assert first[0].email == "Jane.Doe@valid.test"  # local part kept, domain lower-cased
    assert first[0].status == "valid"
    assert first[1].status == "risky"  # only the exact sandbox domains have fixed verdicts
    assert _without_time(first) == _without_time(again)


async def test_one_result_per_input_in_order() -> None:
    emails = [f"user{i}@{'valid' if i % 3 == 0 else 'invalid'}.test" for i in range(1000)]
    results = await _verify(emails)
    assert [r.email for r in results] == emails
    assert [r.status for r in results[:3]] == ["valid", "invalid", "invalid"]


def test_selected_by_settings() -> None:
    backend = get_backend(Settings(backend="sandbox"))
    assert isinstance(backend, SandboxBackend)
    assert isinstance(backend, Backend)
    assert backend.name == "sandbox"
