"""SQL as users run it: every recipe of the README and of the demo's "try next", through
``mailsift sql`` (and ``duckdb.connect(path, read_only=True)``) against the demo's own
warehouse, each returning what its title says.

The warehouse comes from two ``mailsift demo`` runs in an empty directory (so
``contact_sources`` holds every source row twice), plus a short re-check history for
three addresses written through the store, the one writer."""

from __future__ import annotations

import csv
import hashlib
import json
import re
import subprocess
import sys
from collections import Counter
from datetime import timedelta
from pathlib import Path

import duckdb
import polars as pl
import pytest

from pipeline.cli import DEMO_RECIPES
from warehouse import Warehouse

README = Path(__file__).resolve().parents[1] / "README.md"
#: Re-check history written on top of the demo (all three invalid in the demo's world).
CHANGED_BEFORE = "closed.account@acme-corp.test"  # invalid -> valid -> valid
CHANGED_LAST = "old.wei.chen@initech.test"  # invalid -> unknown
AGED = "former.wei.chen@acme-corp.test"  # its only check moved 40 days back


def mailsift(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mailsift.cli", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=600)


def readme_recipes() -> dict[str, str]:
    """title -> SQL of every recipe in the README's SQL block (``-- title`` then SQL)."""
    section = README.read_text().split("## SQL recipes", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```sql\n(.*?)```", section, flags=re.S)
    recipes = {}
    for chunk in block.strip().split("\n\n"):
        title, _, body = chunk.partition("\n")
        assert title.startswith("-- "), chunk
        recipes[title[3:].strip()] = body.strip().rstrip(";")
    return recipes


@pytest.fixture(scope="module")
def demo_dir(prefect_harness, tmp_path_factory) -> dict:
    import os

    home = tmp_path_factory.mktemp("demo")  # an empty directory: no repository around
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILSIFT_")}
    env.update(PREFECT_API_URL=prefect_harness, PREFECT_HOME=str(home / ".prefect"))
    first = mailsift(["demo"], env, home)
    assert first.returncode == 0, first.stderr[-2000:]
    second = mailsift(["demo"], env, home)
    assert second.returncode == 0, second.stderr[-2000:]
    db = home / "mailsift-demo.duckdb"
    with Warehouse.open(db) as wh:
        latest = wh.latest([CHANGED_BEFORE, CHANGED_LAST, AGED])
        assert dict(zip(latest["email"], latest["status"], strict=True)) == {
            CHANGED_BEFORE: "invalid", CHANGED_LAST: "invalid", AGED: "invalid",
        }
        wh.age_verifications(40, [AGED])

        def recheck(email: str, status: str, score: float, reason: str, minutes: int) -> None:
            row = latest.filter(pl.col("email") == email).with_columns(
                pl.lit(status).alias("status"), pl.lit(score).alias("score"),
                pl.lit(reason).alias("reason"),
                (pl.col("verified_at") + timedelta(minutes=minutes)).alias("verified_at"),
            )
            assert wh.append_verifications(row, run_id=f"recheck-{minutes}", backend="local") == 1

        recheck(CHANGED_BEFORE, "valid", 0.95, "accepted", 1)
        recheck(CHANGED_BEFORE, "valid", 0.95, "accepted", 2)
        recheck(CHANGED_LAST, "unknown", 0.5, "smtp_timeout", 2)
        history = wh.query("SELECT * FROM verifications")
    return {"home": home, "db": db, "env": env, "history": history, "second": second.stdout}


def run_sql(demo: dict, query: str) -> list[dict]:
    proc = mailsift(["sql", query, "--db", str(demo["db"]), "--format", "json"], demo["env"], demo["home"])
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    con = duckdb.connect(str(demo["db"]), read_only=True)  # the README's Python way
    try:
        assert len(con.sql(query).fetchall()) == len(rows)
    finally:
        con.close()
    return rows


def newest_per_email(history: pl.DataFrame) -> pl.DataFrame:
    return history.sort("verified_at", "verification_id").group_by("email").last()


def risky_rows(demo: dict) -> list[tuple[str, str]]:
    """(Record ID, email_normalized) of risky.csv: every risky source row, input order."""
    with (demo["home"] / "demo-output" / "risky.csv").open(encoding="utf-8-sig", newline="") as fh:
        return [(r["Record ID"], r["email_normalized"]) for r in csv.DictReader(fh)]


def expect_counts(demo: dict, rows: list[dict]) -> None:
    newest = newest_per_email(demo["history"])
    expected = Counter(zip(newest["status"], newest["reason"], strict=True))
    assert {(r["status"], r["reason"]): r["n"] for r in rows} == dict(expected)
    assert [r["n"] for r in rows] == sorted((r["n"] for r in rows), reverse=True)


def expect_risky(demo: dict, rows: list[dict]) -> None:
    expected = risky_rows(demo)
    assert len(expected) >= 10
    # one row per source row, though the demo loaded the file twice
    assert [(r["record_id"], r["email"]) for r in rows] == expected


def expect_one_address_history(demo: dict, rows: list[dict]) -> None:
    assert [r["email"] for r in rows] == [CHANGED_BEFORE] * 3
    assert [r["status"] for r in rows] == ["invalid", "valid", "valid"]
    assert [r["previous_status"] for r in rows] == [None, "invalid", "valid"]
    assert rows[1]["previous_check"] == rows[0]["verified_at"]


def expect_changed_at_last(demo: dict, rows: list[dict]) -> None:
    # CHANGED_BEFORE changed at an older check only: it is not listed
    assert [(r["email"], r["previous_status"], r["status"]) for r in rows] == [
        (CHANGED_LAST, "invalid", "unknown")
    ]


def expect_due(demo: dict, rows: list[dict]) -> None:
    newest = newest_per_email(demo["history"])
    with Warehouse.open(demo["db"], read_only=True) as wh:
        contacts = set(wh.query("SELECT email FROM contacts")["email"])
    checked = dict(zip(newest["email"], newest["verified_at"], strict=True))
    cutoff = max(demo["history"]["verified_at"]) - timedelta(days=30)
    due = [e for e in contacts if e not in checked or checked[e] <= cutoff]
    assert due == [AGED]
    assert rows == [{"due": 1}]


def expect_gate_history(demo: dict, rows: list[dict]) -> None:
    assert len(rows) == 2  # one per demo run
    assert [r["is_passed"] for r in rows] == [True, True]
    assert rows[0]["checked_at"] > rows[1]["checked_at"]
    assert all(r["scope"] == "run" and r["failed_expectations"] == [] for r in rows)


README_EXPECTATIONS = {
    "counts by status and reason": expect_counts,
    "the risky rows of one source file, with their CRM record ids": expect_risky,
    "every check of one address, with what changed since the previous one": expect_one_address_history,
    "every address whose verdict changed at its last re-check": expect_changed_at_last,
    "how many contacts are due for re-verification": expect_due,
    "the quality gate's history": expect_gate_history,
}
DEMO_EXPECTATIONS = {
    "counts by status and reason": expect_counts,
    "the risky rows of the demo's export, with their CRM record ids": expect_risky,
}


def test_every_readme_recipe_has_a_check() -> None:
    assert set(readme_recipes()) == set(README_EXPECTATIONS)
    assert {title for title, _ in DEMO_RECIPES} == set(DEMO_EXPECTATIONS)


@pytest.mark.parametrize("title", list(README_EXPECTATIONS))
def test_readme_recipe(demo_dir: dict, title: str) -> None:
    README_EXPECTATIONS[title](demo_dir, run_sql(demo_dir, readme_recipes()[title]))


@pytest.mark.parametrize("title", list(DEMO_EXPECTATIONS))
def test_demo_recipe(demo_dir: dict, title: str) -> None:
    query = dict(DEMO_RECIPES)[title]
    assert f"# {title}" in demo_dir["second"]  # the demo prints it
    DEMO_EXPECTATIONS[title](demo_dir, run_sql(demo_dir, query))


def test_demo_second_run_comes_from_the_warehouse(demo_dir: dict) -> None:
    """The last "try next" line: run it again and nothing is verified."""
    text = demo_dir["second"]
    assert re.search(r"verified now\s*│\s*0\b", text), text
    assert re.search(r"from warehouse\s*│\s*163\b", text), text


def test_sql_never_writes_and_fails_in_one_line(demo_dir: dict) -> None:
    db, env, home = demo_dir["db"], demo_dir["env"], demo_dir["home"]
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    for query in ("DELETE FROM runs", "CREATE TABLE x (a INT)", "SELECT * FROM no_such_table"):
        proc = mailsift(["sql", query, "--db", str(db)], env, home)
        assert proc.returncode == 2, proc.stdout
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert "read-only" in mailsift(["sql", "DELETE FROM runs", "--db", str(db)], env, home).stderr
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
    missing = mailsift(["sql", "SELECT 1", "--db", str(home / "none.duckdb")], env, home)
    assert missing.returncode == 2 and "no warehouse at" in missing.stderr
    assert not (home / "none.duckdb").exists()


def test_sql_table_and_csv_output(demo_dir: dict) -> None:
    db, env, home = demo_dir["db"], demo_dir["env"], demo_dir["home"]
    query = "SELECT status, count(*) AS n FROM latest_verifications GROUP BY ALL ORDER BY status"
    table = mailsift(["sql", query, "--db", str(db)], env, home)
    assert table.returncode == 0
    assert re.search(r"^\s*valid\s+\d+\s*$", table.stdout, flags=re.M) and "4 rows" in table.stdout
    as_csv = mailsift(["sql", query, "--db", str(db), "--format", "csv"], env, home)
    rows = list(csv.DictReader(as_csv.stdout.splitlines()))
    assert [r["status"] for r in rows] == ["invalid", "risky", "unknown", "valid"]
    formula = mailsift(["sql", "SELECT '=1+1' AS f", "--db", str(db), "--format", "csv"], env, home)
    assert formula.stdout.splitlines() == ["f", "'=1+1"]  # inert in a spreadsheet
