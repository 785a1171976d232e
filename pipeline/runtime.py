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
verified; and it imports, in a thread, what the flow would import on first use
(:data:`WARM_MODULES`), while Prefect's start-up waits for its server.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["WARM_MODULES", "gated_flow_run", "local_flow_runs", "uses_temporary_server", "warm_imports"]


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


#: Modules a flow run imports on first use that Prefect's start-up does not: imported by
#: :func:`warm_imports` while that start-up waits for its API server. A first flow run in
#: a process paid 0.3-0.5 s more than the next (10,000 addresses, measured); of that,
#: ``pyarrow.compute`` (scraping its own docstrings) 0.17 s and the report's module (its
#: page template compiled) 0.12 s; and the Public Suffix List the path diagnoses read
#: (``mailsift.suffixes``, 0.04 s). Only modules that import nothing of Prefect's: two
#: threads importing modules that import each other can deadlock (CPython then raises
#: in one of them), and Prefect's start-up imports in the main thread meanwhile.
WARM_MODULES: tuple[str, ...] = ("pyarrow.compute", "warehouse.report", "mailsift.suffixes")


def warm_imports() -> threading.Thread:
    """Import :data:`WARM_MODULES` in a background thread, now: ``mailsift run`` calls
    its flow once, and the flow would import them on its critical path. A module that
    fails to import here fails again, with its message, where it is used."""

    def run() -> None:
        for name in WARM_MODULES:
            try:
                importlib.import_module(name)
            except Exception:  # noqa: S112 (see the docstring)
                continue

    thread = threading.Thread(target=run, name="mailsift-warm-imports", daemon=True)
    thread.start()
    return thread


@contextmanager
def gated_flow_run() -> Iterator[None]:
    """Start the gate's worker and :func:`warm_imports` now (see the module's
    docstring), then :func:`local_flow_runs`."""
    from tasks.steps import start_gate_worker

    start_gate_worker()
    warm_imports()
    with local_flow_runs():
        yield
