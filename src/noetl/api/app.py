"""The control-plane HTTP API: a thin FastAPI layer over `noetl.runtime.control.ControlPlane`.

Routes and shapes are documented in docs/api.md. Endpoints are plain functions: FastAPI runs them
in its thread pool, and the control plane and the stores are synchronous and thread-safe.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from noetl import __version__
from noetl.api import (
    errors,
    routes_catalog,
    routes_credentials,
    routes_events,
    routes_execute,
    routes_executions,
    routes_schedules,
    routes_subscriptions,
    routes_tokens,
)
from noetl.api.auth import Authenticator, AuthMiddleware
from noetl.api.hot import MAX_BODY_BYTES, in_front
from noetl.api.limits import BodyLimit
from noetl.api.models import ApiHealth, Health
from noetl.api.observe import Observability
from noetl.api.observe import install as install_observability
from noetl.api.openapi import install_openapi
from noetl.api.routes_workers import RuntimeRegistry
from noetl.api.routes_workers import router as workers_router
from noetl.runtime.control import ControlPlane
from noetl.triggers.schedules import Schedules

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


def create_app(
    control: ControlPlane,
    *,
    admin_token: str,
    nats_status: str = "not_configured",
    lifespan: Lifespan | None = None,
    max_body_bytes: int = 10 * 1024 * 1024,
    max_batch_body_bytes: int = MAX_BODY_BYTES,
    observability: Observability | None = None,
) -> FastAPI:
    """The API over `control`, behind token auth (`admin_token` and the store's tokens).
    `nats_status` is what `/api/health` reports for the bus; `lifespan` runs background work (the
    in-process worker) for the app's lifetime; request bodies are capped at `max_body_bytes`
    (`max_batch_body_bytes` for a worker's batch of events); `observability`: see
    `noetl.api.observe`."""
    app = FastAPI(
        title="NoETL control plane",
        version=__version__,
        description="Register playbooks, start executions, hand out commands and ingest worker events.",
        lifespan=lifespan,
        docs_url=None,  # served offline by noetl.api.observe
        redoc_url=None,
    )
    app.state.control = control
    registry = RuntimeRegistry(control.store, control.ids)
    app.state.runtimes = registry
    errors.install(app)
    _install_health(app, control, nats_status)

    auth = Authenticator(control.store, admin_token)
    app.state.auth = auth
    # The body cap for every route but the two requests workers make per command, which are
    # served in front of the whole stack (see noetl.api.hot, and `in_front` below).
    app.add_middleware(BodyLimit, cap=max_body_bytes)
    # /ui, /api/runs, /metrics, latency by route, spans, offline /docs
    open_paths = install_observability(app, control, auth, observability or Observability())
    gate = AuthMiddleware(app.router, authenticator=auth, open_paths=open_paths)
    app.add_middleware(AuthMiddleware, authenticator=auth, open_paths=open_paths)
    metrics = getattr(app.state, "metrics", None)
    in_front(
        app,
        {
            ("POST", "/api/events/batch"): routes_events.batch_handler(control),
            ("POST", "/api/commands/claim"): routes_events.claim_handler(control),
        },
        max_batch_body_bytes,
        admit=gate.admit,
        timed=metrics.time_request if metrics is not None else None,
    )
    app.include_router(routes_catalog.router(control))
    app.include_router(routes_execute.router(control))
    app.include_router(routes_events.router(control))
    app.include_router(routes_executions.router(control))
    app.include_router(workers_router(registry, control))
    app.include_router(routes_credentials.router(control))
    app.include_router(routes_tokens.router(auth))
    app.include_router(routes_schedules.router(control, declared_schedules(control)))
    app.include_router(routes_subscriptions.router(control))
    install_openapi(app)
    return app


def _install_health(app: FastAPI, control: ControlPlane, nats_status: str) -> None:
    """`/health` (liveness) and `/api/health` (readiness: the store answers)."""
    started = time.monotonic()

    @app.get("/health", tags=["health"], response_model=Health)
    def health() -> dict[str, Any]:
        """Liveness: always ok while the process serves requests."""
        return {"status": "ok"}

    @app.get(
        "/api/health",
        tags=["health"],
        response_model=ApiHealth,
        responses={503: {"model": ApiHealth, "description": "The store does not answer."}},
    )
    def api_health() -> Any:
        """Readiness: the store answers; reports the bus and the uptime."""
        body: dict[str, Any] = {
            "status": "ok",
            "database": "connected",
            "nats": nats_status,
            "uptime_seconds": round(time.monotonic() - started, 3),
            "version": __version__,
        }
        try:
            control.store.executions(limit=1)
        except Exception as exc:
            body.update(status="unhealthy", database="disconnected", error=str(exc))
            return JSONResponse(body, status_code=503)
        return body


def declared_schedules(control: ControlPlane) -> Schedules:
    """The schedules service, also syncing the schedules playbooks declare when registered
    (one hook per control plane, however many apps are built over it)."""
    schedules = Schedules(control)
    hooks = control.register_hooks
    hooks[:] = [h for h in hooks if not isinstance(getattr(h, "__self__", None), Schedules)]
    hooks.append(schedules.declared)
    return schedules


__all__ = ["create_app"]
