"""How the CLI runs its flows (pipeline/runtime.py): heartbeats only where a server can
watch them."""

from __future__ import annotations

import pytest
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


def test_prepare_engine_builds_the_engine_the_batches_then_use() -> None:
    """A flow builds its engine as it starts (``prepare_engine``): its first batch finds
    it built; settings that cannot build one fail in the batch, not in the thread."""
    from mailsift.errors import ConfigError
    from tasks.verify import _ENGINES, engine_for, prepare_engine, settings_with

    _ENGINES.close()
    prepare_engine({"backend": "sandbox"}).join(30)
    built = list(_ENGINES._engines.values())
    assert len(built) == 1
    assert engine_for(settings_with({"backend": "sandbox"})) is built[0]
    thread = prepare_engine({"backend": "nonsense"})
    thread.join(30)
    assert not thread.is_alive()
    with pytest.raises((ConfigError, ValueError)):
        engine_for(settings_with({"backend": "nonsense"}))
    _ENGINES.close()


def test_gate_warm_up_runs_the_real_gate_path_and_leaves_no_file(tmp_path, monkeypatch):
    # The gate's worker runs this at idle priority and swallows what it raises (the gate
    # then reports it at the end of the run): if its made-up rows stopped matching what
    # gate_report reads, nothing would fail, the first gate of every run would be slower.
    import tempfile

    from tasks.steps import _warm_up_gate

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    _warm_up_gate()  # raises if the gate cannot run over its rows
    assert list(tmp_path.iterdir()) == []  # its Parquet file is gone
