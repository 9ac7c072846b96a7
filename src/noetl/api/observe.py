"""What the server adds to see what runs: `/metrics` (Prometheus), HTTP latency by route, the
store's append latency, OpenTelemetry spans of executions, steps and commands (when a tracer
provider is configured), and the offline API docs (`/docs`, `/redoc`).

`install` is called by `create_app`; everything here hangs off the control plane's listeners and
an ASGI middleware, so the orchestration core knows nothing of it.
"""

from __future__ import annotations

import time
from collections.abc import MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from noetl.api import routes_runs, ui
from noetl.api.auth import ASGIApp, Authenticator, Receive, Scope, Send
from noetl.observability.metrics import ServerMetrics
from noetl.runtime.control import ControlPlane

DOCS_ASSETS = "/docs/assets"
_HOT_PATHS = frozenset({"/api/events/batch", "/api/commands/claim"})


@dataclass(frozen=True)
class Observability:
    """How a server is observed. `tracer_provider`: an OpenTelemetry `TracerProvider` that
    receives the spans of runs (None: no tracing, nothing imported)."""

    metrics: bool = True
    metrics_open: bool = False  # `/metrics` without a token (a server bound to loopback)
    tracer_provider: Any = None


def install(
    app: FastAPI, control: ControlPlane, auth: Authenticator, options: Observability
) -> frozenset[str]:
    """Add the web UI, the run history API, the offline docs, metrics and tracing to `app` (the
    latency middleware times what is added to the app before it). Returns the paths the auth
    middleware leaves open (`/metrics` on loopback)."""
    install_docs(app)
    app.include_router(routes_runs.router(control))
    ui.install(app, auth)
    if options.metrics:
        metrics = ServerMetrics()
        metrics.watch(control)
        metrics.time_appends(control.store)
        app.state.metrics = metrics
        app.add_middleware(HttpLatency, metrics=metrics)

        @app.get("/metrics", include_in_schema=False)
        def scrape() -> Response:
            return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    if options.tracer_provider is not None:
        from noetl.observability.tracing import RunTracer

        tracer = RunTracer(options.tracer_provider)
        control.add_listener(tracer.observe)
        app.state.tracer = tracer
    return frozenset({"/metrics"}) if options.metrics_open else frozenset()


class HttpLatency:
    """Times every HTTP request, labelled by its route template (`/api/executions/{execution_id}`),
    so ids never become label values."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        begin = time.perf_counter()
        status = 500

        async def sending(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = getattr(scope.get("route"), "path", None)
            path = scope.get("path", "")
            label = route or (path if path in _HOT_PATHS else "unmatched")
            self.metrics.time_request(scope.get("method", ""), label, status, time.perf_counter() - begin)


def install_docs(app: FastAPI) -> None:
    """Swagger UI at `/docs` and ReDoc at `/redoc`, with their assets served from the installed
    `fastapi-offline` package (FastAPI's defaults load them from a CDN)."""
    import fastapi_offline

    assets = Path(fastapi_offline.__file__).parent / "static"
    app.mount(DOCS_ASSETS, StaticFiles(directory=assets), name="docs-assets")
    title = app.title

    @app.get("/docs", include_in_schema=False)
    def swagger() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title=f"{title} - API",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png",
            oauth2_redirect_url="/docs/oauth2-redirect",
        )

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    def swagger_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url="/openapi.json",
            title=f"{title} - API",
            redoc_js_url=f"{DOCS_ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{DOCS_ASSETS}/favicon.png",
            with_google_fonts=False,
        )


__all__ = ["HttpLatency", "Observability", "install", "install_docs"]
