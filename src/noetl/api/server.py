"""`noetl server start`: the control plane over HTTP, served by uvicorn.

At start-up the control plane recovers running executions from the log (unclaimed commands are
offered again, claimed ones get a fresh lease). While it serves, a reaper re-issues commands whose
lease expired. With `with_worker`, an in-process worker runs inside the server's event loop (a
lifespan task), so one process can register and run playbooks without `noetl worker start`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import uvicorn
from fastapi import FastAPI

from noetl.api.app import create_app
from noetl.api.observe import Observability
from noetl.bus import Publisher, open_publisher
from noetl.errors import BusError, NoetlError
from noetl.ids import Snowflake
from noetl.observability.workermetrics import is_loopback
from noetl.runtime.control import ControlPlane
from noetl.runtime.nodes import RENEW_SECONDS, NodeLease, process_owner
from noetl.settings import settings
from noetl.store import open_store
from noetl.tools.pyprocess import pool
from noetl.tools.resources import close_tool_resources
from noetl.triggers.runner import TriggerRunner
from noetl.worker.inprocess import DEFAULT_WORKERS, InProcessWorker

log = logging.getLogger(__name__)

PUBLIC_URL_ENV = "NOETL_PUBLIC_SERVER_URL"  # read by `noetl.settings`
REAP_INTERVAL = 1.0
_WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::", "[::]"})


def public_url(host: str, port: int) -> str:
    """The URL workers use to reach this server: NOETL_PUBLIC_SERVER_URL, else host:port
    (a wildcard bind address is not reachable as such, so it becomes localhost)."""
    configured = settings().public_server_url
    if configured:
        return configured.rstrip("/")
    reachable = "localhost" if host in _WILDCARD_HOSTS else host
    if ":" in reachable and not reachable.startswith("["):
        reachable = f"[{reachable}]"
    return f"http://{reachable}:{port}"


def open_bus(bus_url: str | None) -> tuple[Publisher | None, str]:
    """The publisher for command notifications and what `/api/health` reports about it. NATS is
    only a wake-up signal: when it cannot be reached the server runs anyway and workers poll."""
    if not bus_url or bus_url.startswith("inproc:"):
        return None, "not_configured"
    if not bus_url.startswith(("nats://", "tls://")):
        raise NoetlError(f"unsupported bus URL {bus_url!r}: use inproc:// or nats://host:4222")
    try:
        return open_publisher(bus_url), "connected"
    except BusError as exc:
        log.warning("NATS unavailable, workers will poll: %s", exc)
        return None, "disconnected"


def build_app(
    control: ControlPlane,
    *,
    admin_token: str,
    with_worker: bool,
    workers: int,
    nats_status: str,
    bus_url: str | None = None,
    observability: Observability | None = None,
) -> FastAPI:
    """The app `serve` runs; the in-process worker and the triggers (schedules, subscriptions on
    `bus_url`) live as long as the app's lifespan."""
    if with_worker:
        control.direct_run = False  # the in-process worker takes commands from `pending` at once

    lease = None if settings().snowflake_node_id is not None else node_lease(control)
    config = settings()
    triggers = TriggerRunner(
        control, bus_url=bus_url, grace=config.schedule_grace_seconds, interval=config.scheduler_interval
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if lease is not None:
            await asyncio.to_thread(lease.acquire)
        recovered = await asyncio.to_thread(control.recover)
        if recovered:
            log.warning("resumed %d running execution(s) from the event log", recovered)
        reaper = asyncio.create_task(_reap(control, lease), name="noetl-reaper")
        worker = InProcessWorker(control, workers=workers) if with_worker else None
        if worker is not None:
            worker.start()
        triggers.start()
        try:
            yield
        finally:
            await triggers.stop()
            reaper.cancel()
            if worker is not None:
                await worker.stop()
            with contextlib.suppress(asyncio.CancelledError):
                await reaper
            if lease is not None:
                await asyncio.to_thread(lease.release)
            await close_tool_resources()

    return create_app(
        control,
        admin_token=admin_token,
        nats_status=nats_status,
        lifespan=lifespan,
        max_body_bytes=config.max_body_bytes,
        max_batch_body_bytes=config.max_batch_body_bytes,
        observability=observability,
    )


def serve(
    store_url: str | None,
    host: str,
    port: int,
    *,
    with_worker: bool,
    workers: int = DEFAULT_WORKERS,
    bus_url: str | None = None,
    admin_token: str,
) -> None:
    """Serve the API until SIGINT/SIGTERM; the store is closed on the way out."""
    if workers < 1:
        raise NoetlError("--workers must be at least 1")
    pool.zygote.fork_early()  # before the store's and the bus's threads start
    publisher, nats_status = open_bus(bus_url)
    store = open_store(store_url)
    observability = observing(host)
    try:
        control = ControlPlane(
            store,
            server_url=public_url(host, port),
            notify=publisher.publish_later if publisher is not None else None,
            lease_seconds=settings().lease_seconds,
            loop_window=settings().loop_window,
        )
        app = build_app(
            control,
            admin_token=admin_token,
            with_worker=with_worker,
            workers=workers,
            nats_status=nats_status,
            bus_url=bus_url,
            observability=observability,
        )
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
        GracefulServer(config).run()
    finally:
        if publisher is not None:
            publisher.close()
        if observability.tracer_provider is not None:
            observability.tracer_provider.shutdown()  # flushes the spans not exported yet
        store.close()


def observing(host: str) -> Observability:
    """`/metrics` is open when the server binds loopback only; spans are exported with OTLP
    when OTEL_EXPORTER_OTLP_ENDPOINT is set (nothing of OpenTelemetry is imported otherwise)."""
    endpoint = settings().otlp_endpoint
    provider = None
    if endpoint:
        from noetl.observability.tracing import otlp_provider

        provider = otlp_provider(endpoint)
    return Observability(metrics_open=is_loopback(host), tracer_provider=provider)


class GracefulServer(uvicorn.Server):
    """uvicorn re-raises SIGINT/SIGTERM after its graceful shutdown, which would kill the process
    before the store is closed (and print a KeyboardInterrupt for Ctrl-C). A signal here means
    "stop": once uvicorn has shut down, return normally."""

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            try:
                yield
            finally:
                captured = getattr(self, "_captured_signals", None)
                if isinstance(captured, list):
                    captured.clear()


def node_lease(control: ControlPlane) -> NodeLease | None:
    """This server's snowflake node lease (when its ids are the process's shared generator)."""
    if not isinstance(control.ids, Snowflake):
        return None
    return NodeLease(control.store, control.ids, process_owner("server"))


async def _reap(control: ControlPlane, lease: NodeLease | None, interval: float = REAP_INTERVAL) -> None:
    """Re-issue commands whose worker stopped renewing its lease; re-notify unclaimed ones; keep
    the node lease."""
    renewed = time.monotonic()
    while True:
        await asyncio.sleep(interval)
        if lease is not None and time.monotonic() - renewed >= RENEW_SECONDS:
            renewed = time.monotonic()
            await asyncio.to_thread(lease.renew)
        try:
            done = await asyncio.to_thread(control.reap)
        except Exception:  # the reaper must outlive a failing store call
            log.exception("reaping expired leases failed")
            continue
        if done.get("reissued"):
            log.warning("re-issued %d command(s) whose lease expired", done["reissued"])


__all__ = ["build_app", "observing", "public_url", "serve"]
