"""One shape for every error the API answers: ``{"error": why, "parameter": name}``."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from llamonitor.server._store import QueryTimeout


class ErrorBody(BaseModel):
    error: str
    parameter: str | None = None


class BadParameter(ValueError):
    """A request parameter the API cannot use: answered 400, naming it."""

    def __init__(self, parameter: str, message: str) -> None:
        self.parameter = parameter
        super().__init__(f"{parameter}: {message}")


class NotFound(LookupError):
    """Answered 404 with the message."""


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "A parameter is invalid (the body names it)."},
    401: {"model": ErrorBody, "description": "A token is required and was not given."},
    413: {"model": ErrorBody, "description": "The request body is too large."},
    414: {"model": ErrorBody, "description": "The query string is too long (8 KB at most)."},
    421: {"model": ErrorBody, "description": "The Host is not this machine (loopback only)."},
    503: {"model": ErrorBody, "description": "The query ran past the server's time bound."},
}


def _json(status: int, error: str, parameter: str | None = None) -> JSONResponse:
    return JSONResponse(
        {"error": error, "parameter": parameter},
        status_code=status,
        headers={"cache-control": "no-store"},
    )


async def _validation(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {}
    loc = [str(p) for p in first.get("loc", ()) if p not in ("query", "path", "body", "header")]
    name = ".".join(loc) or None
    message = str(first.get("msg", "invalid request"))
    return _json(400, f"{name}: {message}" if name else message, name)


async def _bad(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, BadParameter)
    return _json(400, str(exc), exc.parameter)


async def _missing(_request: Request, exc: Exception) -> JSONResponse:
    return _json(404, str(exc.args[0]) if exc.args else "not found")


async def _timeout(_request: Request, exc: Exception) -> JSONResponse:
    return _json(503, str(exc))


HANDLERS = {
    RequestValidationError: _validation,
    BadParameter: _bad,
    NotFound: _missing,
    QueryTimeout: _timeout,
}
