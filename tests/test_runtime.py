"""How the CLI runs its flows (pipeline/runtime.py): heartbeats only where a server can
watch them."""

from __future__ import annotations

from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings

from pipeline.runtime import local_flow_runs, uses_temporary_server


def test_flow_runs_on_the_temporary_server_send_no_heartbeats() -> None:
    # The temporary API server dies with the process: no one could notice a run that
    # stops beating, and Prefect 3.9 makes each run wait up to 1 s for its beat thread.
    with temporary_settings({PREFECT_API_URL: None}):
        assert uses_temporary_server()
        before = get_current_settings().flows.heartbeat_frequency
        with local_flow_runs():
            assert get_current_settings().flows.heartbeat_frequency is None
        assert get_current_settings().flows.heartbeat_frequency == before


def test_flow_runs_against_a_real_server_keep_their_heartbeats() -> None:
    # A Prefect server marks a run whose heartbeats stop as crashed: keep them.
    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:4200/api"}):
        assert not uses_temporary_server()
        configured = get_current_settings().flows.heartbeat_frequency
        assert configured is not None
        with local_flow_runs():
            assert get_current_settings().flows.heartbeat_frequency == configured
