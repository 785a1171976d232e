"""Scale-out: one flow run, its verify batches on several probe hosts (a Dask cluster).

Prefect's documented way to run a flow's mapped tasks on many machines is a distributed
task runner: with ``MAILSIFT_DASK_SCHEDULER=tcp://scheduler:8786`` the flows' task runner
is prefect-dask's ``DaskTaskRunner`` pointed at that scheduler, so ``verify_batch`` runs
on the Dask workers, one per probe host, each with its own ``MAILSIFT_SOURCE_ADDRESS``.
Everything else (extract, freshness, loads into the warehouse, gate, exports) stays in
the flow-run process, which must reach the shared warehouse (``MAILSIFT_DB`` =
PostgreSQL when several flow runs may overlap).

Run a Dask worker per host with ``--nworkers 1``: the engine's per-domain window lives in
the worker process, and is per (domain, source IP) only if one process owns the IP. A
worker that dies mid-batch loses that batch's in-flight addresses only: Dask reruns the
task elsewhere, or the batch fails and the next run picks its addresses up (nothing of
it was stored).

``verify_crm_exports_scaled`` / ``reverify_stale_scaled`` are the deployment entrypoints
(deployments/scale_out.py); ``scaled(flow)`` gives any flow the same runner.
"""

from __future__ import annotations

import os
from typing import Any

from flows.reverify_stale import reverify_stale
from flows.verify_crm_exports import verify_crm_exports

__all__ = [
    "DASK_SCHEDULER_ENV",
    "reverify_stale_scaled",
    "scaled",
    "task_runner",
    "verify_crm_exports_scaled",
]

#: The environment variable naming the Dask scheduler (``tcp://host:8786``).
DASK_SCHEDULER_ENV = "MAILSIFT_DASK_SCHEDULER"


def task_runner(address: str | None = None) -> Any:
    """``DaskTaskRunner(address=...)`` for ``address`` (default: the environment), or
    ``None`` when no scheduler is named."""
    address = address or os.environ.get(DASK_SCHEDULER_ENV, "").strip()
    if not address:
        return None
    from prefect_dask import DaskTaskRunner

    return DaskTaskRunner(address=address)


def scaled(flow: Any, address: str | None = None) -> Any:
    """``flow`` with its tasks on the Dask cluster at ``address`` (or the environment's);
    ``flow`` itself, with its own thread pool, when no scheduler is named."""
    runner = task_runner(address)
    return flow if runner is None else flow.with_options(task_runner=runner)


verify_crm_exports_scaled = scaled(verify_crm_exports)
reverify_stale_scaled = scaled(reverify_stale)
