"""Prometheus metrics of a server, fed by the orchestrator's committed events.

`ServerMetrics.observe` is an event listener (`ControlPlane.add_listener`): it counts executions
by playbook and outcome, commands by what happened to them, and times steps and commands by tool
kind. What is better read at scrape time (commands waiting per pool, live workers, free slots) is
collected then, from the control plane. Each instance has its own registry, so several apps in one
process (tests) never share counters.

The listener runs on the orchestration hot path: it does a few dict operations and the
prometheus-client calls per event, and takes no lock of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from noetl.engine import events as ev
from noetl.engine.events import Event
from noetl.observability.activity import activity_view

if TYPE_CHECKING:
    from noetl.runtime.control import ControlPlane

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600)
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
APPEND_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)
UNKNOWN = "unknown"
_ENDED = {
    ev.PLAYBOOK_COMPLETED: "completed",
    ev.PLAYBOOK_FAILED: "failed",
    ev.PLAYBOOK_CANCELLED: "cancelled",
}


class ServerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.started = Counter("noetl_executions_started", "Executions started.", ["playbook"], registry=r)
        self.ended = {
            outcome: Counter(
                f"noetl_executions_{outcome}", f"Executions {outcome}.", ["playbook"], registry=r
            )
            for outcome in _ENDED.values()
        }
        self.step_seconds = Histogram(
            "noetl_step_duration_seconds",
            "From a step's entry to its end, by tool kind and outcome.",
            ["tool_kind", "status"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.command_seconds = Histogram(
            "noetl_command_duration_seconds",
            "From a command's start on its worker to its outcome, by tool kind and outcome.",
            ["tool_kind", "status"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.commands = Counter(
            "noetl_commands",
            "Commands by what happened: issued, reissued (attempt > 1), claimed, completed, failed, expired.",
            ["event", "pool", "tool_kind"],
            registry=r,
        )
        self.http_seconds = Histogram(
            "noetl_http_request_duration_seconds",
            "HTTP request latency by route template.",
            ["method", "route", "status"],
            buckets=HTTP_BUCKETS,
            registry=r,
        )
        self.append_seconds = Histogram(
            "noetl_store_append_duration_seconds",
            "Latency of one atomic append of events to the store.",
            buckets=APPEND_BUCKETS,
            registry=r,
        )
        self._playbook: dict[int, str] = {}  # running execution -> its playbook path
        self._steps: dict[int, dict[str, datetime]] = {}  # execution -> step -> entered at
        self._kinds: dict[int, dict[str, str]] = {}  # execution -> step -> tool kind
        self._commands: dict[str, tuple[str, str, datetime | None]] = {}  # id -> (pool, kind, started)
        # (metric, *label values) -> the labelled series: `labels()` takes a lock and checks its
        # values on every call, and the hot paths observe several series per command.
        self._series: dict[tuple[Any, ...], Any] = {}

    def watch(self, control: ControlPlane) -> None:
        """Listen to `control`'s events and collect its live figures at scrape time."""
        control.add_listener(self.observe)
        self.registry.register(LiveCollector(control))

    # ------------------------------------------------------------------ the listener

    def _labelled(self, metric: Any, *values: str) -> Any:
        key = (metric, *values)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = metric.labels(*values)
        return series

    def observe(self, event: Event) -> None:
        handler = _HANDLERS.get(event.event_type)
        if handler is not None:
            handler(self, event)

    def _playbook_started(self, event: Event) -> None:
        path = str((event.context or {}).get("path") or event.node_name or UNKNOWN)
        self._playbook[event.execution_id] = path
        self.started.labels(path).inc()

    def _playbook_ended(self, event: Event) -> None:
        path = self._playbook.pop(event.execution_id, UNKNOWN)
        self.ended[_ENDED[event.event_type]].labels(path).inc()
        status = "failed" if event.event_type == ev.PLAYBOOK_FAILED else "cancelled"
        for step in list(self._steps.get(event.execution_id, ())):
            self._end_step(event.execution_id, step, event, status)
        self._steps.pop(event.execution_id, None)
        self._kinds.pop(event.execution_id, None)

    def _step_entered(self, event: Event) -> None:
        if event.node_name:
            self._steps.setdefault(event.execution_id, {})[event.node_name] = event.created_at

    def _step_exited(self, event: Event) -> None:
        if event.node_name:
            self._end_step(event.execution_id, event.node_name, event, str(event.status or "").lower())

    def _end_step(self, execution_id: int, step: str, event: Event, status: str) -> None:
        entered = self._steps.get(execution_id, {}).pop(step, None)
        kind = self._kinds.get(execution_id, {}).get(step, UNKNOWN)
        if entered is not None:
            seconds = max(0.0, (event.created_at - entered).total_seconds())
            self._labelled(self.step_seconds, kind, status or "completed").observe(seconds)

    def _issued(self, event: Event) -> None:
        meta = event.meta or {}
        pool, kind = str(meta.get("pool") or "shared"), str(meta.get("tool_kind") or UNKNOWN)
        step = meta.get("step")
        if step:
            self._kinds.setdefault(event.execution_id, {})[str(step)] = kind
        self._commands[str(meta.get("command_id"))] = (pool, kind, None)
        self._labelled(self.commands, "issued", pool, kind).inc()
        if int(meta.get("attempt") or 1) > 1:
            self._labelled(self.commands, "reissued", pool, kind).inc()

    def _claimed(self, event: Event) -> None:
        pool, kind, _ = self._commands.get(event.command_id or "", (UNKNOWN, UNKNOWN, None))
        self._labelled(self.commands, "claimed", pool, kind).inc()

    def _started(self, event: Event) -> None:
        command_id = event.command_id or ""
        known = self._commands.get(command_id)
        if known is not None:
            self._commands[command_id] = (known[0], known[1], event.created_at)

    def _settled(self, event: Event) -> None:
        outcome = {ev.COMMAND_COMPLETED: "completed", ev.COMMAND_FAILED: "failed"}.get(
            event.event_type, "expired"
        )
        pool, kind, started = self._commands.pop(event.command_id or "", (UNKNOWN, UNKNOWN, None))
        self._labelled(self.commands, outcome, pool, kind).inc()
        if started is not None and outcome != "expired":
            seconds = max(0.0, (event.created_at - started).total_seconds())
            self._labelled(self.command_seconds, kind, outcome).observe(seconds)

    # ------------------------------------------------------------------ requests

    def time_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """One request's latency, by its route template (the labelled series are kept: the hot
        routes are timed on every worker report)."""
        self._labelled(self.http_seconds, method, route, str(status)).observe(seconds)

    # ------------------------------------------------------------------ the store

    def time_appends(self, store: Any) -> None:
        """Time every `store.append` (the instance's method is wrapped, not the class)."""
        append: Callable[..., None] = store.append
        histogram = self.append_seconds

        def timed(events: Any, *, strict: bool = False) -> None:
            with histogram.time():
                append(events, strict=strict)

        setattr(store, "append", timed)  # noqa: B010 - an instance attribute shadows the method


_HANDLERS: dict[str, Callable[[ServerMetrics, Event], None]] = {
    ev.PLAYBOOK_STARTED: ServerMetrics._playbook_started,
    ev.PLAYBOOK_COMPLETED: ServerMetrics._playbook_ended,
    ev.PLAYBOOK_FAILED: ServerMetrics._playbook_ended,
    ev.PLAYBOOK_CANCELLED: ServerMetrics._playbook_ended,
    ev.STEP_ENTER: ServerMetrics._step_entered,
    ev.STEP_EXIT: ServerMetrics._step_exited,
    ev.COMMAND_ISSUED: ServerMetrics._issued,
    ev.COMMAND_CLAIMED: ServerMetrics._claimed,
    ev.COMMAND_STARTED: ServerMetrics._started,
    ev.COMMAND_COMPLETED: ServerMetrics._settled,
    ev.COMMAND_FAILED: ServerMetrics._settled,
    ev.COMMAND_EXPIRED: ServerMetrics._settled,
}


class LiveCollector(Collector):
    """Figures read at scrape time: commands waiting per pool, live workers, free slots."""

    def __init__(self, control: ControlPlane) -> None:
        self.control = control

    def collect(self) -> Iterable[Metric]:
        return list(self._families())

    def _families(self) -> Iterator[Metric]:
        view = activity_view(self.control)
        depth = GaugeMetricFamily(
            "noetl_queue_depth", "Commands waiting for a worker, per pool.", labels=["pool"]
        )
        pools = {p["pool"]: p["waiting"] for p in view["pools"]}
        for worker in view["workers"]:
            for pool in worker.get("pools") or ():
                pools.setdefault(pool, 0)
        for pool, waiting in sorted(pools.items()):
            depth.add_metric([pool], waiting)
        yield depth
        registered = [w for w in view["workers"] if w["kind"] == "worker_pool"]
        yield GaugeMetricFamily(
            "noetl_workers_live", "Workers heard from within a lease.", value=len(registered)
        )
        yield GaugeMetricFamily(
            "noetl_worker_free_slots",
            "Free command slots of the live workers.",
            value=sum(w.get("free_slots") or 0 for w in registered),
        )
        yield GaugeMetricFamily(
            "noetl_commands_running",
            "Commands claimed and not finished (held under a lease).",
            value=sum(len(w["running"]) for w in view["workers"]),
        )


__all__ = ["LiveCollector", "ServerMetrics"]
