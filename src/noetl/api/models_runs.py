"""Answers of the run history API (`/api/runs/*`, `/api/activity`): what
`noetl.observability.history`, `runview` and `activity` build, as pydantic models so the OpenAPI
document describes them exactly. Ids are strings; values a step produced (results, workloads)
are any JSON. Optional fields a view leaves out (a loop step's `loop`, an in-process worker's
`capacity`) stay out of the answer (`noetl.api.routing.JsonRoute`)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from noetl.api.models import Answer
from noetl.api.types import IdText, OptionalIdText


class RunRow(Answer):
    execution_id: IdText
    path: str | None
    catalog_id: OptionalIdText
    status: str
    started_at: str | None
    completed_at: str | None
    duration_ms: float | None = Field(description="Up to now while the run is running.")
    parent_execution_id: OptionalIdText
    error: str | None


class RunPage(Answer):
    runs: list[RunRow]
    limit: int
    offset: int
    has_more: bool = Field(description="Whether another page follows.")


class AttemptOut(Answer):
    """One command of a step (tries under a retry policy are its `errors`)."""

    command_id: str
    attempt: int
    tool_kind: str | None
    iteration: int | None
    worker_id: str | None
    status: str = Field(description="issued, running, completed, failed or expired.")
    issued_at: str | None
    started_at: str | None
    ended_at: str | None
    duration_ms: float | None
    result: Any
    stdout: str | None
    stderr: str | None
    errors: list[str]


class LoopProgress(Answer):
    total: int
    done: int
    failed: int
    running: int


class StepOut(Answer):
    name: str
    status: str
    tool_kind: str | None
    started_at: str | None
    ended_at: str | None
    duration_ms: float | None
    error: str | None
    attempts: list[AttemptOut] = Field(description="A loop step: the attempts outside iterations.")
    result: Any
    loop: LoopProgress | None = Field(default=None, description="Only for a loop step.")
    iterations: list[AttemptOut] | None = Field(
        default=None, description="Only for a loop step: the first iterations (the rest are paged)."
    )


class GraphNode(Answer):
    name: str
    status: str
    tool_kind: str | None
    loop: bool


class GraphEdge(Answer):
    from_: str = Field(alias="from")
    to: str
    when: str | None
    taken: bool


class Graph(Answer):
    nodes: list[GraphNode]
    edges: list[GraphEdge]


class ChildRun(RunRow):
    iterator_index: int | None
    parent_step: str | None


class TimelineRow(Answer):
    event_id: IdText
    event_type: str
    node_name: str | None
    status: str | None
    worker_id: str | None
    iteration: int | None
    created_at: str | None


class RunView(Answer):
    execution_id: IdText
    path: str | None
    status: str
    started_at: str | None
    completed_at: str | None
    duration_ms: float | None
    error: str | None
    workload: Any
    trace: Any
    parent_execution_id: OptionalIdText
    iterator: dict[str, Any] | None
    catalog_id: OptionalIdText
    steps: list[StepOut]
    graph: Graph
    children: list[ChildRun]
    timeline: list[TimelineRow] = Field(description="The latest events, oldest first.")
    events_total: int


class LogRow(AttemptOut):
    step: str


class RunLogs(Answer):
    execution_id: IdText
    status: str
    attempts: list[LogRow]


class IterationPage(Answer):
    step: str
    total: int
    offset: int
    iterations: list[AttemptOut]


class PoolWaiting(Answer):
    pool: str
    waiting: int


class RunningCommand(Answer):
    command_id: str
    execution_id: IdText
    step: str | None


class WorkerActivity(Answer):
    name: str
    kind: str
    status: str
    pools: list[str]
    running: list[RunningCommand]
    hostname: str | None = None
    capacity: Any = None
    free_slots: int | None = None
    heartbeat: str | None = None


class Activity(Answer):
    pools: list[PoolWaiting] = Field(description="Commands waiting, per pool.")
    workers: list[WorkerActivity]


__all__ = [
    "Activity",
    "IterationPage",
    "RunLogs",
    "RunPage",
    "RunView",
]
