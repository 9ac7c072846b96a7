"""Error bodies: every failure answers `{"error": "<message>", "status": <code>}`.

`ValidationFailed` and invalid playbooks are 422, `NotFound` 404, `Conflict` 409, malformed JSON 400,
any other NoETL error (and any bug) 500.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from noetl.api.types import ID_ERROR
from noetl.errors import Conflict, Forbidden, NoetlError, NotFound, PlaybookError, ValidationFailed
from noetl.secrets import masker

log = logging.getLogger(__name__)


class MalformedRequest(NoetlError):
    """The request body is not valid JSON (HTTP 400)."""


class Unavailable(NoetlError):
    """A dependency (the store) does not answer (HTTP 503)."""


def status_of(exc: BaseException) -> int:
    if isinstance(exc, (ValidationFailed, PlaybookError)):
        return 422
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, Forbidden):
        return 403
    if isinstance(exc, Conflict):
        return 409
    if isinstance(exc, MalformedRequest):
        return 400
    if isinstance(exc, Unavailable):
        return 503
    return 500


def error_body(message: str, status: int) -> dict[str, Any]:
    """The `{"error", "status"}` body, secrets masked."""
    return {"error": masker.mask_text(message), "status": status}


def error_response(message: str, status: int) -> JSONResponse:
    return JSONResponse(error_body(message, status), status_code=status)


async def _noetl_error(request: Request, exc: Exception) -> JSONResponse:
    status = status_of(exc)
    if status >= 500:
        log.error("%s %s failed: %s", request.method, request.url.path, exc)
    return error_response(str(exc), status)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors: list[Any] = list(exc.errors())
    for error in errors:
        if isinstance(error, dict) and error.get("type") == "json_invalid":
            detail = str((error.get("ctx") or {}).get("error") or error.get("msg") or "JSON decode error")
            return error_response(*json_error(detail))
    return error_response(describe(errors), 422)


def json_error(detail: str) -> tuple[str, int]:
    """The message and status for a body that does not decode: 422 when its text is not valid
    Unicode (a lone surrogate, bytes that are not UTF-8), 400 for any other JSON error."""
    if "surrogate" in detail or "UTF-8" in detail:
        return f"The request body holds text that is not valid Unicode: {detail}", 422
    return f"Invalid JSON body: {detail}", 400


def describe(errors: Sequence[Any]) -> str:
    """One message for pydantic's validation errors: `field: what is wrong`, joined by '; '."""
    return "; ".join(_describe(e) for e in errors) or "Invalid request"


_LOCATIONS = frozenset({"body", "query", "path"})


def _describe(error: Any) -> str:
    if not isinstance(error, dict):
        return str(error)
    loc = [str(part) for part in error.get("loc", ()) if part not in _LOCATIONS]
    if error.get("type") == ID_ERROR:
        field = next((part for part in reversed(loc) if not part.isdigit()), "id")
        detail = str(error.get("msg") or "")
        return f"Invalid {field}" + (f": {detail}" if detail else "")
    message = str(error.get("msg") or "invalid value").removeprefix("Value error, ")
    where = ".".join(loc)
    return f"{where}: {message}" if where else message


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    response = error_response(str(exc.detail), exc.status_code)
    if exc.headers:
        response.headers.update(exc.headers)
    if exc.status_code == 405:  # every method of the path, not only those of the route tried first
        response.headers["allow"] = ", ".join(allowed_methods(request))
    return response


def allowed_methods(request: Request) -> list[str]:
    """The methods the app serves on the request's path (its literal routes first: a path like
    `/api/commands/claim` is no `/api/commands/{event_id}`)."""
    path = request.url.path
    routes = [r for r in request.app.routes if getattr(r, "include_in_schema", True)]
    matching = [r for r in routes if getattr(r, "path", None) == path] or [
        r for r in routes if getattr(r, "path_regex", None) is not None and r.path_regex.match(path)
    ]
    return sorted({method for route in matching for method in getattr(route, "methods", None) or ()})


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("%s %s crashed", request.method, request.url.path)
    return error_response(f"Internal server error: {type(exc).__name__}: {exc}", 500)


def install(app: FastAPI) -> None:
    app.add_exception_handler(NoetlError, _noetl_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
