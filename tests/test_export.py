"""``tasks.export``: one CSV per status, original columns kept, no row lost, atomic."""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path

import polars as pl
import pytest
from ingest_fixtures import MESSY_CRM_CSV, write_bytes

from tasks.export import NOT_VERIFIED, OUTPUT_FILES, RESULT_COLUMNS, export_by_status
from tasks.extract import read_sources
from tasks.normalize import dedupe, normalize

VERIFIED_AT = dt.datetime(2025, 3, 4, 5, 6, 7, 891011, tzinfo=dt.UTC)


def results_for(unique: pl.DataFrame, statuses: dict[str, tuple[str, float, str]]) -> pl.DataFrame:
    """One result row per key, shaped like the verify step's output."""
    rows = []
    for email in unique["email"].to_list():
        status, score, reason = statuses.get(email, ("valid", 0.95, "accepted"))
        rows.append(
            {
                "email": email,
                "status": status,
                "score": score,
                "reason": reason,
                "suggestion": "jane@gmail.com" if reason == "mailbox_not_found" else None,
                "verified_at": VERIFIED_AT,
            }
        )
    return pl.DataFrame(rows, schema_overrides={"verified_at": pl.Datetime("us", "UTC")})


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


def test_export_keeps_original_columns_and_every_row(tmp_path: Path) -> None:
    write_bytes(tmp_path / "crm.csv", MESSY_CRM_CSV)
    write_bytes(
        tmp_path / "more.csv", "Email;Company\nbob@ACME.test;Acme\nlost@nowhere.test;X\n;Nobody\n"
    )
    rows = normalize(read_sources([str(tmp_path / "crm.csv"), str(tmp_path / "more.csv")]))
    unique = dedupe(rows)
    results = results_for(
        unique,
        {
            "ann@beta.test": ("risky", 0.5, "catch_all"),
            "lost@nowhere.test": ("invalid", 0.0, "nxdomain"),
            "jane.doe@acme.test": ("unknown", 0.4, "smtp_timeout"),
        },
    )
    out = tmp_path / "out"
    paths = export_by_status(rows, results, out)

    assert set(paths) == set(OUTPUT_FILES) == {"valid", "risky", "invalid", "unknown", "no_email"}
    originals = ["Record ID", "First Name", "Email", "Notes", "Email_2", "Company"]
    counts = {}
    for name, path in paths.items():
        assert path == out / f"{name}.csv" and path.exists()
        header, records = read_csv(path)
        assert header == [*originals, *RESULT_COLUMNS]
        counts[name] = len(records)
    assert sum(counts.values()) == rows.height == 7
    assert counts == {"valid": 2, "risky": 1, "invalid": 1, "unknown": 1, "no_email": 2}

    _, valid = read_csv(paths["valid"])
    assert [r["Email"] for r in valid] == ["bob@acme.test", "bob@ACME.test"]  # as written
    assert valid[0]["Record ID"] == "102" and valid[1]["Company"] == "Acme"
    assert valid[0]["status"] == "valid" and float(valid[0]["score"]) == 0.95
    assert valid[0]["verified_at"] == "2025-03-04T05:06:07Z"

    _, unknown = read_csv(paths["unknown"])
    assert unknown[0]["Notes"] == "likes ; semicolons\r\nand line breaks"  # multi-line cell intact
    assert unknown[0]["Email"] == "Jane Doe <Jane.Doe@Acme.test>"
    assert unknown[0]["reason"] == "smtp_timeout"

    _, no_email = read_csv(paths["no_email"])
    assert [r["First Name"] or r["Company"] for r in no_email] == ["Zoë", "Nobody"]
    assert all(r["status"] == "" for r in no_email)


def test_result_column_names_collide_with_crm_columns(tmp_path: Path) -> None:
    path = write_bytes(tmp_path / "c.csv", "Email,Status,score\na@x.test,Customer,9\n")
    rows = normalize(read_sources([str(path)]))
    paths = export_by_status(rows, results_for(dedupe(rows), {}), tmp_path / "out")
    header, records = read_csv(paths["valid"])
    assert header == ["Email", "Status", "score", *(f"mailsift_{c}" for c in RESULT_COLUMNS)]
    assert records[0]["Status"] == "Customer" and records[0]["score"] == "9"
    assert records[0]["mailsift_status"] == "valid"


def test_empty_statuses_still_get_header_only_files(tmp_path: Path) -> None:
    rows = normalize(read_sources([str(write_bytes(tmp_path / "c.csv", "email\na@x.test\n"))]))
    paths = export_by_status(rows, results_for(dedupe(rows), {}), tmp_path / "out")
    for name in ("risky", "invalid", "unknown", "no_email"):
        header, records = read_csv(paths[name])
        assert header == ["email", *RESULT_COLUMNS] and records == []


def test_address_without_result_is_unknown_not_lost(tmp_path: Path) -> None:
    rows = normalize(
        read_sources([str(write_bytes(tmp_path / "c.csv", "email\na@x.test\nb@x.test\n"))])
    )
    results = results_for(dedupe(rows), {}).filter(pl.col("email") == "a@x.test")
    paths = export_by_status(rows, results, tmp_path / "out")
    _, unknown = read_csv(paths["unknown"])
    assert [(r["email"], r["status"], r["reason"]) for r in unknown] == [
        ("b@x.test", "unknown", NOT_VERIFIED)
    ]


def test_results_keyed_by_key_column_and_naive_timestamps(tmp_path: Path) -> None:
    rows = normalize(read_sources([str(write_bytes(tmp_path / "c.csv", "email\nJo@X.test\n"))]))
    results = pl.DataFrame(
        {
            "key": ["jo@x.test"],
            "email": ["Jo@x.test"],
            "status": ["invalid"],
            "score": [0.1],
            "reason": ["mailbox_not_found"],
            "suggestion": [None],
            "verified_at": [dt.datetime(2025, 1, 1, 12, 0, 0)],
        }
    )
    paths = export_by_status(rows, results, tmp_path / "out")
    _, invalid = read_csv(paths["invalid"])
    assert invalid[0]["verified_at"] == "2025-01-01T12:00:00Z"
    assert invalid[0]["reason"] == "mailbox_not_found"


def test_rerun_replaces_files_and_leaves_no_temp_files(tmp_path: Path) -> None:
    out = tmp_path / "out"
    rows = normalize(read_sources([str(write_bytes(tmp_path / "c.csv", "email\na@x.test\n"))]))
    unique = dedupe(rows)
    export_by_status(rows, results_for(unique, {}), out)
    paths = export_by_status(
        rows, results_for(unique, {"a@x.test": ("invalid", 0.1, "syntax")}), out
    )
    assert read_csv(paths["valid"])[1] == []
    assert len(read_csv(paths["invalid"])[1]) == 1
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{n}.csv" for n in OUTPUT_FILES)


def test_failed_export_leaves_no_half_or_temp_file(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "valid.csv").write_text("previous complete file\n")
    (out / "unknown.csv").mkdir()  # the rename onto it will fail
    rows = normalize(read_sources([str(write_bytes(tmp_path / "c.csv", "email\na@x.test\n"))]))
    with pytest.raises(OSError):
        export_by_status(rows, results_for(dedupe(rows), {}), out)
    leftovers = [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []
    text = (out / "valid.csv").read_text()
    complete = (
        f"email,{','.join(RESULT_COLUMNS)}\na@x.test,valid,0.95,accepted,,2025-03-04T05:06:07Z\n"
    )
    assert text in ("previous complete file\n", complete)


def test_results_without_status_column_is_a_programming_error(tmp_path: Path) -> None:
    rows = normalize(read_sources([str(write_bytes(tmp_path / "c.csv", "email\na@x.test\n"))]))
    with pytest.raises(ValueError, match="status"):
        export_by_status(rows, pl.DataFrame({"email": ["a@x.test"]}), tmp_path / "out")
    assert not (tmp_path / "out" / "valid.csv").exists()
