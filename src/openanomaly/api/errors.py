"""The one place where core errors become HTTP status codes."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from openanomaly.errors import (
    ConfigError,
    Conflict,
    EngineError,
    EngineUnavailable,
    NoData,
    NotFound,
    OpenAnomalyError,
    PipelineBusy,
    QueryError,
    StoreError,
    StoreUnavailable,
    TsdbUnavailable,
    WriteRejected,
)

STATUS: tuple[tuple[type[OpenAnomalyError], int], ...] = (
    (NotFound, 404),
    (Conflict, 409),
    (PipelineBusy, 409),
    (ConfigError, 422),
    (QueryError, 422),
    (EngineUnavailable, 503),
    (EngineError, 422),
    (NoData, 422),
    (WriteRejected, 502),
    (TsdbUnavailable, 503),
    (StoreUnavailable, 503),
    (StoreError, 500),
    (OpenAnomalyError, 500),
)


def install(app: FastAPI) -> None:
    @app.exception_handler(OpenAnomalyError)
    async def _handle(_: Request, exc: OpenAnomalyError) -> JSONResponse:
        status = next(code for cls, code in STATUS if isinstance(exc, cls))
        return JSONResponse({"error": type(exc).__name__, "detail": str(exc)}, status_code=status)
