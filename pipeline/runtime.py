"""How this process runs its flows: Prefect settings that depend on where the API is.

``mailsift run`` (and ``reverify``, ``demo``, ``mailsift serve``'s jobs) call their flows
in-process. With no ``PREFECT_API_URL`` they talk to Prefect's temporary API server, which
lives and dies with this process: nobody can watch for a flow run that stops sending
heartbeats there, so :func:`local_flow_runs` turns them off. That also saves each flow
run up to one second at its end: Prefect 3.9's heartbeat thread sleeps in 1 s steps and
the run joins it (``prefect/flow_engine.py``, ``_send_heartbeats``; a trivial flow run
took 1.06 s with it, 0.1 s without, measured here). Against a real Prefect server
(``PREFECT_API_URL`` set) nothing changes: heartbeats let it mark crashed runs.

:func:`gated_flow_run` is what the CLI wraps a gated flow in (``run``, ``reverify``,
``demo``): it also starts the quality gate's worker process first, so that its import of
Great Expectations (3.5-3.7 s of CPU, measured) overlaps Prefect's own start-up (4-10 s)
instead of competing with the engine for a small machine's cores while addresses are
verified.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["gated_flow_run", "local_flow_runs", "uses_temporary_server"]


def uses_temporary_server() -> bool:
    """True when flow runs of this process go to Prefect's temporary API server."""
    from prefect.settings import PREFECT_API_URL

    return not PREFECT_API_URL.value()


@contextmanager
def local_flow_runs() -> Iterator[None]:
    """Run the flows called inside without heartbeats when the API server is this
    process's temporary one (see the module's docstring); else as configured."""
    if not uses_temporary_server():
        yield
        return
    import prefect.context

    context = prefect.context.get_settings_context()
    with prefect.context.SettingsContext(profile=context.profile, settings=_without_heartbeats(context.settings)):
        yield


_NO_HEARTBEATS: list[tuple[object, object]] = []  # [(settings, the same without heartbeats)]


def _without_heartbeats(settings: object) -> object:
    """``settings`` with flow-run heartbeats off, built once per settings object: Prefect's
    ``temporary_settings`` validates a whole new settings object each time (80 ms, measured:
    2 % of a 10,000-address run)."""
    for original, updated in _NO_HEARTBEATS:
        if original is settings:
            return updated
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY

    updated = settings.copy_with_update(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None})  # type: ignore[attr-defined]
    _NO_HEARTBEATS[:] = [(settings, updated)]  # the settings of now; older ones are let go
    return updated


@contextmanager
def gated_flow_run() -> Iterator[None]:
    """Start the gate's worker now (see the module's docstring), then
    :func:`local_flow_runs`."""
    from tasks.steps import start_gate_worker

    start_gate_worker()
    with local_flow_runs():
        yield
