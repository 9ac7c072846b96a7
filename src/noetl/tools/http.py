"""The `http` tool: one request per call, on a shared httpx.AsyncClient.

Config (already rendered): `method` (GET), `url` (alias `endpoint`), `headers`, `params`, a body from
`json`, else `body` (a string is sent raw, anything else as JSON), else `form` (urlencoded), else
`payload`/`data` (JSON; for GET/HEAD/DELETE/OPTIONS without `params` a mapping becomes the query),
`timeout`/`timeout_seconds` (30 s), `verify`/`verify_ssl` (true), `follow_redirects` (true),
`response_type` (`json` default, `text`, `binary`) and `auth` (a credential alias, or a mapping).

Result data: `{status_code, headers, url, elapsed, body, data}`; `body` and `data` both hold the parsed
JSON when the response is JSON, else the text. Non-2xx responses and transport failures come back as
`status="error"` results (never raised), with an error kind (`noetl.tools.failure`): `server_error` (5xx),
`rate_limit` (429), `auth` (401/403), `not_found` (404), `client_error` (other 4xx), `timeout`, `connection`
(refused, DNS, reset) or `tool` (a bad config); `retryable` follows the kind.
"""

from __future__ import annotations

import asyncio
import base64
import html
import json
import re
import time
import weakref
from collections.abc import Mapping
from typing import Any

import httpx

from noetl.credtypes import CREDENTIAL_TYPES, credential_type
from noetl.errors import CredentialError, MissingCredential
from noetl.secrets import masker
from noetl.tools import failure
from noetl.tools.base import ToolContext, ToolResult, failed

DEFAULT_TIMEOUT = 30.0
_BODYLESS_METHODS = frozenset({"GET", "HEAD", "DELETE", "OPTIONS"})
_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})

# One client per event loop (and TLS-verification setting): httpx clients are bound to the loop
# that first used them.
_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[bool, httpx.AsyncClient]] = (
    weakref.WeakKeyDictionary()
)


def _client(verify: bool) -> httpx.AsyncClient:
    loop = asyncio.get_running_loop()
    per_loop = _clients.get(loop)
    if per_loop is None:
        per_loop = {}
        _clients[loop] = per_loop
    client = per_loop.get(verify)
    if client is None or client.is_closed:
        client = httpx.AsyncClient(
            verify=verify,
            timeout=DEFAULT_TIMEOUT,
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
        )
        per_loop[verify] = client
    return client


async def close_clients() -> None:
    """Close the shared clients of the running event loop (call at worker shutdown)."""
    loop = asyncio.get_running_loop()
    per_loop = _clients.pop(loop, {})
    for client in per_loop.values():
        await client.aclose()


class HttpConfigError(Exception):
    """The tool config or its credential cannot be used; the message is for the user."""


def _as_bool(value: Any, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("true", "yes", "1", "on"):
            return True
        if text in ("false", "no", "0", "off", ""):
            return False
        raise HttpConfigError(f"expected true or false, got {value!r}")
    return bool(value)


def _scalar_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _string_map(value: Any, what: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise HttpConfigError(f"'{what}' must be a mapping, got {type(value).__name__}")
    return {str(k): _scalar_text(v) for k, v in value.items() if v is not None}


def _params(value: Any) -> list[tuple[str, str]]:
    """Query parameters: numbers/bools stringified, None dropped, lists repeated."""
    if value is None:
        return []
    if not isinstance(value, Mapping):
        raise HttpConfigError(f"'params' must be a mapping, got {type(value).__name__}")
    out: list[tuple[str, str]] = []
    for key, item in value.items():
        if item is None:
            continue
        if isinstance(item, (list, tuple)):
            out.extend((str(key), _scalar_text(v)) for v in item if v is not None)
        else:
            out.append((str(key), _scalar_text(item)))
    return out


def _timeout(config: Mapping[str, Any], ctx: ToolContext) -> float:
    raw = config.get("timeout_seconds", config.get("timeout"))
    if raw is None or raw == "":
        seconds = DEFAULT_TIMEOUT
    else:
        try:
            seconds = float(raw)
        except (TypeError, ValueError):
            raise HttpConfigError(f"'timeout' must be a number of seconds, got {raw!r}") from None
        if seconds <= 0:
            raise HttpConfigError(f"'timeout' must be positive, got {raw!r}")
    if ctx.timeout is not None and ctx.timeout > 0:
        seconds = min(seconds, ctx.timeout)
    return seconds


EXCERPT_LIMIT = 300  # characters of a response body quoted in an error line
_HTML_HIDDEN = re.compile(r"<(script|style|head)\b.*?</\1\s*>|<!--.*?-->", re.IGNORECASE | re.DOTALL)
_HTML_TAG = re.compile(r"<[^>]*>")
_HTML_START = re.compile(r"\s*(<!doctype html|<html|<head|<body)", re.IGNORECASE)


def excerpt(text: str, content_type: str = "", limit: int = EXCERPT_LIMIT) -> str:
    """A short, readable excerpt of a response body for an error line: an HTML page loses its
    tags, scripts and styles (entities decoded); whitespace is collapsed; at most `limit`
    characters (an ellipsis marks a cut)."""
    if "html" in content_type.lower() or _HTML_START.match(text):
        text = html.unescape(_HTML_TAG.sub(" ", _HTML_HIDDEN.sub(" ", text)))
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _fmt_seconds(seconds: float) -> str:
    return f"{seconds:g} s"


def _has_header(headers: Mapping[str, str], name: str) -> bool:
    lower = name.lower()
    return any(k.lower() == lower for k in headers)


_TOKEN_EXAMPLE = '{"token": "..."}'


def _resolve_credential(alias: str, ctx: ToolContext) -> Mapping[str, Any]:
    if ctx.credentials is None:
        raise HttpConfigError(f"credential '{alias}' cannot be resolved: no credential store is available")
    try:
        return ctx.credentials.resolve(alias)
    except MissingCredential as exc:
        raise HttpConfigError(exc.advice("bearer", _TOKEN_EXAMPLE)) from None
    except (CredentialError, LookupError) as exc:
        if isinstance(exc, LookupError) or "not found" in str(exc).lower():  # another resolver's
            raise HttpConfigError(MissingCredential(alias).advice("bearer", _TOKEN_EXAMPLE)) from None
        raise HttpConfigError(f"credential '{alias}' could not be loaded: {exc}") from None


def _apply_auth(auth: Any, ctx: ToolContext, headers: dict[str, str]) -> httpx.BasicAuth | None:
    """Turn `auth` (alias or mapping) into headers or basic auth; secrets go to the masker."""
    if auth is None or auth == "" or auth == {}:
        return None
    alias: str | None = None
    overrides: Mapping[str, Any] = {}
    if isinstance(auth, str):
        alias = auth
        cred = _resolve_credential(alias, ctx)
        ctype = str(cred.get("type") or "").lower()
        data: Mapping[str, Any] = cred.get("data") or {}
    elif isinstance(auth, Mapping):
        if isinstance(auth.get("credential"), str):
            # `{type: bearer, credential: alias, header: ...}`: the alias holds the secret.
            alias = str(auth["credential"])
            cred = _resolve_credential(alias, ctx)
            ctype = str(auth.get("type") or cred.get("type") or "").lower()
            data = cred.get("data") or {}
            overrides = auth
        elif isinstance(auth.get("data"), Mapping):
            ctype = str(auth.get("type") or "").lower()
            data = auth["data"]
        else:
            ctype = str(auth.get("type") or "").lower()
            data = auth
    else:
        raise HttpConfigError(f"'auth' must be a credential name or a mapping, got {type(auth).__name__}")
    if not isinstance(data, Mapping):
        raise HttpConfigError(f"credential '{alias}' has no data mapping")
    who = f"credential '{alias}'" if alias else "auth"

    def pick(*keys: str) -> Any:
        for key in keys:
            value = data.get(key)
            if value not in (None, ""):
                return value
        return None

    canonical = credential_type(ctype)
    if canonical == "bearer":
        token = pick("token", "access_token", "bearer_token")
        if token is None:
            raise HttpConfigError(f"{who} of type '{ctype}' has no 'token' in its data")
        masker.add(token)
        if not _has_header(headers, "Authorization"):
            headers["Authorization"] = f"Bearer {token}"
        return None
    if canonical == "api_key":
        value = pick("api_key", "key", "token", "value")
        if value is None:
            raise HttpConfigError(f"{who} of type 'api_key' has no 'api_key' in its data")
        masker.add(value)
        header = str(overrides.get("header") or data.get("header") or data.get("header_name") or "X-API-Key")
        if not _has_header(headers, header):
            headers[header] = str(value)
        return None
    if canonical == "basic":
        username = overrides.get("username") or pick("username", "user", "db_user")
        password = pick("password", "db_password")
        if username is None or password is None:
            raise HttpConfigError(f"{who} of type 'basic' needs 'username' and 'password' in its data")
        masker.add(password)
        # The header value is the base64 of `user:password`: an echoing server returns it.
        masker.add(base64.b64encode(f"{username}:{password}".encode()).decode("ascii"))
        return httpx.BasicAuth(str(username), str(password))
    shown = ctype or "(none)"
    raise HttpConfigError(
        f"{who} has type '{shown}', which the http tool cannot use (supported: "
        f"{', '.join(t for t, tools in CREDENTIAL_TYPES.items() if 'http' in tools)})"
    )


def _body_kwargs(config: Mapping[str, Any], method: str) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """httpx keyword arguments for the body, plus query params taken from `data` on GET-like calls."""
    if config.get("json") is not None:
        return {"json": config["json"]}, []
    body = config.get("body")
    if body is not None:
        if isinstance(body, (str, bytes)):
            return {"content": body}, []
        return {"json": body}, []
    form = config.get("form")
    if form is not None:
        if not isinstance(form, Mapping):
            raise HttpConfigError(f"'form' must be a mapping, got {type(form).__name__}")
        return {"data": _string_map(form, "form")}, []
    for key in ("payload", "data"):
        payload = config.get(key)
        if payload is None:
            continue
        if method in _BODYLESS_METHODS and isinstance(payload, Mapping) and config.get("params") is None:
            return {}, _params(payload)
        if isinstance(payload, (str, bytes)):
            return {"content": payload}, []
        return {"json": payload}, []
    return {}, []


def _parse_body(response: httpx.Response, response_type: str) -> Any:
    if response_type == "binary":
        raw = response.content
        return {"base64": base64.b64encode(raw).decode("ascii"), "size": len(raw)}
    text = response.text
    if response_type == "text":
        return text
    content_type = response.headers.get("content-type", "").lower()
    if not text.strip():
        return None if "json" in content_type else text
    try:
        return json.loads(text)
    except ValueError:
        return text


def _chain(exc: BaseException) -> list[BaseException]:
    """An exception and its causes (httpx hides "connection refused" a few levels down)."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _transport_error(exc: httpx.HTTPError, method: str, url: str, timeout: float) -> tuple[str, str]:
    """A message a user can act on, and the failure kind."""
    detail = str(exc) or type(exc).__name__
    chain = _chain(exc)
    low = " | ".join(f"{type(e).__name__}: {e}" for e in chain).lower()
    if isinstance(exc, httpx.TimeoutException):
        phase = {
            httpx.ConnectTimeout: "connecting",
            httpx.ReadTimeout: "waiting for the response",
            httpx.WriteTimeout: "sending the request",
            httpx.PoolTimeout: "waiting for a free connection",
        }.get(type(exc))
        where = f" while {phase}" if phase else ""
        return f"request to {method} {url} timed out after {_fmt_seconds(timeout)}{where}", failure.TIMEOUT
    if isinstance(exc, (httpx.UnsupportedProtocol, httpx.InvalidURL)):
        return f"invalid URL {url!r}: {detail} (it must start with http:// or https://)", failure.TOOL
    if isinstance(exc, httpx.TooManyRedirects):
        return f"too many redirects for {method} {url}", failure.TOOL
    if isinstance(exc, httpx.ConnectError):
        if "refused" in low or "errno 111" in low:
            return f"cannot connect to {url}: connection refused (is the server running?)", failure.CONNECTION
        if any(
            s in low
            for s in (
                "name or service not known",
                "nodename nor servname",
                "getaddrinfo",
                "no address associated",
                "temporary failure in name resolution",
            )
        ):
            host = httpx.URL(url).host if url else ""
            return f"cannot connect to {url}: host '{host}' not found (DNS lookup failed)", failure.CONNECTION
        if "certificate" in low or "ssl" in low or "tls" in low:
            return (
                f"TLS error connecting to {url}: {detail} (set verify: false to skip verification)",
                failure.CONNECTION,
            )
        if "unreachable" in low:
            return f"cannot connect to {url}: network unreachable", failure.CONNECTION
        return f"cannot connect to {url}: {str(chain[-1]) or detail}", failure.CONNECTION
    if isinstance(exc, httpx.RemoteProtocolError):
        return f"{method} {url} failed: the server closed the connection ({detail})", failure.CONNECTION
    if isinstance(exc, httpx.TransportError):
        return f"{method} {url} failed: {detail}", failure.CONNECTION
    return f"{method} {url} failed: {detail}", failure.TOOL


class HttpTool:
    kind = "http"

    async def run(self, config: dict[str, Any], ctx: ToolContext) -> ToolResult:
        started = time.monotonic()
        try:
            result = await self._run(config, ctx)
        except HttpConfigError as exc:
            result = failed(failure.TOOL, f"http tool: {exc}")
        except Exception as exc:  # never raise out of a tool; report instead
            result = failed(failure.TOOL, f"http tool failed: {type(exc).__name__}: {exc}")
        result.duration_ms = (time.monotonic() - started) * 1000.0
        if result.error and masker.active:
            result.error = masker.mask_text(result.error)
        return result

    async def _run(self, config: Mapping[str, Any], ctx: ToolContext) -> ToolResult:
        url_value = config.get("url") or config.get("endpoint")
        if not url_value or not isinstance(url_value, str):
            raise HttpConfigError(
                "'url' is required (the address to call, e.g. https://api.example.com/items)"
            )
        url = url_value.strip()
        method = str(config.get("method") or "GET").strip().upper()
        if method not in _METHODS:
            raise HttpConfigError(f"unsupported method {method!r} (use one of {', '.join(sorted(_METHODS))})")
        headers = _string_map(config.get("headers"), "headers")
        params = _params(config.get("params"))
        body_kwargs, extra_params = _body_kwargs(config, method)
        params.extend(extra_params)
        timeout = _timeout(config, ctx)
        verify = _as_bool(config.get("verify", config.get("verify_ssl")), True)
        follow = _as_bool(config.get("follow_redirects"), True)
        response_type = str(config.get("response_type") or "json").lower()
        if response_type not in ("json", "text", "binary"):
            raise HttpConfigError(f"'response_type' must be json, text or binary, got {response_type!r}")
        auth_value = config.get("auth", config.get("credential"))
        basic = _apply_auth(auth_value, ctx, headers)

        client = _client(verify)
        try:
            response = await client.request(
                method,
                url,
                headers=headers,
                params=tuple(params) if params else None,
                auth=basic if basic is not None else httpx.USE_CLIENT_DEFAULT,
                follow_redirects=follow,
                timeout=timeout,
                **body_kwargs,
            )
        except httpx.HTTPError as exc:
            message, kind = _transport_error(exc, method, url, timeout)
            return failed(kind, message)

        body = _parse_body(response, response_type)
        data = {
            "status_code": response.status_code,
            "headers": dict(response.headers.items()),
            "url": str(response.url),
            "elapsed": response.elapsed.total_seconds(),
            "body": body,
            "data": body,
        }
        if response.is_success:
            return ToolResult(status="success", data=data, http_status=response.status_code)
        if response_type == "binary":
            snippet = f"<{len(response.content)} bytes>"
        else:
            snippet = excerpt(response.text, response.headers.get("content-type", ""))
        return failed(
            failure.http_kind(response.status_code) or failure.TOOL,
            f"HTTP {response.status_code} from {method} {response.request.url}: {snippet}",
            data=data,
            http_status=response.status_code,
        )
