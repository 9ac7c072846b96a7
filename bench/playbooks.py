"""The playbooks the benchmarks run, as text (written to a temporary directory by each run).

The shell chain is written in the subset both this project and the upstream Rust CLI (noetl
5.3.2, `--runtime local`) execute: `kind: shell` with `cmds` (that CLI ignores `command`) and
`next` as a list of steps. `:` is the shell's no-op (`'true'` would be read as a boolean).
"""

from __future__ import annotations

HEADER = "apiVersion: noetl.io/v2\nkind: Playbook\nmetadata: {name: bench, path: bench/%s}\n"


def chain(n: int, name: str = "") -> str:
    """`n` python no-op steps in sequence."""
    steps = []
    for i in range(n):
        step = "start" if i == 0 else f"s{i}"
        nxt = f"\n    next: s{i + 1}" if i < n - 1 else ""
        steps.append(f"  - step: {step}\n    tool: {{kind: python, code: 'result = {i}'}}{nxt}")
    return HEADER % (name or f"chain{n}") + "workflow:\n" + "\n".join(steps) + "\n"


def shell_chain(n: int, name: str = "", marker: str = "") -> str:
    """`n` shell no-op steps in sequence. With `marker` (a file path), every step appends a line
    to that file instead, so a run can be checked to have executed each step."""
    command = f"echo x >> {marker}" if marker else ":"
    steps = []
    for i in range(n):
        step = "start" if i == 0 else f"s{i}"
        nxt = f"\n    next: [{{step: s{i + 1}}}]" if i < n - 1 else ""
        steps.append(f"  - step: {step}\n    tool: {{kind: shell, cmds: ['{command}']}}{nxt}")
    return HEADER % (name or f"shchain{n}") + "workflow:\n" + "\n".join(steps) + "\n"


def fanout(n: int, name: str = "") -> str:
    """A parallel loop of `n` python no-op items (100 in flight)."""
    return (
        HEADER % (name or f"fanout{n}")
        + f"""workflow:
  - step: start
    loop: {{in: "{{{{ range({n}) | list }}}}", iterator: i, spec: {{mode: parallel, max_in_flight: 100}}}}
    tool: {{kind: python, code: 'result = i'}}
"""
    )


def million(n: int, name: str = "million") -> str:
    """A parallel loop of no-op python steps without max_in_flight (the default window applies),
    over a number (a loop after the start step may loop over a count)."""
    return (
        HEADER % name
        + f"""workflow:
  - step: start
    next: [{{step: big}}]
  - step: big
    loop: {{in: "{{{{ {n} }}}}", iterator: i, spec: {{mode: parallel}}}}
    tool: {{kind: python, code: 'result = i'}}
"""
    )


def nested(n: int, name: str = "") -> tuple[str, str]:
    """(parent, child): a parallel loop of `n` nested playbook calls (50 in flight)."""
    child = (
        HEADER % "child"
        + """workflow:
  - step: start
    tool: {kind: python, input: {x: "{{ x }}"}, code: 'result = {"y": x}'}
"""
    )
    parent = (
        HEADER % (name or f"nested{n}")
        + f"""workflow:
  - step: start
    loop: {{in: "{{{{ range({n}) | list }}}}", iterator: i, spec: {{mode: parallel, max_in_flight: 50}}}}
    tool: {{kind: playbook, path: bench/child, input: {{x: "{{{{ i }}}}"}}}}
"""
    )
    return parent, child
