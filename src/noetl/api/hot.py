"""The hot routes: the two requests a worker makes for every command it runs.

`POST /api/events/batch` (its outcome) and `POST /api/commands/claim` are answered here, in front
of the FastAPI app and its whole middleware stack (`in_front`), without the framework's
per-request machinery (middleware layers, routing, parameter validation, response encoding),
which costs about a millisecond of CPU a request on a small machine: as much as the
orchestration work behind it. What the stack's layers do for these two routes is done here: the
token check (`AuthMiddleware.admit`), the latency metric (`timed`), the body cap. The handlers are the routes' own
(`noetl.api.routes_events`), which validate with the same models the OpenAPI document shows
(`noetl.api.models`), so both paths answer alike, errors included (`{"error", "status"}`, as in
`noetl.api.errors`); every other request goes to the app.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio.to_thread
import orjson
from starlette.applications import Starlette

from noetl.api.errors import MalformedRequest, error_body, json_error, status_of
from noetl.api.limits import BodyTooLarge, declared_length, read_body
from noetl.errors import NoetlError, ValidationFailed

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Handler = Callable[[Any], dict[str, Any]]
Admit = Callable[[Scope, Send], Awaitable[bool]]  # False: refused (and answered)
Timed = Callable[[str, str, int, float], None]  # (method, path, status, seconds)

MAX_BODY_BYTES = 64 * 1024 * 1024  # a worker's batch of outcomes (default); larger bodies get a 413


class HotRoutes:
    """An ASGI app serving `routes` ({(method, path): handler on the decoded JSON body}) itself
    and passing everything else to `app`. Handlers are synchronous and run in the thread pool
    the app's own sync routes use."""

    def __init__(
        self,
        app: ASGIApp,
        routes: dict[tuple[str, str], Handler],
        cap: int = MAX_BODY_BYTES,
        *,
        admit: Admit | None = None,
        timed: Timed | None = None,
    ) -> None:
        """`admit`: checks the request's token first; `timed`: told how long each request took."""
        self.app = app
        self.routes = routes
        self.cap = cap
        self.admit = admit
        self.timed = timed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = (
            self.routes.get((scope.get("method", ""), scope.get("path", "")))
            if scope["type"] == "http"
            else None
        )
        if handler is None:
            await self.app(scope, receive, send)
            return
        begin = time.perf_counter()
        status = 500
        refused: list[int] = []

        async def refusing(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                refused.append(int(message["status"]))
            await send(message)

        try:
            if self.admit is None or await self.admit(scope, refusing):
                status = await self._serve(handler, scope, receive, send)
            else:
                status = refused[0] if refused else 403
        finally:
            if self.timed is not None:
                self.timed(scope["method"], scope["path"], status, time.perf_counter() - begin)

    async def _serve(self, handler: Handler, scope: Scope, receive: Receive, send: Send) -> int:
        try:
            body = await read_body(receive, self.cap, declared_length(scope))
            doc = _decode(body)
            status, answer = 200, await anyio.to_thread.run_sync(handler, doc)
        except BodyTooLarge as exc:
            status, answer = 413, error_body(str(exc), 413)
        except NoetlError as exc:
            status = status_of(exc)
            if status >= 500:
                log.error("%s %s failed: %s", scope["method"], scope["path"], exc)
            answer = error_body(str(exc), status)
        except Exception as exc:  # a bug: answered like the app's catch-all handler
            log.exception("%s %s crashed", scope["method"], scope["path"])
            status, answer = 500, error_body(f"Internal server error: {type(exc).__name__}: {exc}", 500)
        payload = orjson.dumps(answer)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})
        return status


def in_front(app: Starlette, routes: dict[tuple[str, str], Handler], cap: int, **options: Any) -> None:
    """Serve `routes` with `HotRoutes` in front of `app`'s whole middleware stack (its error
    handling, its middlewares): the stack the app builds on its first request gets wrapped."""
    build = app.build_middleware_stack

    def stack() -> ASGIApp:
        return HotRoutes(build(), routes, cap, **options)

    setattr(app, "build_middleware_stack", stack)  # noqa: B010 - an instance attribute shadows the method


def _decode(body: bytes) -> Any:
    if not body.strip():
        return None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        message, status = json_error(str(exc))
        raise (ValidationFailed(message) if status == 422 else MalformedRequest(message)) from exc
