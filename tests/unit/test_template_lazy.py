"""The template entry points import Jinja only for a value that holds a template; without one
they give exactly what the Jinja-backed renderer gives."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

import noetl.template as facade
from noetl.template import render

TEXTS = st.sampled_from(["", "123", "-7", "1.5", "true", "null", "None", "[1, 2]", '{"a": 1}', "text", " x "])
PLAIN = st.recursive(
    st.one_of(
        TEXTS, st.text(max_size=12), st.integers(), st.booleans(), st.none(), st.floats(allow_nan=False)
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(st.text(max_size=6), inner, max_size=4),
    ),
    max_leaves=20,
)


def _plain(value: Any) -> bool:
    return not facade._marked(value)


@given(PLAIN)
def test_values_without_templates_render_as_the_renderer_renders_them(value: Any) -> None:
    if _plain(value):
        assert facade._typed(value) == render.render_value(value, {})
        assert facade.referenced_names(value) == render.referenced_names(value)


def test_conditions_and_texts_without_templates() -> None:
    for expr in (None, True, False):
        assert facade.evaluate_condition(expr, {}) == render.evaluate_condition(expr, {})
    for text in ("", "plain", "a } b", "{ not a template }"):
        assert facade.render_text(text, {}) == render.render_text(text, {})
        assert facade.render_to_value(text, {}) == render.render_to_value(text, {})


def test_a_run_without_templates_never_imports_jinja(tmp_path: Any) -> None:
    playbook = tmp_path / "p.yaml"
    playbook.write_text(
        "apiVersion: noetl.io/v2\nkind: Playbook\nmetadata: {name: p, path: t/p}\n"
        "workflow:\n  - step: start\n    tool: {kind: python, code: 'result = 1'}\n    next: [{step: end}]\n"
        "  - step: end\n    tool: {kind: noop}\n"
    )
    check = (
        "import sys\nfrom noetl.cli import entry\n"
        f"sys.argv = ['noetl', 'run', {str(playbook)!r}, '-q', '--store', 'sqlite:///{tmp_path}/s.db']\n"
        "try:\n    entry.main()\nexcept SystemExit as exc:\n"
        "    sys.stderr.write(f'exit={exc.code} jinja={\"jinja2\" in sys.modules}')\n"
    )
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=120)
    assert "exit=0 jinja=False" in done.stderr, done.stderr
