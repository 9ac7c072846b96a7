"""Issue 17, engine items: real NoETL playbooks must not end in a false success, and the DSL
features they use must work (pipeline results by label, start-step loop typing, loop statistics,
cursor loops).

Each item has a small playbook asserting values, run locally (`noetl run --json`, or
`LocalRuntime` in-process) and, for items 1, 5 and 9, on `noetl server start --with-worker`
(a PostgreSQL store in a schema of its own).
"""

from __future__ import annotations

import asyncio
import dataclasses
import textwrap
import uuid
from pathlib import Path
from typing import Any

from tests.support.cli import run_playbook

from noetl.dsl import parse_playbook
from noetl.engine import events as ev
from noetl.engine.events import Event
from noetl.engine.graph import analyse
from noetl.engine.machine import Engine
from noetl.ids import default_ids
from noetl.runtime.local import LocalRuntime, RunOutcome
from noetl.store import open_store
from noetl.worker.command import Command, CommandEvents

HEADER = "apiVersion: noetl.io/v2\nkind: Playbook\n"
RUN_TIMEOUT = 120.0


def playbook_text(name: str, body: str) -> str:
    return HEADER + f"metadata: {{name: {name}, path: tests/c17/{name}}}\n" + textwrap.dedent(body)


def in_process(text: str, workload: dict[str, Any] | None = None) -> RunOutcome:
    """Run a playbook to its end with `LocalRuntime` on a fresh memory store."""
    playbook = parse_playbook(text)

    async def main() -> RunOutcome:
        async with LocalRuntime(open_store("memory://"), concurrency=8) as runtime:
            return await asyncio.wait_for(runtime.run(playbook, workload or {}), RUN_TIMEOUT)

    return asyncio.run(main())


def cli_run(tmp_path: Path, text: str, *extra: str, store: str | None = None) -> dict[str, Any]:
    """`noetl run FILE --json` in a subprocess; the one JSON object it prints."""
    path = tmp_path / f"{uuid.uuid4().hex[:8]}.yaml"
    path.write_text(text, encoding="utf-8")
    result = run_playbook(path, store or f"sqlite:///{tmp_path}/noetl.db", *extra)
    assert result.stdout.strip(), result.stderr
    outcome: dict[str, Any] = result.json
    assert result.code == (0 if outcome["status"] == "COMPLETED" else 1), result.stderr
    return outcome


def statuses(outcome: dict[str, Any]) -> dict[str, str]:
    return {name: step["status"] for name, step in outcome["steps"].items()}


def results(outcome: dict[str, Any]) -> dict[str, Any]:
    return {name: step["result"] for name, step in outcome["steps"].items()}


# ---------------------------------------------------------------------------------------------------
# item 1: no silent success with steps never run

ORPHAN = playbook_text(
    "orphan",
    """\
    workflow:
      - step: start
        tool: {kind: python, code: "result = {'started': True}"}
        next: [work]
      - step: orphan
        desc: no arc leads here (dead code), yet it has an arc into `work`
        tool: {kind: python, code: "result = {'orphan': True}"}
        next: [work]
      - step: work
        tool: {kind: python, input: {s: "{{ start.started }}"}, code: "result = {'worked': s}"}
        next: [after]
      - step: after
        tool: {kind: python, input: {w: "{{ work.worked }}"}, code: "result = {'after': w}"}
    """,
)


def check_orphan(outcome: dict[str, Any]) -> None:
    assert outcome["status"] == "COMPLETED", outcome
    assert statuses(outcome) == {
        "start": "COMPLETED",
        "orphan": "PENDING",  # unreachable from start: never run, and holds nothing up
        "work": "COMPLETED",
        "after": "COMPLETED",
    }
    assert results(outcome)["after"] == {"after": True}


def test_item1_arc_from_an_unreachable_step_is_dead_local(tmp_path: Path) -> None:
    check_orphan(cli_run(tmp_path, ORPHAN))


def _report(engine: Engine, issued: Event, data: Any) -> list[Event]:
    """A worker's `call.done` + `command.completed` for `issued`, fed to the engine."""
    command = Command.from_event(issued)
    reported = CommandEvents(ids=default_ids, worker_id="test").completed(
        command, {"status": "success", "context": {"data": data}}
    )
    emitted: list[Event] = []
    for event in reported:
        emitted.extend(engine.react(event))
    return emitted


def test_item1_safety_net_a_pending_step_with_nothing_running_fails_the_run() -> None:
    """The engine is driven into the state the reachability analysis prevents (the analysis is
    switched off): `work` still waits for the arc from `orphan` when nothing is issued or
    running. The run must end FAILED, naming `work`, not COMPLETED."""
    playbook = parse_playbook(ORPHAN)
    blind = dataclasses.replace(analyse(playbook), unreachable=frozenset())
    engine = Engine(playbook, default_ids(), ids=default_ids, graph=blind)
    started = engine.start({})
    issued = [e for e in started if e.event_type == ev.COMMAND_ISSUED]
    assert [e.node_name for e in issued] == ["start"]
    emitted = _report(engine, issued[0], {"started": True})
    kinds = [e.event_type for e in emitted]
    assert ev.COMMAND_ISSUED not in kinds  # `work` was not started
    assert kinds[-1] == ev.PLAYBOOK_FAILED
    assert ev.PLAYBOOK_COMPLETED not in kinds
    assert engine.state.status == "FAILED"
    error = engine.state.error or ""
    assert "cannot make progress" in error and "'work'" in error and "'orphan'" in error
    assert "'after'" in error  # pending behind `work`
    assert engine.state.steps["work"].status == "pending"


def test_item1_safety_net_keeps_dead_path_elimination() -> None:
    """Steps after arcs that all evaluate false are skipped (not stuck): the run completes."""
    text = playbook_text(
        "dpe",
        """\
        workflow:
          - step: start
            tool: {kind: python, code: "result = {'go': False}"}
            next:
              arcs:
                - {step: a, when: "{{ output.go }}"}
                - {step: b, when: "{{ output.go }}"}
          - step: a
            tool: {kind: python, code: "result = 1"}
            next: [join]
          - step: b
            tool: {kind: python, code: "result = 2"}
            next: [join]
          - step: join
            tool: {kind: python, code: "result = 3"}
        """,
    )
    outcome = in_process(text)
    assert outcome.status == "COMPLETED", outcome.error
    assert {n: s.status for n, s in outcome.steps.items()} == {
        "start": "COMPLETED",
        "a": "SKIPPED",
        "b": "SKIPPED",
        "join": "SKIPPED",
    }
