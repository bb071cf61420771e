"""One JSON shape for every error the HTTP service answers with."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pgqueue.errors import CapacityExceeded, InvalidTask, QueueClosed, UnknownKind
from pgqueue.store.unavailable import is_unavailable

log = logging.getLogger("pgqueue.http")


class ErrorBody(BaseModel):
    """Every error response: ``error`` is a human sentence (the seed's field), ``code`` a
    stable machine word; ``task_id`` names the existing task of a duplicate key."""

    model_config = ConfigDict(extra="forbid")

    error: str
    code: str
    task_id: int | None = None
    details: list[dict[str, Any]] | None = None


class ApiError(Exception):
    """Raised by routes and dependencies; rendered as :class:`ErrorBody`."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        task_id: int | None = None,
        details: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.task_id = task_id
        self.details = details
        self.headers = headers


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    task_id: int | None = None,
    details: list[dict[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = ErrorBody(error=message, code=code, task_id=task_id, details=details)
    return JSONResponse(
        body.model_dump(exclude_none=True, mode="json"), status_code=status, headers=headers
    )


_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "unprocessable",
    429: "capacity_exceeded",
    500: "internal_error",
    503: "unavailable",
}


def _clean_details(errors: Any) -> list[dict[str, Any]]:
    """Pydantic's error list without the input echo (it may be huge or hold NULs)."""
    cleaned = []
    for error in errors:
        loc = [str(part) for part in error.get("loc", ())]
        cleaned.append({"loc": loc, "msg": str(error.get("msg", "")), "type": error.get("type")})
    return cleaned


def _first_message(details: list[dict[str, Any]]) -> str:
    if not details:
        return "invalid request"
    first = details[0]
    loc = ".".join(part for part in first["loc"] if part not in ("body", "query", "path"))
    if first.get("type") == "json_invalid":
        return "invalid JSON"
    return f"{loc}: {first['msg']}" if loc else str(first["msg"])


def install_error_handlers(app: FastAPI) -> None:
    """Render every error (ours, FastAPI's validation, Starlette's 404/405) as ErrorBody."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(
            exc.status,
            exc.code,
            exc.message,
            task_id=exc.task_id,
            details=exc.details,
            headers=exc.headers,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = _clean_details(exc.errors())
        return error_response(400, "invalid_request", _first_message(details), details=details)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, "error")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        return error_response(exc.status_code, code, message, headers=exc.headers)

    @app.exception_handler(UnknownKind)
    async def _unknown_kind(request: Request, exc: UnknownKind) -> JSONResponse:
        return error_response(404, "unknown_kind", str(exc))

    @app.exception_handler(InvalidTask)
    async def _invalid_task(request: Request, exc: InvalidTask) -> JSONResponse:
        return error_response(400, "invalid_task", str(exc))

    @app.exception_handler(CapacityExceeded)
    async def _capacity(request: Request, exc: CapacityExceeded) -> JSONResponse:
        return error_response(429, "capacity_exceeded", str(exc))

    @app.exception_handler(QueueClosed)
    async def _closed(request: Request, exc: QueueClosed) -> JSONResponse:
        return error_response(503, "unavailable", "the queue is shutting down")


class UnexpectedErrorMiddleware:
    """Answer an exception no handler took with the error shape: 503 when the database is
    unreachable, else 500 (logged once, with its traceback)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception as exc:
            if started:
                raise
            if is_unavailable(exc):
                log.warning("database unavailable: %s: %s", type(exc).__name__, exc)
                response = error_response(503, "unavailable", "the database is unavailable")
            else:
                log.error("unexpected error on %s %s", scope["method"], scope["path"],
                          exc_info=exc)  # fmt: skip
                response = error_response(500, "internal_error", "internal error")
            await response(scope, receive, send)


__all__ = [
    "ApiError",
    "ErrorBody",
    "HTTPException",
    "UnexpectedErrorMiddleware",
    "error_response",
    "install_error_handlers",
]
