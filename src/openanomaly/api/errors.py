"""The one place where errors become HTTP answers, all of one shape::

    {"error": {"type": "NotFound", "message": "pipeline not found: p", "details": []}}

``type`` is the core error's class name (``NotFound``, ``NoData``...), ``ValidationError`` for a
request the schema refuses (``details`` then lists each problem: ``loc``, ``msg``, ``type``), or
the HTTP reason without spaces (``NotFound``, ``MethodNotAllowed``, ``PayloadTooLarge``...).
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

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


def error_body(kind: str, message: str, details: list[Any] | None = None) -> dict[str, Any]:
    """The body of every error answer."""
    return {"error": {"type": kind, "message": message, "details": details or []}}


def http_type(status: int) -> str:
    """``MethodNotAllowed`` for 405: the reason phrase, words joined."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        return "HTTPError"
    return "".join(word[:1].upper() + word[1:] for word in phrase.replace("-", " ").split())


def install(app: FastAPI) -> None:
    """Answer every error of ``app`` with :func:`error_body`."""

    @app.exception_handler(OpenAnomalyError)
    async def _core(_: Request, exc: OpenAnomalyError) -> JSONResponse:
        status = next(code for cls, code in STATUS if isinstance(exc, cls))
        return JSONResponse(error_body(type(exc).__name__, str(exc)), status_code=status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        # The refused input is left out: it may be large, or hold a credential.
        details = [{k: e[k] for k in ("loc", "msg", "type") if k in e} for e in exc.errors()]
        message = "; ".join(
            f"{'.'.join(str(p) for p in d.get('loc', ()))}: {d.get('msg', '')}" for d in details
        )
        return JSONResponse(
            error_body("ValidationError", message or "invalid request", jsonable_encoder(details)),
            status_code=422,
        )

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        return JSONResponse(
            error_body(http_type(exc.status_code), message),
            status_code=exc.status_code,
            headers=exc.headers,
        )

    @app.exception_handler(Exception)
    async def _crash(_: Request, exc: Exception) -> JSONResponse:
        # Starlette still raises it afterwards, so the server logs the traceback.
        return JSONResponse(error_body("InternalServerError", "internal error"), status_code=500)
