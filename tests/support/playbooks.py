"""Playbooks several suites run (locally, against the control plane, through real workers)."""

from __future__ import annotations

GOOD_SLEEPS = "import time; time.sleep(0.3); result = {'good': True}"


def fanout_with_failure(good_code: str = GOOD_SLEEPS) -> str:
    """The workflow of an inclusive fan-out where `bad` fails while `good` runs; both lead to
    `join`, which must not run. `good_code` is good's python code."""
    return f"""workflow:
  - step: start
    tool: {{kind: noop}}
    next:
      spec: {{mode: inclusive}}
      arcs: [{{step: good}}, {{step: bad}}]
  - step: good
    tool: {{kind: python, code: "{good_code}"}}
    next: [join]
  - step: bad
    tool: {{kind: python, code: "raise RuntimeError('bad branch broke')"}}
    next: [join]
  - step: join
    tool: {{kind: python, code: "result = {{'joined': True}}"}}
"""


def with_header(name: str, path: str, workflow: str) -> str:
    return f"apiVersion: noetl.io/v2\nkind: Playbook\nmetadata: {{name: {name}, path: {path}}}\n{workflow}"
