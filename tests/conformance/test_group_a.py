"""Group A of the conformance corpus (no external services), in every mode (`runner`).

Each test asserts the values listed in noetl-conformance-corpus.md §2.3, not only the status. The
runs of a mode are started together (four at a time, so a cluster's workers are busy at once)
before the first test of this module reads them.
"""

from __future__ import annotations

import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest

from tests.conformance.runners import DISTRIBUTED, SERVER, Outcome, Runner, ServerRunner
from tests.support.cluster import worker_of

pytestmark = pytest.mark.conformance

A_RUNS: dict[str, tuple[str, tuple[str, ...]]] = {
    "a1": ("hello_world/hello_world.yaml", ()),
    "a2": ("test_args_passing.yaml", ()),
    "a3": ("test_end_with_action.yaml", ()),
    "a4": ("comprehensive_test.yaml", ()),
    "a5_hot": ("control_flow_workbook/control_flow_workbook.yaml", ("--set", "temperature_c=30")),
    "a5_cold": ("control_flow_workbook/control_flow_workbook.yaml", ("--set", "temperature_c=10")),
    "a6": ("fanout_reduce/fanout_reduce_phase6.yaml", ()),
    "a7": ("loop_test.yaml", ()),
    "a8": ("test_loop_instance_isolation/playbook.yaml", ()),
    "a9": ("load_test/heavy_loop_aggregation/heavy_loop_aggregation.yaml", ()),
    "a10": ("vars_test/test_vars_api.yaml", ()),
    "a11": ("vars_test/test_transient.yaml", ()),
    "a12": ("duckdb_test.yaml", ()),
    "a13": ("retry_test/duckdb_retry_query.yaml", ()),
    "a14": ("playbook_composition/user_profile_scorer.yaml", ()),
    "a16": ("root_scripts/test_implicit_end_routing.yaml", ()),
    "a17": ("actions_test.yaml", ()),
}
BROKEN = "broken_playbooks/should_error_tool_is_required.yaml"

GroupA = dict[str, Outcome | BaseException]


@pytest.fixture(scope="module")
def group_a(runner: Runner) -> GroupA:
    """Every group-A run of this mode; a run that raised keeps its error for its own test."""

    def run(label: str) -> tuple[str, Outcome | BaseException]:
        file, extra = A_RUNS[label]
        try:
            return label, runner.run(file, *extra)
        except Exception as exc:  # re-raised by the test of this playbook
            return label, exc

    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(pool.map(run, A_RUNS))


def completed(group_a: GroupA, label: str, runner: Runner) -> Outcome:
    outcome = group_a[label]
    if isinstance(outcome, BaseException):
        raise outcome
    return runner.check_ok(A_RUNS[label][0], outcome)


def test_a1_hello_world(group_a: GroupA, runner: Runner) -> None:
    outcome = completed(group_a, "a1", runner)
    assert outcome.statuses == {"start": "COMPLETED", "test_step": "COMPLETED", "end": "COMPLETED"}
    assert outcome.results["test_step"] == {"status": "ok", "data": {"message": "Hello World"}}
    log = runner.events(outcome.execution_id)
    issued = [e["node_name"] for e in log if e["event_type"] == "command.issued"]
    assert issued == ["start", "test_step", "end"]  # each step runs once (no lease expired)
    done = next(e for e in log if e["event_type"] == "call.done" and e["node_name"] == "test_step")
    assert "HELLO_WORLD: Hello World" in done["result"]["context"]["result"]["context"]["stdout"]


def test_a2_args_passing_keeps_native_types(group_a: GroupA, runner: Runner) -> None:
    # A pipeline step: its task's result by label, and the task's keys at the top level.
    assert completed(group_a, "a2", runner).results["use_vars"] == {
        "compute": {"status": "success", "result": 300},
        "status": "success",
        "result": 300,
    }


def test_a3_end_with_action(group_a: GroupA, runner: Runner) -> None:
    end = completed(group_a, "a3", runner).results["end"]
    assert end["message"] == "Cleanup performed on temp_session_12345"
    assert end["data"]["table"] == "temp_session_12345"


def test_a4_comprehensive_exclusive_branch(group_a: GroupA, runner: Runner) -> None:
    outcome = completed(group_a, "a4", runner)
    results, status = outcome.results, outcome.statuses
    value = results["start"]["random_value"]
    assert 1 <= value <= 20
    if value > 10:
        ran, skipped, expected = "process_high", "process_low", {"processed": 2 * value, "category": "high"}
    else:
        ran, skipped, expected = "process_low", "process_high", {"processed": value + 100, "category": "low"}
    assert status[ran] == "COMPLETED" and status[skipped] == "SKIPPED"
    assert {k: results[ran][k] for k in expected} == expected
    assert results["summarize"]["processing_path"] == expected["category"]
    assert results["summarize"]["final_result"] == expected["processed"]


@pytest.mark.parametrize(
    ("label", "ran", "not_run", "flag"),
    [
        (
            "a5_hot",
            {"hot_path", "hot_task_a", "hot_task_b"},
            {"cold_path", "cold_task"},
            {"is_hot": True, "message": "hot"},
        ),
        (
            "a5_cold",
            {"cold_path", "cold_task"},
            {"hot_path", "hot_task_a", "hot_task_b"},
            {"is_hot": False, "message": "cold"},
        ),
    ],
)
def test_a5_control_flow_workbook(
    group_a: GroupA,
    runner: Runner,
    label: str,
    ran: set[str],
    not_run: set[str],
    flag: dict[str, Any],
) -> None:
    outcome = completed(group_a, label, runner)
    results, status = outcome.results, outcome.statuses
    assert results["eval_flag"] == flag
    assert all(status[s] == "COMPLETED" for s in ran | {"end"})
    assert all(status[s] == "SKIPPED" for s in not_run)
    if label == "a5_hot":
        assert results["hot_task_a"] == {"who": "A"} and results["hot_task_b"] == {"who": "B"}
    else:
        assert results["cold_task"] == {"who": "C"}


def test_a6_fanout_reduce_barrier(group_a: GroupA, runner: Runner) -> None:
    outcome = completed(group_a, "a6", runner)
    results = outcome.results
    assert results["normalize_customer"] == {"normalized": True}
    assert results["enrich_customer"] == {"enriched": True}
    assert results["reduce_customer"] == {"reduced": True}
    log = runner.events(outcome.execution_id)
    enters = [e for e in log if e["event_type"] == "step.enter" and e["node_name"] == "reduce_customer"]
    assert len(enters) == 1

    def done_at(step: str) -> int:
        return next(
            i for i, e in enumerate(log) if e["event_type"] == "command.completed" and e["node_name"] == step
        )

    assert done_at("reduce_customer") > done_at("normalize_customer")
    assert done_at("reduce_customer") > done_at("enrich_customer")


def test_a7_loop_test(group_a: GroupA, runner: Runner) -> None:
    results = completed(group_a, "a7", runner).results
    assert results["start"]["results"] == [
        {"number": n, "doubled": 2 * n, "index": n - 1} for n in range(1, 6)
    ]
    assert results["start"]["count"] == 5
    assert results["process"] == {"original_sum": 15, "doubled_sum": 30, "count": 5}
    assert results["verify"]["status"] == "passed"
    assert results["end"]["test_passed"] is True


def test_a8_loop_instance_isolation(group_a: GroupA, runner: Runner) -> None:
    verify = completed(group_a, "a8", runner).results["verify_results"]
    assert verify["users_count"] == 2
    assert verify["products_count"] == 2
    assert verify["verification"] == "Both loops completed independently"
    assert [r["name"] for r in verify["users_results"]["results"]] == ["Alice", "Bob"]


def test_a9_heavy_loop_aggregation(group_a: GroupA, runner: Runner) -> None:
    results = completed(group_a, "a9", runner).results
    assert results["validate_results"]["status"] == "validated"
    assert results["validate_results"]["all_checks_passed"] is True
    aggregate = results["aggregate_results"]
    assert aggregate["summary"]["total_processed"] == 100
    metrics = aggregate["metrics"]
    assert set(metrics["by_category"].values()) == {10} and len(metrics["by_category"]) == 10
    assert list(metrics["by_priority"].values()) == [20] * 5
    assert metrics["even_items"] == 50
    assert metrics["total_computed_value"] == 990000
    assert metrics["average_computed_value"] == 9900
    assert results["end"]["test_result"] == "validated"


def test_a10_vars_api(group_a: GroupA, runner: Runner) -> None:
    verify = completed(group_a, "a10", runner).results["verify_vars_accessible"]
    assert verify["verification"] == "passed"
    assert (verify["user_id"], verify["username"], verify["score"]) == (999, "api_tester", 85)


def test_a11_transient(group_a: GroupA, runner: Runner) -> None:
    results = completed(group_a, "a11", runner).results
    assert results["test_get_var"]["data"]["verification"] == {
        "counter_correct": True,
        "status_correct": True,
        "config_correct": True,
    }
    assert results["verify_updates"]["all_checks_passed"] is True


def test_a12_duckdb(group_a: GroupA, runner: Runner) -> None:
    results = completed(group_a, "a12", runner).results
    assert results["start"] == [{"name": "Alice", "age": 30}, {"name": "Charlie", "age": 35}]
    assert results["process"]["total_users"] == 2
    assert results["process"]["average_age"] == 32.5
    assert results["verify"]["status"] == "passed"


def test_a13_duckdb_retry_query(group_a: GroupA, runner: Runner) -> None:
    outcome = completed(group_a, "a13", runner)
    assert outcome.results["retry"] == [{"answer": 42, "status": "success"}]
    log = runner.events(outcome.execution_id)
    assert not [e for e in log if e["event_type"] == "call.error"]  # no retries happened


def test_a14_user_profile_scorer(group_a: GroupA, runner: Runner) -> None:
    final = completed(group_a, "a14", runner).results["finalize_result"]
    assert final["user_name"] == "TestUser"
    assert final["profile_score"] == 15.8
    assert final["score_category"] == "Junior"
    assert final["processing_status"] == "completed"


def test_a15_tool_is_required_is_rejected(runner: Runner) -> None:
    # Locally `noetl run` refuses it; a server refuses to register it.
    result = runner.reject(BROKEN)
    assert result.code == 2, f"exit {result.code}:\n{result.stdout}\n{result.stderr}"
    assert result.stdout == ""
    assert re.search(r"tool.*required|no sql command provided", result.stderr, re.IGNORECASE)
    assert "insert_report" in result.stderr and "command" in result.stderr
    assert runner.traces_of(BROKEN) == []


def test_a16_step_without_next_is_terminal(group_a: GroupA, runner: Runner) -> None:
    # Documented choice: a step without `next` ends its branch; `end` is not run implicitly.
    outcome = completed(group_a, "a16", runner)
    assert outcome.statuses["step1"] == "COMPLETED"
    assert outcome.results["step1"] == {"status": "step1_complete"}
    assert outcome.statuses["end"] == "PENDING"


def test_a17_actions_test(group_a: GroupA, runner: Runner) -> None:
    results = completed(group_a, "a17", runner).results
    assert [r["doubled"] for r in results["process_loop"]["results"]] == [20, 40, 60]
    assert results["helper"]["helper_called"] is True
    assert results["aggregate"]["count"] == 0  # nothing writes ctx.loop_results (literal semantics)
    assert results["verify"]["success"] is False


# ---------------------------------------------------------------------------------- per mode


@pytest.mark.parametrize("runner", [SERVER, DISTRIBUTED], indirect=True)
def test_group_a_runs_are_in_the_postgres_event_log(group_a: GroupA, runner: Runner) -> None:
    """The executions and events the API answered are the rows of the mode's PostgreSQL schema."""
    assert isinstance(runner, ServerRunner)
    finished = [o for o in group_a.values() if isinstance(o, Outcome)]
    assert len(finished) == len(A_RUNS), [o for o in group_a.values() if not isinstance(o, Outcome)]
    ids = [int(o.execution_id) for o in finished]
    with psycopg.connect(runner.dsn, autocommit=True) as conn:
        rows = conn.execute(
            f'SELECT execution_id, status FROM "{runner.schema}".execution WHERE execution_id = ANY(%s)',
            (ids,),
        ).fetchall()
        assert sorted(r[0] for r in rows) == sorted(ids)
        assert {r[1] for r in rows} == {"COMPLETED"}
        for outcome in finished:
            events = runner.events(outcome.execution_id)
            [(count,)] = conn.execute(
                f'SELECT count(*) FROM "{runner.schema}".event WHERE execution_id = %s',
                (int(outcome.execution_id),),
            ).fetchall()
            assert count == len(events), outcome.execution_id


@pytest.mark.parametrize("runner", [DISTRIBUTED], indirect=True)
def test_both_workers_took_commands(group_a: GroupA, runner: Runner) -> None:
    """The event log of every run of this mode so far, children included, names both workers on
    `command.claimed` events, and nobody else."""
    assert isinstance(runner, ServerRunner)
    assert len(runner.runs) >= len(A_RUNS)
    claims: Counter[str] = Counter()
    for execution_id in list(runner.runs):
        for event in runner.events(execution_id):
            if event["event_type"] == "command.claimed":
                claims[worker_of(event) or "?"] += 1
    assert set(runner.workers) <= set(claims), (
        f"claims per worker over {len(runner.runs)} runs: {dict(claims)}"
    )
    # control-plane: nested playbooks run inside the server, holding no worker slot
    assert set(claims) <= {*runner.workers, "control-plane"}, dict(claims)
