"""What a person wants to see of one run, folded from its event log: each step's state, its
commands (attempts) with their duration, result, stdout/stderr and errors, loop progress with
each iteration's result, and the playbook as a graph of steps and arcs.

The fold reads only events (any mode writes the same ones), so the web UI, `noetl logs` against a
server and `noetl logs --store` against a local store show the same thing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from noetl.dsl.model import Playbook
from noetl.engine import events as ev
from noetl.engine.events import Event
from noetl.status import CANCELLED, COMPLETED, FAILED, RUNNING

PENDING, STEP_RUNNING, STEP_COMPLETED, STEP_FAILED, SKIPPED = (
    "pending",
    "running",
    "completed",
    "failed",
    "skipped",
)
MAX_ITERATIONS = 200  # iterations listed in a view; the rest are paged (`iterations`)
MAX_TEXT = 64 * 1024  # characters of stdout/stderr kept per attempt in a view
_STATUSES = {"completed": STEP_COMPLETED, "failed": STEP_FAILED, "skipped": SKIPPED}


def iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def millis(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start).total_seconds() * 1000, 3)


@dataclass
class Attempt:
    """One command of a step: an issue, its claim and its outcome (tries under a retry policy
    are its `errors`)."""

    command_id: str
    step: str
    attempt: int
    tool_kind: str | None
    iteration: int | None
    issued_at: datetime
    worker_id: str | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    status: str = "issued"  # issued | running | completed | failed | expired
    result: Any = None
    stdout: str | None = None
    stderr: str | None = None
    errors: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "command_id": self.command_id,
            "attempt": self.attempt,
            "tool_kind": self.tool_kind,
            "iteration": self.iteration,
            "worker_id": self.worker_id,
            "status": self.status,
            "issued_at": iso(self.issued_at),
            "started_at": iso(self.started_at),
            "ended_at": iso(self.ended_at),
            "duration_ms": millis(self.started_at or self.issued_at, self.ended_at),
            "result": self.result,
            "stdout": _clip(self.stdout),
            "stderr": _clip(self.stderr),
            "errors": self.errors,
        }


@dataclass
class StepView:
    name: str
    status: str = PENDING
    tool_kind: str | None = None
    entered_at: datetime | None = None
    ended_at: datetime | None = None
    loop_total: int | None = None
    attempts: list[Attempt] = field(default_factory=list)
    error: str | None = None

    def latest(self) -> dict[int | None, Attempt]:
        """The latest attempt of each iteration (of the step itself: key None)."""
        found: dict[int | None, Attempt] = {}
        for attempt in self.attempts:
            found[attempt.iteration] = attempt
        return found

    def to_json(self, *, iterations: int = MAX_ITERATIONS) -> dict[str, Any]:
        latest = self.latest()
        body: dict[str, Any] = {
            "name": self.name,
            "status": self.status,
            "tool_kind": self.tool_kind,
            "started_at": iso(self.entered_at),
            "ended_at": iso(self.ended_at),
            "duration_ms": millis(self.entered_at, self.ended_at),
            "error": self.error,
        }
        if self.loop_total is None:
            body["attempts"] = [a.to_json() for a in self.attempts]
            last = latest.get(None)
            body["result"] = last.result if last is not None else None
            return body
        ordered = sorted((i, a) for i, a in latest.items() if i is not None)
        body["loop"] = {
            "total": self.loop_total,
            "done": sum(1 for _, a in ordered if a.status in ("completed", "failed")),
            "failed": sum(1 for _, a in ordered if a.status == "failed"),
            "running": sum(1 for _, a in ordered if a.status in ("issued", "running")),
        }
        body["iterations"] = [a.to_json() for _, a in ordered[:iterations]]
        body["attempts"] = [a.to_json() for a in self.attempts if a.iteration is None]
        body["result"] = None
        return body


class RunFold:
    """Folds the events of one execution into step views (events oldest first)."""

    def __init__(self) -> None:
        self.steps: dict[str, StepView] = {}
        self.commands: dict[str, Attempt] = {}
        self.started: Event | None = None
        self.ended: Event | None = None
        self.fired: dict[str, list[str]] = {}  # step -> the steps its exit fired

    def step(self, name: str) -> StepView:
        found = self.steps.get(name)
        if found is None:
            found = self.steps[name] = StepView(name)
        return found

    def add_all(self, events: Iterable[Event]) -> RunFold:
        for event in events:
            self.add(event)
        return self

    def add(self, event: Event) -> None:
        kind = event.event_type
        if kind == ev.PLAYBOOK_STARTED:
            self.started = event
        elif kind in ev.TERMINAL_TYPES:
            self._end(event)
        elif kind in (ev.STEP_ENTER, ev.STEP_EXIT, ev.STEP_SKIPPED) and event.node_name:
            self._step_event(event)
        elif kind == ev.COMMAND_ISSUED:
            self._issued(event)
        else:
            attempt = self.commands.get(event.command_id or "")
            if attempt is not None:
                _command_event(attempt, event)
                if kind == ev.COMMAND_FAILED:
                    self._command_failed(attempt, event)

    def _step_event(self, event: Event) -> None:
        step = self.step(str(event.node_name))
        payload = event.payload
        if event.event_type == ev.STEP_ENTER:
            step.status, step.entered_at, step.ended_at = STEP_RUNNING, event.created_at, None
            expected = payload.get("iterations_expected")
            if isinstance(expected, int):
                step.loop_total = expected
        elif event.event_type == ev.STEP_SKIPPED:
            step.status, step.ended_at = SKIPPED, event.created_at
        else:
            step.status = _STATUSES.get(str(event.status or "completed").lower(), STEP_COMPLETED)
            step.ended_at = event.created_at
            fired = payload.get("fired")
            if isinstance(fired, list):
                self.fired[step.name] = [str(s) for s in fired]

    def _issued(self, event: Event) -> None:
        meta = event.meta or {}
        name = str(meta.get("step") or event.node_name or "")
        step = self.step(name)
        if step.status == PENDING:
            step.status = STEP_RUNNING
        index = meta.get("iteration_index")
        attempt = Attempt(
            command_id=str(meta.get("command_id")),
            step=name,
            attempt=int(meta.get("attempt") or 1),
            tool_kind=meta.get("tool_kind"),
            iteration=int(index) if isinstance(index, int) else None,
            issued_at=event.created_at,
        )
        step.tool_kind = step.tool_kind or attempt.tool_kind
        step.attempts.append(attempt)
        self.commands[attempt.command_id] = attempt

    def _command_failed(self, attempt: Attempt, event: Event) -> None:
        step = self.steps.get(attempt.step)
        if step is not None and step.loop_total is None:
            step.error = attempt.errors[-1] if attempt.errors else None

    def _end(self, event: Event) -> None:
        self.ended = event
        meta = event.meta or {}
        for name in meta.get("failed_steps") or ():
            step = self.step(str(name))
            step.status, step.ended_at = STEP_FAILED, step.ended_at or event.created_at
        for step in self.steps.values():
            if step.status == STEP_RUNNING:
                step.status = "cancelled" if event.event_type == ev.PLAYBOOK_CANCELLED else STEP_FAILED
                step.ended_at = event.created_at

    # ------------------------------------------------------------------ the view

    def status(self) -> str:
        if self.ended is None:
            return RUNNING
        return {
            ev.PLAYBOOK_COMPLETED: COMPLETED,
            ev.PLAYBOOK_FAILED: FAILED,
            ev.PLAYBOOK_CANCELLED: CANCELLED,
        }[self.ended.event_type]

    def header(self) -> dict[str, Any]:
        started = self.started
        meta = (started.meta or {}) if started else {}
        context = (started.context or {}) if started else {}
        end_meta = (self.ended.meta or {}) if self.ended else {}
        begin = started.created_at if started else None
        end = self.ended.created_at if self.ended else None
        return {
            "path": context.get("path") or (started.node_name if started else None),
            "status": self.status(),
            "started_at": iso(begin),
            "completed_at": iso(end),
            "duration_ms": millis(begin, end),
            "error": end_meta.get("error"),
            "workload": context.get("workload"),
            "trace": meta.get("trace"),
            "parent_execution_id": _text_id(started.parent_execution_id if started else None),
            "iterator": {k: meta[k] for k in ("iterator_index", "iterator_count") if k in meta} or None,
            "catalog_id": _text_id(started.catalog_id if started else None),
        }

    def view(self, playbook: Playbook | None = None, *, iterations: int = MAX_ITERATIONS) -> dict[str, Any]:
        order = list(playbook.steps) if playbook is not None else []
        names = order + [name for name in self.steps if name not in order]
        steps = [self.step(name).to_json(iterations=iterations) for name in names]
        if playbook is not None:  # a step that issued no command still has a kind
            for step in steps:
                declared = playbook.steps.get(step["name"])
                if step["tool_kind"] is None and declared is not None:
                    step["tool_kind"] = declared.tool_kind
        return {**self.header(), "steps": steps, "graph": self.graph(playbook)}

    def graph(self, playbook: Playbook | None) -> dict[str, Any]:
        """Steps and arcs; without the playbook, the arcs that fired."""
        nodes = [
            {
                "name": name,
                "status": step.status,
                "tool_kind": step.tool_kind,
                "loop": step.loop_total is not None,
            }
            for name, step in self.steps.items()
        ]
        taken = {(source, target) for source, targets in self.fired.items() for target in targets}
        if playbook is None:
            return {
                "nodes": nodes,
                "edges": [{"from": s, "to": t, "when": None, "taken": True} for s, t in taken],
            }
        nodes = [
            {
                "name": name,
                "status": self.steps[name].status if name in self.steps else PENDING,
                "tool_kind": step.tool_kind,
                "loop": step.loop is not None,
            }
            for name, step in playbook.steps.items()
        ]
        edges = [
            {"from": name, "to": arc.step, "when": _when(arc.when), "taken": (name, arc.step) in taken}
            for name, step in playbook.steps.items()
            for arc in (step.next.arcs if step.next else ())
        ]
        return {"nodes": nodes, "edges": edges}

    def logs(self, step: str | None = None) -> list[dict[str, Any]]:
        """Every attempt (of one step, or of all), oldest first, with its step's name."""
        found: list[dict[str, Any]] = []
        for name, view in self.steps.items():
            if step is not None and name != step:
                continue
            found.extend({"step": name, **attempt.to_json()} for attempt in view.attempts)
        return sorted(found, key=lambda row: row["issued_at"] or "")


def _command_event(attempt: Attempt, event: Event) -> None:
    kind = event.event_type
    payload = event.payload
    if kind == ev.COMMAND_CLAIMED:
        attempt.worker_id = event.worker_id
        attempt.status = "running"
    elif kind == ev.COMMAND_STARTED:
        attempt.started_at = attempt.started_at or event.created_at
        attempt.worker_id = attempt.worker_id or event.worker_id
        attempt.status = "running"
    elif kind == ev.CALL_DONE:
        outcome = payload.get("result")
        inner = outcome.get("context") if isinstance(outcome, Mapping) else None
        if isinstance(inner, Mapping):
            attempt.result = inner.get("data")
            attempt.stdout = _join(attempt.stdout, inner.get("stdout"))
            attempt.stderr = _join(attempt.stderr, inner.get("stderr"))
            if inner.get("error"):
                attempt.errors.append(str(inner["error"]))
    elif kind == ev.CALL_ERROR:
        if payload.get("error"):
            attempt.errors.append(str(payload["error"]))
        attempt.stdout = _join(attempt.stdout, payload.get("stdout"))
        attempt.stderr = _join(attempt.stderr, payload.get("stderr"))
    elif kind in (ev.COMMAND_COMPLETED, ev.COMMAND_FAILED, ev.COMMAND_EXPIRED):
        attempt.ended_at = event.created_at
        attempt.status = {ev.COMMAND_COMPLETED: "completed", ev.COMMAND_FAILED: "failed"}.get(kind, "expired")
        if kind == ev.COMMAND_FAILED and payload.get("error"):
            message = str(payload["error"])
            if message not in attempt.errors:
                attempt.errors.append(message)


def _join(current: str | None, more: Any) -> str | None:
    if not isinstance(more, str) or not more:
        return current
    return more if current is None else current + more


def _clip(text: str | None) -> str | None:
    if text is None or len(text) <= MAX_TEXT:
        return text
    return text[:MAX_TEXT] + f"\n... ({len(text) - MAX_TEXT} more characters)"


def _when(value: Any) -> str | None:
    if value is None or value is True:
        return None
    return str(value)


def _text_id(value: int | None) -> str | None:
    return None if value is None else str(value)


__all__ = ["MAX_ITERATIONS", "Attempt", "RunFold", "StepView", "iso", "millis"]
