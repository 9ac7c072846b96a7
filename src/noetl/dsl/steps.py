"""Steps of the workflow: the name, forbidden keys, the tool or pipeline, the `when` guard, the
loop, `next`, and the step-level `set`, `input` and `args`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from noetl.dsl.checks import Checks, found, line_of, show
from noetl.dsl.loops import parse_loop
from noetl.dsl.model import Step, ToolSpec
from noetl.dsl.routing import parse_next
from noetl.dsl.tools import MISPLACED_TOOL_FIELDS, REQUIRED_TOOL_FIELDS, Tools


def parse_step(
    checks: Checks, tools: Tools, raw: Any, index: int, workflow: Any, seen: Mapping[str, dict[Any, Any]]
) -> Step:
    """Step `index` of the workflow; `seen` holds the steps before it (for duplicate names)."""
    name = _step_name(checks, raw, index, workflow, seen)
    check_misplaced_tool_fields(checks, raw, name)
    tool, pipeline = _step_tool(tools, raw, name)
    desc = raw.get("desc")
    when = None
    if "when" in raw and raw["when"] is not None:
        when = checks.check_when(raw["when"], step=name, field="when", line=line_of(raw, "when"))
    spec = checks.mapping(raw, "spec", step=name, field="spec", what="e.g. {next_mode: inclusive}")
    return Step(
        name=name,
        tool=tool,
        pipeline=pipeline,
        desc=None if desc is None else str(desc),
        when=when,
        loop=parse_loop(checks, raw, name) if raw.get("loop") is not None else None,
        next=parse_next(checks, raw, name, spec),
        set=checks.mapping(raw, "set", step=name, field="set", what="variable name -> value template"),
        input=checks.mapping(raw, "input", step=name, field="input", what="input name -> value"),
        args=checks.mapping(raw, "args", step=name, field="args", what="argument name -> value"),
        line=line_of(raw),
    )


def _step_name(
    checks: Checks, raw: Any, index: int, workflow: Any, seen: Mapping[str, dict[Any, Any]]
) -> str:
    """The step's name, after the checks that need nothing but the name and the step's keys."""
    where = f"workflow[{index}]"
    if not isinstance(raw, dict):
        checks.fail(
            f"{where} must be a mapping with a 'step' name, got {show(raw)}",
            field=where,
            line=line_of(workflow, index),
        )
    name = raw.get("step")
    if "case" in raw:
        checks.fail(
            "'case' blocks are not allowed in steps: use step.when for guards and "
            "next[].when for routing (for pipelines, use 'tool: [...]')",
            step=name if isinstance(name, str) else where,
            field="case",
            line=line_of(raw, "case"),
        )
    if not isinstance(name, str) or not name.strip():
        checks.fail(
            f"{where}.step is required (the step name, a non-empty string), {found(name)}",
            field=f"{where}.step",
            line=line_of(raw, "step"),
        )
    if name in seen:
        checks.fail(
            f"duplicate step name '{name}' (first defined on line {line_of(seen[name])})",
            step=name,
            field="step",
            line=line_of(raw, "step"),
        )
    if "type" in raw:
        checks.fail(
            f"'type' is the old noetl.io/v1 step syntax; use tool: {{kind: {raw['type']}, ...}} instead",
            step=name,
            field="type",
            line=line_of(raw, "type"),
        )
    return name


def _step_tool(
    tools: Tools, raw: dict[Any, Any], name: str
) -> tuple[ToolSpec | None, tuple[ToolSpec, ...] | None]:
    """The step's single tool or its pipeline (neither for a step without `tool`)."""
    raw_tool = raw.get("tool")
    if isinstance(raw_tool, dict):
        return tools.parse_single(raw_tool, name), None
    if isinstance(raw_tool, list):
        return None, tools.parse_pipeline(raw_tool, name)
    if raw_tool is not None:
        tools.checks.fail(
            f"tool must be a mapping (one tool, e.g. {{kind: python, code: ...}}) or a list "
            f"(a pipeline of tasks), got {show(raw_tool)}",
            step=name,
            field="tool",
            line=line_of(raw, "tool"),
        )
    return None, None


def check_misplaced_tool_fields(checks: Checks, raw: dict[str, Any], name: str) -> None:
    """Tool fields written on the step instead of under `tool`."""
    for key in MISPLACED_TOOL_FIELDS:
        if key not in raw:
            continue
        message = f"'{key}' is not a step field; put it under 'tool'"
        raw_tool = raw.get("tool")
        tool_kind = raw_tool.get("kind") if isinstance(raw_tool, dict) else None
        if key == "kind":
            message += " (tool.kind is required)"
        elif isinstance(tool_kind, str) and key in REQUIRED_TOOL_FIELDS.get(tool_kind, ((), ""))[0]:
            message += f" (tool.{key} is required by the {tool_kind} tool)"
        else:
            message += f" (tool.{key})"
        checks.fail(message, step=name, field=key, line=line_of(raw, key))
