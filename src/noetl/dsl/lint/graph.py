"""Routing checks on the parsed playbook: arcs that can never be taken, steps that never run.

- An arc whose `when` is constantly false, or one that follows an arc without a condition in
  exclusive routing (the first match wins, and that one always matches), is never taken: a
  warning.
- A step no taken arc leads to from `start` never runs: an error (the run completes without it).
- An arc to a step whose own `when` is constantly false leads to a step that never runs: a
  warning (the step is skipped and hands on to its arcs).
"""

from __future__ import annotations

from collections import deque
from typing import Any

from noetl.dsl.checks import line_of
from noetl.dsl.lint.findings import ERROR, WARNING, Findings
from noetl.dsl.model import Arc, Playbook, Step

_FALSE = frozenset({"false", "{{ false }}", "{{false}}", "0", "{{ 0 }}"})


def never(when: str | bool | None) -> bool:
    """A condition that is false whatever the context."""
    if isinstance(when, bool):
        return not when
    return isinstance(when, str) and when.strip().lower() in _FALSE


def _arc_line(raw: dict[Any, Any], index: int) -> int | None:
    value = raw.get("next")
    arcs = value.get("arcs") if isinstance(value, dict) else value
    if isinstance(arcs, list):
        return line_of(arcs, index)
    return line_of(raw, "next")


def _live_arcs(findings: Findings, step: Step, raw: dict[Any, Any]) -> list[str]:
    """The targets `step` may route to; reports the arcs that are never taken."""
    if step.next is None:
        return []
    live: list[str] = []
    shadow: Arc | None = None
    for index, arc in enumerate(step.next.arcs):
        field = f"next[{index}]"
        if shadow is not None:
            findings.add(
                WARNING,
                f"the arc to '{arc.step}' is never taken: routing is exclusive and the earlier arc to "
                f"'{shadow.step}' has no condition (set next.spec.mode: inclusive, or order the arcs)",
                line=_arc_line(raw, index),
                step=step.name,
                field=field,
            )
            continue
        if never(arc.when):
            findings.add(
                WARNING,
                f"the arc to '{arc.step}' is never taken: its condition is always false",
                line=_arc_line(raw, index),
                step=step.name,
                field=f"{field}.when",
            )
            continue
        live.append(arc.step)
        if step.next.mode == "exclusive" and (arc.when is None or arc.when is True):
            shadow = arc
    return live


def check_graph(findings: Findings, playbook: Playbook, raw_steps: dict[str, dict[Any, Any]]) -> None:
    edges = {
        name: _live_arcs(findings, step, raw_steps.get(name, {})) for name, step in playbook.steps.items()
    }
    for name, step in playbook.steps.items():
        for index, arc in enumerate(step.next.arcs if step.next else ()):
            target = playbook.steps.get(arc.step)
            if target is not None and target.name != "start" and never(target.when):
                findings.add(
                    WARNING,
                    f"the arc leads to '{arc.step}', which never runs: its when is always false",
                    line=_arc_line(raw_steps.get(name, {}), index),
                    step=name,
                    field=f"next[{index}]",
                )
    seen = {"start"}
    queue = deque(["start"])
    while queue:
        for name in edges.get(queue.popleft(), []):
            if name not in seen:
                seen.add(name)
                queue.append(name)
    for name, step in playbook.steps.items():
        if name not in seen:
            _unreachable(findings, playbook, step, seen)


def _unreachable(findings: Findings, playbook: Playbook, step: Step, seen: set[str]) -> None:
    """An error when a running step has an arc to it that is never taken; otherwise (no arc
    from a step that runs leads to it) a warning: dead code the engine skips."""
    sources = [
        s for s, spec in playbook.steps.items() if spec.next and step.name in (a.step for a in spec.next.arcs)
    ]
    live_sources = [s for s in sources if s in seen]
    if live_sources:
        severity, why = (
            ERROR,
            (f"the arcs to it from {', '.join(repr(s) for s in live_sources)} are never taken"),
        )
    elif sources:
        severity, why = WARNING, f"it is reached only from steps that never run ({', '.join(sources)})"
    else:
        severity, why = WARNING, "no step's next leads to it"
    findings.add(
        severity,
        f"step '{step.name}' is unreachable from 'start' and never runs: {why}",
        line=step.line,
        step=step.name,
        field="step",
    )
