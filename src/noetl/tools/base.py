"""The tool port: what every tool kind implements, and the registry that finds them.

A tool receives its configuration already rendered (a plain dict without `kind`) and a
`ToolContext`, and returns a `ToolResult`. Runtime failures the user should see (an HTTP 500,
a SQL error, an exception in user code) come back as `status="error"` results or as a raised
`noetl.errors.ToolError`; the worker turns both into the same outcome. Tools never write events.

Tool modules are imported lazily by kind, so `noetl run` of a python-only playbook never
imports httpx, psycopg or duckdb.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, cast

from noetl.dsl.kinds import TOOL_KINDS
from noetl.errors import ToolError
from noetl.tools import failure

ToolStatus = Literal["success", "error", "timeout"]


@dataclass
class ToolResult:
    status: ToolStatus
    data: Any = None
    error: str | None = None
    stdout: str | None = None
    stderr: str | None = None
    exit_code: int | None = None
    http_status: int | None = None  # HTTP tools: the response status, for `output.http.status`
    retryable: bool = False  # a transient failure a retry rule may act on
    duration_ms: float = 0.0
    # Values set by task-level policy rules (`set: {ctx.x: ...}`): the engine makes them durable.
    ctx_updates: dict[str, Any] = field(default_factory=dict)
    # What went wrong (one of `failure.KINDS`); when None it is worked out from the status.
    error_kind: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "success"

    @property
    def failure_kind(self) -> str | None:
        """What went wrong (`output.error.kind`, one of `failure.KINDS`); None for a success."""
        if self.ok:
            return None
        if self.error_kind:
            return self.error_kind
        if self.status == "timeout":
            return failure.TIMEOUT
        if self.http_status is not None:
            return failure.http_kind(self.http_status) or failure.TOOL
        return failure.TOOL

    @property
    def is_retryable(self) -> bool:
        """Whether a retry may help (`output.error.retryable`): set by the kind when the tool
        named one, else the tool's `retryable` flag or the inferred kind."""
        if self.ok:
            return False
        if self.error_kind:
            return failure.is_retryable(self.error_kind)
        return self.retryable or failure.is_retryable(self.failure_kind)


def failed(kind: str, error: str, **fields: Any) -> ToolResult:
    """A failed result of a known kind; `retryable` follows the kind."""
    status = fields.pop("status", "error")
    return ToolResult(
        status=status, error=error, error_kind=kind, retryable=failure.is_retryable(kind), **fields
    )


@dataclass(frozen=True)
class ChildRequest:
    """A nested playbook a tool asks the runtime to run and wait for."""

    path: str | None
    catalog_id: int | None
    workload: dict[str, Any]
    return_step: str | None = None
    version: int | None = None


@dataclass(frozen=True)
class ChildResult:
    execution_id: int
    status: str  # COMPLETED | FAILED | CANCELLED
    result: Any  # the return_step's result, else the last step's
    error: str | None = None


class CredentialResolver(Protocol):
    def resolve(self, alias: str) -> Mapping[str, Any]:
        """The credential `{name, type, data}` for an alias; raises CredentialError if missing."""
        ...


@dataclass
class ToolContext:
    """What a tool may know about the command it runs."""

    execution_id: int
    step: str
    command_id: str
    render_context: Mapping[str, Any] = field(default_factory=dict)
    credentials: CredentialResolver | None = None
    timeout: float | None = None  # seconds; tools stop the work when it passes
    attempt: int = 1
    # Run a nested playbook and wait for it (pipelines with `kind: playbook` tasks).
    run_child: Callable[[ChildRequest], Awaitable[ChildResult]] | None = None
    base_path: str | None = None  # folder of the playbook file, for relative paths
    memory_mb: int | None = None  # the step's own memory limit (`spec.max_memory_mb`), if any
    default_memory_mb: int | None = None  # the limit of a python step's process without one


@dataclass(frozen=True)
class ToolLimits:
    """Limits of tool calls that set none of their own (read from the settings once, by whoever
    builds the runner: not on every call)."""

    timeout_seconds: float = 3600.0
    memory_mb: int = 2048
    inline_max_bytes: int = 10 * 1024 * 1024  # larger results are stored aside (`result_ref`)

    @classmethod
    def from_settings(cls) -> ToolLimits:
        from noetl.settings import settings

        config = settings()
        return cls(config.tool_timeout_seconds, config.tool_memory_mb, config.result_inline_max_bytes)


def timeout_seconds(config: Mapping[str, Any], ctx: ToolContext) -> float | None:
    """The tool's time limit: `timeout` / `timeout_seconds` in its config, else the context's;
    None (or a non-positive value) means no limit."""
    for key in ("timeout", "timeout_seconds"):
        value = config.get(key)
        if value is None or value == "" or isinstance(value, bool):
            continue
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            continue
        return seconds if seconds > 0 else None
    if ctx.timeout is not None and ctx.timeout > 0:
        return float(ctx.timeout)
    return None


def elapsed_ms(started: float) -> float:
    """Milliseconds since `started` (a `time.perf_counter()` reading)."""
    return (time.perf_counter() - started) * 1000.0


class Tool(Protocol):
    kind: str

    async def run(self, config: dict[str, Any], ctx: ToolContext) -> ToolResult: ...


# kind -> "module:attribute"; modules are imported on first use.
_REGISTRY = TOOL_KINDS  # shared with the parser, which checks kinds against it
_INSTANCES: dict[str, Tool] = {}


def register(kind: str, target: str) -> None:
    """Add or replace a tool kind (`"package.module:ClassName"`)."""
    _REGISTRY[kind] = target
    _INSTANCES.pop(kind, None)


def get_tool(kind: str) -> Tool:
    tool = _INSTANCES.get(kind)
    if tool is not None:
        return tool
    target = _REGISTRY.get(kind)
    if target is None:
        raise ToolError(f"tool kind '{kind}' is not available (known kinds: {', '.join(sorted(_REGISTRY))})")
    module_name, _, attr = target.partition(":")
    cls = getattr(importlib.import_module(module_name), attr)
    tool = cast(Tool, cls())
    _INSTANCES[kind] = tool
    return tool
