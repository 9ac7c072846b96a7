"""Run one command: render what the engine left to the worker, run the tool (or the pipeline of
tools) under its policy rules, and produce the events a worker reports.

The same executor serves the local runtime and remote workers; it does no I/O of its own besides
the tools it calls.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from noetl.dsl.model import PolicyRule
from noetl.engine import events as ev
from noetl.engine.events import Event, utcnow
from noetl.engine.results import normalise_set_key, plain, view_of
from noetl.errors import NoetlError, TemplateError
from noetl.logcontext import enter_command, leave_command
from noetl.secrets import enter_execution, leave_execution
from noetl.status import COMPLETED
from noetl.template import render_value
from noetl.tools import failure
from noetl.tools.base import ChildRequest, ToolContext, ToolLimits, ToolResult, get_tool, timeout_seconds
from noetl.tools.base import failed as failed_result
from noetl.tools.results import RefError, externalize, output_policy
from noetl.worker import policy
from noetl.worker.command import Command, CommandEvents, child_request

log = logging.getLogger(__name__)

_DEFAULT_LIMITS = ToolLimits()
_MAX_TASK_RUNS = 10_000  # guards pipelines whose `jump` rules loop forever
_OUTPUT_LIMIT = 64 * 1024
_TIMEOUT_GRACE = 2.0  # seconds past a tool's own time limit before the executor stops it
# Tools whose own time limit kills what they run (the python tool's process pool): no second
# timer per command for them.
_SELF_TIMED = frozenset({"python"})


@dataclass
class Attempted:
    """The outcome of running one tool under its policy."""

    result: ToolResult
    action: str  # continue | fail | break | jump
    rule: PolicyRule | None
    attempts: int
    output: dict[str, Any]


class Executor:
    def __init__(
        self,
        *,
        ids: Callable[[], int],
        worker_id: str = "local",
        credentials: Any = None,
        run_child: Callable[[ChildRequest], Any] | None = None,
        base_path: str | None = None,
        clock: Callable[[], Any] = utcnow,
        limits: ToolLimits = _DEFAULT_LIMITS,
    ) -> None:
        self.ids = ids
        self.limits = limits
        self.worker_id = worker_id
        self.credentials = credentials
        self.run_child = run_child
        self.base_path = base_path
        self.events = CommandEvents(ids=ids, worker_id=worker_id, clock=clock)

    # ------------------------------------------------------------------ execution

    async def execute(
        self, command: Command, *, report: Callable[[Event], None] | None = None
    ) -> list[Event]:
        """Run the command; returns the events that finish it (call.error..., call.done,
        command.completed | command.failed). Intermediate events go to `report` as they happen."""
        begin = time.perf_counter()
        notes: list[Event] = []

        def note(event: Event) -> None:
            if report is not None:
                report(event)
            else:
                notes.append(event)

        current = enter_execution(command.execution_id)  # secrets resolved now belong to it
        logged = enter_command(command.execution_id, command.step, command.command_id)  # log lines name it
        try:
            if isinstance(command.tool_config, list):
                data, status, error, ctx_updates, extra = await self._pipeline(command, note)
            else:
                data, status, error, ctx_updates, extra = await self._single(command, note)
        except NoetlError as exc:
            data, status, error, ctx_updates, extra = None, "error", str(exc), {}, {}
        except Exception as exc:  # a bug in a tool must not take the worker down
            log.exception("command %s crashed", command.command_id)
            data, status, error, ctx_updates, extra = None, "error", f"{type(exc).__name__}: {exc}", {}, {}
        finally:
            leave_command(logged)
            leave_execution(current)
        if status != "failed":
            data, status, error = _externalized(command, data, status, error, self.limits.inline_max_bytes)
        duration_ms = round((time.perf_counter() - begin) * 1000, 3)
        if status == "failed":
            notes.extend(self.events.failed(command, str(error)))
            return notes
        inner: dict[str, Any] = {"data": data, "duration_ms": duration_ms, **extra}
        if error:
            inner["error"] = error
        updates = {"ctx_updates": ctx_updates} if ctx_updates else None
        notes.extend(self.events.completed(command, {"status": status, "context": inner}, extra=updates))
        return notes

    async def _single(
        self, command: Command, note: Callable[[Event], None]
    ) -> tuple[Any, str, str | None, dict[str, Any], dict[str, Any]]:
        config = dict(command.tool_config) if isinstance(command.tool_config, Mapping) else {}
        rules = policy.rules_from_config(config)
        _lift_limits(config)
        task_set = config.pop("set", None)
        scope = dict(command.render_context)
        scope.setdefault("ctx", {})
        ctx_updates: dict[str, Any] = {}
        attempted = await self._attempt(command, command.kind, config, rules, scope, note)
        extra = _process_output(attempted.result)
        if attempted.action == "fail":
            return attempted.result.data, "failed", _failure_text(attempted), ctx_updates, extra
        self._apply_sets(attempted, task_set, scope, ctx_updates)
        status = "success" if attempted.result.ok else "error"
        return attempted.result.data, status, attempted.result.error, ctx_updates, extra

    async def _pipeline(
        self, command: Command, note: Callable[[Event], None]
    ) -> tuple[Any, str, str | None, dict[str, Any], dict[str, Any]]:
        tasks: list[Mapping[str, Any]] = [t for t in command.tool_config if isinstance(t, Mapping)]
        index_of = {str(t.get("name")): i for i, t in enumerate(tasks)}
        scope: dict[str, Any] = dict(command.render_context)
        scope["ctx"] = dict(scope.get("ctx") or {})
        scope["iter"] = dict(scope.get("iter") or {})
        ctx_updates: dict[str, Any] = {}
        results: dict[str, Any] = {}
        position = 0
        runs = 0
        status = "success"
        last_error: str | None = None
        while position < len(tasks):
            runs += 1
            if runs > _MAX_TASK_RUNS:
                return (
                    None,
                    "failed",
                    f"pipeline ran more than {_MAX_TASK_RUNS} tasks (a jump loop?)",
                    ctx_updates,
                    {},
                )
            task = tasks[position]
            label = str(task.get("name"))
            kind = str(task.get("kind", "noop"))
            raw = {k: v for k, v in task.items() if k not in ("name", "kind")}
            rules = policy.rules_from_config(raw)
            _lift_limits(raw)
            task_set = raw.pop("set", None)
            try:
                raw_input = raw.pop("input", raw.pop("args", None))
                task_input = render_value(raw_input, scope) if raw_input is not None else None
                task_scope = {**scope, **task_input} if isinstance(task_input, dict) else scope
                config = plain(render_value(raw, task_scope))
            except TemplateError as exc:
                return None, "failed", f"task '{label}': {exc}", ctx_updates, {}
            if not isinstance(config, dict):
                config = {}
            if task_input is not None:
                config["input"] = plain(task_input)
            attempted = await self._attempt(command, kind, config, rules, task_scope, note)
            if attempted.action == "fail":
                return (
                    attempted.result.data,
                    "failed",
                    f"task '{label}': {_failure_text(attempted)}",
                    ctx_updates,
                    {},
                )
            data = attempted.result.data
            results.pop(label, None)  # a task run again (a jump) moves to the end
            results[label] = data
            scope[label] = view_of(data)
            if not attempted.result.ok:
                status, last_error = "error", attempted.result.error
            self._apply_sets(attempted, task_set, scope, ctx_updates)
            if attempted.action == "break":
                break
            if attempted.action == "jump":
                target = attempted.rule.to if attempted.rule else None
                if target not in index_of:
                    return (
                        data,
                        "failed",
                        f"task '{label}': jump target '{target}' is not a task of this pipeline",
                        ctx_updates,
                        {},
                    )
                position = index_of[str(target)]
                continue
            position += 1
        # The tasks' results by label, and the labels in the order the tasks ran; the engine adds
        # their keys at the top level (`noetl.engine.results.pipeline_result`).
        return results, status, last_error, ctx_updates, {"labels": list(results)}

    async def _attempt(
        self,
        command: Command,
        kind: str,
        config: dict[str, Any],
        rules: tuple[PolicyRule, ...],
        scope: Mapping[str, Any],
        note: Callable[[Event], None],
    ) -> Attempted:
        attempt = 1
        while True:
            result = await self._run_tool(command, kind, config, attempt)
            output = policy.outcome_view(result, attempt)
            rule_scope = {**scope, "output": output}
            try:
                rule = policy.match(rules, rule_scope)
            except TemplateError as exc:
                failed = ToolResult(status="error", error=f"policy rule: {exc}")
                return Attempted(failed, "fail", None, attempt, output)
            action = rule.action if rule else ("continue" if result.ok else "fail")
            if action == "retry" and rule is not None:
                limit = rule.attempts or policy.DEFAULT_RETRY_ATTEMPTS
                if attempt < limit:
                    delay = policy.retry_delay(rule, attempt)
                    note(
                        self.events.event(
                            command,
                            ev.CALL_ERROR,
                            "FAILED",
                            {
                                "call_index": 0,
                                "attempt": attempt,
                                "error": result.error or result.status,
                                "retry_in_seconds": delay,
                            },
                        )
                    )
                    await asyncio.sleep(delay)
                    attempt += 1
                    continue
                action = "continue" if result.ok else "fail"
            elif action == "continue" and not result.ok and rule is None:
                action = "fail"
            return Attempted(result, action, rule, attempt, output)

    async def _run_tool(
        self, command: Command, kind: str, config: dict[str, Any], attempt: int
    ) -> ToolResult:
        begin = time.perf_counter()
        timeout = (
            _positive(config.get("timeout"))
            or _positive(config.get("timeout_seconds"))
            or self.limits.timeout_seconds
        )
        ctx = ToolContext(
            execution_id=command.execution_id,
            step=command.step,
            command_id=command.command_id,
            render_context=command.render_context,
            credentials=self.credentials,
            timeout=timeout,
            attempt=attempt,
            run_child=self.run_child,
            base_path=self.base_path,
            memory_mb=_memory_mb(config.pop("max_memory_mb", None)),
            default_memory_mb=self.limits.memory_mb,
        )
        limit = None if kind == "playbook" or kind in _SELF_TIMED else timeout_seconds(config, ctx)
        try:
            if kind == "playbook":
                result = await self._run_playbook(config, ctx)
            elif limit is None:
                result = await get_tool(kind).run(config, ctx)
            else:
                # Tools stop at their time limit themselves; this is the net for one that does not.
                async with asyncio.timeout(limit + _TIMEOUT_GRACE):
                    result = await get_tool(kind).run(config, ctx)
        except TimeoutError as exc:
            text = f"the {kind} tool timed out" + (f" after {limit:g} s" if limit is not None else "")
            detail = str(exc)
            result = failed_result(failure.TIMEOUT, f"{text}: {detail}" if detail else text, status="timeout")
        except NoetlError as exc:
            kind_of = failure.classify_exception(exc)
            result = ToolResult(
                status="error",
                error=str(exc),
                retryable=bool(getattr(exc, "retryable", False)),
                data=getattr(exc, "data", None),
                error_kind=None if kind_of == failure.TOOL else kind_of,
            )
        except Exception as exc:
            log.exception("tool %s crashed in %s", kind, command.command_id)
            result = ToolResult(
                status="error",
                error=f"{type(exc).__name__}: {exc}",
                error_kind=failure.classify_exception(exc),
            )
        if not result.duration_ms:
            result.duration_ms = round((time.perf_counter() - begin) * 1000, 3)
        return result

    async def _run_playbook(self, config: Mapping[str, Any], ctx: ToolContext) -> ToolResult:
        if self.run_child is None:
            return ToolResult(status="error", error="nested playbooks are not available in this worker")
        request = child_request(config)
        child = await self.run_child(request)
        if child.status != COMPLETED:
            return ToolResult(
                status="error",
                data=child.result,
                error=f"child execution {child.execution_id} {child.status.lower()}: {child.error or 'no detail'}",
            )
        return ToolResult(status="success", data=child.result)

    @staticmethod
    def _apply_sets(
        attempted: Attempted, task_set: Any, scope: dict[str, Any], ctx_updates: dict[str, Any]
    ) -> None:
        """Task-level `set` (output = the raw result) then the matched rule's `set` (output = the
        attempt's outcome). `ctx.x` becomes durable, `iter.x` lives for this iteration, a bare key
        for the rest of the pipeline."""
        if isinstance(task_set, Mapping) and task_set:
            values = render_value(dict(task_set), {**scope, "output": view_of(attempted.result.data)})
            _assign(scope, task_set, values, ctx_updates)
        if attempted.rule is not None and attempted.rule.set:
            values = render_value(dict(attempted.rule.set), {**scope, "output": attempted.output})
            _assign(scope, attempted.rule.set, values, ctx_updates)


def _assign(scope: dict[str, Any], keys: Mapping[str, Any], values: Any, ctx_updates: dict[str, Any]) -> None:
    if not isinstance(values, Mapping):
        return
    for key in keys:
        value = plain(values.get(key))
        name = normalise_set_key(str(key))
        if str(key).startswith("ctx."):
            scope["ctx"] = {**scope.get("ctx", {}), name: value}
            ctx_updates[name] = value
        elif str(key).startswith("iter."):
            scope["iter"] = {**scope.get("iter", {}), name: value}
        scope[name] = value


def _lift_limits(config: dict[str, Any]) -> None:
    """Take a tool's `spec` out of its config (the worker's business: policy rules are read from
    it already), keeping the step's memory limit (`spec.max_memory_mb`) for the tool context."""
    spec = config.pop("spec", None)
    if isinstance(spec, Mapping) and spec.get("max_memory_mb") is not None:
        config.setdefault("max_memory_mb", spec["max_memory_mb"])


def _memory_mb(value: Any) -> int | None:
    number = _positive(value)
    return int(number) if number is not None else None


def _positive(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


def _failure_text(attempted: Attempted) -> str:
    result = attempted.result
    text = result.error or f"tool returned status {result.status}"
    if attempted.rule is not None and attempted.rule.action == "fail" and result.ok:
        text = "a policy rule failed the step"
    if attempted.attempts > 1:
        text += f" (after {attempted.attempts} attempts)"
    return text


def _externalized(
    command: Command, data: Any, status: str, error: str | None, inline_max_bytes: int
) -> tuple[Any, str, str | None]:
    """The command's data, kept in the result store when it is over the inline limit (or the
    tool's `output` asks for it): the event then carries its reference envelope."""
    select, threshold = output_policy(command.tool_config if isinstance(command.tool_config, dict) else None)
    if threshold is None:
        threshold = inline_max_bytes
    try:
        kept = externalize(
            data, execution_id=command.execution_id, step=command.step, select=select, threshold=threshold
        )
    except RefError as exc:
        return None, "failed", f"the result could not be stored: {exc}"
    return kept, status, error


def _process_output(result: ToolResult) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    if result.stdout:
        extra["stdout"] = result.stdout[:_OUTPUT_LIMIT]
    if result.stderr:
        extra["stderr"] = result.stderr[:_OUTPUT_LIMIT]
    if result.exit_code is not None:
        extra["exit_code"] = result.exit_code
    return extra
