"""A command as a worker sees it, and the events a worker reports about it.

`Command` is built from a `command.issued` event (or a claim answer); `CommandEvents` builds the
events reported for it (`command.claimed`, `command.started`, `call.done` + `command.completed`,
`call.error` + `command.failed`), whoever runs it: a worker, the local runtime, or the control
plane itself for a nested playbook it runs natively.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from noetl.engine import events as ev
from noetl.engine.events import Event, utcnow
from noetl.ids import observe
from noetl.tools.base import ChildRequest


@dataclass
class Command:
    """A command as a worker sees it (built from its `command.issued` event)."""

    execution_id: int
    event_id: int
    command_id: str
    step: str
    kind: str
    tool_config: Any
    render_context: dict[str, Any] = field(default_factory=dict)
    args: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_event(cls, event: Event) -> Command:
        """The command as a remote worker would receive it: a JSON copy, so a tool that mutates
        its inputs never touches the engine's state (local and distributed runs behave alike)."""
        context = json_copy(event.context or {})
        meta = json_copy(event.meta or {})
        return cls(
            execution_id=event.execution_id,
            event_id=event.event_id,
            command_id=str(meta.get("command_id")),
            step=event.node_name or "",
            kind=str(meta.get("tool_kind") or event.node_type or "noop"),
            tool_config=context.get("tool_config") or {},
            render_context=dict(context.get("render_context") or {}),
            args=dict(context.get("args") or {}),
            meta=dict(meta),
        )


def refers_to(command: Command, name: str) -> bool:
    """Whether a command names `name` (a credential) as a whole string anywhere in what it runs
    with: its tool config, its arguments or the context it renders templates in."""

    def walk(value: Any) -> bool:
        if isinstance(value, str):
            return value == name
        if isinstance(value, dict):
            return any(walk(v) for v in value.values())
        if isinstance(value, list):
            return any(walk(v) for v in value)
        return False

    return walk(command.tool_config) or walk(command.args) or walk(command.render_context)


def command_body(event: Event) -> dict[str, Any]:
    """The claim answer for a `command.issued` event (what workers receive: the wire shape of a
    command, `{event_id, execution_id, node_name, action, context, meta}`)."""
    meta = event.meta or {}
    return {
        "event_id": event.event_id,
        "execution_id": event.execution_id,
        "node_id": event.node_name,
        "node_name": event.node_name,
        "action": meta.get("tool_kind") or event.node_type,
        "context": event.context or {},
        "meta": meta,
    }


def command_from_body(body: Mapping[str, Any]) -> Command:
    """The `Command` a claim answer describes (the inverse of `command_body`)."""
    node_name = body.get("node_name") or body.get("node_id")
    context = body.get("context")
    meta = body.get("meta")
    event = Event(
        event_id=int(body["event_id"]),
        execution_id=int(body["execution_id"]),
        event_type=ev.COMMAND_ISSUED,
        node_name=str(node_name) if node_name is not None else None,
        node_id=str(node_name) if node_name is not None else None,
        node_type=str(body["action"]) if body.get("action") else None,
        context=dict(context) if isinstance(context, Mapping) else {},
        meta=dict(meta) if isinstance(meta, Mapping) else {},
    )
    return Command.from_event(event)


class CommandEvents:
    """Builds the events one runner (`worker_id`) reports about commands."""

    def __init__(
        self, *, ids: Callable[[], int], worker_id: str, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self.ids = ids
        self.worker_id = worker_id
        self.clock = clock

    def event(self, command: Command, event_type: str, status: str, context: dict[str, Any]) -> Event:
        meta: dict[str, Any] = {"command_id": command.command_id, "worker_id": self.worker_id}
        for key in ("iteration_index", "attempt"):
            if key in command.meta:
                meta[key] = command.meta[key]
        observe(self.ids, command.event_id)  # after the command's issue in the log's order
        return Event(
            event_id=self.ids(),
            execution_id=command.execution_id,
            event_type=event_type,
            node_name=command.step,
            node_id=command.step,
            node_type=command.kind,
            status=status,
            result={"status": status, "context": {"command_id": command.command_id, **context}},
            meta=meta,
            parent_event_id=command.event_id,
            worker_id=self.worker_id,
            created_at=self.clock(),
        )

    def claimed(self, command: Command) -> Event:
        return self.event(command, ev.COMMAND_CLAIMED, "RUNNING", {"worker_id": self.worker_id})

    def started(self, command: Command) -> Event:
        return self.event(command, ev.COMMAND_STARTED, "STARTED", {})

    def failed(self, command: Command, error: str) -> list[Event]:
        """`call.error` + `command.failed`: the command ended in a failure of its step."""
        return [
            self.event(command, ev.CALL_ERROR, "FAILED", {"call_index": 0, "error": error}),
            self.event(command, ev.COMMAND_FAILED, "FAILED", {"error": error}),
        ]

    def completed(
        self, command: Command, result: dict[str, Any], *, extra: dict[str, Any] | None = None
    ) -> list[Event]:
        """`call.done` + `command.completed`; `result` is `{status, context: {data, ...}}`."""
        status = str(result.get("status") or "success")
        done: dict[str, Any] = {"call_index": 0, "result": result, **(extra or {})}
        return [
            self.event(command, ev.CALL_DONE, "COMPLETED", done),
            self.event(command, ev.COMMAND_COMPLETED, status, {"status": status}),
        ]

    def finished(self, command: Command, data: Any, error: str | None) -> list[Event]:
        """The end of a command that produced `data` or failed with `error`."""
        if error is not None:
            return self.failed(command, error)
        return self.completed(command, {"status": "success", "context": {"data": data}})


def child_request(config: Mapping[str, Any]) -> ChildRequest:
    """A nested-playbook request from a `kind: playbook` tool config."""
    workload = config.get("input")
    if not isinstance(workload, Mapping):
        workload = config.get("args")
    if not isinstance(workload, Mapping):
        workload = config.get("payload")
    catalog_id = config.get("catalog_id")
    version = config.get("version")
    return ChildRequest(
        path=str(config["path"]) if config.get("path") else None,
        catalog_id=int(catalog_id) if catalog_id not in (None, "") else None,
        workload=dict(workload) if isinstance(workload, Mapping) else {},
        return_step=str(config["return_step"]) if config.get("return_step") else None,
        version=int(version)
        if isinstance(version, int) or (isinstance(version, str) and version.isdigit())
        else None,
    )


def child_metadata(command: Command, request: ChildRequest) -> dict[str, Any]:
    """Where a child execution started by `command` comes from, as its `playbook_started` meta
    records it (seed 000): the parent step and command, the return step, and, for a command of a
    loop iteration, the iterator metadata (also stamped on every event of the child)."""
    meta = command.meta
    metadata: dict[str, Any] = {"parent_step": command.step, "parent_command_id": command.command_id}
    if request.return_step:
        metadata["return_step"] = request.return_step
    if "iteration_index" in meta:
        metadata["iterator_index"] = meta["iteration_index"]
        metadata["iterator_count"] = meta.get("iteration_total")
        metadata["iterator_item"] = meta.get("iterator_item")
    return metadata


def json_copy(value: Any) -> Any:
    """What a JSON round trip gives (a deep copy with JSON types only)."""
    try:
        return orjson.loads(orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS))
    except TypeError:
        return json.loads(json.dumps(value, default=str))
