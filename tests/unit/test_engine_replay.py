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
            name: (step.status, step.runs, engine.step_data(name)) for name, step in state.steps.items()
        },
        "open_commands": sorted(state.commands),
    }


def _run(playbook: Playbook, workload: dict[str, Any] | None = None) -> tuple[Engine, Any]:
    store = open_store("memory://")

    async def main() -> Engine:
        async with LocalRuntime(store, concurrency=4) as runtime:
            outcome = await runtime.run(playbook, workload)
            engine = runtime.orchestrator.engines.get(outcome.execution_id)
            assert engine is not None
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
    assert live.step_data("done") == {
        "results": [4, 8, 12],
        "count": 3,
        "stats": {"total": 3, "completed": 3, "failed": 0},
    }


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


def _feed(engine: Engine, events: list[Any]) -> list[Any]:
    out: list[Any] = []
    for event in events:
        out.extend(engine.react(event))
    return out


def _worker_events(issued: Any, data: Any, ids: Any) -> list[Any]:
    from noetl.worker.command import Command
    from noetl.worker.executor import Executor

    command = Command.from_event(issued)
    executor = Executor(ids=ids, worker_id="w")
    done_ctx = {"call_index": 0, "result": {"status": "success", "context": {"data": data}}}
    return [
        executor.events.claimed(command),
        executor.events.event(command, "call.done", "COMPLETED", done_ctx),
        executor.events.event(command, "command.completed", "success", {"status": "success"}),
    ]


def test_expired_lease_reissues_then_gives_up_and_late_events_are_ignored() -> None:
    pb = parse_playbook(CYCLE.replace("count\n  - step: count", "count\n  - step: count"))
    ids = iter(range(10_000, 20_000)).__next__
    engine = Engine(pb, 7, ids=ids, max_attempts=2)
    first = next(e for e in engine.start() if e.event_type == "command.issued")
    cid = first.meta["command_id"]
    engine.react(_worker_events(first, 1, ids)[0])  # claimed, then the worker vanishes
    out = engine.expire(cid)
    assert [e.event_type for e in out] == ["command.expired", "command.issued"]
    second = out[-1]
    assert second.meta["attempt"] == 2 and second.meta["command_id"] != cid
    # The stale worker reports late: ignored, the step is not completed by it.
    _feed(engine, _worker_events(first, "stale", ids)[1:])
    assert engine.state.steps["start"].status == "running"
    assert not engine.accepts(cid) and engine.accepts(second.meta["command_id"])
    # The second attempt's worker vanishes too: max_attempts reached, the step and run fail.
    engine.react(_worker_events(second, 1, ids)[0])
    failed = engine.expire(second.meta["command_id"])
    assert [e.event_type for e in failed] == ["command.failed", "playbook.failed"]
    assert "gave up after 2 attempt(s)" in (engine.state.error or "")


def test_expired_loop_iteration_is_reissued_with_its_index() -> None:
    pb = parse_playbook(CYCLE)
    ids = iter(range(30_000, 40_000)).__next__
    engine = Engine(pb, 8, ids=ids)
    issued = next(e for e in engine.start() if e.event_type == "command.issued")
    out = _feed(engine, _worker_events(issued, 1, ids))
    while True:  # drive the cycle until the loop step is entered
        nxt = [e for e in out if e.event_type == "command.issued"]
        if nxt[0].node_name == "done":
            break
        out = _feed(engine, _worker_events(nxt[0], {"n": engine.state.ctx["n"] + 1}, ids))
    iterations = [e for e in out if e.event_type == "command.issued"]
    assert len(iterations) == 3
    lost = iterations[1]
    engine.react(_worker_events(lost, 0, ids)[0])
    again = next(e for e in engine.expire(lost.meta["command_id"]) if e.event_type == "command.issued")
    assert again.meta["iteration_index"] == 1
    for event in (iterations[0], iterations[2], again):
        _feed(engine, _worker_events(event, event.meta["iteration_index"] * 10, ids))
    assert engine.state.status == "COMPLETED"
    assert engine.step_data("done") == {
        "results": [0, 10, 20],
        "count": 3,
        "stats": {"total": 3, "completed": 3, "failed": 0},
    }
