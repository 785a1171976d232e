"""Serve mailsift's deployments from this process: ``python -m deployments.serve``.

- ``verify-crm-exports/manual``: run by hand from the Prefect UI or
  ``prefect deployment run verify-crm-exports/manual -p sources='["exports/*.csv"]'``.
- ``reverify-stale/daily``: every day at 03:00 UTC; a concurrency limit of 1 with
  ``CANCEL_NEW`` so a slow run is never overlapped by the next one.

To run them on workers instead (work pools, several hosts), pass the same options to
``flow.from_source(...).deploy(work_pool_name=...)``; :data:`DEPLOYMENTS` stays the one list.
"""

from __future__ import annotations

from typing import Any

from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.schedules import Cron

from pipeline.settings import DEFAULTS

__all__ = ["DEPLOYMENTS", "build", "main"]

#: name -> (flow entrypoint, deployment options). The one place deployments are declared.
DEPLOYMENTS: dict[str, dict[str, Any]] = {
    "verify-crm-exports/manual": {
        "entrypoint": "flows/verify_crm_exports.py:verify_crm_exports",
        "name": "manual",
        "description": "Verify CRM exports; run by hand with the sources to read.",
        "tags": ["mailsift"],
    },
    "reverify-stale/daily": {
        "entrypoint": "flows/reverify_stale.py:reverify_stale",
        "name": "daily",
        "description": f"Re-verify addresses whose newest check is older than {DEFAULTS.max_age_days} days.",
        "tags": ["mailsift", "scheduled"],
        "schedule": Cron(DEFAULTS.reverify_cron, timezone="UTC"),
        "concurrency_limit": ConcurrencyLimitConfig(
            limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW
        ),
        "parameters": {"older_than_days": DEFAULTS.max_age_days},
    },
}


def _load_flow(entrypoint: str):
    from prefect.flows import load_flow_from_entrypoint

    return load_flow_from_entrypoint(entrypoint)


def build() -> list[Any]:
    """The RunnerDeployment objects, ready for ``prefect.serve``."""
    out = []
    for spec in DEPLOYMENTS.values():
        options = {k: v for k, v in spec.items() if k != "entrypoint"}
        out.append(_load_flow(spec["entrypoint"]).to_deployment(**options))
    return out


def main() -> None:
    from prefect import serve

    serve(*build())


if __name__ == "__main__":
    main()
