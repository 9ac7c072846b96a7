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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from fastapi.testclient import TestClient
from tests.support.auth import AUTH, TEST_TOKEN
from tests.support.cli import run_playbook
from tests.support.cluster import Cluster, ServerProcess, events_of, post_json, wait_terminal
from tests.support.credentials import KEY_ENV, add_credential, fresh_encryption_key, pg_credential_data
from tests.support.stub_api import StubAPI

from noetl.api.app import create_app
from noetl.dsl import parse_playbook
from noetl.dsl.kinds import TOOL_KINDS
from noetl.engine import events as ev
from noetl.engine.events import Event
from noetl.engine.graph import analyse
from noetl.engine.machine import Engine
from noetl.errors import PlaybookError
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


# ---------------------------------------------------------------------------------------------------
# item 9: cursor loops (a PostgreSQL work queue claimed frame by frame)

CURSOR = playbook_text(
    "cursor",
    """\
    workload: {schema: public, pause: 0.2}
    workflow:
      - step: start
        desc: claims up to 3 rows at a time, 2 rows in flight, until the claim returns none
        loop:
          iterator: job
          cursor:
            kind: postgres
            auth: pg_local
            claim: |
              UPDATE {{ workload.schema }}.queue SET state = 'claimed', claimed_by = '{{ execution_id }}'
              WHERE id IN (SELECT id FROM {{ workload.schema }}.queue WHERE state = 'new' ORDER BY id
                           LIMIT {{ __frame_max_rows }} FOR UPDATE SKIP LOCKED)
              RETURNING id, payload
          spec:
            mode: cursor
            frame: {max_rows: 3, row_concurrency: 2, lease_seconds: 60}
        tool:
          - name: work
            kind: python
            input: {id: "{{ iter.job.id }}", payload: "{{ job.payload }}", pause: "{{ workload.pause }}"}
            code: |
              import time
              began = time.time()
              time.sleep(pause)
              result = {"id": id, "doubled": id * 2, "payload": payload, "began": began, "ended": time.time()}
          - name: save
            kind: postgres
            auth: pg_local
            command: |
              INSERT INTO {{ workload.schema }}.done
                VALUES ({{ iter.job.id }}, '{{ execution_id }}', {{ __cursor_frame }}, {{ __cursor_row }}, {{ work.doubled }});
              UPDATE {{ workload.schema }}.queue SET state = 'done' WHERE id = {{ iter.job.id }}
        next:
          arcs:
            - step: report
              when: "{{ event.name == 'loop.done' }}"
      - step: report
        tool:
          kind: python
          input:
            count: "{{ start.count }}"
            frames: "{{ start.frames }}"
            cursor: "{{ start.cursor }}"
            stats: "{{ start.stats }}"
            ids: "{{ start.results | map(attribute='id') | list }}"
          code: "result = dict(count=count, frames=frames, cursor=cursor, stats=stats, ids=sorted(ids))"
    """,
)


def make_queue(dsn: str, schema: str, n: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        conn.execute(
            f"CREATE TABLE {schema}.queue (id int PRIMARY KEY, payload text, state text NOT NULL DEFAULT 'new',"
            " claimed_by text)"
        )
        conn.execute(
            f"CREATE TABLE {schema}.done (id int PRIMARY KEY, execution text, frame int, row int, doubled int)"
        )
        conn.execute(
            f"INSERT INTO {schema}.queue (id, payload) SELECT g, 'item-' || g FROM generate_series(1, {n}) g"
        )


def table(dsn: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(sql).fetchall()


@pytest.fixture
def schema(pg_dsn: str) -> Iterator[str]:
    name = f"c17_{uuid.uuid4().hex[:10]}"
    try:
        yield name
    finally:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@dataclass
class Local:
    """`noetl run --json` on a SQLite store of the test holding the `pg_local` credential."""

    tmp: Path
    store: str

    def run(self, text: str, payload: dict[str, Any]) -> dict[str, Any]:
        return cli_run(self.tmp, text, "--payload", json.dumps(payload), store=self.store)


@pytest.fixture
def local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pg_dsn: str) -> Local:
    monkeypatch.setenv(KEY_ENV, fresh_encryption_key())  # inherited by the `noetl` subprocesses
    store = f"sqlite:///{tmp_path}/noetl.db"
    add_credential(store, "pg_local", "postgres", pg_credential_data(pg_dsn))
    return Local(tmp_path, store)


def check_cursor(outcome: dict[str, Any], dsn: str, schema: str, n: int) -> None:
    assert outcome["status"] == "COMPLETED", outcome
    got = results(outcome)
    frames = -(-n // 3)  # frames of 3 rows that returned rows; the next claim returned none
    assert got["report"] == {
        "count": n,
        "frames": frames,
        "cursor": "drained",
        "stats": {"total": n, "completed": n, "failed": 0},
        "ids": list(range(1, n + 1)),
    }
    drained = got["start"]
    assert (drained["cursor"], drained["frames"], drained["count"]) == ("drained", frames, n)
    rows = drained["results"]
    assert sorted(r["work"]["id"] for r in rows) == list(range(1, n + 1))
    assert all(r["doubled"] == 2 * r["id"] and r["payload"] == f"item-{r['id']}" for r in rows)
    # The database: every row processed once, by this run, frame by frame.
    assert table(dsn, f"SELECT state, count(*) FROM {schema}.queue GROUP BY state") == [("done", n)]
    done = table(dsn, f"SELECT id, execution, frame, row, doubled FROM {schema}.done ORDER BY id")
    assert [(d[0], d[4]) for d in done] == [(i, 2 * i) for i in range(1, n + 1)]
    assert {d[1] for d in done} == {outcome["execution_id"]}
    by_frame: dict[int, list[int]] = {}
    for _, _, frame, row, _ in done:
        by_frame.setdefault(frame, []).append(row)
    assert sorted(by_frame) == list(range(frames))
    assert all(sorted(r) == list(range(len(r))) and len(r) <= 3 for r in by_frame.values())
    # At most row_concurrency (2) rows in flight, and 2 at once did happen.
    spans = [(r["began"], r["ended"]) for r in rows]
    assert max_overlap(spans) == 2
    # A frame is claimed only once every row of the previous one is done.
    frame_of = {d[0]: d[2] for d in done}
    for earlier in range(frames - 1):
        last_end = max(r["ended"] for r in rows if frame_of[r["id"]] == earlier)
        first_start = min(r["began"] for r in rows if frame_of[r["id"]] == earlier + 1)
        assert last_end <= first_start


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    points = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    best = current = 0
    for _, delta in points:
        current += delta
        best = max(best, current)
    return best


def test_item9_cursor_loop_drains_the_queue_local(local: Local, pg_dsn: str, schema: str) -> None:
    make_queue(pg_dsn, schema, 7)
    check_cursor(local.run(CURSOR, {"schema": schema}), pg_dsn, schema, 7)


def test_item9_empty_queue_drains_at_once_local(local: Local, pg_dsn: str, schema: str) -> None:
    make_queue(pg_dsn, schema, 0)
    outcome = local.run(CURSOR, {"schema": schema})
    assert outcome["status"] == "COMPLETED", outcome
    assert results(outcome)["start"] == {
        "results": [],
        "count": 0,
        "stats": {"total": 0, "completed": 0, "failed": 0},
        "cursor": "drained",
        "frames": 0,
    }
    assert results(outcome)["report"]["cursor"] == "drained"


def test_item9_claim_that_returns_no_rows_fails_the_run_local(local: Local, pg_dsn: str, schema: str) -> None:
    make_queue(pg_dsn, schema, 2)
    text = CURSOR.replace("RETURNING id, payload", "")
    assert text != CURSOR
    outcome = local.run(text, {"schema": schema})
    assert outcome["status"] == "FAILED"
    assert outcome["error"] == (
        "step 'start': loop.cursor: the claim query returned no rows "
        "(it must return them: SELECT ... or ... RETURNING ...)"
    )


CURSOR_CYCLE = playbook_text(
    "cursor_cycle",
    """\
    workload: {schema: public}
    workflow:
      - step: start
        tool: {kind: noop}
        next: [drain]
      - step: drain
        loop:
          iterator: job
          cursor:
            auth: pg_local
            claim: |
              UPDATE {{ workload.schema }}.queue SET state = 'done'
              WHERE id IN (SELECT id FROM {{ workload.schema }}.queue WHERE state = 'new' ORDER BY id
                           LIMIT {{ __frame_max_rows }} FOR UPDATE SKIP LOCKED)
              RETURNING id
          spec: {frame: {max_rows: 2, row_concurrency: 2}}
        tool: {kind: python, input: {id: "{{ job.id }}", row: "{{ iter._index }}"}, code: "result = {'id': id, 'row': row}"}
        next: [refill]
      - step: refill
        desc: the first time, three more rows arrive and the cursor loop runs again
        tool:
          kind: postgres
          auth: pg_local
          command: |
            INSERT INTO {{ workload.schema }}.queue (id, payload)
            SELECT g, 'late-' || g FROM generate_series(101, 103) g
            WHERE NOT EXISTS (SELECT 1 FROM {{ workload.schema }}.queue WHERE id > 100)
            RETURNING id
        next:
          arcs:
            - {step: drain, when: "{{ output.row_count > 0 }}"}
            - {step: report, when: "{{ output.row_count == 0 }}"}
      - step: report
        tool:
          kind: python
          input: {ids: "{{ drain.results | map(attribute='id') | list }}", frames: "{{ drain.frames }}"}
          code: "result = {'ids': sorted(ids), 'frames': frames}"
    """,
)


def test_item9_cursor_loop_entered_again_through_a_cycle_starts_afresh(
    local: Local, pg_dsn: str, schema: str
) -> None:
    make_queue(pg_dsn, schema, 3)
    outcome = local.run(CURSOR_CYCLE, {"schema": schema})
    assert outcome["status"] == "COMPLETED", outcome
    # The second run of `drain` saw only the late rows: 2 frames (2 + 1 rows), results reset.
    assert results(outcome)["report"] == {"ids": [101, 102, 103], "frames": 2}
    assert [r["row"] for r in results(outcome)["drain"]["results"]] == [0, 1, 0]
    assert table(pg_dsn, f"SELECT count(*) FROM {schema}.queue WHERE state = 'done'") == [(6,)]


def test_item9_cursor_loop_dsl() -> None:
    step = parse_playbook(CURSOR).steps["start"]
    loop = step.loop
    assert loop is not None and loop.cursor is not None
    assert (loop.mode, loop.iterator, loop.max_rows, loop.row_concurrency) == ("cursor", "job", 3, 2)
    assert (loop.cursor.kind, loop.cursor.config) == ("postgres", {"auth": "pg_local"})
    assert "FOR UPDATE SKIP LOCKED" in loop.cursor.claim
    implied = parse_playbook(CURSOR_CYCLE).steps["drain"].loop  # a cursor block without a mode
    assert implied is not None and implied.mode == "cursor" and implied.cursor is not None
    assert implied.cursor.kind == "postgres"

    def error_of(loop_yaml: str) -> PlaybookError:
        text = playbook_text(
            "bad", "workflow:\n  - step: start\n    tool: {kind: noop}\n    loop:\n" + loop_yaml
        )
        with pytest.raises(PlaybookError) as caught:
            parse_playbook(text)
        return caught.value

    claim = "      cursor: {claim: 'SELECT 1 AS id'}\n"
    err = error_of("      iterator: r\n      cursor: {kind: postgres}\n")
    assert err.field == "loop.cursor.claim" and "loop.cursor.claim is required" in err.message
    err = error_of("      iterator: r\n" + claim + "      spec: {mode: parallel}\n")
    assert (
        err.field == "loop.spec.mode"
        and err.message == "loop.cursor needs loop.spec.mode: cursor, got 'parallel'"
    )
    err = error_of(
        "      iterator: r\n" + claim + "      spec: {mode: cursor, frame: {row_concurrency: 0}}\n"
    )
    assert err.field == "loop.spec.frame.row_concurrency"
    assert err.message == "loop.spec.frame.row_concurrency must be a positive integer, got 0"
    err = error_of("      iterator: r\n      cursor: {kind: nosuchtool, claim: x}\n")
    assert err.field == "loop.cursor.kind"


# ---------------------------------------------------------------------------------------------------
# items 1, 5 and 9 on `noetl server start --with-worker` (PostgreSQL store, a schema of its own)


@dataclass
class Server:
    cluster: Cluster
    process: ServerProcess

    @property
    def url(self) -> str:
        return self.process.url

    def start(self, text: str, payload: dict[str, Any] | None = None) -> str:
        registered = post_json(self.url, "/api/catalog/register", {"content": text})
        assert registered["status"] == "success", registered
        path = yaml.safe_load(text)["metadata"]["path"]
        started = post_json(self.url, "/api/execute", {"path": path, "payload": payload or {}})
        return str(started["execution_id"])

    def outcome(self, execution_id: str) -> dict[str, Any]:
        """The terminal status, shaped like `noetl run --json`."""
        status = wait_terminal(self.url, execution_id, RUN_TIMEOUT, details=self.cluster.logs)
        return {
            "execution_id": execution_id,
            "status": status["status"],
            "error": status["error"],
            "steps": status["steps"],
        }

    def run(self, text: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.outcome(self.start(text, payload))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, pg_dsn: str) -> Iterator[Server]:
    store_schema = f"noetl_c17_{uuid.uuid4().hex[:8]}"
    tmp = tmp_path_factory.mktemp("c17-server")
    env = {KEY_ENV: fresh_encryption_key(), "NOETL_RESULT_STORE_DIR": str(tmp / "results")}
    try:
        with Cluster(tmp, f"{pg_dsn}?schema={store_schema}", env=env) as cluster:
            process = cluster.start_server("c17", extra_args=["--with-worker", "--workers", "8"])
            credential = {"name": "pg_local", "type": "postgres", "data": pg_credential_data(pg_dsn)}
            post_json(process.url, "/api/credentials", credential)
            yield Server(cluster, process)
    finally:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{store_schema}" CASCADE')


def test_item1_arc_from_an_unreachable_step_is_dead_on_a_server(server: Server) -> None:
    check_orphan(server.run(ORPHAN))


def test_item5_pipeline_results_by_label_on_a_server(server: Server, stub_api: StubAPI) -> None:
    check_pipeline(server.run(PIPELINE, {"api": stub_api.base_url}))


def test_item9_cursor_loop_drains_the_queue_on_a_server(server: Server, pg_dsn: str, schema: str) -> None:
    make_queue(pg_dsn, schema, 7)
    outcome = server.run(CURSOR, {"schema": schema})
    check_cursor(outcome, pg_dsn, schema, 7)
    claims = [
        e
        for e in events_of(server.url, outcome["execution_id"])
        if e["event_type"] == "command.issued" and (e["meta"].get("cursor") or {}).get("phase") == "claim"
    ]
    assert [c["meta"]["cursor"]["frame"] for c in claims] == [0, 1, 2, 3]  # the last one returned no rows
    assert {c["node_type"] for c in claims} == {"postgres"}


def test_item9_two_runs_share_one_queue_and_each_row_is_done_once(
    server: Server, pg_dsn: str, schema: str
) -> None:
    """Two executions drain the same queue at once: the claim's FOR UPDATE SKIP LOCKED hands each
    row to exactly one of them, and both end when the queue is empty."""
    n = 24
    make_queue(pg_dsn, schema, n)
    first, second = (server.start(CURSOR, {"schema": schema, "pause": 0.05}) for _ in range(2))
    outcomes = [server.outcome(first), server.outcome(second)]
    assert [o["status"] for o in outcomes] == ["COMPLETED", "COMPLETED"], outcomes
    done = table(pg_dsn, f"SELECT id, execution FROM {schema}.done ORDER BY id")
    assert [d[0] for d in done] == list(range(1, n + 1))  # every row once (id is the primary key)
    per_run = {o["execution_id"]: sorted(results(o)["report"]["ids"]) for o in outcomes}
    assert sorted(per_run[first] + per_run[second]) == list(range(1, n + 1))
    for execution_id, ids in per_run.items():
        assert ids == [d[0] for d in done if d[1] == execution_id]
        assert results(next(o for o in outcomes if o["execution_id"] == execution_id))["report"][
            "count"
        ] == len(ids)
    assert table(pg_dsn, f"SELECT state, count(*) FROM {schema}.queue GROUP BY state") == [("done", n)]
