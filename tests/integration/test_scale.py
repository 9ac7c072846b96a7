"""A 10,000-item parallel loop runs to completion locally, with every result in index order.

Throughput figures live in `make bench`; this only proves the scale works."""

from __future__ import annotations

from pathlib import Path

from tests.support.cli import run_playbook

PLAYBOOK = """
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: scale, path: tests/scale}
workflow:
  - step: start
    loop: {in: "{{ range(10000) | list }}", iterator: i, spec: {mode: parallel, max_in_flight: 100}}
    tool: {kind: python, code: "result = i"}
    next: check
  - step: check
    tool:
      kind: python
      input: {results: "{{ start.results }}", count: "{{ start.count }}"}
      code: "result = {'count': count, 'in_order': results == list(range(10000))}"
"""


def test_ten_thousand_item_parallel_loop(tmp_path: Path) -> None:
    path = tmp_path / "scale.yaml"
    path.write_text(PLAYBOOK)
    result = run_playbook(path, f"sqlite:///{tmp_path}/scale.db")
    assert result.code == 0, result.stderr
    outcome = result.json
    assert outcome["status"] == "COMPLETED"
    assert outcome["steps"]["check"]["result"] == {"count": 10000, "in_order": True}
    assert outcome["steps"]["start"]["result"]["count"] == 10000
