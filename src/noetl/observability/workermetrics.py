"""`/metrics` of a worker process (`NOETL_WORKER_METRICS_PORT`): commands it ran by tool kind and
outcome, their durations, its slots (total, busy) and the outcomes it has posted.

Served by a small WSGI server on its own thread. Bound to loopback it is open; bound elsewhere a
scrape needs `Authorization: Bearer <token>`: the worker's own token, or a token the server
accepts for reading (asked once, then remembered for a minute).
"""

from __future__ import annotations

import hmac
import ipaddress
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app

from noetl.engine import events as ev
from noetl.observability.metrics import DURATION_BUCKETS

if TYPE_CHECKING:
    from noetl.worker.remote import RemoteWorker

VERIFIED_SECONDS = 60.0
StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.commands = Counter(
            "noetl_worker_commands",
            "Commands this worker ran, by tool kind and outcome.",
            ["tool_kind", "status"],
            registry=r,
        )
        self.seconds = Histogram(
            "noetl_worker_command_duration_seconds",
            "Time this worker spent running a command, by tool kind and outcome.",
            ["tool_kind", "status"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.slots = Gauge("noetl_worker_slots", "Command slots of this worker.", registry=r)
        self.busy = Gauge("noetl_worker_slots_busy", "Slots running a command now.", registry=r)

    def instrument(self, worker: RemoteWorker) -> None:
        """Time `worker`'s commands (its runner's `execute` is wrapped on the instance) and read
        its slots at scrape time."""
        runner = worker.runner
        execute = runner.execute
        metrics = self

        async def timed(executor: Any, command: Any, report: Any = None) -> Any:
            begin = time.perf_counter()
            status = "crashed"
            try:
                outcome = await execute(executor, command, report)
                failed = any(e.event_type == ev.COMMAND_FAILED for e in outcome)
                status = "failed" if failed else "completed"
                return outcome
            finally:
                metrics.commands.labels(command.kind, status).inc()
                metrics.seconds.labels(command.kind, status).observe(time.perf_counter() - begin)

        setattr(runner, "execute", timed)  # noqa: B010 - an instance attribute shadows the method
        self.slots.set(worker.concurrency)
        self.busy.set_function(lambda: float(runner.executing))


class ScrapeAuth:
    """WSGI middleware: a bearer token the worker knows, or one the server accepts."""

    def __init__(self, app: WsgiApp, own_token: str | None, server_url: str) -> None:
        self.app = app
        self.own_token = own_token
        self.server_url = server_url.rstrip("/")
        self._verified: dict[str, float] = {}
        self._guard = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        kind, _, token = str(environ.get("HTTP_AUTHORIZATION", "")).partition(" ")
        if kind.lower() != "bearer" or not token.strip() or not self.allowed(token.strip()):
            start_response(
                "401 Unauthorized", [("Content-Type", "text/plain"), ("WWW-Authenticate", "Bearer")]
            )
            return [b"a read token is required (Authorization: Bearer <token>)\n"]
        return self.app(environ, start_response)

    def allowed(self, token: str) -> bool:
        if self.own_token and hmac.compare_digest(token.encode(), self.own_token.encode()):
            return True
        now = time.monotonic()
        with self._guard:
            if self._verified.get(token, 0.0) > now:
                return True
        try:
            answer = httpx.get(
                f"{self.server_url}/api/runs",
                params={"limit": 1},
                headers={"authorization": f"Bearer {token}"},
                timeout=5,
            )
        except httpx.HTTPError:
            return False
        if answer.status_code != 200:
            return False
        with self._guard:
            self._verified[token] = now + VERIFIED_SECONDS
        return True


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # scrapes are not worth a line each
        return


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serve_metrics(
    metrics: WorkerMetrics, host: str, port: int, *, own_token: str | None, server_url: str
) -> WSGIServer:
    """Serve `metrics` at http://host:port/metrics on a daemon thread; returns the server (its
    `shutdown()` stops it)."""
    app: WsgiApp = make_wsgi_app(metrics.registry)
    if not is_loopback(host):
        app = ScrapeAuth(app, own_token, server_url)
    server = make_server(host, port, app, handler_class=_Quiet)
    threading.Thread(target=server.serve_forever, name="noetl-worker-metrics", daemon=True).start()
    return server


__all__ = ["ScrapeAuth", "WorkerMetrics", "is_loopback", "serve_metrics"]
