"""Every template of a playbook, compiled with the sandboxed environment NoETL renders with, and
the names it reads checked against what the engine binds for that field (`scopes`).

Findings: a template that does not compile (a syntax error, an unknown filter or test, `{{`
never closed) is an error. A name that cannot exist in the field is an error, with a
did-you-mean; it is a warning instead when the playbook is dynamic (a `set` or arc `args` key is
itself a template, so the name could come from it). Workload values are not rendered by the
engine: they are compiled, but their names are not checked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from noetl.dsl.checks import line_of
from noetl.dsl.lint.findings import ERROR, WARNING, Findings, did_you_mean
from noetl.dsl.lint.scopes import (
    OUTCOME_NAMES,
    OUTPUT_NOTE,
    Facts,
    Scope,
    arcs_of,
    iteration_names,
    pipeline_names,
)
from noetl.template.names import check_template, environment_names

_CONDITIONS = ("when",)  # keys whose string value is a condition (bare expressions allowed)
_DEFERRED = ("spec", "set")  # tool keys rendered after the call, with `output` in scope


@dataclass
class Walker:
    findings: Findings
    facts: Facts
    check_names: bool = True

    # -- values --------------------------------------------------------------------------------

    def value(self, container: Any, key: Any, *, step: str | None, field: str, scope: Scope | None) -> None:
        """Check the template(s) in `container[key]`: a string, or every string (and map key)
        of a nested structure. `scope` None: compile only."""
        value = container[key]
        line = line_of(container, key)
        if isinstance(value, str):
            self.text(value, line, step=step, field=field, scope=scope, condition=key in _CONDITIONS)
        elif isinstance(value, dict):
            for sub in value:
                if isinstance(sub, str):
                    self.text(sub, line_of(value, sub), step=step, field=f"{field}.{sub}", scope=scope)
                self.value(value, sub, step=step, field=f"{field}.{sub}", scope=scope)
        elif isinstance(value, list):
            for index in range(len(value)):
                self.value(value, index, step=step, field=f"{field}[{index}]", scope=scope)

    def text(
        self,
        text: str,
        line: int | None,
        *,
        step: str | None,
        field: str,
        scope: Scope | None,
        condition: bool = False,
    ) -> None:
        checked = check_template(text, condition=condition)
        if checked.error is not None:
            where = _line_in(text, line, checked.error_line)
            self.findings.add(ERROR, f"template error: {checked.error}", line=where, step=step, field=field)
            return
        if scope is None or not self.check_names:
            return
        for name in sorted(checked.names - scope.names):
            self.unknown(name, line, step=step, field=field, scope=scope)

    def unknown(self, name: str, line: int | None, *, step: str | None, field: str, scope: Scope) -> None:
        candidates = scope.names - environment_names()
        close = did_you_mean(name, candidates)
        message = f"'{name}' is not defined here"
        if close is not None:
            message += f": did you mean '{close}'?"
        if name in OUTCOME_NAMES and name not in scope.names:
            message += (
                f" ('{name}' is defined only in a tool's policy rules and set, and in the step's set "
                "and next arcs)"
            )
        elif scope.note:
            message += f"; {scope.note}"
        if not close and not scope.note and name not in OUTCOME_NAMES:
            message += " (not a step, a workload key, a ctx/set key, a loop variable or a global)"
        severity = WARNING if self.facts.dynamic else ERROR
        if severity == WARNING:
            message += "; it may come from a set key written as a template"
        self.findings.add(severity, message, line=line, step=step, field=field)

    # -- blocks --------------------------------------------------------------------------------

    def step(self, raw: dict[Any, Any]) -> None:
        name = raw.get("step") if isinstance(raw.get("step"), str) else None
        base = self.facts.base()
        entry = base.plus(self.facts.arc_args.get(name or "", ()))
        loop = raw.get("loop")
        body = entry
        if isinstance(loop, dict):
            body = entry.plus(self._loop(loop, name, entry))
        for key in ("when",):
            if key in raw:
                self.value(raw, key, step=name, field=key, scope=entry)
        for key in ("input", "args"):
            if key in raw:
                self.value(raw, key, step=name, field=key, scope=body)
        tool = raw.get("tool")
        if isinstance(tool, dict):
            self.tool(tool, step=name, prefix="tool", scope=body)
        elif isinstance(tool, list):
            self.pipeline(tool, step=name, scope=body)
        after = base.plus(OUTCOME_NAMES)
        if "set" in raw:
            self.value(raw, "set", step=name, field="set", scope=after)
        self._arcs(raw.get("next"), name, after)

    def _loop(self, loop: dict[Any, Any], step: str | None, entry: Scope) -> frozenset[str]:
        """Check `loop.in` and a cursor's claim; the names an iteration binds."""
        if "in" in loop:
            self.value(loop, "in", step=step, field="loop.in", scope=entry)
        cursor = loop.get("cursor")
        if isinstance(cursor, dict):
            claim_scope = entry.plus({"__frame_max_rows"})
            for key in cursor:
                self.value(cursor, key, step=step, field=f"loop.cursor.{key}", scope=claim_scope)
        iterator = loop.get("iterator")
        if not isinstance(iterator, str):
            return frozenset()
        return iteration_names(iterator, cursor=isinstance(cursor, dict))

    def _arcs(self, value: Any, step: str | None, scope: Scope) -> None:
        prefix = "next.arcs" if isinstance(value, dict) else "next"
        for index, arc in enumerate(arcs_of(value)):
            for key in ("when", "set", "args"):
                if key in arc:
                    self.value(arc, key, step=step, field=f"{prefix}[{index}].{key}", scope=scope)

    def tool(
        self, tool: dict[Any, Any], *, step: str | None, prefix: str, scope: Scope, skip: tuple[str, ...] = ()
    ) -> None:
        """A single tool: its config sees `scope`; its `spec` and `set` also see `output`."""
        after = scope.plus({"output"}, note=OUTPUT_NOTE)
        for key in tool:
            if key == "kind" or key in skip:
                continue
            field = f"{prefix}.{key}"
            self.value(tool, key, step=step, field=field, scope=after if key in _DEFERRED else scope)

    def pipeline(self, items: list[Any], *, step: str | None, scope: Scope) -> None:
        tasks: list[tuple[int, dict[Any, Any], str]] = []
        for index, item in enumerate(items):
            if isinstance(item, dict) and "kind" in item:
                tasks.append((index, item, str(item.get("name", f"task_{index}"))))
            elif isinstance(item, dict) and len(item) == 1 and isinstance(next(iter(item.values())), dict):
                label, body = next(iter(item.items()))
                tasks.append((index, body, str(label)))
        shared = scope.plus(pipeline_names([t for _, t, _ in tasks], [label for _, _, label in tasks]))
        for index, task, _ in tasks:
            own = task.get("input", task.get("args"))
            inputs = {str(k) for k in own} if isinstance(own, dict) else set()
            prefix = f"tool[{index}]"
            for key in ("input", "args"):
                if key in task:
                    self.value(task, key, step=step, field=f"{prefix}.{key}", scope=shared)
            skip = ("input", "args", "name")
            self.tool(task, step=step, prefix=prefix, scope=shared.plus(inputs), skip=skip)


def _line_in(text: str, line: int | None, offset: int) -> int | None:
    """The file line of line `offset` of a string value starting at `line` (a block scalar's
    text starts on the line after its key)."""
    if line is None:
        return None
    return line + offset if "\n" in text.rstrip("\n") or text.endswith("\n") else line


def check_templates(findings: Findings, doc: Any, facts: Facts, *, names: bool) -> None:
    """Check every template of the document (`names` False: compile only)."""
    if not isinstance(doc, dict):
        return
    walker = Walker(findings, facts, check_names=names)
    workload = doc.get("workload")
    if isinstance(workload, dict):
        for key in workload:
            walker.value(workload, key, step=None, field=f"workload.{key}", scope=None)
    wide = facts.base().plus(*facts.loops, *facts.arc_args.values())
    for index, entry in enumerate(doc.get("workbook") or []):
        if isinstance(entry, dict) and isinstance(entry.get("tool"), dict):
            walker.tool(entry["tool"], step=None, prefix=f"workbook[{index}].tool", scope=wide)
    for raw in doc.get("workflow") or []:
        if isinstance(raw, dict):
            walker.step(raw)
