"""End to end: one flow run, its verify batches on three probe hosts (Dask workers bound
to 127.0.0.2-4), results in one shared PostgreSQL warehouse.

Real parts throughout: Prefect's test server, a Dask scheduler and three worker
processes, PostgreSQL (pgserver), the simulated internet whose biggest domain allows two
connections per client IP (Postfix's per-client connection limit)."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from mailsift.testing.smtp_server import Behaviour
from mailsift.testing.world import World
from tests.cluster import dask_cluster
from tests.pg_fixtures import pg_server, pg_url
from tests.prefect_artifacts import summary_artifact
from warehouse import Warehouse

__all__ = ["pg_server", "pg_url"]  # the fixtures, imported for pytest

pytest.importorskip("prefect_dask", reason="scale-out needs prefect-dask (pip install -e '.[dev]')")

PROBES = ("127.0.0.2", "127.0.0.3", "127.0.0.4")


def test_three_probe_hosts_share_one_flow_run(
    prefect_harness: str, cli_env: dict[str, str], world: World, pg_url: str, tmp_path: Path, monkeypatch
) -> None:
    big = [f"user{i}@big.test" for i in range(90)]
    (big_mx,) = world.add_domain(
        "big.test", Behaviour(max_connections_per_ip=2, latency=0.03), mailboxes=big[:80]
    )
    (small_mx,) = world.add_domain("small.test", mailboxes=["a@small.test"])
    world.add_domain("gone.test", dns="nxdomain")
    emails = big + ["a@small.test", "b@small.test", "x@gone.test"]
    src = tmp_path / "export.csv"
    with src.open("w", newline="") as fh:
        csv.writer(fh).writerows([["Email"], *([e] for e in emails)])

    # each host may open 2 connections to a domain (its window's ceiling), all hosts together
    # 4 (Prefect's global concurrency limit "mailsift-smtp-big.test"): three would open 6
    limits = {"per_domain_concurrency": 2, "max_per_domain_concurrency": 2, "domain_limit_across_hosts": 4}
    env = {**cli_env, **world.env(**limits)}
    for key, value in world.env(**limits).items():
        monkeypatch.setenv(key, value)
    from flows.scale_out import scaled
    from flows.verify_crm_exports import verify_crm_exports

    with dask_cluster(PROBES, env) as address:
        state = scaled(verify_crm_exports, address)(
            sources=[str(src)], db=pg_url, out_dir=str(tmp_path / "out"), batch_size=10,
            max_unknown_share=1.0, return_state=True,
        )
    assert state.is_completed(), state.message

    with Warehouse.open(pg_url, read_only=True) as wh:
        stored = wh.query("SELECT email, count(*) AS n FROM verifications GROUP BY email")
        assert stored.height == len(emails) and set(stored["n"]) == {1}  # each address once
        latest = dict(wh.query("SELECT email, status FROM latest_verifications").rows())
    expected = {e: "valid" for e in big[:80]} | {e: "invalid" for e in big[80:]}
    expected |= {"a@small.test": "valid", "b@small.test": "invalid", "x@gone.test": "invalid"}
    assert latest == expected  # every verdict right
    assert set(big_mx.connections_by_ip) == set(PROBES)  # work done by all three hosts
    assert max(big_mx.max_concurrent_by_ip.values()) <= 2  # no IP over the server's cap
    assert big_mx.max_concurrent <= 4  # the total across hosts (the global limit)

    # what each domain cost, reported by the hosts that probed it: the run's summary (and
    # its artifact) show the connections and RCPTs the servers saw from all three
    summary = state.result()
    costs = {d["domain"]: d for d in summary["domains"]}
    big = costs["big.test"]
    assert (big["addresses"], big["hosts"]) == (90, 3)
    assert big["connections"] == big_mx.connections == sum(big_mx.connections_by_ip.values())
    assert big["rcpts"] == len(big_mx.commands("RCPT"))
    assert 1 <= big["window"] <= 2  # per host: never over the server's per-IP cap
    assert (costs["small.test"]["addresses"], costs["small.test"]["hosts"]) == (2, 1)
    assert costs["small.test"]["connections"] == small_mx.connections
    markdown = summary_artifact(state)
    assert f"| big\\.test | 90 | {big['connections']} | {big['rcpts']} |" in markdown

    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        assert client.read_global_concurrency_limit_by_name("mailsift-smtp-big.test").limit == 4
        with pytest.raises(ObjectNotFound):  # a domain inside one batch: one host, no limit needed
            client.read_global_concurrency_limit_by_name("mailsift-smtp-small.test")


def test_scale_out_deployments_land_on_their_work_pool(prefect_harness: str) -> None:
    from prefect.client.orchestration import get_client

    from deployments.scale_out import DEPLOYMENTS, WORK_POOL, deploy

    deploy("tcp://scheduler.internal:8786")
    with get_client(sync_client=True) as client:
        assert client.read_work_pool(WORK_POOL).type == "process"
        for name in DEPLOYMENTS:
            deployment = client.read_deployment_by_name(name)
            assert deployment.work_pool_name == WORK_POOL
            assert deployment.job_variables["env"] == {"MAILSIFT_DASK_SCHEDULER": "tcp://scheduler.internal:8786"}
        daily = client.read_deployment_by_name("reverify-stale/scale-out-daily")
        assert daily.schedules and daily.schedules[0].schedule.cron == "0 3 * * *"


def test_a_probe_host_that_joins_after_the_run_started_gets_the_batches(
    prefect_harness: str, cli_env: dict[str, str], world: World, tmp_path: Path, monkeypatch
) -> None:
    # the scheduler is up, no probe host yet: the flow cannot pick hosts, so Dask places
    # the batches, which wait until a host joins; nothing is lost or verified twice
    boxes = [f"user{i}@late.test" for i in range(20)]
    (late_mx,) = world.add_domain("late.test", mailboxes=boxes[:15])
    src = tmp_path / "export.csv"
    with src.open("w", newline="") as fh:
        csv.writer(fh).writerows([["Email"], *([e] for e in boxes)])
    env = {**cli_env, **world.env()}
    for key, value in world.env().items():
        monkeypatch.setenv(key, value)
    from flows.scale_out import scaled
    from flows.verify_crm_exports import verify_crm_exports

    db = tmp_path / "mailsift.duckdb"
    with dask_cluster((), env) as address:
        worker = subprocess.Popen(  # joins a few seconds into the run
            [sys.executable, "-c", "import time, runpy, sys; time.sleep(4); sys.argv = sys.argv[1:]; "
             "runpy.run_module('distributed.cli.dask_worker', run_name='__main__')",
             "dask-worker", address, "--no-nanny", "--nthreads", "2", "--host", "127.0.0.3",
             "--no-dashboard"],
            env={**env, "MAILSIFT_SOURCE_ADDRESS": "127.0.0.3"},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            state = scaled(verify_crm_exports, address)(
                sources=[str(src)], db=str(db), out_dir=str(tmp_path / "out"), batch_size=5,
                max_unknown_share=1.0, return_state=True,
            )
        finally:
            worker.terminate()
            worker.wait(10)
    assert state.is_completed(), state.message
    with Warehouse.open(db, read_only=True) as wh:
        stored = dict(wh.query("SELECT email, count(*) FROM verifications GROUP BY email").rows())
        latest = dict(wh.query("SELECT email, status FROM latest_verifications").rows())
    assert stored == {e: 1 for e in boxes}
    assert latest == {e: "valid" if e in boxes[:15] else "invalid" for e in boxes}
    assert set(late_mx.connections_by_ip) == {"127.0.0.3"}  # the host that joined did it
