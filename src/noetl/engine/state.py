"""The folded state of one execution. Only the engine's own modules mutate it: `noetl.engine.fold`
folds events in; the decisions set the few facts the log does not carry (a loop's aggregate just
before its step exits, the edges of a quiet cycle, hand-overs)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

PENDING = "pending"
RUNNING = "running"
COMPLETED = "completed"
FAILED = "failed"
SKIPPED = "skipped"

LIVE = "live"
DEAD = "dead"


@dataclass
class CursorState:
    """A cursor loop's claims: one frame at a time, each a claim command then its rows' bodies."""

    row_concurrency: int = 1
    frame: int = 0  # the frame being claimed or worked on
    frames: int = 0  # claims that returned rows
    frame_start: int = 0  # loop index of the current frame's first row
    claiming: bool = False  # a claim command is outstanding
    drained: bool = False  # a claim returned no rows
    error: str | None = None  # a claim's result had no list of rows


@dataclass
class LoopState:
    items: list[Any]
    iterator: str
    mode: str
    max_in_flight: int | None
    results: list[Any]
    issued: int = 0  # iterations dispatched so far (the next index to dispatch)
    done: int = 0  # iterations finished
    in_flight: int = 0
    succeeded: int = 0  # iterations whose tool succeeded
    failed: int = 0  # iterations that failed (a policy rule may have continued past them)
    cursor: CursorState | None = None  # a cursor loop (its items grow as frames are claimed)

    @property
    def total(self) -> int:
        return len(self.items)


@dataclass
class StepState:
    name: str
    status: str = PENDING
    runs: int = 0  # times entered
    data: Any = None  # the step's user data (its result)
    view: Any = None  # what templates see under the step's name (data plus a `data` alias)
    has_result: bool = False
    error: str | None = None
    loop: LoopState | None = None
    completed_event_id: int | None = None


@dataclass
class CommandState:
    command_id: str
    step: str
    event_id: int
    kind: str
    index: int | None = None  # loop iteration
    frame: int | None = None  # a cursor loop's claim: the frame it claims
    status: str = "issued"  # issued | claimed | started | completed | failed
    worker_id: str | None = None
    attempt: int = 1
    claimed_at: datetime | None = None
    # Handed to a worker that may run it before its claim is recorded (a notification carrying
    # the command): a failing run waits for it as for a claimed one. Not in the log.
    handed_over: bool = False


@dataclass
class ExecutionState:
    execution_id: int
    status: str = "INITIAL"  # INITIAL | RUNNING | COMPLETED | FAILED | CANCELLED
    workload: dict[str, Any] = field(default_factory=dict)
    path: str | None = None
    catalog_id: int | None = None
    parent_execution_id: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)  # playbook_started meta (pool, trace, iterator_*)
    ctx: dict[str, Any] = field(default_factory=dict)  # durable context (`set: ctx.*`)
    steps: dict[str, StepState] = field(default_factory=dict)
    commands: dict[str, CommandState] = field(default_factory=dict)  # unfinished commands only
    call_results: dict[str, dict[str, Any]] = field(default_factory=dict)  # command_id -> call.done payload
    edges: dict[tuple[str, str], str] = field(default_factory=dict)  # (source, target) -> live | dead
    failed_steps: list[str] = field(default_factory=list)
    error: str | None = None
    last_completed: str | None = None
    result: Any = None  # the execution's result once it completed
    version: int = 0  # bumped whenever something templates can see changes
    events_applied: int = 0
    last_event_id: int = 0
    cancel_requested: bool = False

    @property
    def terminal(self) -> bool:
        return self.status in ("COMPLETED", "FAILED", "CANCELLED")

    @property
    def failing(self) -> bool:
        return bool(self.failed_steps) or self.cancel_requested

    def running_commands(self) -> int:
        return sum(
            1
            for c in self.commands.values()
            if c.status in ("claimed", "started") or (c.handed_over and c.status == "issued")
        )
