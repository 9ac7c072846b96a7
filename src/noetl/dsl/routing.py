"""A step's `next` in its four forms (a step name, a list of names, a list of `{step, when?}` arcs,
a mapping `{spec: {mode}, arcs: [...]}`), and the check that every target exists."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from noetl.dsl.checks import Checks, found, line_of, show
from noetl.dsl.model import Arc, Next, NextMode, Step


def parse_next(checks: Checks, raw: dict[Any, Any], step: str, spec: dict[str, Any]) -> Next | None:
    value = raw.get("next")
    if value is None:
        return None
    line = line_of(raw, "next")
    default_mode = _mode(spec.get("next_mode"))
    if isinstance(value, str):
        if not value.strip():
            checks.fail("next must name a step, got an empty string", step=step, field="next", line=line)
        return Next(mode="inclusive", arcs=(Arc(step=value),))
    if isinstance(value, list):
        return _next_list(checks, value, step, line, default_mode)
    if isinstance(value, dict):
        return _next_mapping(checks, value, step, line, default_mode)
    checks.fail(
        f"next must be a step name, a list, or a mapping with 'arcs', got {show(value)}",
        step=step,
        field="next",
        line=line,
    )


def _next_list(checks: Checks, value: list[Any], step: str, line: int | None, default_mode: NextMode) -> Next:
    """`next: [b, c]` (all targets) or `next: [{step, when?}, ...]`."""
    if all(isinstance(item, str) for item in value) and value:
        for index, item in enumerate(value):
            if not item.strip():
                checks.fail(
                    "next must name steps, got an empty string",
                    step=step,
                    field=f"next[{index}]",
                    line=line_of(value, index),
                )
        return Next(mode="inclusive", arcs=tuple(Arc(step=item) for item in value))
    if all(isinstance(item, dict) for item in value):
        arcs = tuple(parse_arc(checks, item, value, index, step, "next") for index, item in enumerate(value))
        return Next(mode=default_mode, arcs=arcs)
    checks.fail(
        "next mixes forms: use a list of step names ([b, c]) or a list of {step, when?} maps, not both",
        step=step,
        field="next",
        line=line,
    )


def _next_mapping(
    checks: Checks, value: dict[Any, Any], step: str, line: int | None, default_mode: NextMode
) -> Next:
    """`next: {spec: {mode}, arcs: [...]}`."""
    router_spec = value.get("spec")
    if router_spec is not None and not isinstance(router_spec, dict):
        checks.fail(
            f"next.spec must be a mapping like {{mode: exclusive}}, got {show(router_spec)}",
            step=step,
            field="next.spec",
            line=line_of(value, "spec"),
        )
    if "arcs" not in value:
        checks.fail(
            "next as a mapping needs 'arcs' (a list of {step, when?, set?}); "
            "for one unconditional target write next: <step>",
            step=step,
            field="next.arcs",
            line=line,
        )
    arcs_raw = value.get("arcs")
    if arcs_raw is None:
        arcs_raw = []
    if not isinstance(arcs_raw, list):
        checks.fail(
            f"next.arcs must be a list of {{step, when?, set?}}, got {show(arcs_raw)}",
            step=step,
            field="next.arcs",
            line=line_of(value, "arcs"),
        )
    mode = default_mode
    if router_spec and router_spec.get("mode") is not None:
        mode = _mode(router_spec["mode"])
    arcs = tuple(
        parse_arc(checks, item, arcs_raw, index, step, "next.arcs") for index, item in enumerate(arcs_raw)
    )
    return Next(mode=mode, arcs=arcs)


def parse_arc(checks: Checks, item: Any, items: Any, index: int, step: str, where: str) -> Arc:
    field = f"{where}[{index}]"
    if isinstance(item, str) and where == "next.arcs" and item.strip():
        return Arc(step=item)
    if not isinstance(item, dict):
        checks.fail(
            f"{field} must be a mapping {{step, when?, set?}}, got {show(item)}",
            step=step,
            field=field,
            line=line_of(items, index),
        )
    target = item.get("step")
    if not isinstance(target, str) or not target.strip():
        checks.fail(
            f"{field}.step is required (the step to go to), {found(target)}",
            step=step,
            field=f"{field}.step",
            line=line_of(item, "step"),
        )
    when = None
    if item.get("when") is not None:
        when = checks.check_when(item["when"], step=step, field=f"{field}.when", line=line_of(item, "when"))
    return Arc(
        step=target,
        when=when,
        set=checks.mapping(
            item, "set", step=step, field=f"{field}.set", what="variable name -> value template"
        ),
        args=checks.mapping(item, "args", step=step, field=f"{field}.args", what="argument name -> value"),
    )


def check_targets(checks: Checks, step: Step, raw: dict[Any, Any], steps: Mapping[str, Step]) -> None:
    """Every arc of `step` goes to a step of the workflow."""
    if step.next is None:
        return
    value = raw.get("next")
    for index, arc in enumerate(step.next.arcs):
        if arc.step in steps:
            continue
        line = line_of(raw, "next")
        if isinstance(value, list):
            line = line_of(value, index)
        elif isinstance(value, dict) and isinstance(value.get("arcs"), list):
            line = line_of(value["arcs"], index)
        checks.fail(
            f"step '{step.name}' references unknown step '{arc.step}' in next (steps: {', '.join(steps)})",
            step=step.name,
            field="next",
            line=line,
        )


def _mode(value: Any) -> NextMode:
    """`inclusive` (any case) fans out to every matching arc; anything else is exclusive."""
    return "inclusive" if isinstance(value, str) and value.strip().lower() == "inclusive" else "exclusive"
