"""Settings of ``mailsift serve``: flags, then ``MAILSIFT_SERVE_*`` variables, then these.

The engine's own settings (DNS, SMTP, politeness limits) stay in
:class:`mailsift.settings.Settings` (``MAILSIFT_*``); the warehouse is ``MAILSIFT_DB``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["ServeSettings", "DEFAULT_WEBHOOK_WAITS"]

#: Waits between the 5 attempts of one webhook, seconds: 1, 2, 4, 8 minutes.
DEFAULT_WEBHOOK_WAITS: tuple[float, ...] = (60.0, 120.0, 240.0, 480.0)


class ServeSettings(BaseSettings):
    """What the service adds to the engine's settings."""

    model_config = SettingsConfigDict(env_prefix="MAILSIFT_SERVE_", extra="ignore", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, lt=65536)
    state_dir: Path | None = Field(
        None,
        description="The service's own state (default: <db>.serve/ beside a DuckDB warehouse, "
        "./mailsift-serve-state/ with a PostgreSQL one).",
    )

    # one address
    timeout: float = Field(10.0, gt=0, description="Default time budget of one /verify, seconds.")
    max_timeout: float = Field(60.0, gt=0, description="Largest budget; a larger ?timeout= is capped.")
    max_age_days: float = Field(30, ge=0, description="A stored result younger than this is reused.")
    retry_unknown_after_minutes: float = Field(
        30, ge=0, description="A stored 'unknown' younger than this is reused."
    )
    memory_cache_seconds: float = Field(
        300, ge=0, description="How long a result read from the warehouse is kept in memory."
    )
    memory_cache_size: int = Field(100_000, ge=0)

    # limits
    rate_limit_per_minute: int = Field(
        600, ge=0, description="Requests per minute per key (0: unlimited); a key may set its own."
    )
    max_body_bytes: int = Field(4 * 1024 * 1024, gt=0, description="Largest request body (413).")
    max_bulk_addresses: int = Field(100_000, gt=0, description="Most addresses in one bulk job (413).")
    max_running_jobs: int = Field(4, gt=0, description="Bulk jobs verified at once; more wait.")
    max_queued_jobs: int = Field(100, gt=0, description="Jobs waiting beyond this: 503.")
    bulk_batch_size: int = Field(200, gt=0, le=5000, description="Addresses per mapped batch.")
    results_page_max: int = Field(1000, gt=0)

    # warehouse sharing
    flush_interval: float = Field(1.0, gt=0, description="Seconds between loads into the warehouse.")
    keys_refresh_seconds: float = Field(5.0, gt=0, description="Revocations take effect within this.")

    # webhooks
    webhook_waits: Annotated[tuple[float, ...], NoDecode] = Field(
        DEFAULT_WEBHOOK_WAITS,
        description="Comma list of seconds between attempts (attempts = waits + 1).",
    )
    webhook_timeout: float = Field(10.0, gt=0)
    webhook_concurrency: int = Field(20, gt=0, description="Webhook POSTs in flight at once.")

    # Prefect
    prefect: bool | None = Field(
        None,
        description="Run bulk jobs as Prefect flow runs (default: when PREFECT_API_URL is set).",
    )

    @field_validator("webhook_waits", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(float(p) for p in value.split(",") if p.strip())
        return value

    @field_validator("webhook_waits")
    @classmethod
    def _check_waits(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(w < 0 for w in value):
            raise ValueError("webhook waits must be >= 0")
        return value

    def state_path(self, db: Path | str) -> Path:
        """``state_dir``, else ``<db>.serve/`` beside a DuckDB file, else (a PostgreSQL
        warehouse) ``./mailsift-serve-state/``."""
        if self.state_dir is not None:
            return self.state_dir
        if isinstance(db, Path):
            return db.with_name(db.name + ".serve")
        return Path("mailsift-serve-state")
