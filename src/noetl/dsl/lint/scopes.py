"""Which names a template can read, field by field.

The names the engine binds are taken from the engine itself (`noetl.engine.context`): the base
render context (workload keys, `workload`, `ctx`, `steps`, `execution_id`, `catalog_id`, `path`,
`playbook`), a loop iteration's variables (the iterator, `iter`, `_index`, `_total`,
`loop_index`, and a cursor row's `__cursor_frame`/`__cursor_row`), and what a step's own `set`
and `next` arcs see on top (`output`, `event`). To those the playbook adds its step names (their
results), its workload keys and every key a `set` writes into `ctx`. Each field then sees:

- step `when`, `loop.in`: the base, plus the `args` of the arcs that lead to the step;
- the tool (and step `input`/`args`): that, plus the iteration variables in a loop;
- the tool's `spec` (policy rules) and `set`: that, plus `output` (the attempt's outcome);
- a pipeline task: the tool's names, plus the task labels, the pipeline's bare `set` keys, `iter`
  and the task's own `input` keys;
- the step's `set` and its arcs (`when`, `set`, `args`): the base plus `output` and `event`.

A `set` key written as a template (`"{{ name }}": ...`) makes the playbook *dynamic*: a name
could then come from it, so unknown names are warnings instead of errors.
"""

from __future__ import annotations

from collections import ChainMap
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from noetl.dsl.model import Playbook
from noetl.engine.context import RenderContext, iteration_context
from noetl.engine.results import normalise_set_key
from noetl.engine.state import CursorState, ExecutionState, LoopState, StepState
from noetl.template.names import environment_names
from noetl.template.values import has_markers


@dataclass(frozen=True)
class Scope:
    names: frozenset[str]
    note: str = ""  # added to an unknown-name message (e.g. where `output` is defined)

    def plus(self, *more: Any, note: str | None = None) -> Scope:
        extra: set[str] = set()
        for group in more:
            extra.update(group)
        return Scope(self.names | extra, self.note if note is None else note)


def _engine_names() -> tuple[frozenset[str], frozenset[str]]:
    """The base context's names and those a step's `set`/arcs see on top (from the engine)."""
    contexts = RenderContext(Playbook(name="", path="", steps={}), ExecutionState(execution_id=0))
    base = frozenset(contexts.current())
    view = contexts.for_step(StepState(name=""), event_name="call.done")
    outcome = frozenset(view.maps[0]) if isinstance(view, ChainMap) else frozenset({"output"})
    return base, outcome


def iteration_names(iterator: str, *, cursor: bool) -> frozenset[str]:
    """The names one loop iteration binds (from `noetl.engine.context.iteration_context`)."""
    state = LoopState(
        items=[None],
        iterator=iterator,
        mode="sequential",
        max_in_flight=None,
        results=[],
        cursor=CursorState() if cursor else None,
    )
    view = iteration_context({}, state, 0)
    return frozenset(view.maps[0]) if isinstance(view, ChainMap) else frozenset({iterator})


BASE_NAMES, OUTCOME_NAMES = _engine_names()
OUTPUT_NOTE = "the outcome of the tool call is 'output' here: status, data, error, http, exit_code, attempt"


@dataclass
class Facts:
    """What the playbook itself makes readable."""

    steps: list[str] = field(default_factory=list)
    workload: set[str] = field(default_factory=set)
    ctx_keys: set[str] = field(default_factory=set)  # keys `set` writes into ctx
    arc_args: dict[str, set[str]] = field(default_factory=dict)  # target step -> arg names
    loops: list[frozenset[str]] = field(default_factory=list)  # iteration names of every loop
    dynamic: bool = False  # a `set` or `args` key is a template

    def base(self) -> Scope:
        return Scope(BASE_NAMES | environment_names() | set(self.steps) | self.workload | self.ctx_keys)


def collect(doc: dict[Any, Any]) -> Facts:
    facts = Facts()
    workload = doc.get("workload")
    if isinstance(workload, dict):
        facts.workload = {str(k) for k in workload}
    for raw in _list(doc.get("workflow")):
        if not isinstance(raw, dict):
            continue
        if isinstance(raw.get("step"), str):
            facts.steps.append(raw["step"])
        _set_keys(facts, raw.get("set"), durable=True)
        _loop_facts(facts, raw.get("loop"))
        for arc in arcs_of(raw.get("next")):
            _set_keys(facts, arc.get("set"), durable=True)
            _arc_args(facts, arc)
        for tool in tools_of(raw.get("tool")):
            _tool_facts(facts, tool)
    for entry in _list(doc.get("workbook")):
        if isinstance(entry, dict) and isinstance(entry.get("tool"), dict):
            _tool_facts(facts, entry["tool"])
    return facts


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def arcs_of(value: Any) -> Iterator[dict[Any, Any]]:
    """The arc mappings of a `next` in any of its forms."""
    arcs = value.get("arcs") if isinstance(value, dict) else value
    for arc in _list(arcs):
        if isinstance(arc, dict):
            yield arc


def tools_of(value: Any) -> Iterator[dict[Any, Any]]:
    """A step's tool mapping, or the tool mapping of each task of its pipeline."""
    if isinstance(value, dict):
        yield value
    for item in _list(value):
        if isinstance(item, dict) and "kind" not in item and len(item) == 1:
            item = next(iter(item.values()))
        if isinstance(item, dict):
            yield item


def rules_of(tool: dict[Any, Any]) -> Iterator[tuple[int, dict[Any, Any]]]:
    spec = tool.get("spec")
    policy = spec.get("policy") if isinstance(spec, dict) else None
    rules = policy.get("rules") if isinstance(policy, dict) else None
    for index, rule in enumerate(_list(rules)):
        if isinstance(rule, dict):
            yield index, rule


def rule_set(rule: dict[Any, Any]) -> Any:
    body = rule.get("else", rule)
    then = body.get("then", body) if isinstance(body, dict) else None
    return then.get("set") if isinstance(then, dict) else None


def _set_keys(facts: Facts, mapping: Any, *, durable: bool) -> None:
    """Keys a `set` makes readable everywhere: all of a step's or arc's, `ctx.*` of a task's."""
    if not isinstance(mapping, dict):
        return
    for key in mapping:
        text = str(key)
        if has_markers(text):
            facts.dynamic = True
        elif durable or text.startswith("ctx."):
            facts.ctx_keys.add(normalise_set_key(text))


def _arc_args(facts: Facts, arc: dict[Any, Any]) -> None:
    args, target = arc.get("args"), arc.get("step")
    if isinstance(args, dict) and isinstance(target, str):
        for key in args:
            facts.dynamic = facts.dynamic or has_markers(str(key))
            facts.arc_args.setdefault(target, set()).add(str(key))


def _loop_facts(facts: Facts, loop: Any) -> None:
    if isinstance(loop, dict) and isinstance(loop.get("iterator"), str):
        facts.loops.append(iteration_names(loop["iterator"], cursor=loop.get("cursor") is not None))


def _tool_facts(facts: Facts, tool: dict[Any, Any]) -> None:
    _set_keys(facts, tool.get("set"), durable=False)
    for _, rule in rules_of(tool):
        _set_keys(facts, rule_set(rule), durable=False)


def pipeline_names(tools: list[dict[Any, Any]], labels: list[str]) -> set[str]:
    """Names a pipeline adds for its tasks: the labels and the bare keys its `set`s write."""
    names = set(labels) | {"iter"}
    for tool in tools:
        sets = [tool.get("set")] + [rule_set(rule) for _, rule in rules_of(tool)]
        for mapping in sets:
            if isinstance(mapping, dict):
                names.update(normalise_set_key(str(k)) for k in mapping if not has_markers(str(k)))
    return names
