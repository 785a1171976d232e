"""The shared warehouse (MAILSIFT_DB=postgresql://...): several writers at once.

A real PostgreSQL (pgserver, started by tests/pg_fixtures.py), real ``mailsift run``
processes, the simulated internet. What users of several probe hosts rely on: writers do
not fail each other, and history holds each address's checks exactly once per run.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from mailsift.errors import WarehouseError
from mailsift.result import VerificationResult
from mailsift.testing.world import World
from tests.pg_fixtures import pg_server, pg_url
from warehouse import LATEST_VERSION, MIGRATIONS, Warehouse, results_frame

__all__ = ["pg_server", "pg_url"]  # the fixtures, imported for pytest


def export(path: Path, emails: list[str]) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["Record ID", "Email"])
        writer.writerows([f"R{i}", email] for i, email in enumerate(emails, start=1))
    return path


def in_threads(n: int, fn) -> list[object]:
    """Run ``fn(i)`` in ``n`` threads released together; return results (or exceptions)."""
    barrier = threading.Barrier(n)
    out: list[object] = [None] * n

    def work(i: int) -> None:
        barrier.wait()
        try:
            out[i] = fn(i)
        except Exception as exc:  # reported by the caller's assertion
            out[i] = exc

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return out


def test_processes_that_open_a_new_warehouse_together_migrate_it_once(pg_url: str) -> None:
    def open_and_count(_: int) -> int:
        with Warehouse.open(pg_url) as wh:
            return wh.schema_version()

    assert in_threads(4, open_and_count) == [LATEST_VERSION] * 4
    with Warehouse.open(pg_url, read_only=True) as wh:
        applied = wh.query("SELECT version FROM schema_migrations ORDER BY version")
        assert applied.to_series().to_list() == [m.version for m in MIGRATIONS]


def test_the_same_batch_from_two_writers_is_stored_once(pg_url: str) -> None:
    at = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
    batch = results_frame(
        VerificationResult(email=f"u{i}@x.test", status="valid", score=0.9, reason="accepted", verified_at=at)
        for i in range(2000)
    )
    Warehouse.open(pg_url).close()

    def load(i: int) -> int:  # two writers (one connection each), the same batch, twice
        with Warehouse.open(pg_url) as wh:
            return wh.append_verifications(batch, run_id="run-1", backend="local") + wh.append_verifications(
                batch, run_id="run-1", backend="local"
            )

    inserted = in_threads(2, load)
    assert sorted(inserted) == [0, 2000], inserted  # one writer stored it, the other nothing
    with Warehouse.open(pg_url) as wh:
        assert wh.query("SELECT count(*), count(DISTINCT email) FROM verifications").row(0) == (2000, 2000)
        # another run's check of the same addresses is new history, kept beside the first
        assert wh.append_verifications(batch, run_id="run-2", backend="local") == 2000


def test_overlapping_contact_loads_from_concurrent_runs_all_count(pg_url: str) -> None:
    Warehouse.open(pg_url).close()
    emails = [f"p{i}@shared.test" for i in range(3000)]

    def load(i: int) -> int:  # four runs, the same contacts in opposite orders
        rows = pl.DataFrame(
            {
                "source": [f"crm-{i}.csv"] * len(emails),
                "row_number": list(range(1, len(emails) + 1)),
                "record_id": [None] * len(emails),
                "email": emails if i % 2 else emails[::-1],
            },
            schema={"source": pl.String, "row_number": pl.Int64, "record_id": pl.String, "email": pl.String},
        )
        with Warehouse.open(pg_url) as wh:
            return wh.upsert_contacts(rows, run_id=f"run-{i}")

    assert in_threads(4, load) == [3000] * 4
    with Warehouse.open(pg_url) as wh:
        contacts = wh.query("SELECT count(*), min(n_source_rows), max(n_source_rows) FROM contacts").row(0)
        assert contacts == (3000, 4, 4)
        sources = wh.query("SELECT sources FROM contacts WHERE email = 'p7@shared.test'").item().to_list()
        assert sources == ["crm-0.csv", "crm-1.csv", "crm-2.csv", "crm-3.csv"]
        assert wh.query("SELECT count(*) FROM contact_sources").item() == 12000


def test_a_password_in_the_url_never_reaches_a_message() -> None:
    url = "postgresql://mailsift:hunter2-secret@127.0.0.1:9/warehouse"  # port 9: nothing listens
    with pytest.raises(WarehouseError) as info:
        Warehouse.open(url)
    assert "hunter2" not in str(info.value) and "127.0.0.1" in str(info.value)


def test_two_mailsift_runs_on_one_postgresql_warehouse_at_once(
    cli_env: dict[str, str], world: World, pg_url: str, tmp_path: Path
) -> None:
    world.add_domain("acme.test", mailboxes=[f"user{i}@acme.test" for i in range(40)])
    world.add_domain("globex.test", "catch_all")
    world.add_domain("gone.test", dns="nxdomain")
    shared = [f"user{i}@acme.test" for i in range(0, 40, 2)] + ["x@globex.test", "a@gone.test"]
    first = export(tmp_path / "first.csv", shared + [f"user{i}@acme.test" for i in range(1, 20, 2)]
                   + ["nobody@acme.test"])
    second = export(tmp_path / "second.csv", shared[::-1] + [f"user{i}@acme.test" for i in range(21, 40, 2)])
    env = {**cli_env, **world.env(), "MAILSIFT_DB": pg_url}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "mailsift.cli", "run", str(src), "--out", str(tmp_path / src.stem),
             "--batch-size", "5"],
            env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for src in (first, second)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    for proc, (_out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err[-3000:]

    with Warehouse.open(pg_url, read_only=True) as wh:
        runs = wh.query("SELECT run_id, status FROM runs").rows()
        assert len(runs) == 2 and {status for _, status in runs} == {"completed"}
        # exactly once per run: no address checked twice by one run ...
        per_run = wh.query("SELECT run_id, email, count(*) AS n FROM verifications GROUP BY ALL HAVING n > 1")
        assert per_run.is_empty(), per_run
        # ... and every address of both exports has its (right) verdict
        latest = dict(wh.query("SELECT email, status FROM latest_verifications").rows())
        expected = {e: "valid" for e in set(shared + [f"user{i}@acme.test" for i in range(40)]) if "acme" in e}
        expected |= {"x@globex.test": "risky", "a@gone.test": "invalid", "nobody@acme.test": "invalid"}
        assert latest == expected
        assert wh.query("SELECT count(*) FROM contact_sources").item() == 33 + 32
        both = wh.query("SELECT n_source_rows, sources FROM contacts WHERE email = 'user0@acme.test'").row(0)
        assert both[0] == 2 and [Path(s).name for s in both[1]] == ["first.csv", "second.csv"]

    # the CI gate reads the shared warehouse the same way
    gate = subprocess.run([sys.executable, "-m", "mailsift.cli", "gate", "--json"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert gate.returncode == 0, gate.stderr[-2000:]
    assert json.loads(gate.stdout)["n_rows"] == len(expected)
