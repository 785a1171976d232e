"""``mailsift serve`` beside the pipeline: ``mailsift run`` and ``mailsift gate`` work on the
service's warehouse while it serves, and a bulk job is a Prefect flow run with its artifact."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mailsift.testing.http_server import HttpServer, Reply
from mailsift.testing.world import World
from tests.serve_fixtures import add_key, populate, running_service
from warehouse import Warehouse

SECRET = "whsec_pipeline_DO_NOT_LEAK"


@pytest.fixture
def busy_world() -> Iterator[World]:
    with World() as w:
        populate(w)
        yield w


def hammer(url: str, key: str, stop: threading.Event, codes: list[int]) -> None:
    """A signup form's traffic: fresh addresses, so the service keeps writing."""
    n = 0
    with httpx.Client(base_url=url, headers={"X-API-Key": key}, timeout=30) as client:
        while not stop.is_set():
            n += 1
            codes.append(client.post("/api/v1/verify", json={"email": f"user{2 * n}@shop{n % 5}.test"}).status_code)


def test_run_gate_and_a_bulk_flow_run_while_the_service_serves(
    busy_world: World, cli_env: dict[str, str], prefect_harness: str, tmp_path: Path
) -> None:
    db = tmp_path / "shared.duckdb"
    key = add_key(db, "signup-form", rate_limit=0)  # as fast as it goes: no 429 here
    export = tmp_path / "crm.csv"
    export.write_text("email,name\n" + "".join(
        f"user{i}@shop{i % 5}.test,U{i}\n" for i in range(1, 120)) + "jane@acme.test,Jane\n")
    env = {**cli_env, **busy_world.env(), "MAILSIFT_DB": str(db), "CRM_HOOK_SECRET": SECRET}
    receiver = HttpServer().start()
    receiver.set_default("/crm", Reply(204))
    with running_service(busy_world, tmp_path, db=db, base_env=cli_env) as service:
        stop, codes = threading.Event(), []
        traffic = threading.Thread(target=hammer, args=(service.url, key, stop, codes))
        traffic.start()
        try:
            run = subprocess.run(
                [sys.executable, "-m", "mailsift.cli", "run", str(export), "--out", str(tmp_path / "out"),
                 "--webhook-url", receiver.url_for("/crm"), "--webhook-secret-env", "CRM_HOOK_SECRET",
                 "--webhook-format", "per-address"],
                env=env, capture_output=True, text=True, timeout=240,
            )
            assert run.returncode == 0, run.stdout + run.stderr
            gate = subprocess.run([sys.executable, "-m", "mailsift.cli", "gate"], env=env,
                                  capture_output=True, text=True, timeout=240)
            assert gate.returncode == 0, gate.stdout + gate.stderr
        finally:
            stop.set()
            traffic.join(60)
        assert codes and set(codes) == {200}, Counter(codes)
        # the run's webhooks in the guide's shape: one signed POST per address
        hooks = receiver.requests_for("/crm")
        receiver.stop()
        bodies = [json.loads(h.body) for h in hooks]
        assert sorted(b["email"] for b in bodies) == sorted(
            [f"user{i}@shop{i % 5}.test" for i in range(1, 120)] + ["jane@acme.test"])
        assert all(h.header("X-Webhook-Signature") == hmac.new(SECRET.encode(), h.body, hashlib.sha256).hexdigest()
                   for h in hooks)
        assert {b["status"] for b in bodies} == {"valid", "invalid"} and len({b["run_id"] for b in bodies}) == 1

        # a bulk job is a flow run of verify-address-list, with its summary artifact
        with service.client(key) as client:
            job_id = client.post("/api/v1/bulk/verify", json={
                "emails": [f"user{i}@shop{i % 5}.test" for i in range(200, 260)]}).json()["job_id"]
            deadline = time.monotonic() + 120
            while (job := client.get(f"/api/v1/bulk/{job_id}").json())["status"] in ("queued", "running"):
                assert time.monotonic() < deadline
                time.sleep(0.2)
        assert (job["status"], job["done"]) == ("completed", 60)
        flow_run_id = job["flow_run_id"]
        assert flow_run_id

        async def prefect_view() -> tuple[str, str, list[str]]:
            from prefect.client.orchestration import get_client
            from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

            async with get_client() as prefect:
                flow_run = await prefect.read_flow_run(flow_run_id)
                flow = await prefect.read_flow(flow_run.flow_id)
                artifacts = await prefect.read_artifacts(
                    artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
            return flow.name, flow_run.state.type.value, [a.key for a in artifacts]

        name, state, artifacts = asyncio.run(prefect_view())
        assert (name, state) == ("verify-address-list", "COMPLETED")
        assert "verify-address-list-summary" in artifacts
        pending = None
        deadline = time.monotonic() + 20
        while pending != 0 and time.monotonic() < deadline:
            pending = httpx.get(service.url + "/health").json()["pending_warehouse_rows"]
            time.sleep(0.2)
        assert pending == 0

    # nothing lost, nothing twice: the run's, the API's and the job's results are all there once
    with Warehouse.open(db, read_only=True) as wh:
        by_run = dict(wh.query(
            "SELECT CASE WHEN run_id = 'api' THEN 'api' WHEN run_id LIKE 'api-bulk-%' THEN 'bulk' "
            "ELSE 'pipeline' END AS origin, count(*) FROM verifications GROUP BY ALL").rows())
        dupes = wh.query("SELECT count(*) FROM (SELECT email, verified_at, run_id FROM verifications "
                         "GROUP BY ALL HAVING count(*) > 1)").item()
    assert by_run["bulk"] == 60 - job["cached"] and by_run["api"] >= 1 and by_run["pipeline"] >= 1
    assert dupes == 0
