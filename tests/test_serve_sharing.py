"""How the service shares the warehouse: waiting for another process's short lock, and a
spool that loads into DuckDB without losing or doubling rows (real files, no server)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mailsift.errors import WarehouseError
from mailsift.result import Checks, VerificationResult
from mailsift.testing.world import World
from service.keys import new_key
from service.sharing import SharedWarehouse
from service.state import ServiceState
from tests.pg_fixtures import pg_server, pg_url  # noqa: F401 (fixtures)
from tests.serve_fixtures import populate, running_service
from warehouse import Warehouse

HOLD_LOCK_FOR = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1])
print("holding", flush=True)
time.sleep(float(sys.argv[2]))
con.close()
"""


def hold(db: Path, seconds: float) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK_FOR, str(db), str(seconds)],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "holding"
    return holder


def test_open_waits_for_a_short_lock_and_names_a_long_one(tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    Warehouse.open(db).close()
    holder = hold(db, 1.0)  # a service's load: short
    try:
        with Warehouse.open(db, lock_timeout=30) as wh:  # what mailsift run and gate do
            assert wh.schema_version() >= 3
    finally:
        holder.wait(30)
    holder = hold(db, 30)  # a pipeline run: long
    try:
        with pytest.raises(WarehouseError, match="locked by another process"):
            Warehouse.open(db, read_only=True, lock_timeout=0.3)
    finally:
        holder.kill()
        holder.wait()


def rows(*emails: str) -> list[dict]:
    return [
        {**VerificationResult(email=e, status="valid", score=0.95, reason="accepted",
                              checks=Checks(syntax_valid=True)).to_row()}
        for e in emails
    ]


def test_spool_loads_once_even_when_replayed_and_waits_out_a_lock(tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    state = ServiceState(tmp_path / "state")
    shared = SharedWarehouse(db, state, write_wait=0.2)
    shared.prepare()
    batch = rows("a@x.test", "b@x.test")
    state.spool_results("api", "local", batch)
    holder = hold(db, 30)
    try:  # the warehouse is busy: nothing is lost, the rows wait in the spool
        assert shared.flush() == 0
        assert state.count_pending_results() == 2
    finally:
        holder.kill()
        holder.wait()
    assert shared.flush() == 2
    assert state.count_pending_results() == 0
    # a crash after DuckDB committed but before the spool forgot them: loaded again, stored once
    state.spool_results("api", "local", batch)
    assert shared.flush() == 0
    with Warehouse.open(db, read_only=True) as wh:
        assert wh.query("SELECT email, run_id FROM verifications ORDER BY email").rows() == [
            ("a@x.test", "api"), ("b@x.test", "api")]
    fresh = shared.fresh(["a@x.test", "c@x.test"], max_age_days=30, retry_unknown_after_minutes=30)
    assert set(fresh) == {"a@x.test"} and fresh["a@x.test"].status == "valid"
    holder = hold(db, 30)
    try:  # a lookup does not wait behind a pipeline run: it finds nothing and moves on
        assert shared.fresh(["a@x.test"], max_age_days=30, retry_unknown_after_minutes=30) == {}
    finally:
        holder.kill()
        holder.wait()
    state.close()


def test_serve_on_a_postgresql_warehouse(world: World, pg_url: str, tmp_path: Path) -> None:  # noqa: F811
    populate(world)
    key, key_id, key_hash, hint = new_key()
    with Warehouse.open(pg_url) as wh:
        wh.add_api_key(key_id=key_id, name="pg", is_test=False, key_hash=key_hash, key_hint=hint)
    with running_service(world, tmp_path, db=pg_url, state_dir=str(tmp_path / "state")) as service:  # type: ignore[arg-type]
        with service.client(key) as client:
            first = client.post("/api/v1/verify", json={"email": "jane@acme.test"}).json()
            again = client.post("/api/v1/verify", json={"email": "jane@acme.test"}).json()
        assert (first["status"], first["cached"], again["cached"]) == ("valid", False, True)
    with Warehouse.open(pg_url) as wh:  # loaded by the service's flush (at its shutdown at the latest)
        rows = wh.query("SELECT run_id, status FROM verifications WHERE email = 'jane@acme.test'").rows()
    assert rows == [("api", "valid")]
