"""A synchronous HTTP client for the control-plane API (`docs/api.md`), used by the CLI and by
remote workers.

Every non-2xx answer becomes a `noetl.errors.NoetlError` subclass chosen by status (403
`Forbidden`, 404 `NotFound`, 409 `Conflict`, 422 `ValidationFailed`, anything else `ServerError`)
carrying the server's `error` message. Ids in answers are strings. A server that cannot be reached raises `ServerUnreachable`.

Retries: calls that are safe to repeat (reads, claims, event posts, which the server
de-duplicates on `event_id`, and worker lifecycle upserts) are retried on transport errors and
on 502/503/504, three times with a short backoff. Calls that create something (register,
execute, cancel) are retried only when the connection could not be opened at all, since the
request then never reached the server.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import orjson

from noetl.engine.events import Event
from noetl.errors import Conflict, Forbidden, NoetlError, NotFound, ValidationFailed
from noetl.settings import DEFAULT_SERVER_URL
from noetl.status import TERMINAL
from noetl.wire import JSON_HEADERS, AsyncJsonPoster, JsonPoster

log = logging.getLogger(__name__)

RETRIES = 3
_BACKOFF = 0.2  # seconds; doubles on every retry
_RETRY_STATUSES = frozenset({502, 503, 504})
TERMINAL_STATUSES = TERMINAL  # the old name; `noetl.status.TERMINAL` is the one set


class ServerError(NoetlError):
    """The server answered with an error status (other than 404, 409 and 422)."""

    def __init__(self, message: str, *, status: int) -> None:
        self.status = status
        super().__init__(message)


class ServerUnreachable(NoetlError):
    """The server could not be reached (connection refused, DNS, timeout)."""


_JSON_HEADERS = JSON_HEADERS


def _encode(body: Any) -> bytes:
    """A request body as JSON: orjson (workers post thousands), the stdlib for what it refuses
    (integers beyond 64 bits)."""
    try:
        return orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def event_payload(event: Event) -> dict[str, Any]:
    """One entry of an `/api/events/batch` body."""
    result = event.result or {}
    return {
        "event_id": event.event_id,
        "step": event.node_name,
        "event_type": event.event_type,
        "payload": result.get("context"),
        "status": event.status,
        "meta": event.meta,
        "node_type": event.node_type,
        "parent_event_id": event.parent_event_id,
        "created_at": event.created_at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    }


class ServerClient:
    """`ServerClient(base_url, timeout=30)`; use as a context manager or call `close()`. The CLI
    passes `--server`, else NOETL_SERVER_URL, else `DEFAULT_SERVER_URL`."""

    def __init__(
        self,
        base_url: str = DEFAULT_SERVER_URL,
        *,
        timeout: float = 30,
        retries: int = RETRIES,
        transport: httpx.BaseTransport | None = None,
        token: str | None = None,
    ) -> None:
        """`token`: the API token sent with every request (`Authorization: Bearer`)."""
        self.base_url = base_url.rstrip("/")
        self.retries = retries
        auth = {"authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, transport=transport, headers=auth)
        plain = transport is None and urlsplit(self.base_url).scheme == "http"
        self._poster = JsonPoster(self.base_url, timeout, auth) if plain else None
        self._async_poster = AsyncJsonPoster(self.base_url, timeout, auth) if plain else None

    def close(self) -> None:
        self._http.close()
        if self._poster is not None:
            self._poster.close()
        if self._async_poster is not None:
            self._async_poster.close()

    def __enter__(self) -> ServerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ transport

    def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Any = None,
        idempotent: bool = True,
        light: bool = False,
    ) -> tuple[int, bytes]:
        """(status, body) of a 2xx answer; transport errors and 502/503/504 are retried (only
        connection failures for a request that is not `idempotent`). `light`: an idempotent POST
        sent over the light keep-alive connection when the server is plain HTTP (`noetl.wire.JsonPoster`)."""
        attempt = 0
        content = None if json is None else _encode(json)
        poster = self._poster if light and method == "POST" and params is None else None
        while True:
            try:
                if poster is not None:
                    status, data = poster.post(path, content or b"")
                else:
                    headers = _JSON_HEADERS if content is not None else None
                    response = self._http.request(
                        method, path, content=content, params=params, headers=headers
                    )
                    status, data = response.status_code, response.content
            except (httpx.TransportError, OSError, http.client.HTTPException) as exc:
                connect = isinstance(exc, (httpx.ConnectError, ConnectionRefusedError))
                if (idempotent or connect) and attempt < self.retries:
                    attempt += 1
                    self._pause(attempt, f"{method} {path}: {exc}")
                    continue
                raise ServerUnreachable(f"cannot reach the NoETL server at {self.base_url}: {exc}") from exc
            if status in _RETRY_STATUSES and idempotent and attempt < self.retries:
                attempt += 1
                self._pause(attempt, f"{method} {path}: HTTP {status}")
                continue
            if 200 <= status < 300:
                return status, data
            raise _error_from(method, path, status, data)

    def _pause(self, attempt: int, why: str) -> None:
        delay = _BACKOFF * (2 ** (attempt - 1))
        log.debug("retrying in %.1fs (attempt %d of %d): %s", delay, attempt, self.retries, why)
        time.sleep(delay)

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        status, data = self._request(method, path, **kwargs)
        if not data:
            return None
        try:
            return orjson.loads(data)
        except ValueError as exc:
            raise ServerError(
                f"{method} {path}: the server answered with invalid JSON", status=status
            ) from exc

    def _object(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        body = self._json(method, path, **kwargs)
        if not isinstance(body, dict):
            raise ServerError(
                f"{method} {path}: expected a JSON object, got {type(body).__name__}", status=200
            )
        return body

    # ------------------------------------------------------------------ health and catalog

    def health(self) -> dict[str, Any]:
        return self._object("GET", "/health")

    def register(self, content_text: str, resource_type: str = "Playbook") -> dict[str, Any]:
        """Register a resource (YAML text); the answer names `path`, `version` and `catalog_id`."""
        content = base64.b64encode(content_text.encode("utf-8")).decode("ascii")
        return self._object(
            "POST",
            "/api/catalog/register",
            json={"content": content, "resource_type": resource_type},
            idempotent=False,
        )

    def catalog_list(self, kind: str | None = None) -> list[dict[str, Any]]:
        body: dict[str, Any] = {"resource_type": kind} if kind else {}
        answer = self._object("POST", "/api/catalog/list", json=body)
        entries = answer.get("entries")
        return [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []

    def catalog_resource(
        self, *, path: str | None = None, catalog_id: int | str | None = None, version: str | int = "latest"
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"version": str(version)}
        if catalog_id is not None:
            body["catalog_id"] = str(catalog_id)
        if path is not None:
            body["path"] = path
        return self._object("POST", "/api/catalog/resource", json=body)

    # ------------------------------------------------------------------ executions

    def execute(
        self,
        path: str | None = None,
        payload: Mapping[str, Any] | None = None,
        *,
        catalog_id: int | str | None = None,
        parent_execution_id: int | str | None = None,
        execution_pool: str | None = None,
        trace: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Start an execution by catalog `path` or `catalog_id`; answers `{execution_id, status, ...}`."""
        if not path and catalog_id is None:
            raise ValidationFailed("Either 'path' or 'catalog_id' must be provided")
        body: dict[str, Any] = {"payload": dict(payload or {})}
        if path:
            body["path"] = path
        if catalog_id is not None:
            body["catalog_id"] = str(catalog_id)
        if parent_execution_id is not None:
            body["parent_execution_id"] = str(parent_execution_id)
        if execution_pool:
            body["execution_pool"] = execution_pool
        if trace:
            body["trace"] = dict(trace)
        if metadata:
            body["metadata"] = dict(metadata)
        return self._object("POST", "/api/execute", json=body, idempotent=False)

    def status(self, execution_id: int | str) -> dict[str, Any]:
        return self._object("GET", f"/api/executions/{execution_id}/status")

    def execution(self, execution_id: int | str) -> dict[str, Any]:
        return self._object("GET", f"/api/executions/{execution_id}")

    def executions(
        self,
        *,
        status: str | None = None,
        parent_execution_id: int | str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if status:
            params["status"] = status
        if parent_execution_id is not None:
            params["parent_execution_id"] = str(parent_execution_id)
        rows = self._json("GET", "/api/executions", params=params)
        return [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []

    def runs(self, **filters: Any) -> dict[str, Any]:
        """A page of `/api/runs` (filters: status, playbook, since, until, limit, offset)."""
        params = {k: v for k, v in filters.items() if v not in (None, "")}
        return self._object("GET", "/api/runs", params=params)

    def run_logs(self, execution_id: int | str, step: str | None = None) -> dict[str, Any]:
        params = {"step": step} if step else None
        return self._object("GET", f"/api/runs/{execution_id}/logs", params=params)

    def events(self, execution_id: int | str) -> list[dict[str, Any]]:
        body = self._object("GET", f"/api/executions/{execution_id}/events")
        rows = body.get("events")
        return [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []

    def cancel(
        self, execution_id: int | str, *, cascade: bool = True, reason: str | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"cascade": cascade}
        if reason:
            body["reason"] = reason
        return self._object("POST", f"/api/executions/{execution_id}/cancel", json=body, idempotent=False)

    # ------------------------------------------------------------------ commands and events

    def pending(self, pools: Sequence[str] = ("shared",), limit: int = 10) -> list[dict[str, Any]]:
        """Commands nobody claimed yet in these pools, oldest first."""
        params: list[tuple[str, str | int]] = [("pool", p) for p in pools]
        params.append(("limit", limit))
        body = self._object("GET", "/api/commands/pending", params=params)
        rows = body.get("commands")
        return [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []

    def command(self, event_id: int | str) -> dict[str, Any]:
        return self._object("GET", f"/api/commands/{event_id}")

    def claim(self, event_id: int | str, worker_id: str) -> dict[str, Any] | None:
        """Claim a command; None when it is not ours to run (409: claimed elsewhere, ended, cancelled).
        Claiming twice by the same worker is idempotent on the server, so transport errors retry."""
        try:
            return self._object("POST", f"/api/commands/{event_id}/claim", json={"worker_id": worker_id})
        except Conflict:
            return None

    def claim_many(
        self,
        worker_id: str,
        *,
        pools: Sequence[str] | None = None,
        limit: int = 10,
        event_ids: Sequence[int | str] | None = None,
    ) -> list[dict[str, Any]] | None:
        """Claim several commands in one request (the given ones, or the oldest pending of the
        pools); None when the server has no batch claim (an upstream server: use `claim`)."""
        body: dict[str, Any] = {"worker_id": worker_id, "limit": limit}
        if pools:
            body["pools"] = list(pools)
        if event_ids is not None:
            body["event_ids"] = [str(i) for i in event_ids]
        try:
            answer = self._object("POST", "/api/commands/claim", json=body)
        except (NotFound, ServerError) as exc:
            if isinstance(exc, ServerError) and exc.status != 405:
                raise
            return None
        commands = answer.get("commands")
        return [c for c in commands if isinstance(c, dict)] if isinstance(commands, list) else []

    def post_events(self, events: Iterable[Event], *, worker_id: str | None = None) -> list[int]:
        """Report events (of any executions) in one `/api/events/batch` request; returns the
        stored event ids. Idempotent on event_id, so retried like a read."""
        return self.report_events(events, worker_id=worker_id)[0]

    def report_events(
        self, events: Iterable[Event], *, worker_id: str | None = None
    ) -> tuple[list[int], set[str]]:
        """`post_events`, also returning the command ids whose events the server refused."""
        batch = list(events)
        if not batch:
            return [], set()
        # Idempotent on event_id: retried like a read, over the light connection.
        answer = self._object("POST", BATCH_PATH, json=_batch_body(batch, worker_id), light=True)
        return _reported(answer, batch)

    async def report_events_async(
        self, events: Iterable[Event], *, worker_id: str | None = None
    ) -> tuple[list[int], set[str]]:
        """`report_events` from an event loop: posted from the loop itself over a kept-alive
        connection (no thread hop) when the server is plain HTTP; retried alike."""
        poster = self._async_poster
        if poster is None:
            return await asyncio.to_thread(self.report_events, events, worker_id=worker_id)
        batch = list(events)
        if not batch:
            return [], set()
        content = _encode(_batch_body(batch, worker_id))
        attempt = 0
        while True:
            try:
                status, data = await poster.post(BATCH_PATH, content)
            except OSError as exc:
                if attempt < self.retries:
                    attempt += 1
                    await asyncio.sleep(_BACKOFF * (2 ** (attempt - 1)))
                    continue
                raise ServerUnreachable(f"cannot reach the NoETL server at {self.base_url}: {exc}") from exc
            if status in _RETRY_STATUSES and attempt < self.retries:
                attempt += 1
                await asyncio.sleep(_BACKOFF * (2 ** (attempt - 1)))
                continue
            if not 200 <= status < 300:
                raise _error_from("POST", BATCH_PATH, status, data)
            try:
                answer = orjson.loads(data) if data else {}
            except ValueError as exc:
                raise ServerError(f"POST {BATCH_PATH}: the answer is not JSON: {exc}", status=status) from exc
            if not isinstance(answer, dict):
                raise ServerError(f"POST {BATCH_PATH}: expected a JSON object", status=status)
            return _reported(answer, batch)

    # ------------------------------------------------------------------ credentials

    def get_credential(self, name: str, *, worker_id: str, command_id: str) -> dict[str, Any]:
        """The credential with its secret `data`, for the worker holding `command_id` (404 ->
        NotFound; 403 when the command does not use it or the worker does not hold it)."""
        params = {"include_data": "true", "worker_id": worker_id, "command_id": command_id}
        return self._object("GET", f"/api/credentials/{quote(name, safe='')}", params=params)

    def credential_put(self, doc: dict[str, Any]) -> dict[str, Any]:
        """Create or replace a credential `{name, type, data, description?, tags?}` (admin)."""
        return self._object("POST", "/api/credentials", json=doc)

    def credentials(self) -> list[dict[str, Any]]:
        """Every credential's name, type and description (never the data)."""
        items = self._object("GET", "/api/credentials").get("items")
        return [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []

    def credential(self, name: str) -> dict[str, Any]:
        """One credential without its data (404 -> NotFound)."""
        return self._object("GET", f"/api/credentials/{quote(name, safe='')}")

    def credential_delete(self, name: str) -> dict[str, Any]:
        return self._object("DELETE", f"/api/credentials/{quote(name, safe='')}")

    # ------------------------------------------------------------------ tokens (admin)

    def token_create(self, name: str, scope: str) -> dict[str, Any]:
        """A new API token: the answer holds `token` (shown only this once), `name`, `scope`."""
        return self._object("POST", "/api/tokens", json={"name": name, "scope": scope}, idempotent=False)

    def tokens(self) -> list[dict[str, Any]]:
        rows = self._json("GET", "/api/tokens")
        return [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []

    def token_revoke(self, name: str) -> dict[str, Any]:
        return self._object("DELETE", f"/api/tokens/{quote(name, safe='')}", idempotent=False)

    # ------------------------------------------------------------------ worker pools

    def worker_register(
        self,
        name: str,
        *,
        capacity: int | None = None,
        labels: Mapping[str, Any] | None = None,
        hostname: str | None = None,
        runtime: Mapping[str, Any] | None = None,
        status: str = "ready",
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "name": name,
            "component_type": "worker_pool",
            "status": status,
            "runtime": dict(runtime) if runtime is not None else {"kind": "python"},
        }
        if capacity is not None:
            body["capacity"] = capacity
        if labels:
            body["labels"] = dict(labels)
        if hostname:
            body["hostname"] = hostname
        answer = self._json("POST", "/api/worker/pool/register", json=body)
        return answer if isinstance(answer, dict) else {}

    def worker_heartbeat(self, name: str, command_ids: Sequence[str] | None = None) -> dict[str, Any]:
        """A heartbeat; `command_ids` lists the commands the worker is running, so the server
        renews exactly those leases (a claim whose answer never arrived then expires)."""
        body: dict[str, Any] = {"name": name, "component_type": "worker_pool"}
        if command_ids is not None:
            body["command_ids"] = list(command_ids)
        return self._object("POST", "/api/worker/pool/heartbeat", json=body)

    def worker_deregister(self, name: str) -> dict[str, Any]:
        """DELETE first; falls back to POST on a server that routes only one of them."""
        body = {"name": name, "component_type": "worker_pool"}
        try:
            return self._object("DELETE", "/api/worker/pool/deregister", json=body)
        except ServerError as exc:
            if exc.status != 405:
                raise
        except NotFound:
            pass
        return self._object("POST", "/api/worker/pool/deregister", json=body)

    def worker_pools(self) -> list[dict[str, Any]]:
        rows = self._json("GET", "/api/worker/pools")
        if isinstance(rows, dict):  # tolerate a wrapped list
            rows = rows.get("items") or rows.get("pools") or rows.get("workers")
        return [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []


BATCH_PATH = "/api/events/batch"


def _batch_body(batch: list[Event], worker_id: str | None) -> dict[str, Any]:
    items = []
    for event in batch:
        item = event_payload(event)
        item["execution_id"] = str(event.execution_id)
        items.append(item)
    body: dict[str, Any] = {"execution_id": str(batch[0].execution_id), "events": items}
    sender = worker_id or next((e.worker_id for e in batch if e.worker_id), None)
    if sender:
        body["worker_id"] = sender
    return body


def _reported(answer: Mapping[str, Any], batch: list[Event]) -> tuple[list[int], set[str]]:
    """(stored event ids, refused command ids) of a batch's answer."""
    ids = answer.get("event_ids")
    rejected = answer.get("rejected")
    refused = {str(c) for c in rejected} if isinstance(rejected, list) else set()
    if isinstance(ids, list):
        return [int(i) for i in ids], refused
    return [e.event_id for e in batch], refused


def _error_from(method: str, path: str, status: int, content: bytes) -> NoetlError:
    message = ""
    try:
        body = orjson.loads(content) if content else None
    except ValueError:
        body = None
    if isinstance(body, dict):
        raw = body.get("error", body.get("detail", body.get("message")))
        if raw is not None:
            message = raw if isinstance(raw, str) else str(raw)
    if not message:
        text = content.decode("utf-8", "replace").strip()[:500]
        message = text or f"HTTP {status} from {method} {path}"
    if status == 403:
        return Forbidden(message)
    if status == 404:
        return NotFound(message)
    if status == 409:
        return Conflict(message)
    if status == 422:
        return ValidationFailed(message)
    return ServerError(message, status=status)


__all__ = [
    "DEFAULT_SERVER_URL",
    "TERMINAL_STATUSES",
    "ServerClient",
    "ServerError",
    "ServerUnreachable",
    "event_payload",
]
