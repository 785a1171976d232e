"""Every error the service answers is JSON: ``{"error": <word>, "detail": <text or list>}``.

=====  ======================  ==============================================
400    ``bad_request``         the body is not JSON
401    ``unauthorized``        no key, an unknown key, a revoked key
404    ``not_found``           no such job (or not this key's)
413    ``payload_too_large``   body over ``MAILSIFT_SERVE_MAX_BODY_BYTES``, or a bulk
                               job over ``MAILSIFT_SERVE_MAX_BULK_ADDRESSES``
422    ``invalid_request``     JSON of the wrong shape (``detail`` lists the fields)
429    ``rate_limited``        the key's requests per minute are used up (``Retry-After``)
503    ``unavailable``         too many bulk jobs waiting (``Retry-After``)
=====  ======================  ==============================================
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.limits import BodyTooLarge

__all__ = ["ApiError", "install_error_handlers"]

log = logging.getLogger("mailsift.serve")

_WORDS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    422: "invalid_request",
    429: "rate_limited",
    500: "internal_error",
    503: "unavailable",
}


class ApiError(StarletteHTTPException):
    """An HTTP error with the service's JSON body."""

    def __init__(self, status: int, detail: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(status_code=status, detail=detail, headers=headers)


def error_response(status: int, detail: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        {"error": _WORDS.get(status, "error"), "detail": detail}, status_code=status, headers=headers
    )


def _field_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    # never echo the input back (it may be megabytes, or somebody's secret)
    return [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in exc.errors()
    ]


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if isinstance(exc.__cause__, BodyTooLarge):  # FastAPI wraps errors while reading a body
            return error_response(413, str(exc.__cause__))
        return error_response(exc.status_code, exc.detail, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _field_errors(exc)
        bad_json = [e for e in errors if e["type"] == "json_invalid"]
        if bad_json:
            return error_response(400, "the request body is not valid JSON: " + bad_json[0]["msg"])
        return error_response(422, errors)

    @app.exception_handler(BodyTooLarge)
    async def too_large(request: Request, exc: BodyTooLarge) -> JSONResponse:
        return error_response(413, "the request body is too large")

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error on %s: %s", request.url.path, type(exc).__name__, exc_info=exc)
        return error_response(500, "internal error; see the service log")
