"""Pipeline policy actions (`jump`, `break`, `retry`, `fail`) and task-level `set`, through `noetl run`."""

from __future__ import annotations

from pathlib import Path

from tests.support.cli import run_playbook

HEADER = "apiVersion: noetl.io/v2\nkind: Playbook\nmetadata: {name: policies, path: tests/policies}\n"


def run(tmp_path: Path, body: str) -> dict:
    path = tmp_path / "pb.yaml"
    path.write_text(HEADER + body)
    result = run_playbook(path, f"sqlite:///{tmp_path}/noetl.db")
    outcome = result.json
    assert result.code == (0 if outcome["status"] == "COMPLETED" else 1)
    return outcome


def test_jump_loops_back_inside_a_pipeline_until_a_condition(tmp_path: Path) -> None:
    outcome = run(
        tmp_path,
        """
workflow:
  - step: start
    tool:
      - name: count
        kind: python
        input: {n: "{{ iter.n | default(0) }}"}
        code: "result = {'n': n + 1}"
        set: {iter.n: "{{ output.n }}"}
      - name: check
        kind: python
        input: {n: "{{ iter.n }}"}
        code: "result = {'n': n}"
        spec:
          policy:
            rules:
              - when: "{{ output.data.n < 3 }}"
                then: {do: jump, to: count}
              - else: {then: {do: continue}}
      - name: done
        kind: python
        input: {n: "{{ iter.n }}"}
        code: "result = {'final': n}"
""",
    )
    assert outcome["status"] == "COMPLETED"
    # The tasks' results by label (in the order they last ran), their keys also at the top level.
    assert outcome["steps"]["start"]["result"] == {
        "count": {"n": 3},
        "check": {"n": 3},
        "done": {"final": 3},
        "n": 3,
        "final": 3,
    }


def test_break_stops_a_pipeline_successfully(tmp_path: Path) -> None:
    outcome = run(
        tmp_path,
        """
workflow:
  - step: start
    tool:
      - name: first
        kind: python
        code: "result = {'stop': True}"
        spec:
          policy:
            rules:
              - when: "{{ output.data.stop }}"
                then: {do: break}
      - name: never
        kind: python
        code: "raise RuntimeError('must not run')"
    next: after
  - step: after
    tool: {kind: python, input: {r: "{{ start }}"}, code: "result = r"}
""",
    )
    assert outcome["status"] == "COMPLETED"
    assert outcome["steps"]["after"]["result"] == {"first": {"stop": True}, "stop": True}  # `never` never ran


def test_fail_rule_fails_the_step_even_when_the_tool_succeeded(tmp_path: Path) -> None:
    outcome = run(
        tmp_path,
        """
workflow:
  - step: start
    tool:
      kind: python
      code: "result = {'rows': 0}"
      spec:
        policy:
          rules:
            - when: "{{ output.data.rows == 0 }}"
              then: {do: fail}
""",
    )
    assert outcome["status"] == "FAILED"
    assert outcome["steps"]["start"]["status"] == "FAILED"
    assert "policy rule failed the step" in outcome["error"]


def test_loop_input_coercion(tmp_path: Path) -> None:
    """Upstream coercion (after the start step, whose `loop.in` must be a list): a map iterates
    {key, value} pairs in key order, a string splits on commas and newlines, a number n iterates
    0..n-1."""
    outcome = run(
        tmp_path,
        """
workload:
  colours: {b: 2, a: 1}
  csv: "x, y,,z"
workflow:
  - step: start
    tool: {kind: noop}
    next: pairs
  - step: pairs
    loop: {in: "{{ colours }}", iterator: kv}
    tool: {kind: python, code: "result = kv['key'] + str(kv['value'])"}
    next: words
  - step: words
    loop: {in: "{{ csv }}", iterator: w}
    tool: {kind: python, code: "result = w"}
    next: count
  - step: count
    loop: {in: 3, iterator: i}
    tool: {kind: python, code: "result = i * 10"}
""",
    )
    assert outcome["status"] == "COMPLETED"
    steps = outcome["steps"]
    assert steps["pairs"]["result"]["results"] == ["a1", "b2"]
    assert steps["words"]["result"]["results"] == ["x", "y", "z"]
    assert steps["count"]["result"]["results"] == [0, 10, 20]


def test_loop_over_null_fails_with_a_clear_message(tmp_path: Path) -> None:
    outcome = run(
        tmp_path,
        """
workflow:
  - step: start
    tool: {kind: noop}
    next: later
  - step: later
    loop: {in: "{{ missing }}", iterator: x}
    tool: {kind: python, code: "result = x"}
""",
    )
    assert outcome["status"] == "FAILED"
    assert "loop.in must evaluate to a list, got null" in outcome["error"]
    assert "later" in outcome["error"]
