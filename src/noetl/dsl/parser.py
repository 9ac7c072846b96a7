"""Parse and validate playbook YAML into the typed model of `noetl.dsl.model`.

`parse_playbook(text)` returns a `Playbook` or raises the first `PlaybookError` it finds. Every
error names the step and field it is about and the YAML line (from `yaml_lines`), so a user can
go straight to the mistake. Tool configurations are kept raw (unrendered); the parser only
checks their shape.

Order of checks: YAML → root keys (apiVersion, kind, metadata, workload, workbook, keychain,
workflow) → each step in document order (name, forbidden keys, tool, loop, when, set/input/args,
next shape) → a `start` step exists → every `next` target exists.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from typing import Any, NoReturn, cast

import yaml

from noetl.dsl.model import (
    Arc,
    Backoff,
    Loop,
    LoopMode,
    Next,
    NextMode,
    Playbook,
    PolicyAction,
    PolicyRule,
    Step,
    ToolSpec,
)
from noetl.dsl.yaml_lines import LineDict, LineList, load_yaml, to_plain
from noetl.errors import PlaybookError
from noetl.tools.base import supported_kinds

API_VERSIONS = ("noetl.io/v2", "noetl.io/v10")
POLICY_ACTIONS: tuple[PolicyAction, ...] = ("continue", "retry", "fail", "jump", "break")
BACKOFFS: tuple[Backoff, ...] = ("fixed", "linear", "exponential")

# Fields a tool kind cannot run without: (accepted keys, first one preferred; what it is).
# Where the SQL tools read their SQL from (noetl.tools.scripts.sql_texts).
_SQL_FIELDS = (
    "command", "query", "sql", "commands", "queries", "cmds", "cmd", "script", "source",
    "command_b64", "commands_b64", "query_b64", "queries_b64",
)  # fmt: skip
REQUIRED_TOOL_FIELDS: dict[str, tuple[tuple[str, ...], str]] = {
    "python": (("code", "script"), "the Python source to run"),
    "postgres": (_SQL_FIELDS, "the SQL to run"),
    "duckdb": (_SQL_FIELDS, "the SQL to run"),
    "ducklake": (_SQL_FIELDS, "the SQL to run"),
    "http": (("url", "endpoint"), "the URL to call"),
    "shell": (("command", "cmds"), "the command to run"),
    "playbook": (("path", "catalog_id"), "the playbook to run"),
}

# Tool fields people put on the step by mistake.
MISPLACED_TOOL_FIELDS = ("kind", "command", "code", "query", "url", "sql")


def parse_playbook(text: str, *, source: str | None = None) -> Playbook:
    """Parse and validate a playbook document; raise `PlaybookError` on the first problem."""
    return _Parser(source).parse(text)


def load_playbook(path: str | os.PathLike[str]) -> Playbook:
    """Read a playbook file and parse it; the file name becomes `Playbook.source`."""
    source = os.fspath(path)
    try:
        with open(source, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise PlaybookError(f"cannot read the playbook file: {exc}", source=source) from exc
    return parse_playbook(text, source=source)


def _show(value: Any) -> str:
    """A short rendering of a found value for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        text = repr(value)
        return text if len(text) <= 60 else text[:56] + "...'"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _line(container: Any, key: Any = None) -> int | None:
    """The line of `key` inside a LineDict/LineList, else of the container itself."""
    if isinstance(container, LineDict):
        return container.line_of(key) if key is not None else container.line
    if isinstance(container, LineList):
        return container.line_of(key) if isinstance(key, int) else container.line
    return None


def _kinds_text() -> str:
    return ", ".join(sorted(supported_kinds()))


class _Parser:
    def __init__(self, source: str | None) -> None:
        self.source = source
        self.workbook: dict[str, ToolSpec] = {}

    # -- errors -------------------------------------------------------------------------------

    def fail(
        self,
        message: str,
        *,
        step: str | None = None,
        field: str | None = None,
        line: int | None = None,
    ) -> NoReturn:
        raise PlaybookError(message, step=step, field=field, line=line, source=self.source)

    def plain(self, value: Any, *, step: str | None, field: str, line: int | None) -> Any:
        try:
            return to_plain(value)
        except ValueError as exc:
            self.fail(str(exc), step=step, field=field, line=line)

    def mapping(
        self,
        parent: Any,
        key: str,
        *,
        step: str | None,
        field: str,
        what: str,
    ) -> dict[str, Any]:
        """`parent[key]` as a plain dict ({} when absent or null); error if it is not a mapping."""
        value = parent.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.fail(
                f"{field} must be a mapping ({what}), got {_show(value)}",
                step=step,
                field=field,
                line=_line(parent, key),
            )
        return cast(dict[str, Any], self.plain(value, step=step, field=field, line=_line(parent, key)))

    def check_when(self, value: Any, *, step: str | None, field: str, line: int | None) -> str | bool:
        if isinstance(value, bool):
            return value
        if not isinstance(value, str):
            self.fail(
                f'{field} must be an expression string (e.g. "{{{{ x > 5 }}}}") or a boolean, '
                f"got {_show(value)}",
                step=step,
                field=field,
                line=line,
            )
        text = value.strip()
        if not text:
            self.fail(f"invalid 'when' expression: {field} is empty", step=step, field=field, line=line)
        if "{{" not in text and "{" in text:
            self.fail(
                f"invalid 'when' expression {value!r}: write a Jinja expression such as "
                '"{{ x > 5 }}" or a bare expression like "x > 5" (no {% %} blocks)',
                step=step,
                field=field,
                line=line,
            )
        return value

    # -- document -----------------------------------------------------------------------------

    def parse(self, text: str) -> Playbook:
        try:
            doc = load_yaml(text)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            problem = exc.problem or exc.context or "malformed YAML"
            self.fail(f"invalid YAML: {problem}", line=mark.line + 1 if mark is not None else None)
        except yaml.YAMLError as exc:
            self.fail(f"invalid YAML: {exc}")
        if doc is None:
            self.fail(
                "the playbook is empty (expected a YAML mapping with apiVersion, kind, metadata, workflow)"
            )
        if not isinstance(doc, LineDict):
            self.fail(
                f"a playbook must be a YAML mapping with apiVersion, kind, metadata and workflow, "
                f"got {_show(doc)}",
                line=_line(doc),
            )

        api_version = self.parse_api_version(doc)
        kind = doc.get("kind")
        if kind != "Playbook":
            self.fail(
                f"kind must be 'Playbook', got {_show(kind)}"
                if "kind" in doc
                else "kind is required ('Playbook')",
                field="kind",
                line=_line(doc, "kind"),
            )
        name, path, metadata = self.parse_metadata(doc)

        workload: dict[str, Any] = self.mapping(
            doc, "workload", step=None, field="workload", what="the default input values of a run"
        )
        self.workbook = self.parse_workbook(doc)
        keychain = self.parse_keychain(doc)

        workflow = doc.get("workflow")
        if workflow is None:
            self.fail(
                "workflow is required (a list of steps, one of them named 'start')",
                field="workflow",
                line=_line(doc, "workflow"),
            )
        if not isinstance(workflow, list):
            self.fail(
                f"workflow must be a list of steps, got {_show(workflow)}",
                field="workflow",
                line=_line(doc, "workflow"),
            )
        if not workflow:
            self.fail(
                "workflow must contain at least one step (a step named 'start')",
                field="workflow",
                line=_line(doc, "workflow"),
            )

        steps: dict[str, Step] = {}
        raw_steps: dict[str, dict[Any, Any]] = {}
        for index, raw in enumerate(workflow):
            step = self.parse_step(raw, index, workflow, raw_steps)
            steps[step.name] = step
            raw_steps[step.name] = raw

        if "start" not in steps:
            self.fail(
                f"the workflow has no step named 'start' (the entry point); steps found: {', '.join(steps)}",
                field="workflow",
                line=_line(doc, "workflow"),
            )
        for step in steps.values():
            self.check_targets(step, raw_steps[step.name], steps)

        return Playbook(
            name=name,
            path=path,
            steps=steps,
            workload=workload,
            metadata=metadata,
            workbook=dict(self.workbook),
            keychain=keychain,
            api_version=api_version,
            kind="Playbook",
            source=self.source,
        )

    def parse_api_version(self, doc: dict[Any, Any]) -> str:
        value = doc.get("apiVersion")
        expected = f"'{API_VERSIONS[0]}' (or its alias '{API_VERSIONS[1]}')"
        if value is None:
            self.fail(f"apiVersion is required: expected {expected}", field="apiVersion", line=_line(doc))
        if value not in API_VERSIONS:
            hint = ""
            if value == "noetl.io/v1":
                hint = (
                    "; noetl.io/v1 playbooks (steps with 'type:') are not supported, "
                    "rewrite steps with 'tool: {kind: ...}'"
                )
            self.fail(
                f"unsupported apiVersion {_show(value)}: expected {expected}{hint}",
                field="apiVersion",
                line=_line(doc, "apiVersion"),
            )
        return cast(str, value)

    def parse_metadata(self, doc: dict[Any, Any]) -> tuple[str, str, dict[str, Any]]:
        raw = doc.get("metadata")
        if not isinstance(raw, dict):
            found = "it is missing" if raw is None else f"got {_show(raw)}"
            self.fail(
                f"metadata must be a mapping with at least 'name', {found}",
                field="metadata",
                line=_line(doc, "metadata"),
            )
        name = raw.get("name")
        if not isinstance(name, str) or not name.strip():
            found = "it is missing" if name is None else f"got {_show(name)}"
            self.fail(
                f"metadata.name is required and must be a non-empty string, {found}",
                field="metadata.name",
                line=_line(raw, "name") if "name" in raw else _line(doc, "metadata"),
            )
        path = raw.get("path")
        if path is None:
            path = name
        elif not isinstance(path, str) or not path.strip():
            self.fail(
                f"metadata.path must be a non-empty string (the catalog path), got {_show(path)}",
                field="metadata.path",
                line=_line(raw, "path"),
            )
        metadata = cast(dict[str, Any], self.plain(raw, step=None, field="metadata", line=_line(raw)))
        return name, path, metadata

    def parse_workbook(self, doc: dict[Any, Any]) -> dict[str, ToolSpec]:
        raw = doc.get("workbook")
        if raw is None:
            return {}
        if not isinstance(raw, list):
            self.fail(
                f"workbook must be a list of {{name, tool}} actions, got {_show(raw)}",
                field="workbook",
                line=_line(doc, "workbook"),
            )
        actions: dict[str, ToolSpec] = {}
        for index, entry in enumerate(raw):
            field = f"workbook[{index}]"
            if not isinstance(entry, dict):
                self.fail(
                    f"{field} must be a mapping {{name, tool}}, got {_show(entry)}",
                    field=field,
                    line=_line(raw, index),
                )
            name = entry.get("name")
            if not isinstance(name, str) or not name.strip():
                self.fail(
                    f"{field}.name is required (the action name steps refer to), got {_show(name)}",
                    field=f"{field}.name",
                    line=_line(entry, "name"),
                )
            if name in actions:
                self.fail(
                    f"duplicate workbook action name '{name}'",
                    field=f"{field}.name",
                    line=_line(entry, "name"),
                )
            tool = entry.get("tool")
            if not isinstance(tool, dict):
                found = "it is missing" if tool is None else f"got {_show(tool)}"
                self.fail(
                    f"workbook action '{name}' needs 'tool' as a mapping with a kind, {found}",
                    field=f"{field}.tool",
                    line=_line(entry, "tool"),
                )
            spec = self.parse_tool(tool, step=None, prefix=f"{field}.tool", label=None, labels=None)
            if spec.kind == "workbook":
                self.fail(
                    f"workbook action '{name}' cannot itself be of kind 'workbook'",
                    field=f"{field}.tool.kind",
                    line=_line(tool, "kind"),
                )
            actions[name] = spec
        return actions

    def parse_keychain(self, doc: dict[Any, Any]) -> tuple[dict[str, Any], ...]:
        raw = doc.get("keychain")
        if raw is None:
            return ()
        if not isinstance(raw, list):
            self.fail(
                f"keychain must be a list of entries with a 'name', got {_show(raw)}",
                field="keychain",
                line=_line(doc, "keychain"),
            )
        entries: list[dict[str, Any]] = []
        for index, entry in enumerate(raw):
            field = f"keychain[{index}]"
            if not isinstance(entry, dict):
                self.fail(
                    f"{field} must be a mapping, got {_show(entry)}", field=field, line=_line(raw, index)
                )
            if not isinstance(entry.get("name"), str) or not entry["name"]:
                self.fail(
                    f"{field}.name is required (a non-empty string), got {_show(entry.get('name'))}",
                    field=f"{field}.name",
                    line=_line(entry, "name"),
                )
            entries.append(cast(dict[str, Any], self.plain(entry, step=None, field=field, line=_line(entry))))
        return tuple(entries)

    # -- steps --------------------------------------------------------------------------------

    def parse_step(self, raw: Any, index: int, workflow: Any, seen: Mapping[str, dict[Any, Any]]) -> Step:
        where = f"workflow[{index}]"
        if not isinstance(raw, dict):
            self.fail(
                f"{where} must be a mapping with a 'step' name, got {_show(raw)}",
                field=where,
                line=_line(workflow, index),
            )
        name = raw.get("step")
        if "case" in raw:
            self.fail(
                "'case' blocks are not allowed in steps: use step.when for guards and "
                "next[].when for routing (for pipelines, use 'tool: [...]')",
                step=name if isinstance(name, str) else where,
                field="case",
                line=_line(raw, "case"),
            )
        if not isinstance(name, str) or not name.strip():
            found = "it is missing" if name is None else f"got {_show(name)}"
            self.fail(
                f"{where}.step is required (the step name, a non-empty string), {found}",
                field=f"{where}.step",
                line=_line(raw, "step"),
            )
        if name in seen:
            self.fail(
                f"duplicate step name '{name}' (first defined on line {_line(seen[name])})",
                step=name,
                field="step",
                line=_line(raw, "step"),
            )
        if "type" in raw:
            self.fail(
                f"'type' is the old noetl.io/v1 step syntax; use tool: {{kind: {raw['type']}, ...}} instead",
                step=name,
                field="type",
                line=_line(raw, "type"),
            )
        self.check_misplaced_tool_fields(raw, name)

        tool: ToolSpec | None = None
        pipeline: tuple[ToolSpec, ...] | None = None
        raw_tool = raw.get("tool")
        if isinstance(raw_tool, dict):
            tool = self.parse_single_tool(raw_tool, name)
        elif isinstance(raw_tool, list):
            pipeline = self.parse_pipeline(raw_tool, name)
        elif raw_tool is not None:
            self.fail(
                f"tool must be a mapping (one tool, e.g. {{kind: python, code: ...}}) or a list "
                f"(a pipeline of tasks), got {_show(raw_tool)}",
                step=name,
                field="tool",
                line=_line(raw, "tool"),
            )

        desc = raw.get("desc")
        when = None
        if "when" in raw and raw["when"] is not None:
            when = self.check_when(raw["when"], step=name, field="when", line=_line(raw, "when"))
        spec = self.mapping(raw, "spec", step=name, field="spec", what="e.g. {next_mode: inclusive}")
        return Step(
            name=name,
            tool=tool,
            pipeline=pipeline,
            desc=None if desc is None else str(desc),
            when=when,
            loop=self.parse_loop(raw, name) if raw.get("loop") is not None else None,
            next=self.parse_next(raw, name, spec),
            set=self.mapping(raw, "set", step=name, field="set", what="variable name -> value template"),
            input=self.mapping(raw, "input", step=name, field="input", what="input name -> value"),
            args=self.mapping(raw, "args", step=name, field="args", what="argument name -> value"),
            line=raw.line if isinstance(raw, LineDict) else None,
        )

    def check_misplaced_tool_fields(self, raw: dict[str, Any], name: str) -> None:
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
            self.fail(message, step=name, field=key, line=_line(raw, key))

    # -- tools --------------------------------------------------------------------------------

    def parse_single_tool(self, raw: dict[Any, Any], step: str) -> ToolSpec:
        spec = self.parse_tool(raw, step=step, prefix="tool", label=None, labels=None)
        if spec.kind == "workbook":
            return self.resolve_workbook(spec, raw, step=step, prefix="tool")
        if spec.kind == "task_sequence":
            self.fail(
                "kind 'task_sequence' is generated for pipelines; write the tasks as a list under "
                "'tool' (tool: [{name: a, kind: ...}, ...])",
                step=step,
                field="tool.kind",
                line=_line(raw, "kind"),
            )
        return spec

    def parse_pipeline(self, raw: list[Any], step: str) -> tuple[ToolSpec, ...]:
        if not raw:
            self.fail(
                "a tool pipeline must have at least one task (tool: [] is empty)",
                step=step,
                field="tool",
                line=_line(raw),
            )
        entries: list[tuple[str, dict[Any, Any], str, bool]] = []  # label, spec, field prefix, flat
        label_index: dict[str, int] = {}
        for index, item in enumerate(raw):
            prefix = f"tool[{index}]"
            if not isinstance(item, dict):
                self.fail(
                    f"pipeline task[{index}] must be a mapping ({{name: x, kind: ...}} or "
                    f"{{x: {{kind: ...}}}}), got {_show(item)}",
                    step=step,
                    field=prefix,
                    line=_line(raw, index),
                )
            flat = "kind" in item
            if flat:
                label = item.get("name", f"task_{index}")
                body = item
                label_line = _line(item, "name")
            elif len(item) == 1:
                label, body = next(iter(item.items()))
                label_line = _line(item, label)
                if not isinstance(body, dict):
                    self.fail(
                        f"pipeline task '{label}' must be a mapping with a kind, got {_show(body)}",
                        step=step,
                        field=f"{prefix}.kind",
                        line=label_line,
                    )
            else:
                keys = ", ".join(str(key) for key in item)
                self.fail(
                    f"pipeline task[{index}] must have exactly one labelled entry "
                    f"({{label: {{kind: ...}}}}) or a 'kind' (flat form); got {len(item)} keys: {keys}",
                    step=step,
                    field=prefix,
                    line=_line(raw, index),
                )
            if not isinstance(label, str) or not label.strip():
                self.fail(
                    f"pipeline task[{index}] label must be a non-empty string, got {_show(label)}",
                    step=step,
                    field=prefix,
                    line=label_line,
                )
            if label in label_index:
                self.fail(
                    f"duplicate task label '{label}' in the pipeline (tasks {label_index[label]} and {index})",
                    step=step,
                    field=prefix,
                    line=label_line,
                )
            label_index[label] = index
            entries.append((label, body, prefix, flat))

        labels = tuple(label_index)
        tasks: list[ToolSpec] = []
        for label, body, prefix, flat in entries:
            spec = self.parse_tool(body, step=step, prefix=prefix, label=label, labels=labels)
            if spec.kind == "workbook":
                spec = self.resolve_workbook(spec, body, step=step, prefix=prefix, flat=flat)
            elif spec.kind == "task_sequence":
                self.fail(
                    "pipelines cannot be nested: a task cannot be of kind 'task_sequence'",
                    step=step,
                    field=f"{prefix}.kind",
                    line=_line(body, "kind"),
                )
            tasks.append(spec)
        return tuple(tasks)

    def parse_tool(
        self,
        raw: dict[Any, Any],
        *,
        step: str | None,
        prefix: str,
        label: str | None,
        labels: tuple[str, ...] | None,
    ) -> ToolSpec:
        """One tool mapping (a single tool, a pipeline task or a workbook action)."""
        kind = raw.get("kind")
        if kind is None:
            self.fail(
                f"{prefix}.kind is required (one of: {_kinds_text()})",
                step=step,
                field=f"{prefix}.kind",
                line=_line(raw),
            )
        if not isinstance(kind, str) or kind not in supported_kinds():
            self.fail(
                f"unknown tool kind {_show(kind)}; supported kinds: {_kinds_text()}",
                step=step,
                field=f"{prefix}.kind",
                line=_line(raw, "kind"),
            )
        config = cast(
            dict[str, Any],
            self.plain(
                {k: v for k, v in raw.items() if k != "kind"}, step=step, field=prefix, line=_line(raw)
            ),
        )
        if "args" in config:
            if "input" not in config:
                config["input"] = config["args"]
            elif config["input"] != config["args"]:
                self.fail(
                    f"{prefix} has both 'input' and 'args' with different values; they are the same "
                    "field (use 'input')",
                    step=step,
                    field=f"{prefix}.args",
                    line=_line(raw, "args"),
                )

        task_set = self.mapping(
            raw, "set", step=step, field=f"{prefix}.set", what="variable name -> value template"
        )
        policy = self.parse_policy(raw, step=step, prefix=prefix, labels=labels)
        if kind == "workbook":
            if not self.workbook:
                self.fail(
                    "kind 'workbook' needs a root 'workbook:' list of actions, and this playbook has none",
                    step=step,
                    field=f"{prefix}.kind",
                    line=_line(raw, "kind"),
                )
        else:
            self.check_required(kind, raw, step=step, prefix=prefix)
        return ToolSpec(
            kind=kind,
            config=config,
            label=label,
            policy=policy,
            set=task_set,
            line=_line(raw),
        )

    def check_required(self, kind: str, raw: dict[Any, Any], *, step: str | None, prefix: str) -> None:
        required = REQUIRED_TOOL_FIELDS.get(kind)
        if required is None:
            return
        keys, what = required
        if any(raw.get(key) not in (None, "") for key in keys):
            return
        others = " or ".join(f"'{key}'" for key in keys[1:])
        self.fail(
            f"{prefix}.{keys[0]} is required by the {kind} tool ({what}; {others} also accepted)",
            step=step,
            field=f"{prefix}.{keys[0]}",
            line=_line(raw),
        )

    def resolve_workbook(
        self, spec: ToolSpec, raw: dict[Any, Any], *, step: str, prefix: str, flat: bool = False
    ) -> ToolSpec:
        """Replace a `kind: workbook` reference by the action's tool, merging `input`."""
        available = ", ".join(self.workbook) or "none"
        # In a flat pipeline item `name` is the task label, so `task` names the action first there.
        ref_keys = ("task", "name") if flat else ("name", "task")
        ref_key = next((key for key in ref_keys if raw.get(key) is not None), None)
        if ref_key is None:
            self.fail(
                f"{prefix}.kind=workbook requires '{ref_keys[0]}' naming a workbook action "
                f"(available: {available})",
                step=step,
                field=f"{prefix}.{ref_keys[0]}",
                line=_line(raw),
            )
        action = raw[ref_key]
        if not isinstance(action, str) or action not in self.workbook:
            self.fail(
                f"workbook action {_show(action)} not found in the playbook's workbook (available: {available})",
                step=step,
                field=f"{prefix}.{ref_key}",
                line=_line(raw, ref_key),
            )
        base = self.workbook[action]
        config = copy.deepcopy(base.config)  # never share mutable config between steps
        if "input" in spec.config:
            base_input = base.config.get("input")
            step_input = spec.config["input"]
            if isinstance(base_input, dict) and isinstance(step_input, dict):
                merged: Any = {**base_input, **step_input}
            else:
                merged = step_input
            config["input"] = merged
            if "args" in config:
                config["args"] = merged
        # A policy or task-level set written on the reference applies to this call.
        policy = base.policy
        if "spec" in spec.config:
            config["spec"] = spec.config["spec"]
            policy = spec.policy
        task_set = base.set
        if "set" in spec.config:
            config["set"] = spec.config["set"]
            task_set = spec.set
        return ToolSpec(
            kind=base.kind,
            config=config,
            label=spec.label,
            policy=policy,
            set=task_set,
            line=spec.line,
        )

    # -- policy -------------------------------------------------------------------------------

    def parse_policy(
        self, raw: dict[Any, Any], *, step: str | None, prefix: str, labels: tuple[str, ...] | None
    ) -> tuple[PolicyRule, ...]:
        spec = raw.get("spec")
        if spec is None:
            return ()
        if not isinstance(spec, dict):
            self.fail(
                f"{prefix}.spec must be a mapping (e.g. {{policy: {{rules: [...]}}}}), got {_show(spec)}",
                step=step,
                field=f"{prefix}.spec",
                line=_line(raw, "spec"),
            )
        policy = spec.get("policy")
        if policy is None:
            return ()
        if not isinstance(policy, dict):
            self.fail(
                f"{prefix}.spec.policy must be a mapping with 'rules', got {_show(policy)}",
                step=step,
                field=f"{prefix}.spec.policy",
                line=_line(spec, "policy"),
            )
        rules = policy.get("rules")
        if rules is None:
            return ()
        if not isinstance(rules, list):
            self.fail(
                f"{prefix}.spec.policy.rules must be a list of {{when, then: {{do: ...}}}} rules, "
                f"got {_show(rules)}",
                step=step,
                field=f"{prefix}.spec.policy.rules",
                line=_line(policy, "rules"),
            )
        return tuple(
            self.parse_rule(rule, rules, index, step=step, prefix=prefix, labels=labels)
            for index, rule in enumerate(rules)
        )

    def parse_rule(
        self,
        rule: Any,
        rules: list[Any],
        index: int,
        *,
        step: str | None,
        prefix: str,
        labels: tuple[str, ...] | None,
    ) -> PolicyRule:
        field = f"{prefix}.spec.policy.rules[{index}]"
        line = _line(rules, index)
        if not isinstance(rule, dict):
            self.fail(
                f"policy rule must be a mapping ({{when, then: {{do: ...}}}} or {{else: {{do: ...}}}}), "
                f"got {_show(rule)}",
                step=step,
                field=field,
                line=line,
            )
        is_else = "else" in rule
        when: str | bool | None = None
        if is_else:
            body = rule["else"]
            if not isinstance(body, dict):
                self.fail(
                    f"the 'else' of a policy rule must be a mapping ({{then: {{do: ...}}}} or {{do: ...}}), "
                    f"got {_show(body)}",
                    step=step,
                    field=field,
                    line=_line(rule, "else"),
                )
            then = body.get("then", body)
        else:
            if "when" not in rule:
                self.fail(
                    "policy rule needs 'when' (a condition) or must be an 'else' rule",
                    step=step,
                    field=field,
                    line=line,
                )
            when = self.check_when(rule["when"], step=step, field=f"{field}.when", line=_line(rule, "when"))
            then = rule.get("then", rule)
        if not isinstance(then, dict):
            self.fail(
                f"policy rule 'then' must be a mapping like {{do: retry, attempts: 3}}, got {_show(then)}",
                step=step,
                field=field,
                line=line,
            )
        then_line = _line(then) or line

        action = then.get("do")
        if action not in POLICY_ACTIONS:
            found = "it is missing" if action is None else f"got {_show(action)}"
            self.fail(
                f"policy rule action 'do' must be one of {', '.join(POLICY_ACTIONS)}, {found}",
                step=step,
                field=field,
                line=_line(then, "do") or then_line,
            )
        attempts = then.get("attempts")
        if attempts is not None and (
            isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1
        ):
            self.fail(
                f"attempts must be an integer >= 1 (total tries including the first), got {_show(attempts)}",
                step=step,
                field=f"{field}.attempts",
                line=_line(then, "attempts"),
            )
        delay = then.get("delay")
        if delay is not None and (isinstance(delay, bool) or not isinstance(delay, int | float) or delay < 0):
            self.fail(
                f"delay must be a number of seconds >= 0, got {_show(delay)}",
                step=step,
                field=f"{field}.delay",
                line=_line(then, "delay"),
            )
        backoff = then.get("backoff", "fixed")
        if backoff is None:
            backoff = "fixed"
        if backoff not in BACKOFFS:
            self.fail(
                f"backoff must be one of {', '.join(BACKOFFS)}, got {_show(backoff)}",
                step=step,
                field=f"{field}.backoff",
                line=_line(then, "backoff"),
            )
        to = then.get("to")
        if action == "jump":
            if not isinstance(to, str) or not to:
                self.fail(
                    "a 'jump' rule needs 'to': the label of the pipeline task to continue at",
                    step=step,
                    field=f"{field}.to",
                    line=_line(then, "to") or then_line,
                )
            if labels is not None and to not in labels:
                self.fail(
                    f"jump target '{to}' is not a task of this pipeline (tasks: {', '.join(labels)})",
                    step=step,
                    field=f"{field}.to",
                    line=_line(then, "to"),
                )
        elif to is not None and not isinstance(to, str):
            self.fail(
                f"'to' must be a task label, got {_show(to)}",
                step=step,
                field=f"{field}.to",
                line=_line(then, "to"),
            )
        rule_set = self.mapping(
            then, "set", step=step, field=f"{field}.set", what="variable name -> value template"
        )
        return PolicyRule(
            action=cast(PolicyAction, action),
            when=when,
            is_else=is_else,
            attempts=attempts,
            delay=None if delay is None else float(delay),
            backoff=cast(Backoff, backoff),
            to=to,
            set=rule_set,
        )

    # -- loop ---------------------------------------------------------------------------------

    def parse_loop(self, raw: dict[Any, Any], step: str) -> Loop:
        loop = raw["loop"]
        if not isinstance(loop, dict):
            self.fail(
                f"loop must be a mapping {{in, iterator, spec: {{mode}}}}, got {_show(loop)}",
                step=step,
                field="loop",
                line=_line(raw, "loop"),
            )
        spec = loop.get("spec")
        if spec is None:
            spec = {}
        if not isinstance(spec, dict):
            self.fail(
                f"loop.spec must be a mapping {{mode, max_in_flight}}, got {_show(spec)}",
                step=step,
                field="loop.spec",
                line=_line(loop, "spec"),
            )

        def setting(key: str) -> tuple[Any, str, int | None]:
            if spec.get(key) is not None:
                return spec[key], f"loop.spec.{key}", _line(spec, key)
            return loop.get(key), f"loop.{key}", _line(loop, key)

        mode, mode_field, mode_line = setting("mode")
        if mode is None:
            mode = "sequential"
        if mode == "cursor" or "cursor" in loop:
            self.fail(
                "cursor loops are not supported; loop over a collection with "
                "loop: {in: ..., iterator: ..., spec: {mode: sequential|parallel}}",
                step=step,
                field=mode_field if mode == "cursor" else "loop.cursor",
                line=mode_line if mode == "cursor" else _line(loop, "cursor"),
            )
        if mode not in ("sequential", "parallel"):
            self.fail(
                f"{mode_field} must be 'sequential' or 'parallel', got {_show(mode)}",
                step=step,
                field=mode_field,
                line=mode_line,
            )

        collection = loop.get("in")
        if collection is None or (isinstance(collection, str) and not collection.strip()):
            self.fail(
                'loop.in is required (the collection to iterate over, e.g. "{{ workload.items }}")',
                step=step,
                field="loop.in",
                line=_line(loop, "in"),
            )
        if isinstance(collection, bool) or not isinstance(collection, str | list | dict | int | float):
            self.fail(
                f"loop.in must be a template string, a list, a mapping or a number, got {_show(collection)}",
                step=step,
                field="loop.in",
                line=_line(loop, "in"),
            )
        iterator = loop.get("iterator")
        if not isinstance(iterator, str) or not iterator.strip():
            found = "it is missing" if iterator is None else f"got {_show(iterator)}"
            self.fail(
                f"loop.iterator is required (the variable name bound to each item), {found}",
                step=step,
                field="loop.iterator",
                line=_line(loop, "iterator"),
            )
        if not iterator.isidentifier():
            self.fail(
                f"loop.iterator must be a variable name (letters, digits, _), got {iterator!r}",
                step=step,
                field="loop.iterator",
                line=_line(loop, "iterator"),
            )

        max_in_flight, mif_field, mif_line = setting("max_in_flight")
        if max_in_flight is not None and (
            isinstance(max_in_flight, bool) or not isinstance(max_in_flight, int) or max_in_flight < 1
        ):
            self.fail(
                f"max_in_flight must be a positive integer, got {_show(max_in_flight)}",
                step=step,
                field=mif_field,
                line=mif_line,
            )
        return Loop(
            in_=self.plain(collection, step=step, field="loop.in", line=_line(loop, "in")),
            iterator=iterator,
            mode=cast(LoopMode, mode),
            max_in_flight=max_in_flight,
        )

    # -- next ---------------------------------------------------------------------------------

    def parse_next(self, raw: dict[Any, Any], step: str, spec: dict[str, Any]) -> Next | None:
        value = raw.get("next")
        if value is None:
            return None
        line = _line(raw, "next")
        default_mode = _mode(spec.get("next_mode"))
        if isinstance(value, str):
            if not value.strip():
                self.fail("next must name a step, got an empty string", step=step, field="next", line=line)
            return Next(mode="inclusive", arcs=(Arc(step=value),))
        if isinstance(value, list):
            if all(isinstance(item, str) for item in value) and value:
                for index, item in enumerate(value):
                    if not item.strip():
                        self.fail(
                            "next must name steps, got an empty string",
                            step=step,
                            field=f"next[{index}]",
                            line=_line(value, index),
                        )
                return Next(mode="inclusive", arcs=tuple(Arc(step=item) for item in value))
            if all(isinstance(item, dict) for item in value):
                arcs = tuple(
                    self.parse_arc(item, value, index, step, "next") for index, item in enumerate(value)
                )
                return Next(mode=default_mode, arcs=arcs)
            self.fail(
                "next mixes forms: use a list of step names ([b, c]) or a list of "
                "{step, when?} maps, not both",
                step=step,
                field="next",
                line=line,
            )
        if isinstance(value, dict):
            router_spec = value.get("spec")
            if router_spec is not None and not isinstance(router_spec, dict):
                self.fail(
                    f"next.spec must be a mapping like {{mode: exclusive}}, got {_show(router_spec)}",
                    step=step,
                    field="next.spec",
                    line=_line(value, "spec"),
                )
            if "arcs" not in value:
                self.fail(
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
                self.fail(
                    f"next.arcs must be a list of {{step, when?, set?}}, got {_show(arcs_raw)}",
                    step=step,
                    field="next.arcs",
                    line=_line(value, "arcs"),
                )
            mode = default_mode
            if router_spec and router_spec.get("mode") is not None:
                mode = _mode(router_spec["mode"])
            arcs = tuple(
                self.parse_arc(item, arcs_raw, index, step, "next.arcs")
                for index, item in enumerate(arcs_raw)
            )
            return Next(mode=mode, arcs=arcs)
        self.fail(
            f"next must be a step name, a list, or a mapping with 'arcs', got {_show(value)}",
            step=step,
            field="next",
            line=line,
        )

    def parse_arc(self, item: Any, items: Any, index: int, step: str, where: str) -> Arc:
        field = f"{where}[{index}]"
        if isinstance(item, str) and where == "next.arcs" and item.strip():
            return Arc(step=item)
        if not isinstance(item, dict):
            self.fail(
                f"{field} must be a mapping {{step, when?, set?}}, got {_show(item)}",
                step=step,
                field=field,
                line=_line(items, index),
            )
        target = item.get("step")
        if not isinstance(target, str) or not target.strip():
            found = "it is missing" if target is None else f"got {_show(target)}"
            self.fail(
                f"{field}.step is required (the step to go to), {found}",
                step=step,
                field=f"{field}.step",
                line=_line(item, "step"),
            )
        when = None
        if item.get("when") is not None:
            when = self.check_when(item["when"], step=step, field=f"{field}.when", line=_line(item, "when"))
        return Arc(
            step=target,
            when=when,
            set=self.mapping(
                item, "set", step=step, field=f"{field}.set", what="variable name -> value template"
            ),
            args=self.mapping(item, "args", step=step, field=f"{field}.args", what="argument name -> value"),
        )

    def check_targets(self, step: Step, raw: dict[Any, Any], steps: Mapping[str, Step]) -> None:
        if step.next is None:
            return
        value = raw.get("next")
        for index, arc in enumerate(step.next.arcs):
            if arc.step in steps:
                continue
            line = _line(raw, "next")
            if isinstance(value, list):
                line = _line(value, index)
            elif isinstance(value, dict) and isinstance(value.get("arcs"), list):
                line = _line(value["arcs"], index)
            self.fail(
                f"step '{step.name}' references unknown step '{arc.step}' in next "
                f"(steps: {', '.join(steps)})",
                step=step.name,
                field="next",
                line=line,
            )


def _mode(value: Any) -> NextMode:
    """`inclusive` (any case) fans out to every matching arc; anything else is exclusive."""
    return "inclusive" if isinstance(value, str) and value.strip().lower() == "inclusive" else "exclusive"
