"""One error shape for the whole API: ``{"error": {"code", "message"}}`` with a 4xx/5xx status."""
from __future__ import annotations

from typing import TYPE_CHECKING

from inference.errors import InputError

if TYPE_CHECKING:  # FastAPI only where an app is built: the worker and the CLI start without it
    from fastapi import FastAPI


class DependencyError(RuntimeError):
    """The database, Redis or storage cannot be used; the message says how to fix it."""


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


ERROR_ANSWERS = {
    400: "malformed request", 401: "missing, unknown or revoked API key", 402: "no credit left",
    403: "the key may not do this", 404: "no such thing for this key's tenant",
    409: "the job is already final", 413: "request body over its limit (checked before it is read)",
    415: "not a JPEG, PNG or WebP photo",
    422: "invalid request (field rules, photo_url rules: http(s), public host, no credentials)",
    429: "over the key's rate limit; see Retry-After", 503: "a dependency (Redis, database, storage) is down",
}


def documented(*statuses: int) -> dict[int | str, dict]:
    """OpenAPI ``responses`` for these error statuses, so generated clients know every answer."""
    from service.schemas import ErrorOut

    return {status: {"model": ErrorOut, "description": ERROR_ANSWERS[status]} for status in statuses}


def not_found(what: str) -> ApiError:
    return ApiError(404, "not_found", f"{what} not found")


def error_body(code: str, message: str) -> dict:
    return {"error": {"code": code, "message": message}}


def validation_message(errors) -> str:
    """pydantic's errors as one line: ``field: problem; ...``."""
    parts = []
    for err in errors:
        where = ".".join(str(x) for x in err.get("loc", ()) if x not in ("body", "query", "path"))
        parts.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
    return "; ".join(parts) or "invalid request"


def install(app: FastAPI) -> None:
    from fastapi import Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError):
        return JSONResponse(error_body(exc.code, exc.message), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(InputError)
    async def _input_error(_: Request, exc: InputError):
        return JSONResponse(error_body(exc.code, str(exc)), status_code=422)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError):
        return JSONResponse(error_body("invalid_request", validation_message(exc.errors())), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized",
                413: "request_too_large"}.get(exc.status_code, "http_error")
        return JSONResponse(error_body(code, str(exc.detail)), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception):
        import logging

        logging.getLogger("avatar.api").exception("unhandled error")
        return JSONResponse(error_body("internal_error", "internal server error"), status_code=500)
