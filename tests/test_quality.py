"""The quality gate (tasks/quality.py): Great Expectations over verification results.

Every frame reaches the gate the way it does in production:

- through the real warehouse: results appended to a DuckDB file in tmp_path with
  ``Warehouse.append_verifications`` and read back from ``latest_verifications``
  (``Warehouse.latest_pandas``, DuckDB ``.df()``) -- what ``mailsift gate`` validates;
- through a run's results file: a parquet written by polars and read back with
  ``pl.read_parquet(...).to_pandas()`` -- what the flow's gate task validates. The
  warehouse refuses a null email, status, score, reason or verified_at, a status outside
  the four and a score outside 0..1 (NOT NULL / CHECK constraints, pinned by
  ``test_warehouse_refuses_what_only_a_run_file_can_carry``), and ``latest_verifications``
  holds one row per email by construction, so those expectations are violated through a
  run file.

Each expectation has its own test: one table breaking it, the gate failing with exactly
that expectation named (the others still pass), offending rows among the examples.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import polars as pl
import pytest

from mailsift.errors import ConfigError, WarehouseError
from mailsift.result import Checks, VerificationResult
from tasks.quality import (
    EXPECTATION_NAMES,
    GateConfig,
    GateReport,
    gate_exit_code,
    render_table,
    run_gate,
)
from warehouse import Warehouse, results_frame

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def _gx_imported_once():
    """Import Great Expectations once for the module (it takes seconds), as the gate does."""
    from tasks.quality import _import_gx

    _import_gx()


# --------------------------------------------------------------------------- data


def _now() -> datetime:
    return datetime.now(UTC)


def good_results(n_groups: int = 4, *, now: datetime | None = None) -> list[VerificationResult]:
    """A realistic, contract-conforming mix (10 rows per group, 10% unknown), with score
    band edges (valid 0.7 and 1.0, risky 0.3, invalid 0.0) and checks from 1 h to 29 days
    old."""
    now = now or _now()
    rows: list[VerificationResult] = []
    for g in range(n_groups):
        at = now - timedelta(hours=1 + g * 24 * 7)  # up to 3 weeks old
        checked = Checks(True, True, True, True, False, False, False, False)
        rows += [
            VerificationResult(
                f"jane.{g}@acme.test",
                "valid",
                0.97,
                "accepted",
                checked,
                provider="other",
                mx_host="mx.acme.test",
                smtp_code=250,
                smtp_message="2.1.5 OK",
                verified_at=at,
            ),
            VerificationResult(
                f"bob.{g}@gmail.test",
                "valid",
                1.0,
                "accepted",
                Checks(True, True, True, True, False, False, False, True),
                provider="google",
                verified_at=at,
            ),
            VerificationResult(
                f"ann.{g}@acme.test", "valid", 0.7, "accepted", checked, verified_at=at
            ),
            VerificationResult(
                f"gone.{g}@acme.test",
                "invalid",
                0.05,
                "mailbox_not_found",
                Checks(True, True, True, True, False, False, False, False),
                smtp_code=550,
                smtp_message="5.1.1 no such user",
                verified_at=at,
            ),
            VerificationResult(
                f"bad..{g}@acme.test",
                "invalid",
                0.0,
                "syntax",
                Checks(syntax_valid=False),
                verified_at=at,
            ),
            VerificationResult(
                f"temp.{g}@mailinator.test",
                "invalid",
                0.1,
                "disposable",
                Checks(True, True, True, None, True, False, None, False),
                verified_at=at,
            ),
            VerificationResult(
                f"x.{g}@nowhere.test",
                "invalid",
                0.02,
                "nxdomain",
                Checks(True, False, False, None, False, False, None, False),
                verified_at=at,
            ),
            VerificationResult(
                f"info.{g}@acme.test",
                "risky",
                0.3,
                "role_based",
                Checks(True, True, True, True, False, True, False, False),
                verified_at=at,
            ),
            VerificationResult(
                f"any.{g}@catchall.test",
                "risky",
                0.5,
                "catch_all",
                Checks(True, True, True, True, False, False, True, False),
                verified_at=at,
            ),
            VerificationResult(
                f"slow.{g}@grey.test",
                "unknown",
                0.5,
                "greylisted",
                Checks(True, True, True, True, False, False, None, False),
                smtp_code=450,
                verified_at=at,
            ),
        ]
    return rows


def frame_of(results: list[VerificationResult]) -> pl.DataFrame:
    return results_frame(results)


def set_cells(frame: pl.DataFrame, rows: list[int], **values: object) -> pl.DataFrame:
    """``frame`` with the given columns set to ``values`` on the rows at ``rows``."""
    selected = pl.int_range(pl.len()).is_in(rows)
    return frame.with_columns(
        pl.when(selected)
        .then(pl.lit(value, dtype=frame.schema[name]))
        .otherwise(pl.col(name))
        .alias(name)
        for name, value in values.items()
    )


def row_of(frame: pl.DataFrame, email_prefix: str) -> int:
    """Index of the first row whose email starts with ``email_prefix``."""
    matches = frame.with_row_index().filter(pl.col("email").str.starts_with(email_prefix))
    return int(matches["index"][0])


def through_warehouse(tmp_path: Path, frame: pl.DataFrame) -> pd.DataFrame:
    """Append ``frame`` to a real warehouse file and read ``latest_verifications`` back."""
    with Warehouse.open(tmp_path / "warehouse.duckdb", create=True) as wh:
        wh.append_verifications(frame, run_id="run-1", backend="local")
        return wh.latest_pandas()


def through_run_file(tmp_path: Path, frame: pl.DataFrame) -> pd.DataFrame:
    """Write ``frame`` as a run's results parquet and read it back as the flow does."""
    path = tmp_path / "results.parquet"
    frame.write_parquet(path)
    return pl.read_parquet(path).to_pandas()


def assert_fails_only(report: GateReport, name: str, *, unexpected: int) -> None:
    assert not report.is_passed
    assert report.failed_names == [name], report.message
    assert gate_exit_code(report) == 1
    failed = report.result(name)
    assert failed.unexpected_count == unexpected
    assert failed.examples, "a failed expectation shows offending rows"
    assert len(failed.examples) <= 5
    assert name in report.message
    assert all(r.success for r in report.results if r.name != name)


# ------------------------------------------------------------------------ passing


def test_good_data_from_the_warehouse_passes(tmp_path):
    frame = frame_of(good_results())
    df = through_warehouse(tmp_path, frame)
    assert len(df) == frame.height

    report = run_gate(df)

    assert report.is_passed, report.message
    assert gate_exit_code(report) == 0
    assert report.failed == ()
    assert [r.name for r in report.results] == list(EXPECTATION_NAMES)
    assert report.n_rows == frame.height
    assert report.unknown_share == pytest.approx(0.1)
    assert all(r.examples == [] for r in report.results)
    assert report.result("email_not_null").element_count == frame.height


def test_good_data_from_a_run_file_passes(tmp_path):
    report = run_gate(through_run_file(tmp_path, frame_of(good_results())))
    assert report.is_passed, report.message


def test_a_dirty_list_of_mostly_invalid_addresses_passes(tmp_path):
    now = _now()
    dirty = [
        VerificationResult(
            f"nobody{i}@acme.test",
            "invalid",
            0.05,
            "mailbox_not_found",
            Checks(True, True, True, True, False, False, False, False),
            verified_at=now - timedelta(minutes=5),
        )
        for i in range(90)
    ] + good_results(1, now=now)
    report = run_gate(through_warehouse(tmp_path, frame_of(dirty)))
    assert report.is_passed, report.message
    assert report.unknown_share == pytest.approx(0.01)


def test_an_empty_frame_passes_without_great_expectations(tmp_path):
    df = through_warehouse(tmp_path, frame_of([]))
    assert df.empty
    report = run_gate(df)
    assert report.is_passed
    assert report.n_rows == 0
    assert report.unknown_share == 0.0
    assert all(r.element_count == 0 for r in report.results)


# --------------------------------------------------------- one test per expectation


def test_email_not_null(tmp_path):
    frame = frame_of(good_results())
    frame = set_cells(frame, [3], email=None)
    frame = set_cells(frame, [7], email="")  # a blank address is no address either
    report = run_gate(through_run_file(tmp_path, frame))
    assert_fails_only(report, "email_not_null", unexpected=2)
    assert report.result("email_not_null").examples[0]["email"] is None


def test_email_unique(tmp_path):
    frame = frame_of(good_results())
    first, second = frame["email"][10], frame["email"][0]
    frame = set_cells(frame, [25], email=first)
    frame = set_cells(frame, [15, 35], email=second)
    report = run_gate(through_run_file(tmp_path, frame))
    assert_fails_only(report, "email_unique", unexpected=5)
    result = report.result("email_unique")
    assert result.observed == "2 address(es) repeated"
    # Repeated rows are shown side by side.
    assert [row["email"] for row in result.examples] == sorted([first] * 2 + [second] * 3)


def test_status_in_set(tmp_path):
    frame = frame_of(good_results())
    frame = set_cells(frame, [0], status="deliverable")
    frame = set_cells(frame, [1], status=None)  # a null status is not one of the four
    report = run_gate(through_run_file(tmp_path, frame))
    assert_fails_only(report, "status_in_set", unexpected=2)
    result = report.result("status_in_set")
    assert "deliverable" in result.observed
    assert {row["status"] for row in result.examples} == {"deliverable", None}


def test_score_in_range(tmp_path):
    frame = frame_of(good_results())
    frame = set_cells(frame, [0], score=1.5)
    frame = set_cells(frame, [3], score=None)
    frame = set_cells(frame, [4], score=-0.1)
    report = run_gate(through_run_file(tmp_path, frame))
    # Out-of-range scores are named once: not again as outside their status's band.
    assert_fails_only(report, "score_in_range", unexpected=3)
    assert {row["score"] for row in report.result("score_in_range").examples} == {
        "1.5",
        None,
        "-0.1",
    }


def test_score_in_status_band(tmp_path):
    frame = frame_of(good_results())
    frame = set_cells(frame, [row_of(frame, "jane.0")], score=0.5)  # valid needs >= 0.7
    frame = set_cells(frame, [row_of(frame, "gone.0")], score=0.3)  # invalid needs < 0.3
    frame = set_cells(frame, [row_of(frame, "any.0")], score=0.7)  # risky needs < 0.7
    frame = set_cells(frame, [row_of(frame, "slow.0")], score=0.2)  # unknown needs >= 0.3
    report = run_gate(through_warehouse(tmp_path, frame))
    assert_fails_only(report, "score_in_status_band", unexpected=4)
    result = report.result("score_in_status_band")
    assert "valid 0.5" in result.observed
    assert {row["email"] for row in result.examples} == {
        "jane.0@acme.test",
        "gone.0@acme.test",
        "any.0@catchall.test",
        "slow.0@grey.test",
    }


def test_reason_in_set(tmp_path):
    frame = frame_of(good_results())
    frame = set_cells(frame, [2, 12], reason="mailbox_gone")
    report = run_gate(through_warehouse(tmp_path, frame))
    assert_fails_only(report, "reason_in_set", unexpected=2)
    result = report.result("reason_in_set")
    assert result.observed == "mailbox_gone (2)"
    assert all(row["reason"] == "mailbox_gone" for row in result.examples)


def test_verified_at_not_null(tmp_path):
    frame = frame_of(good_results())
    frame = set_cells(frame, [5], verified_at=None)
    report = run_gate(through_run_file(tmp_path, frame))
    assert_fails_only(report, "verified_at_not_null", unexpected=1)
    assert report.result("verified_at_not_null").examples[0]["verified_at"] is None


def test_verified_at_not_future(tmp_path):
    now = _now()
    frame = frame_of(good_results(now=now))
    frame = set_cells(frame, [0], verified_at=now + timedelta(days=1))
    # A minute ahead is clock skew (an API's clock), not a broken timestamp.
    frame = set_cells(frame, [1], verified_at=now + timedelta(minutes=1))
    report = run_gate(through_warehouse(tmp_path, frame), GateConfig(now=now))
    assert_fails_only(report, "verified_at_not_future", unexpected=1)
    result = report.result("verified_at_not_future")
    assert result.examples[0]["email"] == frame["email"][0]
    assert result.observed.startswith("newest " + (now + timedelta(days=1)).date().isoformat())


def test_verified_at_within_max_age(tmp_path):
    now = _now()
    frame = frame_of(good_results(now=now))
    frame = set_cells(frame, [4, 5], verified_at=now - timedelta(days=31))
    df = through_warehouse(tmp_path, frame)

    report = run_gate(df, GateConfig(now=now))
    assert_fails_only(report, "verified_at_within_max_age", unexpected=2)
    assert report.result("verified_at_within_max_age").observed.startswith("oldest ")

    # The limit is configurable, and None (e.g. an audit over all history) drops the rule.
    assert run_gate(df, GateConfig(now=now, max_age_days=45)).is_passed
    unlimited = run_gate(df, GateConfig(now=now, max_age_days=None))
    assert unlimited.is_passed
    assert "verified_at_within_max_age" not in [r.name for r in unlimited.results]


def test_syntax_invalid_implies_invalid(tmp_path):
    frame = frame_of(good_results())
    row = row_of(frame, "jane.1")  # valid, accepted, 0.97
    frame = set_cells(frame, [row], syntax_valid=False)
    report = run_gate(through_warehouse(tmp_path, frame))
    assert_fails_only(report, "syntax_invalid_implies_invalid", unexpected=1)
    result = report.result("syntax_invalid_implies_invalid")
    # The rule applies to the rows with syntax_valid false: the 4 syntax rows and this one.
    assert result.element_count == 5
    assert result.examples[0]["email"] == "jane.1@acme.test"
    assert result.examples[0]["status"] == "valid"


def test_disposable_implies_not_valid(tmp_path):
    frame = frame_of(good_results())
    # A disposable address may be risky (e.g. catch-all) but never valid.
    frame = set_cells(frame, [row_of(frame, "any.2")], disposable=True)
    frame = set_cells(frame, [row_of(frame, "bob.2")], disposable=True)
    report = run_gate(through_warehouse(tmp_path, frame))
    assert_fails_only(report, "disposable_implies_not_valid", unexpected=1)
    result = report.result("disposable_implies_not_valid")
    assert [row["email"] for row in result.examples] == ["bob.2@gmail.test"]
    assert result.element_count == 6  # 4 disposable rows + the two set here


def test_implications_count_only_the_rows_their_condition_selects(tmp_path):
    # Each problem is named once: a syntax-invalid row whose status is not one of the four
    # is status_in_set's; a null check selects nothing; a disposable row with a null
    # status is among the rule's rows but is not "valid".
    frame = frame_of(good_results())
    frame = set_cells(frame, [row_of(frame, "jane.1")], syntax_valid=False, status="deliverable")
    frame = set_cells(frame, [row_of(frame, "bob.2")], syntax_valid=None, disposable=None)
    frame = set_cells(frame, [row_of(frame, "any.2")], disposable=True, status=None)
    report = run_gate(through_run_file(tmp_path, frame))
    assert report.failed_names == ["status_in_set"], report.message
    syntax = report.result("syntax_invalid_implies_invalid")
    assert (syntax.element_count, syntax.unexpected_count) == (4, 0)  # the 4 syntax rows
    disposable = report.result("disposable_implies_not_valid")
    assert (disposable.element_count, disposable.unexpected_count) == (5, 0)


def test_unknown_share_within_threshold(tmp_path):
    # 30 known + 10 unknown = 25% unknown: our DNS/SMTP path looks broken.
    results = good_results(3)  # 30 rows, 3 unknown
    now = _now()
    results += [
        VerificationResult(
            f"u{i}@blocked.test",
            "unknown",
            0.4,
            "smtp_unreachable",
            Checks(True, True, True, False, False, False, None, False),
            verified_at=now - timedelta(minutes=1),
        )
        for i in range(7)
    ] + [
        VerificationResult(
            f"n{i}@nowhere.test",
            "invalid",
            0.02,
            "nxdomain",
            Checks(True, False, False, None, False, False, None, False),
            verified_at=now - timedelta(minutes=1),
        )
        for i in range(3)
    ]
    df = through_warehouse(tmp_path, frame_of(results))

    report = run_gate(df)
    assert_fails_only(report, "unknown_share_within_threshold", unexpected=10)
    result = report.result("unknown_share_within_threshold")
    assert result.observed == pytest.approx(0.25)
    assert result.element_count == 40
    assert all(row["status"] == "unknown" for row in result.examples)
    assert report.unknown_share == pytest.approx(0.25)
    assert "25.0% unknown" in report.message

    relaxed = run_gate(df, GateConfig(max_unknown_share=0.3))
    assert relaxed.is_passed, relaxed.message
    assert relaxed.result("unknown_share_within_threshold").observed == pytest.approx(0.25)


def test_a_run_file_read_with_duckdb_in_another_time_zone(tmp_path):
    """DuckDB ``.df()`` of a run's results gives times in the session's zone; the gate
    compares instants, so a check 31 days old is too old in any zone."""
    import duckdb

    now = _now()
    frame = set_cells(frame_of(good_results(now=now)), [2], verified_at=now - timedelta(days=31))
    path = tmp_path / "results.parquet"
    frame.write_parquet(path)
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'America/New_York'")
        df = con.sql(f"SELECT * FROM read_parquet('{path}')").df()
    assert str(df["verified_at"].dtype.tz) == "America/New_York"
    report = run_gate(df, GateConfig(now=now))
    assert_fails_only(report, "verified_at_within_max_age", unexpected=1)
    assert report.result("verified_at_within_max_age").examples[0]["email"] == frame["email"][2]


def test_an_unknown_share_exactly_at_the_limit_passes(tmp_path):
    # 59 unknown of 1,000 at a limit of 5.9%: 1 - 0.059 is 0.9410000000000001 in floats,
    # above 941/1000, so an unrounded "mostly" would fail this list.
    now = _now()
    results = [
        VerificationResult(
            f"u{i}@grey.test" if i < 59 else f"ok{i}@acme.test",
            "unknown" if i < 59 else "valid",
            0.5 if i < 59 else 0.9,
            "greylisted" if i < 59 else "accepted",
            verified_at=now - timedelta(minutes=1),
        )
        for i in range(1000)
    ]
    df = through_warehouse(tmp_path, frame_of(results))
    assert run_gate(df, GateConfig(max_unknown_share=0.059)).is_passed
    over = run_gate(df, GateConfig(max_unknown_share=0.058))
    assert over.failed_names == ["unknown_share_within_threshold"]


def test_warehouse_refuses_what_only_a_run_file_can_carry(tmp_path):
    """Why five expectations are tested through a run file: the warehouse's constraints
    refuse those rows, and ``latest_verifications`` holds one row per email."""
    frame = frame_of(good_results(1))
    with Warehouse.open(tmp_path / "warehouse.duckdb") as wh:
        for bad in ({"email": None}, {"status": "bogus"}, {"score": 1.5}, {"verified_at": None}):
            with pytest.raises(WarehouseError):
                wh.append_verifications(set_cells(frame, [0], **bad), run_id="r", backend="x")
        twice = set_cells(frame, [1], email=frame["email"][0])
        wh.append_verifications(
            twice.with_columns(pl.col("verified_at") - pl.duration(seconds=pl.int_range(pl.len()))),
            run_id="r",
            backend="local",
        )
        assert wh.latest_pandas()["email"].is_unique


# ------------------------------------------------------------ reports and outputs


def test_report_is_json_and_fits_quality_runs(tmp_path):
    frame = set_cells(frame_of(good_results()), [0], reason="mailbox_gone")
    report = run_gate(through_run_file(tmp_path, frame))
    data = json.loads(json.dumps(report.to_dict()))
    assert data["is_passed"] is False
    assert data["failed_expectations"] == ["reason_in_set"]
    assert data["max_unknown_share"] == 0.2
    assert len(data["results"]) == len(EXPECTATION_NAMES)
    assert data["results"][5]["examples"][0]["reason"] == "mailbox_gone"

    # The report records as a quality_runs row through the warehouse's own API.
    with Warehouse.open(tmp_path / "warehouse.duckdb") as wh:
        wh.record_quality_run(
            scope="run",
            run_id="run-1",
            is_passed=report.is_passed,
            n_rows=report.n_rows,
            unknown_share=report.unknown_share,
            max_unknown_share=report.config.max_unknown_share,
            failed_expectations=report.failed_names,
            details=report.to_dict(),
            checked_at=report.checked_at,
        )
        row = wh.quality_runs("run-1").to_dicts()[0]
    assert row["failed_expectations"] == ["reason_in_set"]
    assert json.loads(row["details"])["results"][5]["name"] == "reason_in_set"

    table = render_table(report)
    lines = table.splitlines()
    assert lines[0].split() == ["expectation", "result", "unexpected", "/", "rows", "observed"]
    assert len(lines) == 2 + len(EXPECTATION_NAMES)
    assert any(line.startswith("reason_in_set") and " FAIL " in line for line in lines)
    assert sum(" PASS " in line for line in lines) == len(EXPECTATION_NAMES) - 1
    summary = "\n".join(report.summary_lines())
    assert "examples for reason_in_set:" in summary
    assert "mailbox_gone" in summary


def test_nothing_is_written_without_docs_dir(tmp_path, monkeypatch):
    df = through_run_file(tmp_path, frame_of(good_results(1)))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    before = sorted(p.name for p in tmp_path.iterdir())
    report = run_gate(df)
    assert report.is_passed
    assert report.docs_index is None
    assert list(cwd.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_docs_dir_gets_data_docs_html(tmp_path, monkeypatch):
    frame = set_cells(frame_of(good_results(1)), [0], status="deliverable")
    df = through_run_file(tmp_path, frame)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    docs = tmp_path / "docs" / "gate"
    report = run_gate(df, docs_dir=docs)
    assert report.failed_names == ["status_in_set"]
    assert report.docs_index == str(docs.resolve() / "index.html")
    assert (docs / "index.html").is_file()
    pages = [p for p in docs.rglob("*.html") if p.name != "index.html"]
    validation_pages = [p for p in pages if "validations" in p.parts]
    assert validation_pages, f"no validation page among {pages}"
    assert "deliverable" in validation_pages[0].read_text(encoding="utf-8")
    assert list(cwd.iterdir()) == []


# ------------------------------------------------------------- inputs and config


def test_missing_columns_mean_the_gate_cannot_run(tmp_path):
    df = through_run_file(tmp_path, frame_of(good_results(1))).drop(columns=["reason"])
    with pytest.raises(WarehouseError, match="reason"):
        run_gate(df)


def test_a_polars_frame_is_accepted(tmp_path):
    report = run_gate(frame_of(good_results(1)))
    assert report.is_passed, report.message


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_unknown_share": 1.5},
        {"max_unknown_share": -0.1},
        {"max_unknown_share": True},
        {"max_age_days": -1},
        {"max_age_days": 2.5},
        {"future_tolerance": timedelta(-1)},
    ],
)
def test_bad_config_is_refused(kwargs):
    with pytest.raises(ConfigError):
        GateConfig(**kwargs)


def test_naive_now_is_utc():
    assert GateConfig(now=datetime(2026, 1, 1)).now == datetime(2026, 1, 1, tzinfo=UTC)


def test_importing_the_gate_does_not_import_great_expectations():
    code = "import sys, tasks.quality; print('great_expectations' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert out.stdout.strip() == "False"
