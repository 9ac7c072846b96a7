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
import json
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests.support.auth import AUTH, TEST_TOKEN
from tests.support.cli import run_playbook
from tests.support.stub_api import StubAPI

from noetl.api.app import create_app
from noetl.dsl import parse_playbook
from noetl.dsl.kinds import TOOL_KINDS
from noetl.engine import events as ev
from noetl.engine.events import Event
from noetl.engine.graph import analyse
from noetl.engine.machine import Engine
from noetl.ids import default_ids
from noetl.runtime.control import ControlPlane
from noetl.runtime.local import LocalRuntime, RunOutcome
from noetl.store import open_store
from noetl.worker.command import Command, CommandEvents
from noetl.worker.executor import Executor

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


# ---------------------------------------------------------------------------------------------------
# item 5: a pipeline step's result is its tasks' results by label, their keys also at the top level

PIPELINE = playbook_text(
    "pipeline_labels",
    """\
    workload: {api: "http://127.0.0.1:1"}
    workflow:
      - step: start
        tool:
          - name: fetch
            kind: http
            url: "{{ workload.api }}/api/v1/assessments"
            params: {page: 1, pageSize: 3}
          - name: count
            kind: python
            input: {body: "{{ fetch.body }}"}
            code: "result = {'ids': [i['id'] for i in body['data']], 'status': 'counted'}"
          - name: save
            kind: python
            input: {ids: "{{ count.ids }}"}
            code: "result = {'saved': len(ids), 'status': 'saved'}"
        next: [check]
      - step: check
        tool:
          kind: python
          input:
            by_label: "{{ start.fetch.status_code }}"
            flat: "{{ start.status_code }}"
            ids: "{{ start.count.ids }}"
            saved: "{{ start.saved }}"
            status: "{{ start.status }}"
            body: "{{ start.data.paging.pageSize }}"
          code: "result = dict(by_label=by_label, flat=flat, ids=ids, saved=saved, status=status, body=body)"
        next: [rows]
      - step: rows
        desc: a pipeline that ends in a list (query rows) results in that list
        tool:
          - name: prepare
            kind: python
            code: "result = {'n': 3}"
          - name: query
            kind: python
            input: {n: "{{ prepare.n }}"}
            code: "result = [{'id': i} for i in range(n)]"
        next: [last]
      - step: last
        tool: {kind: python, input: {r: "{{ rows }}"}, code: "result = {'first': r[0], 'count': len(r)}"}
    """,
)

# `start.data` is the http task's own `data` key (its JSON body), flattened like any other key.
PIPELINE_CHECK = {"by_label": 200, "flat": 200, "ids": [1, 2, 3], "saved": 3, "status": "saved", "body": 3}


def check_pipeline(outcome: dict[str, Any]) -> None:
    assert outcome["status"] == "COMPLETED", outcome
    got = results(outcome)
    assert got["check"] == PIPELINE_CHECK
    start = got["start"]
    assert list(start)[-3:] == ["fetch", "count", "save"]  # the labels (after the flattened keys)
    assert start["fetch"]["status_code"] == start["status_code"] == 200
    assert [item["id"] for item in start["fetch"]["body"]["data"]] == [1, 2, 3]
    assert start["count"] == {"ids": [1, 2, 3], "status": "counted"}
    assert start["save"] == {"saved": 3, "status": "saved"}
    assert (start["ids"], start["saved"], start["status"]) == ([1, 2, 3], 3, "saved")  # later task wins
    assert got["rows"] == [{"id": 0}, {"id": 1}, {"id": 2}]
    assert got["last"] == {"first": {"id": 0}, "count": 3}


def test_item5_pipeline_results_by_label_local(tmp_path: Path, stub_api: StubAPI) -> None:
    outcome = cli_run(tmp_path, PIPELINE, "--set", f"api={stub_api.base_url}")
    check_pipeline(outcome)


def test_item5_pipeline_task_run_again_by_a_jump_counts_once_in_order() -> None:
    text = playbook_text(
        "pipeline_jump",
        """\
        workflow:
          - step: start
            tool:
              - name: bump
                kind: python
                input: {n: "{{ iter.n | default(0) }}"}
                code: "result = {'n': n + 1, 'who': 'bump'}"
                set: {iter.n: "{{ output.n }}"}
              - name: gate
                kind: python
                input: {n: "{{ iter.n }}"}
                code: "result = {'who': 'gate', 'seen': n}"
                spec:
                  policy:
                    rules:
                      - when: "{{ output.data.seen < 2 }}"
                        then: {do: jump, to: bump}
        """,
    )
    outcome = in_process(text)
    assert outcome.status == "COMPLETED", outcome.error
    result = outcome.steps["start"].result
    assert result == {
        "n": 2,
        "who": "gate",
        "seen": 2,
        "bump": {"n": 2, "who": "bump"},
        "gate": {"who": "gate", "seen": 2},
    }


# ---------------------------------------------------------------------------------------------------
# item 6: the start step's loop.in must render to a JSON array

START_LOOP = playbook_text(
    "start_loop",
    """\
    workload: {items: [1, 2]}
    workflow:
      - step: start
        loop: {in: "{{ workload.items }}", iterator: n}
        tool: {kind: python, input: {n: "{{ n }}"}, code: "result = n * 10"}
        next: [later]
      - step: later
        desc: after the start step, a number still iterates 0..n-1 (upstream coercion)
        loop: {in: "{{ workload.count | default(2) }}", iterator: i}
        tool: {kind: python, input: {i: "{{ i }}"}, code: "result = i"}
    """,
)


@pytest.mark.parametrize(
    ("items", "kind"),
    [("3", "number"), ('{"a": 1}', "object"), ('"a,b"', "string"), ("null", "null"), ("true", "bool")],
)
def test_item6_start_loop_must_be_an_array_local(tmp_path: Path, items: str, kind: str) -> None:
    outcome = cli_run(tmp_path, START_LOOP, "--payload", f'{{"items": {items}}}')
    assert outcome["status"] == "FAILED"
    assert outcome["error"] == f"start step loop.in must resolve to a JSON array, got: {kind}"
    assert statuses(outcome) == {"start": "PENDING", "later": "PENDING"}  # nothing ran


def test_item6_start_loop_array_runs_and_later_loops_still_coerce(tmp_path: Path) -> None:
    outcome = cli_run(tmp_path, START_LOOP, "--payload", '{"count": 3}')
    assert outcome["status"] == "COMPLETED", outcome
    assert results(outcome)["start"]["results"] == [10, 20]
    assert results(outcome)["later"]["results"] == [0, 1, 2]


def test_item6_execute_api_refuses_a_start_loop_that_is_not_an_array() -> None:
    control = ControlPlane(open_store("memory://"))
    with TestClient(create_app(control, admin_token=TEST_TOKEN), headers=AUTH) as client:
        registered = client.post("/api/catalog/register", json={"content": START_LOOP})
        assert registered.status_code == 200, registered.text
        path = "tests/c17/start_loop"
        for items, kind in ((3, "number"), ({"a": 1}, "object"), ("1,2", "string"), (None, "null")):
            answer = client.post("/api/execute", json={"path": path, "payload": {"items": items}})
            assert answer.status_code == 422, answer.text
            assert answer.json() == {
                "error": f"start step loop.in must resolve to a JSON array, got: {kind}",
                "status": 422,
            }
        listed = client.get("/api/executions")
        assert listed.status_code == 200 and listed.json() == []  # no run was created
        answer = client.post("/api/execute", json={"path": path, "workload": {"items": [4, 5, 6]}})
        assert answer.status_code == 200, answer.text
        assert answer.json()["commands_generated"] == 1  # a sequential loop: its first iteration


# ---------------------------------------------------------------------------------------------------
# item 7: loop statistics

LOOP_STATS = playbook_text(
    "loop_stats",
    """\
    workload: {xs: [1, 0, 4, 0, 5]}
    workflow:
      - step: start
        tool: {kind: noop}
        next: [invert]
      - step: invert
        loop: {in: "{{ workload.xs }}", iterator: x, spec: {mode: parallel, max_in_flight: 2}}
        tool:
          kind: python
          input: {x: "{{ x }}"}
          code: "result = {'inv': 1 / x}"
          spec:
            policy:
              rules:
                - when: "{{ output.status == 'error' }}"
                  then: {do: continue}
        next: [report]
      - step: report
        tool:
          kind: python
          input:
            total: "{{ invert.stats.total }}"
            completed: "{{ invert.stats.completed }}"
            failed: "{{ invert.stats.failed }}"
            count: "{{ invert.count }}"
          code: "result = dict(total=total, completed=completed, failed=failed, count=count)"
    """,
)


def test_item7_loop_stats_count_iterations_a_policy_continued_past_as_failed(tmp_path: Path) -> None:
    outcome = cli_run(tmp_path, LOOP_STATS)
    assert outcome["status"] == "COMPLETED", outcome
    got = results(outcome)
    assert got["invert"]["stats"] == {"total": 5, "completed": 3, "failed": 2}
    assert got["invert"]["results"][0] == {"inv": 1.0} and got["invert"]["results"][2] == {"inv": 0.25}
    assert got["report"] == {"total": 5, "completed": 3, "failed": 2, "count": 5}


def test_item7_loop_stats_of_an_empty_and_a_clean_loop() -> None:
    text = playbook_text(
        "loop_stats_clean",
        """\
        workflow:
          - step: start
            loop: {in: "{{ [] }}", iterator: x}
            tool: {kind: python, code: "result = x"}
            next: [clean]
          - step: clean
            loop: {in: "{{ [1, 2, 3] }}", iterator: x}
            tool: {kind: python, input: {x: "{{ x }}"}, code: "result = x"}
        """,
    )
    outcome = in_process(text)
    assert outcome.status == "COMPLETED", outcome.error
    assert outcome.steps["start"].result["stats"] == {"total": 0, "completed": 0, "failed": 0}
    assert outcome.steps["clean"].result["stats"] == {"total": 3, "completed": 3, "failed": 0}


# ---------------------------------------------------------------------------------------------------
# executor and engine hooks: large results kept in the result store, SQL files rendered with the
# workload and ctx, tool timeouts of kind `timeout`

BIG_RESULT = playbook_text(
    "big_result",
    """\
    workflow:
      - step: start
        tool:
          kind: python
          code: "result = {'rows': list(range(500)), 'status': 'big'}"
          output: {inline_max_bytes: 200}
        next: [load]
      - step: load
        tool:
          kind: artifact
          input: {result_ref: "{{ start._ref }}"}
        next: [use]
      - step: use
        tool:
          kind: python
          input: {rows: "{{ load.data.rows }}", status: "{{ start.status }}", size: "{{ start._size_bytes }}"}
          code: "result = {'n': len(rows), 'last': rows[-1], 'status': status, 'size': size}"
    """,
)


def test_large_result_is_kept_in_the_result_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOETL_RESULT_STORE_DIR", str(tmp_path / "results"))
    outcome = cli_run(tmp_path, BIG_RESULT)
    assert outcome["status"] == "COMPLETED", outcome
    start = results(outcome)["start"]
    assert start["_ref"]["ref"].startswith(f"noetl://execution/{outcome['execution_id']}/result/start/")
    assert start["status"] == "big"  # a top-level scalar stays readable
    assert "rows" not in start  # the list itself is in the store, not in the event log
    size = start["_size_bytes"]
    assert size > 200
    assert results(outcome)["use"] == {"n": 500, "last": 499, "status": "big", "size": size}
    assert any((tmp_path / "results").rglob("*")), "nothing was written to the result store"


SQL_FILE = playbook_text(
    "sql_file",
    """\
    workload: {greeting: hello, folder: "."}
    workflow:
      - step: start
        tool: {kind: noop}
        set: {ctx.factor: 7}
        next: [query]
      - step: query
        tool: {kind: duckdb, script: {uri: "file://{{ workload.folder }}/q.sql"}}
        next: [per_item]
      - step: per_item
        loop: {in: "{{ [2, 3] }}", iterator: x}
        tool: {kind: duckdb, script: {uri: "file://{{ workload.folder }}/item.sql"}}
    """,
)


def test_sql_file_renders_workload_ctx_and_iteration_values(tmp_path: Path) -> None:
    (tmp_path / "q.sql").write_text(
        "SELECT '{{ workload.greeting }}' AS greeting, {{ ctx.factor }} * 6 AS answer", encoding="utf-8"
    )
    (tmp_path / "item.sql").write_text(
        "SELECT {{ iter.x }} * {{ ctx.factor }} AS product, '{{ workload.greeting }}' AS g", encoding="utf-8"
    )
    outcome = cli_run(tmp_path, SQL_FILE, "--payload", json.dumps({"folder": str(tmp_path)}))
    assert outcome["status"] == "COMPLETED", outcome
    got = results(outcome)
    assert got["query"] == [{"greeting": "hello", "answer": 42}]
    assert got["per_item"]["results"] == [[{"product": 14, "g": "hello"}], [{"product": 21, "g": "hello"}]]


class SleepyTool:
    """A tool that ignores its time limit (sleeps 30 s) or raises a TimeoutError of its own."""

    kind = "c17_sleepy"

    async def run(self, config: dict[str, Any], ctx: Any) -> Any:
        if config.get("raise"):
            raise TimeoutError("the backend did not answer")
        await asyncio.sleep(30)
        raise AssertionError("the executor did not stop the tool")


def _sleepy_command(config: dict[str, Any]) -> Command:
    rules = [
        {
            "when": "{{ output.error.kind == 'timeout' and output.error.retryable }}",
            "then": {"do": "continue"},
        }
    ]
    return Command(
        execution_id=1,
        event_id=2,
        command_id="1:slow:2",
        step="slow",
        kind="c17_sleepy",
        tool_config={**config, "spec": {"policy": {"rules": rules}}},
    )


@pytest.mark.parametrize("config", [{"timeout": 0.2}, {"raise": True}], ids=["past-its-limit", "raises"])
def test_tool_timeout_is_an_error_of_kind_timeout(
    monkeypatch: pytest.MonkeyPatch, config: dict[str, Any]
) -> None:
    """The policy rule continues only when `output.error.kind` is `timeout` (and retryable): the
    command then completes with status `error`; any other kind fails it."""
    monkeypatch.setitem(TOOL_KINDS, "c17_sleepy", f"{__name__}:SleepyTool")
    executor = Executor(ids=default_ids)
    began = time.monotonic()
    reported = asyncio.run(executor.execute(_sleepy_command(config)))
    assert time.monotonic() - began < 10
    kinds = [e.event_type for e in reported]
    assert kinds == [ev.CALL_DONE, ev.COMMAND_COMPLETED], reported
    done = reported[0].payload["result"]
    assert done["status"] == "error"
    assert "timed out" in done["context"]["error"]
