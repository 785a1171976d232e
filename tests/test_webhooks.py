"""Signed webhooks, delivered to a real HTTP receiver on loopback."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Iterator

import pytest

from mailsift.errors import ConfigError
from mailsift.result import Checks, VerificationResult
from mailsift.testing.http_server import HttpServer, RecordedRequest, Reply
from mailsift.webhooks import (
    DEFAULT_SCHEDULE,
    DeliveryAttempt,
    build_payloads,
    deliver,
    redeliver,
    secret_from_env,
    sign,
    verify_signature,
)

SECRET = "whsec_5f4e3d2c1b0a_DO_NOT_LEAK"
FAST = (0.01,) * 5


def make_results(n: int) -> list[VerificationResult]:
    return [
        VerificationResult(
            email=f"user{i}@acme.test",
            status="valid" if i % 2 else "invalid",
            score=0.95 if i % 2 else 0.05,
            reason="accepted" if i % 2 else "mailbox_not_found",
            checks=Checks(syntax_valid=True, mx_found=True),
        )
        for i in range(n)
    ]


def signing_receiver(request: RecordedRequest) -> Reply:
    """What the README tells users to write: check the raw body's HMAC, then parse."""
    expected = hmac.new(SECRET.encode(), request.body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, request.header("X-Webhook-Signature") or ""):
        return Reply(401, body="bad signature")
    json.loads(request.body)
    return Reply(204)


@pytest.fixture
def receiver() -> Iterator[HttpServer]:
    with HttpServer() as srv:
        srv.set_handler("/hook", signing_receiver)
        yield srv


# -- signing -----------------------------------------------------------------------------


def test_signature_is_hex_hmac_sha256_of_the_raw_body() -> None:
    body = b'{"run_id":"r1","results":[]}'
    signature = sign(body, SECRET)
    assert signature == hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert verify_signature(body, SECRET, signature)
    assert verify_signature(body, SECRET.encode(), signature.upper())
    assert not verify_signature(body + b" ", SECRET, signature)
    assert not verify_signature(body, "another secret", signature)
    assert not verify_signature(body, SECRET, "")


def test_secret_from_env_names_the_variable_never_the_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HOOK_SECRET", raising=False)
    with pytest.raises(ConfigError, match="environment variable HOOK_SECRET is not set"):
        secret_from_env("HOOK_SECRET")
    monkeypatch.setenv("HOOK_SECRET", SECRET)
    assert secret_from_env("HOOK_SECRET") == SECRET
    monkeypatch.setenv("HOOK_SECRET", "  ")
    with pytest.raises(ConfigError) as caught:
        secret_from_env("HOOK_SECRET")
    assert "HOOK_SECRET is empty" in str(caught.value)


# -- payloads ----------------------------------------------------------------------------


def test_batches_of_500_deterministic() -> None:
    results = make_results(1200)
    payloads = build_payloads(results, run_id="run-1")
    assert len(payloads) == 3
    bodies = [json.loads(body) for _, body in payloads]
    assert [len(b["results"]) for b in bodies] == [500, 500, 200]
    assert [(b["run_id"], b["batch_index"], b["n_batches"]) for b in bodies] == [
        ("run-1", 0, 3), ("run-1", 1, 3), ("run-1", 2, 3),
    ]
    assert bodies[2]["results"][-1] == results[-1].to_dict()
    assert build_payloads(results, run_id="run-1") == payloads  # same bytes, same ids
    assert len({did for did, _ in payloads}) == 3
    assert {did for did, _ in build_payloads(results, run_id="run-2")}.isdisjoint(
        {did for did, _ in payloads}
    )
    # flat warehouse rows give the same bodies as result objects
    assert build_payloads([r.to_row() for r in results], run_id="run-1") == payloads
    assert build_payloads([], run_id="run-1") == []


# -- delivery ----------------------------------------------------------------------------


async def test_receiver_verifies_every_batch(receiver: HttpServer) -> None:
    payloads = build_payloads(make_results(1200), run_id="run-1")
    attempts = await deliver(receiver.url_for("/hook"), SECRET, payloads, schedule=FAST)
    requests = receiver.requests_for("/hook")
    assert len(requests) == 3
    assert all(a.is_delivered and a.status_code == 204 and a.attempt == 1 for a in attempts)
    assert sorted(a.batch_index for a in attempts) == [0, 1, 2]
    assert sorted(a.n_results for a in attempts) == [200, 500, 500]
    for request in requests:
        assert verify_signature(request.body, SECRET, request.header("X-Webhook-Signature"))
        assert request.header("Content-Type") == "application/json"
        assert request.header("User-Agent").startswith("mailsift/")
        assert request.header("X-Mailsift-Delivery") in {did for did, _ in payloads}
    assert sorted(r.body for r in requests) == sorted(body for _, body in payloads)


async def test_a_receiver_that_keeps_failing_gets_exactly_five_attempts(receiver: HttpServer) -> None:
    receiver.set_handler("/hook", lambda request: Reply(500, body="down"))
    seen: list[DeliveryAttempt] = []
    payloads = build_payloads(make_results(3), run_id="run-1")
    attempts = await deliver(
        receiver.url_for("/hook"), SECRET, payloads, schedule=FAST, on_attempt=seen.append
    )
    assert len(receiver.requests_for("/hook")) == 5
    assert seen == attempts
    assert [a.attempt for a in seen] == [1, 2, 3, 4, 5]
    assert all(not a.is_delivered and a.status_code == 500 and a.error == "HTTP 500" for a in seen)
    assert all(a.payload.encode() == payloads[0][1] for a in seen)  # stored for `webhooks retry`
    assert all(a.delivery_id == payloads[0][0] for a in seen)


async def test_failing_twice_then_succeeding_is_delivered_on_the_third(receiver: HttpServer) -> None:
    receiver.enqueue("/hook", Reply(500), Reply(503))
    recorded: list[DeliveryAttempt] = []

    async def record(attempt: DeliveryAttempt) -> None:  # an async callback works too
        recorded.append(attempt)

    attempts = await deliver(
        receiver.url_for("/hook"), SECRET, build_payloads(make_results(2), run_id="r"),
        schedule=FAST, on_attempt=record,
    )
    assert [(a.attempt, a.status_code, a.is_delivered) for a in attempts] == [
        (1, 500, False), (2, 503, False), (3, 204, True),
    ]
    assert recorded == attempts


async def test_default_schedule_waits_1_2_4_8_minutes_between_five_attempts(receiver: HttpServer) -> None:
    receiver.set_handler("/hook", lambda request: Reply(502))
    waits: list[float] = []

    async def clock(seconds: float) -> None:  # a virtual clock: no real 15-minute wait
        waits.append(seconds)

    attempts = await deliver(
        receiver.url_for("/hook"), SECRET, build_payloads(make_results(1), run_id="r"), sleep=clock
    )
    assert DEFAULT_SCHEDULE == (60, 120, 240, 480, 960)
    assert waits == [60, 120, 240, 480]
    assert len(attempts) == 5 and not attempts[-1].is_delivered


async def test_network_errors_and_timeouts_are_failed_attempts(receiver: HttpServer) -> None:
    dead = HttpServer().start()
    dead.stop()
    payloads = build_payloads(make_results(1), run_id="r")
    refused = await deliver(dead.url_for("/hook"), SECRET, payloads, schedule=(0.01, 0.01))
    assert [(a.status_code, a.error, a.is_delivered) for a in refused] == [
        (None, "ConnectError", False)
    ] * 2

    receiver.set_handler("/hook", lambda request: Reply(204, delay=5))
    slow = await deliver(receiver.url_for("/hook"), SECRET, payloads, schedule=(0.01,), timeout=0.3)
    assert [(a.status_code, a.error, a.is_delivered) for a in slow] == [(None, "timeout after 0.3s", False)]


async def test_redeliver_resends_stored_bodies_with_the_same_signature(receiver: HttpServer) -> None:
    receiver.set_handler("/hook", lambda request: Reply(500))
    payloads = build_payloads(make_results(700), run_id="run-9")
    failed = await deliver(receiver.url_for("/hook"), SECRET, payloads, schedule=(0.01, 0.01))
    assert len(failed) == 4 and not any(a.is_delivered for a in failed)
    first_signatures = {r.header("X-Mailsift-Delivery"): r.header("X-Webhook-Signature")
                        for r in receiver.requests_for("/hook")}

    # what `mailsift webhooks retry` does: the stored (delivery_id, payload) of what failed
    stored = {a.delivery_id: a.payload for a in failed}
    receiver.clear()
    receiver.set_handler("/hook", signing_receiver)
    again = await redeliver(
        receiver.url_for("/hook"), SECRET, list(stored.items()), schedule=FAST,
        previous_attempts={did: 2 for did in stored},
    )
    assert all(a.is_delivered and a.attempt == 3 for a in again)
    requests = receiver.requests_for("/hook")
    assert len(requests) == 2
    for request in requests:
        did = request.header("X-Mailsift-Delivery")
        assert request.body == dict(payloads)[did]
        assert request.header("X-Webhook-Signature") == first_signatures[did]


async def test_secret_appears_in_no_log(receiver: HttpServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    receiver.enqueue("/hook", Reply(500))
    attempts = await deliver(
        receiver.url_for("/hook"), SECRET, build_payloads(make_results(3), run_id="r"), schedule=FAST
    )
    assert attempts[-1].is_delivered
    assert any(r.name.startswith("mailsift") for r in caplog.records)
    assert SECRET not in caplog.text
    assert all(SECRET not in repr(a) for a in attempts)


async def test_bad_url_or_empty_secret_is_a_config_error() -> None:
    payloads = build_payloads(make_results(1), run_id="r")
    with pytest.raises(ConfigError):
        await deliver("ftp://example.com/hook", SECRET, payloads)
    with pytest.raises(ConfigError):
        await deliver("http://127.0.0.1:9/hook", "", payloads)
