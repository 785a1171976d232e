"""Reading real SMTP replies (issue 8, part 2).

``tests/data/smtp_replies.csv`` holds real reply texts from public sources (see
``tests/data/README.md``), each with the stage it occurs at and the verdict it must give.
Every row is read twice: by :func:`classify_reply` directly, and end to end, served by a
simulated MX host at its stage (banner, EHLO, MAIL FROM or RCPT) and probed by the real
engine. What a user relies on: a refusal of *our* client is never ``invalid``; a
mailbox that does not exist is.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import pytest

from mailsift import Verifier
from mailsift.result import REASONS
from mailsift.smtp import classify_reply
from mailsift.smtp.pacing import is_rate_reply
from mailsift.smtp.replies import (
    fold,
    phrase_rules,
    phrases,
    plain_pattern,
    sanitize_message,
)
from mailsift.testing.world import World

TABLE = Path(__file__).parent / "data" / "smtp_replies.csv"
ABOUT_THE_CLIENT = {"blocked", "temporary", "rejected"}


@dataclass(frozen=True)
class Row:
    id: str
    stage: str
    code: int
    text: str
    kind: str
    status: str
    reason: str
    source: str
    note: str

    @property
    def domain(self) -> str:
        return f"{self.id}.replies.test"

    @property
    def email(self) -> str:
        return f"someone@{self.domain}"


def _load() -> list[Row]:
    with TABLE.open(encoding="utf-8", newline="") as fh:
        return [Row(**{**r, "code": int(r["code"])}) for r in csv.DictReader(fh)]  # type: ignore[arg-type]


ROWS = _load()


def _ids(row: Row) -> str:
    return f"{row.id}-{row.stage}-{row.code}-{row.kind}"


# -- the table itself --------------------------------------------------------------------


def test_table_is_large_sourced_and_consistent():
    assert len(ROWS) >= 80
    assert len({r.id for r in ROWS}) == len(ROWS)
    assert all(r.source.strip() for r in ROWS)
    assert {r.stage for r in ROWS} == {"banner", "helo", "mail", "rcpt"}
    for row in ROWS:
        assert REASONS[row.reason] == row.status, row.id
    # Multi-line replies whose reason is not on the first line, and non-English texts.
    assert any("\n" in r.text and r.kind == "blocked" for r in ROWS)
    assert any(
        not r.text.isascii() or "Benutzer" in r.text or "destinataire" in r.text for r in ROWS
    )


# -- classify_reply on every row (cheap) -------------------------------------------------


@pytest.mark.parametrize("row", ROWS, ids=_ids)
def test_classify_reply_reads_the_table(row: Row):
    assert classify_reply(row.code, row.text, row.stage) == row.kind  # type: ignore[arg-type]


def test_no_refusal_of_the_client_is_invalid():
    refusals = [r for r in ROWS if r.kind in ABOUT_THE_CLIENT]
    assert len(refusals) >= 40
    wrong = [
        r.id
        for r in refusals
        if classify_reply(r.code, r.text, r.stage) in ("not_found", "disabled")  # type: ignore[arg-type]
    ]
    assert wrong == []


def test_every_mailbox_not_found_is_invalid():
    gone = [r for r in ROWS if r.status == "invalid"]
    assert len(gone) >= 30
    wrong = [
        r.id
        for r in gone
        if classify_reply(r.code, r.text, r.stage) not in ("not_found", "disabled")  # type: ignore[arg-type]
    ]
    assert wrong == []


@pytest.mark.parametrize(
    ("code", "text", "kind"),
    [
        # A client refusal on any line of a multi-line reply wins over mailbox wording.
        (
            550,
            "5.1.1 User unknown\n5.1.1 your IP 192.0.2.1 is listed on zen.spamhaus.org",
            "blocked",
        ),
        (550, "Requested action not taken: mailbox unavailable\nTry again later", "blocked"),
        # 4xx is never a verdict on the mailbox, whatever the wording.
        (450, "4.1.1 <a@b.test>: Recipient address rejected: User unknown", "temporary"),
        (451, "4.7.1 Rate limit exceeded, try again later", "temporary"),
        (451, "4.7.1 Client host rejected: cannot find your reverse hostname", "blocked"),
        # Over quota whatever the code; accents and case do not matter.
        (550, "Boîte PLEINE", "full"),
        (554, "5.0.0 casella piena", "full"),
        (550, "Skrzynka odbiorcy jest pełna", "full"),
        (550, "Ящик получателя переполнен", "full"),
        # Mailbox wording in the languages of the data file.
        (550, "Empfänger unbekannt", "not_found"),
        (550, "5.1.1 Nie ma takiego użytkownika", "not_found"),
        (550, "Usuário inexistente", "not_found"),
        (550, "Onbekende gebruiker", "not_found"),
        (550, "Пользователь не найден", "not_found"),
        # The recipient's account blocked is the mailbox; our IP blocked is us.
        (550, "5.2.1 The recipient account is blocked", "disabled"),
        (550, "5.7.1 Your IP has been blocked", "blocked"),
        # RFC 3463: x.1.7/x.1.8 are about the sender (us); 5.2.3 is size, not quota.
        (550, "5.1.8 Bad sender's system address", "blocked"),
        (552, "5.2.3 Message size exceeds fixed maximum message size", "rejected"),
        (552, "Requested mail action aborted: exceeded storage allocation", "full"),
        (501, "5.1.3 Bad recipient address syntax", "error"),
        # Words that are about the client only in context.
        (550, "User jane@x.test not listed in Domino Directory", "not_found"),
        (
            550,
            "5.1.1 <a@b.test>: Recipient address rejected: User unknown in relay recipient table",
            "not_found",
        ),
        (554, "5.7.1 <a@b.test>: Relay access denied", "blocked"),
        (550, "5.1.1 User unknown; please check the address and try again", "not_found"),
        (550, "Your account has been disabled", "blocked"),
    ],
)
def test_classify_reply_rules(code: int, text: str, kind: str):
    assert classify_reply(code, text, "rcpt") == kind


def test_fast_patterns_match_exactly_what_the_plain_rules_match():
    # The compiled patterns are rearranged for speed; they must accept the same texts.
    texts = [fold(r.text) for r in ROWS] + [
        fold(t)
        for t in (
            "xspf pass",
            "spf fail",
            "spamming",
            "an email account is locked",
            "account",
            "IP=1.2.3.4",
            "?ip=1.2.3.4",
            "mailbox foo unknown",
            "user (x) unknown",
            "Empfänger existiert nicht",
            "casella piena",
            "",
            "\n",
        )
    ]
    for name, rules in phrase_rules().items():
        fast, plain = getattr(phrases(), name), plain_pattern(rules)
        assert [bool(fast.search(t)) for t in texts] == [bool(plain.search(t)) for t in texts], name


def test_phrase_data_is_folded_like_the_text():
    assert fold("Boîte ÜBERSCHRITTEN") == "boite uberschritten"
    data = phrases()
    assert data is phrases()  # compiled once
    assert data.full.search(fold("Benutzer hat das Speichervolumen überschritten"))


# -- every row through the simulated internet, at its stage ------------------------------


@pytest.fixture(scope="module")
def replies_world():
    """One domain per row, its MX host giving that row's reply at that row's stage."""
    with World() as world:
        for row in ROWS:
            reply = (row.code, row.text)
            if row.stage == "banner":
                world.add_domain(row.domain, banner=reply)
            elif row.stage == "helo":
                world.add_domain(row.domain, helo_reply=reply)
            elif row.stage == "mail":
                world.add_domain(row.domain, mail_from_reply=reply)
            else:
                world.add_domain(row.domain, rcpt_replies={row.email: reply})
        yield world
    assert not any(line.upper().startswith("DATA") for line in world.transcript)


@pytest.mark.parametrize("row", ROWS, ids=_ids)
async def test_row_through_the_engine(replies_world: World, row: Row):
    # One Verifier per row: its run sees only this domain, so a verdict never leans on
    # what the other rows' servers said.
    rate = row.stage == "rcpt" and is_rate_reply(row.code, row.text) and row.kind != "blocked"
    # A rate refusal at RCPT is asked again (pause doubling) until the domain's time
    # budget runs out (issue 10), then unknown/smtp_timeout: a short budget here.
    settings = replies_world.settings(smtp_domain_budget=1.5) if rate else replies_world.settings()
    async with Verifier(settings) as verifier:
        result = await verifier.verify(row.email)
    if rate:
        assert (result.status, result.reason) == ("unknown", "smtp_timeout")
        return
    assert (result.status, result.reason) == (row.status, row.reason)
    assert result.mx_host == f"mx1.{row.domain}"
    if row.stage == "rcpt" and row.code != 421:
        assert result.smtp_code == row.code
        assert result.smtp_message == sanitize_message(row.text)  # every line, one line
