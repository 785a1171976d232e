"""``tasks.extract``: real export files in every format a CRM produces, a real HTTP server,
and every kind of bad input turning into one readable ``InputError`` line."""

from __future__ import annotations

import datetime as dt
import json
import os
import zipfile
from pathlib import Path

import openpyxl
import polars as pl
import pytest
from ingest_fixtures import MESSY_CRM_CSV, HttpServer, http_server, write_bytes

from mailsift.errors import InputError
from tasks.extract import (
    EMAIL_RAW,
    MAX_FIRST_LINE,
    META_COLUMNS,
    RECORD_ID,
    ROW,
    SOURCE,
    expand_sources,
    read_source,
    read_sources,
)

__all__ = ["http_server"]  # the fixture, imported for pytest


def originals(df: pl.DataFrame) -> list[str]:
    return [c for c in df.columns if c not in META_COLUMNS]


def assert_input_error(exc: pytest.ExceptionInfo[InputError], source: str, *words: str) -> None:
    text = str(exc.value)
    assert text.startswith(f"{source}: "), text
    assert "\n" not in text and "Traceback" not in text, text
    for word in words:
        assert word in text, text


def write_xlsx(path: Path, rows: list[list[object]], *, sheets: int = 1) -> Path:
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.title = "Contacts"
    for row in rows:
        sheet.append(row)
    for n in range(1, sheets):
        workbook.create_sheet(f"Other{n}").append(["email"] + ["other@sheet.test"])
    workbook.save(path)
    return path


# --------------------------------------------------------------------------- CSV family


def test_messy_crm_csv_bom_semicolons_quotes_newlines(tmp_path: Path) -> None:
    path = write_bytes(tmp_path / "hubspot export.csv", MESSY_CRM_CSV)
    df = read_source(str(path))

    assert originals(df) == ["Record ID", "First Name", "Email", "Notes", "Email_2"]
    assert df.columns[-4:] == list(META_COLUMNS)
    assert all(dtype == pl.String for dtype in df.select(originals(df)).dtypes)
    assert df.schema[ROW] == pl.Int64
    # the blank line is not a contact; its row number is skipped, not reused
    assert df[ROW].to_list() == [1, 2, 4, 5]
    assert df[SOURCE].unique().to_list() == [str(path)]
    assert df[RECORD_ID].to_list() == ["101", "102", "103", "104"]
    assert df[EMAIL_RAW].to_list() == [
        "Jane Doe <Jane.Doe@Acme.test>",
        "bob@acme.test",
        None,
        "mailto:ANN@Beta.test?subject=Hi",
    ]
    first = df.row(0, named=True)
    assert first["Notes"] == "likes ; semicolons\r\nand line breaks" or first["Notes"] == (
        "likes ; semicolons\nand line breaks"
    )
    assert first["Email_2"] == "jd@home.test"
    assert df.row(1, named=True)["First Name"] == 'Bob "Bobby"'
    assert df.row(3, named=True)["Notes"] == 'quote " inside'


def test_cp1252_file_is_detected_and_decoded(tmp_path: Path) -> None:
    text = "email,name,city\nemilie@x.test,Émilie,Orléans\njose@y.test,José Müller,Zürich\n"
    path = write_bytes(tmp_path / "legacy.csv", text, encoding="cp1252")
    df = read_source(str(path))
    assert df["name"].to_list() == ["Émilie", "José Müller"]
    assert df["city"].to_list() == ["Orléans", "Zürich"]


def test_short_cp1252_file_with_one_accent(tmp_path: Path) -> None:
    path = write_bytes(
        tmp_path / "one.csv", "email,name\nemilie@x.test,Émilie\n", encoding="cp1252"
    )
    assert read_source(str(path))["name"].to_list() == ["Émilie"]


def test_utf16_with_bom_tab_separated(tmp_path: Path) -> None:
    # Excel's "Unicode text" export
    path = write_bytes(tmp_path / "unicode.txt", "Email\tName\r\nzoe@x.test\tZoë\r\n", "utf-16")
    df = read_source(str(path))
    assert df["Email"].to_list() == ["zoe@x.test"]
    assert df["Name"].to_list() == ["Zoë"]


@pytest.mark.parametrize(
    ("name", "delimiter"),
    [("list.tsv", "\t"), ("tabs-but-named.csv", "\t"), ("pipes.csv", "|"), ("commas.txt", ",")],
)
def test_delimiters_are_sniffed(tmp_path: Path, name: str, delimiter: str) -> None:
    lines = ["id", "email", "company name", "notes"]
    body = [
        delimiter.join(lines),
        delimiter.join(["1", "a@x.test", '"Acme, Inc"', "x"]),
        delimiter.join(["2", "b@y.test", "Beta", '"multi\nline"']),
    ]
    path = write_bytes(tmp_path / name, "\n".join(body) + "\n")
    df = read_source(str(path))
    assert originals(df) == lines
    assert df[EMAIL_RAW].to_list() == ["a@x.test", "b@y.test"]
    assert df["notes"].to_list() == ["x", "multi\nline"]


def test_excel_sep_line(tmp_path: Path) -> None:
    path = write_bytes(tmp_path / "excel.csv", "\ufeffsep=;\r\nName;Email\r\nJane;jane@x.test\r\n")
    df = read_source(str(path))
    assert originals(df) == ["Name", "Email"]
    assert df[EMAIL_RAW].to_list() == ["jane@x.test"]


def test_classic_mac_line_ends(tmp_path: Path) -> None:
    path = write_bytes(tmp_path / "mac.csv", "email,name\ra@x.test,A\rb@x.test,B\r")
    assert read_source(str(path))[EMAIL_RAW].to_list() == ["a@x.test", "b@x.test"]


def test_headerless_list_of_addresses(tmp_path: Path) -> None:
    path = write_bytes(tmp_path / "list.txt", "a@x.test\nDoe, Jane <b@y.test>\n\nc@z.test\n")
    df = read_source(str(path))
    assert originals(df) == ["email"]
    assert df[EMAIL_RAW].to_list() == ["a@x.test", "Doe, Jane <b@y.test>", "c@z.test"]
    assert df[ROW].to_list() == [1, 2, 4]


def test_header_only_csv_has_no_rows(tmp_path: Path) -> None:
    df = read_source(str(write_bytes(tmp_path / "h.csv", "email,name\n")))
    assert df.height == 0
    assert originals(df) == ["email", "name"]


def test_ragged_rows_do_not_fail(tmp_path: Path) -> None:
    path = write_bytes(tmp_path / "ragged.csv", "email,name\na@x.test\nb@x.test,Bo,extra\n")
    df = read_source(str(path))
    assert df[EMAIL_RAW].to_list() == ["a@x.test", "b@x.test"]
    assert df["name"].to_list() == [None, "Bo"]


# --------------------------------------------------------------------------- other formats


def test_xlsx_first_sheet_values_as_text(tmp_path: Path) -> None:
    path = write_xlsx(
        tmp_path / "export.xlsx",
        [
            ["Record ID", "Email", "Email", "Phone", "Created"],
            [1234, "Jane <jane@x.test>", "alt@x.test", 5551234, dt.datetime(2024, 1, 2, 3, 4, 5)],
            [None, None, None, None, None],
            [1235, "bob@y.test", None, "0044 20", dt.date(2024, 1, 3)],
        ],
        sheets=2,
    )
    df = read_source(str(path))
    assert originals(df) == ["Record ID", "Email", "Email_2", "Phone", "Created"]
    assert df[RECORD_ID].to_list() == ["1234", "1235"]
    assert df["Phone"].to_list() == ["5551234", "0044 20"]
    assert df["Created"][0].startswith("2024-01-02")
    assert df[EMAIL_RAW].to_list() == ["Jane <jane@x.test>", "bob@y.test"]
    assert df[ROW].to_list() == [1, 3]


def test_xlsx_with_a_lying_extension(tmp_path: Path) -> None:
    path = write_xlsx(tmp_path / "actually-excel.csv", [["email"], ["a@x.test"]])
    assert read_source(str(path))[EMAIL_RAW].to_list() == ["a@x.test"]


def test_parquet_and_json_with_a_lying_extension(tmp_path: Path) -> None:
    pl.DataFrame({"email": ["p@x.test"]}).write_parquet(tmp_path / "p.csv")
    write_bytes(tmp_path / "j.csv", '[{"email": "j@x.test"}]')
    df = read_sources([str(tmp_path / "p.csv"), str(tmp_path / "j.csv")])
    assert df[EMAIL_RAW].to_list() == ["p@x.test", "j@x.test"]


def test_csv_with_a_lying_json_extension(tmp_path: Path) -> None:
    path = write_bytes(tmp_path / "export.json", "email;name\na@x.test;A\n")
    assert read_source(str(path))[EMAIL_RAW].to_list() == ["a@x.test"]


def test_csv_with_a_lying_xlsx_extension(tmp_path: Path) -> None:
    path = write_bytes(tmp_path / "actually-text.xlsx", "email\na@x.test\n")
    assert read_source(str(path))[EMAIL_RAW].to_list() == ["a@x.test"]


@pytest.mark.parametrize(
    "payload",
    [
        [{"id": 1, "email": "a@x.test"}, {"id": 2, "email": "b@x.test", "extra": True}],
        {"data": [{"id": 1, "email": "a@x.test"}, {"id": 2, "email": "b@x.test", "extra": True}]},
        {
            "contacts": [
                {"id": 1, "email": "a@x.test"},
                {"id": 2, "email": "b@x.test", "extra": True},
            ]
        },
        {
            "results": [
                {"id": 1, "email": "a@x.test"},
                {"id": 2, "email": "b@x.test", "extra": True},
            ]
        },
    ],
    ids=["array", "data", "contacts", "results"],
)
def test_json_shapes(tmp_path: Path, payload: object) -> None:
    path = write_bytes(tmp_path / "export.json", json.dumps(payload))
    df = read_source(str(path))
    assert originals(df) == ["id", "email", "extra"]  # a key first seen late is kept
    assert df[EMAIL_RAW].to_list() == ["a@x.test", "b@x.test"]
    assert df[RECORD_ID].to_list() == ["1", "2"]
    assert df["extra"].to_list() == [None, "true"]


def test_json_nested_properties_are_flattened(tmp_path: Path) -> None:
    payload = {"results": [{"id": "901", "properties": {"email": "n@x.test", "tags": ["a", "b"]}}]}
    df = read_source(str(write_bytes(tmp_path / "hubspot.json", json.dumps(payload))))
    assert originals(df) == ["id", "properties.email", "properties.tags"]
    assert df[EMAIL_RAW].to_list() == ["n@x.test"]
    assert json.loads(df["properties.tags"][0]) == ["a", "b"]


@pytest.mark.parametrize("name", ["contacts.ndjson", "contacts.jsonl", "contacts.json", "contacts"])
def test_ndjson(tmp_path: Path, name: str) -> None:
    body = '{"Email": "a@x.test", "n": 1}\n\n{"Email": "b@x.test", "n": 2.5, "late": null}\n'
    df = read_source(str(write_bytes(tmp_path / name, body)))
    assert df[EMAIL_RAW].to_list() == ["a@x.test", "b@x.test"]
    assert df["n"].to_list() == ["1", "2.5"]


def test_parquet_with_typed_and_nested_columns(tmp_path: Path) -> None:
    path = tmp_path / "warehouse-dump.parquet"
    pl.DataFrame(
        {
            "contact_id": [7, 8],
            "Email": ["a@x.test", None],
            "score": [0.5, 1.25],
            "tags": [["vip"], []],
            "meta": [{"k": 1}, {"k": 2}],
        }
    ).write_parquet(path)
    df = read_source(str(path))
    assert originals(df) == ["contact_id", "Email", "score", "tags", "meta"]
    assert all(dtype == pl.String for dtype in df.select(originals(df)).dtypes)
    assert df[RECORD_ID].to_list() == ["7", "8"]
    assert df[EMAIL_RAW].to_list() == ["a@x.test", None]
    assert df["score"].to_list() == ["0.5", "1.25"]
    assert json.loads(df["tags"][0]) == ["vip"]


# --------------------------------------------------------------------------- columns


@pytest.mark.parametrize(
    "header",
    [
        "email",
        "EMAIL",
        "E-mail",
        "Email Address",
        "email_address",
        "E-Mail Address",
        "Work Email",
        "Primary Email",
        "Contact Email",
        "Mail",
        "emailAddress",
        " Email ",
    ],
)
def test_email_header_variants(tmp_path: Path, header: str) -> None:
    body = f"name,{header},phone\nJane,jane@x.test,123\n"
    df = read_source(str(write_bytes(tmp_path / "h.csv", body)))
    assert df[EMAIL_RAW].to_list() == ["jane@x.test"]


def test_exact_email_header_preferred_over_other_email_headers(tmp_path: Path) -> None:
    body = "Work Email,Secondary Email,Email\nw@x.test,s@x.test,main@x.test\n"
    df = read_source(str(write_bytes(tmp_path / "h.csv", body)))
    assert df[EMAIL_RAW].to_list() == ["main@x.test"]


def test_email_column_found_by_content(tmp_path: Path) -> None:
    rows = [
        "name,who,notes",
        "Jane,jane@x.test,hi",
        "Bob,BOB@Y.TEST,write to x@y.test",
        "Ann,,",
        "Al,n/a,",
    ]
    df = read_source(str(write_bytes(tmp_path / "c.csv", "\n".join(rows) + "\n")))
    assert df[EMAIL_RAW].to_list() == ["jane@x.test", "BOB@Y.TEST", None, "n/a"]


def test_email_column_override(tmp_path: Path) -> None:
    body = "Email,Personal,Id\nwork@x.test,home@y.test,1\n"
    path = str(write_bytes(tmp_path / "o.csv", body))
    assert read_source(path, email_column="Personal")[EMAIL_RAW].to_list() == ["home@y.test"]
    assert read_source(path, email_column="personal")[EMAIL_RAW].to_list() == ["home@y.test"]
    with pytest.raises(InputError) as exc:
        read_source(path, email_column="Courriel")
    assert_input_error(exc, path, "'Courriel'", "Email, Personal, Id")


@pytest.mark.parametrize(
    "header",
    [
        "Record ID",
        "id",
        "Contact ID",
        "HubSpot ID",
        "Salesforce ID",
        "Lead Id",
        "customer_id",
        "ID",
    ],
)
def test_record_id_header_variants(tmp_path: Path, header: str) -> None:
    body = f"name,email,{header}\nJane,jane@x.test, 42 \nBob,bob@x.test,\n"
    df = read_source(str(write_bytes(tmp_path / "r.csv", body)))
    assert df[RECORD_ID].to_list() == ["42", None]


def test_no_record_id_column(tmp_path: Path) -> None:
    df = read_source(str(write_bytes(tmp_path / "r.csv", "name,email\nJane,jane@x.test\n")))
    assert df[RECORD_ID].to_list() == [None]


def test_specific_record_id_preferred_over_generic_id(tmp_path: Path) -> None:
    body = "id,email,Contact ID\n1,a@x.test,C-9\n"
    assert read_source(str(write_bytes(tmp_path / "r.csv", body)))[RECORD_ID].to_list() == ["C-9"]


# --------------------------------------------------------------------------- sources


def test_expand_sources_globs_sorted_deduped_urls_kept(tmp_path: Path) -> None:
    for name in ["b.csv", "a.csv", "c.txt"]:
        write_bytes(tmp_path / name, "email\nx@y.test\n")
    url = "https://crm.example.test/export.csv"
    got = expand_sources([str(tmp_path / "*.csv"), str(tmp_path / "a.csv"), url, url])
    assert got == [str(tmp_path / "a.csv"), str(tmp_path / "b.csv"), url]


@pytest.mark.parametrize("pattern", ["missing.csv", "nothing-*.csv"])
def test_expand_sources_missing(tmp_path: Path, pattern: str) -> None:
    source = str(tmp_path / pattern)
    with pytest.raises(InputError) as exc:
        expand_sources([source])
    assert_input_error(exc, source, "no such file")


def test_expand_sources_directory(tmp_path: Path) -> None:
    with pytest.raises(InputError) as exc:
        expand_sources([str(tmp_path)])
    assert_input_error(exc, str(tmp_path), "directory")


def test_read_sources_concatenates_different_columns(tmp_path: Path) -> None:
    write_bytes(tmp_path / "a.csv", "email,name\na@x.test,A\n")
    write_bytes(tmp_path / "b.csv", "Company;E-mail;Record ID\nAcme;b@x.test;9\n")
    df = read_sources([str(tmp_path / "*.csv")])
    assert originals(df) == ["email", "name", "Company", "E-mail", "Record ID"]
    assert df.columns[-4:] == list(META_COLUMNS)
    assert df[EMAIL_RAW].to_list() == ["a@x.test", "b@x.test"]
    assert df[SOURCE].to_list() == [str(tmp_path / "a.csv"), str(tmp_path / "b.csv")]
    assert df[RECORD_ID].to_list() == [None, "9"]


def test_read_sources_bad_file_stops_everything(tmp_path: Path) -> None:
    write_bytes(tmp_path / "a.csv", "email\na@x.test\n")
    write_bytes(tmp_path / "b.csv", "name,phone\nBob,1\n")
    write_bytes(tmp_path / "c.csv", b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(InputError) as exc:
        read_sources([str(tmp_path / "*.csv")])
    assert_input_error(exc, str(tmp_path / "b.csv"), "no email column", "1 more", "c.csv")


def test_max_bytes(tmp_path: Path) -> None:
    path = str(write_bytes(tmp_path / "big.csv", "email\n" + "a@x.test\n" * 1000))
    with pytest.raises(InputError) as exc:
        read_source(path, max_bytes=1000)
    assert_input_error(exc, path, "limit")


# --------------------------------------------------------------------------- bad input


BAD_FILES: dict[str, tuple[bytes, str]] = {
    "empty.csv": (b"", "empty file"),
    "blank.csv": (b"\xef\xbb\xbf \r\n\r\n  \n", "empty file"),
    "picture.csv": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4, "looks binary"),
    "noise.csv": (bytes((i * 7919 + 13) % 256 for i in range(20000)), "looks binary"),
    "random.bin": (os.urandom(8192), "looks binary"),
    "archive.csv.gz": (b"\x1f\x8b\x08\x00" + os.urandom(200), "gzip"),
    "no-email.csv": (
        b"name,phone,city\nJane,123,Paris\nBob,456,Rome\n",
        "no email column found; columns: name, phone, city; use --email-column",
    ),
    "broken.xlsx": (b"PK\x03\x04" + os.urandom(2000), "corrupt XLSX"),
    "broken.parquet": (b"PAR1" + os.urandom(2000), "corrupt Parquet"),
    "fake.parquet": (b"email\na@x.test\n", "corrupt Parquet"),
    "bad.json": (b'[{"email": "a@x.test"}, {"email": ', "invalid JSON"),
    "empty.json": (b"[]", "no records"),
    "scalar.json": (b'{"count": 3, "items": {"a": 1}}', "no list of records"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_input_is_one_readable_line(tmp_path: Path, name: str) -> None:
    data, words = BAD_FILES[name]
    path = str(write_bytes(tmp_path / name, data))
    with pytest.raises(InputError) as exc:
        read_source(path)
    assert_input_error(exc, path, words)
    assert exc.value.__cause__ is None or isinstance(exc.value.__cause__, InputError)


def test_missing_file(tmp_path: Path) -> None:
    path = str(tmp_path / "gone.csv")
    with pytest.raises(InputError) as exc:
        read_source(path)
    assert_input_error(exc, path, "no such file")


def test_xlsx_with_a_broken_workbook_part(tmp_path: Path) -> None:
    path = tmp_path / "half.xlsx"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("xl/workbook.xml", "<workbook><sheets><sheet name='x'")
    with pytest.raises(InputError) as exc:
        read_source(str(path))
    assert_input_error(exc, str(path), "XLSX")


def test_zip_that_is_not_a_workbook(tmp_path: Path) -> None:
    path = tmp_path / "export.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("contacts.csv", "email\na@x.test\n")
    with pytest.raises(InputError) as exc:
        read_source(str(path))
    assert_input_error(exc, str(path), "ZIP archive", "unzip")


def test_truncated_xlsx(tmp_path: Path) -> None:
    good = write_xlsx(tmp_path / "good.xlsx", [["email"], *[[f"u{i}@x.test"] for i in range(200)]])
    path = write_bytes(tmp_path / "cut.xlsx", good.read_bytes()[:1500])
    with pytest.raises(InputError) as exc:
        read_source(str(path))
    assert_input_error(exc, str(path), "corrupt")


def test_fifty_megabyte_single_line_fails_fast(tmp_path: Path) -> None:
    path = tmp_path / "one-line.csv"
    with path.open("wb") as fh:
        chunk = b"a@x.test," * (1024 * 1024 // 9)
        for _ in range(50):
            fh.write(chunk)
    with pytest.raises(InputError) as exc:
        read_source(str(path))
    assert_input_error(exc, str(path), "first line longer than", f"{MAX_FIRST_LINE // 2**20} MB")


# --------------------------------------------------------------------------- URLs


CSV_BODY = "Email,Name\nurl@x.test,Url\nurl2@x.test,Url2\n"


def test_url_csv(http_server: HttpServer) -> None:
    url = http_server.add("/exports/contacts.csv", CSV_BODY, headers={"Content-Type": "text/csv"})
    df = read_source(url)
    assert df[EMAIL_RAW].to_list() == ["url@x.test", "url2@x.test"]
    assert df[SOURCE].unique().to_list() == [url]


def test_url_404(http_server: HttpServer) -> None:
    url = http_server.url("/nope.csv")
    with pytest.raises(InputError) as exc:
        read_source(url)
    assert str(exc.value) == f"{url}: HTTP 404"


def test_url_redirect_is_followed(http_server: HttpServer) -> None:
    target = http_server.add("/real.csv", CSV_BODY, headers={"Content-Type": "text/csv"})
    url = http_server.add("/latest", status=302, headers={"Location": target})
    df = read_source(url)
    assert df[EMAIL_RAW].to_list() == ["url@x.test", "url2@x.test"]
    assert df[SOURCE][0] == url  # the source as given


def test_url_format_from_content_type(http_server: HttpServer) -> None:
    body = '{"email": "a@x.test"}\n{"email": "b@x.test"}\n'
    url = http_server.add("/api/contacts", body, headers={"Content-Type": "application/x-ndjson"})
    assert read_source(url)[EMAIL_RAW].to_list() == ["a@x.test", "b@x.test"]


def test_url_charset_from_content_type(http_server: HttpServer) -> None:
    body = "email,name\nz@x.test,Zoë\n".encode("cp1252")
    url = http_server.add(
        "/legacy", body, headers={"Content-Type": "text/csv; charset=windows-1252"}
    )
    assert read_source(url)["name"].to_list() == ["Zoë"]


def test_url_wrong_charset_header_on_utf8_body(http_server: HttpServer) -> None:
    body = "email,name\nz@x.test,Zoë\n".encode()
    url = http_server.add("/utf8", body, headers={"Content-Type": "text/csv; charset=ISO-8859-1"})
    assert read_source(url)["name"].to_list() == ["Zoë"]


def test_url_xlsx(http_server: HttpServer, tmp_path: Path) -> None:
    data = write_xlsx(tmp_path / "x.xlsx", [["E-mail"], ["x@x.test"]]).read_bytes()
    url = http_server.add("/download", data, headers={"Content-Type": "application/octet-stream"})
    assert read_source(url)[EMAIL_RAW].to_list() == ["x@x.test"]


def test_url_credentials_not_stored(http_server: HttpServer) -> None:
    http_server.add("/private.csv", CSV_BODY)
    url = http_server.base.replace("://", "://alice:s3cret@") + "/private.csv?access_token=abc&x=1"
    df = read_source(url)
    assert df.height == 2
    shown = df[SOURCE][0]
    assert "s3cret" not in shown and "abc" not in shown
    assert "alice" in shown and "x=1" in shown
    assert http_server.requests[-1][1].get("Authorization", "").startswith("Basic ")


def test_url_timeout_is_honoured(http_server: HttpServer) -> None:
    url = http_server.add("/slow.csv", CSV_BODY, delay=3.0)
    import time

    started = time.monotonic()
    with pytest.raises(InputError) as exc:
        read_source(url, timeout=0.3)
    assert time.monotonic() - started < 2.5
    assert_input_error(exc, url, "timed out")


def test_url_connection_refused() -> None:
    import socket

    with socket.socket() as sock:  # a port that was free a moment ago
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/x.csv"
    with pytest.raises(InputError) as exc:
        read_source(url, timeout=1.0)
    assert_input_error(exc, url, "download failed")


def test_url_bad_content(http_server: HttpServer) -> None:
    url = http_server.add(
        "/logo.png", b"\x89PNG\r\n\x1a\n" + bytes(64), headers={"Content-Type": "image/png"}
    )
    with pytest.raises(InputError) as exc:
        read_source(url)
    assert_input_error(exc, url, "looks binary")


def test_url_in_read_sources_with_files(http_server: HttpServer, tmp_path: Path) -> None:
    url = http_server.add("/c.csv", CSV_BODY)
    write_bytes(tmp_path / "local.csv", "email\nlocal@x.test\n")
    df = read_sources([str(tmp_path / "local.csv"), url])
    assert df[EMAIL_RAW].to_list() == ["local@x.test", "url@x.test", "url2@x.test"]
    assert df[ROW].to_list() == [1, 1, 2]
