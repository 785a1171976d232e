"""Shared fixtures: the simulated internet (real DNS and SMTP servers on loopback) and
Prefect's own test harness. Nothing here mocks DNS, SMTP, HTTP or the database."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

from mailsift.testing.world import World  # noqa: E402


@pytest.fixture
def world():
    """A fresh, empty simulated internet; add domains in the test."""
    with World() as w:
        yield w
    assert not any(line.upper().startswith("DATA") for line in w.transcript), "DATA must never be sent"


@pytest.fixture(scope="session")
def prefect_harness():
    """Prefect's test harness: a temporary database and API for the session."""
    import prefect.settings
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield prefect.settings.PREFECT_API_URL.value()


@pytest.fixture
def cli_env(prefect_harness, tmp_path):
    """Environment for ``mailsift`` subprocesses: talk to the harness's Prefect API
    (no ephemeral server per command), a private PREFECT_HOME."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILSIFT_")}
    env.update(PREFECT_API_URL=prefect_harness, PREFECT_HOME=str(tmp_path / "prefect-home"))
    return env
