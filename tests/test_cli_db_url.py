"""``--db`` takes what MAILSIFT_DB takes: a DuckDB file or a ``postgresql://`` URL.

Real ``mailsift`` subprocesses against Prefect's test harness, the sandbox backend (no
network), a real PostgreSQL (pgserver, tests/pg_fixtures.py) and a real DuckDB file. The
URL carries a password (PostgreSQL's trust authentication never asks for it): it must
never be printed, nor stored by Prefect or in the warehouse's run summaries."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.pg_fixtures import pg_server, pg_url
from warehouse import Warehouse

__all__ = ["pg_server", "pg_url"]  # the fixtures, imported for pytest

SECRET = "hunter2-secret"
#: sandbox verdicts: @valid.test valid, @invalid.test invalid
EMAILS = ["a@valid.test", "b@valid.test", "c@invalid.test"]


def mailsift(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mailsift.cli", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=600)


def with_password(url: str) -> str:
    """pgserver's ``postgresql://postgres:@/...`` with a password in it."""
    scheme, _, rest = url.partition("://")
    user, _, host_and_db = rest.partition("@")
    return f"{scheme}://{user.split(':')[0]}:{SECRET}@{host_and_db}"


@pytest.fixture
def env(cli_env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in cli_env.items() if k != "MAILSIFT_DB"}


@pytest.mark.parametrize("kind", ["duckdb", "postgresql"])
def test_every_command_takes_the_warehouse_from_db(
    kind: str, env: dict[str, str], request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    db = str(tmp_path / "crm.duckdb") if kind == "duckdb" else with_password(request.getfixturevalue("pg_url"))
    src = tmp_path / "crm.csv"
    src.write_text("Id,Email\n" + "".join(f"R{i},{e}\n" for i, e in enumerate(EMAILS, 1)))
    shown: list[str] = []

    def ok(args: list[str]) -> subprocess.CompletedProcess:
        proc = mailsift([*args, "--db", db], env, tmp_path)
        shown.extend([proc.stdout, proc.stderr])
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc

    ok(["run", str(src), "--backend", "sandbox", "--out", "out"])
    ok(["reverify", "--backend", "sandbox", "--email", "c@invalid.test"])
    counts = json.loads(ok(["sql", "SELECT status, count(*) AS n FROM verifications GROUP BY ALL ORDER BY status",
                            "--format", "json"]).stdout)
    assert counts == [{"status": "invalid", "n": 2}, {"status": "valid", "n": 2}]  # the reverify: one more
    assert json.loads(ok(["gate", "--json", "--max-unknown-share", "0"]).stdout)["n_rows"] == 3
    ok(["report", "--out", "health.html"])
    assert "crm.csv" in (tmp_path / "health.html").read_text()  # the run's source, read from --db
    assert not any(SECRET in text for text in shown)
    if kind == "duckdb":
        assert Path(db).is_file()
        return

    # nothing else went to ./mailsift.duckdb: every command used the PostgreSQL warehouse
    assert not (tmp_path / "mailsift.duckdb").exists()
    with Warehouse.open(db, read_only=True) as wh:
        runs = wh.query("SELECT flow_name, status, CAST(summary AS VARCHAR) AS summary FROM runs").rows()
    assert sorted(r[:2] for r in runs) == [("reverify-stale", "completed"), ("verify-crm-exports", "completed")]
    assert not any(SECRET in r[2] for r in runs)
    # Prefect stores flow-run parameters (its database, the UI): the URL is not among them
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        stored = [json.dumps(r.parameters, default=str) for r in client.read_flow_runs(limit=200)]
    assert stored and not any(SECRET in p for p in stored)


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://mailsift:{SECRET}@db.internal:54x2/mailsift",  # a port that is no number
        f"postgresql://mailsift:{SECRET}@[::1/mailsift",  # an unclosed IPv6 literal
        f"postgresql:/mailsift:{SECRET}@db.internal/mailsift",  # one slash: no DuckDB file of that name
    ],
)
def test_a_malformed_url_is_one_line_exit_2_without_its_password(
    url: str, env: dict[str, str], tmp_path: Path
) -> None:
    src = tmp_path / "crm.csv"
    src.write_text("Email\na@valid.test\n")
    for args in (["run", str(src), "--backend", "sandbox"], ["sql", "SELECT 1"], ["gate"], ["report"],
                 ["reverify"], ["keys", "list"]):
        proc = mailsift([*args, "--db", url], env, tmp_path)
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stderr.count("\n") == 1 and "PostgreSQL URL" in proc.stderr, proc.stderr
        assert SECRET not in proc.stderr + proc.stdout and "Traceback" not in proc.stderr
    assert sorted(os.listdir(tmp_path)) == ["crm.csv"]  # nothing made: no file, no export


def test_a_warehouse_url_nobody_answers_is_one_line_without_its_password(
    env: dict[str, str], tmp_path: Path
) -> None:
    url = f"postgresql://mailsift:{SECRET}@127.0.0.1:9/mailsift"  # port 9: nothing listens
    proc = mailsift(["sql", "SELECT 1", "--db", url], env, tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "127.0.0.1:9" in proc.stderr and SECRET not in proc.stderr
