"""Unknown keys, per block: the playbook root, a step, its loop, its tool (per kind), the tool's
`spec` and policy rules, `next` and its arcs, workbook actions.

The accepted keys come from the typed model (`noetl.dsl.model`: a field per key, with the few
renames the parser applies) and, for tools, from `noetl.dsl.kinds.TOOL_FIELDS`. Severity: an
unknown key of a block the model describes completely (a step, a loop, an arc, a policy rule)
is an error, and so is a key that belongs to another block (`next` under `tool`) or one close
to a known key (`querry`); any other key of a tool is a warning (the tool ignores it).

The walk is defensive: it runs on the raw YAML even when the parser refused the document.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import fields
from typing import Any

from noetl.dsl.checks import line_of
from noetl.dsl.kinds import COMMON_TOOL_FIELDS, TOOL_FIELDS, TOOL_SPEC_FIELDS
from noetl.dsl.lint.findings import ERROR, WARNING, Findings, did_you_mean
from noetl.dsl.loops import ADVISORY_FRAME_KEYS
from noetl.dsl.model import Arc, Loop, Playbook, PolicyRule, Step
from noetl.dsl.tools import MISPLACED_TOOL_FIELDS

# Model field -> YAML key, where the parser renames.
_RENAMES = {"name": "step", "in_": "in", "action": "do", "is_else": "else", "api_version": "apiVersion"}


def _keys(model: Any, drop: Iterable[str] = (), add: Iterable[str] = ()) -> frozenset[str]:
    names = {_RENAMES.get(f.name, f.name) for f in fields(model)}
    return frozenset((names - set(drop)) | set(add))


ROOT_KEYS = _keys(Playbook, drop=("step", "path", "steps", "source"), add=("workflow", "schedules"))
STEP_KEYS = _keys(Step, drop=("pipeline", "line"), add=("spec",))
STEP_SPEC_KEYS = frozenset({"next_mode"})
LOOP_KEYS = _keys(Loop, drop=("max_rows", "row_concurrency"), add=("spec",))
LOOP_SPEC_KEYS = frozenset({"mode", "max_in_flight", "frame"})
FRAME_KEYS = frozenset({"max_rows", "row_concurrency"}) | ADVISORY_FRAME_KEYS
ARC_KEYS = _keys(Arc)
NEXT_KEYS = frozenset({"spec", "arcs"})
THEN_KEYS = _keys(PolicyRule, drop=("when", "else"), add=("max_attempts",))
RULE_KEYS = frozenset({"when", "then", "else"}) | THEN_KEYS
POLICY_KEYS = frozenset({"rules"})
WORKBOOK_KEYS = frozenset({"name", "tool"})
# Keys that only mean something on the step: written under `tool` they are ignored.
STEP_ONLY_KEYS = STEP_KEYS - COMMON_TOOL_FIELDS


def check_keys(findings: Findings, doc: Any) -> None:
    """Report the unknown keys of every block of the document."""
    if not isinstance(doc, dict):
        return
    _block(findings, doc, ROOT_KEYS, step=None, prefix="", strict=False)
    for index, entry in _items(doc.get("workbook")):
        field = f"workbook[{index}]"
        if isinstance(entry, dict):
            _block(findings, entry, WORKBOOK_KEYS, step=None, prefix=field + ".", strict=False)
            _tool(findings, entry.get("tool"), step=None, prefix=field + ".tool")
    for _, raw in _items(doc.get("workflow")):
        if isinstance(raw, dict):
            _step(findings, raw)


def _items(value: Any) -> Iterator[tuple[int, Any]]:
    return enumerate(value) if isinstance(value, list) else iter(())


def _step(findings: Findings, raw: dict[Any, Any]) -> None:
    name = raw.get("step") if isinstance(raw.get("step"), str) else None
    _block(
        findings,
        raw,
        STEP_KEYS,
        step=name,
        prefix="",
        strict=True,
        skip=(*MISPLACED_TOOL_FIELDS, "type", "case"),
    )
    spec = raw.get("spec")
    if isinstance(spec, dict):
        _block(findings, spec, STEP_SPEC_KEYS, step=name, prefix="spec.", strict=False)
    loop = raw.get("loop")
    if isinstance(loop, dict):
        _loop(findings, loop, name)
    tool = raw.get("tool")
    if isinstance(tool, dict):
        _tool(findings, tool, step=name, prefix="tool")
    for index, item in _items(tool):
        _task(findings, item, index, name)
    _next(findings, raw.get("next"), name)


def _loop(findings: Findings, loop: dict[Any, Any], step: str | None) -> None:
    _block(findings, loop, LOOP_KEYS, step=step, prefix="loop.", strict=True)
    spec = loop.get("spec")
    if isinstance(spec, dict):
        _block(findings, spec, LOOP_SPEC_KEYS, step=step, prefix="loop.spec.", strict=True)
        frame = spec.get("frame")
        if isinstance(frame, dict):
            _block(findings, frame, FRAME_KEYS, step=step, prefix="loop.spec.frame.", strict=True)
    cursor = loop.get("cursor")
    if isinstance(cursor, dict):
        kind = cursor.get("kind", "postgres")
        known = TOOL_FIELDS.get(kind, frozenset()) | {"kind", "claim"}
        _block(findings, cursor, known, step=step, prefix="loop.cursor.", strict=False)


def _task(findings: Findings, item: Any, index: int, step: str | None) -> None:
    """A pipeline task: `{name: x, kind: ...}` or `{x: {kind: ...}}`."""
    if not isinstance(item, dict):
        return
    if "kind" in item:
        _tool(findings, item, step=step, prefix=f"tool[{index}]")
    elif len(item) == 1:
        _tool(findings, next(iter(item.values())), step=step, prefix=f"tool[{index}]")


def _tool(findings: Findings, tool: Any, *, step: str | None, prefix: str) -> None:
    if not isinstance(tool, dict):
        return
    kind = tool.get("kind")
    if kind not in TOOL_FIELDS and kind not in ("task_sequence",):
        return  # an unknown kind is the parser's error
    known = TOOL_FIELDS.get(kind, frozenset()) | COMMON_TOOL_FIELDS
    for key in tool:
        if not isinstance(key, str) or key in known:
            continue
        line = line_of(tool, key)
        if key in STEP_ONLY_KEYS:
            findings.add(
                ERROR,
                f"'{key}' belongs to the step, not the tool: indent it at the level of 'tool' "
                f"(under '{prefix}' it is ignored)",
                line=line,
                step=step,
                field=f"{prefix}.{key}",
            )
            continue
        _unknown(findings, key, known, f"the {kind} tool", line=line, step=step, field=f"{prefix}.{key}")
    spec = tool.get("spec")
    if isinstance(spec, dict):
        _block(findings, spec, TOOL_SPEC_FIELDS, step=step, prefix=f"{prefix}.spec.", strict=False)
        policy = spec.get("policy")
        if isinstance(policy, dict):
            _block(findings, policy, POLICY_KEYS, step=step, prefix=f"{prefix}.spec.policy.", strict=True)
            for index, rule in _items(policy.get("rules")):
                _rule(findings, rule, step, f"{prefix}.spec.policy.rules[{index}]")


def _rule(findings: Findings, rule: Any, step: str | None, prefix: str) -> None:
    if not isinstance(rule, dict):
        return
    _block(findings, rule, RULE_KEYS, step=step, prefix=prefix + ".", strict=True)
    for key in ("then", "else"):
        body = rule.get(key)
        if isinstance(body, dict):
            known = THEN_KEYS | ({"then"} if key == "else" else set())
            _block(findings, body, known, step=step, prefix=f"{prefix}.{key}.", strict=True)
            inner = body.get("then") if key == "else" else None
            if isinstance(inner, dict):
                _block(findings, inner, THEN_KEYS, step=step, prefix=f"{prefix}.else.then.", strict=True)


def _next(findings: Findings, value: Any, step: str | None) -> None:
    arcs: Any = value
    prefix = "next"
    if isinstance(value, dict):
        _block(findings, value, NEXT_KEYS, step=step, prefix="next.", strict=True)
        spec = value.get("spec")
        if isinstance(spec, dict):
            _block(findings, spec, frozenset({"mode"}), step=step, prefix="next.spec.", strict=True)
        arcs, prefix = value.get("arcs"), "next.arcs"
    for index, arc in _items(arcs):
        if isinstance(arc, dict):
            _block(findings, arc, ARC_KEYS, step=step, prefix=f"{prefix}[{index}].", strict=True)


def _block(
    findings: Findings,
    block: dict[Any, Any],
    known: frozenset[str],
    *,
    step: str | None,
    prefix: str,
    strict: bool,
    skip: Iterable[str] = (),
) -> None:
    """Report each key of `block` not in `known` (keys in `skip` are the parser's to report)."""
    what = f"'{prefix.rstrip('.')}'" if prefix else "the playbook root"
    if prefix == "" and step is not None:
        what = "a step"
    for key in block:
        if not isinstance(key, str) or key in known or key in skip:
            continue
        field = f"{prefix}{key}"
        _unknown(findings, key, known, what, line=line_of(block, key), step=step, field=field, strict=strict)


def _unknown(
    findings: Findings,
    key: str,
    known: Iterable[str],
    what: str,
    *,
    line: int | None,
    step: str | None,
    field: str,
    strict: bool = False,
) -> None:
    close = did_you_mean(key, known, cutoff=0.75)
    message = f"unknown key '{key}' in {what}"
    if close is not None:
        message += f": did you mean '{close}'?"
    else:
        message += f" (known keys: {', '.join(sorted(known))})"
    severity = ERROR if strict or close is not None else WARNING
    if severity == WARNING:
        message += "; it is ignored"
    findings.add(severity, message, line=line, step=step, field=field)
