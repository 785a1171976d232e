"""``mailsift reverify`` and ``mailsift gate`` as users run them: subprocesses against
Prefect's test harness, the sandbox backend (no network), real DuckDB files."""

from __future__ import annotations

import csv
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from warehouse import Warehouse

#: source row -> sandbox verdict: @valid.test valid, @invalid.test invalid, others risky
EMAILS = ["a@valid.test", "b@valid.test", "c@invalid.test", "d@elsewhere.test", "e@invalid.test",
          "A@Valid.test"]


def mailsift(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mailsift.cli", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=600)


def count(db: Path, sql: str) -> int:
    with Warehouse.open(db, read_only=True) as wh:
        return int(wh.query(sql).item())


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def built(prefect_harness: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One `mailsift run` (sandbox backend) for the module; each test gets a copy."""
    home = tmp_path_factory.mktemp("built")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILSIFT_")}
    env.update(PREFECT_API_URL=prefect_harness, PREFECT_HOME=str(home / "prefect-home"))
    src = home / "crm.csv"
    src.write_text("Id,Email\n" + "".join(f"R{i},{e}\n" for i, e in enumerate(EMAILS, 1)))
    proc = mailsift(["run", str(src), "--backend", "sandbox", "--db", "wh.duckdb", "--out", "out"],
                    env, home)
    assert proc.returncode == 0, proc.stderr
    return home / "wh.duckdb"


@pytest.fixture
def warehouse(built: Path, tmp_path: Path) -> Path:
    return Path(shutil.copy(built, tmp_path / "wh.duckdb"))


def test_reverify_everything_now_passes_its_gate_prints_and_exports(
    cli_env: dict[str, str], tmp_path: Path, warehouse: Path
) -> None:
    """--older-than-days 0 re-checks all five addresses; the gate's freshness limit is
    not the selection, so the run passes, prints its summary and writes its exports."""
    before = count(warehouse, "SELECT count(*) FROM verifications")
    proc = mailsift(["reverify", "--older-than-days", "0", "--backend", "sandbox", "--db",
                     str(warehouse), "--out", "rechecked"], cli_env, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert count(warehouse, "SELECT count(*) FROM verifications") == before + 5
    assert "mailsift reverify-stale" in proc.stdout or "reverify" in proc.stdout
    assert "gate" in proc.stdout and "passed" in proc.stdout
    out = tmp_path / "rechecked"
    rows = {name: read_csv(out / f"{name}.csv") for name in ("valid", "invalid", "risky", "unknown")}
    # one row per source row holding a re-checked address, with its CRM record id
    assert sorted(r["record_id"] for r in rows["valid"]) == ["R1", "R2", "R6"]
    assert sorted(r["email_normalized"] for r in rows["invalid"]) == ["c@invalid.test", "e@invalid.test"]
    assert [r["email"] for r in rows["risky"]] == ["d@elsewhere.test"] and rows["unknown"] == []
    assert pl.read_parquet(out / "results.parquet").height == 6
    assert (out / "report.html").is_file() and str((out / "report.html").resolve()) in proc.stdout
    gates = Warehouse.open(warehouse, read_only=True)
    try:
        assert gates.query("SELECT is_passed FROM quality_runs ORDER BY checked_at").to_series().to_list() == [
            True, True
        ]
    finally:
        gates.close()


@pytest.mark.parametrize(
    ("flags", "rechecked"),
    [
        (["--status", "invalid"], {"c@invalid.test", "e@invalid.test"}),
        (["--status", "risky,invalid", "--domain", "ELSEWHERE.test"], {"d@elsewhere.test"}),
        (["--email", "b@valid.test", "--email", "e@invalid.test"], {"b@valid.test", "e@invalid.test"}),
        (["--source", "crm.csv", "--status", "valid"], {"a@valid.test", "b@valid.test"}),
        (["--source", "other.csv"], set()),
        (["--status", "valid", "--older-than-days", "5"], set()),  # all are fresh
    ],
)
def test_reverify_selects_by_status_domain_source_and_email(
    cli_env: dict[str, str], tmp_path: Path, warehouse: Path, flags: list[str], rechecked: set[str]
) -> None:
    proc = mailsift(["reverify", "--backend", "sandbox", "--db", str(warehouse), *flags],
                    cli_env, tmp_path)
    assert proc.returncode == 0, proc.stderr
    with Warehouse.open(warehouse, read_only=True) as wh:
        twice = wh.query("SELECT email FROM verifications GROUP BY email HAVING count(*) = 2")
    assert set(twice["email"]) == rechecked


def test_reverify_refuses_an_unknown_status_in_one_line(
    cli_env: dict[str, str], tmp_path: Path, warehouse: Path
) -> None:
    before = digest(warehouse)
    proc = mailsift(["reverify", "--status", "bogus", "--db", str(warehouse)], cli_env, tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "mailsift: --status bogus: choose from valid, invalid, risky, unknown"
    ]
    assert digest(warehouse) == before


def test_gate_never_writes_unless_record(cli_env: dict[str, str], tmp_path: Path, warehouse: Path) -> None:
    runs_before = count(warehouse, "SELECT count(*) FROM quality_runs")
    before = digest(warehouse)
    for args in (["gate"], ["gate", "--json"], ["gate", "--max-age-days", "0"]):
        proc = mailsift([*args, "--db", str(warehouse)], cli_env, tmp_path)
        assert proc.returncode in (0, 1), proc.stderr
        assert digest(warehouse) == before  # not a byte changed
    assert count(warehouse, "SELECT count(*) FROM quality_runs") == runs_before

    proc = mailsift(["gate", "--record", "--db", str(warehouse)], cli_env, tmp_path)
    assert proc.returncode == 0, proc.stderr
    with Warehouse.open(warehouse, read_only=True) as wh:
        recorded = wh.query("SELECT scope, run_id, is_passed FROM quality_runs ORDER BY checked_at")
    assert recorded.height == runs_before + 1
    assert recorded.row(-1) == ("warehouse", None, True)
