"""Scale-out deployments on a work pool: ``python -m deployments.scale_out [--scheduler tcp://...]``.

Beside the served deployments of :mod:`deployments.serve` (one host), this declares what
several probe hosts need (README "Scaling out"):

- the work pool :data:`WORK_POOL` (type ``process``), created when missing;
- :data:`WORKER_COMMAND`: the Prefect worker that picks up the flow runs (one host, the
  one that reaches the PostgreSQL warehouse; its environment holds ``MAILSIFT_DB`` and
  ``PGPASSWORD``, which a process worker hands to the flow runs it starts);
- :data:`PROBE_COMMAND`: one Dask worker per probe host, which runs the verify batches;
- :data:`DEPLOYMENTS`: ``verify-crm-exports/scale-out`` and ``reverify-stale/scale-out-daily``
  from flows/scale_out.py, whose task runner is the Dask scheduler named by
  ``MAILSIFT_DASK_SCHEDULER`` (stored in the deployment's job variables; never a secret).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.schedules import Cron

from pipeline.settings import DEFAULTS

__all__ = ["DEPLOYMENTS", "PROBE_COMMAND", "WORKER_COMMAND", "WORK_POOL", "deploy", "ensure_work_pool", "main"]

ROOT = Path(__file__).resolve().parent.parent
WORK_POOL = "mailsift-scale-out"
WORKER_COMMAND = f"prefect worker start --pool {WORK_POOL} --type process"
#: On each probe host (``{scheduler}``: tcp://host:8786; ``{ip}``: this host's egress IP).
PROBE_COMMAND = (
    "MAILSIFT_SOURCE_ADDRESS={ip} dask worker {scheduler} --no-nanny --nthreads 8 "
    "--name probe-{ip} --no-dashboard --preload tasks.steps"
)

DEPLOYMENTS: dict[str, dict[str, Any]] = {
    "verify-crm-exports/scale-out": {
        "entrypoint": "flows/scale_out.py:verify_crm_exports_scaled",
        "name": "scale-out",
        "description": "Verify CRM exports; the verify batches run on the probe hosts' Dask workers.",
        "tags": ["mailsift", "scale-out"],
    },
    "reverify-stale/scale-out-daily": {
        "entrypoint": "flows/scale_out.py:reverify_stale_scaled",
        "name": "scale-out-daily",
        "description": f"Re-verify what is older than {DEFAULTS.max_age_days} days, on the probe hosts.",
        "tags": ["mailsift", "scale-out", "scheduled"],
        "schedule": Cron(DEFAULTS.reverify_cron, timezone="UTC"),
        "concurrency_limit": ConcurrencyLimitConfig(
            limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW
        ),
        "parameters": {"older_than_days": DEFAULTS.max_age_days},
    },
}


def ensure_work_pool(name: str = WORK_POOL) -> None:
    """Create the ``process`` work pool ``name`` unless it exists."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name=name, type="process"))
        except ObjectAlreadyExists:
            pass


def deploy(scheduler: str, *, source: Path = ROOT, work_pool: str = WORK_POOL) -> list[Any]:
    """Register :data:`DEPLOYMENTS` on ``work_pool`` (created if missing), code from
    ``source`` (a checkout every worker host has at the same path); return their ids."""
    from prefect.flows import Flow

    ensure_work_pool(work_pool)
    ids = []
    for spec in DEPLOYMENTS.values():
        options = {k: v for k, v in spec.items() if k != "entrypoint"}
        flow = Flow.from_source(source=str(source), entrypoint=spec["entrypoint"])
        ids.append(
            flow.deploy(
                work_pool_name=work_pool,
                job_variables={"env": {"MAILSIFT_DASK_SCHEDULER": scheduler}},
                print_next_steps=False,
                **options,
            )
        )
    return ids


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scheduler",
        default=os.environ.get("MAILSIFT_DASK_SCHEDULER", ""),
        help="the Dask scheduler of the probe hosts, tcp://host:8786 [env MAILSIFT_DASK_SCHEDULER]",
    )
    args = parser.parse_args(argv)
    if not args.scheduler:
        parser.error("name the Dask scheduler (--scheduler tcp://host:8786)")
    deploy(args.scheduler)
    print(f"deployed {', '.join(DEPLOYMENTS)} on work pool {WORK_POOL}")
    print(f"flow-run host:  {WORKER_COMMAND}")
    print(f"each probe host: {PROBE_COMMAND.format(ip='<its egress IP>', scheduler=args.scheduler)}")


if __name__ == "__main__":
    main()
