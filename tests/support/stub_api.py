"""A deterministic HTTP API for tests and the conformance playbooks (stdlib only).

    with StubAPI() as api:            # or: base_url = StubAPI().start(); ...; .stop()
        httpx.get(f"{api.base_url}/api/v1/assessments?page=2&pageSize=10")

    python -m tests.support.stub_api 5555      # standalone; prints the base URL

Data: 35 items (ids 1..35), 10 per page unless asked otherwise.

- GET  /health                                   -> {"status": "ok"}
- GET  /api/v1/assessments?page=N&pageSize=M     -> {"data", "paging": {page, pageSize, total, hasMore}}
- GET  /api/v1/users?offset=N&limit=M            -> {"users", "has_more", "data", "pagination": {offset, limit, total, has_more}}
- GET  /api/v1/events?cursor=C&limit=M           -> {"data", "next_cursor"} (base64 cursor, null at the end)
- GET  /api/v1/flaky?page=N&fail_on=K[,K2]       -> HTTP 500 on the first call of a listed page, then the
                                                    assessments page (`fail_times=T` fails T times)
- POST /api/v1/flaky/reset ; GET /api/v1/flaky/stats -> {"calls": {page: n}, "failures": {page: n}}
                                                    (`state.flaky_log`: [(page, status)] in call order)
- GET  /api/v1/concurrency/probe?delay_seconds=S&label=L (or delay=S): sleeps S seconds
- GET  /api/v1/concurrency/stats                 -> {"started", "completed", "active", "max_active"}
- POST /api/v1/concurrency/reset                 -> {"status": "reset"}
- ANY  /api/v1/status/{code}                     -> that status code, JSON body {"status": code}
- ANY  /api/v1/echo?delay=S                      -> {"method", "path", "query", "headers", "body"}
- GET  /api/v1/text                              -> a text/plain body
- anything else                                  -> 404 {"error": "not found", "path": ...}

Every request is counted per method and path in `state.calls` (see `StubState.call_count`).
"""

from __future__ import annotations

import base64
import binascii
import json
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

TOTAL_ITEMS = 35
DEFAULT_PAGE_SIZE = 10
MAX_PAGE_SIZE = 1000


def assessment(i: int) -> dict[str, Any]:
    return {"id": i, "name": f"Item {i}", "value": i * 10}


def user(i: int) -> dict[str, Any]:
    return {"id": i, "name": f"User {i}", "email": f"user{i}@example.com"}


def event(i: int) -> dict[str, Any]:
    return {"id": i, "type": "event", "name": f"Event {i}", "timestamp": f"2025-01-01T00:{i:02d}:00Z"}


def encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode("ascii")


def decode_cursor(cursor: str) -> int:
    padded = cursor + "=" * (-len(cursor) % 4)
    data = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    offset = int(data["offset"])
    if offset < 0:
        raise ValueError("negative offset")
    return offset


class BadRequest(Exception):
    pass


class StubState:
    """Counters shared by all request threads of one server."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.flaky_calls: dict[int, int] = {}
        self.flaky_failures: dict[int, int] = {}
        self.flaky_log: list[tuple[int, int]] = []  # (page, HTTP status answered), in call order
        self.calls: dict[tuple[str, str], int] = {}  # (method, path) -> requests received
        self.started = 0
        self.completed = 0
        self.active = 0
        self.max_active = 0

    def reset_flaky(self) -> None:
        with self.lock:
            self.flaky_calls.clear()
            self.flaky_failures.clear()
            self.flaky_log.clear()

    def reset_concurrency(self) -> None:
        with self.lock:
            self.started = self.completed = self.active = self.max_active = 0

    def count_call(self, method: str, path: str) -> None:
        with self.lock:
            self.calls[(method, path)] = self.calls.get((method, path), 0) + 1

    def call_count(self, path: str, method: str | None = None) -> int:
        """Requests received for `path` (any method unless `method` is given)."""
        with self.lock:
            return sum(n for (m, p), n in self.calls.items() if p == path and method in (None, m))

    def concurrency_stats(self) -> dict[str, int]:
        with self.lock:
            return {
                "started": self.started,
                "completed": self.completed,
                "active": self.active,
                "max_active": self.max_active,
            }


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int]) -> None:
        super().__init__(address, _Handler)
        self.state = StubState()

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # a client hung up; stay quiet
        super().handle_error(request, client_address)


def _int(query: dict[str, list[str]], name: str, default: int, *, minimum: int = 0) -> int:
    values = query.get(name)
    if not values or values[0] == "":
        return default
    try:
        value = int(float(values[0]))
    except ValueError:
        raise BadRequest(f"'{name}' must be an integer, got {values[0]!r}") from None
    if value < minimum:
        raise BadRequest(f"'{name}' must be >= {minimum}, got {value}")
    return value


def _float(query: dict[str, list[str]], *names: str) -> float:
    for name in names:
        values = query.get(name)
        if values and values[0] != "":
            try:
                return max(0.0, float(values[0]))
            except ValueError:
                raise BadRequest(f"'{name}' must be a number, got {values[0]!r}") from None
    return 0.0


def _page(page: int, size: int) -> dict[str, Any]:
    start = (page - 1) * size
    ids = range(start + 1, min(start + size, TOTAL_ITEMS) + 1)
    return {
        "data": [assessment(i) for i in ids],
        "paging": {
            "page": page,
            "pageSize": size,
            "total": TOTAL_ITEMS,
            "hasMore": start + size < TOTAL_ITEMS,
        },
    }


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "NoetlStubAPI/1.0"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return

    # -- plumbing -------------------------------------------------------------------------

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _send(self, status: int, payload: Any, *, content_type: str = "application/json") -> None:
        if status in (204, 304) or 100 <= status < 200:
            raw = b""
        elif isinstance(payload, bytes):
            raw = payload
        elif isinstance(payload, str) and not content_type.startswith("application/json"):
            raw = payload.encode("utf-8")
        else:
            raw = json.dumps(payload).encode("utf-8")
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = "Status"
        self.send_response(status, reason)
        if raw or status not in (204, 304):
            self.send_header("Content-Type", f"{content_type}; charset=utf-8")
            self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        if raw and self.command != "HEAD":
            self.wfile.write(raw)

    def _dispatch(self) -> None:
        body = self._read_body()
        parts = urlsplit(self.path)
        path = parts.path.rstrip("/") or "/"
        query = parse_qs(parts.query, keep_blank_values=True)
        self.server.state.count_call(self.command, path)
        try:
            self._route(self.command, path, query, body)
        except ConnectionError:  # the client went away (e.g. it timed out): nothing to answer
            self.close_connection = True
        except BadRequest as exc:
            self._send(400, {"error": str(exc)})
        except Exception as exc:  # a bug in the stub: say so instead of hanging the client
            self._send(500, {"error": f"stub failure: {type(exc).__name__}: {exc}"})

    do_GET = _dispatch
    do_POST = _dispatch
    do_PUT = _dispatch
    do_PATCH = _dispatch
    do_DELETE = _dispatch
    do_HEAD = _dispatch
    do_OPTIONS = _dispatch

    # -- routes ---------------------------------------------------------------------------

    def _route(self, method: str, path: str, query: dict[str, list[str]], body: bytes) -> None:
        state = self.server.state
        if path == "/health":
            self._send(200, {"status": "ok"})
        elif path == "/api/v1/assessments" and method == "GET":
            page = _int(query, "page", 1, minimum=1)
            size = min(_int(query, "pageSize", DEFAULT_PAGE_SIZE, minimum=1), MAX_PAGE_SIZE)
            self._send(200, _page(page, size))
        elif path == "/api/v1/users" and method == "GET":
            offset = _int(query, "offset", 0)
            limit = min(_int(query, "limit", DEFAULT_PAGE_SIZE, minimum=1), MAX_PAGE_SIZE)
            users = [user(i) for i in range(offset + 1, min(offset + limit, TOTAL_ITEMS) + 1)]
            has_more = offset + limit < TOTAL_ITEMS
            self._send(
                200,
                {
                    "users": users,
                    "has_more": has_more,
                    "total": TOTAL_ITEMS,
                    "data": users,
                    "pagination": {
                        "offset": offset,
                        "limit": limit,
                        "total": TOTAL_ITEMS,
                        "has_more": has_more,
                    },
                },
            )
        elif path == "/api/v1/events" and method == "GET":
            cursor = (query.get("cursor") or [""])[0]
            limit = min(_int(query, "limit", DEFAULT_PAGE_SIZE, minimum=1), MAX_PAGE_SIZE)
            try:
                offset = decode_cursor(cursor) if cursor else 0
            except (ValueError, KeyError, TypeError, binascii.Error):
                raise BadRequest(f"invalid cursor {cursor!r}") from None
            end = min(offset + limit, TOTAL_ITEMS)
            self._send(
                200,
                {
                    "data": [event(i) for i in range(offset + 1, end + 1)],
                    "next_cursor": encode_cursor(end) if end < TOTAL_ITEMS else None,
                },
            )
        elif path == "/api/v1/flaky" and method == "GET":
            page = _int(query, "page", 1, minimum=1)
            size = min(_int(query, "pageSize", DEFAULT_PAGE_SIZE, minimum=1), MAX_PAGE_SIZE)
            fail_times = _int(query, "fail_times", 1)
            fail_on: set[int] = set()
            for raw in query.get("fail_on", []):
                for token in raw.split(","):
                    if token.strip():
                        try:
                            fail_on.add(int(token))
                        except ValueError:
                            raise BadRequest(f"'fail_on' must list page numbers, got {raw!r}") from None
            with state.lock:
                calls = state.flaky_calls.get(page, 0) + 1
                state.flaky_calls[page] = calls
                failed = state.flaky_failures.get(page, 0)
                fail = page in fail_on and failed < fail_times
                if fail:
                    state.flaky_failures[page] = failed + 1
                state.flaky_log.append((page, 500 if fail else 200))
            if fail:
                self._send(500, {"error": "simulated failure", "page": page, "attempt": calls})
            else:
                self._send(200, {**_page(page, size), "attempt": calls})
        elif path == "/api/v1/flaky/reset" and method == "POST":
            state.reset_flaky()
            self._send(200, {"status": "reset"})
        elif path == "/api/v1/flaky/stats" and method == "GET":
            with state.lock:
                calls_by_page = {str(k): v for k, v in sorted(state.flaky_calls.items())}
                failures = {str(k): v for k, v in sorted(state.flaky_failures.items())}
            self._send(200, {"calls": calls_by_page, "failures": failures})
        elif path == "/api/v1/concurrency/probe" and method == "GET":
            delay = _float(query, "delay_seconds", "delay")
            label = (query.get("label") or [""])[0]
            with state.lock:
                state.started += 1
                state.active += 1
                state.max_active = max(state.max_active, state.active)
                active_at_start = state.active
            started = time.time()
            try:
                time.sleep(delay)
            finally:
                with state.lock:
                    state.active -= 1
                    state.completed += 1
            self._send(
                200,
                {
                    "status": "ok",
                    "label": label,
                    "delay_seconds": delay,
                    "active_at_start": active_at_start,
                    "elapsed": round(time.time() - started, 3),
                },
            )
        elif path == "/api/v1/concurrency/stats" and method == "GET":
            self._send(200, state.concurrency_stats())
        elif path == "/api/v1/concurrency/reset" and method == "POST":
            state.reset_concurrency()
            self._send(200, {"status": "reset"})
        elif path.startswith("/api/v1/status/"):
            code_text = path.rsplit("/", 1)[-1]
            if not code_text.isdigit() or not 100 <= int(code_text) <= 599:
                raise BadRequest(f"not an HTTP status code: {code_text!r}")
            code = int(code_text)
            self._send(code, {"status": code})
        elif path == "/api/v1/echo":
            delay = _float(query, "delay")
            if delay:
                time.sleep(delay)
            text = body.decode("utf-8", errors="replace")
            parsed: Any
            try:
                parsed = json.loads(text) if text else None
            except ValueError:
                parsed = text
            self._send(
                200,
                {
                    "method": method,
                    "path": path,
                    "query": {k: v[0] if len(v) == 1 else v for k, v in query.items()},
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "body": parsed,
                },
            )
        elif path == "/api/v1/text" and method == "GET":
            self._send(200, "plain text response", content_type="text/plain")
        else:
            self._send(404, {"error": "not found", "method": method, "path": path})


class StubAPI:
    """The stub server on 127.0.0.1 in a background thread (port 0 = any free port)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("the stub API is not running; call start() first")
        return f"http://{self.host}:{self._server.server_address[1]}"

    @property
    def state(self) -> StubState:
        if self._server is None:
            raise RuntimeError("the stub API is not running; call start() first")
        return self._server.state

    def start(self) -> str:
        if self._server is None:
            self._server = _Server((self.host, self.port))
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name="stub-api",
                daemon=True,
            )
            self._thread.start()
        return self.base_url

    def stop(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> StubAPI:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) > 2 or (args and args[0] in ("-h", "--help")):
        print("usage: python -m tests.support.stub_api [PORT] [HOST]", file=sys.stderr)
        return 2
    try:
        port = int(args[0]) if args else 5555
    except ValueError:
        print(f"PORT must be a number, got {args[0]!r}", file=sys.stderr)
        return 2
    host = args[1] if len(args) > 1 else "127.0.0.1"
    server = _Server((host, port))
    print(f"stub API listening on http://{host}:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
