"""`noetl run --strict`: a template reading an undefined name fails its step with a message
naming the name, wherever it is rendered (the engine's tool config, a worker's policy rule, a
nested playbook); without --strict the same runs behave as before (the name reads as null)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from noetl.cli.main import app
from noetl.dsl import load_playbook, parse_playbook
from noetl.errors import TemplateError
from noetl.runtime.local import LocalRuntime, RunOutcome
from noetl.store.sqlite import SQLiteStore
from noetl.template import evaluate_condition, render_text, render_to_value
from noetl.template.environment import STRICT_KEY

HEAD = "apiVersion: noetl.io/v2\nkind: Playbook\nmetadata: {name: strict, path: tests/strict}\nworkflow:\n"

MISSPELT = (
    HEAD
    + """  - step: start
    tool: {kind: python, code: "result = {'data': [1, 2]}"}
    next: second
  - step: second
    tool:
      kind: python
      input: {rows: "{{ stat.data }}"}
      code: "result = rows"
"""
)

POLICY = (
    HEAD
    + """  - step: start
    tool:
      kind: python
      code: "result = 1"
      spec:
        policy:
          rules:
            - when: "{{ outcome.status == 'error' }}"
              then: {do: fail}
"""
)

GUARDED = (
    HEAD
    + """  - step: start
    tool:
      kind: python
      input:
        a: "{{ missing | default('fallback') }}"
        b: "{{ 'yes' if missing is defined else 'no' }}"
        c: "{{ workload.nothing }}"
      code: "result = [a, b, c]"
"""
)


def _run(tmp_path: Path, text: str, *, strict: bool) -> RunOutcome:
    playbook = parse_playbook(text)
    store = SQLiteStore(tmp_path / f"noetl-{strict}.db")

    async def main() -> RunOutcome:
        async with LocalRuntime(store, concurrency=2) as runtime:
            return await runtime.run(playbook, strict=strict)

    try:
        return asyncio.run(main())
    finally:
        store.close()


def test_a_misspelt_step_fails_the_step_in_strict_mode_only(tmp_path: Path) -> None:
    loose = _run(tmp_path, MISSPELT, strict=False)
    assert loose.status == "COMPLETED" and loose.steps["second"].result is None
    strict = _run(tmp_path, MISSPELT, strict=True)
    assert strict.status == "FAILED"
    assert strict.error is not None and "undefined name 'stat'" in strict.error
    assert "step 'second'" in strict.error


def test_a_policy_rule_reading_outcome_fails_in_strict_mode(tmp_path: Path) -> None:
    assert _run(tmp_path, POLICY, strict=False).status == "COMPLETED"
    strict = _run(tmp_path, POLICY, strict=True)
    assert strict.status == "FAILED"
    assert strict.error is not None and "undefined name 'outcome'" in strict.error


def test_default_and_is_defined_still_work_in_strict_mode(tmp_path: Path) -> None:
    outcome = _run(tmp_path, GUARDED, strict=True)
    assert outcome.status == "COMPLETED", outcome.error
    assert outcome.steps["start"].result == ["fallback", "no", None]


def test_strict_reaches_a_nested_playbook(tmp_path: Path) -> None:
    (tmp_path / "child.yaml").write_text(
        HEAD.replace("tests/strict", "tests/child")
        + '  - step: start\n    tool: {kind: shell, command: "echo {{ nope }}"}\n'
    )
    parent = HEAD + "  - step: start\n    tool: {kind: playbook, path: tests/child}\n"
    (tmp_path / "parent.yaml").write_text(parent)
    playbook = load_playbook(tmp_path / "parent.yaml")
    store = SQLiteStore(tmp_path / "nested.db")

    async def main(strict: bool) -> RunOutcome:
        async with LocalRuntime(store, concurrency=2) as runtime:
            return await runtime.run(playbook, strict=strict)

    try:
        assert asyncio.run(main(False)).status == "COMPLETED"
        failed = asyncio.run(main(True))
    finally:
        store.close()
    assert failed.status == "FAILED"
    assert failed.error is not None and "undefined name 'nope'" in failed.error


@pytest.mark.parametrize(
    "render",
    [
        lambda ctx: render_text("x={{ nope }}", ctx),
        lambda ctx: render_to_value("{{ nope }}", ctx),
        lambda ctx: render_to_value("{{ nope.field }}", ctx),
        lambda ctx: evaluate_condition("nope == 1", ctx),
    ],
)
def test_every_render_path_fails_on_an_undefined_name(render: Any) -> None:
    assert render({"known": 1}) in ("x=", None, False)  # not strict: an undefined reads as null
    with pytest.raises(TemplateError, match="undefined name 'nope'"):
        render({"known": 1, STRICT_KEY: True})


def test_a_null_value_is_not_an_undefined_name() -> None:
    assert render_to_value("{{ known }}", {"known": None, STRICT_KEY: True}) is None


def test_the_cli_flag(tmp_path: Path) -> None:
    path = tmp_path / "flow.yaml"
    path.write_text(MISSPELT)
    store = f"sqlite:///{tmp_path / 'cli.db'}"
    runner = CliRunner()
    loose = runner.invoke(app, ["run", str(path), "--store", store, "-q"])
    assert loose.exit_code == 0, loose.output
    strict = runner.invoke(app, ["run", str(path), "--store", store, "-q", "--strict"])
    assert strict.exit_code == 1
    assert "undefined name 'stat'" in strict.output
