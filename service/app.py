"""The ASGI app of ``mailsift serve``: ``create_app()`` builds it, ``mailsift serve`` runs it
with uvicorn. OpenAPI at ``/docs`` (and ``/openapi.json``)."""


import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Security
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, ConfigDict, Field, StrictStr

from mailsift import __version__
from mailsift.settings import Settings, db_location
from service.errors import ApiError, install_error_handlers
from service.keys import ApiKey, KeyRing
from service.limits import BodyLimit, RateLimiter
from service.lookups import Lookups
from service.settings import ServeSettings
from service.sharing import SharedWarehouse
from service.state import ServiceState

__all__ = ["Service", "create_app"]

log = logging.getLogger("mailsift.serve")

API_KEY_HEADER = "X-API-Key"


class AsciiJSONResponse(JSONResponse):
    """JSON with non-ASCII escaped: an address holding a lone surrogate (any string gets
    a result) still makes a valid body."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode()


@dataclass
class Service:
    """Everything one running service holds."""

    engine_settings: Settings
    serve: ServeSettings
    db: Path | str
    state: ServiceState
    shared: SharedWarehouse
    keys: KeyRing
    lookups: Lookups
    limiter: RateLimiter = field(default_factory=RateLimiter)
    jobs: Any = None  # service.jobs.Jobs
    outbox: Any = None  # service.outbox.Outbox
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    started_at: float = field(default_factory=time.time)

    @classmethod
    def build(cls, engine_settings: Settings, serve: ServeSettings) -> "Service":
        db = db_location(engine_settings.db)  # a file Path, or a postgresql:// URL
        if isinstance(db, Path):
            db = db.expanduser()
        state = ServiceState(serve.state_path(db))
        shared = SharedWarehouse(db, state)
        keys = KeyRing(shared.keys, serve.keys_refresh_seconds)
        lookups = Lookups(engine_settings, serve, shared, state)
        service = cls(engine_settings, serve, db, state, shared, keys, lookups)
        from service.jobs import Jobs
        from service.outbox import Outbox

        service.outbox = Outbox(state, serve)
        service.jobs = Jobs(state, serve, lookups, service.outbox, serve.state_path(db) / "jobs")
        return service

    async def flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self.serve.flush_interval)
            try:
                await asyncio.to_thread(self.shared.flush)
            except Exception:  # keep the service up; the rows stay in the spool
                log.exception("loading results into the warehouse failed")
            if self.keys.stale():
                await asyncio.to_thread(self.keys.reload)


# -- request and response models ---------------------------------------------------------


class VerifyRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    email: StrictStr = Field(description="Any string; a malformed one is answered invalid/syntax.")


class Checks(BaseModel):
    syntax_valid: bool | None
    domain_exists: bool | None
    mx_found: bool | None
    smtp_reachable: bool | None
    disposable: bool | None
    role_based: bool | None
    catch_all: bool | None
    free_provider: bool | None


class VerifyResponse(BaseModel):
    email: str
    status: str = Field(description="valid, invalid, risky or unknown")
    score: float
    reason: str
    checks: Checks
    suggestion: str | None
    provider: str | None
    mx_host: str | None
    smtp_code: int | None
    smtp_message: str | None
    verified_at: str
    cached: bool = Field(description="True when the result came from the warehouse (30-day cache).")


class ErrorResponse(BaseModel):
    error: str
    detail: Any


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 413, 422, 429, 503)
}


# -- the app ----------------------------------------------------------------------------------


def create_app(
    engine_settings: Settings | None = None, serve: ServeSettings | None = None
) -> FastAPI:
    engine_settings = engine_settings or Settings()
    serve = serve or ServeSettings()
    service = Service.build(engine_settings, serve)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(service.shared.prepare)
        await asyncio.to_thread(service.keys.reload)
        if service.jobs is not None:
            await service.jobs.start()
        if service.outbox is not None:
            service.outbox.start()
        service.tasks.append(asyncio.create_task(service.flush_forever()))
        log.info("mailsift serve: warehouse %s, %d active keys", service.shared.name, len(service.keys))
        try:
            yield
        finally:
            for task in service.tasks:
                task.cancel()
            await asyncio.gather(*service.tasks, return_exceptions=True)
            if service.jobs is not None:
                await service.jobs.stop()
            if service.outbox is not None:
                await service.outbox.stop()
            await service.lookups.drain(timeout=2.0)
            await asyncio.to_thread(service.shared.flush)
            service.state.close()

    app = FastAPI(
        title="mailsift",
        version=__version__,
        summary="Email verification API: syntax, DNS, SMTP mailbox probe, reputation; "
        "results kept in the mailsift warehouse.",
        lifespan=lifespan,
        default_response_class=AsciiJSONResponse,
    )
    app.state.service = service
    install_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=serve.max_body_bytes)

    key_header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False,
                              description="ms_live_... or ms_test_... (mailsift keys create)")

    async def api_key(presented: Annotated[str | None, Security(key_header)]) -> ApiKey:
        if not presented:
            raise ApiError(401, f"missing {API_KEY_HEADER} header")
        if service.keys.stale():
            await asyncio.to_thread(service.keys.reload)
        key = service.keys.find(presented)
        if key is None:
            raise ApiError(401, "unknown or revoked API key")
        limit = key.rate_limit_per_minute
        wait = service.limiter.check(key.key_id, serve.rate_limit_per_minute if limit is None else limit)
        if wait:
            raise ApiError(
                429, f"rate limit of this key reached; retry in {wait:.1f}s",
                headers={"Retry-After": RateLimiter.retry_after(wait)},
            )
        return key

    app.state.api_key = api_key

    @app.get("/health", tags=["service"], summary="Liveness and queue sizes (no key needed).")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "version": __version__,
            "uptime_s": round(time.time() - service.started_at, 1),
            "pending_warehouse_rows": service.state.count_pending_results(),
            "webhooks": service.state.outbox_counts(),
        }

    @app.post(
        "/api/v1/verify",
        response_model=VerifyResponse,
        responses=ERRORS,
        tags=["verify"],
        summary="Verify one address.",
    )
    async def verify(
        body: VerifyRequest,
        key: Annotated[ApiKey, Depends(api_key)],
        timeout: Annotated[
            float | None,
            Query(gt=0, description="Seconds to wait (default MAILSIFT_SERVE_TIMEOUT, 10); "
                  "past it the answer is unknown and the check goes on in the background."),
        ] = None,
    ) -> AsciiJSONResponse:
        """The result contract plus `cached`. A test key (`ms_test_`) gets the sandbox's
        answers: `@valid.test` valid, `@invalid.test` invalid, any other well-formed
        address risky."""
        budget = min(timeout or serve.timeout, serve.max_timeout)
        answer = await service.lookups.verify(body.email, test=key.is_test, budget=budget)
        # the contract is already exact: skip re-validating it against VerifyResponse
        return AsciiJSONResponse(answer.to_dict())

    from service.bulk import install_bulk_routes

    install_bulk_routes(app, service, api_key, ERRORS)
    return app

