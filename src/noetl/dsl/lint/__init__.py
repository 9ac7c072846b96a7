"""`noetl validate`: static checks of a playbook beyond what the parser refuses.

`lint_text` / `lint_file` return every finding (never raise on a bad playbook):

1. the YAML, then the parser (`noetl.dsl.parser`): its first error is a finding;
2. unknown keys per block and tool kind, with did-you-mean (`keys`);
3. every template compiled, and the names it reads checked for the field it is in
   (`templates`, `scopes`);
4. routing: arcs never taken, steps unreachable from `start` (`graph`).

Errors make `noetl validate` exit 2; warnings are printed and do not. Imported only by the
`validate` command, so `noetl run` does not pay for it.
"""

from __future__ import annotations

import os
from typing import Any

import yaml

from noetl.dsl.lint.findings import ERROR, WARNING, Finding, Findings
from noetl.dsl.lint.graph import check_graph
from noetl.dsl.lint.keys import check_keys
from noetl.dsl.lint.scopes import collect
from noetl.dsl.lint.templates import check_templates
from noetl.dsl.model import Playbook
from noetl.dsl.parser import parse_playbook
from noetl.dsl.yaml_lines import load_yaml
from noetl.errors import PlaybookError

__all__ = ["ERROR", "WARNING", "Finding", "lint_file", "lint_text"]


def lint_text(text: str, *, source: str | None = None) -> list[Finding]:
    """Every finding of a playbook document, sorted by line."""
    findings = Findings(source)
    try:
        doc = load_yaml(text)
    except yaml.YAMLError:
        doc = None
    playbook = _parse(findings, text, source)
    if isinstance(doc, dict):
        check_keys(findings, doc)
        check_templates(findings, doc, collect(doc), names=playbook is not None)
        if playbook is not None:
            check_graph(findings, playbook, _raw_steps(doc))
    return findings.sorted()


def lint_file(path: str | os.PathLike[str]) -> list[Finding]:
    source = os.fspath(path)
    try:
        with open(source, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        return [Finding(ERROR, f"cannot read the playbook file: {exc}", source)]
    return lint_text(text, source=source)


def _parse(findings: Findings, text: str, source: str | None) -> Playbook | None:
    try:
        return parse_playbook(text, source=source)
    except PlaybookError as exc:
        findings.add(ERROR, exc.message, line=exc.line, step=exc.step, field=exc.field)
        return None


def _raw_steps(doc: dict[Any, Any]) -> dict[str, dict[Any, Any]]:
    workflow = doc.get("workflow")
    steps = workflow if isinstance(workflow, list) else []
    return {raw["step"]: raw for raw in steps if isinstance(raw, dict) and isinstance(raw.get("step"), str)}
