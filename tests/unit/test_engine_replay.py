"""The event log is the truth: folding a stored log rebuilds the state the live engine had.

The control plane relies on this to rebuild an execution after a restart or when another server
process wrote its events.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from noetl.dsl import load_playbook, parse_playbook
from noetl.dsl.model import Playbook
from noetl.engine.machine import Engine
from noetl.ids import default_ids
from noetl.runtime.local import LocalRuntime
from noetl.store import open_store

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

CYCLE = """
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: cycle, path: tests/cycle}
workflow:
  - step: start
    tool: {kind: python, code: "result = 1"}
    set: {ctx.n: 0}
    next: count
  - step: count
    tool: {kind: python, input: {n: "{{ ctx.n }}"}, code: "result = {'n': n + 1}"}
    set: {ctx.n: "{{ output.n }}"}
    next:
      arcs:
        - {step: count, when: "{{ ctx.n < 4 }}"}
        - {step: done, when: "{{ ctx.n >= 4 }}"}
  - step: done
    loop: {in: "{{ [1, 2, 3] }}", iterator: x, spec: {mode: parallel}}
    tool: {kind: python, code: "result = x * ctx_n", input: {ctx_n: "{{ ctx.n }}"}}
"""


def _snapshot(engine: Engine) -> dict[str, Any]:
    state = engine.state
    return {
        "status": state.status,
        "ctx": state.ctx,
        "workload": state.workload,
        "failed": state.failed_steps,
        "error": state.error,
        "edges": dict(state.edges),
        "last": state.last_completed,
        "steps": {
            name: (step.status, step.runs, engine.step_data(name))
            for name, step in state.steps.items()
        },
        "open_commands": sorted(state.commands),
    }


def _run(playbook: Playbook, workload: dict[str, Any] | None = None) -> tuple[Engine, Any]:
    store = open_store("memory://")

    async def main() -> Engine:
        async with LocalRuntime(store, concurrency=4) as runtime:
            outcome = await runtime.run(playbook, workload)
            engine = runtime._executions[outcome.execution_id].engine
            return engine

    return asyncio.run(main()), store


@pytest.mark.parametrize(
    "playbook",
    [
        pytest.param(lambda: load_playbook(EXAMPLES / "hello.yaml"), id="hello"),
        pytest.param(lambda: parse_playbook(CYCLE), id="cycle-and-loop"),
    ],
)
def test_folding_the_log_rebuilds_the_live_state(playbook: Any) -> None:
    pb = playbook()
    live, store = _run(pb)
    assert live.state.status == "COMPLETED"
    rebuilt = Engine(pb, live.execution_id, ids=default_ids, catalog_id=live.state.catalog_id)
    rebuilt.fold(store.read(live.execution_id))
    assert _snapshot(rebuilt) == _snapshot(live)


def test_cycle_runs_until_its_condition_and_loop_sees_durable_ctx() -> None:
    live, _ = _run(parse_playbook(CYCLE))
    state = live.state
    assert state.steps["count"].runs == 4
    assert state.ctx["n"] == 4
    assert live.step_data("done") == {"results": [4, 8, 12], "count": 3}


def test_engine_is_pure_and_emits_the_start_command() -> None:
    pb = parse_playbook(CYCLE)
    engine = Engine(pb, 42, ids=iter(range(1000, 2000)).__next__)
    out = engine.start({"extra": True})
    assert [e.event_type for e in out] == ["playbook_started", "step.enter", "command.issued"]
    issued = out[-1]
    assert issued.meta is not None
    assert issued.meta["command_id"] == f"42:start:{issued.event_id}"
    assert issued.meta["pool"] == "shared"
    assert engine.state.workload == {"extra": True}
    assert engine.accepts(issued.meta["command_id"])
