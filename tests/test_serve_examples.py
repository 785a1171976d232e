"""The integration guide's four client patterns (examples/api/), unchanged but for the base
URL and key, against a live ``mailsift serve`` with the simulated internet behind it."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import importlib.util
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import httpx
import pytest
from fastapi.testclient import TestClient
from werkzeug.serving import make_server

from mailsift.testing.world import World
from tests.serve_fixtures import LiveService, add_key, populate, running_service

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "api"
SECRET = "whsec_examples_DO_NOT_LEAK"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"guide_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    with World() as w:
        populate(w)
        yield w


@pytest.fixture(scope="module")
def service(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveService]:
    tmp = tmp_path_factory.mktemp("examples")
    db = tmp / "warehouse.duckdb"
    keys = {"live": add_key(db, "guide")}
    with running_service(world, tmp, db=db) as live:
        live.keys = keys
        yield live


def test_requests_session_with_retries(service: LiveService) -> None:
    client = load("verify_client")
    session = client.make_session(service.keys["live"])
    assert session.get_adapter(service.url).max_retries.total == 3
    valid = client.verify_email("jane@acme.test", session=session, base_url=service.url)
    assert (valid["status"], valid["reason"]) == ("valid", "accepted")
    gone = client.verify_email("gone@acme.test", session=session, base_url=service.url)
    assert (gone["status"], gone["reason"]) == ("invalid", "mailbox_not_found")


def test_aiohttp_bulk_verifier_with_a_semaphore_of_20(service: LiveService) -> None:
    bulk = load("bulk_verify_aiohttp")
    assert bulk.CONCURRENCY == 20
    emails = [f"user{i}@shop{i % 5}.test" for i in range(100)]
    results = asyncio.run(bulk.verify_all(emails, base_url=service.url, api_key=service.keys["live"]))
    assert [r["email"] for r in results] == emails
    assert [r["status"] for r in results] == ["valid" if i % 2 == 0 else "invalid" for i in range(100)]


def test_fastapi_signup_rejects_invalid_and_flags_risky(service: LiveService) -> None:
    signup = load("signup_fastapi")
    app = signup.create_app(base_url=service.url, api_key=service.keys["live"])
    with TestClient(app) as client:
        ok = client.post("/signup", json={"email": "jane@acme.test"})
        assert ok.status_code == 201 and ok.json()["needs_review"] is False
        role = client.post("/signup", json={"email": "ops@acme.test"})  # a role account
        assert role.status_code == 201 and role.json()["needs_review"] is True
        risky = client.post("/signup", json={"email": "anyone@catchall.test"})
        assert risky.status_code == 201 and risky.json() == {
            "email": "anyone@catchall.test", "needs_review": True, "email_status": "risky"}
        rejected = client.post("/signup", json={"email": "nobody@dead.test"})
        assert rejected.status_code == 422 and "cannot receive mail" in rejected.json()["detail"]
        assert set(app.state.accounts) == {"jane@acme.test", "ops@acme.test", "anyone@catchall.test"}


class FailFirst:
    """WSGI wrapper: the receiver's first ``n`` requests fail with 503 (its database was
    down, say); records when each request came."""

    def __init__(self, app, n: int) -> None:
        self.app, self.n, self.arrivals = app, n, []

    def __call__(self, environ, start_response):
        self.arrivals.append(time.monotonic())
        if len(self.arrivals) <= self.n:
            start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
            return [b"try later"]
        return self.app(environ, start_response)


def test_flask_receiver_gets_the_webhook_after_two_failures_and_a_restart(
    world: World, tmp_path: Path
) -> None:
    receiver_module = load("webhook_receiver_flask")
    flask_app = receiver_module.create_app(SECRET)
    wrapped = FailFirst(flask_app.wsgi_app, n=2)
    server = make_server("127.0.0.1", 0, wrapped, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hook_url = f"http://127.0.0.1:{server.server_port}/webhooks/mailsift"
    db = tmp_path / "warehouse.duckdb"
    key = add_key(db, "restart")
    port_env = {"webhook_waits": "2,2,2,2"}
    try:
        with running_service(world, tmp_path, db=db, **port_env) as first:
            with first.client(key) as client:
                job = client.post("/api/v1/bulk/verify", json={
                    "emails": ["jane@acme.test"], "webhook_url": hook_url, "webhook_secret": SECRET}).json()
                slow = client.post("/api/v1/bulk/verify", json={  # a job without webhook, busy for seconds
                    "emails": [f"c{i}@crawl.test" for i in range(4)]}).json()
                deadline = time.monotonic() + 30
                while len(wrapped.arrivals) < 2:  # two failed attempts...
                    assert time.monotonic() < deadline
                    time.sleep(0.02)
                cut_short = client.get(f"/api/v1/bulk/{slow['job_id']}").json()
        assert cut_short["status"] == "running" and cut_short["done"] < 4
        stopped_at = time.monotonic()  # ...then the service stops before the third
        assert len(wrapped.arrivals) == 2
        with running_service(world, tmp_path, db=db, **port_env) as second:
            deadline = time.monotonic() + 30
            while "jane@acme.test" not in flask_app.config["RESULTS"]:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            with second.client(key) as client:
                status = client.get(f"/api/v1/bulk/{job['job_id']}").json()
                deadline = time.monotonic() + 60  # the job without webhook resumes and completes
                while (resumed := client.get(f"/api/v1/bulk/{slow['job_id']}").json())["status"] != "completed":
                    assert time.monotonic() < deadline, resumed
                    time.sleep(0.1)
                results = client.get(f"/api/v1/bulk/{slow['job_id']}/results").json()["results"]
        assert resumed["done"] == 4
        assert [(r["email"], r["status"]) for r in results] == [
            (f"c{i}@crawl.test", "valid" if i % 2 == 0 else "invalid") for i in range(4)]
        assert len(wrapped.arrivals) == 3 and wrapped.arrivals[2] > stopped_at
        assert flask_app.config["RESULTS"] == {"jane@acme.test": "valid"}
        assert status["webhooks"] == {"pending": 0, "delivered": 1, "failed": 0}
        # the receiver refuses a body whose signature does not match
        forged = json.dumps({"email": "jane@acme.test", "status": "invalid"}).encode()
        bad = httpx.post(hook_url, content=forged, headers={
            "X-Webhook-Signature": hmac.new(b"wrong", forged, hashlib.sha256).hexdigest()})
        assert bad.status_code == 401 and flask_app.config["RESULTS"]["jane@acme.test"] == "valid"
    finally:
        server.shutdown()
