"""Tests of the playbook parser and validator (`noetl.dsl`)."""

from __future__ import annotations

import os
import re
import sys
import textwrap
from pathlib import Path

import pytest

from noetl.dsl import Arc, Next, Playbook, load_playbook, parse_playbook
from noetl.dsl.yaml_lines import LineDict, load_yaml, to_plain
from noetl.errors import PlaybookError

CONFORMANCE = Path(__file__).resolve().parents[2].parent / "shared" / "conformance" / "playbooks"
BROKEN = "broken_playbooks/should_error_tool_is_required.yaml"


def _conformance_missing() -> None:
    message = f"conformance playbooks not found at {CONFORMANCE} (the ../shared checkout is missing)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def _conformance_files() -> list[str | None]:
    if not CONFORMANCE.is_dir():
        return [None]
    files: list[str | None] = []
    files.extend(sorted(str(p.relative_to(CONFORMANCE)) for p in CONFORMANCE.rglob("*.y*ml")))
    return files


def _conformance(rel: str) -> Playbook:
    if not CONFORMANCE.is_dir():
        _conformance_missing()
    return load_playbook(CONFORMANCE / rel)


HEADER = "apiVersion: noetl.io/v2\nkind: Playbook\nmetadata:\n  name: t\n"


def doc(steps: str, extra: str = "") -> str:
    """A playbook with the standard header, `extra` root keys, then `workflow:` + steps."""
    return HEADER + textwrap.dedent(extra) + "workflow:\n" + textwrap.dedent(steps)


def line_of(text: str, needle: str, nth: int = 1) -> int:
    """The 1-based line of the nth occurrence of `needle` in `text`."""
    found = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if needle in line:
            found += 1
            if found == nth:
                return number
    raise AssertionError(f"{needle!r} not in the document")


def error(text: str) -> PlaybookError:
    with pytest.raises(PlaybookError) as info:
        parse_playbook(text)
    return info.value


START_END = """\
- step: start
  tool: {kind: python, code: "result = 1"}
  next: end
- step: end
"""


# --------------------------------------------------------------------------------------------
# The conformance corpus


@pytest.mark.parametrize("rel", _conformance_files())
def test_conformance_playbook_parses(rel: str | None) -> None:
    if rel is None:
        _conformance_missing()
        return
    if rel == BROKEN:
        with pytest.raises(PlaybookError) as info:
            _conformance(rel)
        assert re.search(r"tool.*required", str(info.value))
        assert info.value.step == "insert_report"
        assert "insert_report" in str(info.value)
        assert info.value.source is not None and info.value.source.endswith(
            "should_error_tool_is_required.yaml"
        )
        return
    playbook = _conformance(rel)
    assert "start" in playbook.steps
    assert playbook.source == str(CONFORMANCE / rel)
    for step in playbook.steps.values():
        if step.next is not None:
            assert all(arc.step in playbook.steps for arc in step.next.arcs)


def test_conformance_corpus_is_complete() -> None:
    files = _conformance_files()
    if files == [None]:
        _conformance_missing()
    assert BROKEN in files
    assert len(files) >= 31


def test_missing_conformance_dir_skips_locally_and_fails_on_ci(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(sys.modules[__name__], "CONFORMANCE", tmp_path / "absent")
    assert _conformance_files() == [None]
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="conformance playbooks not found"):
        _conformance("hello_world/hello_world.yaml")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="conformance playbooks not found"):
        _conformance("hello_world/hello_world.yaml")


def test_control_flow_workbook_resolves_the_action() -> None:
    playbook = _conformance("control_flow_workbook/control_flow_workbook.yaml")
    eval_flag = playbook.steps["eval_flag"]
    assert eval_flag.tool is not None
    assert eval_flag.tool.kind == "python"
    assert eval_flag.tool.config["input"] == {"temperature_c": "{{ temperature_c }}"}
    assert "float(temperature_c) >= 25.0" in eval_flag.tool.config["code"]
    assert "name" not in eval_flag.tool.config
    assert set(playbook.workbook) == {"compute_flag"}
    assert playbook.workbook["compute_flag"].config["input"] == {"temperature_c": None}

    hot = playbook.steps["hot_path"].next
    assert hot is not None
    assert hot.mode == "inclusive"
    assert [arc.step for arc in hot.arcs] == ["hot_task_a", "hot_task_b"]
    routed = playbook.steps["eval_flag"].next
    assert routed is not None and routed.mode == "exclusive"
    assert routed.arcs[0] == Arc(step="hot_path", when="{{ eval_flag.is_hot == true }}")
    assert playbook.path == "fixtures/playbooks/control_flow_workbook"
    assert playbook.workload == {"temperature_c": 30}


def test_heavy_loop_aggregation_pipeline_with_else_set() -> None:
    playbook = _conformance("load_test/heavy_loop_aggregation/heavy_loop_aggregation.yaml")
    step = playbook.steps["process_items"]
    assert step.tool is None
    assert step.pipeline is not None and len(step.pipeline) == 1
    assert step.tool_kind == "task_sequence"
    task = step.pipeline[0]
    assert task.label == "process_item"
    assert task.kind == "python"
    (rule,) = task.policy
    assert rule.is_else and rule.when is None and rule.action == "continue"
    assert rule.set == {"ctx.loop_results": "{{ output.data.loop_results }}"}
    assert step.loop is not None and step.loop.in_ == "{{ start.items }}"
    assert playbook.steps["start"].set == {"ctx.loop_results": "{{ workload.loop_results }}"}
    assert playbook.metadata["version"] == "2.0"


def test_pagination_basic_parallel_loop_and_retry_policy() -> None:
    playbook = _conformance("pagination/basic/test_pagination_basic.yaml")
    step = playbook.steps["run_probes"]
    assert step.loop is not None
    assert step.loop.mode == "parallel"
    assert step.loop.max_in_flight == 5
    assert step.loop.iterator == "item"
    assert step.tool is not None and step.tool.kind == "http"
    retry, fail, otherwise = step.tool.policy
    assert (retry.action, retry.attempts, retry.delay, retry.backoff) == ("retry", 3, 0.5, "fixed")
    assert fail.action == "fail" and fail.when == "{{ output.status == 'error' }}"
    assert otherwise.is_else and otherwise.action == "continue"


def test_loop_test_keeps_step_level_input() -> None:
    playbook = _conformance("loop_test.yaml")
    start = playbook.start
    assert start.input == {"num": "{{ num }}", "loop_index": "{{ loop_index }}"}
    assert start.tool is not None and start.tool.config["input"] == {}
    assert start.loop is not None and start.loop.mode == "sequential"


def test_broken_playbook_end_step_without_tool_is_noop() -> None:
    # The step after the broken one is a plain no-op (no tool): fixing the step parses.
    text = (CONFORMANCE / BROKEN).read_text() if CONFORMANCE.is_dir() else None
    if text is None:
        _conformance_missing()
        return
    fixed = text.replace(
        '      auth: "{{ pg_auth }}"\n    command:', '      auth: "{{ pg_auth }}"\n      command:'
    )
    fixed = fixed.replace("\n      INSERT INTO", "\n        INSERT INTO").replace(
        "\n        VALUES", "\n          VALUES"
    )
    fixed = fixed.replace("\n        RETURNING", "\n          RETURNING")
    playbook = parse_playbook(fixed)
    assert playbook.steps["end"].tool is None and playbook.steps["end"].pipeline is None
    assert playbook.steps["end"].tool_kind == "noop"
    insert = playbook.steps["insert_report"].tool
    assert insert is not None and "RETURNING id;" in insert.config["command"]


# --------------------------------------------------------------------------------------------
# Root keys


def test_minimal_playbook() -> None:
    playbook = parse_playbook(doc(START_END))
    assert playbook.name == "t"
    assert playbook.path == "t"  # defaults to the name
    assert list(playbook.steps) == ["start", "end"]
    assert playbook.workload == {}
    assert playbook.api_version == "noetl.io/v2"
    assert playbook.start.next == Next(mode="inclusive", arcs=(Arc("end"),))
    assert playbook.start.line == line_of(doc(START_END), "- step: start")


def test_v10_alias_accepted() -> None:
    playbook = parse_playbook(doc(START_END).replace("noetl.io/v2", "noetl.io/v10"))
    assert playbook.api_version == "noetl.io/v10"


def test_v1_rejected_with_clear_message() -> None:
    err = error(doc(START_END).replace("noetl.io/v2", "noetl.io/v1"))
    assert err.field == "apiVersion"
    assert err.line == 1
    assert "unsupported apiVersion 'noetl.io/v1'" in err.message
    assert "noetl.io/v2" in err.message and "tool: {kind: ...}" in err.message


def test_api_version_required_and_kind_checked() -> None:
    err = error(doc(START_END).replace("apiVersion: noetl.io/v2\n", ""))
    assert err.field == "apiVersion" and "required" in err.message
    err = error(doc(START_END).replace("kind: Playbook", "kind: playbook"))
    assert err.field == "kind" and err.line == 2
    assert err.message == "kind must be 'Playbook', got 'playbook'"


def test_metadata_name_required() -> None:
    text = doc(START_END).replace("  name: t\n", "  path: a/b\n")
    err = error(text)
    assert err.field == "metadata.name"
    assert err.line == line_of(text, "metadata:")
    assert "metadata.name is required" in err.message
    playbook = parse_playbook(doc(START_END).replace("  name: t\n", "  name: t\n  path: a/b\n"))
    assert playbook.path == "a/b"
    assert playbook.metadata == {"name": "t", "path": "a/b"}


def test_workload_must_be_a_mapping() -> None:
    text = doc(START_END, extra="workload: [1, 2]\n")
    err = error(text)
    assert err.field == "workload" and err.line == line_of(text, "workload:")
    assert "workload must be a mapping" in err.message and "got a list" in err.message
    assert parse_playbook(doc(START_END, extra="workload:\n")).workload == {}
    assert parse_playbook(doc(START_END, extra="workload: {a: 1}\n")).workload == {"a": 1}


def test_workflow_required_and_non_empty() -> None:
    err = error(HEADER)
    assert err.field == "workflow" and "workflow is required" in err.message
    err = error(HEADER + "workflow: []\n")
    assert err.field == "workflow" and err.line == 5
    assert "at least one step" in err.message


def test_keychain_and_unknown_root_keys() -> None:
    text = doc(START_END, extra="keychain:\n  - {name: api, kind: bearer}\nvars: {x: 1}\nexecutor: {}\n")
    playbook = parse_playbook(text)
    assert playbook.keychain == ({"name": "api", "kind": "bearer"},)
    err = error(doc(START_END, extra="keychain:\n  - {kind: bearer}\n"))
    assert err.field == "keychain[0].name"


def test_invalid_yaml_reports_the_line() -> None:
    text = doc(START_END) + "- step: broken\n  tool: {kind: python\n"
    err = error(text)
    assert err.message.startswith("invalid YAML")
    assert err.line is not None and err.line >= line_of(text, "- step: broken")
    err = error("- a\n- b\n")
    assert "must be a YAML mapping" in err.message


def test_duplicate_yaml_keys_are_an_error() -> None:
    text = doc(START_END.replace("  next: end\n", "  next: end\n  next: start\n"))
    err = error(text)
    assert "duplicate key 'next'" in err.message
    assert err.line == line_of(text, "next: start")


def test_yaml_scalars_follow_yaml_1_2() -> None:
    text = doc(
        START_END, extra="workload: {country: NO, flag: on, day: 2025-12-01, n: 010, t: 1:30, b: true}\n"
    )
    assert parse_playbook(text).workload == {
        "country": "NO",
        "flag": "on",
        "day": "2025-12-01",
        "n": 10,
        "t": "1:30",
        "b": True,
    }


def test_line_loader_tracks_lines_and_plain_copies() -> None:
    loaded = load_yaml("a: 1\nb:\n  c: [x, y]\n  d: &anchor {e: 1}\nf: *anchor\n")
    assert isinstance(loaded, LineDict)
    assert loaded.key_lines == {"a": 1, "b": 2, "f": 5}
    assert loaded["b"].line == 3 and loaded["b"].key_lines["d"] == 4
    plain = to_plain(loaded)
    assert type(plain) is dict and type(plain["b"]["c"]) is list
    assert plain["f"] == {"e": 1} and plain["f"] is not plain["b"]["d"]


# --------------------------------------------------------------------------------------------
# Steps


def test_duplicate_step_name() -> None:
    text = doc(START_END + "- step: end\n")
    err = error(text)
    assert err.step == "end" and err.field == "step"
    assert err.line == line_of(text, "- step: end", nth=2)
    assert "duplicate step name 'end'" in err.message


def test_start_step_required() -> None:
    text = doc("- step: first\n- step: second\n")
    err = error(text)
    assert err.field == "workflow" and err.line == line_of(text, "workflow:")
    assert "no step named 'start'" in err.message and "first, second" in err.message


def test_case_blocks_rejected() -> None:
    text = doc(START_END + "- step: routed\n  case:\n    - when: x\n")
    err = error(text)
    assert err.step == "routed" and err.field == "case"
    assert err.line == line_of(text, "case:")
    assert "'case' blocks are not allowed" in err.message
    assert "step.when" in err.message and "next[].when" in err.message


def test_tool_field_at_step_level() -> None:
    text = doc(
        """\
        - step: start
          tool: {kind: postgres, auth: pg}
          command: SELECT 1
        """
    )
    err = error(text)
    assert err.step == "start" and err.field == "command"
    assert err.line == line_of(text, "command: SELECT 1")
    assert (
        err.message
        == "'command' is not a step field; put it under 'tool' (tool.command is required by the postgres tool)"
    )
    assert re.search(r"tool.*required", str(err))


def test_kind_at_step_level() -> None:
    text = doc("- step: start\n  kind: python\n  code: x = 1\n")
    err = error(text)
    assert err.field == "kind" and err.line == line_of(text, "kind: python")
    assert "put it under 'tool'" in err.message


def test_legacy_type_rejected() -> None:
    text = doc("- step: start\n  type: python\n  code: x = 1\n")
    err = error(text)
    assert err.step == "start" and err.field == "type"
    assert err.line == line_of(text, "type: python")
    assert "tool: {kind: python" in err.message


def test_step_without_tool_is_noop() -> None:
    playbook = parse_playbook(doc("- step: start\n  desc: nothing to do\n"))
    start = playbook.start
    assert start.tool is None and start.pipeline is None and start.next is None
    assert start.desc == "nothing to do"


def test_step_level_maps() -> None:
    text = doc(
        """\
        - step: start
          input: {a: 1}
          args: {b: 2}
          set: {ctx.c: "{{ output.x }}"}
        """
    )
    start = parse_playbook(text).start
    assert (start.input, start.args, start.set) == ({"a": 1}, {"b": 2}, {"ctx.c": "{{ output.x }}"})
    for key in ("set", "input", "args"):
        bad = doc(f"- step: start\n  {key}: [1]\n")
        err = error(bad)
        assert err.step == "start" and err.field == key
        assert err.line == line_of(bad, f"{key}: [1]")
        assert f"{key} must be a mapping" in err.message and "got a list" in err.message


def test_tool_must_be_mapping_or_list() -> None:
    text = doc("- step: start\n  tool: python\n")
    err = error(text)
    assert err.field == "tool" and err.line == line_of(text, "tool: python")
    assert "got 'python'" in err.message


# --------------------------------------------------------------------------------------------
# Tools


def test_tool_kind_required() -> None:
    text = doc("- step: start\n  tool:\n    code: x = 1\n")
    err = error(text)
    assert err.step == "start" and err.field == "tool.kind"
    assert err.line == line_of(text, "code: x = 1")
    assert "tool.kind is required" in err.message


def test_unknown_tool_kind_lists_supported() -> None:
    text = doc("- step: start\n  tool: {kind: snowflake, query: x}\n")
    err = error(text)
    assert err.field == "tool.kind" and err.line == line_of(text, "kind: snowflake")
    assert "unknown tool kind 'snowflake'" in err.message
    assert "python" in err.message and "postgres" in err.message


def test_args_is_an_alias_of_input() -> None:
    text = doc("- step: start\n  tool: {kind: python, code: x, args: {a: 1}}\n")
    tool = parse_playbook(text).start.tool
    assert tool is not None
    assert tool.config["input"] == {"a": 1} and tool.config["args"] == {"a": 1}
    assert "kind" not in tool.config
    err = error(doc("- step: start\n  tool: {kind: python, code: x, args: {a: 1}, input: {a: 2}}\n"))
    assert err.field == "tool.args" and "same field" in err.message


@pytest.mark.parametrize(
    ("kind", "field", "fix"),
    [
        ("python", "tool.code", "script: print(1)"),
        ("postgres", "tool.command", "query: SELECT 1"),
        ("duckdb", "tool.command", "sql: SELECT 1"),
        ("http", "tool.url", "endpoint: http://x"),
        ("shell", "tool.command", "cmds: [ls]"),
        ("playbook", "tool.path", "catalog_id: 7"),
    ],
)
def test_required_tool_fields(kind: str, field: str, fix: str) -> None:
    text = doc(f"- step: start\n  desc: d\n  tool:\n    kind: {kind}\n    auth: a\n")
    err = error(text)
    assert err.step == "start" and err.field == field
    assert err.line == line_of(text, f"kind: {kind}")
    assert f"{field} is required by the {kind} tool" in err.message
    assert re.search(r"tool.*required", str(err))
    # Any of the accepted alternatives satisfies the check.
    tool = parse_playbook(text + f"    {fix}\n").start.tool
    assert tool is not None and tool.kind == kind


def test_noop_tool_needs_nothing() -> None:
    tool = parse_playbook(doc("- step: start\n  tool: {kind: noop}\n")).start.tool
    assert tool is not None and tool.kind == "noop" and tool.config == {}


def test_task_level_set_and_line() -> None:
    text = doc("- step: start\n  tool:\n    kind: python\n    code: x\n    set: {ctx.a: 1}\n")
    tool = parse_playbook(text).start.tool
    assert tool is not None and tool.set == {"ctx.a": 1} and tool.config["set"] == {"ctx.a": 1}
    assert tool.line == line_of(text, "kind: python")


# --------------------------------------------------------------------------------------------
# Policy rules


def _policy_doc(rules: str) -> str:
    return doc(
        "- step: start\n  tool:\n    kind: python\n    code: x\n    spec:\n      policy:\n        rules:\n"
        + textwrap.indent(textwrap.dedent(rules), "          ")
    )


def test_policy_rule_forms() -> None:
    text = _policy_doc(
        """\
        - when: "{{ output.status == 'error' }}"
          then: {do: retry, attempts: 3, delay: 1, backoff: exponential}
        - when: true
          do: fail
        - else:
            then: {do: continue, set: {ctx.a: 1}}
        - else: {do: continue, set: {ctx.b: 2}}
        """
    )
    tool = parse_playbook(text).start.tool
    assert tool is not None
    retry, fail, else_then, else_flat = tool.policy
    assert retry.action == "retry" and retry.attempts == 3 and retry.delay == 1.0
    assert retry.backoff == "exponential" and retry.when == "{{ output.status == 'error' }}"
    assert fail.action == "fail" and fail.when is True and fail.backoff == "fixed"
    assert else_then.is_else and else_then.set == {"ctx.a": 1}
    assert else_flat.is_else and else_flat.action == "continue" and else_flat.set == {"ctx.b": 2}


def test_policy_invalid_action() -> None:
    text = _policy_doc("- when: true\n  then: {do: explode}\n")
    err = error(text)
    assert err.step == "start" and err.field == "tool.spec.policy.rules[0]"
    assert err.line == line_of(text, "then: {do: explode}")
    assert "continue, retry, fail, jump, break" in err.message and "'explode'" in err.message


@pytest.mark.parametrize(
    ("then", "field", "message"),
    [
        ("{do: retry, attempts: 0}", "attempts", "attempts must be an integer >= 1"),
        ("{do: retry, attempts: '3'}", "attempts", "got '3'"),
        ("{do: retry, delay: -1}", "delay", "delay must be a number of seconds >= 0, got -1"),
        ("{do: retry, backoff: random}", "backoff", "backoff must be one of fixed, linear, exponential"),
        ("{do: jump}", "to", "a 'jump' rule needs 'to'"),
    ],
)
def test_policy_field_checks(then: str, field: str, message: str) -> None:
    text = _policy_doc(f"- when: true\n  then: {then}\n")
    err = error(text)
    assert err.field == f"tool.spec.policy.rules[0].{field}"
    assert err.line == line_of(text, "then: {do:")
    assert message in err.message


def test_policy_when_validated_and_required() -> None:
    err = error(_policy_doc("- then: {do: fail}\n"))
    assert err.field == "tool.spec.policy.rules[0]" and "needs 'when'" in err.message
    err = error(_policy_doc("- when: '{% if x %}'\n  then: {do: fail}\n"))
    assert err.field == "tool.spec.policy.rules[0].when" and "invalid 'when' expression" in err.message


def test_policy_jump_target_must_be_a_pipeline_task() -> None:
    text = doc(
        """\
        - step: start
          tool:
            - name: a
              kind: python
              code: x
              spec:
                policy:
                  rules:
                    - when: true
                      then: {do: jump, to: nowhere}
            - name: b
              kind: noop
        """
    )
    err = error(text)
    assert err.field == "tool[0].spec.policy.rules[0].to"
    assert err.line == line_of(text, "then: {do: jump")
    assert "'nowhere' is not a task of this pipeline (tasks: a, b)" in err.message
    ok = parse_playbook(text.replace("to: nowhere", "to: b"))
    assert ok.start.pipeline is not None and ok.start.pipeline[0].policy[0].to == "b"


# --------------------------------------------------------------------------------------------
# Pipelines


def test_pipeline_flat_and_nested_items() -> None:
    text = doc(
        """\
        - step: start
          tool:
            - name: fetch
              kind: http
              url: http://x
            - save:
                kind: postgres
                command: INSERT 1
            - kind: noop
        """
    )
    pipeline = parse_playbook(text).start.pipeline
    assert pipeline is not None
    assert [(t.label, t.kind) for t in pipeline] == [
        ("fetch", "http"),
        ("save", "postgres"),
        ("task_2", "noop"),
    ]
    assert pipeline[0].config == {"name": "fetch", "url": "http://x"}
    assert pipeline[1].config == {"command": "INSERT 1"}
    assert pipeline[1].line == line_of(text, "kind: postgres")


def test_pipeline_nested_item_with_several_keys() -> None:
    text = doc("- step: start\n  tool:\n    - a: {kind: noop}\n      b: {kind: noop}\n")
    err = error(text)
    assert err.step == "start" and err.field == "tool[0]"
    assert err.line == line_of(text, "- a: {kind: noop}")
    assert "pipeline task[0] must have exactly one labelled entry" in err.message


def test_pipeline_empty() -> None:
    text = doc("- step: start\n  tool: []\n")
    err = error(text)
    assert err.field == "tool" and err.line == line_of(text, "tool: []")
    assert "at least one task" in err.message


def test_pipeline_duplicate_labels() -> None:
    text = doc("- step: start\n  tool:\n    - {name: a, kind: noop}\n    - a: {kind: noop}\n")
    err = error(text)
    assert err.field == "tool[1]" and err.line == line_of(text, "- a: {kind: noop}")
    assert "duplicate task label 'a'" in err.message


def test_pipeline_item_required_field() -> None:
    text = doc(
        "- step: start\n  tool:\n    - {name: a, kind: noop}\n    - {name: b, kind: noop}\n"
        "    - c:\n        kind: postgres\n        auth: x\n"
    )
    err = error(text)
    assert err.step == "start" and err.field == "tool[2].command"
    assert err.line == line_of(text, "kind: postgres")
    assert "tool[2].command is required by the postgres tool" in err.message


# --------------------------------------------------------------------------------------------
# Workbook


WORKBOOK = """\
workbook:
  - name: calc
    tool:
      kind: python
      input: {a: 1, b: 2}
      code: "result = a + b"
      spec:
        policy:
          rules:
            - when: true
              then: {do: continue}
"""


def test_workbook_reference_merges_input() -> None:
    text = doc("- step: start\n  tool: {kind: workbook, name: calc, input: {b: 20, c: 30}}\n", extra=WORKBOOK)
    playbook = parse_playbook(text)
    tool = playbook.start.tool
    assert tool is not None
    assert tool.kind == "python"
    assert tool.config["input"] == {"a": 1, "b": 20, "c": 30}
    assert tool.config["code"] == "result = a + b"
    assert len(tool.policy) == 1 and tool.policy[0].action == "continue"
    # The workbook entry itself is untouched.
    assert playbook.workbook["calc"].config["input"] == {"a": 1, "b": 2}


def test_workbook_reference_without_input_and_with_scalar_input() -> None:
    tool = parse_playbook(
        doc("- step: start\n  tool: {kind: workbook, name: calc}\n", extra=WORKBOOK)
    ).start.tool
    assert tool is not None and tool.config["input"] == {"a": 1, "b": 2}
    text = doc("- step: start\n  tool: {kind: workbook, name: calc, input: '{{ x }}'}\n", extra=WORKBOOK)
    tool = parse_playbook(text).start.tool
    assert tool is not None and tool.config["input"] == "{{ x }}"


def test_workbook_unknown_action() -> None:
    text = doc("- step: start\n  tool:\n    kind: workbook\n    name: nope\n", extra=WORKBOOK)
    err = error(text)
    assert err.step == "start" and err.field == "tool.name"
    assert err.line == line_of(text, "name: nope")
    assert "workbook action 'nope' not found" in err.message and "available: calc" in err.message


def test_workbook_reference_needs_a_name() -> None:
    text = doc("- step: start\n  tool:\n    kind: workbook\n", extra=WORKBOOK)
    err = error(text)
    assert err.field == "tool.name" and err.line == line_of(text, "kind: workbook")
    assert "requires 'name'" in err.message and "available: calc" in err.message
    text = doc("- step: start\n  tool: {kind: workbook, name: calc}\n")
    err = error(text)
    assert err.field == "tool.kind" and err.line == line_of(text, "tool: {kind: workbook")
    assert "root 'workbook:' list" in err.message


def test_workbook_entry_is_validated() -> None:
    text = doc(START_END, extra="workbook:\n  - name: w\n    tool: {kind: python}\n")
    err = error(text)
    assert err.step is None and err.field == "workbook[0].tool.code"
    assert err.line == line_of(text, "tool: {kind: python}")


def test_workbook_reference_in_pipeline() -> None:
    text = doc(
        "- step: start\n  tool:\n    - {name: first, kind: workbook, task: calc, input: {a: 5}}\n",
        extra=WORKBOOK,
    )
    pipeline = parse_playbook(text).start.pipeline
    assert pipeline is not None
    assert pipeline[0].label == "first" and pipeline[0].kind == "python"
    assert pipeline[0].config["input"] == {"a": 5, "b": 2}
    text = doc("- step: start\n  tool:\n    - second: {kind: workbook, name: calc}\n", extra=WORKBOOK)
    pipeline = parse_playbook(text).start.pipeline
    assert pipeline is not None
    assert pipeline[0].label == "second" and pipeline[0].config["input"] == {"a": 1, "b": 2}


# --------------------------------------------------------------------------------------------
# Loops


def _loop_doc(loop: str) -> str:
    return doc(
        "- step: start\n  tool: {kind: noop}\n  loop:\n" + textwrap.indent(textwrap.dedent(loop), "    ")
    )


def test_loop_forms() -> None:
    step = parse_playbook(_loop_doc("in: [1, 2]\niterator: n\n")).start
    assert step.loop is not None
    assert (step.loop.in_, step.loop.iterator, step.loop.mode, step.loop.max_in_flight) == (
        [1, 2],
        "n",
        "sequential",
        None,
    )
    step = parse_playbook(_loop_doc("in: 3\niterator: n\nmode: parallel\nmax_in_flight: 2\n")).start
    assert step.loop is not None and (step.loop.mode, step.loop.max_in_flight) == ("parallel", 2)


def test_loop_in_required() -> None:
    text = _loop_doc("iterator: n\n")
    err = error(text)
    assert err.step == "start" and err.field == "loop.in"
    assert err.line == line_of(text, "iterator: n")
    assert err.message.startswith("loop.in is required (the collection to iterate over")


def test_loop_iterator_required() -> None:
    text = _loop_doc("in: '{{ xs }}'\n")
    err = error(text)
    assert err.field == "loop.iterator" and err.line == line_of(text, "in: '{{ xs }}'")
    assert "loop.iterator is required" in err.message


def test_loop_bad_mode_and_cursor() -> None:
    text = _loop_doc("in: '{{ xs }}'\niterator: x\nspec: {mode: async}\n")
    err = error(text)
    assert err.field == "loop.spec.mode" and err.line == line_of(text, "spec: {mode: async}")
    assert "'sequential', 'parallel' or 'cursor', got 'async'" in err.message
    text = _loop_doc("iterator: x\nspec:\n  mode: cursor\n")
    err = error(text)
    assert err.step == "start" and err.field == "loop.cursor"
    assert err.line == line_of(text, "mode: cursor")
    assert "loop.spec.mode=cursor requires a loop.cursor block with a claim query" in err.message


def test_loop_max_in_flight_must_be_positive_int() -> None:
    text = _loop_doc("in: '{{ xs }}'\niterator: x\nspec:\n  mode: parallel\n  max_in_flight: 5x\n")
    err = error(text)
    assert err.field == "loop.spec.max_in_flight" and err.line == line_of(text, "max_in_flight: 5x")
    assert err.message == "max_in_flight must be a positive integer, got '5x'"
    err = error(_loop_doc("in: '{{ xs }}'\niterator: x\nspec: {max_in_flight: 0}\n"))
    assert err.message == "max_in_flight must be a positive integer, got 0"


# --------------------------------------------------------------------------------------------
# when


def test_step_when() -> None:
    text = doc(
        START_END
        + "- step: guarded\n  when: '{{ x > 1 }}'\n- step: bare\n  when: x > 1\n- step: b\n  when: false\n"
    )
    steps = parse_playbook(text).steps
    assert steps["guarded"].when == "{{ x > 1 }}"
    assert steps["bare"].when == "x > 1"
    assert steps["b"].when is False


def test_step_when_invalid() -> None:
    text = doc(START_END + "- step: guarded\n  when: '{% if x %}yes{% endif %}'\n")
    err = error(text)
    assert err.step == "guarded" and err.field == "when"
    assert err.line == line_of(text, "when: '{%")
    assert "invalid 'when' expression" in err.message
    text = doc(START_END + "- step: guarded\n  when: 3\n")
    err = error(text)
    assert err.field == "when" and "got 3" in err.message


# --------------------------------------------------------------------------------------------
# next


def test_next_string_and_list_of_names() -> None:
    text = doc("- step: start\n  next: [a, b]\n- step: a\n  next: b\n- step: b\n")
    steps = parse_playbook(text).steps
    assert steps["start"].next == Next(mode="inclusive", arcs=(Arc("a"), Arc("b")))
    assert steps["a"].next == Next(mode="inclusive", arcs=(Arc("b"),))
    assert steps["b"].next is None


def test_next_target_list_mode() -> None:
    text = doc(
        """\
        - step: start
          next:
            - {step: a, when: "{{ x }}", args: {k: 1}, set: {ctx.y: 2}}
            - {step: b}
        - step: a
          spec: {next_mode: Inclusive}
          next: [{step: b}]
        - step: b
        """
    )
    steps = parse_playbook(text).steps
    start_next = steps["start"].next
    assert start_next is not None and start_next.mode == "exclusive"
    assert start_next.arcs[0] == Arc(step="a", when="{{ x }}", set={"ctx.y": 2}, args={"k": 1})
    a_next = steps["a"].next
    assert a_next is not None and a_next.mode == "inclusive"


def test_next_router_mode_precedence() -> None:
    text = doc(
        """\
        - step: start
          spec: {next_mode: inclusive}
          next:
            arcs: [{step: a}, {step: b}]
        - step: a
          spec: {next_mode: inclusive}
          next:
            spec: {mode: EXCLUSIVE}
            arcs: [{step: b}]
        - step: b
          next: {arcs: []}
        - step: c
          next: {spec: {mode: whatever}, arcs: [{step: a}]}
        """
    )
    steps = parse_playbook(text).steps
    assert [s.next.mode for s in steps.values() if s.next] == [
        "inclusive",
        "exclusive",
        "exclusive",
        "exclusive",
    ]
    assert steps["b"].next == Next(mode="exclusive", arcs=())


def test_next_mixed_list_rejected() -> None:
    text = doc("- step: start\n  next: [a, {step: a}]\n- step: a\n")
    err = error(text)
    assert err.step == "start" and err.field == "next"
    assert err.line == line_of(text, "next: [a")
    assert "mixes forms" in err.message


def test_next_unknown_target() -> None:
    text = doc(
        """\
        - step: start
          next:
            spec: {mode: exclusive}
            arcs:
              - step: a
              - step: x
        - step: a
        """
    )
    err = error(text)
    assert err.step == "start" and err.field == "next"
    assert err.line == line_of(text, "- step: x")
    assert err.message.startswith("step 'start' references unknown step 'x' in next")
    text = doc("- step: start\n  next:\n    - a\n    - zz\n- step: a\n")
    err = error(text)
    assert "unknown step 'zz'" in err.message and err.line == line_of(text, "- zz")


def test_next_arc_when_and_set_checked() -> None:
    text = doc("- step: start\n  next:\n    arcs:\n      - step: a\n        when: '{% x %}'\n- step: a\n")
    err = error(text)
    assert err.field == "next.arcs[0].when" and err.line == line_of(text, "when: '{% x %}'")
    assert "invalid 'when' expression" in err.message
    text = doc("- step: start\n  next:\n    - step: a\n      set: [1]\n- step: a\n")
    err = error(text)
    assert err.field == "next[0].set" and err.line == line_of(text, "set: [1]")
    text = doc("- step: start\n  next: {spec: {mode: inclusive}}\n- step: a\n")
    err = error(text)
    assert err.field == "next.arcs" and "needs 'arcs'" in err.message


# --------------------------------------------------------------------------------------------
# Files


def test_load_playbook_sets_source(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(doc(START_END))
    playbook = load_playbook(path)
    assert playbook.source == str(path)
    text = doc("- step: start\n  next: nowhere\n")
    path.write_text(text)
    with pytest.raises(PlaybookError) as info:
        load_playbook(path)
    assert info.value.source == str(path)
    assert str(info.value).startswith(
        f"{path}:{line_of(text, 'next: nowhere')}, step 'start', field 'next': "
    )
    with pytest.raises(PlaybookError) as info:
        load_playbook(tmp_path / "missing.yaml")
    assert "cannot read the playbook file" in str(info.value)
