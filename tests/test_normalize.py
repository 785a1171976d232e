"""``tasks.normalize``: cleaning CRM email cells, one key per person, domain batches."""

from __future__ import annotations

import math
import unicodedata
from collections import Counter
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ingest_fixtures import MESSY_CRM_CSV, write_bytes

from tasks.extract import EMAIL_RAW, ROW, SOURCE, read_sources
from tasks.normalize import (
    DOMAIN,
    EMAIL,
    KEY,
    _clean,
    batches_by_domain,
    count_without_email,
    dedupe,
    normalize,
)


def raw_frame(values: list[str | None], source: str = "f.csv") -> pl.DataFrame:
    return pl.DataFrame(
        {
            "Email": values,
            SOURCE: [source] * len(values),
            ROW: list(range(1, len(values) + 1)),
            EMAIL_RAW: values,
        },
        schema={"Email": pl.String, SOURCE: pl.String, ROW: pl.Int64, EMAIL_RAW: pl.String},
    )


def one(raw: str | None) -> tuple[str | None, str | None, str | None]:
    row = normalize(raw_frame([raw])).row(0, named=True)
    return row[EMAIL], row[KEY], row[DOMAIN]


@pytest.mark.parametrize(
    ("raw", "email"),
    [
        ("jane@acme.test", "jane@acme.test"),
        ("Jane.Doe@ACME.Test", "Jane.Doe@acme.test"),  # local part kept, domain lower-cased
        ("  jane@acme.test\t", "jane@acme.test"),
        ("\u00a0jane@acme.test\u00a0", "jane@acme.test"),  # NBSP
        ("\u200bjane@acme.test\u200b", "jane@acme.test"),  # zero-width space
        ("\ufeffjane@acme.test", "jane@acme.test"),  # BOM pasted along
        ("jane@acme.test\r\n", "jane@acme.test"),
        ("Jane Doe <Jane@Acme.test>", "Jane@acme.test"),
        ('"Doe, Jane" <jane@acme.test>', "jane@acme.test"),
        ("<jane@acme.test>", "jane@acme.test"),
        ("mailto:jane@acme.test", "jane@acme.test"),
        ("MAILTO:Jane@ACME.test?subject=Hello%20there&cc=x@y.test", "Jane@acme.test"),
        ("Jane <mailto:jane@acme.test>", "jane@acme.test"),
        ('"jane@acme.test"', "jane@acme.test"),
        ("'jane@acme.test'", "jane@acme.test"),
        ("jane@acme.test,", "jane@acme.test"),
        ("jane@acme.test;", "jane@acme.test"),
        ("jane@acme.test.", "jane@acme.test"),
        ("jane@acme.test (Jane Doe)", "jane@acme.test"),
        ('"john doe"@acme.test', '"john doe"@acme.test'),  # a quoted local part is kept
        ("a@b@Acme.TEST", "a@b@acme.test"),  # domain = after the last '@'
        ("jo+tag@Acme.test", "jo+tag@acme.test"),
        ("not an email", "not an email"),  # kept: the engine calls it invalid
        ("N/A", "N/A"),
        ("jane@", "jane@"),
    ],
)
def test_cleaning(raw: str, email: str) -> None:
    assert one(raw)[0] == email


@pytest.mark.parametrize("raw", [None, "", "   ", "\u00a0", "\u200b", ",", " ; ", '""', "<>"])
def test_empty_becomes_null(raw: str | None) -> None:
    assert one(raw) == (None, None, None)


CELL = st.text(
    alphabet=st.sampled_from(list("aZ.@-+_'\"<>(),;: mailtoMAILTO?=é\u0301\u00a0\u200bxX")),
    max_size=30,
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(st.none(), CELL, st.from_regex(r"[a-z.+]{1,8}@[a-z]{1,5}\.test", fullmatch=True)),
        max_size=20,
    )
)
def test_fast_path_equals_full_cleaning(values: list[str | None]) -> None:
    # normalize() sends only "dirty" cells through the steps; the result must be the same
    # as sending every cell through them.
    fast = normalize(raw_frame(values))[EMAIL]
    full = _clean(pl.Series(values, dtype=pl.String))
    assert fast.to_list() == full.to_list()


def test_key_and_domain() -> None:
    assert one("Jane.Doe@ACME.Test") == ("Jane.Doe@acme.test", "jane.doe@acme.test", "acme.test")
    assert one("no-at-sign") == ("no-at-sign", "no-at-sign", None)
    assert one("jane@") == ("jane@", "jane@", None)


def test_nfc_composed_and_decomposed_collapse() -> None:
    composed = "jos\u00e9@caf\u00e9.test"
    decomposed = unicodedata.normalize("NFD", composed)
    assert composed != decomposed
    out = normalize(raw_frame([composed, decomposed, composed.upper()]))
    # the key carries the domain IDNA-encoded, as the engine and the warehouse store it
    assert out[KEY].to_list() == ["jos\u00e9@xn--caf-dma.test"] * 3
    assert out[EMAIL][1] == composed
    assert out[DOMAIN].to_list() == ["xn--caf-dma.test"] * 3


def test_case_variants_collapse_to_one_key() -> None:
    variants = ["Jane@Acme.test", "JANE@ACME.TEST", "jane@acme.test", " Jane <jAnE@acme.TEST> "]
    unique = dedupe(normalize(raw_frame(variants)))
    assert unique["email"].to_list() == ["jane@acme.test"]
    assert unique["n_rows"].to_list() == [4]


def test_normalize_keeps_every_row_and_column(tmp_path: Path) -> None:
    df = read_sources([str(write_bytes(tmp_path / "crm.csv", MESSY_CRM_CSV))])
    out = normalize(df)
    assert out.height == df.height
    assert out.columns == [*df.columns, EMAIL, KEY, DOMAIN]
    assert out[KEY].to_list() == ["jane.doe@acme.test", "bob@acme.test", None, "ann@beta.test"]


def test_dedupe_across_two_files(tmp_path: Path) -> None:
    write_bytes(tmp_path / "a.csv", "email,name\nJane@Acme.test,J\nbob@beta.test,B\n,nobody\n")
    write_bytes(
        tmp_path / "b.csv", "E-mail;Name\nbob@BETA.test;Bob\njane@acme.TEST;Jane\nzed@acme.test;Z\n"
    )
    rows = normalize(read_sources([str(tmp_path / "a.csv"), str(tmp_path / "b.csv")]))
    unique = dedupe(rows)
    assert unique.columns == ["email", "domain", "n_rows", "first_source", "first_row"]
    assert unique.rows() == [
        ("jane@acme.test", "acme.test", 2, str(tmp_path / "a.csv"), 1),
        ("zed@acme.test", "acme.test", 1, str(tmp_path / "b.csv"), 3),
        ("bob@beta.test", "beta.test", 2, str(tmp_path / "a.csv"), 2),
    ]
    assert count_without_email(rows) == 1
    assert unique["n_rows"].sum() + count_without_email(rows) == rows.height


def test_dedupe_sorted_by_domain_then_email_invalid_last() -> None:
    unique = dedupe(normalize(raw_frame(["b@z.test", "a@z.test", "c@a.test", "junk", "x@m.test"])))
    assert unique["email"].to_list() == ["c@a.test", "x@m.test", "a@z.test", "b@z.test", "junk"]
    assert unique["domain"].to_list() == ["a.test", "m.test", "z.test", "z.test", None]


def test_count_without_email_normalizes_when_needed() -> None:
    assert count_without_email(raw_frame(["a@x.test", None, " ", "\u200b", "junk"])) == 3


def test_dedupe_empty() -> None:
    unique = dedupe(normalize(raw_frame([None, ""])))
    assert unique.height == 0
    assert batches_by_domain(unique) == []


# --------------------------------------------------------------------------- batches


def unique_frame(sizes: dict[str, int]) -> pl.DataFrame:
    emails = [f"u{i}@{domain}" for domain, n in sizes.items() for i in range(n)]
    return dedupe(normalize(raw_frame(emails)))


def check_batches(sizes: dict[str, int], batch_size: int) -> list[list[str]]:
    unique = unique_frame(sizes)
    batches = batches_by_domain(unique, batch_size=batch_size)
    flat = [email for batch in batches for email in batch]
    assert Counter(flat) == Counter(unique["email"].to_list())  # every address exactly once
    assert all(0 < len(batch) <= batch_size for batch in batches)
    spans: dict[str, int] = Counter()
    for batch in batches:
        domains = [email.rpartition("@")[2] for email in batch]
        runs = [d for i, d in enumerate(domains) if i == 0 or d != domains[i - 1]]
        assert len(runs) == len(set(runs)), f"a domain is split inside a batch: {runs}"
        spans.update(set(domains))
    for domain, n in sizes.items():
        if n:  # fewest batches possible: one per batch_size addresses, a small domain whole
            assert spans[domain] == math.ceil(n / batch_size), (domain, n, spans[domain])
    assert len(batches) <= math.ceil(sum(sizes.values()) / batch_size) + len(sizes)
    return batches


def test_batches_example() -> None:
    sizes = {"big.test": 1100, "mid.test": 300, "small.test": 150, "tiny.test": 40, "one.test": 1}
    batches = check_batches(sizes, 500)
    assert sorted(len(b) for b in batches) == sorted([500, 500, 491, 100])
    # small domains are packed together, not one batch each
    assert len(batches) == 4


def test_batches_single_domain_exact_multiple() -> None:
    assert [len(b) for b in check_batches({"x.test": 1000}, 250)] == [250] * 4


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.dictionaries(
        st.from_regex(r"[a-z]{1,8}\.test", fullmatch=True), st.integers(0, 60), max_size=25
    ),
    batch_size=st.integers(1, 40),
)
def test_batches_properties(sizes: dict[str, int], batch_size: int) -> None:
    check_batches(sizes, batch_size)


def test_batches_group_an_unsorted_frame() -> None:
    unique = pl.DataFrame(
        {
            "email": ["a@x.test", "b@y.test", "c@x.test", "junk", "d@y.test"],
            "domain": ["x.test", "y.test", "x.test", None, "y.test"],
        }
    )
    batches = batches_by_domain(unique, batch_size=2)
    assert sorted(map(sorted, batches)) == [
        ["a@x.test", "c@x.test"],
        ["b@y.test", "d@y.test"],
        ["junk"],
    ]


def test_batches_reject_bad_size() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        batches_by_domain(unique_frame({"x.test": 1}), batch_size=0)
