"""A probe host that dies mid-batch: SIGKILL one Dask worker while it holds a batch.

Real parts: Prefect's test server, a Dask scheduler and two worker processes bound to
127.0.0.2-3 (tests/cluster.py), the simulated internet with a slow domain (so batches are
in flight when the worker dies), a DuckDB warehouse file, then a real ``mailsift run``.

What a user of several probe hosts relies on (issue 13): the run finishes, nothing is
stored twice, the kill makes no address ``invalid``, and whatever the dead host held is
checked by the next run (the fresh results are reused)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from mailsift.testing.smtp_server import Behaviour
from mailsift.testing.world import World
from tests.cluster import dask_cluster, worker_pids
from warehouse import Warehouse

pytest.importorskip("prefect_dask", reason="scale-out needs prefect-dask (pip install -e '.[dev]')")

VICTIM, SURVIVOR = "127.0.0.2", "127.0.0.3"


def kill_when_busy(server, ip: str, pid: int, timeout: float = 240) -> threading.Event:
    """SIGKILL ``pid`` once ``server`` has an SMTP session open from ``ip`` (the worker
    holds a batch: its addresses are in flight); the returned event is set after the kill."""
    killed = threading.Event()

    def watch() -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if server.active_by_ip.get(ip, 0) > 0:
                os.kill(pid, signal.SIGKILL)
                killed.set()
                return
            time.sleep(0.01)

    threading.Thread(target=watch, name="kill-probe-host", daemon=True).start()
    return killed


@pytest.mark.parametrize(
    "allowed_failures",
    [
        pytest.param(None, id="dask-reruns-the-batch"),
        # a scheduler that gives a task up at its first lost worker (Dask's
        # distributed.scheduler.allowed-failures, default 3): the batch fails, the next run
        # checks its addresses
        pytest.param(0, id="the-batch-is-given-up"),
    ],
)
def test_a_probe_host_killed_mid_batch_loses_nothing(
    prefect_harness: str, cli_env: dict[str, str], world: World, tmp_path: Path, monkeypatch,
    allowed_failures: int | None,
) -> None:
    slow = [f"user{i}@slow.test" for i in range(60)]
    (slow_mx,) = world.add_domain("slow.test", Behaviour(latency=0.2), mailboxes=slow[:50])
    world.add_domain("fast.test", mailboxes=[f"a{i}@fast.test" for i in range(10)])
    world.add_domain("gone.test", dns="nxdomain")
    emails = slow + [f"a{i}@fast.test" for i in range(12)] + ["x@gone.test"]
    expected = {e: "valid" for e in slow[:50]} | {e: "invalid" for e in slow[50:]}
    expected |= {f"a{i}@fast.test": "valid" if i < 10 else "invalid" for i in range(12)}
    expected |= {"x@gone.test": "invalid"}
    src = tmp_path / "export.csv"
    with src.open("w", newline="") as fh:
        csv.writer(fh).writerows([["Email"], *([e] for e in emails)])
    db = tmp_path / "mailsift.duckdb"

    limits = {"per_domain_concurrency": 2, "max_per_domain_concurrency": 2}
    env = {**cli_env, **world.env(**limits)}
    cluster_env = dict(env)
    if allowed_failures is not None:
        cluster_env["DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES"] = str(allowed_failures)
    for key, value in world.env(**limits).items():
        monkeypatch.setenv(key, value)
    from flows.scale_out import scaled
    from flows.verify_crm_exports import verify_crm_exports

    with dask_cluster((VICTIM, SURVIVOR), cluster_env, threads=1) as address:
        pid = worker_pids(address)[VICTIM]
        killed = kill_when_busy(slow_mx, VICTIM, pid)
        state = scaled(verify_crm_exports, address)(
            sources=[str(src)], db=str(db), out_dir=str(tmp_path / "out"), batch_size=5,
            max_unknown_share=1.0, return_state=True,
        )
        assert killed.is_set(), "the worker never held a batch of slow.test"
    # the run finishes: Dask reran the lost batch on the other host, or gave it up and the
    # run completed without it (counted, and said in one line)
    assert state.is_completed(), state.message
    summary = state.result()

    with Warehouse.open(db, read_only=True) as wh:
        (run_id,) = wh.query("SELECT run_id FROM runs").to_series().to_list()
        stored = dict(wh.query("SELECT email, count(*) FROM verifications GROUP BY email").rows())
        latest = dict(wh.query("SELECT email, status FROM latest_verifications").rows())
    assert set(stored.values()) <= {1}, "an address stored twice by one run"
    # no address is invalid (or unknown) because of the kill: every stored verdict is right
    assert latest == {e: expected[e] for e in latest}
    lost = set(emails) - set(stored)
    if allowed_failures is None:
        assert not lost and summary["failed_batches"] == 0
    else:
        assert lost and summary["unverified_addresses"] == len(lost)
        assert summary["failed_batches"] >= 1
    # in the Prefect UI no batch is left running by the dead host: rerun (completed) or crashed
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        task_runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
    batches = [t.state.type.value for t in task_runs if t.name.startswith("verify-batch")]
    assert set(batches) <= {"COMPLETED", "CRASHED"} and "COMPLETED" in batches
    if not lost:
        assert set(batches) == {"COMPLETED"}
    # (a batch the dead host had queued, or had only just started, may never have become
    # a Prefect task run: task runs reach the server as events, which a SIGKILL can beat;
    # then there is nothing left running to mark)
    assert batches.count("CRASHED") <= summary["failed_batches"]
    assert summary["verified_now"] == len(stored)
    # the exports never call a lost address invalid: it is in unknown.csv until checked
    exported = {}
    for status in ("valid", "invalid", "unknown"):
        with (tmp_path / "out" / f"{status}.csv").open(newline="") as fh:
            exported |= {row["Email"]: status for row in csv.DictReader(fh)}
    assert exported == {e: expected[e] if e in stored else "unknown" for e in emails}
    assert slow_mx.connections_by_ip.get(SURVIVOR), "the surviving host did no work"

    # the next run reuses what was stored and checks what was lost, nothing more
    run = subprocess.run(
        [sys.executable, "-m", "mailsift.cli", "run", str(src), "--out", str(tmp_path / "again"),
         "--max-unknown-share", "1"],
        env={**env, "MAILSIFT_DB": str(db)}, cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    with Warehouse.open(db, read_only=True) as wh:
        second = json.loads(wh.query("SELECT summary FROM runs WHERE run_id <> $r", {"r": run_id}).item())
        latest = dict(wh.query("SELECT email, status FROM latest_verifications").rows())
    assert latest == expected
    assert second["verified_now"] == len(lost)
    assert second["from_warehouse"] == len(emails) - len(lost)
