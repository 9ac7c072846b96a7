"""OpenTelemetry spans of runs, made from the orchestrator's committed events.

One span per execution, one per step (a child of its execution's span) and one per command (a
child of its step's span; attributes: tool kind, attempt, worker, iteration). An execution
started with a W3C `trace` (`POST /api/execute` body `trace: {"traceparent": ...}`, recorded on
`playbook_started` meta) continues that trace; a nested execution's span is a child of the
span of the parent's command that started it (or of the parent execution's span), so a run and
its children form one trace. Span times are the events' times.

Only imported when tracing is on (`OTEL_EXPORTER_OTLP_ENDPOINT`, or a provider given to the app).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from noetl.engine import events as ev
from noetl.engine.events import Event

_PROPAGATOR = TraceContextTextMapPropagator()


def otlp_provider(endpoint: str, service_name: str = "noetl-server") -> TracerProvider:
    """A provider exporting spans in batches to the OTLP/HTTP collector at `endpoint` (the base
    URL, as OTEL_EXPORTER_OTLP_ENDPOINT gives it; spans go to `<endpoint>/v1/traces`)."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    exporter = OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces")
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def _ns(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000_000)


class RunTracer:
    def __init__(self, provider: Any) -> None:
        self.tracer = provider.get_tracer("noetl")
        self._runs: dict[int, Span] = {}
        self._steps: dict[int, dict[str, Span]] = {}
        self._commands: dict[str, Span] = {}

    def observe(self, event: Event) -> None:
        handler = _HANDLERS.get(event.event_type)
        if handler is not None:
            handler(self, event)

    # ------------------------------------------------------------------ executions

    def _started(self, event: Event) -> None:
        meta = event.meta or {}
        path = str((event.context or {}).get("path") or event.node_name or "playbook")
        attributes: dict[str, Any] = {"noetl.execution_id": str(event.execution_id), "noetl.playbook": path}
        if event.parent_execution_id is not None:
            attributes["noetl.parent_execution_id"] = str(event.parent_execution_id)
        if "iterator_index" in meta:
            attributes["noetl.iterator_index"] = int(meta["iterator_index"])
        span = self.tracer.start_span(
            f"execution {path}",
            context=self._parent_of(event, meta),
            start_time=_ns(event.created_at),
            attributes=attributes,
        )
        self._runs[event.execution_id] = span

    def _parent_of(self, event: Event, meta: Mapping[str, Any]) -> Context | None:
        """The parent command's span, else the parent execution's, else the given W3C trace."""
        command = self._commands.get(str(meta.get("parent_command_id") or ""))
        if command is not None:
            return trace.set_span_in_context(command)
        parent_run = self._runs.get(event.parent_execution_id or 0)
        if parent_run is not None:
            return trace.set_span_in_context(parent_run)
        carrier = meta.get("trace")
        if isinstance(carrier, Mapping) and carrier.get("traceparent"):
            return _PROPAGATOR.extract({str(k): str(v) for k, v in carrier.items()})
        return None

    def _ended(self, event: Event) -> None:
        end = _ns(event.created_at)
        for step in self._steps.pop(event.execution_id, {}).values():
            step.end(end_time=end)
        span = self._runs.pop(event.execution_id, None)
        if span is None:
            return
        status = event.event_type.rsplit(".", 1)[-1]
        span.set_attribute("noetl.status", status.upper())
        if event.event_type == ev.PLAYBOOK_FAILED:
            span.set_status(Status(StatusCode.ERROR, str((event.meta or {}).get("error") or "failed")))
        span.end(end_time=end)

    # ------------------------------------------------------------------ steps

    def _step_entered(self, event: Event) -> None:
        run = self._runs.get(event.execution_id)
        name = event.node_name
        if run is None or not name:
            return
        steps = self._steps.setdefault(event.execution_id, {})
        previous = steps.pop(name, None)
        if previous is not None:  # a step in a cycle runs again
            previous.end(end_time=_ns(event.created_at))
        steps[name] = self.tracer.start_span(
            f"step {name}",
            context=trace.set_span_in_context(run),
            start_time=_ns(event.created_at),
            attributes={"noetl.execution_id": str(event.execution_id), "noetl.step": name},
        )

    def _step_exited(self, event: Event) -> None:
        span = self._steps.get(event.execution_id, {}).pop(event.node_name or "", None)
        if span is not None:
            span.set_attribute("noetl.status", str(event.status or "COMPLETED"))
            span.end(end_time=_ns(event.created_at))

    # ------------------------------------------------------------------ commands

    def _issued(self, event: Event) -> None:
        meta = event.meta or {}
        step = str(meta.get("step") or event.node_name or "")
        parent = self._steps.get(event.execution_id, {}).get(step) or self._runs.get(event.execution_id)
        if parent is None:
            return
        attributes: dict[str, Any] = {
            "noetl.execution_id": str(event.execution_id),
            "noetl.step": step,
            "noetl.command_id": str(meta.get("command_id")),
            "noetl.tool_kind": str(meta.get("tool_kind") or ""),
            "noetl.attempt": int(meta.get("attempt") or 1),
            "noetl.pool": str(meta.get("pool") or "shared"),
        }
        if isinstance(meta.get("iteration_index"), int):
            attributes["noetl.iteration"] = meta["iteration_index"]
        self._commands[str(meta.get("command_id"))] = self.tracer.start_span(
            f"command {step}",
            context=trace.set_span_in_context(parent),
            start_time=_ns(event.created_at),
            attributes=attributes,
        )

    def _claimed(self, event: Event) -> None:
        span = self._commands.get(event.command_id or "")
        if span is not None and event.worker_id:
            span.set_attribute("noetl.worker_id", event.worker_id)

    def _settled(self, event: Event) -> None:
        span = self._commands.pop(event.command_id or "", None)
        if span is None:
            return
        if event.event_type == ev.COMMAND_FAILED:
            span.set_status(Status(StatusCode.ERROR, str(event.payload.get("error") or "failed")))
        elif event.event_type == ev.COMMAND_EXPIRED:
            span.set_attribute("noetl.expired", True)
        span.end(end_time=_ns(event.created_at))


_HANDLERS: dict[str, Callable[[RunTracer, Event], None]] = {
    ev.PLAYBOOK_STARTED: RunTracer._started,
    ev.PLAYBOOK_COMPLETED: RunTracer._ended,
    ev.PLAYBOOK_FAILED: RunTracer._ended,
    ev.PLAYBOOK_CANCELLED: RunTracer._ended,
    ev.STEP_ENTER: RunTracer._step_entered,
    ev.STEP_EXIT: RunTracer._step_exited,
    ev.STEP_SKIPPED: RunTracer._step_exited,
    ev.COMMAND_ISSUED: RunTracer._issued,
    ev.COMMAND_CLAIMED: RunTracer._claimed,
    ev.COMMAND_COMPLETED: RunTracer._settled,
    ev.COMMAND_FAILED: RunTracer._settled,
    ev.COMMAND_EXPIRED: RunTracer._settled,
}

__all__ = ["RunTracer", "otlp_provider"]
