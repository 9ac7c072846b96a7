"""Who may call the API: bearer tokens with scopes, checked in front of every route.

Every `/api/*` route needs `Authorization: Bearer <token>` (the web UI sends the same token as
the `noetl_token` cookie); without a valid one the answer is 401, with a token whose scope is
too small 403, both as `{"error", "status"}`. `/health`, `/api/health` and the API docs stay
open. The web UI's pages (`/ui/*`) and `/metrics` need a `read` token; a browser without one is
sent to `/ui/login`, and `/metrics` is open on a server bound to loopback. Scopes (`noetl.tokens`): `read` for GET routes (and the two catalog reads upstream spells
as POST), `worker` for what a worker does (register and heartbeat, claim, report events, fetch
the secrets of a command it holds, start the child of a pipeline task), `admin` for the rest.

A verified token is remembered for CACHE_SECONDS, so the requests workers make for every command
cost no store lookup; a revoked token stops working within that time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import orjson

from noetl.api.errors import error_body
from noetl.engine.events import utcnow
from noetl.errors import Conflict, ValidationFailed
from noetl.store.ports import TokenRecord, TokenStore
from noetl.tokens import ADMIN, READ, SCOPES, WORKER, allows, new_token, same_token, token_hash

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

CACHE_SECONDS = 10.0
COOKIE = "noetl_token"
OPEN_PATHS = frozenset(
    {"/health", "/api/health", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json", "/ui/login"}
)
# The docs' and the web UI's static assets (no data in them).
_OPEN_PREFIXES = ("/docs/assets/", "/ui/static/")
# (method, path prefix) a worker token may call; matched before the read/admin rule.
_WORKER_ROUTES = (
    ("POST", "/api/events"),
    ("POST", "/api/commands/"),
    ("GET", "/api/commands/"),
    ("POST", "/api/worker/pool/"),
    ("DELETE", "/api/worker/pool/"),
    ("POST", "/api/execute"),  # children of pipeline tasks only (checked by the route)
)
_READ_POSTS = frozenset({"/api/catalog/list", "/api/catalog/resource"})
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.@")


@dataclass(frozen=True)
class Principal:
    """Who made a request: the token's name and scope."""

    name: str
    scope: str

    def may(self, needed: str) -> bool:
        return allows(self.scope, needed)


def required_scope(method: str, path: str) -> str | None:
    """The scope a request needs; None for the open paths."""
    if path in OPEN_PATHS or path.startswith(_OPEN_PREFIXES):
        return None
    if path == "/metrics" or path == "/ui" or path.startswith("/ui/"):
        return READ  # the web UI's pages and Prometheus scrapes (see AuthMiddleware.open_paths)
    if not path.startswith("/api/"):
        return None
    if method in ("GET", "HEAD"):
        return READ
    if method == "POST" and path in _READ_POSTS:
        return READ
    for verb, prefix in _WORKER_ROUTES:
        if method == verb and (path == prefix.rstrip("/") or path.startswith(prefix)):
            return WORKER
    return ADMIN


class Authenticator:
    def __init__(self, store: TokenStore, admin_token: str) -> None:
        if not admin_token:
            raise ValueError("the admin token must not be empty")
        self.store = store
        self._admin = admin_token
        self._cache: dict[str, tuple[float, Principal | None]] = {}
        self._guard = threading.Lock()

    def verify(self, token: str) -> Principal | None:
        if same_token(token, self._admin):
            return Principal("admin", ADMIN)
        digest = token_hash(token)
        now = time.monotonic()
        with self._guard:
            cached = self._cache.get(digest)
        if cached is not None and now - cached[0] < CACHE_SECONDS:
            return cached[1]
        record = self.store.token_by_hash(digest)
        principal = Principal(record.name, record.scope) if record and record.revoked_at is None else None
        with self._guard:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[digest] = (now, principal)
        return principal

    def create(self, name: str, scope: str) -> tuple[str, TokenRecord]:
        """A new token (shown once) and its stored record."""
        if scope not in SCOPES:
            raise ValidationFailed(f"unknown scope {scope!r}: use one of {', '.join(SCOPES)}")
        if not name or len(name) > 100 or not set(name) <= _NAME_CHARS:
            raise ValidationFailed("a token name is 1-100 letters, digits, '-', '_', '.' or '@'")
        if name == "admin":
            raise Conflict("'admin' names the server's admin token")
        token = new_token()
        record = TokenRecord(name=name, scope=scope, token_hash=token_hash(token), created_at=utcnow())
        self.store.put_token(record)
        return token, record

    def revoke(self, name: str) -> bool:
        revoked = self.store.revoke_token(name)
        if revoked:
            with self._guard:
                self._cache.clear()
        return revoked


class AuthMiddleware:
    """Checks the token of every request that needs one; the principal goes to
    `scope["state"]["principal"]` (`request.state.principal` in a route)."""

    def __init__(
        self, app: ASGIApp, authenticator: Authenticator, open_paths: frozenset[str] = frozenset()
    ) -> None:
        self.app = app
        self.authenticator = authenticator
        self.open_paths = open_paths  # `/metrics` on a server bound to loopback

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or await self.admit(scope, send):
            await self.app(scope, receive, send)

    async def admit(self, scope: Scope, send: Send) -> bool:
        """Whether the request may go on (its principal then in `scope["state"]`); else it has
        been answered (401, 403, or the UI's login page)."""
        path = scope.get("path", "")
        needed = None if path in self.open_paths else required_scope(scope.get("method", ""), path)
        if needed is None:
            return True
        token = bearer_token(scope)
        principal = self.authenticator.verify(token) if token else None
        if principal is None and scope.get("method") == "GET" and (path == "/ui" or path.startswith("/ui/")):
            await _to_login(send, scope)  # a browser without the cookie: the login page
            return False
        if principal is None:
            message = "a valid API token is required (Authorization: Bearer <token>)"
            await _refuse(send, 401, message, {"www-authenticate": "Bearer"})
            return False
        if not principal.may(needed):
            await _refuse(
                send, 403, f"token '{principal.name}' ({principal.scope}) may not do this ({needed} needed)"
            )
            return False
        scope.setdefault("state", {})["principal"] = principal
        return True


def bearer_token(scope: Scope) -> str | None:
    """The token of a request: `Authorization: Bearer`, else the UI's cookie."""
    cookie_header = b""
    for key, value in scope.get("headers") or ():
        if key == b"authorization":
            kind, _, token = bytes(value).decode("latin-1").partition(" ")
            if kind.lower() == "bearer" and token.strip():
                return str(token.strip())
        elif key == b"cookie":
            cookie_header = value
    if cookie_header:
        for part in cookie_header.decode("latin-1").split(";"):
            name, _, value = part.strip().partition("=")
            if name == COOKIE and value:
                return str(value)
    return None


async def _to_login(send: Send, scope: Scope) -> None:
    """303 to `/ui/login`, keeping where the browser was going (and a `token` it carries)."""
    from urllib.parse import parse_qsl, urlencode

    query = bytes(scope.get("query_string") or b"").decode("latin-1")
    params = dict(parse_qsl(query))
    token = params.pop("token", None)
    target = scope.get("path", "/ui") + (f"?{urlencode(params)}" if params else "")
    login = "/ui/login?" + urlencode({"next": target, **({"token": token} if token else {})})
    headers = [(b"location", login.encode("latin-1")), (b"content-length", b"0")]
    await send({"type": "http.response.start", "status": 303, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


def principal_of(scope_state: Any) -> Principal | None:
    found = getattr(scope_state, "principal", None)
    return found if isinstance(found, Principal) else None


async def _refuse(send: Send, status: int, message: str, headers: dict[str, str] | None = None) -> None:
    body = orjson.dumps(error_body(message, status))
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
