"""``mailsift serve``: one address at a time, keys, limits and errors, against a live
server subprocess on loopback with the simulated internet behind it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest

from mailsift.result import Checks, VerificationResult, utcnow
from mailsift.testing.world import World
from tests.serve_fixtures import LiveService, add_key, populate, running_service
from warehouse import Warehouse, results_frame


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    with World() as w:
        populate(w)
        yield w
    assert not any(line.upper().startswith("DATA") for line in w.transcript)


@pytest.fixture(scope="module")
def service(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveService]:
    tmp = tmp_path_factory.mktemp("serve")
    db = tmp / "warehouse.duckdb"
    keys = {
        "live": add_key(db, "signup-form"),
        "test": add_key(db, "ci", test=True),
        "limited": add_key(db, "tiny", rate_limit=3),
        "doomed": add_key(db, "to-revoke"),
    }
    # what an earlier pipeline run left: one fresh result, one 40 days old
    seeded = [
        VerificationResult(email="known@acme.test", status="invalid", score=0.05,
                           reason="mailbox_not_found", checks=Checks(syntax_valid=True)),
        VerificationResult(email="jane@acme.test", status="invalid", score=0.05,
                           reason="mailbox_not_found", checks=Checks(syntax_valid=True),
                           verified_at=utcnow() - timedelta(days=40)),
        # an outage 10 minutes ago is still the answer; one 40 minutes ago is retried
        VerificationResult(email="recent@acme.test", status="unknown", score=0.4,
                           reason="smtp_timeout", checks=Checks(syntax_valid=True),
                           verified_at=utcnow() - timedelta(minutes=10)),
        VerificationResult(email="retry@acme.test", status="unknown", score=0.4,
                           reason="smtp_timeout", checks=Checks(syntax_valid=True),
                           verified_at=utcnow() - timedelta(minutes=40)),
    ]
    with Warehouse.open(db) as wh:
        wh.append_verifications(results_frame(seeded), run_id="earlier-run", backend="local")
    with running_service(world, tmp, db=db, keys_refresh_seconds="0.3", max_body_bytes=str(1 << 20),
                         max_bulk_addresses="1000", max_running_jobs="1", max_queued_jobs="1") as live:
        live.keys = keys
        yield live


def stored(db: Path, email: str) -> pl.DataFrame:
    with Warehouse.open(db, read_only=True, lock_timeout=10) as wh:
        return wh.query(
            "SELECT run_id, backend, status, reason FROM verifications WHERE email = ? "
            "ORDER BY verified_at", [email]
        )


def wait_stored(db: Path, email: str, n: int, timeout: float = 15) -> pl.DataFrame:
    deadline = time.monotonic() + timeout
    while True:
        rows = stored(db, email)
        if rows.height >= n or time.monotonic() > deadline:
            return rows
        time.sleep(0.2)


def test_fresh_result_then_cached_and_stored_as_api(service: LiveService, world: World) -> None:
    with service.client(service.keys["live"]) as client:
        first = client.post("/api/v1/verify", json={"email": "Jane@Acme.test"})
        assert first.status_code == 200
        body = first.json()
        # the 40-day-old invalid was stale: checked again, and it is valid now
        assert (body["status"], body["reason"], body["cached"]) == ("valid", "accepted", False)
        assert body["checks"]["smtp_reachable"] is True and body["score"] >= 0.7
        again = client.post("/api/v1/verify", json={"email": "jane@acme.test"}).json()
        assert again["cached"] is True and again["status"] == "valid"
        # a result the pipeline stored 0 days ago answers without any SMTP conversation
        before = len(world.transcript)
        known = client.post("/api/v1/verify", json={"email": "known@acme.test"}).json()
        assert (known["status"], known["cached"]) == ("invalid", True)
        assert len(world.transcript) == before
        recent = client.post("/api/v1/verify", json={"email": "recent@acme.test"}).json()
        assert (recent["status"], recent["reason"], recent["cached"]) == ("unknown", "smtp_timeout", True)
        retried = client.post("/api/v1/verify", json={"email": "retry@acme.test"}).json()
        assert (retried["status"], retried["reason"], retried["cached"]) == ("invalid", "mailbox_not_found", False)
        missing = client.post("/api/v1/verify", json={"email": "nobody@acme.test"}).json()
        assert (missing["status"], missing["reason"]) == ("invalid", "mailbox_not_found")
    rows = wait_stored(service.db, "jane@acme.test", 2)
    assert rows.rows() == [
        ("earlier-run", "local", "invalid", "mailbox_not_found"),
        ("api", "local", "valid", "accepted"),
    ]
    assert wait_stored(service.db, "nobody@acme.test", 1).height == 1


def test_time_budget_answers_unknown_and_the_check_lands_later(service: LiveService) -> None:
    with service.client(service.keys["live"]) as client:
        quick = client.post("/api/v1/verify", params={"timeout": 0.3}, json={"email": "amy@slowsmtp.test"})
        body = quick.json()
        assert (body["status"], body["reason"], body["cached"]) == ("unknown", "smtp_timeout", False)
        # the check went on: its result is stored and answers the next request
        rows = wait_stored(service.db, "amy@slowsmtp.test", 1)
        assert rows.rows() == [("api", "local", "valid", "accepted")]
        later = client.post("/api/v1/verify", json={"email": "amy@slowsmtp.test"}).json()
        assert (later["status"], later["cached"]) == ("valid", True)


def test_test_key_gets_sandbox_answers_without_network(service: LiveService, world: World) -> None:
    before = len(world.transcript)
    with service.client(service.keys["test"]) as client:
        answers = {
            email: client.post("/api/v1/verify", json={"email": email}).json()
            for email in ("a@valid.test", "b@invalid.test", "jane@acme.test", "not an address")
        }
    assert {e: (a["status"], a["cached"]) for e, a in answers.items()} == {
        "a@valid.test": ("valid", False),
        "b@invalid.test": ("invalid", False),
        "jane@acme.test": ("risky", False),
        "not an address": ("invalid", False),
    }
    assert len(world.transcript) == before
    time.sleep(0.6)  # two flush intervals
    assert stored(service.db, "a@valid.test").height == 0


def test_crlf_and_odd_strings_get_results_not_errors(service: LiveService) -> None:
    with service.client(service.keys["live"]) as client:
        for email in ("jane@acme.test\r\nRCPT TO:<x@y.test>", "", "x" * 5000, "\x00@acme.test",
                      "a@b@c", "\ud800@acme.test"):
            raw = json.dumps({"email": email})  # ASCII escapes: a lone surrogate travels too
            response = client.post("/api/v1/verify", content=raw,
                                   headers={"Content-Type": "application/json"})
            assert response.status_code == 200, email
            assert (response.json()["status"], response.json()["reason"]) == ("invalid", "syntax")


@pytest.mark.parametrize(
    ("headers", "body", "status", "error"),
    [
        ({}, b'{"email": "jane@acme.test"}', 401, "unauthorized"),
        ({"X-API-Key": "ms_live_wrong"}, b'{"email": "jane@acme.test"}', 401, "unauthorized"),
        ({"X-API-Key": "KEY"}, b'{"email": ', 400, "bad_request"),
        ({"X-API-Key": "KEY"}, b'{"email": 42}', 422, "invalid_request"),
        ({"X-API-Key": "KEY"}, b'["jane@acme.test"]', 422, "invalid_request"),
        ({"X-API-Key": "KEY"}, b'{"email": "' + b"a" * (10 * 1024 * 1024) + b'"}', 413, "payload_too_large"),
    ],
)
def test_bad_requests_get_json_errors_and_the_service_keeps_serving(
    service: LiveService, headers: dict[str, str], body: bytes, status: int, error: str
) -> None:
    headers = {k: service.keys["live"] if v == "KEY" else v for k, v in headers.items()}
    with service.client() as client:
        response = client.post("/api/v1/verify", content=body,
                               headers={"Content-Type": "application/json", **headers})
        assert response.status_code == status
        assert response.json()["error"] == error and response.json()["detail"]
        ok = client.post("/api/v1/verify", json={"email": "jane@acme.test"},
                         headers={"X-API-Key": service.keys["live"]})
        assert ok.status_code == 200


def test_rate_limit_per_key_is_429_with_retry_after(service: LiveService) -> None:
    with service.client(service.keys["limited"]) as client:
        codes = [client.post("/api/v1/verify", json={"email": "jane@acme.test"}) for _ in range(4)]
    assert [r.status_code for r in codes] == [200, 200, 200, 429]
    assert codes[-1].json()["error"] == "rate_limited"
    assert int(codes[-1].headers["Retry-After"]) >= 1
    with service.client(service.keys["live"]) as client:  # other keys are not affected
        assert client.post("/api/v1/verify", json={"email": "jane@acme.test"}).status_code == 200


def test_keys_commands_and_revocation(service: LiveService) -> None:
    cli = [sys.executable, "-m", "mailsift.cli", "keys"]
    env = {**service.env, "MAILSIFT_DB_LOCK_TIMEOUT": "10"}
    created = subprocess.run([*cli, "create", "--name", "crm-sync"], env=env, capture_output=True,
                             text=True, timeout=60)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("ms_live_") and len(key) > 40
    listed = subprocess.run([*cli, "list"], env=env, capture_output=True, text=True, timeout=60)
    assert "crm-sync" in listed.stdout and key not in listed.stdout and key[8:] not in listed.stdout
    with Warehouse.open(service.db, read_only=True, lock_timeout=10) as wh:
        assert key not in str(wh.query("SELECT * FROM api_keys").rows())
    with service.client(key) as client:
        deadline = time.monotonic() + 10  # picked up within the refresh interval
        while client.post("/api/v1/verify", json={"email": "jane@acme.test"}).status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.2)
    revoked = subprocess.run([*cli, "revoke", "crm-sync"], env=env, capture_output=True, text=True,
                             timeout=60)
    assert revoked.returncode == 0, revoked.stderr
    with service.client(key) as client:
        deadline = time.monotonic() + 10
        while (r := client.post("/api/v1/verify", json={"email": "jane@acme.test"})).status_code != 401:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert r.json() == {"error": "unauthorized", "detail": "unknown or revoked API key"}
    assert key not in service.output()


def test_openapi_docs(service: LiveService) -> None:
    with service.client() as client:
        assert client.get("/docs").status_code == 200
        spec = client.get("/openapi.json").json()
    assert "/api/v1/verify" in spec["paths"]
    assert spec["components"]["securitySchemes"]["APIKeyHeader"]["name"] == "X-API-Key"


def test_serve_on_a_bad_warehouse_path_is_one_line_and_exit_2(tmp_path: Path) -> None:
    not_a_db = tmp_path / "contacts.csv"
    not_a_db.write_text("email\njane@acme.test\n")
    done = subprocess.run([sys.executable, "-m", "mailsift.cli", "serve", "--db", str(not_a_db)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"mailsift: {not_a_db} is not a DuckDB database file")
    assert not_a_db.read_text() == "email\njane@acme.test\n"


def test_too_many_waiting_jobs_is_503_with_retry_after(service: LiveService) -> None:
    with service.client(service.keys["live"]) as client:
        busy = client.post("/api/v1/bulk/verify", json={"emails": [f"c{i}@crawl.test" for i in range(4)]})
        assert busy.status_code == 202
        deadline = time.monotonic() + 30  # the one worker has taken it: the queue is empty
        while client.get(f"/api/v1/bulk/{busy.json()['job_id']}").json()["status"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        waiting = client.post("/api/v1/bulk/verify", json={"emails": ["jane@acme.test"]})
        assert (waiting.status_code, waiting.json()["status"]) == (202, "queued")
        refused = client.post("/api/v1/bulk/verify", json={"emails": ["jane@acme.test"]})
        assert (refused.status_code, refused.json()["error"]) == (503, "unavailable")
        assert int(refused.headers["Retry-After"]) > 0
        assert client.post("/api/v1/verify", json={"email": "jane@acme.test"}).status_code == 200
