"""The DuckDB warehouse, on real DuckDB files in tmp_path."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import polars as pl
import pytest

from mailsift.errors import WarehouseError
from mailsift.result import Checks, VerificationResult
from tests.pg_fixtures import pg_server, pg_url
from warehouse import (
    HISTORY_SCHEMA,
    LATEST_VERSION,
    MIGRATIONS,
    RESULT_COLUMNS,
    RESULT_SCHEMA,
    Warehouse,
    results_frame,
    results_from_frame,
)
from warehouse.migrations import Migration, migrate

__all__ = ["pg_server", "pg_url"]  # the fixtures, imported for pytest

TABLES = {
    "schema_migrations",
    "contacts",
    "contact_sources",
    "verifications",
    "runs",
    "quality_runs",
    "webhook_deliveries",
    "api_keys",
}
VIEWS = {"latest_verifications", "latest_contact_sources", "stale_contacts"}
SCORES = {"valid": 0.9, "invalid": 0.1, "risky": 0.5, "unknown": 0.4}
REASONS = {
    "valid": "accepted",
    "invalid": "mailbox_not_found",
    "risky": "catch_all",
    "unknown": "smtp_timeout",
}


def result(
    email: str, status: str = "valid", at: datetime | None = None, **kw
) -> VerificationResult:
    return VerificationResult(
        email=email,
        status=status,
        score=kw.pop("score", SCORES[status]),
        reason=kw.pop("reason", REASONS[status]),
        verified_at=at or datetime.now(UTC),
        **kw,
    )


def append(wh: Warehouse, *results: VerificationResult, run_id: str = "run-1") -> int:
    return wh.append_verifications(results_frame(results), run_id=run_id, backend="local")


def contact_rows(source: str, emails: list[str | None], start: int = 1) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "source": [source] * len(emails),
            "row_number": list(range(start, start + len(emails))),
            "record_id": [f"crm-{i}" for i in range(len(emails))],
            "email": emails,
        },
        schema={
            "source": pl.String,
            "row_number": pl.Int64,
            "record_id": pl.String,
            "email": pl.String,
        },
    )


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "mailsift.duckdb"


@pytest.fixture(params=["duckdb", "postgresql"])
def wh(request: pytest.FixtureRequest, db: Path):
    """The warehouse on each engine: a DuckDB file, and a PostgreSQL database (the
    shared warehouse of several hosts) with the same contract."""
    target = str(db) if request.param == "duckdb" else request.getfixturevalue("pg_url")
    with Warehouse.open(target) as warehouse:
        yield warehouse


def relations(path: Path) -> tuple[set[str], set[str]]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        views = {
            r[0]
            for r in con.execute(
                "SELECT view_name FROM duckdb_views() WHERE NOT internal"
            ).fetchall()
        }
    finally:
        con.close()
    return tables, views


def raw(path: Path, *statements: str) -> None:
    con = duckdb.connect(str(path))
    try:
        for statement in statements:
            con.execute(statement)
    finally:
        con.close()


# ---------------------------------------------------------------- schema and migrations


def test_new_warehouse_has_every_table_and_view(db: Path) -> None:
    with Warehouse.open(db) as wh:
        assert wh.schema_version() == LATEST_VERSION
        applied = wh.query("SELECT version, name FROM schema_migrations ORDER BY version")
        assert applied.rows() == [(m.version, m.name) for m in MIGRATIONS]
        comments = dict(wh.query("SELECT table_name, comment FROM duckdb_tables()").rows())
    tables, views = relations(db)
    assert tables == TABLES
    assert views == VIEWS
    for table in TABLES:
        assert comments[table].startswith(("One row per", "Append-only history: one row per"))


def test_column_types_are_what_sql_users_rely_on(wh: Warehouse) -> None:
    types = {
        (t, c): d
        for t, c, d in wh.query(
            "SELECT table_name, column_name, data_type FROM duckdb_columns()"
        ).rows()
    }
    timestamps = {key: d for key, d in types.items() if key[1].endswith("_at")}
    assert timestamps and set(timestamps.values()) == {"TIMESTAMP WITH TIME ZONE"}
    assert types["verifications", "score"] == "DOUBLE"
    assert types["verifications", "smtp_code"] == "INTEGER"
    assert types["verifications", "catch_all"] == "BOOLEAN"
    assert types["contacts", "sources"] == "VARCHAR[]"
    assert types["contacts", "n_source_rows"] == "BIGINT"
    assert types["quality_runs", "failed_expectations"] == "VARCHAR[]"
    assert types["quality_runs", "unknown_share"] == "DOUBLE"
    view_columns = wh.query(
        "SELECT column_name FROM duckdb_columns() WHERE table_name = 'stale_contacts'"
    ).to_series()
    assert view_columns.to_list() == ["email", "domain", "last_verified_at", "last_status"]


def test_opening_again_is_idempotent_and_keeps_data(db: Path) -> None:
    with Warehouse.open(db) as wh:
        assert append(wh, result("a@x.test")) == 1
    with Warehouse.open(db) as wh:
        assert wh.schema_version() == LATEST_VERSION
        assert wh.query("SELECT count(*) AS n FROM schema_migrations").item() == len(MIGRATIONS)
        assert wh.latest()["email"].to_list() == ["a@x.test"]
    with Warehouse.open(db, create=False) as wh:
        assert wh.schema_version() == LATEST_VERSION


def test_older_schema_is_migrated_read_write_and_refused_read_only(db: Path) -> None:
    Warehouse.open(db).close()
    raw(
        db,
        "DROP VIEW stale_contacts",
        "DROP VIEW latest_verifications",
        "DELETE FROM schema_migrations WHERE version = 2",
    )
    with pytest.raises(WarehouseError, match="older than this mailsift"):
        Warehouse.open(db, read_only=True)
    with Warehouse.open(db) as wh:
        assert wh.schema_version() == LATEST_VERSION
    assert relations(db)[1] == VIEWS


def test_a_failing_migration_leaves_nothing_behind(db: Path) -> None:
    Warehouse.open(db).close()
    broken = [
        *MIGRATIONS,
        Migration(
            LATEST_VERSION + 1, "broken", "CREATE TABLE half_done (a INTEGER); SELECT * FROM nope"
        ),
    ]
    con = duckdb.connect(str(db))
    try:
        with pytest.raises(WarehouseError, match=r"migration \d+_broken failed"):
            migrate(con, str(db), broken)
        assert "half_done" not in {r[0] for r in con.execute("SHOW TABLES").fetchall()}
        assert con.execute("SELECT max(version) FROM schema_migrations").fetchall() == [
            (LATEST_VERSION,)
        ]
        fixed = [*MIGRATIONS, Migration(LATEST_VERSION + 1, "broken", "CREATE TABLE ok (a INT)")]
        assert [m.name for m in migrate(con, str(db), fixed)] == ["broken"]
        assert migrate(con, str(db), fixed) == []  # idempotent
    finally:
        con.close()


def test_an_empty_duckdb_file_is_adopted_read_write_only(db: Path) -> None:
    duckdb.connect(str(db)).close()
    with pytest.raises(WarehouseError, match="no mailsift schema yet"):
        Warehouse.open(db, read_only=True)
    with Warehouse.open(db, create=False) as wh:
        assert wh.schema_version() == LATEST_VERSION


def test_newer_schema_version_is_refused(db: Path) -> None:
    Warehouse.open(db).close()
    raw(db, "INSERT INTO schema_migrations VALUES (999, 'from_the_future', now())")
    for read_only in (False, True):
        with pytest.raises(WarehouseError, match=r"schema version 999, newer.*upgrade mailsift"):
            Warehouse.open(db, read_only=read_only)


def test_different_migration_history_is_refused(db: Path) -> None:
    Warehouse.open(db).close()
    raw(db, "UPDATE schema_migrations SET name = 'someone_elses' WHERE version = 1")
    with pytest.raises(WarehouseError, match="history differs"):
        Warehouse.open(db)


def test_tables_without_schema_migrations_are_refused(db: Path) -> None:
    raw(db, "CREATE TABLE customers (id INTEGER)")
    with pytest.raises(WarehouseError, match="customers.*no schema_migrations"):
        Warehouse.open(db)
    assert relations(db) == ({"customers"}, set())  # untouched


@pytest.mark.parametrize("name", ["notes.duckdb", "contacts.csv"])
def test_file_that_is_not_a_database_is_named(tmp_path: Path, name: str) -> None:
    # DuckDB 2.0 itself would open an existing .csv as an in-memory database of views
    path = tmp_path / name
    path.write_text("email\njane@acme.test\n")
    with pytest.raises(WarehouseError, match="not a DuckDB database") as info:
        Warehouse.open(path)
    assert str(path) in str(info.value)
    assert path.read_text() == "email\njane@acme.test\n"


def test_missing_file_without_create_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "nope.duckdb"
    with pytest.raises(WarehouseError, match="no warehouse at .*nope.duckdb"):
        Warehouse.open(path, create=False)
    with pytest.raises(WarehouseError, match="no warehouse at"):
        Warehouse.open(path, read_only=True)
    assert not path.exists()


def test_directory_is_refused_and_parents_are_created(tmp_path: Path) -> None:
    with pytest.raises(WarehouseError, match="is a directory"):
        Warehouse.open(tmp_path)
    nested = tmp_path / "data" / "warehouse" / "mailsift.duckdb"
    with Warehouse.open(nested) as wh:
        assert wh.schema_version() == LATEST_VERSION


def test_read_only_reads_and_refuses_writes(db: Path) -> None:
    with Warehouse.open(db) as wh:
        append(wh, result("a@x.test"))
    with Warehouse.open(db, read_only=True) as ro:
        assert ro.latest().height == 1
        assert ro.latest_pandas().shape[0] == 1
        with pytest.raises(WarehouseError, match="read-only"):
            append(ro, result("b@x.test"))
        with pytest.raises(WarehouseError, match="read-only"):
            ro.start_run("r", "flow", "local")


HOLD_LOCK = """
import sys, duckdb
con = duckdb.connect(sys.argv[1])
print("ready", flush=True)
sys.stdin.read()
"""


def test_a_second_writer_process_gets_a_clear_error(db: Path) -> None:
    Warehouse.open(db).close()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            HOLD_LOCK,
            str(db),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(WarehouseError, match="locked by another process"):
            Warehouse.open(db)
    finally:
        holder.communicate("", timeout=30)


def test_closed_warehouse_raises(db: Path) -> None:
    wh = Warehouse.open(db)
    wh.close()
    wh.close()
    with pytest.raises(WarehouseError, match="closed"):
        wh.latest()


# ---------------------------------------------------------------- verifications


def many_results(n: int, base: datetime) -> list[VerificationResult]:
    statuses = ("valid", "invalid", "risky", "unknown")
    tri = (True, False, None)
    out = []
    for i in range(n):
        status = statuses[i % 4]
        low = {"valid": 0.7, "invalid": 0.0, "risky": 0.3, "unknown": 0.3}[status]
        out.append(
            VerificationResult(
                email=f"user{i}@domain{i % 97}.test",
                status=status,
                score=low + (i % 1000) * 1e-4 + 1.234567890123e-9,  # needs 64 bits
                reason=REASONS[status],
                checks=Checks(*(tri[(i + k) % 3] for k in range(8))),
                suggestion=f"user{i}@gmail.com" if i % 7 == 0 else None,
                provider="google" if i % 2 else None,
                mx_host=f"mx{i % 3}.domain.test" if i % 5 else None,
                smtp_code=(250, 550, None, 451)[i % 4],
                smtp_message="2.1.5 ok ünïcode" if i % 4 == 0 else None,
                verified_at=base + timedelta(microseconds=i * 1_001),
            )
        )
    return out


def test_ten_thousand_results_round_trip_exactly(wh: Warehouse) -> None:
    results = many_results(10_000, datetime(2025, 3, 1, 12, tzinfo=UTC))
    frame = results_frame(results)
    assert frame.schema == pl.Schema(RESULT_SCHEMA)
    assert wh.append_verifications(frame, run_id="run-1", backend="sandbox") == 10_000

    back = wh.latest().sort("verified_at")
    assert back.schema == pl.Schema(HISTORY_SCHEMA)
    assert back.select(RESULT_COLUMNS).equals(frame)
    assert back["verified_at"].dtype == pl.Datetime("us", "UTC")
    assert back["catch_all"].null_count() > 0 and back["catch_all"].sum() > 0
    assert set(back["run_id"]) == {"run-1"} and set(back["backend"]) == {"sandbox"}
    assert back["verification_id"].n_unique() == 10_000
    assert results_from_frame(back) == results
    first = results_from_frame(back.head(1))[0]
    assert first.verified_at.utcoffset() == timedelta(0)
    assert first.score == results[0].score  # double precision, not REAL


def test_reappending_inserts_nothing_twice(wh: Warehouse) -> None:
    at = datetime(2025, 3, 1, tzinfo=UTC)
    results = [result(f"u{i}@x.test", at=at + timedelta(seconds=i)) for i in range(100)]
    assert append(wh, *results[:40]) == 40
    assert append(wh, *results) == 60  # a retried task: only what is missing
    assert append(wh, *results) == 0
    assert append(wh, *results[:10], *results[:10]) == 0
    assert append(wh, results[0], results[0], run_id="run-2") == 1  # another run, once
    assert wh.query("SELECT count(*) FROM verifications").item() == 101


def test_times_in_other_zones_are_stored_as_utc(wh: Warehouse) -> None:
    paris = results_frame([result("p@x.test", at=datetime(2025, 1, 1, 12, tzinfo=UTC))])
    paris = paris.with_columns(pl.col("verified_at").dt.convert_time_zone("Europe/Paris"))
    naive = results_frame([result("n@x.test", at=datetime(2025, 1, 1, 12, tzinfo=UTC))])
    naive = naive.with_columns(pl.col("verified_at").dt.replace_time_zone(None))
    wh.append_verifications(paris, run_id="r", backend="local")
    wh.append_verifications(naive, run_id="r", backend="local")
    got = wh.latest().sort("email")
    assert got["verified_at"].to_list() == [datetime(2025, 1, 1, 12, tzinfo=UTC)] * 2


def test_bad_frames_are_refused_and_nothing_is_written(wh: Warehouse) -> None:
    frame = results_frame([result("a@x.test"), result("b@x.test")])
    with pytest.raises(ValueError, match="lacks column.*verified_at"):
        wh.append_verifications(frame.drop("verified_at"), run_id="r", backend="local")
    bad = frame.with_columns(
        pl.when(pl.col("email") == "b@x.test")
        .then(pl.lit("maybe"))
        .otherwise("status")
        .alias("status")
    )
    with pytest.raises(WarehouseError, match="append_verifications failed"):
        wh.append_verifications(bad, run_id="r", backend="local")
    assert wh.latest().height == 0
    with pytest.raises(ValueError, match="run_id"):
        wh.append_verifications(frame, run_id="", backend="local")


def test_empty_results_frame_has_the_schema(wh: Warehouse) -> None:
    empty = results_frame([])
    assert empty.schema == pl.Schema(RESULT_SCHEMA) and empty.height == 0
    assert wh.append_verifications(empty, run_id="r", backend="local") == 0
    assert wh.latest().schema == pl.Schema(HISTORY_SCHEMA)
    assert wh.fresh_results([]).schema == pl.Schema(HISTORY_SCHEMA)


def test_latest_verifications_picks_the_newest(wh: Warehouse) -> None:
    now = datetime.now(UTC)
    append(wh, result("a@x.test", "valid", now - timedelta(days=10)), run_id="r1")
    append(wh, result("a@x.test", "invalid", now - timedelta(days=1)), run_id="r3")
    append(wh, result("a@x.test", "risky", now - timedelta(days=5)), run_id="r2")
    append(wh, result("b@x.test", "unknown", now - timedelta(days=2)), run_id="r2")

    view = wh.query("SELECT email, status, run_id FROM latest_verifications ORDER BY email")
    assert view.rows() == [("a@x.test", "invalid", "r3"), ("b@x.test", "unknown", "r2")]
    assert wh.latest(["a@x.test", "zz@x.test"])[["email", "status"]].rows() == [
        ("a@x.test", "invalid")
    ]
    assert wh.latest(pl.Series(["b@x.test", None, "b@x.test"])).height == 1
    history = wh.query("SELECT count(*) FROM verifications WHERE email = 'a@x.test'").item()
    assert history == 3  # append-only

    tie = now - timedelta(hours=1)
    append(wh, result("t@x.test", "valid", tie), run_id="r4")
    append(wh, result("t@x.test", "risky", tie), run_id="r5")
    picked = wh.query("SELECT status FROM latest_verifications WHERE email = 't@x.test'")
    assert picked.height == 1
    assert wh.latest(["t@x.test"])["status"].to_list() == picked["status"].to_list()


# ---------------------------------------------------------------- freshness


NOW = datetime(2025, 6, 1, 12, tzinfo=UTC)


def test_fresh_results_honour_max_age(wh: Warehouse) -> None:
    append(
        wh,
        result("old@x.test", at=NOW - timedelta(days=40)),
        result("mid@x.test", at=NOW - timedelta(days=10)),
        result("new@x.test", "invalid", at=NOW - timedelta(hours=1)),
        result("renewed@x.test", at=NOW - timedelta(days=45)),
        result("renewed@x.test", "risky", at=NOW - timedelta(days=2)),
    )
    asked = ["old@x.test", "mid@x.test", "new@x.test", "renewed@x.test", "never@x.test"]

    fresh = wh.fresh_results(asked, now=NOW).sort("email")
    assert fresh[["email", "status"]].rows() == [
        ("mid@x.test", "valid"),
        ("new@x.test", "invalid"),
        ("renewed@x.test", "risky"),
    ]
    assert fresh.schema == pl.Schema(HISTORY_SCHEMA)
    assert set(wh.fresh_results(asked, max_age_days=5, now=NOW)["email"]) == {
        "new@x.test",
        "renewed@x.test",
    }
    assert wh.fresh_results(asked, max_age_days=0, now=NOW).height == 0
    assert wh.fresh_results(["mid@x.test"], now=NOW + timedelta(days=25)).height == 0


def test_unknown_results_are_fresh_only_inside_the_retry_window(wh: Warehouse) -> None:
    append(
        wh,
        result("recent@x.test", "unknown", NOW - timedelta(minutes=10)),
        result("outage@x.test", "valid", NOW - timedelta(days=3)),
        result("outage@x.test", "unknown", NOW - timedelta(minutes=45)),
        result("risky@x.test", "risky", NOW - timedelta(minutes=45)),
    )
    emails = pl.Series(["recent@x.test", "outage@x.test", "risky@x.test"])

    fresh = wh.fresh_results(emails, now=NOW)
    # outage@ must be re-verified: its newest result is an old unknown, the valid before
    # it does not count
    assert sorted(fresh["email"]) == ["recent@x.test", "risky@x.test"]
    assert sorted(wh.fresh_results(emails, retry_unknown_after_minutes=60, now=NOW)["email"]) == [
        "outage@x.test",
        "recent@x.test",
        "risky@x.test",
    ]
    assert sorted(wh.fresh_results(emails, retry_unknown_after_minutes=5, now=NOW)["email"]) == [
        "risky@x.test"
    ]


def test_fresh_results_for_many_emails_join_not_list(wh: Warehouse) -> None:
    results = many_results(20_000, NOW - timedelta(days=1))
    wh.append_verifications(results_frame(results), run_id="r", backend="local")
    asked = pl.Series([r.email for r in results] + [f"other{i}@x.test" for i in range(20_000)])
    fresh = wh.fresh_results(asked, now=NOW)
    non_unknown = sum(r.status != "unknown" for r in results)
    assert fresh.height == non_unknown
    assert fresh["email"].n_unique() == non_unknown


# ---------------------------------------------------------------- contacts and staleness


def test_latest_contact_sources_has_each_source_row_once(wh: Warehouse) -> None:
    """contact_sources keeps every run's rows; the view keeps the newest load of each
    source, so a file loaded by three runs counts once, and a source not reloaded stays."""
    t0, t1, t2 = NOW - timedelta(days=2), NOW - timedelta(days=1), NOW
    a_then = contact_rows("crm_a.csv", ["old@acme.test", "jane@acme.test"])
    a_now = contact_rows("crm_a.csv", ["jane@acme.test", "bob@acme.test", None])
    wh.upsert_contacts(a_then, run_id="r0", seen_at=t0)
    wh.upsert_contacts(contact_rows("crm_b.csv", ["zoe@beta.test"]), run_id="r1", seen_at=t1)
    wh.upsert_contacts(a_now, run_id="r2", seen_at=t2)
    wh.upsert_contacts(a_now, run_id="r3", seen_at=t2)  # same instant: the greater run id
    assert wh.query("SELECT count(*) FROM contact_sources").item() == 9
    rows = wh.query(
        "SELECT run_id, source, row_number, email FROM latest_contact_sources "
        "ORDER BY source, row_number"
    ).rows()
    assert rows == [
        ("r3", "crm_a.csv", 1, "jane@acme.test"),
        ("r3", "crm_a.csv", 2, "bob@acme.test"),
        ("r3", "crm_a.csv", 3, None),
        ("r1", "crm_b.csv", 1, "zoe@beta.test"),
    ]
    # what `mailsift reverify --out` exports: the rows holding each address now
    held = wh.source_rows(["zoe@beta.test", "jane@acme.test", "old@acme.test", "new@x.test"])
    assert held.rows() == [
        ("crm_a.csv", 1, "crm-0", "jane@acme.test"),
        ("crm_b.csv", 1, "crm-0", "zoe@beta.test"),
        (None, None, None, "new@x.test"),
        (None, None, None, "old@acme.test"),  # crm_a.csv no longer holds it
    ]


def test_upsert_contacts_merges_sources_and_keeps_first_seen(wh: Warehouse) -> None:
    t1, t2, t0 = NOW - timedelta(days=3), NOW, NOW - timedelta(days=30)
    run1 = contact_rows("crm_a.csv", ["Jane@Acme.test", "jane@acme.test", None, "bob@acme.test"])
    assert wh.upsert_contacts(run1, run_id="r1", seen_at=t1) == 4
    assert wh.upsert_contacts(run1, run_id="r1", seen_at=t1) == 0  # a retried task

    run2 = contact_rows("https://crm.test/export.json", ["jane@acme.test"], start=7)
    assert wh.upsert_contacts(run2, run_id="r2", seen_at=t2) == 1
    older = contact_rows("crm_a.csv", ["jane@acme.test"], start=1)
    assert wh.upsert_contacts(older, run_id="r0", seen_at=t0) == 1  # loaded out of order

    jane = wh.query("SELECT * FROM contacts WHERE email = 'jane@acme.test'").to_dicts()
    assert jane == [
        {
            "email": "jane@acme.test",
            "domain": "acme.test",
            "first_seen_at": t0,
            "last_seen_at": t2,
            "sources": ["crm_a.csv", "https://crm.test/export.json"],
            "n_source_rows": 4,
        }
    ]
    assert wh.query("SELECT count(*) FROM contacts").item() == 2
    sources = wh.query(
        "SELECT run_id, source, row_number, record_id, email, loaded_at "
        "FROM contact_sources ORDER BY loaded_at, row_number"
    )
    assert sources.height == 6
    no_email = sources.filter(pl.col("email").is_null())
    assert no_email[["run_id", "row_number", "record_id"]].rows() == [("r1", 3, "crm-2")]
    assert set(sources.filter(pl.col("run_id") == "r1")["loaded_at"]) == {t1}


def test_upsert_contacts_takes_given_domain_and_numeric_record_ids(wh: Warehouse) -> None:
    rows = pl.DataFrame(
        {
            "source": ["a.xlsx", "a.xlsx"],
            "row_number": [2, 3],
            "record_id": [1001, None],
            "email": ["x@bücher.test", "y@b.test"],
            "domain": ["xn--bcher-kva.test", None],
        }
    )
    assert wh.upsert_contacts(rows, run_id="r", seen_at=NOW) == 2
    got = wh.query("SELECT email, domain FROM contacts ORDER BY email").rows()
    assert got == [("x@bücher.test", "xn--bcher-kva.test"), ("y@b.test", "b.test")]
    assert wh.query(
        "SELECT record_id FROM contact_sources ORDER BY row_number"
    ).to_series().to_list() == ["1001", None]
    with pytest.raises(ValueError, match="lacks column.*row_number"):
        wh.upsert_contacts(rows.drop("row_number"), run_id="r")


def test_stale_emails_narrowed_by_status_domain_source_and_email(wh: Warehouse) -> None:
    """What `mailsift reverify --status/--domain/--source/--email` picks: the newest
    verdict's status, the address's domain, the sources holding it now, the address."""
    wh.upsert_contacts(contact_rows("/data/crm_a.csv", ["a@x.test", "b@x.test"]), run_id="r1")
    wh.upsert_contacts(contact_rows("https://crm.test/b.csv", ["c@y.test"]), run_id="r2")
    old = datetime.now(UTC) - timedelta(days=3)
    append(wh, result("a@x.test", "invalid", old), result("b@x.test", "unknown", old),
           result("c@y.test", "invalid", old), result("d@y.test", "valid", old))
    append(wh, result("a@x.test", "valid", old + timedelta(hours=1)), run_id="r3")  # newest: valid
    assert wh.stale_emails(max_age_days=0, statuses=["invalid"]) == ["c@y.test"]
    assert wh.stale_emails(max_age_days=0, statuses=["Invalid", "UNKNOWN"]) == ["b@x.test", "c@y.test"]
    assert wh.stale_emails(max_age_days=0, domains=["Y.test."]) == ["c@y.test", "d@y.test"]
    assert wh.stale_emails(max_age_days=0, sources=["crm_a.csv"]) == ["b@x.test", "a@x.test"]
    assert wh.stale_emails(max_age_days=0, sources=["https://crm.test/b.csv"]) == ["c@y.test"]
    assert wh.stale_emails(max_age_days=0, sources=["a.csv"]) == []  # a whole file name only
    assert wh.stale_emails(max_age_days=0, emails=["D@y.test", "zz@q.test"]) == ["d@y.test"]
    assert wh.stale_emails(max_age_days=0, domains=["x.test"], statuses=["valid"]) == ["a@x.test"]
    assert wh.stale_emails(max_age_days=5, statuses=["invalid"]) == []  # age still counts


def test_stale_contacts_and_stale_emails_after_aging(wh: Warehouse) -> None:
    wh.upsert_contacts(
        contact_rows("crm.csv", ["a@x.test", "b@x.test", "c@x.test", "never@x.test"]),
        run_id="r1",
    )
    append(wh, result("a@x.test"), result("b@x.test", "invalid"), result("c@x.test"))
    append(wh, result("orphan@y.test"))  # verified, not a contact (e.g. `mailsift verify`)

    stale = wh.query("SELECT * FROM stale_contacts")
    assert stale.rows() == [("never@x.test", "x.test", None, None)]
    assert wh.stale_emails() == []

    assert wh.age_verifications(31, ["a@x.test"]) == 1
    assert wh.age_verifications(45, pl.Series(["b@x.test", "orphan@y.test"])) == 2
    stale = wh.query("SELECT email, last_status FROM stale_contacts ORDER BY email")
    assert stale.rows() == [("a@x.test", "valid"), ("b@x.test", "invalid"), ("never@x.test", None)]
    last = wh.query("SELECT last_verified_at FROM stale_contacts WHERE email = 'a@x.test'").item()
    assert timedelta(days=30) < datetime.now(UTC) - last < timedelta(days=32)

    assert wh.stale_emails() == ["b@x.test", "orphan@y.test", "a@x.test"]  # oldest first
    assert wh.stale_emails(limit=1) == ["b@x.test"]
    assert wh.stale_emails(max_age_days=40) == ["b@x.test", "orphan@y.test"]
    assert wh.stale_emails(include_never_verified=True, limit=2) == ["never@x.test", "b@x.test"]

    append(wh, result("a@x.test"), run_id="r2")  # re-verified now: fresh again
    assert "a@x.test" not in wh.stale_emails()
    assert "a@x.test" not in wh.query("SELECT email FROM stale_contacts").to_series().to_list()


# ---------------------------------------------------------------- runs, gate, webhooks


def test_runs_round_trip(wh: Warehouse) -> None:
    wh.start_run("run-9", "verify-crm-exports", "local", NOW)
    assert wh.get_run("run-9")["status"] == "running"
    wh.finish_run(
        "run-9",
        "gate_failed",
        NOW + timedelta(minutes=2),
        n_source_rows=10,
        n_without_email=1,
        n_unique=8,
        n_from_warehouse=3,
        n_verified=5,
        summary={"by_status": {"valid": 7, "unknown": 1}, "gate": False},
    )
    run = wh.get_run("run-9")
    assert run == {
        "run_id": "run-9",
        "flow_name": "verify-crm-exports",
        "backend": "local",
        "started_at": NOW,
        "finished_at": NOW + timedelta(minutes=2),
        "status": "gate_failed",
        "n_source_rows": 10,
        "n_without_email": 1,
        "n_unique": 8,
        "n_from_warehouse": 3,
        "n_verified": 5,
        "summary": {"by_status": {"valid": 7, "unknown": 1}, "gate": False},
    }
    summary_sql = wh.query("SELECT summary->>'$.by_status.valid' FROM runs").item()
    assert summary_sql == "7"

    wh.start_run("run-9", "verify-crm-exports", "local", NOW + timedelta(hours=1))  # retried
    again = wh.get_run("run-9")
    assert (again["status"], again["started_at"], again["finished_at"]) == ("running", NOW, None)

    assert wh.get_run("nope") is None
    with pytest.raises(WarehouseError, match="no run 'nope'"):
        wh.finish_run("nope", "completed")
    with pytest.raises(TypeError, match="n_bogus"):
        wh.finish_run("run-9", "completed", n_bogus=1)
    with pytest.raises(ValueError, match="status"):
        wh.finish_run("run-9", "done")


def test_quality_runs_round_trip(wh: Warehouse) -> None:
    qid = wh.record_quality_run(
        run_id="run-1",
        scope="run",
        is_passed=False,
        n_rows=120,
        unknown_share=0.125,
        max_unknown_share=0.1,
        failed_expectations=["unknown_share", "score_in_band"],
        details={"results": [{"name": "unknown_share", "observed": 0.125}]},
        checked_at=NOW,
    )
    wh.record_quality_run(
        scope="warehouse",
        is_passed=True,
        n_rows=5000,
        checked_at=(NOW + timedelta(hours=1)).isoformat(),
    )
    runs = wh.quality_runs()
    assert runs.height == 2
    first, second = runs.to_dicts()
    assert first["quality_run_id"] == qid
    assert (first["run_id"], first["scope"], first["is_passed"], first["n_rows"]) == (
        "run-1",
        "run",
        False,
        120,
    )
    assert first["unknown_share"] == 0.125 and first["max_unknown_share"] == 0.1
    assert first["failed_expectations"] == ["unknown_share", "score_in_band"]
    assert first["checked_at"] == NOW
    assert '"observed": 0.125' in first["details"]
    assert (second["run_id"], second["scope"], second["failed_expectations"]) == (
        None,
        "warehouse",
        [],
    )
    assert wh.quality_runs("run-1").height == 1
    with pytest.raises(ValueError, match="needs its run_id"):
        wh.record_quality_run(scope="run", is_passed=True, n_rows=1)


def test_webhook_deliveries_and_failed_ones(wh: Warehouse) -> None:
    url = "https://hooks.test/in?token=s3cret&team=growth"
    payload = {"run_id": "r1", "results": [{"email": "a@x.test", "status": "valid"}]}
    common = {"run_id": "r1", "url": url, "n_results": 1, "payload": payload}
    wh.record_webhook_attempt(
        delivery_id="d0",
        batch_index=0,
        attempt=1,
        is_delivered=False,
        status_code=503,
        error="503 from " + url,
        attempted_at=NOW,
        **common,
    )
    wh.record_webhook_attempt(
        delivery_id="d0",
        batch_index=0,
        attempt=2,
        is_delivered=True,
        status_code=200,
        attempted_at=NOW + timedelta(minutes=1),
        **common,
    )
    wh.record_webhook_attempt(
        delivery_id="d1",
        batch_index=1,
        attempt=1,
        is_delivered=False,
        error="connect timeout",
        attempted_at=NOW,
        **common,
    )
    wh.record_webhook_attempt(
        delivery_id="d1",
        batch_index=1,
        attempt=2,
        is_delivered=False,
        status_code=500,
        attempted_at=NOW + timedelta(minutes=1),
        **common,
    )
    wh.record_webhook_attempt(
        delivery_id="d2",
        batch_index=0,
        attempt=1,
        is_delivered=False,
        status_code=500,
        **{**common, "run_id": "r2"},
    )

    stored = wh.query("SELECT url, error FROM webhook_deliveries").rows()
    assert all("s3cret" not in (u + (e or "")) for u, e in stored)
    assert wh.query("SELECT count(*) FROM webhook_deliveries").item() == 5

    failed = wh.failed_webhook_deliveries()
    assert [(f["delivery_id"], f["attempt"]) for f in failed] == [("d1", 2), ("d2", 1)]
    d1 = failed[0]
    assert d1["url"] == "https://hooks.test/in?token=REDACTED&team=growth"
    assert (d1["run_id"], d1["batch_index"], d1["n_results"], d1["status_code"]) == (
        "r1",
        1,
        1,
        500,
    )
    assert d1["attempted_at"] == NOW + timedelta(minutes=1) and d1["is_delivered"] is False
    assert json.loads(d1["payload"]) == payload
    assert [f["delivery_id"] for f in wh.failed_webhook_deliveries("r1")] == ["d1"]

    wh.record_webhook_attempt(
        delivery_id="d1", batch_index=1, attempt=3, is_delivered=True, status_code=204, **common
    )
    assert [f["delivery_id"] for f in wh.failed_webhook_deliveries()] == ["d2"]


# ---------------------------------------------------------------- sharing


def test_latest_pandas_for_the_gate(wh: Warehouse) -> None:
    append(wh, result("a@x.test", at=NOW), result("b@x.test", "unknown", at=NOW))
    frame = wh.latest_pandas()
    assert list(frame.columns) == list(HISTORY_SCHEMA)
    assert str(frame["verified_at"].dtype) == "datetime64[us, UTC]"
    assert sorted(frame["status"]) == ["unknown", "valid"]
    assert frame["score"].dtype == "float64"


def test_threads_of_the_flow_process_can_share_one_warehouse(wh: Warehouse) -> None:
    def load(k: int) -> None:
        batch = [result(f"t{k}-{i}@x.test", at=NOW) for i in range(500)]
        assert append(wh, *batch, run_id=f"r{k}") == 500
        wh.fresh_results([r.email for r in batch], now=NOW)

    threads = [threading.Thread(target=load, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert wh.query("SELECT count(*) FROM verifications").item() == 2000


def test_webhook_payload_text_is_kept_byte_for_byte(wh: Warehouse) -> None:
    # a re-delivery must send the very body that was signed
    body = b'{"b": 1,  "a":[1, 2.50, "\\u00e9 \xc3\xa9"], "z" : null}'
    wh.record_webhook_attempt(
        delivery_id="d",
        run_id="r",
        url="http://hook.test/",
        batch_index=0,
        n_results=1,
        attempt=1,
        is_delivered=False,
        payload=body,
    )
    assert wh.failed_webhook_deliveries()[0]["payload"].encode() == body
    with pytest.raises(ValueError, match="not JSON"):
        wh.record_webhook_attempt(
            delivery_id="d",
            run_id="r",
            url="http://hook.test/",
            batch_index=0,
            n_results=1,
            attempt=2,
            is_delivered=False,
            payload="{not json",
        )


def test_runs_of_dead_processes_are_marked_interrupted(wh: Warehouse) -> None:
    """A run records its owner; the next start marks the runs whose owner is gone as
    failed (interrupted) and leaves alone the live ones and those it cannot judge."""
    owners = {
        "dead": {"pid": 1_000_001, "host": "here", "started": "1"},
        "alive": {"pid": 1_000_002, "host": "here", "started": "2"},
        "elsewhere": {"pid": 1_000_003, "host": "there", "started": "3"},
    }
    for run_id, owner in owners.items():
        wh.start_run(run_id, "verify-crm-exports", "local", NOW, owner=owner)
    wh.start_run("old-style", "verify-crm-exports", "local", NOW)  # no owner recorded
    wh.start_run("done", "verify-crm-exports", "local", NOW, owner=owners["dead"])
    wh.finish_run("done", "completed", NOW)

    def is_alive(owner: dict) -> bool | None:
        return None if owner["host"] != "here" else owner["pid"] == 1_000_002

    assert wh.interrupt_dead_runs(is_alive, NOW + timedelta(hours=1)) == ["dead"]
    dead = wh.get_run("dead")
    assert dead["status"] == "failed" and dead["finished_at"] == NOW + timedelta(hours=1)
    assert dead["summary"]["error"].startswith("interrupted: its process (pid 1000001 on here)")
    assert dead["summary"]["is_interrupted"] is True
    for run_id in ("alive", "elsewhere", "old-style"):
        assert wh.get_run(run_id)["status"] == "running", run_id
    assert wh.get_run("done")["status"] == "completed"
    assert wh.interrupt_dead_runs(is_alive) == []


def test_appends_on_few_threads_store_the_same_and_the_setting_comes_back(db: Path) -> None:
    # A flow's verify step appends each batch with DuckDB limited to one thread (its
    # threads took the engine's CPU): what is stored is the same, and the connection's
    # setting is back afterwards, also when the block fails, for the queries after it.
    at = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    results = [VerificationResult(email=f"u{i}@a.test", status="valid", score=0.95, reason="accepted",
                                  checks=Checks(syntax_valid=True), verified_at=at) for i in range(50)]
    with Warehouse.open(db) as wh:
        before = wh.query("SELECT current_setting('threads') AS n").item()
        with wh.threads_limited(1):
            assert wh.query("SELECT current_setting('threads') AS n").item() == 1
            assert wh.append_verifications(results_frame(results), run_id="r1", backend="local") == 50
        assert wh.query("SELECT current_setting('threads') AS n").item() == before
        with pytest.raises(RuntimeError), wh.threads_limited(1):
            raise RuntimeError("a batch failed")
        assert wh.query("SELECT current_setting('threads') AS n").item() == before
        assert wh.latest([r.email for r in results]).height == 50
