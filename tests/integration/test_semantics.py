"""Engine semantics of SYSTEM.md §4 (items 1-6), in-process, and the CLI contract of §5.

The semantics tests write a tiny playbook to `tmp_path` (nested playbooks resolve from that folder
tree, as with `noetl run FILE`), load it with `load_playbook` and run it with `LocalRuntime` on a
fresh in-memory store; they assert real outcomes from the run's outcome and its event log. The
CLI tests (§5) run `noetl run` / `noetl events` in a subprocess against a per-test SQLite store,
where exit codes, `--json` and stderr are the subject.
"""

from __future__ import annotations

import asyncio
import json
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tests.support.cli import CliResult, noetl, run_playbook
from tests.support.playbooks import fanout_with_failure

from noetl.dsl import load_playbook
from noetl.runtime.local import LocalRuntime, RunOutcome
from noetl.store import open_store
from noetl.store.ports import ExecutionSummary, Store

HEADER = "apiVersion: noetl.io/v2\nkind: Playbook\n"
RUN_TIMEOUT = 60.0  # seconds; a run that takes longer is a hang


def write(
    tmp_path: Path, body: str, *, name: str = "playbook", path: str | None = None, file: str | None = None
) -> Path:
    """Write a playbook (header + metadata + the dedented body) and return its file."""
    target = tmp_path / (file or f"{name}.yaml")
    metadata = f"metadata: {{name: {name}, path: {path or 'tests/' + name}}}\n"
    target.write_text(HEADER + metadata + textwrap.dedent(body), encoding="utf-8")
    return target


# ---------------------------------------------------------------------------------------------------
# in-process runs


@dataclass
class Run:
    """The outcome of one in-process run and the store holding its event log."""

    outcome: RunOutcome
    store: Store

    @property
    def execution_id(self) -> str:
        return str(self.outcome.execution_id)

    @property
    def status(self) -> str:
        return self.outcome.status

    @property
    def error(self) -> str | None:
        return self.outcome.error


def run(
    tmp_path: Path,
    body: str,
    *,
    workload: dict[str, Any] | None = None,
    concurrency: int = 16,
    **meta: Any,
) -> Run:
    """Write the playbook, then run it to its end with `LocalRuntime` on a fresh memory store."""
    playbook = load_playbook(write(tmp_path, body, **meta))
    store = open_store("memory://")

    async def main() -> RunOutcome:
        async with LocalRuntime(store, concurrency=concurrency) as runtime:
            return await asyncio.wait_for(runtime.run(playbook, workload or {}), RUN_TIMEOUT)

    return Run(asyncio.run(main()), store)


def completed(outcome: Run) -> Run:
    assert outcome.status == "COMPLETED", (outcome.status, outcome.error, statuses(outcome))
    assert outcome.error is None
    return outcome


def failed(outcome: Run) -> Run:
    assert outcome.status == "FAILED", (outcome.status, statuses(outcome))
    assert isinstance(outcome.error, str) and outcome.error
    return outcome


def statuses(outcome: Run) -> dict[str, str]:
    return {name: step.status for name, step in outcome.outcome.steps.items()}


def results(outcome: Run) -> dict[str, Any]:
    return {name: step.result for name, step in outcome.outcome.steps.items()}


def events(outcome: Run, execution_id: str | int | None = None) -> list[dict[str, Any]]:
    """The event log (as `noetl events --json` prints it) of the run, or of another execution in
    its store (a child)."""
    wanted = outcome.execution_id if execution_id is None else execution_id
    return [event.to_dict() for event in outcome.store.read(int(wanted))]


def children_of(outcome: Run, parent_id: str) -> list[ExecutionSummary]:
    return outcome.store.executions(parent_execution_id=int(parent_id))


def of_type(log: list[dict[str, Any]], event_type: str, step: str | None = None) -> list[dict[str, Any]]:
    return [e for e in log if e["event_type"] == event_type and (step is None or e["node_name"] == step)]


def position(log: list[dict[str, Any]], event_type: str, step: str) -> int:
    """Index in the log of the first `event_type` event of `step`."""
    return next(i for i, e in enumerate(log) if e["event_type"] == event_type and e["node_name"] == step)


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The largest number of half-open intervals [start, end) that overlap at one instant."""
    points = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])  # ends sort first
    best = current = 0
    for _, delta in points:
        current += delta
        best = max(best, current)
    return best


# ---------------------------------------------------------------------------------------------------
# §4.1 a tool error fails the step and the run, unless a policy rule handles it


def test_python_exception_fails_step_and_run(tmp_path: Path) -> None:
    outcome = failed(
        run(
            tmp_path,
            """
            workflow:
              - step: start
                tool: {kind: python, code: "result = {'ok': True}"}
                next: [boom]
              - step: boom
                tool: {kind: python, code: "raise ValueError('kaboom 42')"}
                next: [after]
              - step: after
                tool: {kind: python, code: "result = {'ran': True}"}
                next: [last]
              - step: last
                tool: {kind: noop}
            """,
        )
    )
    assert statuses(outcome)["start"] == "COMPLETED"
    assert statuses(outcome)["boom"] == "FAILED"
    assert "boom" in outcome.error and "kaboom 42" in outcome.error
    assert statuses(outcome)["after"] not in ("COMPLETED", "RUNNING", "FAILED")
    assert statuses(outcome)["last"] not in ("COMPLETED", "RUNNING", "FAILED")
    log = events(outcome)
    assert [e["node_name"] for e in of_type(log, "command.issued")] == ["start", "boom"]
    assert not of_type(log, "step.enter", "after") and not of_type(log, "step.enter", "last")
    assert log[-1]["event_type"] == "playbook.failed"
    assert len(of_type(log, "command.failed", "boom")) == 1


def test_shell_nonzero_exit_fails_run(tmp_path: Path) -> None:
    outcome = failed(
        run(
            tmp_path,
            """
            workflow:
              - step: start
                tool: {kind: shell, command: "echo about to fail; exit 3"}
                next: [after]
              - step: after
                tool: {kind: noop}
            """,
        )
    )
    assert statuses(outcome)["start"] == "FAILED"
    assert statuses(outcome)["after"] not in ("COMPLETED", "RUNNING")
    assert "start" in outcome.error
    assert re.search(r"\b3\b", outcome.error), outcome.error  # the exit code
    log = events(outcome)
    assert not of_type(log, "command.issued", "after")


FANOUT_WITH_FAILURE = "\n" + fanout_with_failure()


def test_failed_branch_of_inclusive_fanout_fails_run(tmp_path: Path) -> None:
    outcome = failed(run(tmp_path, FANOUT_WITH_FAILURE))
    status = statuses(outcome)
    assert status["bad"] == "FAILED"
    assert status["join"] not in ("COMPLETED", "RUNNING")
    assert "bad" in outcome.error and "bad branch broke" in outcome.error
    log = events(outcome)
    assert not of_type(log, "command.issued", "join")
    assert log[-1]["event_type"] == "playbook.failed"
    assert len(of_type(log, "playbook.failed")) == 1
    # The other branch may finish, but only before the run ends, never after it.
    for done in of_type(log, "command.completed", "good"):
        assert log.index(done) < len(log) - 1


def test_no_step_is_reported_running_after_the_run_failed(tmp_path: Path) -> None:
    outcome = failed(run(tmp_path, FANOUT_WITH_FAILURE))
    log = events(outcome)
    assert of_type(log, "command.completed", "good")  # the sibling's command did finish
    assert statuses(outcome)["good"] == "COMPLETED"


def test_policy_continue_rule_handles_error(tmp_path: Path) -> None:
    outcome = completed(
        run(
            tmp_path,
            """
            workflow:
              - step: start
                tool:
                  kind: python
                  code: "raise RuntimeError('tolerated failure')"
                  spec:
                    policy:
                      rules:
                        - when: "{{ output.status == 'error' }}"
                          then: {do: continue}
                next: [after]
              - step: after
                tool: {kind: python, code: "result = {'after': True}"}
            """,
        )
    )
    assert statuses(outcome)["start"] == "COMPLETED"
    assert statuses(outcome)["after"] == "COMPLETED"
    assert results(outcome)["after"] == {"after": True}


def test_retry_rule_recovers_after_two_failures(tmp_path: Path) -> None:
    counter = tmp_path / "attempts.txt"
    outcome = completed(
        run(
            tmp_path,
            f"""
            workload: {{counter: "{counter}"}}
            workflow:
              - step: start
                tool:
                  kind: python
                  input: {{counter: "{{{{ counter }}}}"}}
                  code: |
                    from pathlib import Path
                    path = Path(counter)
                    n = int(path.read_text()) + 1 if path.exists() else 1
                    path.write_text(str(n))
                    if n < 3:
                        raise RuntimeError(f"transient failure {{n}}")
                    result = {{"attempt": n}}
                  spec:
                    policy:
                      rules:
                        - when: "{{{{ output.status == 'error' }}}}"
                          then: {{do: retry, attempts: 3, delay: 0}}
                next: [after]
              - step: after
                tool: {{kind: noop}}
            """,
        )
    )
    assert results(outcome)["start"] == {"attempt": 3}
    assert counter.read_text() == "3"
    log = events(outcome)
    errors = of_type(log, "call.error", "start")
    assert len(errors) == 2
    assert "transient failure 1" in json.dumps(errors[0]["result"])
    assert "transient failure 2" in json.dumps(errors[1]["result"])
    assert len(of_type(log, "call.done", "start")) == 1
    assert len(of_type(log, "command.issued", "start")) == 1  # retries stay inside one command


def test_retry_rule_that_never_succeeds_fails_run(tmp_path: Path) -> None:
    outcome = failed(
        run(
            tmp_path,
            """
            workflow:
              - step: start
                tool:
                  kind: python
                  code: "raise RuntimeError('always down')"
                  spec:
                    policy:
                      rules:
                        - when: "{{ output.status == 'error' }}"
                          then: {do: retry, attempts: 3, delay: 0}
                next: [after]
              - step: after
                tool: {kind: noop}
            """,
        )
    )
    assert statuses(outcome)["start"] == "FAILED"
    assert "always down" in outcome.error
    assert re.search(r"3 attempts", outcome.error), outcome.error
    log = events(outcome)
    assert len(of_type(log, "call.error", "start")) == 3  # two retried attempts + the final one
    assert not of_type(log, "command.issued", "after")


# ---------------------------------------------------------------------------------------------------
# §4.2 loop results in index order, with `results`, `data` and `count`


def test_parallel_loop_results_in_index_order(tmp_path: Path) -> None:
    n = 5
    outcome = completed(
        run(
            tmp_path,
            f"""
            workload: {{n: {n}}}
            workflow:
              - step: start
                tool: {{kind: noop}}
                next: [fan]
              - step: fan
                loop:
                  in: "{{{{ range(n) | list }}}}"
                  iterator: i
                  spec: {{mode: parallel, max_in_flight: {n}}}
                tool:
                  kind: python
                  input: {{i: "{{{{ i }}}}", n: "{{{{ n }}}}"}}
                  code: |
                    import time
                    time.sleep((n - i) * 0.06)
                    result = {{"i": i, "square": i * i}}
                next: [read]
              - step: read
                tool:
                  kind: python
                  input:
                    r: "{{{{ fan.results }}}}"
                    d: "{{{{ fan.data }}}}"
                    c: "{{{{ fan.count }}}}"
                  code: "result = {{'results': r, 'data': d, 'count': c}}"
            """,
        )
    )
    expected = [{"i": i, "square": i * i} for i in range(n)]
    assert results(outcome)["fan"] == {
        "results": expected,
        "count": n,
        "stats": {"total": n, "completed": n, "failed": 0},
    }
    assert results(outcome)["read"] == {"results": expected, "data": expected, "count": n}
    # The items really finished in reverse order, so the index order is the engine's doing.
    log = events(outcome)
    finished = [e["meta"]["iteration_index"] for e in of_type(log, "command.completed", "fan")]
    assert finished == list(reversed(range(n)))


# ---------------------------------------------------------------------------------------------------
# §4.3 max_in_flight is enforced as real overlap


@pytest.mark.parametrize(
    ("spec", "items", "sleep", "expected"),
    [
        ("{mode: parallel, max_in_flight: 3}", 12, 0.2, 3),
        ("{mode: parallel, max_in_flight: 1}", 5, 0.1, 1),
        ("{mode: sequential}", 5, 0.1, 1),
    ],
    ids=["parallel-3", "parallel-1", "sequential"],
)
def test_max_in_flight_is_real_overlap(
    tmp_path: Path, spec: str, items: int, sleep: float, expected: int
) -> None:
    outcome = completed(
        run(
            tmp_path,
            f"""
            workflow:
              - step: start
                loop:
                  in: "{{{{ range({items}) | list }}}}"
                  iterator: k
                  spec: {spec}
                tool:
                  kind: python
                  input: {{k: "{{{{ k }}}}"}}
                  code: |
                    import time
                    began = time.time()
                    time.sleep({sleep})
                    result = {{"k": k, "start": began, "end": time.time()}}
            """,
            concurrency=16,
        )
    )
    loop = results(outcome)["start"]
    assert loop["count"] == items
    assert [r["k"] for r in loop["results"]] == list(range(items))
    overlap = max_overlap([(r["start"], r["end"]) for r in loop["results"]])
    assert overlap == expected
    log = events(outcome)
    issued = of_type(log, "command.issued", "start")
    assert sorted(e["meta"]["iteration_index"] for e in issued) == list(range(items))


# ---------------------------------------------------------------------------------------------------
# §4.4 no hangs: dead-path elimination, empty loops, fan-in, cycles, guards


def test_all_arcs_false_ends_branch(tmp_path: Path) -> None:
    outcome = completed(
        run(
            tmp_path,
            """
            workload: {limit: 1}
            workflow:
              - step: start
                tool: {kind: python, code: "result = {'v': 0}"}
                next:
                  spec: {mode: inclusive}
                  arcs:
                    - {step: b, when: "{{ start.v > limit }}"}
                    - {step: c, when: "{{ false }}"}
              - step: b
                tool: {kind: noop}
                next: [d]
              - step: c
                tool: {kind: noop}
              - step: d
                tool: {kind: noop}
            """,
        )
    )
    assert statuses(outcome) == {"start": "COMPLETED", "b": "SKIPPED", "c": "SKIPPED", "d": "SKIPPED"}
    log = events(outcome)
    assert [e["node_name"] for e in of_type(log, "command.issued")] == ["start"]
    assert log[-1]["event_type"] == "playbook.completed"


def test_empty_loop_completes_and_routes(tmp_path: Path) -> None:
    outcome = completed(
        run(
            tmp_path,
            """
            workflow:
              - step: start
                loop:
                  in: "{{ [] }}"
                  iterator: item
                  spec: {mode: parallel, max_in_flight: 2}
                tool: {kind: python, input: {item: "{{ item }}"}, code: "result = item"}
                next: [after]
              - step: after
                tool:
                  kind: python
                  input: {c: "{{ start.count }}", r: "{{ start.results }}"}
                  code: "result = {'count': c, 'results': r}"
            """,
        )
    )
    assert results(outcome)["start"] == {
        "results": [],
        "count": 0,
        "stats": {"total": 0, "completed": 0, "failed": 0},
    }
    assert statuses(outcome)["after"] == "COMPLETED"
    assert results(outcome)["after"] == {"count": 0, "results": []}
    log = events(outcome)
    assert not of_type(log, "command.issued", "start")


@pytest.mark.parametrize(("pick", "other"), [("b", "c"), ("c", "b")])
def test_fan_in_after_exclusive_choice_runs_once(tmp_path: Path, pick: str, other: str) -> None:
    outcome = completed(
        run(
            tmp_path,
            """
            workflow:
              - step: start
                tool: {kind: noop}
                next:
                  spec: {mode: exclusive}
                  arcs:
                    - {step: b, when: "{{ pick == 'b' }}"}
                    - {step: c}
              - step: b
                tool: {kind: python, code: "result = {'via': 'b'}"}
                next: [d]
              - step: c
                tool: {kind: python, code: "result = {'via': 'c'}"}
                next: [d]
              - step: d
                tool: {kind: python, code: "result = {'joined': True}"}
            """,
            workload={"pick": pick},
        )
    )
    status = statuses(outcome)
    assert status[pick] == "COMPLETED" and status[other] == "SKIPPED"
    assert status["d"] == "COMPLETED"
    log = events(outcome)
    assert len(of_type(log, "step.enter", "d")) == 1
    assert len(of_type(log, "command.issued", "d")) == 1
    assert not of_type(log, "command.issued", other)


def test_fan_in_with_skipped_upstream_chain_does_not_deadlock(tmp_path: Path) -> None:
    outcome = completed(
        run(
            tmp_path,
            """
            workflow:
              - step: start
                tool: {kind: noop}
                next:
                  spec: {mode: exclusive}
                  arcs:
                    - {step: c, when: "{{ false }}"}
                    - {step: b}
              - step: b
                tool: {kind: python, code: "result = {'via': 'b'}"}
                next: [d]
              - step: c
                tool: {kind: noop}
                next: [c2]
              - step: c2
                tool: {kind: noop}
                next: [d]
              - step: d
                tool: {kind: python, code: "result = {'joined': True}"}
            """,
        )
    )
    assert statuses(outcome) == {
        "start": "COMPLETED",
        "b": "COMPLETED",
        "c": "SKIPPED",
        "c2": "SKIPPED",
        "d": "COMPLETED",
    }
    log = events(outcome)
    assert len(of_type(log, "step.enter", "d")) == 1
    assert {e["node_name"] for e in of_type(log, "step.skipped")} == {"c", "c2"}


def test_inclusive_fanout_joins_once_after_both(tmp_path: Path) -> None:
    outcome = completed(
        run(
            tmp_path,
            """
            workflow:
              - step: start
                tool: {kind: noop}
                next:
                  spec: {mode: inclusive}
                  arcs: [{step: fast}, {step: slow}]
              - step: fast
                tool: {kind: python, code: "result = {'who': 'fast'}"}
                next: [e]
              - step: slow
                tool: {kind: python, code: "import time; time.sleep(0.3); result = {'who': 'slow'}"}
                next: [e]
              - step: e
                tool:
                  kind: python
                  input: {a: "{{ fast.who }}", b: "{{ slow.who }}"}
                  code: "result = {'seen': [a, b]}"
            """,
        )
    )
    assert results(outcome)["e"] == {"seen": ["fast", "slow"]}
    log = events(outcome)
    assert len(of_type(log, "step.enter", "e")) == 1
    enter_e = position(log, "step.enter", "e")
    assert enter_e > position(log, "command.completed", "fast")
    assert enter_e > position(log, "command.completed", "slow")
    assert position(log, "command.completed", "fast") < position(log, "command.completed", "slow")


def test_cycle_runs_counter_five_times(tmp_path: Path) -> None:
    outcome = completed(
        run(
            tmp_path,
            """
            workflow:
              - step: start
                tool: {kind: noop}
                next: [counter]
              - step: counter
                tool: {kind: python, input: {seen: "{{ ctx.n | default(0) }}"}, code: "result = {'seen': seen}"}
                set: {ctx.n: "{{ (ctx.n | default(0)) + 1 }}"}
                next:
                  spec: {mode: exclusive}
                  arcs:
                    - {step: counter, when: "{{ ctx.n < 5 }}"}
                    - {step: done}
              - step: done
                tool: {kind: python, input: {n: "{{ ctx.n }}"}, code: "result = {'n': n}"}
            """,
        )
    )
    assert results(outcome)["done"] == {"n": 5}
    assert results(outcome)["counter"] == {"seen": 4}
    log = events(outcome)
    assert len(of_type(log, "command.issued", "counter")) == 5
    assert len(of_type(log, "command.issued", "done")) == 1
    seen = [
        e["result"]["context"]["result"]["context"]["data"]["seen"]
        for e in of_type(log, "call.done", "counter")
    ]
    assert seen == [0, 1, 2, 3, 4]


def test_false_when_guard_skips_step_and_flow_continues(tmp_path: Path) -> None:
    outcome = completed(
        run(
            tmp_path,
            """
            workload: {enabled: false}
            workflow:
              - step: start
                tool: {kind: noop}
                next: [guarded]
              - step: guarded
                when: "{{ enabled }}"
                tool: {kind: python, code: "result = {'ran': True}"}
                next: [after]
              - step: after
                tool: {kind: python, code: "result = {'after': True}"}
            """,
        )
    )
    assert statuses(outcome)["guarded"] == "SKIPPED"
    assert statuses(outcome)["after"] == "COMPLETED"
    assert results(outcome)["after"] == {"after": True}
    log = events(outcome)
    assert not of_type(log, "command.issued", "guarded")
    assert len(of_type(log, "step.skipped", "guarded")) == 1


def test_run_does_not_complete_while_a_branch_is_queued(tmp_path: Path) -> None:
    outcome = completed(
        run(
            tmp_path,
            """
            workflow:
              - step: start
                tool: {kind: noop}
                next:
                  spec: {mode: inclusive}
                  arcs: [{step: x}, {step: y}]
              - step: x
                tool: {kind: python, code: "result = {'x': True}"}
              - step: y
                tool: {kind: python, code: "import time; time.sleep(0.5); result = {'y': True}"}
            """,
        )
    )
    assert results(outcome)["x"] == {"x": True} and results(outcome)["y"] == {"y": True}
    log = events(outcome)
    assert log[-1]["event_type"] == "playbook.completed"
    assert len(of_type(log, "playbook.completed")) == 1
    assert position(log, "command.completed", "x") < position(log, "command.completed", "y") < len(log) - 1


# ---------------------------------------------------------------------------------------------------
# §4.6 nested playbooks are engine-native


CHILD = """
workload: {x: 0, fail: false}
workflow:
  - step: start
    tool:
      kind: python
      input: {x: "{{ x }}", fail: "{{ fail }}"}
      code: |
        if fail:
            raise RuntimeError(f"child refused {x}")
        result = {"x": x}
    next: [finish]
  - step: finish
    tool: {kind: python, input: {x: "{{ x }}"}, code: "result = {'doubled': x * 2}"}
    next: [after]
  - step: after
    tool: {kind: python, code: "result = {'after': True}"}
"""


def parent_body(items: str, mode: str, fail: str = "false") -> str:
    return f"""
    workload: {{items: {items}}}
    workflow:
      - step: start
        loop:
          in: "{{{{ items }}}}"
          iterator: item
          spec: {{mode: {mode}}}
        tool:
          kind: playbook
          path: tests/child
          return_step: finish
          input: {{x: "{{{{ item }}}}", fail: {fail}}}
        next: [check]
      - step: check
        tool: {{kind: python, input: {{r: "{{{{ start.results }}}}"}}, code: "result = {{'seen': r}}"}}
    """


def test_nested_playbooks_in_a_loop(tmp_path: Path) -> None:
    write(tmp_path, CHILD, name="child", file="child.yaml")
    outcome = completed(run(tmp_path, parent_body("[1, 2, 3]", "sequential"), name="parent"))
    expected = [{"doubled": 2}, {"doubled": 4}, {"doubled": 6}]
    assert results(outcome)["start"] == {
        "results": expected,
        "count": 3,
        "stats": {"total": 3, "completed": 3, "failed": 0},
    }
    assert results(outcome)["check"] == {"seen": expected}
    parent_id = outcome.execution_id

    parent_log = events(outcome)
    assert len(of_type(parent_log, "command.issued", "start")) == 3

    children = children_of(outcome, parent_id)
    assert len(children) == 3
    assert {c.status for c in children} == {"COMPLETED"}
    by_index: dict[int, list[dict[str, Any]]] = {}
    for child in children:
        log = events(outcome, child.execution_id)
        started = log[0]
        assert started["event_type"] == "playbook_started"
        assert str(started["parent_execution_id"]) == parent_id
        meta = started["meta"]
        index = meta["iterator_index"]
        assert meta["iterator_count"] == 3
        assert meta["iterator_item"] == index + 1
        for event in log:
            assert str(event["parent_execution_id"]) == parent_id, event
            assert event["meta"]["iterator_index"] == index, event
        # The child ran through to its last step; the parent got the return_step's result.
        assert [e["node_name"] for e in of_type(log, "command.issued")] == ["start", "finish", "after"]
        assert log[-1]["event_type"] == "playbook.completed"
        by_index[index] = log
    assert sorted(by_index) == [0, 1, 2]


def test_failing_child_fails_parent(tmp_path: Path) -> None:
    write(tmp_path, CHILD, name="child", file="child.yaml")
    outcome = failed(run(tmp_path, parent_body("[7]", "sequential", fail="true"), name="parent"))
    assert statuses(outcome)["start"] == "FAILED"
    assert statuses(outcome)["check"] not in ("COMPLETED", "RUNNING")
    assert "start" in outcome.error
    assert "child refused 7" in outcome.error
    children = children_of(outcome, outcome.execution_id)
    assert [c.status for c in children] == ["FAILED"]


def test_parallel_children_with_one_worker_slot_do_not_deadlock(tmp_path: Path) -> None:
    write(tmp_path, CHILD, name="child", file="child.yaml")
    outcome = completed(
        run(tmp_path, parent_body("[1, 2, 3, 4, 5]", "parallel"), name="parent", concurrency=1)
    )
    assert results(outcome)["start"] == {
        "results": [{"doubled": 2 * i} for i in range(1, 6)],
        "count": 5,
        "stats": {"total": 5, "completed": 5, "failed": 0},
    }
    assert len(children_of(outcome, outcome.execution_id)) == 5


# ---------------------------------------------------------------------------------------------------
# §5 CLI contract: exit codes, one JSON object with --json, messages on stderr (subprocesses)


@pytest.fixture
def store(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/noetl.db"


def run_cli(tmp_path: Path, store: str, body: str, *extra: str, **meta: Any) -> CliResult:
    return run_playbook(write(tmp_path, body, **meta), store, *extra)


def one_json_object(result: CliResult) -> dict[str, Any]:
    """stdout holds exactly one JSON object (and nothing else)."""
    outcome, end = json.JSONDecoder().raw_decode(result.stdout)
    assert result.stdout[end:].strip() == "", result.stdout
    assert isinstance(outcome, dict)
    return outcome


def test_failed_run_exits_1_with_the_outcome(tmp_path: Path, store: str) -> None:
    result = run_cli(
        tmp_path,
        store,
        """
        workflow:
          - step: start
            tool: {kind: python, code: "result = {'ok': True}"}
            next: [boom]
          - step: boom
            tool: {kind: python, code: "raise ValueError('kaboom 42')"}
        """,
    )
    assert result.code == 1, f"exit {result.code}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    outcome = one_json_object(result)
    assert outcome["status"] == "FAILED", outcome
    assert (
        isinstance(outcome["error"], str) and "boom" in outcome["error"] and "kaboom 42" in outcome["error"]
    )
    assert outcome["steps"]["start"] == {"status": "COMPLETED", "result": {"ok": True}}
    assert outcome["steps"]["boom"]["status"] == "FAILED"


VALID_TAIL = """
  - step: end
    tool: {kind: noop}
"""


VALID_TAIL = """
  - step: end
    tool: {kind: noop}
"""


@pytest.mark.parametrize(
    ("body", "needles"),
    [
        pytest.param(
            "workflow:\n  - step: begin\n    tool: {kind: noop}\n",
            ["start", "workflow"],
            id="missing-start",
        ),
        pytest.param(
            "workflow:\n  - step: start\n    tool: {kind: noop}\n    next: [nowhere]\n" + VALID_TAIL,
            ["step 'start'", "'next'", "nowhere"],
            id="unknown-next-target",
        ),
        pytest.param(
            "workflow:\n  - step: start\n    tool: {kind: teleport}\n    next: [end]\n" + VALID_TAIL,
            ["step 'start'", "kind", "teleport"],
            id="unknown-tool-kind",
        ),
        pytest.param(
            "workflow:\n  - step: start\n    tool: {kind: noop}\n    next: [end]\n" + VALID_TAIL + VALID_TAIL,
            ["step 'end'", "duplicate"],
            id="duplicate-step",
        ),
        pytest.param(
            "workflow:\n  - step: start\n    loop: {iterator: item}\n    tool: {kind: noop}\n",
            ["step 'start'", "loop.in"],
            id="loop-without-in",
        ),
        pytest.param(
            "workflow:\n  - step: start\n    loop: {in: '{{ [1] }}', iterator: item, spec: {mode: parallel, max_in_flight: five}}\n"
            "    tool: {kind: noop}\n",
            ["step 'start'", "max_in_flight"],
            id="max-in-flight-string",
        ),
        pytest.param(
            "workflow:\n  - step: start\n    tool: {kind: noop}\n    case:\n      - when: '{{ true }}'\n        then: [end]\n"
            + VALID_TAIL,
            ["step 'start'", "'case'"],
            id="case-block",
        ),
    ],
)
def test_invalid_playbook_exits_2(tmp_path: Path, store: str, body: str, needles: list[str]) -> None:
    result = run_cli(tmp_path, store, body)
    assert result.code == 2, (result.code, result.stdout, result.stderr)
    assert result.stdout == ""
    message = result.stderr.lower()
    for needle in needles:
        assert needle.lower() in message, (needle, result.stderr)


def test_invalid_yaml_names_the_line(tmp_path: Path, store: str) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(
        HEADER
        + "metadata: {name: broken, path: tests/broken}\n"  # line 3
        + "workflow:\n"  # line 4
        + "  - step: start\n"  # line 5
        + "    tool: {kind: noop\n"  # line 6: unclosed flow mapping
        + "  - step: end\n"
        + "    tool: {kind: noop}\n",
        encoding="utf-8",
    )
    result = run_playbook(path, store)
    assert result.code == 2, (result.code, result.stdout, result.stderr)
    assert result.stdout == ""
    assert re.search(r"line \d+|:\d+", result.stderr), result.stderr
    numbers = {int(n) for n in re.findall(r"(?:line |:)(\d+)", result.stderr)}
    assert numbers & {6, 7}, result.stderr


SIMPLE = """
workload: {a: 0, b: 0, c: 0, n: 0, s: ''}
workflow:
  - step: start
    tool:
      kind: python
      input: {a: "{{ a }}", b: "{{ b }}", c: "{{ c }}", n: "{{ n }}", s: "{{ s }}"}
      code: |
        result = {"a": a, "b": b, "c": c, "n": n, "n_type": type(n).__name__, "s": s, "s_type": type(s).__name__}
"""


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["--payload", "{not json"], id="payload-not-json"),
        pytest.param(["--payload", "[1, 2]"], id="payload-not-object"),
        pytest.param(["--set", "novalue"], id="set-without-equals"),
    ],
)
def test_bad_arguments_exit_2(tmp_path: Path, store: str, args: list[str]) -> None:
    result = run_cli(tmp_path, store, SIMPLE, *args)
    assert result.code == 2, (result.code, result.stdout, result.stderr)
    assert result.stdout == ""
    assert result.stderr.strip()


def test_missing_file_exits_2(tmp_path: Path, store: str) -> None:
    result = run_playbook(tmp_path / "does-not-exist.yaml", store)
    assert result.code == 2, (result.code, result.stdout, result.stderr)
    assert result.stdout == ""
    assert "does-not-exist.yaml" in result.stderr


def test_json_output_shape_and_typed_values(tmp_path: Path, store: str) -> None:
    result = run_cli(
        tmp_path,
        store,
        SIMPLE,
        "--payload",
        '{"a": 1, "b": 1}',
        "--set",
        "b=2",
        "--set",
        "n=5",
        "--set",
        "s=hello",
    )
    assert result.code == 0, result.stderr
    decoder = json.JSONDecoder()
    outcome, end = decoder.raw_decode(result.stdout)
    assert result.stdout[end:].strip() == ""  # exactly one JSON object
    assert set(outcome) == {"execution_id", "status", "error", "steps"}
    assert isinstance(outcome["execution_id"], str) and outcome["execution_id"].isdigit()
    assert outcome["status"] == "COMPLETED" and outcome["error"] is None
    for step in outcome["steps"].values():
        assert set(step) == {"status", "result"}
    assert outcome["steps"]["start"]["result"] == {
        "a": 1,  # --payload over the workload
        "b": 2,  # --set over --payload
        "c": 0,  # the workload default
        "n": 5,
        "n_type": "int",
        "s": "hello",
        "s_type": "str",
    }


def test_events_command_log_and_command_ids(tmp_path: Path, store: str) -> None:
    result = run_cli(
        tmp_path,
        store,
        """
            workflow:
              - step: start
                tool: {kind: python, code: "result = {'ok': True}"}
                next: [fan]
              - step: fan
                loop: {in: "{{ [10, 20] }}", iterator: v, spec: {mode: parallel}}
                tool: {kind: python, input: {v: "{{ v }}"}, code: "result = v"}
                next: [end]
              - step: end
                tool: {kind: noop}
            """,
    )
    assert result.code == 0, f"exit {result.code}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    outcome = one_json_object(result)
    assert outcome["status"] == "COMPLETED", outcome
    assert outcome["error"] is None
    execution_id = outcome["execution_id"]
    raw = noetl("events", execution_id, "--store", store, "--json")
    assert raw.code == 0, raw.stderr
    log = json.loads(raw.stdout)
    assert log[0]["event_type"] == "playbook_started"
    assert log[-1]["event_type"] == "playbook.completed"
    ids = [int(e["event_id"]) for e in log]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    stamps = [e["created_at"] for e in log]
    assert stamps == sorted(stamps)
    assert {str(e["execution_id"]) for e in log} == {execution_id}
    issued = of_type(log, "command.issued")
    assert [e["node_name"] for e in issued] == ["start", "fan", "fan", "end"]
    for event in issued:
        meta = event["meta"]
        expected = f"{execution_id}:{event['node_name']}:{event['event_id']}"
        if event["node_name"] == "fan":
            expected += f":i{meta['iteration_index']}"
        assert meta["command_id"] == expected
        assert meta["pool"] == "shared"
    assert sorted(e["meta"]["command_id"].rsplit(":", 1)[1] for e in issued if e["node_name"] == "fan") == [
        "i0",
        "i1",
    ]


def test_system_path_routes_to_system_pool(tmp_path: Path) -> None:
    outcome = completed(
        run(
            tmp_path,
            """
            workflow:
              - step: start
                tool: {kind: noop}
                next: [end]
              - step: end
                tool: {kind: noop}
            """,
            path="system/maintenance",
        )
    )
    issued = of_type(events(outcome), "command.issued")
    assert len(issued) == 2
    assert {e["meta"]["pool"] for e in issued} == {"system"}
