"""Tools of a playbook: a step's single tool, a pipeline of labelled tasks (`tool: [...]`), the
root `workbook:` actions and `kind: workbook` references to them.

Tool configurations stay raw (unrendered); only their shape and required fields are checked.
"""

from __future__ import annotations

import copy
from typing import Any, cast

from noetl.dsl.checks import Checks, found, line_of, show
from noetl.dsl.kinds import supported_kinds
from noetl.dsl.model import ToolSpec
from noetl.dsl.policy import parse_policy

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

# One pipeline entry before its tool is parsed: label, tool mapping, field prefix, flat form.
_Entry = tuple[str, dict[Any, Any], str, bool]


def _kinds_text() -> str:
    return ", ".join(sorted(supported_kinds()))


class Tools:
    """Parses tool mappings; knows the playbook's workbook actions once `load_workbook` ran."""

    def __init__(self, checks: Checks) -> None:
        self.checks = checks
        self.workbook: dict[str, ToolSpec] = {}

    # -- workbook -----------------------------------------------------------------------------

    def load_workbook(self, doc: dict[Any, Any]) -> None:
        """Parse the root `workbook:` list of `{name, tool}` actions."""
        raw = doc.get("workbook")
        if raw is None:
            self.workbook = {}
            return
        if not isinstance(raw, list):
            self.checks.fail(
                f"workbook must be a list of {{name, tool}} actions, got {show(raw)}",
                field="workbook",
                line=line_of(doc, "workbook"),
            )
        actions: dict[str, ToolSpec] = {}
        for index, entry in enumerate(raw):
            name, spec = self._action(entry, index, raw, actions)
            actions[name] = spec
        self.workbook = actions

    def _action(
        self, entry: Any, index: int, raw: list[Any], actions: dict[str, ToolSpec]
    ) -> tuple[str, ToolSpec]:
        fail = self.checks.fail
        field = f"workbook[{index}]"
        if not isinstance(entry, dict):
            fail(
                f"{field} must be a mapping {{name, tool}}, got {show(entry)}",
                field=field,
                line=line_of(raw, index),
            )
        name = entry.get("name")
        if not isinstance(name, str) or not name.strip():
            fail(
                f"{field}.name is required (the action name steps refer to), got {show(name)}",
                field=f"{field}.name",
                line=line_of(entry, "name"),
            )
        if name in actions:
            fail(
                f"duplicate workbook action name '{name}'", field=f"{field}.name", line=line_of(entry, "name")
            )
        tool = entry.get("tool")
        if not isinstance(tool, dict):
            fail(
                f"workbook action '{name}' needs 'tool' as a mapping with a kind, {found(tool)}",
                field=f"{field}.tool",
                line=line_of(entry, "tool"),
            )
        spec = self.parse_tool(tool, step=None, prefix=f"{field}.tool", label=None, labels=None)
        if spec.kind == "workbook":
            fail(
                f"workbook action '{name}' cannot itself be of kind 'workbook'",
                field=f"{field}.tool.kind",
                line=line_of(tool, "kind"),
            )
        return name, spec

    # -- a step's tool ------------------------------------------------------------------------

    def parse_single(self, raw: dict[Any, Any], step: str) -> ToolSpec:
        spec = self.parse_tool(raw, step=step, prefix="tool", label=None, labels=None)
        if spec.kind == "workbook":
            return self.resolve_workbook(spec, raw, step=step, prefix="tool")
        if spec.kind == "task_sequence":
            self.checks.fail(
                "kind 'task_sequence' is generated for pipelines; write the tasks as a list under "
                "'tool' (tool: [{name: a, kind: ...}, ...])",
                step=step,
                field="tool.kind",
                line=line_of(raw, "kind"),
            )
        return spec

    def parse_pipeline(self, raw: list[Any], step: str) -> tuple[ToolSpec, ...]:
        if not raw:
            self.checks.fail(
                "a tool pipeline must have at least one task (tool: [] is empty)",
                step=step,
                field="tool",
                line=line_of(raw),
            )
        entries = self._pipeline_entries(raw, step)
        labels = tuple(label for label, _, _, _ in entries)
        tasks: list[ToolSpec] = []
        for label, body, prefix, flat in entries:
            spec = self.parse_tool(body, step=step, prefix=prefix, label=label, labels=labels)
            if spec.kind == "workbook":
                spec = self.resolve_workbook(spec, body, step=step, prefix=prefix, flat=flat)
            elif spec.kind == "task_sequence":
                self.checks.fail(
                    "pipelines cannot be nested: a task cannot be of kind 'task_sequence'",
                    step=step,
                    field=f"{prefix}.kind",
                    line=line_of(body, "kind"),
                )
            tasks.append(spec)
        return tuple(tasks)

    def _pipeline_entries(self, raw: list[Any], step: str) -> list[_Entry]:
        """Each task's label and mapping, with unique, non-empty labels."""
        entries: list[_Entry] = []
        label_index: dict[str, int] = {}
        for index, item in enumerate(raw):
            prefix = f"tool[{index}]"
            label, body, flat, label_line = self._pipeline_entry(item, index, raw, step)
            if not isinstance(label, str) or not label.strip():
                self.checks.fail(
                    f"pipeline task[{index}] label must be a non-empty string, got {show(label)}",
                    step=step,
                    field=prefix,
                    line=label_line,
                )
            if label in label_index:
                self.checks.fail(
                    f"duplicate task label '{label}' in the pipeline (tasks {label_index[label]} and {index})",
                    step=step,
                    field=prefix,
                    line=label_line,
                )
            label_index[label] = index
            entries.append((label, body, prefix, flat))
        return entries

    def _pipeline_entry(
        self, item: Any, index: int, raw: list[Any], step: str
    ) -> tuple[Any, dict[Any, Any], bool, int | None]:
        """One task in the flat form (`{name: x, kind: ...}`) or the labelled one (`{x: {kind}}`)."""
        prefix = f"tool[{index}]"
        if not isinstance(item, dict):
            self.checks.fail(
                f"pipeline task[{index}] must be a mapping ({{name: x, kind: ...}} or "
                f"{{x: {{kind: ...}}}}), got {show(item)}",
                step=step,
                field=prefix,
                line=line_of(raw, index),
            )
        if "kind" in item:
            return item.get("name", f"task_{index}"), item, True, line_of(item, "name")
        if len(item) == 1:
            label, body = next(iter(item.items()))
            label_line = line_of(item, label)
            if not isinstance(body, dict):
                self.checks.fail(
                    f"pipeline task '{label}' must be a mapping with a kind, got {show(body)}",
                    step=step,
                    field=f"{prefix}.kind",
                    line=label_line,
                )
            return label, body, False, label_line
        keys = ", ".join(str(key) for key in item)
        self.checks.fail(
            f"pipeline task[{index}] must have exactly one labelled entry "
            f"({{label: {{kind: ...}}}}) or a 'kind' (flat form); got {len(item)} keys: {keys}",
            step=step,
            field=prefix,
            line=line_of(raw, index),
        )

    # -- one tool mapping ---------------------------------------------------------------------

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
        kind = self._kind(raw, step=step, prefix=prefix)
        config = self._config(raw, step=step, prefix=prefix)
        task_set = self.checks.mapping(
            raw, "set", step=step, field=f"{prefix}.set", what="variable name -> value template"
        )
        policy = parse_policy(self.checks, raw, step=step, prefix=prefix, labels=labels)
        if kind == "workbook":
            if not self.workbook:
                self.checks.fail(
                    "kind 'workbook' needs a root 'workbook:' list of actions, and this playbook has none",
                    step=step,
                    field=f"{prefix}.kind",
                    line=line_of(raw, "kind"),
                )
        else:
            self.check_required(kind, raw, step=step, prefix=prefix)
        return ToolSpec(
            kind=kind,
            config=config,
            label=label,
            policy=policy,
            set=task_set,
            line=line_of(raw),
        )

    def _kind(self, raw: dict[Any, Any], *, step: str | None, prefix: str) -> str:
        kind = raw.get("kind")
        if kind is None:
            self.checks.fail(
                f"{prefix}.kind is required (one of: {_kinds_text()})",
                step=step,
                field=f"{prefix}.kind",
                line=line_of(raw),
            )
        if not isinstance(kind, str) or kind not in supported_kinds():
            self.checks.fail(
                f"unknown tool kind {show(kind)}; supported kinds: {_kinds_text()}",
                step=step,
                field=f"{prefix}.kind",
                line=line_of(raw, "kind"),
            )
        return kind

    def _config(self, raw: dict[Any, Any], *, step: str | None, prefix: str) -> dict[str, Any]:
        """Everything but `kind`, as plain data; `args` is another name for `input`."""
        config = cast(
            dict[str, Any],
            self.checks.plain(
                {k: v for k, v in raw.items() if k != "kind"}, step=step, field=prefix, line=line_of(raw)
            ),
        )
        if "args" in config:
            if "input" not in config:
                config["input"] = config["args"]
            elif config["input"] != config["args"]:
                self.checks.fail(
                    f"{prefix} has both 'input' and 'args' with different values; they are the same "
                    "field (use 'input')",
                    step=step,
                    field=f"{prefix}.args",
                    line=line_of(raw, "args"),
                )
        return config

    def check_required(self, kind: str, raw: dict[Any, Any], *, step: str | None, prefix: str) -> None:
        required = REQUIRED_TOOL_FIELDS.get(kind)
        if required is None:
            return
        keys, what = required
        if any(raw.get(key) not in (None, "") for key in keys):
            return
        others = " or ".join(f"'{key}'" for key in keys[1:])
        self.checks.fail(
            f"{prefix}.{keys[0]} is required by the {kind} tool ({what}; {others} also accepted)",
            step=step,
            field=f"{prefix}.{keys[0]}",
            line=line_of(raw),
        )

    # -- workbook references ------------------------------------------------------------------

    def resolve_workbook(
        self, spec: ToolSpec, raw: dict[Any, Any], *, step: str, prefix: str, flat: bool = False
    ) -> ToolSpec:
        """Replace a `kind: workbook` reference by the action's tool, merging `input`."""
        base = self._referenced_action(raw, step=step, prefix=prefix, flat=flat)
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

    def _referenced_action(self, raw: dict[Any, Any], *, step: str, prefix: str, flat: bool) -> ToolSpec:
        """The workbook action a `kind: workbook` mapping names."""
        available = ", ".join(self.workbook) or "none"
        # In a flat pipeline item `name` is the task label, so `task` names the action first there.
        ref_keys = ("task", "name") if flat else ("name", "task")
        ref_key = next((key for key in ref_keys if raw.get(key) is not None), None)
        if ref_key is None:
            self.checks.fail(
                f"{prefix}.kind=workbook requires '{ref_keys[0]}' naming a workbook action "
                f"(available: {available})",
                step=step,
                field=f"{prefix}.{ref_keys[0]}",
                line=line_of(raw),
            )
        action = raw[ref_key]
        if not isinstance(action, str) or action not in self.workbook:
            self.checks.fail(
                f"workbook action {show(action)} not found in the playbook's workbook (available: {available})",
                step=step,
                field=f"{prefix}.{ref_key}",
                line=line_of(raw, ref_key),
            )
        return self.workbook[action]
