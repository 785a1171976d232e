"""The api backend against a real HTTP server on loopback (mailsift.testing.http_server)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from mailsift.backends import Backend, get_backend
from mailsift.backends.api import ApiBackend, parse_retry_after, result_from_api
from mailsift.errors import BackendAuthError, ConfigError
from mailsift.result import REASONS, SCORE_BANDS
from mailsift.settings import Settings
from mailsift.testing.http_server import HttpServer, RecordedRequest, Reply

KEY = "sk_test_9f8e7d6c5b4a_DO_NOT_LEAK"


def fake_api(request: RecordedRequest) -> Reply:
    """A verification API in the integration guide's format, answering by domain."""
    email = request.json()["email"]
    local, _, domain = email.rpartition("@")
    if domain == "good.test":
        return Reply(200, body={
            "email": email, "status": "valid", "score": 0.97, "reason": "accepted_email",
            "checks": {"syntax_valid": True, "mx_found": True, "smtp_check": True, "disposable": False},
            "provider": "Google", "mx_host": "ALT1.ASPMX.L.GOOGLE.COM.",
        })
    if domain == "bad.test":
        return Reply(200, body={"email": email, "status": "invalid", "score": 3, "reason": "rejected_email"})
    if domain == "slow.test":
        return Reply(200, body={"email": email, "status": "valid"}, delay=10)
    if domain == "lag.test":  # answer after a delay that depends on the address
        return Reply(200, body={"email": email, "status": "valid"}, delay=0.02 * (int(local[1:]) % 5))
    return Reply(200, body={"email": email, "status": "risky", "reason": "catch_all", "is_catch_all": True})


@pytest.fixture
def server() -> Iterator[HttpServer]:
    with HttpServer() as srv:
        srv.set_handler("/verify", fake_api)
        yield srv


def settings_for(server: HttpServer, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "backend": "api",
        "api_url": server.url,
        "api_key": KEY,
        "api_timeout": 2.0,
        "api_rate_limit": 1_000_000,
        "api_concurrency": 5,
        "api_retries": 3,
        "allow_test_domains": True,
    }
    values.update(overrides)
    return Settings(**values)


def backend_for(server: HttpServer, **overrides: object) -> ApiBackend:
    return ApiBackend(settings_for(server, **overrides), backoff_base=0.01)


async def collect(backend: ApiBackend, emails: list[str]) -> list:
    return [r async for r in backend.verify_many(emails)]


# -- the protocol ---------------------------------------------------------------------------


async def test_posts_the_address_with_the_key_and_maps_the_answer(server: HttpServer) -> None:
    backend = backend_for(server)
    (result,) = await collect(backend, ["Jane@GOOD.test"])
    (request,) = server.requests_for("/verify")
    assert request.method == "POST"
    assert request.header("X-API-Key") == KEY
    assert request.header("Content-Type") == "application/json"
    assert request.header("User-Agent").startswith("mailsift/")
    assert request.json() == {"email": "Jane@good.test"}  # normalized before sending
    assert (result.email, result.status, result.score, result.reason) == (
        "Jane@good.test", "valid", 0.97, "accepted",
    )
    assert result.checks.smtp_reachable is True and result.checks.disposable is False
    assert result.checks.role_based is None  # missing fields stay null
    assert (result.provider, result.mx_host) == ("google", "alt1.aspmx.l.google.com")


async def test_results_in_input_order(server: HttpServer) -> None:
    emails = [f"u{i}@lag.test" for i in range(30)] + ["x@bad.test", "y@good.test"]
    results = await collect(backend_for(server), emails)
    assert [r.email for r in results] == emails
    assert [r.status for r in results[-2:]] == ["invalid", "valid"]


async def test_bad_syntax_is_answered_locally_and_never_sent(server: HttpServer) -> None:
    emails = ["not an address", "a@good.test\r\nX-Injected: 1", "a@good.test\nb", ""]
    results = await collect(backend_for(server), emails)
    assert [(r.status, r.reason) for r in results] == [("invalid", "syntax")] * 4
    assert server.requests == []


# -- retries, rate limits, timeouts ---------------------------------------------------------


async def test_503_then_success_is_retried(server: HttpServer) -> None:
    server.enqueue("/verify", Reply(503, body="busy"))
    (result,) = await collect(backend_for(server), ["jane@good.test"])
    assert result.status == "valid"
    assert len(server.requests_for("/verify")) == 2


async def test_a_dropped_connection_is_retried(server: HttpServer) -> None:
    server.enqueue("/verify", Reply(drop=True))
    (result,) = await collect(backend_for(server), ["jane@good.test"])
    assert result.status == "valid"
    assert len(server.requests_for("/verify")) == 2


async def test_server_errors_exhaust_three_tries_then_unknown(server: HttpServer) -> None:
    server.enqueue("/verify", Reply(500), Reply(502), Reply(503))
    (result,) = await collect(backend_for(server), ["jane@good.test"])
    assert (result.status, result.reason) == ("unknown", "api_error")
    assert len(server.requests_for("/verify")) == 3


async def test_connection_refused_is_unknown_not_an_exception() -> None:
    dead = HttpServer().start()
    dead.stop()  # nothing listens on that port any more
    backend = backend_for(dead)
    results = await collect(backend, ["jane@good.test", "joe@bad.test"])
    assert [(r.status, r.reason) for r in results] == [("unknown", "api_error")] * 2


async def test_429_waits_for_retry_after(server: HttpServer) -> None:
    server.enqueue("/verify", Reply(429, headers={"Retry-After": "1"}))
    started = time.monotonic()
    (result,) = await collect(backend_for(server), ["jane@good.test"])
    elapsed = time.monotonic() - started
    assert result.status == "valid"
    first, second = server.requests_for("/verify")
    assert second.received_at - first.received_at >= 0.9
    assert 0.9 <= elapsed < 15


async def test_429_pauses_every_request_not_only_the_refused_one(server: HttpServer) -> None:
    server.enqueue("/verify", Reply(429, headers={"Retry-After": "1"}))
    backend = backend_for(server, api_concurrency=1)
    results = await collect(backend, ["a@good.test", "b@good.test"])
    assert [r.status for r in results] == ["valid", "valid"]
    refused, *rest = server.requests_for("/verify")
    assert all(r.received_at - refused.received_at >= 0.9 for r in rest)


def test_retry_after_forms() -> None:
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now=now) == 30.0
    assert parse_retry_after(format_datetime(now - timedelta(seconds=30), usegmt=True), now=now) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


async def test_retry_after_is_capped(server: HttpServer) -> None:
    server.enqueue("/verify", Reply(429, headers={"Retry-After": "3600"}))
    backend = ApiBackend(settings_for(server), backoff_base=0.01, max_retry_after=0.2)
    started = time.monotonic()
    (result,) = await collect(backend, ["jane@good.test"])
    assert result.status == "valid"
    assert time.monotonic() - started < 10


async def test_a_server_that_never_answers_gives_unknown_within_the_timeout(server: HttpServer) -> None:
    backend = backend_for(server, api_timeout=0.5, api_retries=2)
    started = time.monotonic()
    results = await collect(backend, ["a@slow.test", "b@good.test", "c@bad.test"])
    elapsed = time.monotonic() - started
    assert [(r.status, r.reason) for r in results] == [
        ("unknown", "api_timeout"), ("valid", "accepted"), ("invalid", "mailbox_not_found"),
    ]
    assert len([r for r in server.requests if r.json()["email"] == "a@slow.test"]) == 2
    assert elapsed < 6  # 2 tries x 0.5 s, plus generous slack


async def test_rate_limit_spaces_requests(server: HttpServer) -> None:
    # 120 a minute = one request every 0.5 s: the third starts >= 1 s after the first
    backend = backend_for(server, api_rate_limit=120)
    results = await collect(backend, ["a@good.test", "b@good.test", "c@good.test"])
    assert [r.status for r in results] == ["valid"] * 3
    times = sorted(r.received_at for r in server.requests_for("/verify"))
    assert times[2] - times[0] >= 0.75  # 1.0 s in theory; loopback timestamps jitter under load


async def test_concurrency_cap(server: HttpServer) -> None:
    server.set_handler(
        "/verify", lambda req: Reply(200, body={"status": "valid"}, delay=0.15)
    )
    backend = backend_for(server, api_concurrency=3)
    results = await collect(backend, [f"u{i}@good.test" for i in range(12)])
    assert [r.status for r in results] == ["valid"] * 12
    assert 2 <= server.max_concurrent <= 3


# -- the key --------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [401, 403])
async def test_rejected_key_stops_the_run_with_one_clear_message(server: HttpServer, status: int) -> None:
    server.set_default("/verify", Reply(status, body={"error": "invalid api key"}))
    server.set_handler("/verify", None)  # type: ignore[arg-type]
    backend = backend_for(server, api_concurrency=2)
    seen = []
    with pytest.raises(BackendAuthError) as caught:
        async for result in backend.verify_many([f"u{i}@good.test" for i in range(50)]):
            seen.append(result)
    message = str(caught.value)
    assert message == (
        f"API key rejected by 127.0.0.1:{server.port} (HTTP {status}): check MAILSIFT_API_KEY"
    )
    assert KEY not in message and KEY not in repr(caught.value)
    assert seen == []  # no address was marked unknown because of the key
    assert len(server.requests_for("/verify")) <= 2  # stopped at once, not 50 refusals


async def test_key_appears_in_no_log_result_or_repr(server: HttpServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # root: httpx, httpcore and mailsift at DEBUG
    server.enqueue("/verify", Reply(503), Reply(200, body="{not json"), Reply(404))
    backend = backend_for(server, api_timeout=0.4, api_retries=2)
    results = await collect(backend, ["a@good.test", "b@slow.test", "c@bad.test", "bad address"])
    server.set_handler("/verify", lambda req: Reply(401))
    with pytest.raises(BackendAuthError) as caught:
        await collect(backend, ["d@good.test"])

    assert any(r.name.startswith(("httpx", "httpcore")) for r in caplog.records)  # logs were on
    assert any(r.name.startswith("mailsift") for r in caplog.records)
    assert KEY not in caplog.text
    for record in caplog.records:
        assert KEY not in record.getMessage()
    assert all(KEY not in str(r.to_dict()) for r in results)
    assert KEY not in repr(backend) and KEY not in str(caught.value)
    assert {r.header("X-API-Key") for r in server.requests} == {KEY}


async def test_unusable_answers_are_unknown(server: HttpServer) -> None:
    server.enqueue(
        "/verify",
        Reply(200, body="<html>maintenance</html>"),
        Reply(200, body={"email": "x", "foo": "bar"}),
        Reply(200, body=[1, 2, 3]),
        Reply(404, body="no such route"),
    )
    backend = backend_for(server, api_concurrency=1)
    results = await collect(backend, [f"u{i}@good.test" for i in range(4)])
    assert [(r.status, r.reason) for r in results] == [("unknown", "api_error")] * 4
    assert len(server.requests_for("/verify")) == 4  # not retried


# -- configuration ------------------------------------------------------------------------


def test_missing_url_or_key_is_a_clear_config_error() -> None:
    with pytest.raises(ConfigError, match="MAILSIFT_API_URL is not set"):
        ApiBackend(Settings(backend="api", api_key=KEY))
    with pytest.raises(ConfigError, match="MAILSIFT_API_KEY is not set"):
        ApiBackend(Settings(backend="api", api_url="https://api.example.com/v1"))
    with pytest.raises(ConfigError, match="http"):
        ApiBackend(Settings(backend="api", api_url="ftp://api.example.com", api_key=KEY))


def test_selected_by_settings_and_repr_hides_the_key() -> None:
    backend = get_backend(
        Settings(backend="api", api_url="https://user:pw@api.example.com/v1/", api_key=KEY)
    )
    assert isinstance(backend, ApiBackend) and isinstance(backend, Backend)
    assert backend.name == "api"
    assert backend.endpoint == "https://api.example.com/v1/verify"
    assert KEY not in repr(backend) and "pw" not in repr(backend)


def test_a_secret_block_replaces_the_environment_key() -> None:
    backend = get_backend(
        Settings(backend="api", api_url="https://api.example.com"), api_key_block="mailsift-api-key"
    )
    assert isinstance(backend, ApiBackend)  # no MAILSIFT_API_KEY needed; loaded on first use


def test_usable_from_several_event_loops(server: HttpServer) -> None:
    backend = backend_for(server)

    async def once(email: str) -> str:
        return (await backend.verify(email)).status

    assert asyncio.run(once("a@good.test")) == "valid"
    assert asyncio.run(once("b@bad.test")) == "invalid"


# -- response mapping ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ({"status": "deliverable", "score": 95}, ("valid", 0.95, "accepted")),
        ({"status": "undeliverable", "reason": "no_such_user"}, ("invalid", 0.05, "mailbox_not_found")),
        ({"status": "catch-all"}, ("risky", 0.55, "catch_all")),
        ({"status": "accept_all", "score": 0.9}, ("risky", 0.69, "catch_all")),  # clamped into band
        ({"status": "disposable"}, ("invalid", 0.1, "disposable")),
        ({"status": "role"}, ("risky", 0.6, "role_based")),
        ({"status": "invalid", "score": 0.8, "reason": "made_up_word"}, ("invalid", 0.29, "mailbox_not_found")),
        ({"status": "invalid", "mx_found": False}, ("invalid", 0.05, "no_mx")),
        ({"status": "risky", "is_role": "true"}, ("risky", 0.6, "role_based")),
        ({"status": "valid", "reason": "mailbox_full"}, ("valid", 0.95, "accepted")),  # reason of another status
        ({"status": "unknown"}, ("unknown", 0.4, "smtp_error")),
        ({"status": "Unknown", "reason": "greylisting"}, ("unknown", 0.5, "greylisted")),
        ({"result": {"status": "VALID", "score": "0.81"}}, ("valid", 0.81, "accepted")),
    ],
)
def test_answer_mapping(answer: dict, expected: tuple) -> None:
    result = result_from_api(answer, "jo@example.com")
    assert (result.status, result.score, result.reason) == expected
    assert REASONS[result.reason] == result.status
    low, high = SCORE_BANDS[result.status]
    assert low <= result.score <= high


def test_flat_booleans_and_extras() -> None:
    result = result_from_api(
        {
            "email": "JO@EXAMPLE.COM",
            "status": "valid",
            "is_disposable": False,
            "is_free_email": "yes",
            "mx_records": ["mx1.example.com"],
            "smtp_check": 1,
            "did_you_mean": "gmail.com",
            "smtp_code": 250,
            "smtp_message": "2.1.5 OK\r\ninjected",
        },
        "jo@gmial.com",
    )
    assert result.email == "jo@gmial.com"  # our normalized address, not the API's spelling
    checks = result.checks
    assert (checks.disposable, checks.free_provider, checks.mx_found, checks.smtp_reachable) == (
        False, True, True, True,
    )
    assert checks.catch_all is None and checks.domain_exists is None
    assert result.suggestion == "jo@gmail.com"
    assert result.smtp_code == 250
    assert "\r" not in result.smtp_message and "\n" not in result.smtp_message


@pytest.mark.parametrize("answer", [{}, {"status": "maybe"}, [], "valid", None, {"status": 3}])
def test_answers_without_a_status_are_refused(answer: object) -> None:
    with pytest.raises((ValueError, TypeError)):
        result_from_api(answer, "jo@example.com")


async def test_every_backend_name_resolves() -> None:
    local = get_backend(Settings(backend="local"))
    try:
        assert isinstance(local, Backend) and local.name == "local"
    finally:
        await local.aclose()
