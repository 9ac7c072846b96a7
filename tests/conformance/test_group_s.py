"""Group S of the conformance corpus (local HTTP stub), run through `noetl run --json`.

Each playbook gets `--set api_url=<stub base url>` and the test checks the values of
noetl-conformance-corpus.md §2.3, plus what the stub itself saw (request counts, overlap).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.cli import events, run_playbook
from tests.support.stub_api import StubAPI

pytestmark = pytest.mark.conformance


@pytest.fixture
def store(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/noetl.db"


def run_ok(conformance_dir: Path, name: str, store: str, api: StubAPI) -> dict[str, Any]:
    api.state.reset_flaky()  # what upstream does before each run
    api.state.reset_concurrency()
    result = run_playbook(conformance_dir / name, store, "--set", f"api_url={api.base_url}")
    assert result.code == 0, f"{name} exited {result.code}:\n{result.stdout}\n{result.stderr}"
    outcome: dict[str, Any] = result.json
    assert outcome["status"] == "COMPLETED", outcome
    assert outcome["error"] is None
    return outcome


def steps_of(outcome: dict[str, Any]) -> dict[str, Any]:
    return {name: step["result"] for name, step in outcome["steps"].items()}


def test_s1_offset_pagination(conformance_dir: Path, store: str, stub_api: StubAPI) -> None:
    outcome = run_ok(conformance_dir, "pagination/offset/test_pagination_offset.yaml", store, stub_api)
    results = steps_of(outcome)
    assert results["validate_results"] == {
        "status": "success",
        "total_users": 35,
        "first_id": 1,
        "last_id": 35,
    }
    assert [u["id"] for u in results["check_pagination"]["collected_users"]] == list(range(1, 36))
    # offsets 0 -> 10 -> 20 -> 30: four pages, the step graph cycled fetch_page <-> check_pagination
    assert stub_api.state.call_count("/api/v1/users", "GET") == 4
    log = events(outcome["execution_id"], store)
    fetches = [e for e in log if e["event_type"] == "command.issued" and e["node_name"] == "fetch_page"]
    assert len(fetches) == 4


def test_s2_parallel_http_loop_overlaps(conformance_dir: Path, store: str, stub_api: StubAPI) -> None:
    outcome = run_ok(conformance_dir, "pagination/basic/test_pagination_basic.yaml", store, stub_api)
    validate = steps_of(outcome)["validate_results"]
    assert validate["status"] == "success"
    assert validate["max_active"] >= 2  # the probes really ran at the same time
    assert validate["started"] == validate["completed"] == 5 and validate["active"] == 0
    stats = stub_api.state.concurrency_stats()
    assert stats["started"] == 5 and stats["completed"] == 5 and stats["active"] == 0
    assert stats["max_active"] >= 2
    assert steps_of(outcome)["run_probes"]["count"] == 5


def test_s3_retry_simple_config(conformance_dir: Path, store: str, stub_api: StubAPI) -> None:
    outcome = run_ok(conformance_dir, "retry_test/retry_simple_config.yaml", store, stub_api)
    state = stub_api.state
    # boolean_retry: 500 then 200 (retried); integer_retry and full_config_retry: 200 at once.
    assert state.flaky_log == [(1, 500), (1, 200), (1, 200), (1, 200)]
    assert state.flaky_calls == {1: 4}
    assert state.flaky_failures == {1: 1}
    results = steps_of(outcome)
    for step in ("boolean_retry", "integer_retry", "full_config_retry"):
        assert results[step]["status_code"] == 200
        assert [item["id"] for item in results[step]["body"]["data"]] == list(range(1, 11))
    log = events(outcome["execution_id"], store)
    errors = [e for e in log if e["event_type"] == "call.error"]
    assert [e["node_name"] for e in errors] == ["boolean_retry"]
    assert "HTTP 500" in errors[0]["result"]["context"]["error"]


def test_s4_max_iterations(conformance_dir: Path, store: str, stub_api: StubAPI) -> None:
    outcome = run_ok(
        conformance_dir, "pagination/max_iterations/test_pagination_max_iterations.yaml", store, stub_api
    )
    results = steps_of(outcome)
    assert results["validate_results"]["total_items"] == 20
    assert results["validate_results"]["max_iterations_worked"] is True
    assert [i["id"] for i in results["fetch_with_limit"]["collected_data"]] == list(range(1, 21))
    assert stub_api.state.call_count("/api/v1/assessments", "GET") == 2  # the cap stopped it at 2 pages


def test_s5_pipeline_simple(conformance_dir: Path, store: str, stub_api: StubAPI) -> None:
    results = steps_of(
        run_ok(conformance_dir, "pagination/pipeline/test_pipeline_simple.yaml", store, stub_api)
    )
    assert results["report_result"]["status"] == "passed"
    assert results["run_pipeline"] == {
        "status": "passed",
        "message": "Task sequence executed successfully",
        "items_processed": 5,
    }


def test_s6_pagination_retry(conformance_dir: Path, store: str, stub_api: StubAPI) -> None:
    outcome = run_ok(conformance_dir, "pagination/retry/test_pagination_retry.yaml", store, stub_api)
    validate = steps_of(outcome)["validate_results"]
    assert validate["total_items"] == 35
    assert validate["retry_worked"] is True
    state = stub_api.state
    assert state.flaky_calls == {1: 1, 2: 2, 3: 1, 4: 1}  # page 2 was called twice
    assert state.flaky_log == [(1, 200), (2, 500), (2, 200), (3, 200), (4, 200)]
    collected = steps_of(outcome)["fetch_with_retry"]["collected_data"]
    assert [i["id"] for i in collected] == list(range(1, 36))  # no page lost or duplicated
