"""Group A of the conformance corpus (no external services), run through `noetl run --json`.

Each test asserts the values listed in noetl-conformance-corpus.md §2.3, not only the status.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.support.cli import CliResult, events, run_playbook

pytestmark = pytest.mark.conformance


@pytest.fixture
def store(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/noetl.db"


def run_ok(conformance_dir: Path, name: str, store: str, *extra: str) -> dict[str, Any]:
    result: CliResult = run_playbook(conformance_dir / name, store, *extra)
    assert result.code == 0, f"{name} exited {result.code}:\n{result.stdout}\n{result.stderr}"
    outcome = result.json
    assert outcome["status"] == "COMPLETED", outcome
    assert outcome["error"] is None
    return outcome


def steps_of(outcome: dict[str, Any]) -> dict[str, Any]:
    return {name: step["result"] for name, step in outcome["steps"].items()}


def statuses(outcome: dict[str, Any]) -> dict[str, str]:
    return {name: step["status"] for name, step in outcome["steps"].items()}


def test_a1_hello_world(conformance_dir: Path, store: str) -> None:
    outcome = run_ok(conformance_dir, "hello_world/hello_world.yaml", store)
    assert statuses(outcome) == {"start": "COMPLETED", "test_step": "COMPLETED", "end": "COMPLETED"}
    assert steps_of(outcome)["test_step"] == {"status": "ok", "data": {"message": "Hello World"}}
    log = events(outcome["execution_id"], store)
    issued = [e["node_name"] for e in log if e["event_type"] == "command.issued"]
    assert issued == ["start", "test_step", "end"]  # each step runs once
    done = next(e for e in log if e["event_type"] == "call.done" and e["node_name"] == "test_step")
    assert "HELLO_WORLD: Hello World" in done["result"]["context"]["result"]["context"]["stdout"]


def test_a2_args_passing_keeps_native_types(conformance_dir: Path, store: str) -> None:
    outcome = run_ok(conformance_dir, "test_args_passing.yaml", store)
    assert steps_of(outcome)["use_vars"] == {"status": "success", "result": 300}


def test_a3_end_with_action(conformance_dir: Path, store: str) -> None:
    end = steps_of(run_ok(conformance_dir, "test_end_with_action.yaml", store))["end"]
    assert end["message"] == "Cleanup performed on temp_session_12345"
    assert end["data"]["table"] == "temp_session_12345"


def test_a4_comprehensive_exclusive_branch(conformance_dir: Path, store: str) -> None:
    outcome = run_ok(conformance_dir, "comprehensive_test.yaml", store)
    results, status = steps_of(outcome), statuses(outcome)
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
    ("temperature", "ran", "not_run", "flag"),
    [
        (
            30,
            {"hot_path", "hot_task_a", "hot_task_b"},
            {"cold_path", "cold_task"},
            {"is_hot": True, "message": "hot"},
        ),
        (
            10,
            {"cold_path", "cold_task"},
            {"hot_path", "hot_task_a", "hot_task_b"},
            {"is_hot": False, "message": "cold"},
        ),
    ],
)
def test_a5_control_flow_workbook(
    conformance_dir: Path,
    store: str,
    temperature: int,
    ran: set[str],
    not_run: set[str],
    flag: dict[str, Any],
) -> None:
    outcome = run_ok(
        conformance_dir,
        "control_flow_workbook/control_flow_workbook.yaml",
        store,
        "--set",
        f"temperature_c={temperature}",
    )
    results, status = steps_of(outcome), statuses(outcome)
    assert results["eval_flag"] == flag
    assert all(status[s] == "COMPLETED" for s in ran | {"end"})
    assert all(status[s] == "SKIPPED" for s in not_run)
    if temperature == 30:
        assert results["hot_task_a"] == {"who": "A"} and results["hot_task_b"] == {"who": "B"}
    else:
        assert results["cold_task"] == {"who": "C"}


def test_a6_fanout_reduce_barrier(conformance_dir: Path, store: str) -> None:
    outcome = run_ok(conformance_dir, "fanout_reduce/fanout_reduce_phase6.yaml", store)
    results = steps_of(outcome)
    assert results["normalize_customer"] == {"normalized": True}
    assert results["enrich_customer"] == {"enriched": True}
    assert results["reduce_customer"] == {"reduced": True}
    log = events(outcome["execution_id"], store)
    enters = [e for e in log if e["event_type"] == "step.enter" and e["node_name"] == "reduce_customer"]
    assert len(enters) == 1
    position = {id(e): i for i, e in enumerate(log)}

    def completed(step: str) -> int:
        return next(
            position[id(e)] for e in log if e["event_type"] == "command.completed" and e["node_name"] == step
        )

    assert completed("reduce_customer") > completed("normalize_customer")
    assert completed("reduce_customer") > completed("enrich_customer")


def test_a7_loop_test(conformance_dir: Path, store: str) -> None:
    results = steps_of(run_ok(conformance_dir, "loop_test.yaml", store))
    assert results["start"]["results"] == [
        {"number": n, "doubled": 2 * n, "index": n - 1} for n in range(1, 6)
    ]
    assert results["start"]["count"] == 5
    assert results["process"] == {"original_sum": 15, "doubled_sum": 30, "count": 5}
    assert results["verify"]["status"] == "passed"
    assert results["end"]["test_passed"] is True


def test_a8_loop_instance_isolation(conformance_dir: Path, store: str) -> None:
    verify = steps_of(run_ok(conformance_dir, "test_loop_instance_isolation/playbook.yaml", store))[
        "verify_results"
    ]
    assert verify["users_count"] == 2
    assert verify["products_count"] == 2
    assert verify["verification"] == "Both loops completed independently"
    assert [r["name"] for r in verify["users_results"]["results"]] == ["Alice", "Bob"]


def test_a9_heavy_loop_aggregation(conformance_dir: Path, store: str) -> None:
    results = steps_of(
        run_ok(conformance_dir, "load_test/heavy_loop_aggregation/heavy_loop_aggregation.yaml", store)
    )
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


def test_a10_vars_api(conformance_dir: Path, store: str) -> None:
    verify = steps_of(run_ok(conformance_dir, "vars_test/test_vars_api.yaml", store))[
        "verify_vars_accessible"
    ]
    assert verify["verification"] == "passed"
    assert (verify["user_id"], verify["username"], verify["score"]) == (999, "api_tester", 85)


def test_a11_transient(conformance_dir: Path, store: str) -> None:
    results = steps_of(run_ok(conformance_dir, "vars_test/test_transient.yaml", store))
    assert results["test_get_var"]["data"]["verification"] == {
        "counter_correct": True,
        "status_correct": True,
        "config_correct": True,
    }
    assert results["verify_updates"]["all_checks_passed"] is True


def test_a12_duckdb(conformance_dir: Path, store: str) -> None:
    results = steps_of(run_ok(conformance_dir, "duckdb_test.yaml", store))
    assert results["start"] == [{"name": "Alice", "age": 30}, {"name": "Charlie", "age": 35}]
    assert results["process"]["total_users"] == 2
    assert results["process"]["average_age"] == 32.5
    assert results["verify"]["status"] == "passed"


def test_a13_duckdb_retry_query(conformance_dir: Path, store: str) -> None:
    outcome = run_ok(conformance_dir, "retry_test/duckdb_retry_query.yaml", store)
    assert steps_of(outcome)["retry"] == [{"answer": 42, "status": "success"}]
    log = events(outcome["execution_id"], store)
    assert not [e for e in log if e["event_type"] == "call.error"]  # no retries happened


def test_a14_user_profile_scorer(conformance_dir: Path, store: str) -> None:
    final = steps_of(run_ok(conformance_dir, "playbook_composition/user_profile_scorer.yaml", store))[
        "finalize_result"
    ]
    assert final["user_name"] == "TestUser"
    assert final["profile_score"] == 15.8
    assert final["score_category"] == "Junior"
    assert final["processing_status"] == "completed"


def test_a15_tool_is_required_is_rejected(conformance_dir: Path, store: str) -> None:
    result = run_playbook(conformance_dir / "broken_playbooks/should_error_tool_is_required.yaml", store)
    assert result.code == 2
    assert result.stdout == ""
    assert re.search(r"tool.*required|no sql command provided", result.stderr, re.IGNORECASE)
    assert "insert_report" in result.stderr and "command" in result.stderr


def test_a16_step_without_next_is_terminal(conformance_dir: Path, store: str) -> None:
    # Documented choice: a step without `next` ends its branch; `end` is not run implicitly.
    outcome = run_ok(conformance_dir, "root_scripts/test_implicit_end_routing.yaml", store)
    assert statuses(outcome)["step1"] == "COMPLETED"
    assert steps_of(outcome)["step1"] == {"status": "step1_complete"}
    assert statuses(outcome)["end"] == "PENDING"


def test_a17_actions_test(conformance_dir: Path, store: str) -> None:
    results = steps_of(run_ok(conformance_dir, "actions_test.yaml", store))
    assert [r["doubled"] for r in results["process_loop"]["results"]] == [20, 40, 60]
    assert results["helper"]["helper_called"] is True
    assert results["aggregate"]["count"] == 0  # nothing writes ctx.loop_results (literal semantics)
    assert results["verify"]["success"] is False
