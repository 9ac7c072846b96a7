"""Typed model of a parsed playbook.

The parser (`noetl.dsl.parser`) builds these from YAML; everything downstream (engine, worker,
tools) reads only these. Tool configurations stay raw (unrendered) dicts: rendering is the
engine's and the worker's job.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

NextMode = Literal["exclusive", "inclusive"]
LoopMode = Literal["sequential", "parallel", "cursor"]
PolicyAction = Literal["continue", "retry", "fail", "jump", "break"]
Backoff = Literal["fixed", "linear", "exponential"]

# Tool fields the engine never renders for pipeline items: the worker renders them later,
# with `output` and earlier tasks' values in scope.
DEFERRED_PIPELINE_KEYS = frozenset({"set", "input", "args", "spec", "command", "query"})


@dataclass(frozen=True)
class PolicyRule:
    """One entry of `tool.spec.policy.rules`: `{when, then: {do, ...}}` or `{else: {...}}`."""

    action: PolicyAction
    when: str | bool | None = None  # None for the `else` rule
    is_else: bool = False
    attempts: int | None = None  # retry: total attempts including the first
    delay: float | None = None  # retry: seconds before the second attempt
    backoff: Backoff = "fixed"
    to: str | None = None  # jump: the label of the pipeline task to continue at
    set: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ToolSpec:
    """A single tool call: `kind` plus its raw configuration.

    `config` holds every key of the tool mapping except `kind` (e.g. `code`, `input`, `url`,
    `command`, `auth`, `spec`, `set`), unrendered. `policy` and `set` are lifted out of it for
    convenience; they stay in `config` too.
    """

    kind: str
    config: dict[str, Any]
    label: str | None = None  # the task name inside a pipeline
    policy: tuple[PolicyRule, ...] = ()
    set: dict[str, Any] = field(default_factory=dict)  # task-level `set` (pipelines)
    line: int | None = None


@dataclass(frozen=True)
class Cursor:
    """`loop.cursor: {kind, auth, claim}`: the query that claims a frame of work rows."""

    claim: str  # SQL (a template; `{{ __frame_max_rows }}` is the frame's max_rows)
    kind: str = "postgres"  # the tool that runs the claim
    config: dict[str, Any] = field(default_factory=dict)  # the rest (auth, connection, ...), raw


@dataclass(frozen=True)
class Loop:
    """`loop: {in, iterator, spec: {mode, max_in_flight}}`, or a cursor loop
    `loop: {cursor, iterator, spec: {mode: cursor, frame: {max_rows, row_concurrency}}}`."""

    in_: Any  # a template string, or a literal list/map/number (None for a cursor loop)
    iterator: str
    mode: LoopMode = "sequential"
    max_in_flight: int | None = None
    cursor: Cursor | None = None
    max_rows: int = 1  # cursor: rows one claim may return
    row_concurrency: int = 1  # cursor: rows of a frame in flight at once


@dataclass(frozen=True)
class Arc:
    """One routing target of `next`."""

    step: str
    when: str | bool | None = None  # None: always matches
    set: dict[str, Any] = field(default_factory=dict)
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Next:
    """Normalised `next` (all four upstream forms map to this)."""

    mode: NextMode
    arcs: tuple[Arc, ...]


@dataclass(frozen=True)
class Step:
    name: str
    tool: ToolSpec | None = None  # a single tool; None for a pipeline
    pipeline: tuple[ToolSpec, ...] | None = None  # `tool: [...]`
    desc: str | None = None
    when: str | bool | None = None  # enable guard
    loop: Loop | None = None
    next: Next | None = None  # None: a terminal step
    set: dict[str, Any] = field(default_factory=dict)  # step-level, durable
    input: dict[str, Any] = field(default_factory=dict)  # step-level input (merged under tool input)
    args: dict[str, Any] = field(default_factory=dict)
    line: int | None = None

    @property
    def tool_kind(self) -> str:
        return "task_sequence" if self.pipeline is not None else (self.tool.kind if self.tool else "noop")


@dataclass(frozen=True)
class Playbook:
    name: str
    path: str
    steps: dict[str, Step]  # in document order
    workload: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    workbook: dict[str, ToolSpec] = field(default_factory=dict)
    keychain: tuple[dict[str, Any], ...] = ()
    api_version: str = "noetl.io/v2"
    kind: str = "Playbook"
    source: str | None = None  # the file it was read from, when known

    @property
    def start(self) -> Step:
        return self.steps["start"]
