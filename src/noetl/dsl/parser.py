"""Parse and validate playbook YAML into the typed model of `noetl.dsl.model`.

`parse_playbook(text)` returns a `Playbook` or raises the first `PlaybookError` it finds. Every
error names the step and field it is about and the YAML line (from `yaml_lines`), so a user can
go straight to the mistake. Tool configurations are kept raw (unrendered); the parser only
checks their shape.

Order of checks: YAML → root keys (apiVersion, kind, metadata, workload, workbook, keychain,
schedules, workflow) → each step in document order (name, forbidden keys, tool, loop, when, set/input/args,
next shape) → a `start` step exists → every `next` target exists.

This module reads the document's root; the parts have their own modules: `steps`, `tools`
(single tools, pipelines, workbook actions), `policy` (policy rules), `loops`, `routing`
(`next`), and `checks` (the field checks they share).
"""

from __future__ import annotations

import os
from typing import Any, cast

import yaml

from noetl.dsl.checks import Checks, found, line_of, show
from noetl.dsl.model import Playbook, Step
from noetl.dsl.routing import check_targets
from noetl.dsl.steps import parse_step
from noetl.dsl.tools import Tools
from noetl.dsl.yaml_lines import LineDict, load_yaml
from noetl.errors import PlaybookError

API_VERSIONS = ("noetl.io/v2", "noetl.io/v10")


def parse_playbook(text: str, *, source: str | None = None) -> Playbook:
    """Parse and validate a playbook document; raise `PlaybookError` on the first problem."""
    checks = Checks(source)
    doc = _document(checks, text)
    api_version = _api_version(checks, doc)
    _check_kind(checks, doc)
    name, path, metadata = _metadata(checks, doc)
    workload: dict[str, Any] = checks.mapping(
        doc, "workload", step=None, field="workload", what="the default input values of a run"
    )
    tools = Tools(checks)
    tools.load_workbook(doc)
    keychain = _keychain(checks, doc)
    _schedules(checks, doc)
    steps = _workflow(checks, tools, doc)
    return Playbook(
        name=name,
        path=path,
        steps=steps,
        workload=workload,
        metadata=metadata,
        workbook=dict(tools.workbook),
        keychain=keychain,
        api_version=api_version,
        kind="Playbook",
        source=source,
    )


def load_playbook(path: str | os.PathLike[str]) -> Playbook:
    """Read a playbook file and parse it; the file name becomes `Playbook.source`."""
    source = os.fspath(path)
    try:
        with open(source, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise PlaybookError(f"cannot read the playbook file: {exc}", source=source) from exc
    return parse_playbook(text, source=source)


def _document(checks: Checks, text: str) -> LineDict:
    """The YAML document, which must be a mapping."""
    try:
        doc = load_yaml(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "malformed YAML"
        checks.fail(f"invalid YAML: {problem}", line=mark.line + 1 if mark is not None else None)
    except yaml.YAMLError as exc:
        checks.fail(f"invalid YAML: {exc}")
    if doc is None:
        checks.fail(
            "the playbook is empty (expected a YAML mapping with apiVersion, kind, metadata, workflow)"
        )
    if not isinstance(doc, LineDict):
        checks.fail(
            f"a playbook must be a YAML mapping with apiVersion, kind, metadata and workflow, "
            f"got {show(doc)}",
            line=line_of(doc),
        )
    return doc


def _api_version(checks: Checks, doc: dict[Any, Any]) -> str:
    value = doc.get("apiVersion")
    expected = f"'{API_VERSIONS[0]}' (or its alias '{API_VERSIONS[1]}')"
    if value is None:
        checks.fail(f"apiVersion is required: expected {expected}", field="apiVersion", line=line_of(doc))
    if value not in API_VERSIONS:
        hint = ""
        if value == "noetl.io/v1":
            hint = (
                "; noetl.io/v1 playbooks (steps with 'type:') are not supported, "
                "rewrite steps with 'tool: {kind: ...}'"
            )
        checks.fail(
            f"unsupported apiVersion {show(value)}: expected {expected}{hint}",
            field="apiVersion",
            line=line_of(doc, "apiVersion"),
        )
    return cast(str, value)


def _check_kind(checks: Checks, doc: dict[Any, Any]) -> None:
    kind = doc.get("kind")
    if kind != "Playbook":
        checks.fail(
            f"kind must be 'Playbook', got {show(kind)}"
            if "kind" in doc
            else "kind is required ('Playbook')",
            field="kind",
            line=line_of(doc, "kind"),
        )


def _metadata(checks: Checks, doc: dict[Any, Any]) -> tuple[str, str, dict[str, Any]]:
    raw = doc.get("metadata")
    if not isinstance(raw, dict):
        checks.fail(
            f"metadata must be a mapping with at least 'name', {found(raw)}",
            field="metadata",
            line=line_of(doc, "metadata"),
        )
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        checks.fail(
            f"metadata.name is required and must be a non-empty string, {found(name)}",
            field="metadata.name",
            line=line_of(raw, "name") if "name" in raw else line_of(doc, "metadata"),
        )
    path = raw.get("path")
    if path is None:
        path = name
    elif not isinstance(path, str) or not path.strip():
        checks.fail(
            f"metadata.path must be a non-empty string (the catalog path), got {show(path)}",
            field="metadata.path",
            line=line_of(raw, "path"),
        )
    metadata = cast(dict[str, Any], checks.plain(raw, step=None, field="metadata", line=line_of(raw)))
    return name, path, metadata


def _keychain(checks: Checks, doc: dict[Any, Any]) -> tuple[dict[str, Any], ...]:
    raw = doc.get("keychain")
    if raw is None:
        return ()
    if not isinstance(raw, list):
        checks.fail(
            f"keychain must be a list of entries with a 'name', got {show(raw)}",
            field="keychain",
            line=line_of(doc, "keychain"),
        )
    entries: list[dict[str, Any]] = []
    for index, entry in enumerate(raw):
        field = f"keychain[{index}]"
        if not isinstance(entry, dict):
            checks.fail(
                f"{field} must be a mapping, got {show(entry)}", field=field, line=line_of(raw, index)
            )
        if not isinstance(entry.get("name"), str) or not entry["name"]:
            checks.fail(
                f"{field}.name is required (a non-empty string), got {show(entry.get('name'))}",
                field=f"{field}.name",
                line=line_of(entry, "name"),
            )
        entries.append(cast(dict[str, Any], checks.plain(entry, step=None, field=field, line=line_of(entry))))
    return tuple(entries)


def _schedules(checks: Checks, doc: dict[Any, Any]) -> None:
    """The shape of the top-level `schedules:` list (each entry has `cron` or `every`); the
    server reads the rest of each entry (`noetl.triggers`) when the playbook is registered."""
    raw = doc.get("schedules")
    if raw is None:
        return
    if not isinstance(raw, list):
        checks.fail(
            f"schedules must be a list of schedules (each with 'cron' or 'every'), got {show(raw)}",
            field="schedules",
            line=line_of(doc, "schedules"),
        )
    for index, entry in enumerate(raw):
        if not isinstance(entry, dict) or ("cron" in entry) == ("every" in entry):
            checks.fail(
                f"schedules[{index}] must be a mapping with exactly one of 'cron' and 'every', got {show(entry)}",
                field=f"schedules[{index}]",
                line=line_of(raw, index),
            )


def _workflow(checks: Checks, tools: Tools, doc: dict[Any, Any]) -> dict[str, Step]:
    """The steps by name, in document order, with a `start` step and only known targets."""
    workflow = doc.get("workflow")
    line = line_of(doc, "workflow")
    if workflow is None:
        checks.fail(
            "workflow is required (a list of steps, one of them named 'start')", field="workflow", line=line
        )
    if not isinstance(workflow, list):
        checks.fail(f"workflow must be a list of steps, got {show(workflow)}", field="workflow", line=line)
    if not workflow:
        checks.fail(
            "workflow must contain at least one step (a step named 'start')", field="workflow", line=line
        )
    steps: dict[str, Step] = {}
    raw_steps: dict[str, dict[Any, Any]] = {}
    for index, raw in enumerate(workflow):
        step = parse_step(checks, tools, raw, index, workflow, raw_steps)
        steps[step.name] = step
        raw_steps[step.name] = raw
    if "start" not in steps:
        checks.fail(
            f"the workflow has no step named 'start' (the entry point); steps found: {', '.join(steps)}",
            field="workflow",
            line=line,
        )
    for step in steps.values():
        check_targets(checks, step, raw_steps[step.name], steps)
    return steps
