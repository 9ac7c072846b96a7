"""No false errors: `noetl validate` finds no error in the conformance corpus (but the one
playbook meant to be refused) nor in `examples/`. Warnings are allowed; the ones the corpus
gets are pinned here so a change in them is seen."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from noetl.dsl.lint import lint_file

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
BROKEN = "broken_playbooks/should_error_tool_is_required.yaml"  # refused by design

# (file relative to the corpus, field) of every warning the corpus gets.
CORPUS_WARNINGS = Counter(
    {
        ("control_flow_workbook/control_flow_workbook.yaml", "workbook[0].assert"): 1,
        ("data_transfer/postgres_jsonb_test/postgres_jsonb_test.yaml", "step"): 1,
        ("playbook_composition/playbook_composition.yaml", "tool[0].task"): 1,
        ("playbook_composition/user_profile_scorer.yaml", "workbook[0].tool.assert"): 1,
        ("playbook_composition/user_profile_scorer.yaml", "workbook[1].tool.assert"): 1,
        ("playbook_composition/user_profile_scorer.yaml", "workbook[2].tool.assert"): 1,
        ("playbook_composition/user_profile_scorer.yaml", "workbook[3].tool.assert"): 1,
        ("playbook_composition/user_profile_scorer.yaml", "workbook[4].tool.assert"): 1,
        ("root_scripts/test_implicit_end_routing.yaml", "step"): 1,
        ("save_storage_test/create_tables.yaml", "tool.pool"): 1,
    }
)


def test_the_conformance_corpus_has_no_false_error(conformance_dir: Path) -> None:
    files = sorted(conformance_dir.rglob("*.yaml"))
    assert len(files) == 31
    warnings: Counter[tuple[str, str | None]] = Counter()
    for path in files:
        relative = path.relative_to(conformance_dir).as_posix()
        findings = lint_file(path)
        errors = [str(f) for f in findings if f.severity == "error"]
        if relative == BROKEN:
            assert any("'command' is not a step field" in e for e in errors), errors
            continue
        assert errors == [], relative
        warnings.update((relative, f.field) for f in findings if f.severity == "warning")
    assert warnings == CORPUS_WARNINGS


@pytest.mark.parametrize("path", sorted(EXAMPLES.rglob("*.yaml")), ids=lambda p: p.name)
def test_every_example_validates_without_error(path: Path) -> None:
    errors = [str(f) for f in lint_file(path) if f.severity == "error"]
    assert errors == []
