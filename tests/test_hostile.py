"""Issue 9, hostile inputs and servers (the parts outside the SMTP engine): bounded
memory by design (budgets, bombs refused before they inflate), bounded downloads,
secrets passed by reference, one line for every failure. Real files, real loopback HTTP
servers, real ``mailsift`` subprocesses; small limits through the settings stand in for
the big inputs (peak memory on big ones: benchmarks/bench_hostile.py)."""

from __future__ import annotations

import asyncio
import gzip
import io
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest

from mailsift import scratch, urlsecrets, webhooks
from mailsift.errors import ConfigError, InputError
from mailsift.testing import HttpServer, Reply
from tasks.extract import EMAIL_RAW, ROW, Limits, expand_sources, extract_source, read_source

CSV = b"email,name\na@x.test,A\nb@x.test,B\n"


@pytest.fixture(autouse=True)
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Scratch files go to a directory of this test, so leftovers can be seen."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return tmp


def one_line(exc: pytest.ExceptionInfo[BaseException], *words: str) -> str:
    text = str(exc.value)
    assert "\n" not in text and "Traceback" not in text, text
    for word in words:
        assert word in text, text
    return text


def gz(data: bytes) -> bytes:
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=9) as fh:
        fh.write(data)
    return out.getvalue()


# -- bounded memory: blank lines, budgets ------------------------------------------------


def test_blank_line_runs_are_skipped_and_row_numbers_kept(tmp_path: Path) -> None:
    path = tmp_path / "blank.csv"
    path.write_bytes(
        b"\n\n email,notes\n" + b"a@x.test,one\n" + b"\r\n" * 200_000 + b'b@x.test,"two\n\n\nlines"\n'
        + b" \t\n" * 5 + b"c@x.test,three\n"
    )
    df = read_source(str(path))
    assert df[EMAIL_RAW].to_list() == ["a@x.test", "b@x.test", "c@x.test"]
    assert df[ROW].to_list() == [1, 200_002, 200_008]  # the blank rows count, as in the file
    assert df["notes"][1] == "two\n\n\nlines"  # blank lines inside a quoted cell are data


def test_row_budget_from_the_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "rows.csv"
    path.write_text("email\n" + "".join(f"u{i}@x.test\n" for i in range(10)))
    monkeypatch.setenv("MAILSIFT_MAX_SOURCE_ROWS", "5")
    with pytest.raises(InputError) as exc:
        read_source(str(path))
    one_line(exc, str(path), "more than the limit of 5 rows", "MAILSIFT_MAX_SOURCE_ROWS")
    monkeypatch.setenv("MAILSIFT_MAX_SOURCE_ROWS", "10")
    assert read_source(str(path)).height == 10


def test_byte_budget_from_the_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "bytes.csv"
    path.write_bytes(CSV * 20)
    monkeypatch.setenv("MAILSIFT_MAX_SOURCE_BYTES", "100")
    with pytest.raises(InputError) as exc:
        read_source(str(path))
    one_line(exc, str(path), "MAILSIFT_MAX_SOURCE_BYTES")


def write_xlsx_bomb(path: Path, rows: int) -> None:
    row = b'<row><c t="inlineStr"><is><t>bomb@x.test</t></is></c></row>'
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        z.writestr("[Content_Types].xml", "<Types/>")
        z.writestr("xl/workbook.xml", "<workbook><sheets><sheet name='a' sheetId='1'/></sheets></workbook>")
        with z.open("xl/worksheets/sheet1.xml", "w") as sheet:
            sheet.write(b"<worksheet><sheetData>")
            for _ in range(rows // 1000):
                sheet.write(row * 1000)
            sheet.write(b"</sheetData></worksheet>")


def test_xlsx_zip_bomb_is_refused_before_it_is_inflated(tmp_path: Path) -> None:
    path = tmp_path / "bomb.xlsx"
    write_xlsx_bomb(path, 100_000)  # ~6 MB of XML in a few KB
    assert path.stat().st_size < 100_000
    with pytest.raises(InputError) as exc:
        read_source(str(path))
    one_line(exc, str(path), "xl/worksheets/sheet1.xml", "zip bomb")


def test_xlsx_inflated_size_counts_against_the_byte_budget(tmp_path: Path) -> None:
    import openpyxl

    workbook = openpyxl.Workbook()
    for i in range(300):
        workbook.active.append([f"user{i}@x.test", f"Name {i}"])
    path = tmp_path / "ok.xlsx"
    workbook.save(path)
    assert read_source(str(path)).height == 299
    with pytest.raises(InputError) as exc:
        read_source(str(path), limits=Limits(max_bytes=path.stat().st_size + 1))
    one_line(exc, "unzips to", "MAILSIFT_MAX_SOURCE_BYTES")


def test_json_nested_100000_deep_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(InputError) as exc:
        read_source(str(path))
    one_line(exc, str(path), "nested too deeply")
    objects = tmp_path / "deep-objects.json"
    objects.write_text('[{"email": "a@x.test", "x": ' + '{"a": ' * 100_000 + "1" + "}" * 100_001 + "]")
    with pytest.raises(InputError) as exc:
        read_source(str(objects))
    one_line(exc, "nested too deeply")


def test_mixed_utf8_and_cp1252_lines_are_each_decoded_with_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "mixed.csv"
    path.write_bytes(
        b"email,name\n"
        + "jose@x.test,José\n".encode()  # UTF-8, as the CRM wrote it
        + "zoe@x.test,Zoë\n".encode("cp1252")  # appended by a Windows tool
        + "ana@x.test,Ana Müller\n".encode("cp1252")
        + "li@x.test,李\n".encode()
    )
    out = extract_source(str(path), tmp_path / "work", limits=Limits())
    import polars as pl

    names = pl.read_parquet(out.path)["name"].to_list()
    assert names == ["José", "Zoë", "Ana Müller", "李"]
    (warning,) = out.warnings
    assert "2 lines are not UTF-8" in warning and "cp1252" in warning and str(path) in warning


# -- downloads ---------------------------------------------------------------------------


def test_gzip_bomb_is_cut_after_decoding(private_tmp: Path) -> None:
    body = gz(b"email\n" + b"bomb@x.test\n" * 3_000_000)  # 36 MB from ~70 KB
    with HttpServer() as server:
        server.set_default("/bomb.csv", Reply(headers={"Content-Encoding": "gzip"}, body=body))
        url = server.url_for("/bomb.csv")
        with pytest.raises(InputError) as exc:
            read_source(url)
    one_line(exc, url, "decompression bomb")
    assert list(private_tmp.iterdir()) == []  # the partial download is gone


def test_byte_cap_counts_decoded_bytes(private_tmp: Path) -> None:
    data = b"email\n" + b"".join(f"user{i}@x.test\n".encode() for i in range(2000))
    body = gz(data)
    with HttpServer() as server:
        server.set_default("/c.csv", Reply(headers={"Content-Encoding": "gzip"}, body=body))
        url = server.url_for("/c.csv")
        assert len(body) < 10_000 < len(data)
        with pytest.raises(InputError) as exc:
            read_source(url, limits=Limits(max_bytes=10_000))
        one_line(exc, url, "counted after decompression")
        assert read_source(url, limits=Limits(max_bytes=len(data))).height == 2000


def test_a_dripping_server_hits_the_total_deadline() -> None:
    with HttpServer() as server:
        # one byte every 0.1 s never trips the 5 s stall timeout
        server.set_default("/slow.csv", Reply(body=CSV * 100, drip=(1, 0.1)))
        url = server.url_for("/slow.csv")
        with pytest.raises(InputError) as exc:
            read_source(url, limits=Limits(stall_timeout=5, deadline=1))
    one_line(exc, url, "longer than 1 s", "MAILSIFT_DOWNLOAD_TIMEOUT")


@pytest.mark.parametrize("location", ["data:text/csv,email%0Aa@x.test", "file:///etc/passwd", "ftp://x.test/a.csv"])
def test_redirect_to_another_scheme_is_refused(location: str) -> None:
    with HttpServer() as server:
        server.set_default("/r", Reply(302, headers={"Location": location}))
        url = server.url_for("/r")
        with pytest.raises(InputError) as exc:
            read_source(url)
    scheme = location.split(":")[0]
    one_line(exc, url, f"redirected to a {scheme}: URL")


@pytest.mark.parametrize("url", ["http://[::1", "http://[::1]:99999/x.csv", "https://exa mple.test/x.csv", "http:///x.csv"])
def test_malformed_url_is_one_line(url: str) -> None:
    with pytest.raises(InputError) as exc:
        expand_sources([url])
    one_line(exc, "not a valid URL")


# -- secrets by reference ----------------------------------------------------------------


def test_inline_credentials_move_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    env: dict[str, str] = {}
    url = "https://alice:p%40ss@crm.test/export.csv?api_key=K3Y&page=2"
    ref = urlsecrets.by_reference(url, env)
    assert "p%40ss" not in ref and "K3Y" not in ref and "page=2" in ref and "alice" in ref
    assert sorted(env.values()) == ["K3Y", "p@ss"]
    assert not urlsecrets.has_inline_secret(ref) and urlsecrets.has_inline_secret(url)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert urlsecrets.expand(ref) == "https://alice:p%40ss@crm.test/export.csv?api_key=K3Y&page=2"
    assert urlsecrets.redact(url) == "https://alice:***@crm.test/export.csv?api_key=***&page=2"


def test_download_by_reference_sends_the_secret_and_shows_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRM_TOKEN", "t0ken-value")
    with HttpServer() as server:
        server.set_default("/c.csv", Reply(body=CSV))
        url = server.url_for("/c.csv") + "?token=${CRM_TOKEN}"
        df = read_source(url)
        assert server.requests[-1].query == "token=t0ken-value"
    assert df.height == 2 and "t0ken-value" not in df["__ms_source"][0]
    monkeypatch.delenv("CRM_TOKEN")
    with pytest.raises(InputError) as exc:
        read_source(url)
    one_line(exc, "environment variable CRM_TOKEN is not set")


def test_bad_webhook_url_is_refused_redacted() -> None:
    for url in ("ftp://bob:hunter2@hooks.test/x", "http://bob:hunter2@[::1", "mailto:bob@hooks.test?token=hunter2"):
        with pytest.raises(ConfigError) as exc:
            webhooks.check_url(url)
        assert "hunter2" not in str(exc.value)


def test_webhook_response_body_is_read_up_to_a_small_cap() -> None:
    body = b"x" * (1024 * 1024)
    with HttpServer() as server:
        # 1 MB dripped in 4 KB writes: reading it all would take ~25 s, past the 5 s timeout
        server.set_default("/hook", Reply(200, body=body, drip=(4096, 0.1)))
        payloads = [("d1", b'{"run_id":"r1","batch_index":0,"n_batches":1,"results":[]}')]
        attempts = asyncio.run(webhooks.deliver(server.url_for("/hook"), "s3cret", payloads,
                                                schedule=(0.01,), timeout=5.0))
        assert [a.is_delivered for a in attempts] == [True]
        server.stop()
        ((_, sent, total),) = server.sent
    assert sent < total  # the receiver was cut off


# -- settings that can never work, scratch sweep ------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("MAILSIFT_MAIL_FROM", "x@y.test>", "not an email address"),
        ("MAILSIFT_HELO_HOSTNAME", "mailsift.exämple.test", "not a hostname"),
        ("MAILSIFT_HELO_HOSTNAME", "a" * 5000, "not a hostname"),
        ("MAILSIFT_HELO_HOSTNAME", "-bad-.test", "not a hostname"),
    ],
)
def test_settings_that_can_never_work_are_refused_at_load(name: str, value: str, words: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILSIFT_")}
    proc = subprocess.run([sys.executable, "-m", "mailsift.cli", "verify", "a@b.test"],
                          env={**env, name: value}, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0] and "Traceback" not in proc.stderr, proc.stderr


def test_sweep_removes_what_dead_processes_left(private_tmp: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    left = private_tmp / f"mailsift-{dead}-run-abc"
    left.mkdir()
    (left / "rows.parquet").write_bytes(b"PII")
    download = private_tmp / f"mailsift-{dead}-download-xyz.csv"
    download.write_bytes(b"partial")
    mine = Path(scratch.make_dir("run"))
    other = private_tmp / "not-ours"
    other.mkdir()
    removed = scratch.sweep()
    assert sorted(p.name for p in removed) == sorted([left.name, download.name])
    assert mine.exists() and other.exists() and not left.exists()
