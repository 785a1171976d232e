"""The pipeline's defaults, written once.

Every layer reads its default from :data:`DEFAULTS` instead of repeating the figure: the
``mailsift run``/``reverify``/``gate`` options, both flows' parameters, the quality gate
(:class:`tasks.quality.GateConfig`), the warehouse's ``stale_contacts`` view and the
deployments. Import cost: pydantic only (no Prefect, polars or DuckDB).

A default is not a limit: each run still takes its own value (a flag, a flow parameter).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["DEFAULTS", "PipelineDefaults"]


class PipelineDefaults(BaseModel):
    """What a run uses when nobody says otherwise."""

    model_config = ConfigDict(frozen=True)

    max_age_days: int = Field(
        30,
        ge=0,
        description=(
            "A result younger than this is reused instead of verified again; the daily "
            "re-verification re-checks what is older; the gate of a run refuses older results."
        ),
    )
    retry_unknown_after_minutes: int = Field(
        30, ge=0, description="An 'unknown' result older than this is checked again by the next run."
    )
    max_unknown_share: float = Field(
        0.2,
        ge=0.0,
        le=1.0,
        description="The quality gate's largest share of 'unknown' results that may go out.",
    )
    #: 1,000: a Prefect task run costs ~17 ms of CPU in the flow's process and ~20 ms in
    #: its API server (benchmarks/bench_pipeline.py); at 500 a 10,000-address run spent
    #: 0.4-0.7 s more in its verify step than at 1,000, the engine alone's time at 1,000.
    #: Batches of one domain share the engine's window for its MX hosts (one process, one
    #: engine), so splitting a big domain costs sessions, not politeness.
    batch_size: int = Field(1000, ge=1, le=5000, description="Addresses per mapped verification task.")
    webhook_retry_waits_minutes: tuple[float, ...] = Field(
        (1, 2, 4, 8),
        min_length=1,
        description=(
            "Minutes to wait before each retry of a failed webhook delivery: 4 waits, so 5 "
            "attempts; what still fails waits for `mailsift webhooks retry`."
        ),
    )
    reverify_cron: str = Field("0 3 * * *", description="When the daily re-verification runs (UTC).")


#: The defaults every layer of the pipeline reads.
DEFAULTS = PipelineDefaults()
