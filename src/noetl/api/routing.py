"""How the API's routes read JSON and document their errors.

`JsonRoute` reads every request body as JSON with orjson (as the hot routes do), whatever its
content type says: `curl -d` sends JSON as a form, and the API has no form routes. Invalid JSON
is a 400; text that is not valid Unicode is a 422 (`noetl.api.errors`).

`errors(...)` documents the `{"error", "status"}` answers a route can give, so the OpenAPI
document lists every status code the server answers.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict

from noetl.api.types import MAX_ID
from noetl.errors import NotFound

_JSON = b"application/json"


class ErrorBody(BaseModel):
    """Every failure: the message and the HTTP status."""

    model_config = ConfigDict(extra="forbid")
    error: str
    status: int


_WHAT = {
    400: "The body is not valid JSON.",
    401: "No valid API token (Authorization: Bearer <token>).",
    403: "The token's scope does not allow this, or the resource is not this caller's.",
    404: "Not found.",
    409: "Conflict: claimed by another worker, ended, or an id used by another execution.",
    413: "The request body is larger than the server's cap.",
    422: "The request is well-formed JSON but its content is not acceptable.",
    503: "The store does not answer.",
}
AUTH_ERRORS = (401, 403)


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The `responses` of a route that can fail with `codes` (401/403 always: every /api route
    needs a token)."""
    return {code: {"model": ErrorBody, "description": _WHAT[code]} for code in sorted({*AUTH_ERRORS, *codes})}


BODY_ERRORS = (400, 413, 422)


class JsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = orjson.loads(await self.body())
        return self._json


class JsonRoute(APIRoute):
    """A route whose body is always read as JSON (with orjson). Answers leave out the optional
    fields the route did not set (`rejected`, `stop`, a credential's `data`...)."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        kwargs["response_model_exclude_unset"] = True
        super().__init__(path, endpoint, **kwargs)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            scope = request.scope
            if scope.get("method") not in ("GET", "HEAD"):
                scope = {**scope, "headers": _as_json(scope.get("headers") or [])}
            return await handler(JsonRequest(scope, request.receive))

        return route


def _as_json(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    kept = []
    for key, value in headers:
        if key == b"content-type":
            media = value.split(b";", 1)[0].strip().lower()
            if media == _JSON or media.endswith(b"+json"):
                return headers
            continue
        kept.append((key, value))
    kept.append((b"content-type", _JSON))
    return kept


def in_range(value: int, missing: str) -> int:
    """An id from a path or query: one beyond int64 names nothing (404 `missing`), which is what
    a reader comparing ids as doubles near 2^63 expects too."""
    if value > MAX_ID:
        raise NotFound(missing)
    return value


def api_router(prefix: str, tag: str) -> APIRouter:
    return APIRouter(prefix=prefix, tags=[tag], route_class=JsonRoute)
