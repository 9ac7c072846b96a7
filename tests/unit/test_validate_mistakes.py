"""`noetl validate` reports each mistake of issue 15 with exit 2, the file:line, the step and the
field; warnings alone exit 0; `--json` prints the findings as a list."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from noetl.cli.main import app
from noetl.dsl.lint import Finding, lint_text

HEAD = """apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: lint}
workload:
  items: [1, 2]
workflow:
"""


def _playbook(body: str) -> str:
    return HEAD + body


def _errors(text: str) -> list[Finding]:
    return [f for f in lint_text(text, source="flow.yaml") if f.severity == "error"]


def _validate(tmp_path: Path, text: str, *args: str) -> tuple[int, str]:
    path = tmp_path / "flow.yaml"
    path.write_text(text, encoding="utf-8")
    result = CliRunner().invoke(app, ["validate", str(path), *args])
    return result.exit_code, result.output


POLICY_OUTCOME = _playbook("""  - step: start
    tool:
      kind: python
      code: "result = 1"
      spec:
        policy:
          rules:
            - when: "{{ outcome.status == 'error' }}"
              then: {do: retry, attempts: 2}
""")

MISSPELT_STEP = _playbook("""  - step: start
    tool: {kind: python, code: "result = {'data': [1]}"}
    next: second
  - step: second
    tool:
      kind: python
      input:
        rows: "{{ stat.data }}"
      code: "result = len(rows)"
""")

ONE_BRACE = _playbook("""  - step: start
    tool: {kind: python, code: "result = 1"}
    next: second
  - step: second
    tool:
      kind: python
      input:
        rows: "{{ start.data }"
      code: "result = rows"
""")

NEXT_UNDER_TOOL = _playbook("""  - step: start
    tool:
      kind: python
      code: "result = 1"
      next: second
  - step: second
    tool: {kind: python, code: "result = 2"}
    next: third
  - step: third
    tool: {kind: noop}
""")

EMPTY_FILTER = _playbook("""  - step: start
    tool:
      kind: shell
      command: "echo {{ items | }}"
""")

MISSING_ENDFOR = _playbook("""  - step: start
    tool:
      kind: postgres
      auth: pg
      command: |
        SELECT 1;
        {% for x in items %}
        SELECT {{ x }};
""")

QUERRY = _playbook("""  - step: start
    tool:
      kind: duckdb
      command: "SELECT 1"
      querry: "SELECT 2"
""")

UNREACHABLE = _playbook("""  - step: start
    tool: {kind: noop}
    next:
      - step: done
      - step: audit
        when: "{{ start.status == 'ok' }}"
  - step: done
    tool: {kind: noop}
  - step: audit
    tool: {kind: noop}
""")

# (document, line, step, field, text in the message)
MISTAKES = {
    "policy rule reads outcome": (POLICY_OUTCOME, 14, "start", "tool.spec.policy.rules[0].when", "'output'"),
    "misspelt step name": (MISSPELT_STEP, 14, "second", "tool.input.rows", "did you mean 'start'"),
    "one closing brace": (ONE_BRACE, 14, "second", "tool.input.rows", "never closed"),
    "next under tool": (NEXT_UNDER_TOOL, 11, "start", "tool.next", "belongs to the step"),
    "empty filter": (EMPTY_FILTER, 10, "start", "tool.command", "template error"),
    "missing endfor": (MISSING_ENDFOR, 14, "start", "tool.command", "endfor"),
    "querry key": (QUERRY, 11, "start", "tool.querry", "did you mean 'query'"),
    "arc never taken": (UNREACHABLE, 15, "audit", "step", "unreachable"),
}


@pytest.mark.parametrize("name", sorted(MISTAKES))
def test_each_mistake_is_an_error_with_line_step_and_field(name: str) -> None:
    text, line, step, field, words = MISTAKES[name]
    matching = [f for f in _errors(text) if f.field == field]
    assert matching, f"no error on {field}: {lint_text(text)}"
    finding = matching[0]
    assert (finding.file, finding.line, finding.step) == ("flow.yaml", line, step)
    assert words in finding.message


@pytest.mark.parametrize("name", sorted(MISTAKES))
def test_validate_exits_2_and_prints_file_line_step_field(tmp_path: Path, name: str) -> None:
    text, line, step, field, _ = MISTAKES[name]
    code, output = _validate(tmp_path, text)
    assert code == 2, output
    assert f"flow.yaml:{line}: error (step '{step}', field '{field}')" in output


def test_next_under_tool_also_reports_the_steps_that_never_run() -> None:
    findings = lint_text(NEXT_UNDER_TOOL)
    unreachable = {f.step for f in findings if "unreachable" in f.message}
    assert unreachable == {"second", "third"}


def test_the_missing_endfor_is_reported_on_the_line_of_the_template() -> None:
    (finding,) = _errors(MISSING_ENDFOR)
    assert "Unexpected end of template" in finding.message


def test_a_shadowed_exclusive_arc_is_a_warning_and_its_target_unreachable() -> None:
    findings = lint_text(UNREACHABLE)
    warnings = [f for f in findings if f.severity == "warning"]
    assert [(f.step, f.field) for f in warnings] == [("start", "next[1]")]
    assert "never taken" in warnings[0].message


def test_a_valid_playbook_is_ok(tmp_path: Path) -> None:
    text = _playbook("""  - step: start
    loop: {in: "{{ items }}", iterator: item}
    tool:
      kind: python
      input: {n: "{{ item }}", i: "{{ iter._index }}"}
      code: "result = n"
      spec:
        policy:
          rules:
            - when: "{{ output.status == 'error' and output.error.retryable }}"
              then: {do: retry, attempts: 3}
    set:
      ctx.total: "{{ output | length }}"
    next:
      - step: end
        when: "{{ total > 0 and start.data is defined }}"
  - step: end
    tool: {kind: noop}
""")
    assert lint_text(text) == []
    code, output = _validate(tmp_path, text)
    assert (code, output.strip()) == (0, f"ok: {tmp_path / 'flow.yaml'}")


def test_output_outside_a_rule_is_an_error_naming_where_it_exists() -> None:
    text = _playbook("""  - step: start
    tool: {kind: shell, command: "echo {{ output.data }}"}
""")
    (finding,) = _errors(text)
    assert finding.field == "tool.command"
    assert "defined only in a tool's policy rules and set" in finding.message


def test_names_are_warnings_when_a_set_key_is_a_template(tmp_path: Path) -> None:
    text = _playbook("""  - step: start
    tool: {kind: noop}
    set:
      "{{ 'x' ~ 'y' }}": 1
    next: end
  - step: end
    tool: {kind: shell, command: "echo {{ xy }}"}
""")
    findings = lint_text(text)
    assert [(f.severity, f.field) for f in findings] == [("warning", "tool.command")]
    code, output = _validate(tmp_path, text)
    assert code == 0 and "1 warning(s)" in output


def test_json_lists_the_findings(tmp_path: Path) -> None:
    code, output = _validate(tmp_path, QUERRY, "--json")
    assert code == 2
    (finding,) = json.loads(output)
    assert finding == {
        "severity": "error",
        "file": str(tmp_path / "flow.yaml"),
        "line": 11,
        "step": "start",
        "field": "tool.querry",
        "message": "unknown key 'querry' in the duckdb tool: did you mean 'query'?",
    }


def test_a_parser_error_is_a_finding(tmp_path: Path) -> None:
    code, output = _validate(tmp_path, HEAD + "  - step: other\n    tool: {kind: noop}\n")
    assert code == 2
    assert "no step named 'start'" in output
