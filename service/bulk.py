"""The bulk routes: submit a job, read its status, page through its results."""

from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query
from pydantic import BaseModel, ConfigDict, Field, StrictStr

from mailsift.errors import ConfigError
from mailsift.routing import url_unroutable_reason
from service.errors import ApiError
from service.jobs import QueueFull
from service.keys import ApiKey

__all__ = ["install_bulk_routes"]


class BulkRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    emails: list[StrictStr] = Field(description="Addresses (any strings); duplicates count once.")
    webhook_url: StrictStr | None = Field(
        None, description="POST each result here as it completes, signed (X-Webhook-Signature)."
    )
    webhook_secret: StrictStr | None = Field(
        None, description="Key of the HMAC-SHA256 signature; kept in memory only, never stored."
    )


class BulkAccepted(BaseModel):
    job_id: str
    status: str
    total: int = Field(description="Distinct addresses: one result and one webhook each.")


def install_bulk_routes(app: FastAPI, service: Any, api_key: Any, errors: dict) -> None:
    jobs = service.jobs

    def own_job(job_id: str, key: ApiKey) -> dict[str, Any]:
        job = jobs.describe(job_id)
        if job is None or job["key_id"] != key.key_id:  # another key's job does not exist
            raise ApiError(404, f"no bulk job {job_id}")
        job.pop("key_id")
        return job

    @app.post("/api/v1/bulk/verify", status_code=202, response_model=BulkAccepted,
              responses=errors, tags=["bulk"], summary="Verify a list in the background.")
    async def bulk_verify(body: BulkRequest, key: Annotated[ApiKey, Depends(api_key)]) -> dict[str, Any]:
        """Returns at once with the job id. Poll `GET /api/v1/bulk/{job_id}`, page through
        `GET /api/v1/bulk/{job_id}/results`, or receive one signed webhook per address."""
        limit = service.serve.max_bulk_addresses
        if len(body.emails) > limit:
            raise ApiError(413, f"{len(body.emails)} addresses; at most {limit} per job")
        if not body.emails:
            raise ApiError(422, "emails is empty")
        if body.webhook_url is not None and not service.engine_settings.allow_private_networks:
            # issue 9: an API client must not point the service at the operator's network
            why = await url_unroutable_reason(body.webhook_url)
            if why is not None:
                raise ApiError(
                    422,
                    f"webhook_url must reach a public address ({why}); the operator may "
                    "allow private networks with MAILSIFT_ALLOW_PRIVATE_NETWORKS=true",
                )
        try:
            return jobs.submit(key, body.emails, body.webhook_url, body.webhook_secret)
        except QueueFull as exc:
            raise ApiError(503, str(exc), headers={"Retry-After": "30"}) from None
        except (ConfigError, ValueError) as exc:
            raise ApiError(422, str(exc)) from None

    @app.get("/api/v1/bulk/{job_id}", responses=errors, tags=["bulk"], summary="A job's status and counts.")
    async def bulk_status(job_id: str, key: Annotated[ApiKey, Depends(api_key)]) -> dict[str, Any]:
        return own_job(job_id, key)

    @app.get("/api/v1/bulk/{job_id}/results", responses=errors, tags=["bulk"],
             summary="A job's results so far, in submission order, paged.")
    async def bulk_results(
        job_id: str,
        key: Annotated[ApiKey, Depends(api_key)],
        offset: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    ) -> dict[str, Any]:
        job = own_job(job_id, key)
        limit = min(limit, service.serve.results_page_max)
        results = service.state.job_results(job_id, offset, limit)
        more = offset + len(results) < job["done"]
        return {
            "job_id": job_id,
            "status": job["status"],
            "total": job["total"],
            "done": job["done"],
            "offset": offset,
            "limit": limit,
            "next_offset": offset + len(results) if more else None,
            "results": results,
        }
